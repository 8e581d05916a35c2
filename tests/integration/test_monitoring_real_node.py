# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Cluster mode of the monitoring role, the mode dev, staging and prod use, running for real.

Prometheus and Alertmanager run as pods on the local real node, from the images
inventories/local names (Debian's packages on the local base image, pulled from the local
registry; the Prometheus Operator's config reloader built from its Go module). Their data
is on PersistentVolumes of the local environment's StorageClass.

* Prometheus finds every pod of the deployed platform through the API server (in-cluster
  service discovery through the ``kubernetes`` Service), the worker's included, and
  scrapes kube-state-metrics and the real node's cAdvisor: every one of those targets is up.
* In a namespace of its own, a pod that crash-loops makes ThinkusPodRestarted arrive at a
  webhook, and a service with 6 % errors makes the critical ThinkusHighErrorRate arrive,
  both sent by the in-cluster Alertmanager.
* Prometheus's samples survive its pod being replaced (the volume stays).
* A second run changes nothing.

Grafana, Vector and Loki are off here: no image of theirs can be built on this machine
(test_monitoring_cluster applies their objects on the kwok nodes).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support.alert_receiver import AlertReceiver, pager_and_chat_vars
from tests.support.ansible import REPO_ROOT, PlaybookResult, run_playbook
from tests.support.kube import local_api, wait_until
from tools.localenv import _secrets, node, registry
from tools.localenv._proc import Context

pytestmark = [pytest.mark.localenv, pytest.mark.slow]

INVENTORY = str(REPO_ROOT / "inventories" / "local")
NAMESPACE = "monitoring"
APPS = "thinkus"
# Names of this run's own: Alertmanager keeps its notification log on its volume across runs, and
# an alert group it already notified is not sent again within the repeat interval.
RUN = uuid.uuid4().hex[:6]
E2E_PREFIX = "thinkus-test-alerts-"
E2E = E2E_PREFIX + RUN
CRITICAL = f"e2e-critical-{RUN}"
PLATFORM = ("go-orchestrator", "py-ai-engine", "worker")
FOR = "10s"
DELIVERY_TIMEOUT = 240  # generous bound: image pulls, crash-loop back-off, scrape + evaluation + grouping
EXPORTER = REPO_ROOT / "tests" / "support" / "metrics_exporter.py"
PYTHON_IMAGE = f"{registry.HOST}:{registry.PORT}/thinkus-base/python:3.11-slim-bookworm"
APPLY_TASK = "thinkus.ops.monitoring : Apply the monitoring objects"


@dataclass
class Stack:
    api: client.ApiClient
    prometheus: str
    receiver: AlertReceiver
    tokens: dict[str, str]
    first: PlaybookResult
    second: PlaybookResult
    e2e_started: float


def _get(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    body = _get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert body["status"] == "success", body
    return body["data"]["result"]


def _run(extra_vars: dict[str, Any]) -> PlaybookResult:
    result = run_playbook("playbooks/monitoring.yml", extra_vars=extra_vars, inventory=INVENTORY, json_output=True)
    assert result.rc == 0, result.output[-6000:]
    return result


def _pull_secret() -> dict[str, Any]:
    creds = _secrets.load(Context())
    user, password = creds["registry_username"], creds["registry_password"]
    server = f"{registry.HOST}:{registry.PORT}"
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = {"auths": {server: {"username": user, "password": password, "auth": auth}}}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "thinkus-registry", "namespace": E2E},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }


def _deployment(name: str, container: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": E2E},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                "spec": {
                    "nodeSelector": {node.NODE_LABEL[0]: node.NODE_LABEL[1]},
                    "tolerations": [{**node.NODE_TAINT, "operator": "Equal"}],
                    "imagePullSecrets": [{"name": "thinkus-registry"}],
                    "containers": [
                        {
                            "name": name,
                            "image": PYTHON_IMAGE,
                            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "96Mi"}},
                            **container,
                        }
                    ],
                    "volumes": [{"name": "exporter", "configMap": {"name": "metrics-exporter"}}],
                },
            },
        },
    }


