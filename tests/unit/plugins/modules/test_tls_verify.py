# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""thinkus.ops.tls_verify against real TLS and HTTP servers on loopback, with certificates made here."""

from __future__ import annotations

import datetime
import http.server
import ssl
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

from ansible_collections.thinkus.ops.plugins.module_utils import _tls_check as tls
from ansible_collections.thinkus.ops.plugins.modules import tls_verify
from ansible_collections.thinkus.ops.plugins.plugin_utils._controller_module import ControllerModule, _Exit

HOSTS = ["api.thinkus.test", "app.thinkus.test"]
HSTS = 31536000
NOW = datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_cert(
    subject: str, issuer: tuple[x509.Certificate, Any] | None = None, hosts: list[str] | None = None
) -> tuple[x509.Certificate, Any]:
    """A CA (no issuer: self-signed; no hosts), an intermediate (issuer, no hosts) or a leaf (hosts)."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_cert.subject if issuer_cert else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=90))
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def pem(*certificates: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


@pytest.fixture(scope="module")
def pki() -> dict[str, Any]:
    ca = make_cert("Thinkus test CA")
    intermediate = make_cert("Thinkus test intermediate", ca)
    leaf = make_cert("api.thinkus.test", intermediate, HOSTS)
    other_ca = make_cert("Somebody else's CA")
    # Same subject as the real CA, another key: a name match alone must not pass.
    lookalike_ca = make_cert("Thinkus test CA")
    return {"ca": ca, "intermediate": intermediate, "leaf": leaf, "other_ca": other_ca, "lookalike_ca": lookalike_ca}


class Server:
    """An HTTPS server (the certificate can be swapped while it runs) and a plain HTTP one."""

    def __init__(self, chain: list[x509.Certificate], key: Any, hsts: str | None, redirect: str | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tls-verify-test-"))
        self.server_names: list[str] = []
        self.load(chain, key)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                secure = isinstance(self.connection, ssl.SSLSocket)
                if secure:
                    self.send_response(200)
                    if hsts is not None:
                        self.send_header("Strict-Transport-Security", hsts)
                elif redirect is not None:
                    self.send_response(308)
                    self.send_header("Location", redirect.format(host=self.headers["Host"]))
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class TLSServer(http.server.ThreadingHTTPServer):
            def get_request(self) -> tuple[Any, Any]:
                sock, address = self.socket.accept()
                return outer.context.wrap_socket(sock, server_side=True), address

        self.https = TLSServer(("127.0.0.1", 0), Handler)
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        for server in (self.https, self.http):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def load(self, chain: list[x509.Certificate], key: Any) -> None:
        """Serve this certificate (and intermediates) from the next connection on."""
        certfile = self.dir / "cert.pem"
        certfile.write_text(pem(*chain))
        keyfile = self.dir / "key.pem"
        keyfile.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)

        def remember(sock: Any, name: str | None, ctx: Any) -> None:
            self.server_names.append(name or "")

        context.sni_callback = remember
        self.context = context

    def stop(self) -> None:
        for server in (self.https, self.http):
            server.shutdown()
            server.server_close()


@pytest.fixture
def server(pki: dict[str, Any]) -> Iterator[Server]:
    leaf, key = pki["leaf"]
    running = Server([leaf, pki["intermediate"][0]], key, f"max-age={HSTS}; includeSubDomains", "https://{host}/")
    yield running
    running.stop()


def run(**given: Any) -> dict[str, Any]:
    """tls_verify's run_module, with its argument spec's defaults, in the action plugin's stand-in."""
    spec = tls_verify.module_args()["argument_spec"]
    params = {key: option.get("default") for key, option in spec.items()}
    params.update(given)
    module = ControllerModule(params, check_mode=False, diff=False)
    with pytest.raises(_Exit) as done:
        tls_verify.run_module(module)
    return done.value.result


def bundle(pki: dict[str, Any]) -> str:
    return pem(pki["leaf"][0], pki["intermediate"][0])


def served_args(server: Server, **given: Any) -> dict[str, Any]:
    return {
        "hosts": HOSTS,
        "connect_address": "127.0.0.1",
        "https_port": server.https.server_address[1],
        "http_port": server.http.server_address[1],
        "hsts_max_age": HSTS,
        "redirect": True,
        "poll_seconds": 0.2,
        "timeout": 5,
        **given,
    }


# The chain


def test_a_chain_through_an_intermediate_to_the_expected_ca(pki: dict[str, Any]) -> None:
    result = run(certificate=bundle(pki), ca_pem=pem(pki["ca"][0]))
    assert not result.get("failed"), result
    assert result["chain"] == ["CN=api.thinkus.test", "CN=Thinkus test intermediate", "CN=Thinkus test CA"]
    assert result["serial_number"] == pki["leaf"][0].serial_number
    assert "hosts" not in result


def test_text_around_the_certificates_is_ignored(pki: dict[str, Any]) -> None:
    text = "# the Secret's tls.crt\n" + bundle(pki) + "\ntrailing words\n"
    assert run(certificate=text, ca_pem="CA bundle\n" + pem(pki["ca"][0]))["chain"][-1] == "CN=Thinkus test CA"


def test_a_missing_intermediate_breaks_the_chain_and_names_where(pki: dict[str, Any]) -> None:
    result = run(certificate=pem(pki["leaf"][0]), ca_pem=pem(pki["ca"][0]), certificate_name="thinkus/thinkus-tls")
    assert result["failed"] is True
    assert result["msg"].startswith("thinkus/thinkus-tls does not chain to the expected CA (CN=Thinkus test CA): ")
    assert "CN=api.thinkus.test is issued by CN=Thinkus test intermediate, which is neither" in result["msg"]


@pytest.mark.parametrize("other", ["other_ca", "lookalike_ca"])
def test_another_ca_or_a_lookalike_with_the_same_name_is_refused(pki: dict[str, Any], other: str) -> None:
    result = run(certificate=bundle(pki), ca_pem=pem(pki[other][0]))
    assert result["failed"] is True
    assert "is issued by CN=Thinkus test CA, which is neither" in result["msg"]


def test_an_intermediate_is_not_trusted_by_its_name_alone(pki: dict[str, Any]) -> None:
    # A bundle whose second certificate has the intermediate's name but another key.
    fake_intermediate = make_cert("Thinkus test intermediate", pki["ca"])[0]
    result = run(certificate=pem(pki["leaf"][0], fake_intermediate), ca_pem=pem(pki["ca"][0]))
    assert result["failed"] is True
    assert "CN=api.thinkus.test is issued by" in result["msg"]


