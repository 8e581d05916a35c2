# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The standard-library kubeconfig reader against a real TLS server on loopback.

The server asks for a client certificate signed by its own CA and answers with what it saw
(client certificate subject, Authorization header), so each test checks what reached it.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import ssl
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.thinkus.ops.plugins.module_utils import _k8s, _kubeconfig


def _cert(
    name: str, issuer: tuple[x509.Certificate, Any] | None, sans: list[x509.GeneralName], ca: bool = False
) -> tuple[x509.Certificate, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        peer = self.connection.getpeercert() or {}
        subject = dict(item[0] for item in peer.get("subject", ()))
        body = json.dumps(
            {"path": self.path, "cn": subject.get("commonName"), "authorization": self.headers.get("Authorization")}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import ipaddress

    ca = _cert("test-ca", None, [], ca=True)
    server = _cert("apiserver", ca, [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("api.test")])
    named_only = _cert("named", ca, [x509.DNSName("kubernetes.test")])
    client = _cert("operator", ca, [])
    work = tmp_path_factory.mktemp("pki")
    servers = []
    ports = {}
    for label, (cert, key) in (("ip", server), ("named", named_only)):
        (work / f"{label}.crt").write_bytes(_pem(cert))
        (work / f"{label}.key").write_bytes(_key_pem(key))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(work / f"{label}.crt", work / f"{label}.key")
        context.load_verify_locations(cadata=_pem(ca[0]).decode())
        context.verify_mode = ssl.CERT_OPTIONAL
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        ports[label] = httpd.server_port
    yield {"ca": _pem(ca[0]), "client_cert": _pem(client[0]), "client_key": _key_pem(client[1]), "ports": ports}
    for httpd in servers:
        httpd.shutdown()


def _write(path: Path, clusters: dict[str, Any], users: dict[str, Any], current: str | None = "ctx") -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": c} for name, c in clusters.items()],
        "users": [{"name": name, "user": u} for name, u in users.items()],
        "contexts": [{"name": "ctx", "context": {"cluster": next(iter(clusters)), "user": next(iter(users))}}]
        if clusters and users
        else [],
    }
    if current:
        config["current-context"] = current
    path.write_text(json.dumps(config))
    return str(path)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_client_certificate_from_relative_files_and_ca_data(pki: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "me.crt").write_bytes(pki["client_cert"])
    (tmp_path / "certs" / "me.key").write_bytes(pki["client_key"])
    path = _write(
        tmp_path / "kubeconfig",
        {"c": {"server": f"https://127.0.0.1:{pki['ports']['ip']}", "certificate-authority-data": _b64(pki["ca"])}},
        {"u": {"client-certificate": "certs/me.crt", "client-key": "certs/me.key"}},
    )
    client = _k8s.K8sClient(path, None, request_timeout=5)
    assert client.context == "ctx"
    answer = client.request("GET", "/version")
    assert answer == {"path": "/version", "cn": "operator", "authorization": None}
    # the key went through a private file that is gone again
    assert not list(Path(tempfile.gettempdir()).glob("thinkus-k8s-*"))


def test_key_data_token_and_keepalive(pki: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(pki["ca"])
    path = _write(
        tmp_path / "kubeconfig",
        {"c": {"server": f"https://127.0.0.1:{pki['ports']['ip']}", "certificate-authority": "ca.crt"}},
        {
            "u": {
                "client-certificate-data": _b64(pki["client_cert"]),
                "client-key-data": _b64(pki["client_key"]),
                "token": "s3cret",
            }
        },
    )
    client = _k8s.K8sClient(path, None, request_timeout=5)
    first = client.request("GET", "/a")
    sock = client.transport._conn.sock  # type: ignore[union-attr]
    second = client.request("GET", "/b")
    assert client.transport._conn.sock is sock  # type: ignore[union-attr]  # one connection, kept alive
    assert first["authorization"] == second["authorization"] == "Bearer s3cret"
    assert second["cn"] == "operator"


def test_tls_server_name_and_an_untrusted_server(pki: dict[str, Any], tmp_path: Path) -> None:
    server = f"https://127.0.0.1:{pki['ports']['named']}"
    named = _write(
        tmp_path / "named",
        {"c": {"server": server, "certificate-authority-data": _b64(pki["ca"]), "tls-server-name": "kubernetes.test"}},
        {"u": {"token": "t"}},
    )
    assert _k8s.K8sClient(named, None, request_timeout=5).request("GET", "/x")["path"] == "/x"
    unnamed = _write(
        tmp_path / "unnamed",
        {"c": {"server": server, "certificate-authority-data": _b64(pki["ca"])}},
        {"u": {"token": "t"}},
    )
    with pytest.raises(_k8s.K8sUnreachable, match=r"TLS error"):
        _k8s.K8sClient(unnamed, None, request_timeout=5).request("GET", "/x")
    system_cas = _write(
        tmp_path / "system", {"c": {"server": f"https://127.0.0.1:{pki['ports']['ip']}"}}, {"u": {"token": "t"}}
    )
    with pytest.raises(_k8s.K8sUnreachable, match=r"TLS error"):
        _k8s.K8sClient(system_cas, None, request_timeout=5).request("GET", "/x")
    insecure = _write(
        tmp_path / "insecure",
        {"c": {"server": f"https://127.0.0.1:{pki['ports']['ip']}", "insecure-skip-tls-verify": True}},
        {"u": {"username": "admin", "password": "pw"}},
    )
    answer = _k8s.K8sClient(insecure, None, request_timeout=5).request("GET", "/y")
    assert answer["authorization"] == "Basic " + _b64(b"admin:pw")


def test_exec_plugin_token_env_and_cluster_info(pki: dict[str, Any], tmp_path: Path) -> None:
    plugin = tmp_path / "bin" / "get-token"
    plugin.parent.mkdir()
    plugin.write_text(
        f"#!{sys.executable}\n"
        "import json, os\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "token = os.environ['TOKEN_PREFIX'] + '-' + info['spec']['cluster']['server'].rsplit(':', 1)[1]\n"
        "print(json.dumps({'apiVersion': info['apiVersion'], 'kind': 'ExecCredential', 'status': {'token': token}}))\n"
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    port = pki["ports"]["ip"]
    path = _write(
        tmp_path / "kubeconfig",
        {"c": {"server": f"https://127.0.0.1:{port}", "certificate-authority-data": _b64(pki["ca"])}},
        {
            "u": {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": "./bin/get-token",
                    "env": [{"name": "TOKEN_PREFIX", "value": "from-plugin"}],
                    "provideClusterInfo": True,
                    "interactiveMode": "Never",
                }
            }
        },
    )
    answer = _k8s.K8sClient(path, None, request_timeout=5).request("GET", "/z")
    assert answer["authorization"] == f"Bearer from-plugin-{port}"


def test_exec_plugin_failure_names_the_plugin(pki: dict[str, Any], tmp_path: Path) -> None:
    path = _write(
        tmp_path / "kubeconfig",
        {"c": {"server": f"https://127.0.0.1:{pki['ports']['ip']}", "certificate-authority-data": _b64(pki["ca"])}},
        {"u": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "false"}}},
    )
    with pytest.raises(_k8s.K8sConfigError, match=r"exec plugin false failed \(exit 1\)"):
        _k8s.K8sClient(path, None, request_timeout=5).request("GET", "/z")


