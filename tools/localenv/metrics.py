"""Cluster metrics beside the real node: metrics-server and kube-state-metrics.

Both are built from their Go modules (``tools/metrics``) and run as processes on this
machine, like CoreDNS:

- **metrics-server** serves ``metrics.k8s.io`` behind the API server's aggregation layer.
  It scrapes the real node's kubelet (``/metrics/resource``, verified against the cluster
  CA) every 15 s; the kwok nodes run no containers and are left out by a node selector.
  The HorizontalPodAutoscaler controller reads pod CPU from it, and so does
  ``kubectl top``. The API server reaches it through a selector-less Service
  ``kube-system/metrics-server`` whose endpoint is the node address, with aggregator
  routing on (``--enable-aggregator-routing``), and proxies requests to it with the
  front-proxy client certificate.
- **kube-state-metrics** exports the objects' state (restarts, replicas, HPA status) on
  the loopback for the host's Prometheus; inventories/local scrapes it, so the pod-restart
  alert works in the local environment's host mode too.

Each runs as a user of its own (client certificate), with the least RBAC it needs.

The same component builds what the monitoring role runs in cluster mode that no package has:
its config reloader sidecar (prometheus-config-reloader, from the Prometheus Operator's Go
module in ``tools/reloader``), imported into the real node's containerd, and Prometheus 2.42.0
(``tools/prometheus``; Debian's package leaves Kubernetes service discovery out), put on the
local base image and pushed to the local registry. Their references are written to
``.local/cluster-images.yml``, which inventories/local reads. kube-state-metrics is reached
from pods at the node address (forwarded to its loopback port, as the managed services are).

Standalone: ``python -m tools.localenv.metrics up|down|status``.
"""

from __future__ import annotations

import base64
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tools.localenv import images as base_images
from tools.localenv import k8s, node, registry
from tools.localenv._proc import (
    Context,
    component_main,
    http_status,
    say,
    start_process,
    stop_processes,
    wait_for,
)

NAME = "cluster-metrics"

TOOLS = Path(__file__).resolve().parents[1]
MODULE = TOOLS / "metrics"
RELOADER_MODULE = TOOLS / "reloader"
RELOADER = "prometheus-config-reloader"
RELOADER_IMAGE = "localhost/thinkus/prometheus-config-reloader"
PROMETHEUS_MODULE = TOOLS / "prometheus"
PROMETHEUS = "prometheus"
# Prometheus's Go module v0.42.0 is its release 2.42.0 (the version of Debian's package and of
# the monitoring role's pinned image).
PROMETHEUS_VERSION = "v2.42.0"

METRICS_SERVER, KSM = "metrics-server", "kube-state-metrics"
PROCESSES = (METRICS_SERVER, KSM)
# metrics-server listens on the node address: the API server dials it there.
METRICS_SERVER_PORT = 14443
KSM_HOST = "127.0.0.1"
KSM_PORT = node.HOST_SERVICE_PORTS["kube-state-metrics"]
KSM_TELEMETRY_PORT = 18182
METRICS_USER = "thinkus-local:metrics-server"
KSM_USER = "thinkus-local:kube-state-metrics"
API_SERVICE = "v1beta1.metrics.k8s.io"
# What kube-state-metrics exports: the platform's workloads and what the alerts and
# dashboards read. Secrets and ConfigMaps are left out (no read access is granted to them).
KSM_RESOURCES = (
    "cronjobs",
    "daemonsets",
    "deployments",
    "horizontalpodautoscalers",
    "jobs",
    "namespaces",
    "nodes",
    "persistentvolumeclaims",
    "persistentvolumes",
    "poddisruptionbudgets",
    "pods",
    "replicasets",
    "services",
    "statefulsets",
)


def metrics_dir(ctx: Context) -> Path:
    return ctx.state_dir / "cluster-metrics"


def ksm_target() -> str:
    return f"{KSM_HOST}:{KSM_PORT}"


