# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of thinkus.ops.vercel_deploy: meta, the missing_files handshake, check mode, switching production."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.thinkus.ops.plugins.module_utils._vercel import (
    LocalFile,
    RetryPolicy,
    VercelAPIError,
    VercelError,
)
from ansible_collections.thinkus.ops.plugins.modules import vercel_deploy as mod

SHA = "a" * 40


def params(**overrides: Any) -> dict[str, Any]:
    base = dict(
        project="web",
        state="present",
        path=None,
        git_source=None,
        commit_sha=SHA,
        target="production",
        meta={},
        deployment=None,
        wait=True,
        wait_timeout=5,
        poll_interval=0,
        upload_concurrency=4,
    )
    base.update(overrides)
    return base


class FakeModule:
    def __init__(self, check_mode: bool = False, **overrides: Any) -> None:
        self.params = params(**overrides)
        self.check_mode = check_mode
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


class FakeClient:
    """Records calls; answers like the API for one project."""

    def __init__(
        self, existing: list[dict[str, Any]] | None = None, held: set[str] | None = None, production: str | None = None
    ) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.existing = existing or []
        self.held = set(held or ())
        self.production = production
        self.deployments: dict[str, dict[str, Any]] = {}

    def get_project(self, ref: str) -> dict[str, Any]:
        self.calls.append(("get_project", ref))
        targets = {"production": {"id": self.production}} if self.production else {}
        return {"id": "prj_1", "name": "web", "targets": targets}

    def list_deployments(self, project_id: str, **kwargs: Any) -> list[dict[str, Any]]:
        self.calls.append(("list_deployments", kwargs))
        return list(self.existing)

    def get_deployment(self, ref: str) -> dict[str, Any]:
        self.calls.append(("get_deployment", ref))
        dep = self.deployments.get(ref) or {"id": ref, "readyState": "READY", "aliasAssigned": True}
        return dict(dep, readyState="READY", aliasAssigned=True)

    def create_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create_deployment", body))
        missing = [f["sha"] for f in body.get("files", []) if f["sha"] not in self.held]
        if missing:
            raise VercelAPIError(
                "POST",
                "/v13/deployments",
                400,
                "missing_files",
                "Missing files",
                error={"code": "missing_files", "missing": missing},
            )
        dep = {"id": "dpl_new", "readyState": "QUEUED", "meta": body["meta"], "target": body.get("target")}
        self.deployments["dpl_new"] = dep
        return dep

    def upload_files(self, files: list[LocalFile], concurrency: int) -> None:
        self.calls.append(("upload_files", [f.path for f in files]))
        self.held |= {f.sha for f in files}

    def promote(self, project_id: str, deployment_id: str) -> None:
        self.calls.append(("promote", deployment_id))
        self.production = deployment_id

    def rollback(self, project_id: str, deployment_id: str, description: str | None = None) -> None:
        self.calls.append(("rollback", deployment_id))
        self.production = deployment_id

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]


FILES = [
    LocalFile("index.html", "/b/index.html", "1" * 40, 10),
    LocalFile("app.js", "/b/app.js", "2" * 40, 20),
]


def test_meta_records_commit_and_digest_and_keeps_user_keys() -> None:
    meta = mod.build_meta(params(meta={"pipeline": "ansible", "run": 7}), "d" * 40)
    assert meta == {"pipeline": "ansible", "run": "7", "commitSha": SHA, "sourceDigest": "d" * 40}
    assert mod.identity_meta(meta) == {"commitSha": SHA, "sourceDigest": "d" * 40}


def test_meta_takes_the_git_source_sha() -> None:
    git = {"type": "github", "org": "o", "repo": "r", "repo_id": None, "ref": "main", "sha": "b" * 40}
    assert mod.build_meta(params(git_source=git, commit_sha=None), None) == {"commitSha": "b" * 40}
    assert mod.git_source_body(git) == {"type": "github", "ref": "main", "sha": "b" * 40, "org": "o", "repo": "r"}
    assert mod.git_source_body(dict(git, repo_id="123"))["repoId"] == "123"


def test_summarize_accepts_list_entries() -> None:
    summary = mod.summarize({"uid": "dpl_1", "state": "READY", "alias": ["web.vercel.app"]})
    assert summary["id"] == "dpl_1"
    assert summary["readyState"] == "READY"
    assert summary["aliases"] == ["web.vercel.app"]
    assert mod.summarize(None) == {}


