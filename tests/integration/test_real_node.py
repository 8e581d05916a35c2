# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The platform on the local environment's real node (kubelet + containerd), not on kwok.

What kwok cannot prove is proven here, from what the cluster and the node really did: the
images pull by digest from the htpasswd registry through the pull Secret k8s_deploy
manages; the containers run under the namespace's ``restricted`` Pod Security level and
their probes answer; Service names resolve (CoreDNS) and Services route (kube-proxy) from
inside a pod; a release that crashes, one whose readiness never passes, and one whose
image cannot be pulled are each rolled back, named in the failure, while the old pods
keep serving.

Broken releases go into scratch namespaces (thinkus-test-node-<random>) deployed through
inventories/local, like an operator would; the platform itself stays as `make demo` left it.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from ansible_collections.thinkus.ops.tests.support.ansible import REPO_ROOT, PlaybookResult, run_playbook
from ansible_collections.thinkus.ops.tests.support.kube import local_api, scratch_namespace
from tools.localenv import _secrets, k8s, node, registry
from tools.localenv._proc import Context

pytestmark = [pytest.mark.localenv, pytest.mark.slow]

INVENTORY = str(REPO_ROOT / "inventories" / "local")
KUBECONFIG = REPO_ROOT / ".local" / "kubeconfig"
ROLE_PLAYBOOK = "tests/integration/targets/k8s_deploy/deploy.yml"
LOCAL = yaml.safe_load((REPO_ROOT / "inventories/local/group_vars/all/k8s_deploy.yml").read_text())
DEPLOYMENTS = ("go-orchestrator", "py-ai-engine", "worker")
REGISTRY = f"{registry.HOST}:{registry.PORT}"


def _kubectl() -> str:
    path = Context().cache_dir / "bin" / f"kubernetes-{k8s.k8s_version()}" / "kubectl"
    assert path.exists(), f"{path} is missing: make local-up builds it"
    return str(path)


@pytest.fixture(scope="module")
def api() -> client.ApiClient:
    return local_api()


@pytest.fixture(scope="module")
def platform(api: client.ApiClient) -> str:
    """The platform built and deployed as `make demo` does (a no-op when it already is)."""
    result = run_playbook("playbooks/deploy.yml", inventory=INVENTORY, tags=["build", "backend"])
    assert result.rc == 0, result.output[-5000:]
    return "thinkus"


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    with scratch_namespace(api, "thinkus-test-node") as name:
        yield name


def deploy(
    namespace: str, services: list[str], overrides: dict[str, Any] | None = None, **extra: Any
) -> PlaybookResult:
    """k8s_deploy into ``namespace`` with only ``services``, sized as in inventories/local."""
    wanted = copy.deepcopy({name: LOCAL["k8s_deploy_service_overrides"][name] for name in services})
    for name, change in (overrides or {}).items():
        wanted[name] = {**wanted[name], **change}
    for spec in wanted.values():
        spec["replicas"] = 1
        spec.pop("hpa", None)
    extra_vars: dict[str, Any] = {
        "k8s_deploy_namespace": namespace,
        "k8s_deploy_instance": namespace,
        "k8s_deploy_services": _defaults_for(services),
        "k8s_deploy_service_overrides": wanted,
        "k8s_deploy_rollout_timeout": 45,
        "thinkus_local_dir": str(REPO_ROOT / ".local"),
    }
    extra_vars.update(extra)
    return run_playbook(ROLE_PLAYBOOK, extra_vars=extra_vars, inventory=INVENTORY)


def _defaults_for(services: list[str]) -> dict[str, Any]:
    defaults = yaml.safe_load((REPO_ROOT / "roles/k8s_deploy/defaults/main.yml").read_text())
    out = {name: defaults["k8s_deploy_services"][name] for name in services}
    for spec in out.values():
        spec["hpa"] = {}
    return out


def pods_of(api: client.ApiClient, namespace: str, app: str) -> list[Any]:
    return client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={app}").items


def cluster_ip(api: client.ApiClient, namespace: str, name: str) -> str:
    return client.CoreV1Api(api).read_namespaced_service(name, namespace).spec.cluster_ip


