"""The local Kubernetes control plane behaves like a real cluster.

Runs against the cluster the local environment brought up (kube-apiserver, controller
manager and scheduler built from tools/k8s, three kwok nodes). Nothing here skips: an
unreachable cluster is a failure.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.support.kube import wait_until

pytestmark = pytest.mark.localenv

ROOT = Path(__file__).resolve().parents[2]
NEVER_READY = {"thinkus.test/never-ready": "true"}
AVAILABLE_WITHIN = 60.0
NOT_READY_FOR = 10.0


def _pinned_version() -> str:
    text = (ROOT / "tools" / "k8s" / "go.mod").read_text()
    match = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes\s+(v\S+)", text, re.MULTILINE)
    assert match, "tools/k8s/go.mod does not pin k8s.io/kubernetes"
    return match.group(1)


@pytest.fixture(scope="module")
def api(kubeconfig: Path) -> client.ApiClient:
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    # Fail (not hang, not skip) when the cluster is not there.
    client.VersionApi(api_client).get_code(_request_timeout=10)
    return api_client


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    name = f"thinkus-test-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


def _deployment(name: str, replicas: int, extra_labels: dict[str, str] | None = None) -> client.V1Deployment:
    labels = {"app": name, **(extra_labels or {})}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                # kwok runs no containers: the image is never pulled.
                spec=client.V1PodSpec(containers=[client.V1Container(name="app", image="thinkus-test/noop:1")]),
            ),
        ),
    )


def _ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_version_is_the_pinned_release(api: client.ApiClient) -> None:
    info = client.VersionApi(api).get_code()
    want = _pinned_version()
    assert info.git_version == want
    assert (info.major, info.minor) == tuple(want.lstrip("v").split(".")[:2])


def test_three_kwok_nodes_are_ready(api: client.ApiClient) -> None:
    nodes = client.CoreV1Api(api).list_node(label_selector="type=kwok").items
    assert sorted(n.metadata.name for n in nodes) == ["kwok-node-0", "kwok-node-1", "kwok-node-2"]
    for node in nodes:
        ready = [c.status for c in node.status.conditions or [] if c.type == "Ready"]
        assert ready == ["True"], f"{node.metadata.name} Ready={ready}"
        assert node.status.allocatable["cpu"] == "32"
        assert node.status.allocatable["pods"] == "110"
        assert not [t for t in node.spec.taints or [] if t.effect in ("NoSchedule", "NoExecute")]


def test_deployment_becomes_available(api: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(namespace, _deployment("web", 3))
    started = time.monotonic()

    def available() -> bool:
        return apps.read_namespaced_deployment_status("web", namespace).status.available_replicas == 3

    wait_until("3/3 replicas available", available, AVAILABLE_WITHIN)
    print(f"3-replica Deployment Available after {time.monotonic() - started:.1f}s")
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 3
    assert all(p.status.phase == "Running" and _ready(p) and p.spec.node_name for p in pods)


def test_never_ready_pods_keep_deployment_unavailable(api: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, _deployment("stuck", 3, NEVER_READY))

    def running_pods() -> list[client.V1Pod]:
        pods = core.list_namespaced_pod(namespace, label_selector="app=stuck").items
        return pods if len(pods) == 3 and all(p.status.phase == "Running" for p in pods) else []

    wait_until("3 running pods", running_pods, AVAILABLE_WITHIN)
    deadline = time.monotonic() + NOT_READY_FOR
    while time.monotonic() < deadline:
        status = apps.read_namespaced_deployment_status("stuck", namespace).status
        assert not status.available_replicas, f"never-ready Deployment became available: {status}"
        pods = core.list_namespaced_pod(namespace, label_selector="app=stuck").items
        assert len(pods) == 3
        assert all(p.status.phase == "Running" and not _ready(p) for p in pods)
        time.sleep(1)


def test_rbac_denies_a_service_account_without_roles(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    account = client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    core.create_namespaced_service_account(namespace, account)
    token = core.create_namespaced_service_account_token(
        "nobody",
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)),
    ).status.token

    cfg = client.Configuration()
    cfg.host = api.configuration.host
    cfg.ssl_ca_cert = api.configuration.ssl_ca_cert
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    with client.ApiClient(cfg) as as_nobody:
        who = client.AuthenticationV1Api(as_nobody).create_self_subject_review(client.V1SelfSubjectReview())
        assert who.status.user_info.username == f"system:serviceaccount:{namespace}:nobody"
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(as_nobody).list_namespaced_pod(namespace)
    assert denied.value.status == 403
