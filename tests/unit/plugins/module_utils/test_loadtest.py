"""Statistics and threshold decisions of the load generator, without any network."""

from __future__ import annotations

import datetime
import http.server
import pathlib
import ssl
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.thinkus.ops.plugins.module_utils._loadtest import (
    Sample,
    Target,
    _Client,
    percentile,
    summarise,
    threshold_breaches,
)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 99) == 0.0
    with pytest.raises(ValueError):
        percentile(values, 0)


def test_summarise_counts_errors_and_latency() -> None:
    samples = [Sample("a", 0.010, True, 200)] * 98 + [Sample("a", 2.0, False, 500), Sample("a", 0.5, False, 0)]
    stats = summarise(samples, wall_seconds=2.0)
    assert stats["requests"] == 100
    assert stats["errors"] == 2
    assert stats["error_rate_pct"] == 2.0
    assert stats["p50_ms"] == 10.0
    assert stats["p99_ms"] == 500.0
    assert stats["max_ms"] == 2000.0
    assert stats["rps"] == 50.0


def test_threshold_breaches_name_the_value_and_the_limit() -> None:
    stats = {"p99_ms": 120.0, "error_rate_pct": 1.5}
    assert threshold_breaches(stats, 200, 2, "overall") == []
    assert threshold_breaches(stats, None, None, "overall") == []
    assert threshold_breaches(stats, 100, 1, "overall") == [
        "overall: p99 120.0 ms exceeds the threshold of 100 ms",
        "overall: error rate 1.5% exceeds the threshold of 1%",
    ]


class _HostEcho(http.server.BaseHTTPRequestHandler):
    hosts: ClassVar[list[str]] = []  # the Host header of each request, in order

    def do_GET(self) -> None:
        body = self.headers.get("Host", "").encode()
        _HostEcho.hosts.append(body.decode())
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _tls_files(tmp_path: pathlib.Path, host: str) -> tuple[str, str]:
    """A self-signed certificate for ``host`` (its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


@pytest.fixture
def echo_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _HostEcho)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_connect_address_keeps_the_urls_host_in_the_host_header(echo_server: http.server.HTTPServer) -> None:
    port = echo_server.server_address[1]
    # the name does not resolve: only the pinned address makes the request possible
    target = Target("api", f"http://api.thinkus.invalid:{port}/health")
    pinned = _Client(5, connect_address="127.0.0.1")
    assert pinned.request(target).status == 200
    assert _HostEcho.hosts[-1] == f"api.thinkus.invalid:{port}"
    pinned.close()
    assert _Client(5).request(target).status == 0  # without it, the name does not resolve


def test_connect_address_checks_the_certificate_against_the_urls_host_and_ca_path(
    echo_server: http.server.HTTPServer, tmp_path: pathlib.Path
) -> None:
    cert, key = _tls_files(tmp_path, "api.thinkus.invalid")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    echo_server.socket = context.wrap_socket(echo_server.socket, server_side=True)
    port = echo_server.server_address[1]
    good = Target("api", f"https://api.thinkus.invalid:{port}/health")
    assert _Client(5, connect_address="127.0.0.1", ca_path=cert).request(good).status == 200
    # the system roots do not know this CA, and another name does not match the certificate
    assert _Client(5, connect_address="127.0.0.1").request(good).status == 0
    other = Target("api", f"https://other.thinkus.invalid:{port}/health")
    assert _Client(5, connect_address="127.0.0.1", ca_path=cert).request(other).status == 0