def test_first_deploy_uploads_only_the_missing_files_then_creates_again() -> None:
    client = FakeClient(held={"1" * 40})
    result = mod.Deployer(FakeModule(), client).present(client.get_project("web"), FILES)
    assert result["changed"] and result["deployed"]
    assert result["uploaded_files"] == ["app.js"]
    assert result["bytes_uploaded"] == 20
    assert client.names() == [
        "get_project",
        "list_deployments",
        "create_deployment",
        "upload_files",
        "create_deployment",
        "get_deployment",
    ]
    body = client.calls[2][1]
    assert body["files"] == [
        {"file": "index.html", "sha": "1" * 40, "size": 10},
        {"file": "app.js", "sha": "2" * 40, "size": 20},
    ]
    assert body["target"] == "production"
    assert body["meta"]["commitSha"] == SHA


def test_existing_ready_deployment_means_no_change() -> None:
    client = FakeClient(existing=[{"uid": "dpl_old", "state": "READY"}])
    result = mod.Deployer(FakeModule(), client).present(client.get_project("web"), FILES)
    assert not result["changed"]
    assert result["deployment"]["id"] == "dpl_old"
    assert "create_deployment" not in client.names()
    lookup = client.calls[1][1]
    assert lookup["state"] == "READY"
    assert lookup["target"] == "production"
    assert set(lookup["meta"]) == {"commitSha", "sourceDigest"}


def test_check_mode_reports_the_files_and_sends_nothing() -> None:
    client = FakeClient()
    result = mod.Deployer(FakeModule(check_mode=True), client).present(client.get_project("web"), FILES)
    assert result["changed"] and result["deployed"]
    assert result["files_uploaded"] == 2
    assert result["bytes_uploaded"] == 30
    assert result["deployment"] == {}
    assert set(client.names()) <= {"get_project", "list_deployments", "get_deployment"}


def test_preview_target_is_not_sent() -> None:
    client = FakeClient(held={"1" * 40, "2" * 40})
    mod.Deployer(FakeModule(target="preview"), client).present(client.get_project("web"), FILES)
    assert "target" not in client.calls[2][1]


def test_missing_files_for_unknown_digests_is_an_error() -> None:
    class Stubborn(FakeClient):
        def create_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
            raise VercelAPIError(
                "POST", "/v13/deployments", 400, "missing_files", "Missing", error={"missing": ["f" * 40]}
            )

    with pytest.raises(VercelError, match="not in path"):
        mod.Deployer(FakeModule(), Stubborn()).present({"id": "prj_1", "name": "web"}, FILES)


def test_failed_build_raises_with_the_error_code() -> None:
    deployer = mod.Deployer(FakeModule(), FakeClient())
    with pytest.raises(VercelError, match="BUILD_FAILED"):
        deployer.wait_for({"id": "d", "readyState": "ERROR", "errorCode": "BUILD_FAILED"}, require_alias=True)


def test_rollback_targets_the_deployment_before_the_latest_and_is_idempotent() -> None:
    production = [{"uid": "dpl_1", "created": 1}, {"uid": "dpl_3", "created": 3}, {"uid": "dpl_2", "created": 2}]
    client = FakeClient(existing=production, production="dpl_3")
    deployer = mod.Deployer(FakeModule(state="rolled_back"), client)
    first = deployer.switch_production(client.get_project("web"), "rolled_back")
    assert first["changed"]
    assert first["deployment"]["id"] == "dpl_2"
    assert first["production_before"] == "dpl_3"
    assert ("rollback", "dpl_2") in client.calls
    again = deployer.switch_production(client.get_project("web"), "rolled_back")
    assert not again["changed"]


def test_rollback_check_mode_sends_nothing() -> None:
    client = FakeClient(existing=[{"uid": "a", "created": 1}, {"uid": "b", "created": 2}], production="b")
    result = mod.Deployer(FakeModule(check_mode=True, state="rolled_back"), client).switch_production(
        client.get_project("web"), "rolled_back"
    )
    assert result["changed"]
    assert result["diff"] == {"before": {"production": "b"}, "after": {"production": "a"}}
    assert "rollback" not in client.names()


