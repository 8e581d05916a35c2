"""The cluster identity guard: a run against a cluster that is not the inventory's own stops in preflight.

Every test keeps the marker in a namespace of its own (the identity's marker_namespace), never in
kube-system of the shared local cluster, and deploys (or would deploy) into a namespace of its own;
what the cluster holds is read before and after to show that a refused run changed nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.support.ansible import REPO_ROOT, run_playbook

pytestmark = pytest.mark.localenv
KUBECONFIG = REPO_ROOT / ".local" / "kubeconfig"
MARKER = "thinkus-environment"
RELEASE_TASK = "Deploy under the lock (apply, rollout wait, rollback on failure)"


@pytest.fixture
def core() -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(KUBECONFIG)))


@pytest.fixture
def marker_ns(core: client.CoreV1Api) -> Iterator[str]:
    """A namespace that stands in for kube-system as the place of the environment marker."""
    name = f"guard-marker-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def app_ns(core: client.CoreV1Api) -> Iterator[str]:
    """The application namespace a deploy would create (it must still not exist after a refused run)."""
    name = f"guard-app-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as err:
        if err.status != 404:
            raise


def _mark(core: client.CoreV1Api, namespace: str, environment: str) -> str:
    cm = core.create_namespaced_config_map(
        namespace, {"metadata": {"name": MARKER}, "data": {"environment": environment}}
    )
    return str(cm.metadata.resource_version)


def _identity(marker_ns: str, environment: str = "local", **extra: Any) -> dict[str, Any]:
    return {"thinkus_cluster_identity": {"environment": environment, "marker_namespace": marker_ns, **extra}}


def _namespaces(core: client.CoreV1Api) -> set[str]:
    return {n.metadata.name for n in core.list_namespace().items}


def _deploy(tmp_path: Path, app_ns: str, extra: dict[str, Any], check: bool = False) -> Any:
    return run_playbook(
        "playbooks/deploy.yml",
        inventory="inventories/local",
        tags=["backend"],
        check=check,
        extra_vars={
            "deploy_artifacts_dir": str(tmp_path),
            "k8s_deploy_namespace": app_ns,
            "ingress_tls_namespace": app_ns,
            **extra,
        },
    )


def _summary(artifacts: Path) -> dict[str, Any]:
    return json.loads((artifacts / "deploy-summary.json").read_text())


def test_a_cluster_marked_as_another_environment_is_refused_before_any_change(
    tmp_path: Path, core: client.CoreV1Api, marker_ns: str, app_ns: str
) -> None:
    version = _mark(core, marker_ns, "staging")
    result = _deploy(tmp_path, app_ns, _identity(marker_ns, "local"))
    assert result.rc != 0
    assert f"is marked as environment 'staging' (ConfigMap {marker_ns}/{MARKER}), expected 'local'" in result.output
    assert "kubeconfig context 'thinkus-local'" in result.output
    summary = _summary(tmp_path)
    assert summary["stages"]["preflight"]["status"] == "failed"
    assert summary["stages"]["backend"] == {"status": "not run"}
    # nothing changed: no application namespace, the marker as it was (other tests share the cluster)
    assert app_ns not in _namespaces(core)
    marker = core.read_namespaced_config_map(MARKER, marker_ns)
    assert marker.data == {"environment": "staging"}
    assert marker.metadata.resource_version == version


def test_the_role_alone_checks_the_identity_in_its_release_before_any_change(
    core: client.CoreV1Api, marker_ns: str, app_ns: str
) -> None:
    """k8s_deploy run by itself (no deploy.yml preflight): its release task refuses, then claims, then matches."""

    def role(environment: str, claim: bool = False) -> Any:
        return run_playbook(
            "tests/integration/targets/k8s_deploy/deploy.yml",
            inventory="inventories/local",
            json_output=True,
            extra_vars={"k8s_deploy_namespace": app_ns, "k8s_deploy_instance": app_ns}
            | _identity(marker_ns, environment, claim=claim),
        )

    version = _mark(core, marker_ns, "staging")
    refused = role("local")
    assert refused.rc != 0
    assert f"is marked as environment 'staging' (ConfigMap {marker_ns}/{MARKER}), expected 'local'" in refused.output
    assert "Nothing was changed" in refused.output
    assert app_ns not in _namespaces(core)  # refused before the namespace, the lock or any object
    assert core.read_namespaced_config_map(MARKER, marker_ns).metadata.resource_version == version

    core.delete_namespaced_config_map(MARKER, marker_ns)
    claimed = role("local", claim=True)
    assert claimed.rc == 0, claimed.output[-3000:]
    release = next(t["result"] for t in claimed.tasks if t["task"].endswith(RELEASE_TASK))
    assert release["cluster"]["claimed"] is True
    assert release["cluster"]["uid"] == core.read_namespace("kube-system").metadata.uid
    assert core.read_namespaced_config_map(MARKER, marker_ns).data == {"environment": "local"}
    assert app_ns in _namespaces(core)

    again = role("local", claim=True)
    assert again.rc == 0, again.output[-3000:]
    assert sum(host["changed"] for host in again.stats.values()) == 0
    release = next(t["result"] for t in again.tasks if t["task"].endswith(RELEASE_TASK))
    assert release["cluster"]["claimed"] is False and release["changed"] is False


def test_a_pinned_uid_that_differs_is_refused_naming_both(
    tmp_path: Path, core: client.CoreV1Api, marker_ns: str, app_ns: str
) -> None:
    _mark(core, marker_ns, "local")
    found = core.read_namespace("kube-system").metadata.uid
    expected = "00000000-0000-4000-8000-000000000000"
    result = _deploy(tmp_path, app_ns, _identity(marker_ns, "local", uid=expected))
    assert result.rc != 0
    flat = " ".join(result.output.split())
    assert f"is '{found}', expected '{expected}' (the cluster's pinned UID)" in flat
    assert app_ns not in _namespaces(core)


def test_a_context_the_kubeconfig_lacks_is_refused_and_the_current_context_is_not_used(
    tmp_path: Path, core: client.CoreV1Api, marker_ns: str, app_ns: str
) -> None:
    """The shell's current context points at a cluster; the inventory pins another name: refused."""
    config_data = yaml.safe_load(KUBECONFIG.read_text())
    config_data["current-context"] = "thinkus-local"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config_data))
    _mark(core, marker_ns, "local")
    core.create_namespace({"metadata": {"name": app_ns}})
    overrides = {"thinkus_kubeconfig": str(kubeconfig), "thinkus_kube_context": "thinkus-staging"}
    deploy = _deploy(tmp_path, app_ns, _identity(marker_ns) | overrides)
    assert deploy.rc != 0
    assert "context thinkus-staging" in deploy.output  # the API check of deploy.yml's preflight names it
    rollback = run_playbook(
        "playbooks/rollback.yml",
        inventory="inventories/local",
        extra_vars=_identity(marker_ns) | overrides | {"k8s_deploy_namespace": app_ns},
    )
    assert rollback.rc != 0
    assert "context 'thinkus-staging' is not in kubeconfig" in rollback.output
    assert "['thinkus-local']" in rollback.output  # the contexts it does have
    coordination = client.CoordinationV1Api(config.new_client_from_config(config_file=str(KUBECONFIG)))
    assert coordination.list_namespaced_lease(app_ns).items == []


