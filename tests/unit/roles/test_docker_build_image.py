# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of roles/docker_build/files/docker_build_image.py, the build helper of the docker_build role.

Pure functions (Dockerfile parsing, tags, hashing, git revision) on files made here, and the
registry client against a small HTTP server in this process that speaks the parts of the
distribution API the helper uses (basic auth, bearer tokens, redirects to blob storage).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

HELPER = Path(__file__).resolve().parents[3] / "roles" / "docker_build" / "files" / "docker_build_image.py"
_spec = importlib.util.spec_from_file_location("docker_build_image", HELPER)
assert _spec and _spec.loader
helper = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helper)


# --------------------------------------------------------------------------- Dockerfile


def test_from_images_skips_stages_scratch_and_resolves_args() -> None:
    text = (
        "ARG BASE=golang:1.22-alpine\n"
        "FROM --platform=linux/amd64 ${BASE} AS builder\n"
        "RUN go build\n"
        "FROM builder AS test\n"
        "FROM scratch AS empty\n"
        "FROM alpine:3.19\n"
        "COPY --from=builder /x /x\n"
    )
    assert helper.from_images(text) == ["golang:1.22-alpine", "alpine:3.19"]
    assert helper.from_images(text, {"BASE": "golang:1.23"}) == ["golang:1.23", "alpine:3.19"]


def test_rewrite_from_replaces_only_mapped_images() -> None:
    text = "ARG BASE=python:3.12-slim\nFROM ${BASE}\nFROM golang:1.22-alpine AS b\nFROM debian:12\nRUN echo FROM x\n"
    out = helper.rewrite_from(text, {"python:3.12-slim": "local/python", "golang:1.22-alpine": "local/go"})
    assert out == "ARG BASE=local/python\nFROM ${BASE}\nFROM local/go AS b\nFROM debian:12\nRUN echo FROM x\n"
    assert helper.rewrite_from(text, {}) == text


def test_logical_lines_join_continuations_and_drop_comments() -> None:
    assert helper._logical_lines("# c\nFROM a \\\n  AS b\n\nRUN x\n") == ["FROM a  AS b", "RUN x"]


# --------------------------------------------------------------------------- tags, repositories


def test_expand_tags_with_git_revisions() -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    tags = ["{revision}", "{short_revision}", "local", "local"]
    assert helper.expand_tags(tags, sha) == [sha, "0123456", "local"]
    assert helper.expand_tags(tags, sha + "-dirty") == [sha + "-dirty", "0123456-dirty", "local"]
    assert helper.expand_tags(["{short_revision}"], "v1.2.3") == ["v1.2.3"]


def test_expand_tags_rejects_invalid_tags() -> None:
    with pytest.raises(helper.BuildFailure, match="not a valid image tag"):
        helper.expand_tags(["bad tag"], "x")


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
    assert helper.split_repository(repository) == expected


# --------------------------------------------------------------------------- inputs hash


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src" / "main.go").write_text("package main\n")
    (ctx / "run.sh").write_text("#!/bin/sh\n")
    (ctx / ".dockerignore").write_text("# build output\nbin/\n")
    (ctx / "bin").mkdir()
    (ctx / "bin" / "app").write_text("binary")
    return ctx


def _hash(ctx: Path, dockerfile: str = "FROM x\n", **settings: Any) -> str:
    files = helper.context_files(str(ctx), helper.dockerignore_patterns(str(ctx)))
    return helper.inputs_hash(str(ctx), files, dockerfile, settings, {})


