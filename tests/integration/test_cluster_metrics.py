# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Cluster metrics on the local environment's real node: metrics-server, kube-state-metrics, the HPA.

Everything here is measured, not simulated: metrics-server (built from its Go module by
``make local-up``) scrapes the real node's kubelet and serves ``metrics.k8s.io`` through the
API server's aggregation layer; kube-state-metrics exports the objects for the host's
Prometheus; the HorizontalPodAutoscaler controller scales py-ai-engine on the CPU its pods
really burn under load, and back down when the load stops.

Scratch workloads go into namespaces of their own (thinkus-test-hpa-<random>) through
inventories/local; the crash-looping pod of the restart alert lives in the platform's
namespace for a minute, because the alert watches the application namespaces.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from ansible_collections.thinkus.ops.tests.support.ansible import REPO_ROOT, run_playbook
from ansible_collections.thinkus.ops.tests.support.kube import local_api, scratch_namespace, wait_until
from tools.localenv import alertmanager, metrics, node, prometheus
from tools.localenv._proc import Context

pytestmark = [pytest.mark.localenv, pytest.mark.slow]

INVENTORY = str(REPO_ROOT / "inventories" / "local")
ROLE_PLAYBOOK = "tests/integration/targets/k8s_deploy/deploy.yml"
LOCAL = yaml.safe_load((REPO_ROOT / "inventories/local/group_vars/all/k8s_deploy.yml").read_text())
DEPLOYMENTS = ("go-orchestrator", "py-ai-engine", "worker")
PLATFORM = "thinkus"
MEASURED = Context().state_dir / "artifacts" / "hpa.json"


@pytest.fixture(scope="module")
def api() -> client.ApiClient:
    return local_api()


@pytest.fixture(scope="module")
def platform(api: client.ApiClient) -> str:
    """The platform and its monitoring as `make demo` deploys them (a no-op when they already are)."""
    result = run_playbook("playbooks/deploy.yml", inventory=INVENTORY, tags=["build", "backend", "monitoring"])
    assert result.rc == 0, result.output[-5000:]
    return PLATFORM


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    with scratch_namespace(api, "thinkus-test-hpa") as name:
        yield name


def _cpu_millicores(quantity: str) -> float:
    if quantity.endswith("n"):
        return int(quantity[:-1]) / 1e6
    if quantity.endswith("u"):
        return int(quantity[:-1]) / 1e3
    if quantity.endswith("m"):
        return float(quantity[:-1])
    return float(quantity) * 1000


def _running_pods(api: client.ApiClient, namespace: str, app: str) -> list[Any]:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]


def _prometheus(query: str) -> list[dict[str, Any]]:
    url = f"{prometheus.url()}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)["data"]["result"]


def test_resource_metrics_of_the_platform_come_from_the_real_node(api: client.ApiClient, platform: str) -> None:
    custom = client.CustomObjectsApi(api)
    nodes = custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")["items"]
    # The kwok nodes run nothing: only the real node is scraped.
    assert [n["metadata"]["name"] for n in nodes] == [node.NODE_NAME]
    assert _cpu_millicores(nodes[0]["usage"]["cpu"]) > 0

    def usage_of_every_platform_pod() -> dict[str, dict[str, str]] | None:
        items = custom.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", platform, "pods")["items"]
        usage = {i["metadata"]["name"]: i["containers"][0]["usage"] for i in items if i["containers"]}
        wanted = {p.metadata.name for app in DEPLOYMENTS for p in _running_pods(api, platform, app)}
        return usage if wanted and wanted <= set(usage) else None

    usage = wait_until("metrics.k8s.io reports every running platform pod", usage_of_every_platform_pod, 90)
    for pod, container in usage.items():
        assert int(container["memory"].rstrip("Ki")) > 0, (pod, container)