# --------------------------------------------------------------------------- build


def _module() -> k8s._Module:
    version = "-".join(
        (
            k8s._module_version(MODULE, "sigs.k8s.io/metrics-server"),
            k8s._module_version(MODULE, "k8s.io/kube-state-metrics/v2"),
        )
    )
    return k8s._Module(
        MODULE,
        "cluster-metrics",
        version,
        {METRICS_SERVER: "sigs.k8s.io/metrics-server/cmd/metrics-server", KSM: "k8s.io/kube-state-metrics/v2"},
    )


def _reloader_module() -> k8s._Module:
    return k8s._Module(
        RELOADER_MODULE,
        "config-reloader",
        k8s._module_version(RELOADER_MODULE, "github.com/prometheus-operator/prometheus-operator"),
        {RELOADER: "github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader"},
    )


def _prometheus_module() -> k8s._Module:
    return k8s._Module(
        PROMETHEUS_MODULE,
        "prometheus",
        PROMETHEUS_VERSION,
        {PROMETHEUS: "github.com/prometheus/prometheus/cmd/prometheus"},
        ldflags=f"-s -w -X github.com/prometheus/common/version.Version={PROMETHEUS_VERSION.removeprefix('v')}",
    )


def build(ctx: Context) -> dict[str, Path]:
    """metrics-server, kube-state-metrics, the config reloader and Prometheus (after the node's
    builds when called from Prebuild)."""
    return k8s.build_modules(ctx, (_module(), _reloader_module(), _prometheus_module()))


def cluster_images_file(ctx: Context) -> Path:
    """Images the local environment put into the real node's containerd, for inventories/local."""
    return ctx.state_dir / "cluster-images.yml"


def _import_cluster_images(ctx: Context, bins: dict[str, Path]) -> dict[str, str]:
    """The monitoring role's config reloader, built here (no image can be pulled), as an image in
    the real node's containerd, and Prometheus on the base image in the registry; their references
    go into .local/cluster-images.yml."""
    images = {"config_reloader": node.import_binary_image(bins[RELOADER], RELOADER_IMAGE, RELOADER, "65534:65534")}
    # Prometheus on the base image, in the registry as the real node pulls it
    base_images.build_binary_image("prometheus", base_images.PROMETHEUS, bins[PROMETHEUS])
    for ref in registry.publish(ctx, [base_images.PROMETHEUS]):
        say(f"{NAME}: pushed {ref}")
    images["prometheus"] = f"{registry.HOST}:{registry.PORT}/{base_images.PROMETHEUS}"
    path = cluster_images_file(ctx)
    text = "# Written by make local-up (tools/localenv/metrics.py): images in the real node's containerd.\n"
    text += "".join(f"{key}: {ref}\n" for key, ref in sorted(images.items()))
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return images


# --------------------------------------------------------------------------- API objects


