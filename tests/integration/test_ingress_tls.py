# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Integration tests of the thinkus.ops.ingress_tls role against the local cluster.

Each test runs playbooks/ingress.yml with inventories/local in the local-CA mode, in a
namespace of its own, then checks what the cluster holds: the certificate is served to
real TLS clients (a Python HTTPS server with SNI, nginx as the reverse proxy), renewed
when near expiry or when the hosts change and kept otherwise, and bad input is refused
before anything changes. The ACME path (cert-manager, pebble, Traefik), which
inventories/local itself takes, is tests/integration/test_ingress_acme.py.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client, config

from ansible_collections.thinkus.ops.tests.support.ansible import REPO_ROOT, PlaybookResult, run_playbook

pytestmark = [pytest.mark.localenv, pytest.mark.slow]

PLAYBOOK = "playbooks/ingress.yml"
INVENTORY = str(REPO_ROOT / "inventories" / "local")
HOSTS = ["api.thinkus.test", "app.thinkus.test", "admin.thinkus.test"]
SECRET = "thinkus-tls"
ROLE = "thinkus.ops.ingress_tls : "  # how the json callback names the role's tasks


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kubeconfig() -> Path:
    env = os.environ.get("THINKUS_KUBECONFIG")
    path = Path(env) if env else REPO_ROOT / ".local" / "kubeconfig"
    assert path.is_file(), f"no kubeconfig at {path}: bring the local environment up first (make local-up)"
    return path