class RequestLoop:
    """GET ``url`` every 50 ms from a thread until stopped (at most ``limit`` requests)."""

    def __init__(self, url: str, limit: int = 4000) -> None:
        self.url, self.limit = url, limit
        self.ok = self.failed = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.ok + self.failed < self.limit:
            try:
                with urllib.request.urlopen(self.url, timeout=2) as resp:
                    self.ok += resp.status == 200
                    self.failed += resp.status != 200
            except OSError as err:
                self.failed += 1
                self.errors.append(str(err))
            self._stop.wait(0.05)

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def push_image(tag: str, dockerfile: str) -> str:
    """Build a small image from the local base image and push it with the registry's credentials."""
    user, password = (_secrets.load(Context())[key] for key in ("registry_username", "registry_password"))
    ref = f"{REGISTRY}/thinkus-test/{tag}"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "Dockerfile").write_text(dockerfile)
        env = dict(os.environ, DOCKER_CONFIG=str(Path(tmp) / "docker-config"), DOCKER_BUILDKIT="0")
        subprocess.run(["docker", "build", "-q", "-t", ref, tmp], check=True, env=env, capture_output=True)
        subprocess.run(
            ["docker", "login", "--username", user, "--password-stdin", REGISTRY],
            input=password.encode(),
            check=True,
            env=env,
            capture_output=True,
        )
        subprocess.run(["docker", "push", "-q", ref], check=True, env=env, capture_output=True)
    subprocess.run(["docker", "rmi", ref], check=False, capture_output=True)
    return ref


def image_override(ref: str) -> dict[str, str]:
    repository, tag = ref.rsplit(":", 1)
    return {"image": repository, "tag": tag}


def test_the_platform_runs_on_the_real_node(api: client.ApiClient, platform: str) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    assert core.read_namespace(platform).metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pull_secret = core.read_namespaced_secret(LOCAL["k8s_deploy_registry_pull_secret"], platform)
    assert pull_secret.type == "kubernetes.io/dockerconfigjson"
    for name in DEPLOYMENTS:
        dep = apps.read_namespaced_deployment(name, platform)
        assert dep.status.available_replicas == dep.spec.replicas >= 1, name
        spec = dep.spec.template.spec
        assert "@sha256:" in spec.containers[0].image, name  # pulled by digest
        assert [s.name for s in spec.image_pull_secrets] == [LOCAL["k8s_deploy_registry_pull_secret"]], name
        pods = [p for p in pods_of(api, platform, name) if not p.metadata.deletion_timestamp]
        assert len(pods) == dep.spec.replicas, name
        for pod in pods:
            assert pod.spec.node_name == node.NODE_NAME, (name, pod.spec.node_name)
            assert pod.status.phase == "Running", (name, pod.status.phase)
            (status,) = pod.status.container_statuses
            # Running and Ready means the image pulled and started, and both probes answer
            # on the ports the image really listens on (the worker's 8001 included).
            assert status.state.running is not None and status.ready, (name, status.state)
            assert status.image_id.split("@")[-1] == spec.containers[0].image.split("@")[-1], name


def test_every_pod_is_annotated_with_where_its_metrics_answer(api: client.ApiClient, platform: str) -> None:
    """The scrape annotations (cluster-mode monitoring finds pods by them) name a port that serves metrics."""
    apps = client.AppsV1Api(api)
    for name in DEPLOYMENTS:
        template = apps.read_namespaced_deployment(name, platform).spec.template
        annotations = template.metadata.annotations
        assert annotations.get("prometheus.io/scrape") == "true", (name, annotations)
        port, path = int(annotations["prometheus.io/port"]), annotations["prometheus.io/path"]
        assert port in [p.container_port for p in template.spec.containers[0].ports], (name, port)
        pods = [p for p in pods_of(api, platform, name) if p.status.phase == "Running" and p.status.pod_ip]
        assert pods, name
        for pod in pods:
            url = f"http://{pod.status.pod_ip}:{port}{path}"
            with urllib.request.urlopen(url, timeout=5) as resp:
                body = resp.read().decode()
            assert resp.status == 200 and "# TYPE " in body, (name, url, body[:200])


