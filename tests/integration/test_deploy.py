"""playbooks/deploy.yml end to end on the local environment, and its preflight on every inventory.

The local runs deploy for real (images to the registry, the platform's pods on the real node,
the frontend to the local Vercel API, smoke checks and a load test through the Services) and
read what each run PRODUCED from the summary the deploy_summary callback writes. The first
tests start from an empty cluster (make local-reset), as a brand-new machine's first deploy does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.constants import DEFAULT_VAULT_ID_MATCH
from ansible.parsing.vault import VaultLib, VaultSecret
from kubernetes import client, config

from tests.support.ansible import REPO_ROOT, run_playbook

pytestmark = pytest.mark.localenv
LOCAL = REPO_ROOT / ".local"
DEPLOY = "playbooks/deploy.yml"


def _summary(artifacts: Path) -> dict[str, Any]:
    return json.loads((artifacts / "deploy-summary.json").read_text())


def _vault_names() -> list[str]:
    password = (REPO_ROOT / "inventories/local/vault-password.txt").read_bytes().strip()
    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password))])
    data = yaml.safe_load(vault.decrypt((REPO_ROOT / "inventories/local/group_vars/all/vault.yml").read_bytes()))
    return sorted(data)


@pytest.fixture(scope="module")
def app_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An application checkout shaped like the real one: services/ and the frontend's build output."""
    root = tmp_path_factory.mktemp("app")
    (root / "services").symlink_to(REPO_ROOT / "tests/fixtures/services")
    (root / "thinkus-app/.vercel").mkdir(parents=True)
    (root / "thinkus-app/.vercel/output").symlink_to(REPO_ROOT / "tests/fixtures/frontend")
    return root


@pytest.fixture(scope="module")
def remote_kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local cluster under the context names the dev/staging/prod inventories pin."""
    data = yaml.safe_load((LOCAL / "kubeconfig").read_text())
    local = next(c for c in data["contexts"] if c["name"] == data["current-context"])
    data["contexts"] += [{"name": f"thinkus-{env}", "context": local["context"]} for env in ("dev", "staging", "prod")]
    path = tmp_path_factory.mktemp("kube") / "kubeconfig"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def remote_env(app_source: Path, remote_kubeconfig: Path) -> dict[str, str]:
    """What CI or AWX puts in the environment for dev/staging/prod (dummy values)."""
    return {
        "K8S_AUTH_KUBECONFIG": str(remote_kubeconfig),
        "THINKUS_REGISTRY_USERNAME": "ci-user",
        "THINKUS_REGISTRY_PASSWORD": "ci-registry-password-" + uuid.uuid4().hex,
        "THINKUS_APP_SOURCE": str(app_source),
        "THINKUS_APP_REVISION": "0123456789abcdef0123456789abcdef01234567",
    }


@pytest.fixture(scope="module")
def thinkus_namespace() -> None:
    api = config.new_client_from_config(config_file=str(LOCAL / "kubeconfig"))
    core = client.CoreV1Api(api)
    if "thinkus" not in [n.metadata.name for n in core.list_namespace().items]:
        core.create_namespace({"metadata": {"name": "thinkus"}})


@pytest.mark.parametrize("env", ["local", "dev", "staging", "prod"])
def test_every_inventory_passes_the_roles_argument_specs_and_preflights(
    env: str, tmp_path: Path, remote_env: dict[str, str], thinkus_namespace: None, cert_manager_crds: None
) -> None:
    """The local cluster stands in for the remote ones: a namespace and cert-manager's CRDs, as they would have."""
    # The marker goes to a namespace of the test's own (check mode: a first deploy's preview claims it).
    identity = {"environment": env, "uid": "", "claim": True, "marker_namespace": f"guard-{env}-{uuid.uuid4().hex[:8]}"}
    extra: dict[str, Any] = {"deploy_artifacts_dir": str(tmp_path), "thinkus_cluster_identity": identity}
    if env != "local":
        extra.update({name: f"dummy-{name}" for name in _vault_names()})
    result = run_playbook(
        DEPLOY,
        inventory=f"inventories/{env}",
        tags=["preflight"],
        check=True,
        extra_vars=extra,
        env=remote_env if env != "local" else None,
    )
    assert result.rc == 0, result.output[-4000:]
    for role in ("docker_build", "k8s_deploy", "ingress_tls", "monitoring"):
        assert f"thinkus.ops.{role} : Validating arguments against arg spec 'preflight'" in result.output
    summary = _summary(tmp_path)
    assert summary["environment"] == env
    assert summary["stages"]["preflight"]["status"] == "ok"
    assert summary["stages"]["build"] == {"status": "not run"}