def _objects(pki: Path) -> list[tuple[str, dict[str, Any]]]:
    cluster_role = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole"}
    read = ["get", "list", "watch"]
    return [
        # metrics-server: read pods and nodes, scrape the kubelet, and delegate authentication
        # and authorization of the aggregated requests to the API server.
        k8s.rbac(
            "ClusterRole",
            METRICS_USER,
            rules=[
                {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": read},
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
            ],
        ),
        k8s.rbac(
            "ClusterRoleBinding",
            METRICS_USER,
            roleRef={**cluster_role, "name": METRICS_USER},
            subjects=k8s.user_subjects(METRICS_USER),
        ),
        k8s.rbac(
            "ClusterRoleBinding",
            f"{METRICS_USER}:auth-delegator",
            roleRef={**cluster_role, "name": "system:auth-delegator"},
            subjects=k8s.user_subjects(METRICS_USER),
        ),
        k8s.rbac(
            "RoleBinding",
            f"{METRICS_USER}:auth-reader",
            namespace="kube-system",
            roleRef={
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "extension-apiserver-authentication-reader",
            },
            subjects=k8s.user_subjects(METRICS_USER),
        ),
        # The resource metrics read by `kubectl top` and the HPA controller, for everyone who
        # may read pods (the same aggregation as upstream's system:aggregated-metrics-reader).
        k8s.rbac(
            "ClusterRole",
            "thinkus-local:aggregated-metrics-reader",
            labels={
                "rbac.authorization.k8s.io/aggregate-to-view": "true",
                "rbac.authorization.k8s.io/aggregate-to-edit": "true",
                "rbac.authorization.k8s.io/aggregate-to-admin": "true",
            },
            rules=[{"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"], "verbs": read}],
        ),
        (
            "/api/v1/namespaces/kube-system/services/metrics-server",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "metrics-server", "namespace": "kube-system"},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": METRICS_SERVER_PORT}]},
            },
        ),
        # No selector: the endpoint is the process on the node address (mirrored into an
        # EndpointSlice by the controller manager).
        (
            "/api/v1/namespaces/kube-system/endpoints/metrics-server",
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "metrics-server", "namespace": "kube-system"},
                "subsets": [
                    {
                        "addresses": [{"ip": node.NODE_IP}],
                        "ports": [{"name": "https", "port": METRICS_SERVER_PORT, "protocol": "TCP"}],
                    }
                ],
            },
        ),
        (
            f"/apis/apiregistration.k8s.io/v1/apiservices/{API_SERVICE}",
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": API_SERVICE},
                "spec": {
                    "group": "metrics.k8s.io",
                    "version": "v1beta1",
                    "service": {"namespace": "kube-system", "name": "metrics-server", "port": 443},
                    "caBundle": base64.b64encode((pki / "ca.crt").read_bytes()).decode(),
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
        ),
        # kube-state-metrics: list and watch what it exports, nothing else.
        k8s.rbac(
            "ClusterRole",
            KSM_USER,
            rules=[
                {
                    "apiGroups": [""],
                    "resources": [
                        "namespaces",
                        "nodes",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                        "pods",
                        "services",
                    ],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["apps"],
                    "resources": ["daemonsets", "deployments", "replicasets", "statefulsets"],
                    "verbs": ["list", "watch"],
                },
                {"apiGroups": ["batch"], "resources": ["cronjobs", "jobs"], "verbs": ["list", "watch"]},
                {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["list", "watch"]},
                {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["list", "watch"]},
            ],
        ),
        k8s.rbac(
            "ClusterRoleBinding",
            KSM_USER,
            roleRef={**cluster_role, "name": KSM_USER},
            subjects=k8s.user_subjects(KSM_USER),
        ),
    ]


# --------------------------------------------------------------------------- credentials


def _ensure_credentials(ctx: Context) -> dict[str, Path]:
    pki = k8s.ensure_pki(ctx)
    ca_cert, ca_key = k8s._ensure_ca(pki, "ca", "thinkus-local-kubernetes-ca")
    base = metrics_dir(ctx)
    base.mkdir(parents=True, exist_ok=True)
    for spec in (
        k8s._Cert("metrics-server-client", METRICS_USER, client=True),
        k8s._Cert("kube-state-metrics", KSM_USER, client=True),
        k8s._Cert(
            "metrics-server-serving",
            "metrics-server.kube-system.svc",
            dns=("metrics-server.kube-system.svc", "metrics-server.kube-system.svc.cluster.local"),
            ips=(node.NODE_IP,),
            server=True,
        ),
    ):
        k8s._issue(pki, spec, ca_cert, ca_key)
    return {
        "metrics-server": k8s._write_kubeconfig(base / "metrics-server.kubeconfig", pki, "metrics-server-client"),
        "kube-state-metrics": k8s._write_kubeconfig(base / "kube-state-metrics.kubeconfig", pki, "kube-state-metrics"),
    }


