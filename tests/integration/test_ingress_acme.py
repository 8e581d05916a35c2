# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The production path of the ingress_tls role, running here (inventories/local takes it).

cert-manager issues the API host's certificate from the ACME ClusterIssuer, with pebble
standing in for Let's Encrypt; pebble validates HTTP-01 by fetching the challenge from the
Ingress controller (Traefik) on port 80, which routes it to cert-manager's solver pod on the
real node. Traefik then serves the certificate for the API host on 127.0.0.1:443, and the
platform's /health answers through it. Every check here is made on what those components
produced: the Certificate and Secret in the cluster, the chain the controller serves, curl's
verdict with and without pebble's root, a renewal that the controller serves.
"""

from __future__ import annotations

import base64
import datetime
import json
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509 import verification
from kubernetes import client

from tests.support.ansible import REPO_ROOT, run_playbook
from tests.support.kube import local_api, wait_until
from tools.localenv import acme
from tools.localenv._proc import Context, stop

pytestmark = [pytest.mark.localenv, pytest.mark.slow]

INVENTORY = str(REPO_ROOT / "inventories" / "local")
LOCAL = REPO_ROOT / ".local"
NAMESPACE, SECRET, ISSUER = "thinkus", "thinkus-tls", "thinkus-local-acme"
HOST, APP_HOST = "api.thinkus.test", "app.thinkus.test"
ADDRESS = "127.0.0.1"


@pytest.fixture(scope="module")
def api() -> client.ApiClient:
    return local_api()


@pytest.fixture(scope="module")
def endpoints() -> dict[str, Any]:
    return yaml.safe_load((LOCAL / "endpoints.yml").read_text())


@pytest.fixture(scope="module")
def platform(api: client.ApiClient) -> str:
    """The platform and its Ingress deployed as `make demo` does (a no-op when they already are)."""
    result = run_playbook("playbooks/deploy.yml", inventory=INVENTORY, tags=["build", "backend", "ingress"])
    assert result.rc == 0, result.output[-5000:]
    return NAMESPACE


def root_ca(endpoints: dict[str, Any]) -> Path:
    path = Path(endpoints["acme_root_ca"])
    assert path.read_text().startswith("-----BEGIN CERTIFICATE-----"), path
    return path


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    """curl as a user runs it, the hosts resolved to the Ingress controller (like --resolve in the README)."""
    resolve = [
        arg for host in (HOST, APP_HOST) for port in (80, 443) for arg in ("--resolve", f"{host}:{port}:{ADDRESS}")
    ]
    return subprocess.run(
        ["curl", "-sS", "--max-time", "15", *resolve, *args], capture_output=True, text=True, check=False
    )


def served_leaf(host: str) -> x509.Certificate:
    """The certificate the controller serves for ``host`` (SNI), read without judging it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((ADDRESS, 443), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def secret_chain(api: client.ApiClient) -> list[x509.Certificate]:
    data = client.CoreV1Api(api).read_namespaced_secret(SECRET, NAMESPACE).data
    return x509.load_pem_x509_certificates(base64.b64decode(data["tls.crt"]))


def certificate(api: client.ApiClient) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(
        "cert-manager.io", "v1", NAMESPACE, "certificates", SECRET
    )


def condition(obj: dict[str, Any], kind: str) -> str | None:
    return next((c["status"] for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def ready_certificate(api: client.ApiClient) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        cert = certificate(api)
        return cert if condition(cert, "Ready") == "True" and condition(cert, "Issuing") != "True" else None

    return wait_until(f"Certificate {NAMESPACE}/{SECRET} Ready", ready, 180, 2)


def verify_against(root: Path, chain: list[x509.Certificate], host: str) -> None:
    """The chain checked as a TLS client checks it: to the root, for the host name, now."""
    store = verification.Store(x509.load_pem_x509_certificates(root.read_bytes()))
    verifier = verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName(host))
    verifier.verify(chain[0], chain[1:])


def test_the_api_host_answers_over_https_with_a_certificate_from_the_acme_issuer(
    api: client.ApiClient, platform: str, endpoints: dict[str, Any]
) -> None:
    root = root_ca(endpoints)
    cert = ready_certificate(api)
    assert cert["spec"]["issuerRef"] == {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": ISSUER}
    assert sorted(cert["spec"]["dnsNames"]) == [HOST, APP_HOST]
    issuer = client.CustomObjectsApi(api).get_cluster_custom_object("cert-manager.io", "v1", "clusterissuers", ISSUER)
    assert condition(issuer, "Ready") == "True", issuer.get("status")
    assert issuer["spec"]["acme"]["server"] == endpoints["acme_directory"]
    assert issuer["status"]["acme"]["uri"].startswith(endpoints["acme_directory"].rsplit("/", 1)[0])

    # The Secret holds pebble's leaf and intermediate; the chain ends at pebble's current root.
    chain = secret_chain(api)
    leaf = chain[0]
    assert sorted(
        leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    ) == [HOST, APP_HOST]
    assert "Pebble Intermediate CA" in leaf.issuer.rfc4514_string()
    for host in (HOST, APP_HOST):
        verify_against(root, chain, host)

    # Traefik serves exactly that certificate for each host.
    for host in (HOST, APP_HOST):
        assert served_leaf(host).serial_number == leaf.serial_number, host

    # The README's check: trusted with pebble's root, refused without it.
    trusted = curl("--cacert", str(root), "-w", "\n%{http_code}", f"https://{HOST}/health")
    assert trusted.returncode == 0, trusted.stderr
    body, status = trusted.stdout.rsplit("\n", 1)
    assert (status, json.loads(body)) == ("200", {"status": "ok"})  # go-orchestrator's /health, through the Ingress
    untrusted = curl("-o", "/dev/null", f"https://{HOST}/health")
    assert untrusted.returncode == 60, (untrusted.returncode, untrusted.stderr)  # peer certificate not trusted
    assert "certificate" in untrusted.stderr

    # HTTP redirects to HTTPS, and HTTPS answers with HSTS.
    redirect = curl("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", f"http://{HOST}/health")
    assert redirect.stdout in (f"301 https://{HOST}/health", f"308 https://{HOST}/health"), redirect.stdout
    headers = curl("--cacert", str(root), "-D", "-", "-o", "/dev/null", f"https://{HOST}/health").stdout.lower()
    assert "strict-transport-security: max-age=31536000; includesubdomains" in headers


def test_a_forced_renewal_is_issued_through_http01_and_served(
    api: client.ApiClient, platform: str, endpoints: dict[str, Any]
) -> None:
    """What `cmctl renew` does: the Issuing condition set by hand. cert-manager orders anew from
    pebble (no authorization is reused), the solver answers HTTP-01 again, and Traefik serves
    the new certificate; the role's verification passes on it, changing nothing."""
    custom = client.CustomObjectsApi(api)
    root = root_ca(endpoints)
    before = ready_certificate(api)
    old_serial = secret_chain(api)[0].serial_number
    revision = before["status"].get("revision", 0)
    before["status"]["conditions"] = [c for c in before["status"]["conditions"] if c["type"] != "Issuing"] + [
        {
            "type": "Issuing",
            "status": "True",
            "reason": "ManuallyTriggered",
            "message": "renewal forced by test_ingress_acme",
            "lastTransitionTime": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    ]
    started = time.monotonic()
    custom.replace_namespaced_custom_object_status("cert-manager.io", "v1", NAMESPACE, "certificates", SECRET, before)

    def renewed() -> dict[str, Any] | None:
        cert = certificate(api)
        done = cert["status"].get("revision", 0) > revision and condition(cert, "Ready") == "True"
        return cert if done and condition(cert, "Issuing") != "True" else None

    after = wait_until("the renewed Certificate", renewed, 180, 1)
    issued_in = time.monotonic() - started
    chain = secret_chain(api)
    assert chain[0].serial_number != old_serial
    verify_against(root, chain, HOST)
    wait_until(
        "Traefik serving the renewed certificate",
        lambda: served_leaf(HOST).serial_number == chain[0].serial_number,
        30,
        0.5,
    )
    served_in = time.monotonic() - started
    # A new order went through pebble: its URL is on the CertificateRequest of the new revision.
    requests = client.CustomObjectsApi(api).list_namespaced_custom_object(
        "cert-manager.io", "v1", NAMESPACE, "certificaterequests"
    )["items"]
    newest = max(requests, key=lambda r: int(r["metadata"]["annotations"]["cert-manager.io/certificate-revision"]))
    assert int(newest["metadata"]["annotations"]["cert-manager.io/certificate-revision"]) == after["status"]["revision"]
    assert condition(newest, "Ready") == "True"

    verified = run_playbook("playbooks/ingress.yml", inventory=INVENTORY, tags=["ingress_tls_verify"], json_output=True)
    assert verified.rc == 0, verified.output[-4000:]
    assert sum(host["changed"] for host in verified.stats.values()) == 0
    trusted = curl("--cacert", str(root), "-o", "/dev/null", "-w", "%{http_code}", f"https://{HOST}/health")
    assert trusted.stdout == "200", trusted.stderr

    artifacts = LOCAL / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "acme-renewal.json").write_text(
        json.dumps({"issued_s": round(issued_in, 1), "served_s": round(served_in, 1)}, indent=2) + "\n"
    )


def test_after_the_acme_server_restarts_the_certificate_is_reissued_from_its_new_root(
    api: client.ApiClient, platform: str, endpoints: dict[str, Any]
) -> None:
    """pebble keeps nothing across a restart (make local-down / local-up, a reboot): a new root,
    no accounts. `make local-up` drops the issuers' old account keys and asks cert-manager to
    re-issue, so the served chain ends at the new root and the role's verification passes."""
    ctx = Context()
    root = root_ca(endpoints)
    old_root = root.read_text()
    revision = ready_certificate(api)["status"].get("revision", 0)
    stop(ctx, acme.PEBBLE)
    acme.up(ctx)
    assert root.read_text() != old_root  # a new root, written where clients read it

    def reissued() -> dict[str, Any] | None:
        cert = certificate(api)
        done = cert["status"].get("revision", 0) > revision and condition(cert, "Ready") == "True"
        return cert if done and condition(cert, "Issuing") != "True" else None

    wait_until("the Certificate re-issued by the restarted ACME server", reissued, 180, 1)
    chain = secret_chain(api)
    verify_against(root, chain, HOST)
    with pytest.raises(verification.VerificationError):
        store = verification.Store(x509.load_pem_x509_certificates(old_root.encode()))
        verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName(HOST)).verify(chain[0], chain[1:])
    issuer = client.CustomObjectsApi(api).get_cluster_custom_object("cert-manager.io", "v1", "clusterissuers", ISSUER)
    assert condition(issuer, "Ready") == "True", issuer.get("status")
    verified = run_playbook("playbooks/ingress.yml", inventory=INVENTORY, tags=["ingress_tls_verify"])
    assert verified.rc == 0, verified.output[-4000:]