def test_service_names_resolve_and_route_from_inside_a_pod(api: client.ApiClient, platform: str) -> None:
    pod = next(p for p in pods_of(api, platform, "py-ai-engine") if p.status.phase == "Running")
    probe = (
        "import json, socket, urllib.request\n"
        "ip = socket.gethostbyname('go-orchestrator')\n"
        "with urllib.request.urlopen('http://go-orchestrator.thinkus.svc.cluster.local:8080/health', timeout=5) as r:\n"
        "    print(json.dumps({'ip': ip, 'status': r.status}))\n"
    )
    exec_argv = [_kubectl(), f"--kubeconfig={KUBECONFIG}", "-n", platform, "exec", pod.metadata.name, "--"]
    out = subprocess.run(
        [*exec_argv, "python", "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer == {"ip": cluster_ip(api, platform, "go-orchestrator"), "status": 200}
    logs = subprocess.run(
        [_kubectl(), f"--kubeconfig={KUBECONFIG}", "-n", platform, "logs", pod.metadata.name, "--tail=5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert logs.returncode == 0, logs.stderr  # the API server reaches the kubelet


def test_a_release_that_crashes_at_start_is_rolled_back_while_the_old_pods_serve(
    api: client.ApiClient, platform: str, namespace: str
) -> None:
    v1 = deploy(namespace, ["go-orchestrator"])
    assert v1.rc == 0, v1.output[-5000:]
    before = pods_of(api, namespace, "go-orchestrator")
    crash = push_image(
        f"crash:{uuid.uuid4().hex[:8]}",
        "FROM thinkus-base/debian:bookworm\n"
        'CMD ["sh", "-c", "echo connecting to $DB_URL; echo fatal: THINKUS_REQUIRED_SETTING is not set >&2; exit 3"]\n',
    )
    url = f"http://{cluster_ip(api, namespace, 'go-orchestrator')}:8080/health"
    with RequestLoop(url) as loop:
        v2 = deploy(namespace, ["go-orchestrator"], {"go-orchestrator": image_override(crash)})
    assert v2.rc != 0
    assert f"Deployment {namespace}/go-orchestrator" in v2.output
    assert "container orchestrator waiting: CrashLoopBackOff" in v2.output
    assert "container orchestrator last terminated: Error (exit code 3)" in v2.output
    assert "fatal: THINKUS_REQUIRED_SETTING is not set" in v2.output  # the last log lines
    assert "connecting to ********" in v2.output  # the Secret the container printed is masked
    assert "rolled back to revision 1" in v2.output
    assert loop.ok > 20 and loop.failed == 0, (loop.ok, loop.failed, loop.errors[:3])
    after = [p for p in pods_of(api, namespace, "go-orchestrator") if not p.metadata.deletion_timestamp]
    assert {p.metadata.name for p in after} == {p.metadata.name for p in before}  # the old pod never left


def test_a_release_whose_readiness_never_passes_is_rolled_back(
    api: client.ApiClient, platform: str, namespace: str
) -> None:
    v1 = deploy(namespace, ["worker"])
    assert v1.rc == 0, v1.output[-5000:]
    # The fault the worker once had, probes on 8080 while the image listens on 8001 (and declares
    # 8001), is now refused in preflight, before anything changes.
    mismatch = {"worker": {"readiness_probe": {"path": "/ready", "port": 8080}}}
    refused = deploy(namespace, ["worker"], mismatch)
    assert refused.rc != 0
    assert "8080" in refused.output and "readiness_probe" in refused.output, refused.output[-3000:]
    assert client.AppsV1Api(api).read_namespaced_deployment("worker", namespace).metadata.generation == 1
    # A probe on a declared port that the image never answers with 200: never Ready, rolled back.
    probe = {"path": "/never-ready", "port": 8001, "initial_delay_seconds": 1, "period_seconds": 2}
    wrong = {"worker": {"readiness_probe": probe}}
    v2 = deploy(namespace, ["worker"], wrong, k8s_deploy_rollout_timeout=25)
    assert v2.rc != 0
    assert f"Deployment {namespace}/worker: not rolled out within 25s" in v2.output
    assert "Readiness probe failed" in v2.output or "ContainersNotReady" in v2.output, v2.output[-3000:]
    assert "rolled back to revision 1" in v2.output
    dep = client.AppsV1Api(api).read_namespaced_deployment("worker", namespace)
    assert dep.status.available_replicas == 1
    assert dep.spec.template.spec.containers[0].readiness_probe.http_get.path == "/ready"


def test_a_wrong_pull_secret_is_named_as_image_pull_back_off(
    api: client.ApiClient, platform: str, namespace: str
) -> None:
    v1 = deploy(namespace, ["go-orchestrator"])
    assert v1.rc == 0, v1.output[-5000:]
    # The orchestrator's image with a label of its own: a new digest, which the node has never pulled.
    unique = uuid.uuid4().hex[:8]
    fresh = push_image(
        f"never-pulled:{unique}", f"FROM {REGISTRY}/thinkus/go-orchestrator:local\nLABEL thinkus.test={unique}\n"
    )
    v2 = deploy(
        namespace,
        ["go-orchestrator"],
        {"go-orchestrator": image_override(fresh)},
        k8s_deploy_registry_password="not-the-password",  # the wrong one, on purpose
        k8s_deploy_rollout_timeout=30,
    )
    assert v2.rc != 0
    assert "ImagePullBackOff" in v2.output or "ErrImagePull" in v2.output, v2.output[-3000:]
    assert "rolled back to revision 1" in v2.output
    assert "not-the-password" not in v2.output
    # Secrets are not rolled back (the role's README says so): the next deploy with the right
    # credentials repairs the pull Secret, and a release that needs a pull goes through.
    fixed = {"go-orchestrator": image_override(fresh)}
    v3 = deploy(namespace, ["go-orchestrator"], fixed, k8s_deploy_rollout_timeout=60)
    assert v3.rc == 0, v3.output[-3000:]
    (pod,) = [p for p in pods_of(api, namespace, "go-orchestrator") if not p.metadata.deletion_timestamp]
    assert pod.spec.containers[0].image == fresh
    assert pod.status.container_statuses[0].ready