def test_rollback_without_a_previous_deployment_fails() -> None:
    client = FakeClient(existing=[{"uid": "only", "created": 1}], production="only")
    with pytest.raises(VercelError, match="no production deployment before the latest"):
        mod.Deployer(FakeModule(state="rolled_back"), client).switch_production(
            client.get_project("web"), "rolled_back"
        )


def test_promote_by_commit_finds_the_ready_deployment() -> None:
    client = FakeClient(existing=[{"uid": "dpl_c"}], production="dpl_p")
    result = mod.Deployer(FakeModule(state="promoted"), client).switch_production(client.get_project("web"), "promoted")
    assert result["changed"]
    assert ("promote", "dpl_c") in client.calls
    assert client.calls[1][1]["meta"] == {"commitSha": SHA}


def test_argument_spec_keeps_the_token_out_of_logs() -> None:
    spec = mod.argument_spec()
    assert spec["token"]["no_log"] is True
    assert spec["api_url"]["default"] == "https://api.vercel.com"


# ---------------------------------------------------------------- git sources per provider


def git(type_: str, **fields: Any) -> dict[str, Any]:
    base = dict(type=type_, org=None, repo=None, repo_id=None, project_id=None, owner=None, slug=None)
    base.update(repo_uuid=None, workspace_uuid=None, ref="main", sha=SHA)
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("source", "fields"),
    [
        (git("github", org="o", repo="r"), {"org": "o", "repo": "r"}),
        (git("github", repo_id="123"), {"repoId": "123"}),
        (git("gitlab", project_id="4815"), {"projectId": "4815"}),
        (git("bitbucket", owner="ws", slug="web"), {"owner": "ws", "slug": "web"}),
        (git("bitbucket", repo_uuid="{r}"), {"repoUuid": "{r}"}),
        (git("bitbucket", repo_uuid="{r}", workspace_uuid="{w}"), {"repoUuid": "{r}", "workspaceUuid": "{w}"}),
    ],
)
def test_git_source_body_sends_each_providers_own_fields(source: dict[str, Any], fields: dict[str, Any]) -> None:
    assert mod.git_source_errors(source) == []
    assert mod.git_source_body(source) == {"type": source["type"], "ref": "main", "sha": SHA, **fields}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (git("gitlab", org="o", repo="r"), "git_source.type=gitlab does not take org, repo."),
        (git("gitlab"), "git_source.type=gitlab needs project_id."),
        (git("github", project_id="1"), "git_source.type=github does not take project_id."),
        (git("github", org="o"), "git_source.type=github needs repo_id or org and repo."),
        (git("github", org="o", repo="r", repo_id="1"), "git_source.type=github needs repo_id or org and repo."),
        (git("bitbucket", owner="ws"), "git_source.type=bitbucket needs"),
        (git("bitbucket", workspace_uuid="{w}"), "git_source.type=bitbucket needs"),
        (git("bitbucket", org="o", repo="r"), "git_source.type=bitbucket does not take org, repo."),
    ],
)
def test_git_source_errors_name_the_provider_and_fields(source: dict[str, Any], message: str) -> None:
    assert any(error.startswith(message) for error in mod.git_source_errors(source))


# ---------------------------------------------------------------- a create whose answer is lost


class LossyClient(FakeClient):
    """Creates the deployment, then answers like a 5xx (or a timeout) ``lose`` times."""

    def __init__(self, lose: int, created: bool, status: int | None = 500) -> None:
        super().__init__(held={f.sha for f in FILES})
        self.lose = lose
        self.created_on_error = created
        self.status = status
        self.listed: list[dict[str, Any]] = []
        self.policy = RetryPolicy(retries=2, backoff_base=0)
        self.creates = 0

    def create_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create_deployment", body))
        self.creates += 1
        dep_id = f"dpl_{self.creates}"
        dep = {"uid": dep_id, "id": dep_id, "readyState": "BUILDING", "meta": body["meta"]}
        if self.lose:
            self.lose -= 1
            if self.created_on_error:
                self.listed.append(dep)
            code = "connection_error" if self.status is None else "internal_server_error"
            raise VercelAPIError("POST", "/v13/deployments", self.status, code, "lost")
        self.listed.append(dep)
        return dep

    def list_deployments(self, project_id: str, **kwargs: Any) -> list[dict[str, Any]]:
        self.calls.append(("list_deployments", kwargs))
        if kwargs.get("state") == "READY":
            return []
        return [d for d in self.listed if all(d["meta"].get(k) == v for k, v in kwargs["meta"].items())]