@pytest.fixture(scope="module")
def api(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(str(kubeconfig))


@pytest.fixture(scope="module")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    name = f"thinkus-test-ingress-py-{secrets.token_hex(3)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


# --- helpers --------------------------------------------------------------------------


# inventories/local takes the ACME path (tests/integration/test_ingress_acme.py); these tests
# run the local-CA mode, with the prod ingress class, which no local controller serves (the
# tests serve the certificate themselves).
LOCAL_CA = {
    "ingress_tls_certificate_source": "local_ca",
    "ingress_tls_manage_cluster_issuers": False,
    "ingress_tls_ingress_class": "nginx",
    "ingress_tls_extra_annotations": {},
    "ingress_tls_verify_https": False,
    "ingress_tls_verify_ca_pem": "",
}


def converge(namespace: str, json_output: bool = True, args: list[str] | None = None, **extra: Any) -> PlaybookResult:
    """playbooks/ingress.yml with inventories/local in local-CA mode, as an operator runs it, in its namespace."""
    extra_vars = {**LOCAL_CA, "ingress_tls_namespace": namespace, "ingress_tls_extra_hosts": HOSTS[1:], **extra}
    return run_playbook(PLAYBOOK, inventory=INVENTORY, extra_vars=extra_vars, json_output=json_output, args=args)


def failure_excerpt(result: PlaybookResult) -> str:
    failed = result.failed_tasks()
    if failed:
        return "\n".join(f"{t['task']}: {t['result'].get('msg')} {t['result'].get('results', '')}" for t in failed)
    return result.output[-6000:]


def changed_count(result: PlaybookResult) -> int:
    return sum(host["changed"] for host in result.stats.values())


def read_secret(core: client.CoreV1Api, namespace: str, name: str = SECRET) -> dict[str, bytes]:
    secret = core.read_namespaced_secret(name, namespace)
    assert secret.type == "kubernetes.io/tls"
    return {key: base64.b64decode(value) for key, value in secret.data.items()}


def read_ca(core: client.CoreV1Api, namespace: str) -> bytes:
    return core.read_namespaced_config_map("thinkus-ca-bundle", namespace).data["ca.crt"].encode()


def leaf(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def dns_names(cert: x509.Certificate) -> list[str]:
    return sorted(
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    )


def days_left(cert: x509.Certificate) -> float:
    return (cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)).total_seconds() / 86400


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class KeyFiles:
    """Certificate and key in a private temporary directory, removed on exit."""

    def __init__(self, cert: bytes, key: bytes) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ingress-tls-test-"))
        self.cert = self.dir / "tls.crt"
        self.key = self.dir / "tls.key"
        self.cert.write_bytes(cert)
        self.key.touch(mode=0o600)
        self.key.write_bytes(key)

    def __enter__(self) -> KeyFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class SNIServer:
    """HTTPS on 127.0.0.1 with a certificate and key; records the SNI names clients send."""

    def __init__(self, files: KeyFiles) -> None:
        self.server_names: list[str | None] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(files.cert, files.key)
        context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> SNIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Nginx:
    """nginx as the ingress controller would be: TLS with the Secret's certificate, HTTP -> HTTPS, HSTS."""

    def __init__(self, files: KeyFiles, hosts: list[str]) -> None:
        self.http_port, self.https_port = free_port(), free_port()
        prefix = files.dir
        for sub in ("logs", "scratch"):
            (prefix / sub).mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(
            f"""
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/scratch/body;
  proxy_temp_path {prefix}/scratch/proxy;
  fastcgi_temp_path {prefix}/scratch/fastcgi;
  uwsgi_temp_path {prefix}/scratch/uwsgi;
  scgi_temp_path {prefix}/scratch/scgi;
  server {{
    listen 127.0.0.1:{self.http_port};
    server_name {" ".join(hosts)};
    return 308 https://$host$request_uri;
  }}
  server {{
    listen 127.0.0.1:{self.https_port} ssl;
    server_name {" ".join(hosts)};
    ssl_certificate {files.cert};
    ssl_certificate_key {files.key};
    client_max_body_size 50m;
    add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;
    return 200 "ok\\n";
  }}
}}
"""
        )
        nginx = shutil.which("nginx")
        assert nginx, "nginx is not on PATH (Debian package nginx, tools/system-packages.txt)"
        check = subprocess.run(
            [nginx, "-t", "-p", str(prefix), "-e", str(prefix / "logs/error.log"), "-c", str(conf)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([nginx, "-p", str(prefix), "-e", str(prefix / "logs/error.log"), "-c", str(conf)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            pytest.fail("nginx did not start listening")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def tls_connect(port: int, server_name: str, cafile: Path) -> x509.Certificate:
    """A TLS client that trusts only the local CA and checks the host name, like a browser would."""
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


# --- tests ----------------------------------------------------------------------------


def test_local_ca_certificate_is_served_and_trusted_for_every_host(core: client.CoreV1Api, namespace: str) -> None:
    # The operator's view, at -vvv: the run must succeed and show no private key.
    result = converge(namespace, json_output=False, args=["-vvv"])
    assert result.rc == 0, result.output[-6000:]

    tls = read_secret(core, namespace)
    ca_secret = read_secret(core, namespace, "thinkus-ca")
    ca_pem = read_ca(core, namespace)
    for key in (tls["tls.key"], ca_secret["tls.key"]):
        body = b"".join(key.split(b"\n")[1:-2])
        assert body[:40].decode() not in result.output, "a private key reached the -vvv output"
        assert base64.b64encode(key).decode()[:40] not in result.output, "a private key reached the -vvv output"

    cert = leaf(tls["tls.crt"])
    assert dns_names(cert) == sorted(HOSTS)
    assert tls["ca.crt"] == ca_pem == ca_secret["tls.crt"]
    assert 85 < days_left(cert) <= 90

    with KeyFiles(tls["tls.crt"], tls["tls.key"]) as files, SNIServer(files) as server:
        cafile = files.dir / "ca.pem"
        cafile.write_bytes(ca_pem)
        for host in HOSTS:
            served = tls_connect(server.port, host, cafile)
            assert served.serial_number == cert.serial_number
        assert server.server_names == HOSTS
        # A name the certificate does not cover, and a client that does not trust the local CA, both fail.
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            tls_connect(server.port, "other.thinkus.test", cafile)
        public_roots = Path(tempfile.mkdtemp(prefix="ingress-tls-roots-"))
        try:
            other_ca = make_ca("Somebody else's CA")[0]
            (public_roots / "ca.pem").write_bytes(other_ca.public_bytes(serialization.Encoding.PEM))
            with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
                tls_connect(server.port, HOSTS[0], public_roots / "ca.pem")
        finally:
            shutil.rmtree(public_roots)

    # Through nginx as the reverse proxy: the role's own HTTPS checks (served certificate
    # per SNI name, HTTP -> HTTPS redirect) pass against the real Secret ...
    with KeyFiles(tls["tls.crt"], tls["tls.key"]) as files:
        nginx = Nginx(files, HOSTS)
        try:
            https_vars = {
                "ingress_tls_verify_https": True,
                "ingress_tls_verify_connect_address": "127.0.0.1",
                "ingress_tls_verify_https_port": nginx.https_port,
                "ingress_tls_verify_http_port": nginx.http_port,
            }
            verified = converge(namespace, args=["--tags", "ingress_tls_verify"], **https_vars)
            assert verified.rc == 0, failure_excerpt(verified)
            checked = verified.task(ROLE + "Check the certificate chain and what each host serves")
            assert checked["chain"][0] == cert.subject.rfc4514_string()
            served = checked["hosts"]
            assert [(r["host"], r["matches"]) for r in served] == [(h, True) for h in HOSTS]
            assert {r["serial_number"] for r in served} == {cert.serial_number}
            assert {r["hsts"] for r in served} == {"max-age=31536000; includeSubDomains"}
            assert [(r["redirect_status"], r["redirect_location"]) for r in served] == [
                (308, f"https://{h}/") for h in HOSTS
            ]
            assert changed_count(verified) == 0
        finally:
            nginx.stop()

    # ... and fail when the proxy serves some other certificate for those names.
    other_ca, other_ca_key = make_ca("Impostor CA")
    impostor_cert, impostor_key = make_leaf(other_ca, other_ca_key, HOSTS)
    with KeyFiles(impostor_cert, impostor_key) as files:
        nginx = Nginx(files, HOSTS)
        try:
            https_vars.update(
                ingress_tls_verify_https_port=nginx.https_port,
                ingress_tls_verify_http_port=nginx.http_port,
                ingress_tls_verify_wait_seconds=5,  # one retry of the fetch, not 30 s of them
            )
            refused = converge(namespace, args=["--tags", "ingress_tls_verify"], **https_vars)
        finally:
            nginx.stop()
    assert refused.rc != 0
    assert [t["task"] for t in refused.failed_tasks()] == [
        ROLE + "Check the certificate chain and what each host serves"
    ]
    message = refused.failed_tasks()[0]["result"]["msg"]
    assert "certificate verify failed" in message
    assert "issued by CN=Impostor CA" in message
    assert f"not the certificate in {namespace}/{SECRET}" in message


def test_certificate_is_renewed_near_expiry_or_on_new_hosts_and_kept_otherwise(
    core: client.CoreV1Api, namespace: str
) -> None:
    # A short-lived certificate: 10 days, healthy while the threshold is 5 days.
    first = converge(namespace, ingress_tls_cert_validity_days=10, ingress_tls_renew_before_days=5)
    assert first.rc == 0, failure_excerpt(first)
    short = leaf(read_secret(core, namespace)["tls.crt"])
    assert 9 < days_left(short) <= 10
    ca_version = core.read_namespaced_secret("thinkus-ca", namespace).metadata.resource_version

    # Default threshold (30 days): the 10-day certificate is near expiry and replaced.
    renewed = converge(namespace)
    assert renewed.rc == 0, failure_excerpt(renewed)
    assert renewed.task(ROLE + "Store the TLS Secret")["changed"] is True
    assert "within 30 days" in renewed.task(ROLE + "Show the server certificate decision")["msg"]
    fresh = leaf(read_secret(core, namespace)["tls.crt"])
    assert fresh.serial_number != short.serial_number
    assert 85 < days_left(fresh) <= 90
    assert dns_names(fresh) == sorted(HOSTS)

    # Healthy: kept, and the whole run changes nothing.
    kept = converge(namespace)
    assert kept.rc == 0, failure_excerpt(kept)
    assert kept.task(ROLE + "Store the TLS Secret").get("skipped") is True
    assert changed_count(kept) == 0
    assert leaf(read_secret(core, namespace)["tls.crt"]).serial_number == fresh.serial_number

    # A host added in the inventory: the names no longer match, so it is re-issued.
    more_hosts = [*HOSTS[1:], "status.thinkus.test"]
    grown = converge(namespace, ingress_tls_extra_hosts=more_hosts)
    assert grown.rc == 0, failure_excerpt(grown)
    assert "instead of" in grown.task(ROLE + "Show the server certificate decision")["msg"]
    regrown = leaf(read_secret(core, namespace)["tls.crt"])
    assert dns_names(regrown) == sorted([HOSTS[0], *more_hosts])
    assert regrown.serial_number != fresh.serial_number
    # The CA itself was healthy throughout: never rewritten, so clients keep trusting it.
    assert core.read_namespaced_secret("thinkus-ca", namespace).metadata.resource_version == ca_version
    ingress = client.NetworkingV1Api(core.api_client).read_namespaced_ingress("thinkus-ingress", namespace)
    assert ingress.spec.tls[0].hosts == [HOSTS[0], *more_hosts]


def _opaque_secret(core: client.CoreV1Api, namespace: str) -> str:
    body = client.V1Secret(metadata=client.V1ObjectMeta(name=SECRET), type="Opaque", string_data={"token": "x"})
    return core.create_namespaced_secret(namespace, body).metadata.resource_version


@pytest.mark.parametrize(
    ("extra", "setup", "variable", "detail"),
    [
        pytest.param(
            {"ingress_tls_extra_hosts": ["app.thinkus.test", "bad_host.thinkus.test"]},
            None,
            "ingress_tls_extra_hosts",
            "bad_host.thinkus.test",
            id="invalid-dns-name",
        ),
        pytest.param(
            {"ingress_tls_hosts": ["API.Thinkus.test"]},
            None,
            "ingress_tls_hosts",
            "API.Thinkus.test",
            id="upper-case-host",
        ),
        pytest.param(
            {"ingress_tls_manage_cluster_issuers": True, "ingress_tls_acme_email": ""},
            None,
            "ingress_tls_acme_email",
            "thinkus-local-acme",  # inventories/local's ACME issuer
            id="acme-issuer-without-email",
        ),
        pytest.param(
            {
                "ingress_tls_manage_cluster_issuers": True,
                "ingress_tls_issuer": "internal-acme",
                "ingress_tls_cluster_issuers": [
                    {"name": "internal-acme", "acme_server": "https://acme.internal/dir", "ca_bundle": "not a PEM"}
                ],
            },
            None,
            "ingress_tls_cluster_issuers[0]",
            "optional ca_bundle: PEM certificates",
            id="acme-ca-bundle-not-pem",
        ),
        pytest.param(
            {
                "ingress_tls_manage_cluster_issuers": True,
                "ingress_tls_issuer": "internal-acme",
                "ingress_tls_cluster_issuers": [
                    {
                        "name": "internal-acme",
                        "acme_server": "https://acme.internal/dir",
                        "solver_pod_template": {"nodeSelector": {"a": "b"}},
                    }
                ],
            },
            None,
            "ingress_tls_cluster_issuers[0]",
            "solver_pod_template",
            id="solver-pod-template-without-spec",
        ),
        pytest.param({}, _opaque_secret, "ingress_tls_secret_name", "not kubernetes.io/tls", id="secret-name-collides"),
    ],
)
def test_preflight_refuses_bad_input_before_changing_anything(
    core: client.CoreV1Api,
    namespace: str,
    extra: dict[str, Any],
    setup: Callable[[client.CoreV1Api, str], str] | None,
    variable: str,
    detail: str,
) -> None:
    before = setup(core, namespace) if setup else None
    result = converge(namespace, **extra)
    assert result.rc != 0
    failed = result.failed_tasks()
    assert len(failed) == 1
    assert failed[0]["task"].startswith(ROLE + "Check ")
    outcome = failed[0]["result"]
    # a loop's own msg is generic: the failing items say which
    message = " ".join([outcome["msg"], *(r["msg"] for r in outcome.get("results", []) if r.get("failed"))])
    assert variable in message and detail in message, message
    assert changed_count(result) == 0
    # Nothing was written: no Ingress, no ConfigMap, only the Secret the test made (untouched).
    assert client.NetworkingV1Api(core.api_client).list_namespaced_ingress(namespace).items == []
    assert [c.metadata.name for c in core.list_namespaced_config_map(namespace).items] == ["kube-root-ca.crt"]
    secrets_now = core.list_namespaced_secret(namespace).items
    assert [(s.metadata.name, s.metadata.resource_version) for s in secrets_now] == (
        [(SECRET, before)] if before else []
    )


PREFLIGHT_THREE_TIMES = """---
- name: The ingress_tls preflight three times in one run, as deploy.yml's preflight and ingress stages run it
  hosts: localhost
  gather_facts: false
  tasks:
    - name: First pass
      ansible.builtin.include_role: {name: thinkus.ops.ingress_tls, tasks_from: preflight}
    - name: Second pass, the same inputs
      ansible.builtin.include_role: {name: thinkus.ops.ingress_tls, tasks_from: preflight}
    - name: An input changes
      ansible.builtin.set_fact:
        ingress_tls_extra_hosts: [Not_A_Host.thinkus.test]
    - name: Third pass, another input
      ansible.builtin.include_role: {name: thinkus.ops.ingress_tls, tasks_from: preflight}
"""


def test_preflight_checks_the_variables_in_one_task_at_each_pass(namespace: str, tmp_path: Path) -> None:
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(PREFLIGHT_THREE_TIMES)
    # Not ingress_tls_extra_hosts: an extra var would win over the play's set_fact.
    extra_vars = {**LOCAL_CA, "ingress_tls_namespace": namespace}
    result = run_playbook(str(playbook), inventory=INVENTORY, extra_vars=extra_vars, json_output=True)
    assert result.rc != 0
    checks = [t["result"] for t in result.tasks if t["task"].startswith(ROLE + "Check the variables")]
    assert [(bool(r.get("skipped")), bool(r.get("failed"))) for r in checks] == [
        (True, False),
        (True, False),
        (False, True),
    ]
    assert "ingress_tls_hosts / ingress_tls_extra_hosts" in checks[-1]["msg"]
    assert "Not_A_Host.thinkus.test" in checks[-1]["msg"]
    # The cluster reads ran in both passes that got there; the third stopped at the checks, before any read.
    assert len([t for t in result.tasks if t["task"] == ROLE + "Look up the TLS Secret"]) == 2


def test_check_mode_previews_a_first_run_without_writing(core: client.CoreV1Api, namespace: str) -> None:
    result = converge(namespace, args=["--check", "--diff"])
    assert result.rc == 0, failure_excerpt(result)
    for task in (
        "Store the local CA Secret",
        "Publish the local CA certificate",
        "Store the TLS Secret",
        "Apply the Ingress",
    ):
        assert result.task(ROLE + task)["changed"] is True, task
    assert "would be written by a real run" in result.task(ROLE + "Note what check mode cannot verify")["msg"]
    assert core.list_namespaced_secret(namespace).items == []
    assert client.NetworkingV1Api(core.api_client).list_namespaced_ingress(namespace).items == []


def make_ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, hosts: list[str]) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
