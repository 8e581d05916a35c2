# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of thinkus.ops.vercel_deploy: meta, the missing_files handshake, check mode, switching production."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.thinkus.ops.plugins.module_utils._vercel import LocalFile, VercelAPIError, VercelError
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