def test_prod_preview_against_an_unreachable_cluster_fails_clearly_in_preflight(
    tmp_path: Path, remote_env: dict[str, str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "thinkus-prod",
                "clusters": [
                    {"name": "prod", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}
                ],
                "users": [{"name": "prod", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "thinkus-prod", "context": {"cluster": "prod", "user": "prod"}}],
            }
        )
    )
    extra = {name: f"dummy-{name}" for name in _vault_names()} | {"deploy_artifacts_dir": str(tmp_path / "out")}
    result = run_playbook(
        DEPLOY,
        inventory="inventories/prod",
        check=True,
        diff=True,
        extra_vars=extra,
        env=remote_env | {"K8S_AUTH_KUBECONFIG": str(kubeconfig)},
    )
    assert result.rc != 0
    assert "The Kubernetes API server does not answer" in result.output
    assert "Traceback" not in result.output
    summary = _summary(tmp_path / "out")
    assert summary["result"] == "failed"
    assert summary["stages"]["preflight"]["status"] == "failed"
    assert all(summary["stages"][s] == {"status": "not run"} for s in ("build", "backend", "frontend"))


def test_prod_without_its_vault_is_refused_in_preflight(tmp_path: Path, remote_env: dict[str, str]) -> None:
    result = run_playbook(
        DEPLOY,
        inventory="inventories/prod",
        check=True,
        tags=["preflight"],
        extra_vars={"deploy_artifacts_dir": str(tmp_path)},
        env=remote_env,
    )
    assert result.rc != 0
    assert "No vault for prod" in result.output


@pytest.fixture
def empty_cluster() -> None:
    """The local Kubernetes restarted with an empty etcd: no namespace, CRD or object of ours.

    A brand-new machine's first deploy meets exactly this cluster; the test that takes this
    fixture runs before every other test (conftest), so nothing else loses its state.
    """
    subprocess.run([sys.executable, "-m", "tools.localenv", "reset"], cwd=REPO_ROOT, check=True)
    api = config.new_client_from_config(config_file=str(LOCAL / "kubeconfig"))
    ours = {"thinkus", "monitoring"} & {n.metadata.name for n in client.CoreV1Api(api).list_namespace().items}
    assert not ours, f"the reset cluster still has {ours}"


# The collection as it last landed before the real node (pods on kwok, worker on 8080, preview
# containers): a cluster that release deployed must take the current one in one run.
PREVIOUS_RELEASE = "7dff8d9"