def test_kube_state_metrics_reports_the_platform_and_prometheus_scrapes_it(
    api: client.ApiClient, platform: str
) -> None:
    with urllib.request.urlopen(f"http://{metrics.ksm_target()}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    apps = client.AppsV1Api(api)
    for name in DEPLOYMENTS:
        available = apps.read_namespaced_deployment(name, platform).status.available_replicas
        line = f'kube_deployment_status_replicas_available{{namespace="{platform}",deployment="{name}"}} {available}'
        assert line in text, f"{line!r} is not in kube-state-metrics' output"
    # No read access to Secrets is granted, and none are exported.
    assert "kube_secret_" not in text

    up = wait_until(
        "Prometheus scrapes kube-state-metrics",
        lambda: [r for r in _prometheus('up{job="kube-state-metrics"}') if r["value"][1] == "1"],
        60,
    )
    assert up[0]["metric"]["instance"] == metrics.ksm_target()
    restarts = wait_until(
        "the platform's container restarts are in Prometheus",
        lambda: _prometheus(f'kube_pod_container_status_restarts_total{{namespace="{platform}"}}'),
        60,
    )
    assert {r["metric"]["pod"].rsplit("-", 2)[0] for r in restarts} >= set(DEPLOYMENTS)


def test_a_crash_looping_container_raises_the_restart_alert(api: client.ApiClient, platform: str) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    template = apps.read_namespaced_deployment("py-ai-engine", platform).spec.template
    name = f"thinkus-test-crashloop-{uuid.uuid4().hex[:6]}"
    spec = template.spec
    spec.containers = [spec.containers[0]]
    container = spec.containers[0]
    container.name = "crashloop"
    container.command = ["python", "-c", "import sys; sys.exit(3)"]
    container.args = None
    container.liveness_probe = container.readiness_probe = container.ports = None
    container.env = container.env_from = None
    spec.restart_policy = "Always"
    pod = client.V1Pod(metadata=client.V1ObjectMeta(name=name, labels={"app": "thinkus-test-crashloop"}), spec=spec)
    core.create_namespaced_pod(platform, pod)
    started = time.monotonic()
    try:

        def restarted() -> int:
            statuses = core.read_namespaced_pod(name, platform).status.container_statuses or []
            return sum(s.restart_count for s in statuses)

        wait_until("the kubelet restarts the crashing container", restarted, 120)
        query = "/api/v2/alerts?" + urllib.parse.urlencode(
            {"filter": ['alertname="ThinkusPodRestarted"', f'pod="{name}"']}, doseq=True
        )

        def alert() -> list[dict[str, Any]]:
            with urllib.request.urlopen(f"http://{alertmanager.HOST}:{alertmanager.PORT}{query}", timeout=5) as resp:
                return json.load(resp)

        (firing,) = wait_until("ThinkusPodRestarted reaches Alertmanager", alert, 240, interval=2)
        assert firing["labels"]["namespace"] == platform
        assert firing["labels"]["container"] == "crashloop"
        assert firing["labels"]["severity"] == "warning"
        _record("restart_alert_seconds", time.monotonic() - started)
    finally:
        core.delete_namespaced_pod(name, platform, grace_period_seconds=0)


def _record(key: str, seconds: float) -> None:
    """Keep a measured duration for the closing note and the README (python -m tools.measurements)."""
    MEASURED.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(MEASURED.read_text())
    except (OSError, ValueError):
        data = {}
    data[key] = round(seconds, 1)
    MEASURED.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


class Load:
    """``threads`` loops of GET ``url`` as fast as the service answers, until stopped."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.ok = self.failed = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _thread in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    resp.read()
                    self.ok += 1
            except OSError:
                self.failed += 1
                self._stop.wait(0.1)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)


def _deploy_engine(namespace: str, hpa: dict[str, int]) -> Any:
    defaults = yaml.safe_load((REPO_ROOT / "roles/k8s_deploy/defaults/main.yml").read_text())
    service = defaults["k8s_deploy_services"]["py-ai-engine"]
    override = {**LOCAL["k8s_deploy_service_overrides"]["py-ai-engine"], "replicas": 1, "hpa": hpa}
    return run_playbook(
        ROLE_PLAYBOOK,
        extra_vars={
            "k8s_deploy_namespace": namespace,
            "k8s_deploy_instance": namespace,
            "k8s_deploy_services": {"py-ai-engine": service},
            "k8s_deploy_service_overrides": {"py-ai-engine": override},
            "k8s_deploy_rollout_timeout": 90,
            "thinkus_local_dir": str(REPO_ROOT / ".local"),
        },
        inventory=INVENTORY,
    )


def test_py_ai_engine_scales_up_on_cpu_under_load_and_back_down(
    api: client.ApiClient, platform: str, namespace: str
) -> None:
    hpa = {"min_replicas": 1, "max_replicas": 3, "cpu_utilization": 50, "scale_down_stabilization_seconds": 15}
    result = _deploy_engine(namespace, hpa)
    assert result.rc == 0, result.output[-5000:]
    autoscaling, apps = client.AutoscalingV2Api(api), client.AppsV1Api(api)
    live = autoscaling.read_namespaced_horizontal_pod_autoscaler("py-ai-engine-hpa", namespace)
    assert live.spec.behavior.scale_down.stabilization_window_seconds == 15

    def cpu_metric() -> int | None:
        status = autoscaling.read_namespaced_horizontal_pod_autoscaler("py-ai-engine-hpa", namespace).status
        for metric in status.current_metrics or []:
            if metric.resource and metric.resource.name == "cpu":
                return metric.resource.current.average_utilization
        return None

    # The HPA controller reads the pod's CPU from metrics.k8s.io (a quiet pod may read 0 %).
    wait_until("the HPA reports the pod's CPU utilization", lambda: cpu_metric() is not None, 120)
    ip = client.CoreV1Api(api).read_namespaced_service("py-ai-engine", namespace).spec.cluster_ip
    with Load(f"http://{ip}:8000/v1/generate?tokens=3") as load:
        started = time.monotonic()

        def scaled_up() -> int:
            dep = apps.read_namespaced_deployment("py-ai-engine", namespace)
            return (dep.status.ready_replicas or 0) if (dep.status.ready_replicas or 0) >= 2 else 0

        ready = wait_until("py-ai-engine scales up under load", scaled_up, 240, interval=2)
        up_seconds = time.monotonic() - started
        assert load.ok > 0
        # A deploy while the HPA has scaled up keeps the HPA's replica count.
        again = _deploy_engine(namespace, hpa)
        assert again.rc == 0, again.output[-5000:]
        assert apps.read_namespaced_deployment("py-ai-engine", namespace).spec.replicas >= ready
        peak_cpu = cpu_metric()
    stopped = time.monotonic()
    wait_until(
        "py-ai-engine scales back down to one pod after the load",
        lambda: apps.read_namespaced_deployment("py-ai-engine", namespace).spec.replicas == 1,
        300,
        interval=2,
    )
    down_seconds = time.monotonic() - stopped
    _record("hpa_scale_up_seconds", up_seconds)
    _record("hpa_scale_down_seconds", down_seconds)
    print(
        f"HPA: {ready} pods after {up_seconds:.0f}s of load (CPU {peak_cpu} % of requests), "
        f"1 pod {down_seconds:.0f}s after it"
    )


def test_the_metrics_api_is_registered_with_the_cluster_ca_and_least_privilege(api: client.ApiClient) -> None:
    registration = client.ApiregistrationV1Api(api).read_api_service("v1beta1.metrics.k8s.io")
    assert not registration.spec.insecure_skip_tls_verify
    conditions = {c.type: c.status for c in registration.status.conditions}
    assert conditions.get("Available") == "True", registration.status.conditions
    # metrics-server may read pods and nodes and scrape the kubelet, and nothing else.
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=metrics.METRICS_USER, resource_attributes=client.V1ResourceAttributes(verb="get", resource="secrets")
        )
    )
    assert not client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed
    kubelet = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=metrics.METRICS_USER,
            resource_attributes=client.V1ResourceAttributes(verb="get", resource="nodes", subresource="metrics"),
        )
    )
    assert client.AuthorizationV1Api(api).create_subject_access_review(kubelet).status.allowed
    ksm = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=metrics.KSM_USER, resource_attributes=client.V1ResourceAttributes(verb="list", resource="secrets")
        )
    )
    assert not client.AuthorizationV1Api(api).create_subject_access_review(ksm).status.allowed


def test_local_status_names_the_metrics_components() -> None:
    ok, text = metrics.status(Context())
    assert ok, text
    assert f"{node.NODE_IP}:{metrics.METRICS_SERVER_PORT}" in text and metrics.ksm_target() in text