def test_an_unmarked_cluster_is_refused_without_claim(
    tmp_path: Path, core: client.CoreV1Api, marker_ns: str, app_ns: str
) -> None:
    result = _deploy(tmp_path, app_ns, _identity(marker_ns, "local", claim=False))
    assert result.rc != 0
    assert (
        f"carries no environment marker (ConfigMap {marker_ns}/{MARKER}), expected one naming 'local'" in result.output
    )
    assert "thinkus_cluster_claim=true" in result.output
    assert core.list_namespaced_config_map(marker_ns, field_selector=f"metadata.name={MARKER}").items == []
    assert app_ns not in _namespaces(core)


def test_a_brand_new_cluster_is_claimed_once_then_checked(
    tmp_path: Path, core: client.CoreV1Api, marker_ns: str, app_ns: str
) -> None:
    """Preflight only (tags=preflight): check mode writes nothing, a real run claims, later runs match."""
    common = {"deploy_artifacts_dir": str(tmp_path), "k8s_deploy_namespace": app_ns, "ingress_tls_namespace": app_ns}

    def preflight(check: bool, environment: str = "local") -> Any:
        return run_playbook(
            "playbooks/deploy.yml",
            inventory="inventories/local",
            tags=["preflight"],
            check=check,
            json_output=True,
            extra_vars=common | _identity(marker_ns, environment, claim=True),
        )

    def guard_results(result: Any) -> list[dict[str, Any]]:
        name = "Check that the cluster is this environment's own (context and identity)"
        return [t["result"] for t in result.tasks if t["task"].endswith(name) and not t["result"].get("skipped")]

    preview = preflight(check=True)
    assert preview.rc == 0, preview.output[-3000:]
    assert [r["claimed"] for r in guard_results(preview)] == [True, True]  # k8s_deploy and ingress_tls
    assert core.list_namespaced_config_map(marker_ns, field_selector=f"metadata.name={MARKER}").items == []

    first = preflight(check=False)
    assert first.rc == 0, first.output[-3000:]
    assert [r["claimed"] for r in guard_results(first)] == [True, False]  # the first check claims, the next finds it
    marker = core.read_namespaced_config_map(MARKER, marker_ns)
    assert marker.data == {"environment": "local"}
    assert marker.metadata.labels == {"app.kubernetes.io/managed-by": "thinkus.ops"}
    uid = core.read_namespace("kube-system").metadata.uid
    assert {r["uid"] for r in guard_results(first)} == {uid}

    again = preflight(check=False)
    assert again.rc == 0, again.output[-3000:]
    assert [r["changed"] for r in guard_results(again)] == [False, False]

    # a claimed cluster is never re-claimed for another environment
    other = preflight(check=False, environment="dev")
    assert other.rc != 0
    assert "is marked as environment 'local'" in other.output and "expected 'dev'" in other.output
    assert (
        core.read_namespaced_config_map(MARKER, marker_ns).metadata.resource_version == marker.metadata.resource_version
    )
    assert app_ns not in _namespaces(core)