def test_a_trust_store_directory_with_hash_links_and_other_files(pki: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "other.pem").write_text(pem(pki["other_ca"][0]))
    (tmp_path / "thinkus.crt").write_text(pem(pki["ca"][0]))
    (tmp_path / "0a1b2c3d.0").symlink_to(tmp_path / "thinkus.crt")
    (tmp_path / "README").write_text("not a certificate")
    (tmp_path / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    # sorted by file name; the hash link and the file it names give one certificate
    assert tls.load_trust_store(str(tmp_path)) == [pki["ca"][0], pki["other_ca"][0]]
    result = run(certificate=bundle(pki), trust_store=str(tmp_path))
    assert result["chain"][-1] == "CN=Thinkus test CA"
    assert run(certificate=bundle(pki), trust_store=str(tmp_path / "other.pem"))["failed"] is True


def test_the_leaf_itself_in_the_trust_store(pki: dict[str, Any]) -> None:
    ca = pki["ca"][0]
    assert run(certificate=pem(ca), ca_pem=pem(ca))["chain"] == ["CN=Thinkus test CA"]


# What each host serves


def test_every_host_serves_the_leaf_with_hsts_and_a_redirect(pki: dict[str, Any], server: Server) -> None:
    result = run(certificate=bundle(pki), ca_pem=pem(pki["ca"][0]), **served_args(server))
    assert not result.get("failed"), result
    serial = pki["leaf"][0].serial_number
    assert [(h["host"], h["serial_number"], h["matches"], h["error"]) for h in result["hosts"]] == [
        (host, serial, True, "") for host in HOSTS
    ]
    assert {h["issuer"] for h in result["hosts"]} == {"CN=Thinkus test intermediate"}
    assert [h["hsts"] for h in result["hosts"]] == [f"max-age={HSTS}; includeSubDomains"] * 2
    assert [(h["redirect_status"], h["redirect_location"]) for h in result["hosts"]] == [
        (308, f"https://{host}/") for host in HOSTS
    ]
    assert server.server_names == HOSTS  # SNI named each host


def test_a_name_the_certificate_does_not_cover_fails_verification(pki: dict[str, Any], server: Server) -> None:
    args = served_args(server, hosts=["other.thinkus.test"], hsts_max_age=0, redirect=False)
    result = run(certificate=bundle(pki), ca_pem=pem(pki["ca"][0]), certificate_name="thinkus/thinkus-tls", **args)
    assert result["failed"] is True
    assert result["msg"].startswith("other.thinkus.test serves serial ")
    assert "certificate verify failed: Hostname mismatch" in result["msg"]
    assert "not the certificate in thinkus/thinkus-tls" in result["msg"]
    # What was served is still reported, read without verification.
    assert result["hosts"][0]["serial_number"] == pki["leaf"][0].serial_number
    assert result["hosts"][0]["matches"] is False


def test_an_impostor_certificate_for_the_same_names_is_refused(pki: dict[str, Any]) -> None:
    impostor_ca = pki["other_ca"]
    impostor, key = make_cert("api.thinkus.test", impostor_ca, HOSTS)
    running = Server([impostor], key, f"max-age={HSTS}", "https://{host}/")
    try:
        result = run(certificate=bundle(pki), ca_pem=pem(pki["ca"][0]), **served_args(running))
    finally:
        running.stop()
    assert result["failed"] is True
    assert "certificate verify failed: unable to get local issuer certificate" in result["msg"]
    assert "issued by CN=Somebody else's CA (certificate verify failed: unable to get local issuer" in result["msg"]
    assert f"not the certificate in the bundle (serial {pki['leaf'][0].serial_number})" in result["msg"]
    assert [h["serial_number"] for h in result["hosts"]] == [impostor.serial_number] * 2


def test_a_trusted_certificate_that_is_not_the_secrets_own_is_refused(pki: dict[str, Any]) -> None:
    # Issued by the same CA for the same names, but not the certificate being checked (an old one).
    older, key = make_cert("api.thinkus.test", pki["intermediate"], HOSTS)
    running = Server([older, pki["intermediate"][0]], key, f"max-age={HSTS}", "https://{host}/")
    try:
        result = run(certificate=bundle(pki), ca_pem=pem(pki["ca"][0]), **served_args(running))
    finally:
        running.stop()
    assert result["failed"] is True
    assert f"api.thinkus.test serves serial {older.serial_number}" in result["msg"]
    assert "(certificate verify failed" not in result["msg"]


def test_a_renewed_certificate_loaded_while_the_module_waits(pki: dict[str, Any]) -> None:
    older, older_key = make_cert("api.thinkus.test", pki["intermediate"], HOSTS)
    running = Server([older, pki["intermediate"][0]], older_key, f"max-age={HSTS}", "https://{host}/")
    leaf, key = pki["leaf"]
    timer = threading.Timer(0.5, running.load, ([leaf, pki["intermediate"][0]], key))
    timer.start()
    try:
        result = run(certificate=bundle(pki), ca_pem=pem(pki["ca"][0]), **served_args(running, wait_seconds=10))
    finally:
        timer.cancel()
        running.stop()
    assert not result.get("failed"), result
    assert {h["serial_number"] for h in result["hosts"]} == {leaf.serial_number}


def test_a_wait_that_runs_out_reports_what_was_served(pki: dict[str, Any]) -> None:
    older, older_key = make_cert("api.thinkus.test", pki["intermediate"], HOSTS)
    running = Server([older, pki["intermediate"][0]], older_key, f"max-age={HSTS}", "https://{host}/")
    try:
        result = run(certificate=bundle(pki), ca_pem=pem(pki["ca"][0]), **served_args(running, wait_seconds=0.5))
    finally:
        running.stop()
    assert result["failed"] is True
    assert len(running.server_names) >= 4  # tried again while it waited: 2 hosts, at least twice
    assert result["msg"].count("is the ingress controller using it?") == 2


@pytest.mark.parametrize(
    ("hsts", "expected"),
    [
        (None, "has Strict-Transport-Security None, not max-age=31536000"),
        ("max-age=300", "has Strict-Transport-Security 'max-age=300', not max-age=31536000"),
        # the old prefix match passed this one
        ("max-age=315360000", "has Strict-Transport-Security 'max-age=315360000', not max-age=31536000"),
    ],
)
def test_hsts_must_carry_exactly_the_max_age(pki: dict[str, Any], hsts: str | None, expected: str) -> None:
    leaf, key = pki["leaf"]
    running = Server([leaf, pki["intermediate"][0]], key, hsts, "https://{host}/")
    try:
        result = run(certificate=bundle(pki), ca_pem=pem(pki["ca"][0]), **served_args(running, redirect=False))
    finally:
        running.stop()
    assert result["failed"] is True
    assert result["msg"].startswith(f"api.thinkus.test: the HTTPS answer (status 200) {expected} (hsts_max_age)")


@pytest.mark.parametrize(
    ("redirect", "expected"),
    [
        (None, "status 200, Location ''"),
        ("http://{host}/", "status 308, Location 'http://api.thinkus.test/'"),
        ("https://elsewhere.test/", "status 308, Location 'https://elsewhere.test/'"),
    ],
)
def test_plain_http_must_redirect_to_https_for_the_host(
    pki: dict[str, Any], redirect: str | None, expected: str
) -> None:
    leaf, key = pki["leaf"]
    running = Server([leaf, pki["intermediate"][0]], key, f"max-age={HSTS}", redirect)
    try:
        port = running.http.server_address[1]
        result = run(certificate=bundle(pki), ca_pem=pem(pki["ca"][0]), **served_args(running))
    finally:
        running.stop()
    assert result["failed"] is True
    assert result["msg"].startswith(
        f"api.thinkus.test: plain HTTP on port {port} does not redirect to https://api.thinkus.test/ ({expected})"
    )


def test_a_redirect_with_a_port_is_accepted() -> None:
    answer = tls.Redirect("api.thinkus.test", 301, "https://api.thinkus.test:8443/")
    assert tls.redirects_to_https(answer)
    assert not tls.redirects_to_https(tls.Redirect("api.thinkus.test", 301, "https://api.thinkus.test.evil/"))


def test_nothing_listening_is_a_clear_failure(pki: dict[str, Any], server: Server) -> None:
    args = served_args(server, https_port=1, http_port=1, hosts=HOSTS[:1])
    result = run(certificate=bundle(pki), ca_pem=pem(pki["ca"][0]), **args)
    assert result["failed"] is True
    assert "api.thinkus.test serves no certificate (ConnectionRefusedError" in result["msg"]
    assert (
        "plain HTTP on port 1 does not redirect to https://api.thinkus.test/ (ConnectionRefusedError" in result["msg"]
    )


# Bad input


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"https_port": 0}, "https_port must be a port number from 1 to 65535, got 0"),
        ({"wait_seconds": -1}, "wait_seconds must be 0 or more, got -1"),
        ({"poll_seconds": 0}, "poll_seconds must be more than 0, got 0"),
        ({"hosts": ["https://api.thinkus.test/"]}, "hosts must be DNS names without a scheme, port or path"),
        ({"ca_pem": "not a certificate"}, "ca_pem must be PEM text holding at least one certificate"),
        (
            {"certificate": "no PEM here"},
            "the bundle does not chain to the expected CA (CN=Thinkus test CA): holds no PEM certificate",
        ),
        (
            {"ca_pem": "", "trust_store": "/nonexistent/ca.pem"},
            "trust_store must be a readable PEM file or directory, got '/nonexistent/ca.pem'",
        ),
    ],
)
def test_bad_input_is_refused_with_the_option_named(pki: dict[str, Any], given: dict[str, Any], message: str) -> None:
    args = {"certificate": bundle(pki), "ca_pem": pem(pki["ca"][0]), **given}
    result = run(**args)
    assert result["failed"] is True
    assert result["msg"].startswith(message)


def test_hsts_parsing() -> None:
    assert tls.hsts_max_age("max-age=31536000; includeSubDomains; preload") == 31536000
    assert tls.hsts_max_age('includeSubDomains; Max-Age="600"') == 600
    assert tls.hsts_max_age("includeSubDomains") is None
    assert tls.hsts_max_age(None) is None


def test_no_trust_store_at_all_is_a_clear_refusal(pki: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = ssl.DefaultVerifyPaths(None, None, "", "", "", "")
    monkeypatch.setattr(tls_verify.ssl, "get_default_verify_paths", lambda: nowhere)
    result = run(certificate=bundle(pki), ca_pem="")
    assert result["failed"] is True
    assert result["msg"].startswith("trust_store: this Python has no default trust store; set trust_store")