def test_context_files_honour_dockerignore(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    files = helper.context_files(str(ctx), helper.dockerignore_patterns(str(ctx)))
    assert "src/main.go" in files and "run.sh" in files
    assert not any(f.startswith("bin") for f in files)


def test_inputs_hash_follows_what_reaches_the_build(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    base = _hash(ctx)
    assert _hash(ctx) == base
    (ctx / "bin" / "app").write_text("other binary")  # ignored by .dockerignore
    assert _hash(ctx) == base
    assert _hash(ctx, "FROM y\n") != base
    assert _hash(ctx, revision="abc") != base
    (ctx / "run.sh").chmod(0o755)
    assert _hash(ctx) != base
    exec_bit = _hash(ctx)
    (ctx / "src" / "main.go").write_text("package main // v2\n")
    assert _hash(ctx) not in (base, exec_bit)


def test_inputs_hash_includes_extra_files(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    files = helper.context_files(str(ctx), [])
    one = helper.inputs_hash(str(ctx), files, "FROM x", {}, {"ca.pem": b"one"})
    two = helper.inputs_hash(str(ctx), files, "FROM x", {}, {"ca.pem": b"two"})
    assert one != two


# --------------------------------------------------------------------------- git revision


def _git(repo: Path, *args: str) -> str:
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def test_git_revision_is_the_last_commit_touching_the_context(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "a").mkdir(parents=True)
    (repo / "b").mkdir()
    (repo / "a" / "f").write_text("1")
    (repo / "b" / "f").write_text("1")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "one")
    first = _git(repo, "rev-parse", "HEAD")
    (repo / "b" / "f").write_text("2")
    _git(repo, "commit", "-q", "-am", "two")
    assert helper.git_revision(str(repo / "a")) == first
    assert helper.git_revision(str(repo / "b")) == _git(repo, "rev-parse", "HEAD")
    (repo / "a" / "f").write_text("dirty")
    assert helper.git_revision(str(repo / "a")) == first + "-dirty"
    (repo / "c").mkdir()
    (repo / "c" / "new").write_text("untracked")
    assert helper.git_revision(str(repo / "c")) == _git(repo, "rev-parse", "HEAD") + "-dirty"


def test_git_revision_outside_git_asks_for_a_revision(tmp_path: Path) -> None:
    with pytest.raises(helper.BuildFailure, match=r"not in a git work tree.*set the service's revision"):
        helper.git_revision(str(tmp_path))


# --------------------------------------------------------------------------- registry client

USER, PASSWORD, TOKEN = "ci", "s3cret-Pa55", "tok-123"
CONFIG = json.dumps({"config": {"Labels": {helper.HASH_LABEL: "h1"}}}).encode()
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()
MANIFEST = json.dumps({"schemaVersion": 2, "config": {"digest": CONFIG_DIGEST}}).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


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
        if self.path == "/v2/team/app/manifests/v1":
            headers = {"Docker-Content-Digest": MANIFEST_DIGEST, "Content-Type": helper.MANIFEST_TYPES[0]}
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
    client = helper.RegistryClient(fake_registry, USER, PASSWORD, insecure=True, timeout=5)
    digest, media_type, body = client.manifest("team/app", "v1")
    assert (digest, media_type) == (MANIFEST_DIGEST, helper.MANIFEST_TYPES[0])
    assert client.labels("team/app", body) == {helper.HASH_LABEL: "h1"}
    assert client.manifest("team/app", "missing") is None
    client.put_manifest("team/app", "local", media_type, body)
    assert FakeRegistry.put["/v2/team/app/manifests/local"] == MANIFEST
    # the redirect to blob storage went there without the registry's credentials
    assert ("GET", "/storage/blob", "") in FakeRegistry.seen


def test_registry_rejecting_credentials_names_registry_user_and_status(fake_registry: str) -> None:
    FakeRegistry.mode = "basic"
    client = helper.RegistryClient(fake_registry, USER, "wrong-password", insecure=True, timeout=5)
    with pytest.raises(helper.RegistryError) as err:
        client.manifest("team/app", "v1")
    assert err.value.status == 401
    assert str(err.value).startswith(f"registry {fake_registry} rejected the credentials of user 'ci': HTTP 401")
    assert "wrong-password" not in str(err.value)


def test_token_service_refusal_is_reported(fake_registry: str) -> None:
    FakeRegistry.mode = "bearer"
    client = helper.RegistryClient(fake_registry, USER, "wrong", insecure=True, timeout=5)
    with pytest.raises(helper.RegistryError, match=r"token service of .* answered HTTP 401"):
        client.manifest("team/app", "v1")


def test_unreachable_registry(tmp_path: Path) -> None:
    client = helper.RegistryClient("127.0.0.1:9", USER, PASSWORD, insecure=True, timeout=2)
    with pytest.raises(helper.RegistryError, match="unreachable"):
        client.manifest("team/app", "v1")


def test_only_http_urls_are_opened() -> None:
    with pytest.raises(helper.RegistryError, match="not an http"):
        helper._open("file:///etc/passwd", 1)


# --------------------------------------------------------------------------- entry points


def test_run_params_reports_missing_parameters() -> None:
    result = helper.run_params({"name": "svc", "context": "/x"})
    assert result["failed"] is True and result["error"] == "parameters"
    assert "repository" in result["msg"] and "tags" in result["msg"]


def test_run_all_plans_everything_but_stops_a_real_run_at_the_first_failure(tmp_path: Path) -> None:
    services = [
        {"name": "a", "context": str(tmp_path / "none-a"), "repository": "r/a", "tags": ["x"], "push": False},
        {"name": "b", "context": str(tmp_path / "none-b"), "repository": "r/b", "tags": ["x"], "push": False},
    ]
    plan = helper.run_all({"services": services, "check_mode": True, "stop_on_failure": False})
    assert [r["name"] for r in plan["results"]] == ["a", "b"] and plan["failed"] is True
    assert plan["results"][0]["msg"] == f"service 'a': build context {tmp_path / 'none-a'} is not a directory"
    real = helper.run_all({"services": services, "check_mode": False, "stop_on_failure": True})
    assert [r["name"] for r in real["results"]] == ["a"]


def test_missing_dockerfile_without_template(tmp_path: Path) -> None:
    service = {"name": "s", "context": str(tmp_path), "repository": "r/s", "tags": ["x"], "push": False}
    result = helper.run_params(service)
    assert result["error"] == "dockerfile"
    assert result["msg"] == f"service 's': no Dockerfile at {tmp_path / 'Dockerfile'} and no template for the service"
