"""Wrong inputs stop playbooks/deploy.yml in preflight, naming the variable, the value and the form expected.

Each run targets a namespace of its own that must still not exist afterwards: nothing changed.
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


@pytest.fixture
def core() -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(KUBECONFIG)))


@pytest.fixture
def app_ns(core: client.CoreV1Api) -> Iterator[str]:
    name = f"preflight-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as err:
        if err.status != 404:
            raise


def _flat(text: str) -> str:
    return " ".join(text.split())


CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "quantity": (
        {"k8s_deploy_service_overrides": {"worker": {"resources": {"requests": {"memory": "48MB"}}}}},
        ["k8s_deploy_services['worker'].resources.requests.memory is \"48MB\", not a Kubernetes quantity", "512Mi"],
    ),
    "request_above_limit": (
        {"k8s_deploy_service_overrides": {"worker": {"resources": {"requests": {"cpu": "1500m"}}}}},
        ["k8s_deploy_services['worker'].resources.requests.cpu (1500m) is above its limit (1000m)"],
    ),
    "probe_port": (
        {"k8s_deploy_service_overrides": {"worker": {"readiness_probe": {"port": 9999}}}},
        ["k8s_deploy_services['worker'].readiness_probe", "port one of the ports the container declares", "got 9999"],
    ),
    "image_reference": (
        {"k8s_deploy_image_prefix": "127.0.0.1:5000/Thinkus"},
        ["127.0.0.1:5000/Thinkus/", "[registry[:port]/]path[:tag][@sha256:digest]", "k8s_deploy_image_prefix"],
    ),
    "configmap_key": (
        {"k8s_deploy_config": {"AI SERVICE URL": "x"}},
        ["k8s_deploy_config keys become ConfigMap keys and must match [-._a-zA-Z0-9]+", '["AI SERVICE URL"]'],
    ),
    "frontend_revision": (
        {"frontend_commit_sha": ""},
        ['frontend_commit_sha the revision as 40 lower-case hex digits (got ""'],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_wrong_value_fails_in_preflight_with_nothing_changed(
    case: str, tmp_path: Path, core: client.CoreV1Api, app_ns: str
) -> None:
    overrides, expected = CASES[case]
    result = run_playbook(
        "playbooks/deploy.yml",
        inventory="inventories/local",
        tags=["backend", "frontend"],
        extra_vars={"deploy_artifacts_dir": str(tmp_path), "k8s_deploy_namespace": app_ns} | overrides,
    )
    assert result.rc != 0
    flat = _flat(result.output)
    for text in expected:
        assert text in flat, result.output[-3000:]
    summary = json.loads((tmp_path / "deploy-summary.json").read_text())
    assert summary["stages"]["preflight"]["status"] == "failed"
    assert summary["stages"]["backend"] == {"status": "not run"}
    assert summary["stages"]["frontend"] == {"status": "not run"}
    assert app_ns not in {n.metadata.name for n in core.list_namespace().items}


MONITORING_CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "volume_size": (
        {"monitoring_k8s_volume_sizes": {"prometheus": "lots", "alertmanager": "1Gi", "loki": "1Gi"}},
        ["monitoring_k8s_volume_sizes needs prometheus, alertmanager and loki as Kubernetes quantities", '"lots"'],
    ),
    "resources": (
        {"monitoring_k8s_resources": {"prometheus": {"requests": {"memory": "1GB"}}}},
        ["must be a Kubernetes quantity such as 250m or 512Mi", '"prometheus.requests.memory=1GB"'],
    ),
    "storage_class": (
        {"monitoring_k8s_storage_class": "Local_SSD"},
        ["monitoring_k8s_storage_class must be empty or a StorageClass name", '"Local_SSD"'],
    ),
    "pull_secret_without_server": (
        {"monitoring_k8s_registry_pull_secret": "registry", "monitoring_k8s_registry_server": ""},
        ["the pull Secret needs monitoring_k8s_registry_server and monitoring_k8s_registry_username"],
    ),
}


@pytest.mark.parametrize("case", sorted(MONITORING_CASES))
def test_a_wrong_monitoring_cluster_value_fails_in_preflight_with_nothing_changed(
    case: str, core: client.CoreV1Api, app_ns: str
) -> None:
    overrides, expected = MONITORING_CASES[case]
    result = run_playbook(
        "playbooks/monitoring.yml",
        inventory="inventories/local",
        extra_vars={"monitoring_mode": "cluster", "monitoring_k8s_namespace": app_ns} | overrides,
    )
    assert result.rc != 0
    flat = _flat(result.output)
    for text in expected:
        assert text in flat, result.output[-3000:]
    assert app_ns not in {n.metadata.name for n in core.list_namespace().items}


def test_a_backup_job_name_that_is_no_dns_label_fails_in_preflight(tmp_path: Path, core: client.CoreV1Api) -> None:
    """backup_name ends up in host files (systemd units, cron entries): checked in every mode."""
    playbook = tmp_path / "schedules.yml"
    playbook.write_text(
        yaml.safe_dump(
            [{"name": "Schedule", "hosts": "localhost", "gather_facts": False, "roles": ["thinkus.ops.backup"]}]
        )
    )
    config_dir = tmp_path / "etc"
    result = run_playbook(
        playbook,
        inventory=str(REPO_ROOT / "inventories/local"),
        extra_vars={
            "backup_mode": "host",
            "backup_name": "../../etc/evil",
            "backup_install_tools": False,
            "backup_run_kinds": [],
            "backup_host_config_dir": str(config_dir),
            "backup_host_systemd_dir": str(tmp_path / "systemd"),
            "backup_host_cron_file": str(tmp_path / "cron"),
        },
    )
    assert result.rc != 0
    assert (
        "must be a DNS label of lower-case letters, digits and '-', at most 40 characters (got \"../../etc/evil\")"
        in (_flat(result.output))
    )
    assert not config_dir.exists()
    assert not (tmp_path / "systemd").exists() and not (tmp_path / "cron").exists()