def _e2e_workloads(api: client.ApiClient) -> None:
    """A service with 6 % errors (the metrics exporter the host-mode tests use) and a pod that crash-loops."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespace({"metadata": {"name": E2E}})
    core.create_namespaced_secret(E2E, _pull_secret())
    core.create_namespaced_config_map(
        E2E, {"metadata": {"name": "metrics-exporter"}, "data": {"metrics_exporter.py": EXPORTER.read_text()}}
    )
    mount = [{"name": "exporter", "mountPath": "/exporter", "readOnly": True}]
    apps.create_namespaced_deployment(
        E2E,
        _deployment(
            CRITICAL,
            {
                "command": ["python3", "/exporter/metrics_exporter.py", "--host", "0.0.0.0", "--port", "8000"],  # noqa: S104 (in its pod)
                "args": ["--error-ratio", "0.06"],
                "ports": [{"name": "http", "containerPort": 8000}],
                "volumeMounts": mount,
            },
            {"prometheus.io/scrape": "true", "prometheus.io/port": "8000", "prometheus.io/path": "/metrics"},
        ),
    )
    apps.create_namespaced_deployment(
        E2E, _deployment("e2e-crashloop", {"command": ["python3", "-c", "raise SystemExit(1)"], "volumeMounts": mount})
    )


def _delete_namespace(api: client.ApiClient, name: str) -> None:
    core = client.CoreV1Api(api)
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_until(f"namespace {name} deleted", gone, timeout=120, interval=1)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    api = local_api()
    # The platform as `make demo` deploys it (a no-op when it already is).
    deployed = run_playbook("playbooks/deploy.yml", inventory=INVENTORY, tags=["build", "backend"])
    assert deployed.rc == 0, deployed.output[-5000:]
    for leftover in client.CoreV1Api(api).list_namespace().items:  # of an interrupted run
        if leftover.metadata.name.startswith(E2E_PREFIX):
            _delete_namespace(api, leftover.metadata.name)

    # Alertmanager's pod reaches this machine at the node address (its pod bridge's gateway).
    with AlertReceiver(host=node.NODE_IP) as receiver:
        tokens = {"pager": secrets.token_hex(16), "chat": secrets.token_hex(16)}
        extra_vars = {
            "monitoring_mode": "cluster",
            "monitoring_k8s_namespace": NAMESPACE,
            "monitoring_k8s_app_namespaces": [APPS, E2E],
            "monitoring_services": [{"name": name} for name in (*PLATFORM, CRITICAL)],
            "monitoring_grafana_enabled": False,
            "monitoring_logs_enabled": False,
            "monitoring_scrape_interval": "5s",
            "monitoring_scrape_timeout": "4s",
            "monitoring_evaluation_interval": "5s",
            "monitoring_alert_error_critical_for": FOR,
            "monitoring_alert_error_warning_for": FOR,
            "monitoring_alertmanager_group_wait": "1s",
            "monitoring_alertmanager_group_interval": "5s",
            **pager_and_chat_vars(receiver, tokens),
        }
        first = _run(extra_vars)
        second = _run(extra_vars)
        ip = client.CoreV1Api(api).read_namespaced_service("prometheus", NAMESPACE).spec.cluster_ip
        prometheus = f"http://{ip}:9090"
        e2e_started = time.time()
        _e2e_workloads(api)
        try:
            yield Stack(api, prometheus, receiver, tokens, first, second, e2e_started)
        finally:
            _delete_namespace(api, E2E)


def test_prometheus_and_alertmanager_run_on_the_real_node_with_their_data_on_volumes(stack: Stack) -> None:
    core = client.CoreV1Api(stack.api)
    for name in ("prometheus", "alertmanager"):
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"app.kubernetes.io/name={name}").items
        running = [p for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
        assert len(running) == 1, [(p.metadata.name, p.status.phase) for p in pods]
        assert running[0].spec.node_name == node.NODE_NAME
        claim = core.read_namespaced_persistent_volume_claim(f"{name}-data", NAMESPACE)
        assert claim.status.phase == "Bound"
        assert claim.spec.storage_class_name == node.STORAGE_CLASS
        volume = core.read_persistent_volume(claim.spec.volume_name)
        assert Path(volume.spec.local.path).is_dir()
    # The images the inventory names: built here from Debian's packages, and the reloader.
    build = _get(f"{stack.prometheus}/api/v1/status/buildinfo")["data"]
    assert build["version"].startswith("2.42")


def test_every_service_of_the_platform_is_discovered_and_scraped(stack: Stack) -> None:
    core = client.CoreV1Api(stack.api)
    expected = {
        pod.status.pod_ip
        for app in PLATFORM
        for pod in core.list_namespaced_pod(APPS, label_selector=f"app={app}").items
        if pod.status.phase == "Running"
    }
    assert expected, "no platform pod is running"

    def all_up() -> dict[str, Any] | None:
        targets = _get(f"{stack.prometheus}/api/v1/targets?state=active")["data"]["activeTargets"]
        pods = [t for t in targets if t["labels"]["job"] == "thinkus-pods" and t["labels"]["namespace"] == APPS]
        scraped = {urllib.parse.urlsplit(t["scrapeUrl"]).hostname for t in pods if t["health"] == "up"}
        services = {t["labels"]["service"] for t in pods if t["health"] == "up"}
        ksm = [t for t in targets if t["labels"]["job"] == "kube-state-metrics" and t["health"] == "up"]
        cadvisor = [
            t
            for t in targets
            if t["labels"]["job"] == "kubernetes-cadvisor" and node.NODE_NAME in t["scrapeUrl"] and t["health"] == "up"
        ]
        if expected <= scraped and services == set(PLATFORM) and ksm and cadvisor:
            return {"pods": sorted(scraped), "services": sorted(services)}
        return None

    what = "every platform pod, kube-state-metrics and the node's cAdvisor up"
    found = wait_until(what, all_up, timeout=120, interval=2)
    assert set(found["services"]) == {"go-orchestrator", "py-ai-engine", "worker"}
    # The restart alert's input: container restarts of the platform's pods, from kube-state-metrics.
    assert _query(stack.prometheus, f'kube_pod_container_status_restarts_total{{namespace="{APPS}"}}')


def test_a_crash_looping_pod_sends_the_restart_alert_through_the_in_cluster_alertmanager(stack: Stack) -> None:
    def restarted(note: Any) -> bool:
        return note.path == "/chat" and note.alert("ThinkusPodRestarted", namespace=E2E) is not None

    note = stack.receiver.wait_for(restarted, DELIVERY_TIMEOUT)
    assert note is not None, [(n.path, [a["labels"] for a in n.alerts()]) for n in stack.receiver.notifications]
    alert = note.alert("ThinkusPodRestarted", namespace=E2E)
    assert alert["labels"]["severity"] == "warning"
    assert alert["labels"]["pod"].startswith("e2e-crashloop-")
    assert note.headers["authorization"] == f"Bearer {stack.tokens['chat']}"
    took = note.received_at - stack.e2e_started
    print(f"\nmonitoring real node: restart alert at the webhook {took:.1f}s after the crash-looping pod was created")


def test_six_percent_errors_page_through_the_in_cluster_alertmanager(stack: Stack) -> None:
    def paged(note: Any) -> bool:
        found = note.alert("ThinkusHighErrorRate", service=CRITICAL, severity="critical")
        return note.path == "/pager" and found is not None

    note = stack.receiver.wait_for(paged, DELIVERY_TIMEOUT)
    assert note is not None, [(n.path, [a["labels"] for a in n.alerts()]) for n in stack.receiver.notifications]
    assert note.headers["authorization"] == f"Bearer {stack.tokens['pager']}"
    ratio = _query(stack.prometheus, f'service:http_requests_error_ratio:rate5m{{service="{CRITICAL}"}}')
    assert ratio and 0.055 < float(ratio[0]["value"][1]) < 0.065, ratio
    took = note.received_at - stack.e2e_started
    print(f"\nmonitoring real node: critical alert at the webhook {took:.1f}s after the 6 % errors pod was created")


def test_prometheus_keeps_its_samples_when_its_pod_is_replaced(stack: Stack) -> None:
    core = client.CoreV1Api(stack.api)
    before = time.time()
    wait_until("a sample of `up` stored", lambda: _query(stack.prometheus, "up"), timeout=60, interval=2)
    (pod,) = core.list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/name=prometheus").items
    core.delete_namespaced_pod(pod.metadata.name, NAMESPACE)

    def new_pod_ready() -> bool:
        pods = core.list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/name=prometheus").items
        return any(
            p.metadata.name != pod.metadata.name
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            for p in pods
        )

    wait_until("the replacement Prometheus pod Ready", new_pod_ready, timeout=180, interval=2)

    def old_samples() -> list[dict[str, Any]]:
        try:
            body = _get(f"{stack.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": "up", "time": before}))
        except OSError:
            return []
        return body["data"]["result"]

    # The replacement reads the same volume: the samples from before the replacement are there.
    assert wait_until("samples from before the pod was replaced", old_samples, timeout=60, interval=2)


def test_a_second_run_changes_nothing(stack: Stack) -> None:
    assert stack.first.stats["localhost"]["failures"] == 0
    assert stack.second.task(APPLY_TASK)["changed"] is False
    assert stack.second.stats["localhost"]["changed"] == 0
    # The receivers' tokens are in a Secret, never in the output.
    for token in stack.tokens.values():
        assert token not in stack.first.output and token not in stack.second.output