@pytest.fixture
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A checkout of PREVIOUS_RELEASE wired like `make setup` wires this one."""
    found = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"], check=False
    )
    assert found.returncode == 0, f"commit {PREVIOUS_RELEASE} (the previous release) is not in this clone's history"
    where = tmp_path_factory.mktemp("previous-release") / "checkout"
    subprocess.run(
        ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(where), PREVIOUS_RELEASE],
        check=True,
        capture_output=True,
    )
    link = where / ".collections" / "ansible_collections" / "thinkus" / "ops"
    link.parent.mkdir(parents=True)
    link.symlink_to(where)
    try:
        yield where
    finally:
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(where)], check=False)
        for name in ("go-orchestrator", "py-ai-engine"):  # that release's side containers
            subprocess.run(["docker", "rm", "-f", f"thinkus-preview-{name}"], capture_output=True, check=False)


def worker_port(apps: client.AppsV1Api) -> int:
    return apps.read_namespaced_deployment("worker", "thinkus").spec.template.spec.containers[0].ports[0].container_port


@pytest.mark.empty_cluster
def test_upgrade_from_the_previous_release(empty_cluster: None, previous_release: Path, tmp_path: Path) -> None:
    # That release's preflight wanted the namespace before its backend made it (the bug this
    # release fixes), so its users deployed the backend first and the ingress after.
    for tags in (["build", "backend"], ["ingress"]):
        old = run_playbook(
            DEPLOY,
            inventory="inventories/local",
            tags=tags,
            cwd=previous_release,
            extra_vars={"deploy_artifacts_dir": str(tmp_path / "previous")},
            env={"ANSIBLE_CONFIG": str(previous_release / "ansible.cfg"), "THINKUS_LOCAL_DIR": str(LOCAL)},
        )
        assert old.rc == 0, old.output[-5000:]
    apps = client.AppsV1Api(config.new_client_from_config(config_file=str(LOCAL / "kubeconfig")))
    assert worker_port(apps) == 8080

    new = run_playbook(DEPLOY, inventory="inventories/local", tags=["build", "backend", "ingress"])
    assert new.rc == 0, new.output[-5000:]
    summary = _summary(LOCAL / "artifacts")
    assert summary["result"] == "ok", summary["stages"]
    for name in ("go-orchestrator", "py-ai-engine", "worker"):
        dep = apps.read_namespaced_deployment(name, "thinkus")
        assert dep.spec.template.spec.node_selector == {"thinkus.ops/node": "real"}, name
        assert dep.status.available_replicas == dep.spec.replicas, name
    assert worker_port(apps) == 8001


@pytest.mark.empty_cluster
def test_local_deploy_into_an_empty_cluster_then_noop_then_truthful_preview_then_bad_input(
    tmp_path: Path, empty_cluster: None
) -> None:
    artifacts = LOCAL / "artifacts"
    # A preview of the first deploy: truthful about what it would create, and nothing created.
    preview_first = run_playbook(DEPLOY, inventory="inventories/local", check=True, diff=True)
    assert preview_first.rc == 0, preview_first.output[-5000:]
    assert _summary(artifacts)["result"] == "ok"
    assert _summary(artifacts)["stages"]["backend"]["changed"] > 0
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(LOCAL / "kubeconfig")))
    assert "thinkus" not in {n.metadata.name for n in core.list_namespace().items}

    first = run_playbook(DEPLOY, inventory="inventories/local")
    assert first.rc == 0, first.output[-5000:]
    summary = _summary(artifacts)
    assert summary["result"] == "ok"
    assert all(summary["stages"][s]["status"] == "ok" for s in summary["stages"]), summary["stages"]
    assert set(summary["images"]) == {"go-orchestrator", "py-ai-engine", "worker"}
    assert all("@sha256:" in ref for ref in summary["images"].values())
    assert set(summary["revisions"]) == {"go-orchestrator", "py-ai-engine", "worker"}
    assert summary["load_test"]["requests"] == 300
    assert summary["load_test"]["error_rate_pct"] == 0

    # what the run produced: the Deployments run the built digests and are Available
    api = config.new_client_from_config(config_file=str(LOCAL / "kubeconfig"))
    apps = client.AppsV1Api(api)
    for name, ref in summary["images"].items():
        dep = apps.read_namespaced_deployment(name, "thinkus")
        assert dep.spec.template.spec.containers[0].image == ref
        assert dep.status.available_replicas == dep.spec.replicas

    second = run_playbook(DEPLOY, inventory="inventories/local")
    assert second.rc == 0, second.output[-5000:]
    again = _summary(artifacts)
    assert again["changed"] == 0, {s: v.get("changed_tasks") for s, v in again["stages"].items()}
    assert again["images"] == summary["images"]

    preview = run_playbook(
        DEPLOY, inventory="inventories/local", check=True, diff=True, extra_vars={"monitoring_scrape_interval": "20s"}
    )
    assert preview.rc == 0, preview.output[-5000:]
    assert "+  scrape_interval: 20s" in preview.output
    changed = {s: v.get("changed", 0) for s, v in _summary(artifacts)["stages"].items()}
    assert changed["monitoring"] > 0
    assert {s: n for s, n in changed.items() if s != "monitoring" and n} == {}

    bad = run_playbook(
        DEPLOY,
        inventory="inventories/local",
        extra_vars={"k8s_deploy_service_overrides": {"go-orchestrator": {"replicas": -1}}},
    )
    assert bad.rc != 0
    assert "replicas" in bad.output
    failed = _summary(artifacts)
    assert failed["stages"]["preflight"]["status"] == "failed"
    assert failed["stages"]["build"] == {"status": "not run"}
    assert failed["stages"]["backend"] == {"status": "not run"}


def test_load_test_fails_when_the_threshold_is_below_what_the_services_deliver() -> None:
    ok = run_playbook(DEPLOY, inventory="inventories/local", tags=["smoke"])
    assert ok.rc == 0, ok.output[-3000:]
    tight = run_playbook(
        DEPLOY, inventory="inventories/local", tags=["smoke"], extra_vars={"deploy_load_test_max_p99_ms": 0.001}
    )
    assert tight.rc != 0
    assert "exceeds the threshold of 0.001 ms" in tight.output


def test_no_secret_in_the_deploy_output_at_high_verbosity() -> None:
    result = run_playbook(DEPLOY, inventory="inventories/local", tags=["backend", "frontend"], verbosity=3)
    assert result.rc == 0, result.output[-3000:]
    password = (REPO_ROOT / "inventories/local/vault-password.txt").read_bytes().strip()
    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password))])
    secrets = yaml.safe_load(vault.decrypt((REPO_ROOT / "inventories/local/group_vars/all/vault.yml").read_bytes()))
    creds = yaml.safe_load((LOCAL / "credentials.yml").read_text())
    for name, value in {**secrets, **creds}.items():
        if any(word in name for word in ("password", "secret", "key", "token", "url", "dsn")) and len(str(value)) > 8:
            assert str(value) not in result.output, f"{name} appears in the -vvv output"
    assert os.environ.get("VERCEL_TOKEN", "unset-token") not in result.output