def _metrics_server_argv(ctx: Context, binary: Path, kubeconfig: Path) -> list[str]:
    pki = k8s.pki_dir(ctx)
    key, value = node.NODE_LABEL
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={node.NODE_IP}",
        f"--secure-port={METRICS_SERVER_PORT}",
        f"--tls-cert-file={pki / 'metrics-server-serving.crt'}",
        f"--tls-private-key-file={pki / 'metrics-server-serving.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        "--kubelet-use-node-status-port",
        f"--node-selector={key}={value}",
        "--metric-resolution=15s",
        "--profiling=false",
        "--v=1",
    ]


def _ksm_argv(binary: Path, kubeconfig: Path) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--host={KSM_HOST}",
        f"--port={KSM_PORT}",
        f"--telemetry-host={KSM_HOST}",
        f"--telemetry-port={KSM_TELEMETRY_PORT}",
        f"--resources={','.join(KSM_RESOURCES)}",
    ]


def _metrics_api_ready(ctx: Context) -> bool:
    status, body = k8s.api(ctx, "GET", f"/apis/metrics.k8s.io/v1beta1/nodes/{node.NODE_NAME}")
    return status == 200 and bool(body.get("usage", {}).get("cpu"))


def up(ctx: Context) -> dict[str, str]:
    if k8s.external_kubeconfig(ctx):
        say(f"{NAME}: KUBECONFIG names another cluster; its own metrics-server and kube-state-metrics apply")
        return {}
    ctx.ensure()
    bins = build(ctx)
    creds = _ensure_credentials(ctx)
    pki = k8s.pki_dir(ctx)
    for path, body in _objects(pki):
        k8s.apply(ctx, path, body, NAME)

    images = _import_cluster_images(ctx, bins)
    start_process(ctx, KSM, _ksm_argv(bins[KSM], creds[KSM]), ports=[KSM_PORT, KSM_TELEMETRY_PORT])
    start_process(ctx, METRICS_SERVER, _metrics_server_argv(ctx, bins[METRICS_SERVER], creds[METRICS_SERVER]))
    wait_for(ctx, KSM, lambda: http_status(f"http://{ksm_target()}/healthz") == 200, timeout=60)
    # The first resource metrics need two kubelet scrapes (one resolution apart).
    wait_for(ctx, METRICS_SERVER, lambda: _metrics_api_ready(ctx), timeout=120, interval=1)
    say(
        f"metrics.k8s.io served by metrics-server at {node.NODE_IP}:{METRICS_SERVER_PORT}; "
        f"kube-state-metrics at {ksm_target()}"
    )
    return {
        "metrics_api": f"{k8s.SERVER}/apis/metrics.k8s.io/v1beta1",
        "kube_state_metrics_target": ksm_target(),
        # the same, as pods on the real node reach it (the node address, forwarded to the loopback)
        "kube_state_metrics_cluster_target": f"{node.NODE_IP}:{KSM_PORT}",
        "kube_state_metrics_url": f"http://{ksm_target()}/metrics",
        **{f"image_{key}": ref for key, ref in images.items()},
    }


def status(ctx: Context) -> tuple[bool, str]:
    early = k8s.beside_cluster_status(ctx, PROCESSES)
    if early:
        return early
    try:
        ready = _metrics_api_ready(ctx)
    except (OSError, ssl.SSLError) as err:
        return False, f"API server not reachable ({err})"
    if not ready:
        return False, f"metrics.k8s.io has no usage of {node.NODE_NAME} yet"
    return (
        True,
        f"metrics.k8s.io (metrics-server {node.NODE_IP}:{METRICS_SERVER_PORT}), kube-state-metrics {ksm_target()}",
    )


def down(ctx: Context) -> None:
    stop_processes(ctx, PROCESSES)


def main(argv: Sequence[str]) -> int:
    return component_main(NAME, up, down, status, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
