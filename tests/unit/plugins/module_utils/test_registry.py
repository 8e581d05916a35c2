# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of plugins/module_utils/_registry.py, the registry client of thinkus.ops.docker_build_image.

The client against a small HTTP server in this process that speaks the parts of the
distribution API the module uses (basic auth, bearer tokens - also anonymous ones - and
redirects to blob storage), and reference parsing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from ansible_collections.thinkus.ops.plugins.module_utils import _registry as registry


@pytest.mark.parametrize(
    ("repository", "expected"),
    [
        ("127.0.0.1:5000/thinkus/api", ("127.0.0.1:5000", "thinkus/api")),
        ("registry.example.com/a/b/c", ("registry.example.com", "a/b/c")),
        ("localhost/x", ("localhost", "x")),
        ("thinkus/api", ("registry-1.docker.io", "thinkus/api")),
        ("docker.io/thinkus/api", ("registry-1.docker.io", "thinkus/api")),
        ("docker.io/redis", ("registry-1.docker.io", "library/redis")),
        ("redis", ("registry-1.docker.io", "library/redis")),
    ],
)
def test_split_repository(repository: str, expected: tuple[str, str]) -> None:
    assert registry.split_repository(repository) == expected


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("python:3.12-slim", ("python", "3.12-slim", "")),
        ("python", ("python", "latest", "")),
        ("127.0.0.1:5000/base/python", ("127.0.0.1:5000/base/python", "latest", "")),
        ("127.0.0.1:5000/base/python:3.11", ("127.0.0.1:5000/base/python", "3.11", "")),
        ("python@sha256:" + "a" * 64, ("python", "", "sha256:" + "a" * 64)),
        ("h:1/p:3.12@sha256:" + "b" * 64, ("h:1/p", "3.12", "sha256:" + "b" * 64)),
    ],
)
def test_parse_reference(reference: str, expected: tuple[str, str, str]) -> None:
    assert registry.parse_reference(reference) == expected


# --------------------------------------------------------------------------- registry client

USER, PASSWORD, TOKEN = "ci", "s3cret-Pa55", "tok-123"
CONFIG = json.dumps({"config": {"Labels": {registry.HASH_LABEL: "h1"}}}).encode()
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()
MANIFEST = json.dumps({"schemaVersion": 2, "config": {"digest": CONFIG_DIGEST}}).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
INDEX_DIGEST = "sha256:" + "1" * 64


class FakeRegistry(BaseHTTPRequestHandler):
    """Basic auth (mode "basic") or bearer tokens (mode "bearer"); blobs redirect to /storage."""

    mode = "basic"
    seen: ClassVar[list[tuple[str, str, str]]] = []
    put: ClassVar[dict[str, bytes]] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return auth == (basic if self.mode == "basic" else f"Bearer {TOKEN}")

    def _handle(self) -> None:
        self.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        host = f"http://127.0.0.1:{self.server.server_address[1]}"
        if self.path.startswith("/token"):
            basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.mode == "anonymous" and "scope=repository%3Abase%2Fpy%3Apull" in self.path:
                return self._reply(200, json.dumps({"access_token": TOKEN}).encode())  # public images
            if self.headers.get("Authorization") != basic:
                return self._reply(401)
            return self._reply(200, json.dumps({"token": TOKEN}).encode())
        if self.path.startswith("/storage/"):
            if self.headers.get("Authorization"):
                return self._reply(400)  # object storage rejects the registry's credentials
            return self._reply(200, CONFIG)
        if not self._authorized():
            challenge = (
                'Basic realm="r"'
                if self.mode == "basic"
                else f'Bearer realm="{host}/token",service="fake",scope="repository:x:pull"'
            )
            return self._reply(401, b"", {"WWW-Authenticate": challenge})
        if self.command == "PUT":
            length = int(self.headers.get("Content-Length", "0"))
            self.put[self.path] = self.rfile.read(length)
            return self._reply(201, b"", {"Docker-Content-Digest": MANIFEST_DIGEST})
        if self.path == "/v2/base/py/manifests/3.12":
            headers = {"Docker-Content-Digest": INDEX_DIGEST, "Content-Type": registry.MANIFEST_TYPES[3]}
            return self._reply(200, b'{"manifests": []}', headers)
        if self.path == "/v2/team/app/manifests/v1":
            headers = {"Docker-Content-Digest": MANIFEST_DIGEST, "Content-Type": registry.MANIFEST_TYPES[0]}
            return self._reply(200, MANIFEST, headers)
        if self.path == f"/v2/team/app/blobs/{CONFIG_DIGEST}":
            return self._reply(307, b"", {"Location": f"{host}/storage/blob"})
        return self._reply(404)

    do_GET = do_HEAD = do_PUT = _handle