def test_merged_path_list_first_wins_and_context_errors(tmp_path: Path) -> None:
    first = _write(tmp_path / "one", {"c": {"server": "https://one.test"}}, {"u": {"token": "1"}})
    second = tmp_path / "two"
    second.write_text(
        json.dumps(
            {
                "clusters": [
                    {"name": "c", "cluster": {"server": "https://ignored.test"}},
                    {"name": "d", "cluster": {"server": "https://two.test:6443"}},
                ],
                "users": [{"name": "u", "user": {"token": "2"}}],
                "contexts": [{"name": "other", "context": {"cluster": "d", "user": "u"}}],
                "current-context": "other",
            }
        )
    )
    joined = f"{first}:{second}:{tmp_path / 'missing'}"
    assert _kubeconfig.load(joined, None).server == "https://one.test"  # current-context of the first file
    other = _kubeconfig.load(joined, "other")
    assert (other.server, other.credentials.authorization) == ("https://two.test:6443", "Bearer 1")
    with pytest.raises(
        _kubeconfig.KubeconfigError, match=r"context 'nope' is not in kubeconfig .* \(it has: \['ctx', 'other'\]\)"
    ):
        _kubeconfig.load(joined, "nope")
    none = _write(tmp_path / "none", {"c": {"server": "https://one.test"}}, {"u": {"token": "1"}}, current=None)
    with pytest.raises(_k8s.K8sConfigError, match="has no current-context; set the context option"):
        _k8s.K8sClient(none, None)
    with pytest.raises(_k8s.K8sConfigError, match=r"kubeconfig .*/absent does not exist"):
        _k8s.K8sClient(str(tmp_path / "absent"), None)
    bad = _write(tmp_path / "bad", {"c": {"server": "one.test:443"}}, {"u": {"token": "1"}})
    with pytest.raises(
        _k8s.K8sConfigError, match=r"cluster 'c' needs a server https://host\[:port\], got 'one.test:443'"
    ):
        _k8s.K8sClient(bad, None)


def test_auth_provider_is_left_to_the_kubernetes_package(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "kubeconfig",
        {"c": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}},
        {"u": {"auth-provider": {"name": "oidc", "config": {"id-token": "x"}}}},
    )
    with pytest.raises(_kubeconfig.Unsupported):
        _kubeconfig.load(path, None)
    client = _k8s.K8sClient(path, None, request_timeout=2)
    assert client.transport is None and client.api is not None
    with pytest.raises(_k8s.K8sError):
        client.request("GET", "/version")


def test_a_cluster_ca_replaces_the_system_roots(pki: dict[str, Any], tmp_path: Path) -> None:
    """As in client-go: with a certificate authority the server must chain to it, not to any system root."""
    path = _write(
        tmp_path / "kubeconfig",
        {"c": {"server": f"https://127.0.0.1:{pki['ports']['ip']}", "certificate-authority-data": _b64(pki["ca"])}},
        {"u": {"token": "t"}},
    )
    context = _k8s.K8sClient(path, None, request_timeout=5).transport.endpoint.ssl_context()  # type: ignore[union-attr]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    trusted = context.get_ca_certs(binary_form=True)
    assert trusted == [x509.load_pem_x509_certificate(pki["ca"]).public_bytes(serialization.Encoding.DER)]
    without = _write(
        tmp_path / "system", {"c": {"server": f"https://127.0.0.1:{pki['ports']['ip']}"}}, {"u": {"token": "t"}}
    )
    system = _k8s.K8sClient(without, None, request_timeout=5).transport.endpoint.ssl_context()  # type: ignore[union-attr]
    assert system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname
