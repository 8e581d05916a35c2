"""The Ingress controller beside the real node: Traefik, built from its Go module.

The seed names ingress-nginx, whose controller needs OpenResty's Lua modules: Debian does
not package them and no image can be pulled here, and the other nginx- and HAProxy-based
controllers are not on the Go module proxy. Traefik (``tools/ingress``) builds from its
module and serves standard Ingress objects: host rules, paths, Service backends and the
TLS Secret named in ``spec.tls`` (docs/development.md, "The Ingress controller").

It runs as a process on this machine, like CoreDNS, as a user of its own (client
certificate, read-only RBAC plus the Ingress status), and serves the IngressClass
``traefik``:

- ``127.0.0.1:80`` (entry point ``web``) and ``127.0.0.1:443`` (``websecure``, TLS) for the
  platform's hosts, which the local ACME server's DNS (tools/localenv/acme.py) resolves to
  127.0.0.1. Backends are the pods' own addresses on the node's bridge.
- ``127.0.0.1:18080``: ``/ping`` and Prometheus ``/metrics``.

The middlewares ``https-redirect`` and ``hsts`` (file provider) stand in for the chart
configuration the prod ingress-nginx gets (HSTS, redirect to HTTPS); inventories/local
attaches them to the platform's Ingress with Traefik's annotation.

Standalone: ``python -m tools.localenv.ingress up|down|status``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tools.localenv import k8s
from tools.localenv._proc import (
    Context,
    component_main,
    http_status,
    say,
    start_process,
    stop_processes,
    wait_for,
)

NAME = "ingress"

TOOLS = Path(__file__).resolve().parents[1]
MODULE = TOOLS / "ingress"
PROCESS = "traefik"
HOST = "127.0.0.1"
HTTP_PORT, HTTPS_PORT, ADMIN_PORT = 80, 443, 18080
INGRESS_CLASS = "traefik"
CONTROLLER = "traefik.io/ingress-controller"
USER = "thinkus-local:ingress-controller"
# What the HSTS middleware sends: the ingress_tls role's default (a year, subdomains).
HSTS_SECONDS = 31536000


def ingress_dir(ctx: Context) -> Path:
    return ctx.state_dir / "ingress"


def build(ctx: Context) -> dict[str, Path]:
    mod = k8s._Module(
        MODULE,
        "traefik",
        k8s._module_version(MODULE, "github.com/traefik/traefik/v3"),
        {PROCESS: "github.com/traefik/traefik/v3/cmd/traefik"},
    )
    return k8s.build_modules(ctx, (mod,))


def _objects() -> list[tuple[str, dict[str, Any]]]:
    read = ["get", "list", "watch"]
    return [
        k8s.rbac(
            "ClusterRole",
            USER,
            rules=[
                {"apiGroups": [""], "resources": ["services", "secrets", "nodes"], "verbs": read},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
                {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"], "verbs": read},
                {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["update"]},
            ],
        ),
        k8s.rbac(
            "ClusterRoleBinding",
            USER,
            roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": USER},
            subjects=k8s.user_subjects(USER),
        ),
        (
            f"/apis/networking.k8s.io/v1/ingressclasses/{INGRESS_CLASS}",
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "IngressClass",
                "metadata": {"name": INGRESS_CLASS, "labels": {"app.kubernetes.io/managed-by": "thinkus-local"}},
                "spec": {"controller": CONTROLLER},
            },
        ),
    ]


def _static_config(ctx: Context) -> dict[str, Any]:
    return {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {
            "web": {"address": f"{HOST}:{HTTP_PORT}"},
            "websecure": {"address": f"{HOST}:{HTTPS_PORT}", "http": {"tls": {}}},
            "traefik": {"address": f"{HOST}:{ADMIN_PORT}"},
        },
        "ping": {"entryPoint": "traefik"},
        "metrics": {"prometheus": {"entryPoint": "traefik"}},
        "providers": {
            "kubernetesIngress": {"ingressClass": INGRESS_CLASS, "ingressEndpoint": {"ip": HOST}},
            "file": {"filename": str(ingress_dir(ctx) / "dynamic.yml")},
        },
        "log": {"level": "INFO"},
        "accessLog": {"filePath": str(ctx.log_dir / "traefik-access.log")},
    }


DYNAMIC_CONFIG = {
    "http": {
        "middlewares": {
            "https-redirect": {"redirectScheme": {"scheme": "https", "permanent": True}},
            "hsts": {"headers": {"stsSeconds": HSTS_SECONDS, "stsIncludeSubdomains": True}},
        }
    },
    "tls": {"options": {"default": {"minVersion": "VersionTLS12"}}},
}


def _write(path: Path, data: dict[str, Any]) -> None:
    text = "---\n" + yaml.safe_dump(data, sort_keys=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _ready() -> bool:
    return http_status(f"http://{HOST}:{ADMIN_PORT}/ping") == 200


def up(ctx: Context) -> dict[str, str]:
    if k8s.external_kubeconfig(ctx):
        say(f"{NAME}: KUBECONFIG names another cluster; its own ingress controller applies")
        return {}
    ctx.ensure()
    binary = build(ctx)[PROCESS]
    pki = k8s.ensure_pki(ctx)
    ca_cert, ca_key = k8s._ensure_ca(pki, "ca", "thinkus-local-kubernetes-ca")
    k8s._issue(pki, k8s._Cert("ingress-controller", USER, client=True), ca_cert, ca_key)
    base = ingress_dir(ctx)
    base.mkdir(parents=True, exist_ok=True)
    kubeconfig = k8s._write_kubeconfig(base / "traefik.kubeconfig", pki, "ingress-controller")
    for path, body in _objects():
        k8s.apply(ctx, path, body, NAME)
    _write(base / "dynamic.yml", DYNAMIC_CONFIG)
    static = base / "traefik.yml"
    _write(static, _static_config(ctx))
    argv = [str(binary), f"--configFile={static}"]
    # spawn names a port that a process of somebody else's holds, before starting anything
    start_process(ctx, PROCESS, argv, env={"KUBECONFIG": str(kubeconfig)}, ports=(HTTP_PORT, HTTPS_PORT, ADMIN_PORT))
    wait_for(ctx, PROCESS, _ready, timeout=60)
    say(
        f"Ingress controller (IngressClass {INGRESS_CLASS}) on https://{HOST}:{HTTPS_PORT} and http://{HOST}:{HTTP_PORT}"
    )
    return {
        "ingress_class": INGRESS_CLASS,
        "ingress_address": HOST,
        "ingress_https_url": f"https://{HOST}:{HTTPS_PORT}",
        "ingress_metrics_url": f"http://{HOST}:{ADMIN_PORT}/metrics",
    }


def status(ctx: Context) -> tuple[bool, str]:
    early = k8s.beside_cluster_status(ctx, (PROCESS,))
    if early:
        return early
    if not _ready():
        return False, f"{PROCESS} does not answer on {HOST}:{ADMIN_PORT}/ping"
    return True, f"Traefik, IngressClass {INGRESS_CLASS}: https://{HOST}:{HTTPS_PORT}, http://{HOST}:{HTTP_PORT}"


def down(ctx: Context) -> None:
    stop_processes(ctx, (PROCESS,))


def main(argv: Sequence[str]) -> int:
    return component_main(NAME, up, down, status, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