def test_rollback_is_refused_on_a_cluster_of_another_environment(
    core: client.CoreV1Api, marker_ns: str, app_ns: str
) -> None:
    _mark(core, marker_ns, "prod")
    core.create_namespace({"metadata": {"name": app_ns}})
    result = run_playbook(
        "playbooks/rollback.yml",
        inventory="inventories/local",
        extra_vars=_identity(marker_ns, "local") | {"k8s_deploy_namespace": app_ns},
    )
    assert result.rc != 0
    assert "is marked as environment 'prod'" in result.output and "expected 'local'" in result.output
    coordination = client.CoordinationV1Api(config.new_client_from_config(config_file=str(KUBECONFIG)))
    assert coordination.list_namespaced_lease(app_ns).items == []  # the deploy lock was never taken


def test_backup_schedules_are_refused_on_a_cluster_of_another_environment(
    tmp_path: Path, core: client.CoreV1Api, marker_ns: str, app_ns: str
) -> None:
    _mark(core, marker_ns, "prod")
    core.create_namespace({"metadata": {"name": app_ns}})
    playbook = tmp_path / "schedules.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Schedule the backups",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "roles": [{"role": "thinkus.ops.backup"}],
                }
            ]
        )
    )
    result = run_playbook(
        playbook,
        inventory=str(REPO_ROOT / "inventories/local"),
        extra_vars=_identity(marker_ns, "local")
        | {
            "backup_mode": "cluster",
            "backup_namespace": app_ns,
            "backup_image": "thinkus/thinkus-ops-ee:0.1.0",
            "backup_install_tools": False,
            "backup_run_kinds": [],
        },
    )
    assert result.rc != 0
    assert "is marked as environment 'prod'" in result.output and "expected 'local'" in result.output
    batch = client.BatchV1Api(config.new_client_from_config(config_file=str(KUBECONFIG)))
    assert batch.list_namespaced_cron_job(app_ns).items == []
    assert [cm.metadata.name for cm in core.list_namespaced_config_map(app_ns).items] == ["kube-root-ca.crt"]