@pytest.mark.parametrize("status", [500, 502, None])
def test_a_lost_create_answer_is_found_by_meta_not_created_again(status: int | None) -> None:
    module = FakeModule(path="/b")
    client = LossyClient(lose=1, created=True, status=status)
    result = mod.Deployer(module, client).present(client.get_project("web"), FILES)
    assert client.creates == 1
    assert result["deployment"]["id"] == "dpl_1"
    lookup = [c for c in client.calls if c[0] == "list_deployments" and "state" not in c[1]]
    assert set(lookup[0][1]["meta"]) == {"commitSha", "sourceDigest"}
    assert lookup[0][1]["target"] == "production"
    assert "using it instead of creating another" in module.warnings[0]


def test_a_create_refused_before_it_was_carried_out_is_sent_again() -> None:
    client = LossyClient(lose=1, created=False)
    result = mod.Deployer(FakeModule(path="/b"), client).present(client.get_project("web"), FILES)
    assert client.creates == 2
    assert len(client.listed) == 1
    assert result["deployment"]["id"] == "dpl_2"


def test_a_create_failing_past_the_bound_says_nothing_was_created() -> None:
    client = LossyClient(lose=10, created=False)
    with pytest.raises(VercelError, match="No deployment of this build exists") as caught:
        mod.Deployer(FakeModule(path="/b"), client).present(client.get_project("web"), FILES)
    assert client.creates == 3
    assert "retry bound: 2 retries" in str(caught.value)


def test_a_client_error_on_create_is_not_looked_up() -> None:
    client = LossyClient(lose=0, created=False)

    def refuse(body: dict[str, Any]) -> dict[str, Any]:
        raise VercelAPIError("POST", "/v13/deployments", 400, "bad_request", "no")

    client.create_deployment = refuse  # type: ignore[method-assign]
    with pytest.raises(VercelAPIError):
        mod.Deployer(FakeModule(path="/b"), client).present(client.get_project("web"), FILES)
    assert [c for c in client.calls if c[0] == "list_deployments" and "state" not in c[1]] == []


# ---------------------------------------------------------------- alias jobs


class AliasJobClient(FakeClient):
    def __init__(self, statuses: list[str]) -> None:
        super().__init__(production="dpl_old")
        self.statuses = list(statuses)
        self.job: dict[str, Any] | None = None

    def get_project(self, ref: str) -> dict[str, Any]:
        project = super().get_project(ref)
        if self.job is not None:
            if self.statuses:
                self.job["jobStatus"] = self.statuses.pop(0)
            project["lastAliasRequest"] = dict(self.job)
        return project

    def promote(self, project_id: str, deployment_id: str) -> None:
        self.calls.append(("promote", deployment_id))
        self.job = {"toDeploymentId": deployment_id, "fromDeploymentId": "dpl_old", "type": "promote"}
        self.job["jobStatus"] = "pending"

    def failed_aliases(self, project_id: str, kind: str) -> list[dict[str, Any]]:
        self.calls.append(("failed_aliases", kind))
        return [{"alias": {"alias": "web.vercel.app"}, "status": "failed"}]


def test_a_failed_promotion_fails_at_once_naming_the_aliases() -> None:
    client = AliasJobClient(["pending", "in-progress", "failed"])
    module = FakeModule(state="promoted", deployment="dpl_new", wait_timeout=600, poll_interval=0)
    with pytest.raises(VercelError) as caught:
        mod.Deployer(module, client).run([])
    text = str(caught.value)
    assert "jobStatus 'failed'" in text and "web.vercel.app (failed)" in text
    assert client.names().count("get_project") == 1 + 3
    assert ("failed_aliases", "promote") in client.calls


def test_a_promotion_waits_for_the_job_not_for_the_production_id() -> None:
    client = AliasJobClient(["pending", "in-progress", "succeeded"])
    module = FakeModule(state="promoted", deployment="dpl_new", poll_interval=0)
    result = mod.Deployer(module, client).run([])
    assert result["changed"]
    assert client.names().count("get_project") == 1 + 3
