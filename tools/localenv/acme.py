"""The ACME path of the ingress_tls role, running here: pebble and cert-manager.

Production issues the API host's certificate from Let's Encrypt through cert-manager's ACME
ClusterIssuer, HTTP-01 answered through the Ingress controller. Here every piece of that
path is real and built from Go modules:

- **pebble** (``tools/pebble``), Let's Encrypt's ACME test server, stands in for Let's
  Encrypt: directory ``https://127.0.0.1:14000/dir``, served with a certificate of a CA of
  this environment (``acme-ca``; the ClusterIssuer's ``caBundle``). Its validation
  authority fetches ``http://<host>/.well-known/acme-challenge/<token>`` on port 80, the
  Ingress controller (tools/localenv/ingress.py). Pebble makes a new root CA on every
  start: ``up`` writes it to ``.local/acme/root.pem``, the CA a client trusts.
- **pebble-challtestsrv** is the DNS both pebble and cert-manager's self-check ask: it
  answers every A query with 127.0.0.1, where the Ingress controller listens (the
  platform's hosts, such as api.thinkus.test, exist nowhere else).
- **cert-manager** (``tools/certmanager``): its controllers in one process, as a user of
  its own, with the CRDs of the same release; the HTTP-01 solver pods run the
  ``acmesolver`` image of the same module on the real node.

After pebble restarts (``make local-down`` / ``local-up``, a reboot) the accounts and
certificates it issued belong to a server that no longer exists: ``up`` then drops the ACME
account keys of the issuers that point at it and asks cert-manager to renew their
certificates, so the next run serves a chain to the new root.

Standalone: ``python -m tools.localenv.acme up|down|status``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import ssl
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tools.localenv import k8s, node
from tools.localenv._proc import (
    Context,
    LocalEnvError,
    component_main,
    http_status,
    say,
    start_process,
    stop,
    stop_processes,
    wait_for,
)

NAME = "acme"

TOOLS = Path(__file__).resolve().parents[1]
PEBBLE_MODULE = TOOLS / "pebble"
CERT_MANAGER_MODULE = TOOLS / "certmanager"

HOST = "127.0.0.1"
PEBBLE, DNS, CERT_MANAGER = "pebble", "acme-dns", "cert-manager"
PROCESSES = (DNS, PEBBLE, CERT_MANAGER)
PEBBLE_PORT, PEBBLE_MANAGEMENT_PORT = 14000, 15000
DNS_PORT, DNS_MANAGEMENT_PORT = 18053, 18055
CERT_MANAGER_METRICS_PORT = 9402
DIRECTORY = f"https://{HOST}:{PEBBLE_PORT}/dir"
NAMESPACE = "cert-manager"
USER = "thinkus-local:cert-manager"
SOLVER_IMAGE = "localhost/thinkus/cert-manager-acmesolver"
# cert-manager's own solver image runs as this non-root user (the pod demands runAsNonRoot).
SOLVER_USER = "1000:1000"
# Certificates pebble issues: Let's Encrypt's 90 days.
VALIDITY_SECONDS = 90 * 86400
# libyaml's safe loader when PyYAML was built with it (the same documents, several times faster)
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def acme_dir(ctx: Context) -> Path:
    return ctx.state_dir / "acme"


def root_file(ctx: Context) -> Path:
    """pebble's current root CA (public): what a client of the platform's hosts trusts."""
    return acme_dir(ctx) / "root.pem"


def server_ca_file(ctx: Context) -> Path:
    """The CA of pebble's own HTTPS listener (the ClusterIssuer's caBundle)."""
    return k8s.pki_dir(ctx) / "acme-ca.crt"


# --------------------------------------------------------------------------- build


def _modules() -> tuple[k8s._Module, k8s._Module]:
    pebble = k8s._Module(
        PEBBLE_MODULE,
        "pebble",
        k8s._module_version(PEBBLE_MODULE, "github.com/letsencrypt/pebble/v2"),
        {
            "pebble": "github.com/letsencrypt/pebble/v2/cmd/pebble",
            "pebble-challtestsrv": "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv",
        },
    )
    cert_manager = k8s._Module(
        CERT_MANAGER_MODULE,
        "cert-manager",
        k8s._module_version(CERT_MANAGER_MODULE, "github.com/cert-manager/cert-manager"),
        {"cert-manager-controller": "./controller", "acmesolver": "./acmesolver"},
    )
    return pebble, cert_manager


def build(ctx: Context) -> dict[str, Path]:
    return k8s.build_modules(ctx, _modules())


def _crd_dir(ctx: Context) -> Path:
    """deploy/crds of the cert-manager release in the module cache (downloaded by the build)."""
    version = _modules()[1].version
    path = ctx.cache_dir / "go" / "mod" / "github.com" / "cert-manager" / f"cert-manager@{version}" / "deploy" / "crds"
    if not path.is_dir():
        raise LocalEnvError(f"{NAME}: cert-manager's CRDs are not in the module cache ({path}); run make local-up")
    return path


# --------------------------------------------------------------------------- API objects


def _load_crd(ctx: Context, crd_file: Path) -> dict[str, Any]:
    """A CRD file of the module cache, parsed; kept as JSON under the cache, named by the file's sha256.

    Building the objects of six large CRDs with PyYAML was most of a no-op bring-up of this
    component; a JSON copy of the same bytes' parse reads in a fraction of that.
    """
    raw = crd_file.read_bytes()
    cached = ctx.cache_dir / "crd-json" / f"{hashlib.sha256(raw).hexdigest()}.json"
    try:
        return json.loads(cached.read_text())
    except (OSError, ValueError):
        pass
    crd = yaml.load(raw, Loader=SAFE_LOADER)  # noqa: S506 - SAFE_LOADER is a safe loader
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(crd))
    partial.replace(cached)
    return crd


def _objects(ctx: Context) -> list[tuple[str, dict[str, Any]]]:
    every = ["get", "list", "watch", "create", "update", "patch", "delete"]
    objects: list[tuple[str, dict[str, Any]]] = []
    for crd_file in sorted(_crd_dir(ctx).glob("*.yaml")):
        crd = _load_crd(ctx, crd_file)
        objects.append((f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}", crd))
    objects += [
        (
            f"/api/v1/namespaces/{NAMESPACE}",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        ),
        # The controllers' needs (upstream's controller ClusterRoles, folded into one): their
        # own resources, the Secrets they write, and the solver's pods, Services and Ingresses.
        k8s.rbac(
            "ClusterRole",
            USER,
            rules=[
                {
                    "apiGroups": ["cert-manager.io"],
                    "resources": [
                        "certificates",
                        "certificates/status",
                        "certificates/finalizers",
                        "certificaterequests",
                        "certificaterequests/status",
                        "certificaterequests/finalizers",
                        "issuers",
                        "issuers/status",
                        "clusterissuers",
                        "clusterissuers/status",
                    ],
                    "verbs": every,
                },
                {
                    "apiGroups": ["cert-manager.io"],
                    "resources": ["signers"],
                    "verbs": ["approve"],
                    "resourceNames": ["issuers.cert-manager.io/*", "clusterissuers.cert-manager.io/*"],
                },
                {
                    "apiGroups": ["acme.cert-manager.io"],
                    "resources": [
                        "orders",
                        "orders/status",
                        "orders/finalizers",
                        "challenges",
                        "challenges/status",
                        "challenges/finalizers",
                    ],
                    "verbs": every,
                },
                {"apiGroups": [""], "resources": ["secrets", "pods", "services"], "verbs": every},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
                {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": every},
                {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/finalizers"], "verbs": ["update"]},
            ],
        ),
        k8s.rbac(
            "ClusterRoleBinding",
            USER,
            roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": USER},
            subjects=k8s.user_subjects(USER),
        ),
    ]
    return objects


# --------------------------------------------------------------------------- processes


def _pebble_config(ctx: Context) -> dict[str, Any]:
    pki = k8s.pki_dir(ctx)
    return {
        "pebble": {
            "listenAddress": f"{HOST}:{PEBBLE_PORT}",
            "managementListenAddress": f"{HOST}:{PEBBLE_MANAGEMENT_PORT}",
            "certificate": str(pki / "acme-server.crt"),
            "privateKey": str(pki / "acme-server.key"),
            # The validation authority dials the Ingress controller's ports.
            "httpPort": 80,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "keyAlgorithm": "ecdsa",
            "profiles": {"default": {"description": "Let's Encrypt's 90 days", "validityPeriod": VALIDITY_SECONDS}},
        }
    }


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _server_tls(ctx: Context) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server_ca_file(ctx)))


def _fetch_root(ctx: Context) -> str:
    url = f"https://{HOST}:{PEBBLE_MANAGEMENT_PORT}/roots/0"
    with urllib.request.urlopen(url, context=_server_tls(ctx), timeout=5) as resp:
        return resp.read().decode()


def _directory_ready(ctx: Context) -> bool:
    with urllib.request.urlopen(DIRECTORY, context=_server_tls(ctx), timeout=3) as resp:
        return resp.status == 200 and "newOrder" in json.loads(resp.read())


def _forget_previous_server(ctx: Context) -> list[str]:
    """pebble started anew: drop the account keys of the ClusterIssuers that point at it and
    ask cert-manager to re-issue their Certificates (their chains end at the old root)."""
    status, issuers = k8s.api(ctx, "GET", "/apis/cert-manager.io/v1/clusterissuers")
    if status != 200:
        return []
    ours = {
        item["metadata"]["name"]: item["spec"]["acme"]["privateKeySecretRef"]["name"]
        for item in issuers.get("items", [])
        if item.get("spec", {}).get("acme", {}).get("server") == DIRECTORY
    }
    for secret in ours.values():
        k8s.api(ctx, "DELETE", f"/api/v1/namespaces/{NAMESPACE}/secrets/{secret}")
    renewed = []
    certificates = k8s.api(ctx, "GET", "/apis/cert-manager.io/v1/certificates")[1]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for cert in certificates.get("items", []):
        ref = cert["spec"].get("issuerRef", {})
        if ref.get("kind") != "ClusterIssuer" or ref.get("name") not in ours:
            continue
        meta = cert["metadata"]
        conditions = [c for c in cert.get("status", {}).get("conditions", []) if c.get("type") != "Issuing"]
        conditions.append(
            {
                "type": "Issuing",
                "status": "True",
                "reason": "ManuallyTriggered",
                "message": "the local ACME server restarted: a certificate from its new root is needed",
                "lastTransitionTime": now,
            }
        )
        path = f"/apis/cert-manager.io/v1/namespaces/{meta['namespace']}/certificates/{meta['name']}/status"
        k8s.api(ctx, "PUT", path, {**cert, "status": {**cert.get("status", {}), "conditions": conditions}})
        renewed.append(f"{meta['namespace']}/{meta['name']}")
    if ours:
        say(
            f"{NAME}: new ACME server: account keys of {', '.join(sorted(ours))} dropped; "
            f"re-issuing {renewed or 'none'}"
        )
    return renewed


def _ensure_credentials(ctx: Context) -> Path:
    pki = k8s.ensure_pki(ctx)
    ca_cert, ca_key = k8s._ensure_ca(pki, "ca", "thinkus-local-kubernetes-ca")
    acme_ca, acme_key = k8s._ensure_ca(pki, "acme-ca", "thinkus-local ACME server CA")
    k8s._issue(
        pki,
        k8s._Cert("acme-server", "localhost", issuer="acme-ca", dns=("localhost",), ips=(HOST,), server=True),
        acme_ca,
        acme_key,
    )
    k8s._issue(pki, k8s._Cert("cert-manager", USER, client=True), ca_cert, ca_key)
    return k8s._write_kubeconfig(acme_dir(ctx) / "cert-manager.kubeconfig", pki, "cert-manager")


def up(ctx: Context) -> dict[str, str]:
    if k8s.external_kubeconfig(ctx):
        say(f"{NAME}: KUBECONFIG names another cluster; its own cert-manager and ACME server apply")
        return {}
    ctx.ensure()
    bins = build(ctx)
    base = acme_dir(ctx)
    base.mkdir(parents=True, exist_ok=True)
    kubeconfig = _ensure_credentials(ctx)
    for path, body in _objects(ctx):
        k8s.apply(ctx, path, body, NAME)
    solver_image = node.import_binary_image(bins["acmesolver"], SOLVER_IMAGE, "acmesolver", SOLVER_USER)

    start_process(
        ctx,
        DNS,
        [
            str(bins["pebble-challtestsrv"]),
            f"-dnsserver={HOST}:{DNS_PORT}",
            f"-management={HOST}:{DNS_MANAGEMENT_PORT}",
            f"-defaultIPv4={HOST}",
            "-defaultIPv6=",
            "-http01=",
            "-https01=",
            "-doh=",
            "-tlsalpn01=",
        ],
    )
    wait_for(
        ctx, DNS, lambda: http_status(f"http://{HOST}:{DNS_MANAGEMENT_PORT}/dns-request-history") in (200, 400, 405)
    )

    config = base / "pebble.json"
    _write(config, json.dumps(_pebble_config(ctx), indent=2, sort_keys=True) + "\n")
    fresh = start_process(
        ctx,
        PEBBLE,
        [str(bins["pebble"]), f"-config={config}", f"-dnsserver={HOST}:{DNS_PORT}"],
        # No artificial sleeps before validation, no rejected nonces, no reused authorizations:
        # every order is validated through the Ingress, as Let's Encrypt does.
        env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"},
    )
    wait_for(ctx, PEBBLE, lambda: _directory_ready(ctx), timeout=30)
    _write(root_file(ctx), _fetch_root(ctx))

    argv = [
        str(bins["cert-manager-controller"]),
        f"--kubeconfig={kubeconfig}",
        f"--cluster-resource-namespace={NAMESPACE}",
        f"--acme-http01-solver-image={solver_image}",
        f"--acme-http01-solver-nameservers={HOST}:{DNS_PORT}",
        f"--metrics-listen-address={HOST}:{CERT_MANAGER_METRICS_PORT}",
    ]
    if fresh:
        stop(ctx, CERT_MANAGER)  # its cached ACME accounts belong to the previous server
        _forget_previous_server(ctx)
    start_process(ctx, CERT_MANAGER, argv)
    wait_for(ctx, CERT_MANAGER, lambda: http_status(f"http://{HOST}:{CERT_MANAGER_METRICS_PORT}/metrics") == 200)
    say(f"ACME directory {DIRECTORY} (pebble, root in {root_file(ctx)}); cert-manager running as {USER}")
    return {
        "acme_directory": DIRECTORY,
        "acme_root_ca": str(root_file(ctx)),
        "acme_server_ca": str(server_ca_file(ctx)),
        "acme_dns": f"{HOST}:{DNS_PORT}",
        "cert_manager_metrics_url": f"http://{HOST}:{CERT_MANAGER_METRICS_PORT}/metrics",
    }


def status(ctx: Context) -> tuple[bool, str]:
    early = k8s.beside_cluster_status(ctx, PROCESSES)
    if early:
        return early
    try:
        ready = _directory_ready(ctx)
    except (OSError, ssl.SSLError, ValueError) as err:
        return False, f"pebble does not answer at {DIRECTORY} ({err})"
    if not ready:
        return False, f"pebble's directory at {DIRECTORY} is incomplete"
    return True, f"pebble {DIRECTORY} (root {root_file(ctx)}), cert-manager, DNS {HOST}:{DNS_PORT}"


def down(ctx: Context) -> None:
    stop_processes(ctx, PROCESSES)


def main(argv: Sequence[str]) -> int:
    return component_main(NAME, up, down, status, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