@pytest.fixture
def fake_registry() -> Iterator[str]:
    FakeRegistry.seen = []
    FakeRegistry.put = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode", ["basic", "bearer"])
def test_registry_reads_manifest_labels_and_tags(fake_registry: str, mode: str) -> None:
    FakeRegistry.mode = mode
    client = registry.RegistryClient(fake_registry, USER, PASSWORD, insecure=True, timeout=5)
    digest, media_type, body = client.manifest("team/app", "v1")
    assert (digest, media_type) == (MANIFEST_DIGEST, registry.MANIFEST_TYPES[0])
    assert client.labels("team/app", body) == {registry.HASH_LABEL: "h1"}
    assert client.manifest("team/app", "missing") is None
    client.put_manifest("team/app", "local", media_type, body)
    assert FakeRegistry.put["/v2/team/app/manifests/local"] == MANIFEST
    # the redirect to blob storage went there without the registry's credentials
    assert ("GET", "/storage/blob", "") in FakeRegistry.seen


def test_registry_rejecting_credentials_names_registry_user_and_status(fake_registry: str) -> None:
    FakeRegistry.mode = "basic"
    client = registry.RegistryClient(fake_registry, USER, "wrong-password", insecure=True, timeout=5)
    with pytest.raises(registry.RegistryError) as err:
        client.manifest("team/app", "v1")
    assert err.value.status == 401
    assert str(err.value).startswith(f"registry {fake_registry} rejected the credentials of user 'ci': HTTP 401")
    assert "wrong-password" not in str(err.value)


def test_token_service_refusal_is_reported(fake_registry: str) -> None:
    FakeRegistry.mode = "bearer"
    client = registry.RegistryClient(fake_registry, USER, "wrong", insecure=True, timeout=5)
    with pytest.raises(registry.RegistryError, match=r"token service of .* answered HTTP 401"):
        client.manifest("team/app", "v1")


def test_unreachable_registry() -> None:
    client = registry.RegistryClient("127.0.0.1:9", USER, PASSWORD, insecure=True, timeout=2)
    with pytest.raises(registry.RegistryError, match="unreachable"):
        client.manifest("team/app", "v1")


def test_only_http_urls_are_opened() -> None:
    with pytest.raises(registry.RegistryError, match="not an http"):
        registry._open("file:///etc/passwd", 1)


@pytest.mark.parametrize("mode", ["basic", "bearer"])
def test_resolve_gives_the_digest_the_registry_holds_for_a_tag(fake_registry: str, mode: str) -> None:
    FakeRegistry.mode = mode
    client = registry.RegistryClient(fake_registry, USER, PASSWORD, insecure=True, timeout=5)
    assert client.resolve("base/py", "3.12") == INDEX_DIGEST  # the index: the same on every platform
    assert [c for c, p, _a in FakeRegistry.seen if p.startswith("/v2/base/")] in (["HEAD"], ["HEAD", "HEAD"])
    with pytest.raises(registry.RegistryError) as err:
        client.resolve("base/py", "missing")
    assert err.value.status == 404 and str(err.value) == f"registry {fake_registry} has no base/py:missing"


def test_resolve_public_image_with_an_anonymous_token(fake_registry: str) -> None:
    FakeRegistry.mode = "anonymous"
    client = registry.RegistryClient(fake_registry, insecure=True, timeout=5)
    assert client.resolve("base/py", "3.12") == INDEX_DIGEST
    token_requests = [a for _c, p, a in FakeRegistry.seen if p.startswith("/token")]
    assert token_requests == [""]  # no credentials were sent anywhere


def test_anonymous_client_on_a_registry_that_wants_credentials(fake_registry: str) -> None:
    FakeRegistry.mode = "basic"
    client = registry.RegistryClient(fake_registry, insecure=True, timeout=5)
    with pytest.raises(registry.RegistryError, match=r"asks for credentials: HTTP 401"):
        client.resolve("base/py", "3.12")


def test_put_manifest_returns_the_digest(fake_registry: str) -> None:
    FakeRegistry.mode = "basic"
    client = registry.RegistryClient(fake_registry, USER, PASSWORD, insecure=True, timeout=5)
    assert client.put_manifest("team/app", "v2", registry.MANIFEST_V2, MANIFEST) == MANIFEST_DIGEST
    assert FakeRegistry.put == {"/v2/team/app/manifests/v2": MANIFEST}
