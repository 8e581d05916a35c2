# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Build one service image, tag it and push it, only when its inputs changed.

The build helper of the thinkus.ops.docker_build role. Roles inside a collection cannot carry
modules, so the role runs this file on the build host with ``python3 -`` and the task's
``stdin`` (the file, then a ``run(...)`` line with the base64 JSON parameters): the registry
password travels in the task's arguments like any module option and never on a command line.
Standalone: ``python3 docker_build_image.py params.json [--check]``.

What it does:

- hashes everything that makes the image: the context files that ``.dockerignore`` lets through
  (content, exec bit, symlink target), the Dockerfile (a service's own one wins over the
  rendered template; FROM images replaced through ``base_images``), build args, target, labels,
  the local image IDs of the FROM images, extra files (a CA bundle) and the git revision; the
  hash is stored in the label ``ai.thinkus.build.inputs-hash``;
- asks the registry (distribution API v2; basic auth, bearer tokens when the registry asks) for
  the first tag: same hash there and every other tag at the same digest -> nothing to do; tags
  only missing are added in the registry by copying the manifest;
- otherwise reuses a local image with the same hash or builds one through the Docker API (the
  classic builder: no buildx plugin needed, the build cache is kept), tags it and pushes every
  tag with the credentials in the X-Registry-Auth header (nothing written to ~/.docker).

Parameters (JSON): ``{"services": [...], "check_mode": bool, "stop_on_failure": bool}``, each
service with: name, context, dockerfile, dockerfile_content, base_images, repository, tags
({revision} and {short_revision} expanded), revision, build_args, target, labels, source_url,
version, extra_files (name in context -> path), push, registry_username, registry_password,
registry_insecure, nocache, pull, log_lines, timeout, docker_host.

Prints ``{"changed": bool, "failed": bool, "results": [...]}``, one result per service: name,
changed, actions ([build, push] / [tag] / []), inputs_hash, revision, tags, pushed_tags, digest,
reference (repository@digest), image_id; on failure also failed, msg, error (context,
dockerfile, tags, registry, build, push, docker) and build_log (the last log_lines lines of the
build output).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import sys
import urllib.request
from collections import deque
from typing import Any
from urllib.error import HTTPError, URLError

try:
    import docker
    from docker.utils.build import create_archive, exclude_paths
except ImportError:  # pragma: no cover - reported by main()
    docker = None

HASH_LABEL = "ai.thinkus.build.inputs-hash"
HASH_SCHEME = "thinkus-build-v1"
INJECTED_DOCKERFILE = ".thinkus-build.Dockerfile"
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class BuildFailure(Exception):
    """A failure with a short kind (RETURN ``error``) and optional build output."""

    def __init__(self, kind: str, message: str, log: list[str] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.log = log or []


# --------------------------------------------------------------------------- Dockerfile


def _arg_defaults(lines: list[str], build_args: dict[str, str]) -> dict[str, str]:
    """ARG values visible to FROM lines (ARGs before the first FROM)."""
    values: dict[str, str] = {}
    for line in lines:
        words = line.split()
        if not words:
            continue
        if words[0].upper() == "FROM":
            break
        if words[0].upper() == "ARG" and len(words) > 1:
            name, _sep, default = words[1].partition("=")
            values[name] = str(build_args.get(name, default.strip('"')))
    return values


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def from_images(dockerfile: str, build_args: dict[str, str] | None = None) -> list[str]:
    """Image references of the FROM lines, without earlier stage names and ``scratch``."""
    lines = _logical_lines(dockerfile)
    args = _arg_defaults(lines, build_args or {})
    stages: set[str] = set()
    images: list[str] = []
    for line in lines:
        words = line.split()
        if not words or words[0].upper() != "FROM":
            continue
        words = [w for w in words[1:] if not w.startswith("--")]
        if not words:
            continue
        ref = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), words[0])
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
        if ref.lower() in stages or ref == "scratch" or ref in images:
            continue
        images.append(ref)
    return images


def rewrite_from(dockerfile: str, mapping: dict[str, str]) -> str:
    """Replace image references in FROM lines (and ARG defaults used by them) per ``mapping``."""
    if not mapping:
        return dockerfile

    def repl(match: re.Match[str]) -> str:
        ref = match.group(2)
        return match.group(1) + mapping.get(ref, ref)

    text = re.sub(r"(?im)^(\s*FROM\s+(?:--\S+\s+)*)(\S+)", repl, dockerfile)
    return re.sub(r"(?im)^(\s*ARG\s+\w+=)(\S+)", repl, text)


# --------------------------------------------------------------------------- inputs hash


def dockerignore_patterns(context: str) -> list[str]:
    path = os.path.join(context, ".dockerignore")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle.read().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def context_files(context: str, patterns: list[str]) -> list[str]:
    """Paths (relative, sorted) that the build context sends to the engine."""
    return sorted(exclude_paths(os.path.abspath(context), patterns, dockerfile=None))


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inputs_hash(
    context: str,
    files: list[str],
    dockerfile: str,
    settings: dict[str, Any],
    extra: dict[str, bytes],
) -> str:
    """sha256 over the context files (content, exec bit, symlink target) and the build settings."""
    digest = hashlib.sha256(HASH_SCHEME.encode())
    for rel in files:
        full = os.path.join(context, rel)
        info = os.lstat(full)
        if stat.S_ISLNK(info.st_mode):
            entry = f"L {rel} {os.readlink(full)}"
        elif stat.S_ISDIR(info.st_mode):
            entry = f"D {rel}"
        else:
            entry = f"F {rel} {int(bool(info.st_mode & 0o111))} {_file_digest(full)}"
        digest.update(entry.encode("utf-8", "surrogateescape") + b"\0")
    digest.update(b"DOCKERFILE\0" + dockerfile.encode() + b"\0")
    for name in sorted(extra):
        digest.update(f"X {name} {hashlib.sha256(extra[name]).hexdigest()}\0".encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def short_revision(revision: str) -> str:
    """``<sha7>`` for a git revision (keeping a ``-dirty`` suffix), any other revision unchanged."""
    return revision[:7] + revision[40:] if re.match(r"^[0-9a-f]{40}", revision) else revision


def expand_tags(tags: list[str], revision: str) -> list[str]:
    short = short_revision(revision)
    out: list[str] = []
    for tag in tags:
        value = tag.replace("{revision}", revision).replace("{short_revision}", short)
        if not TAG_RE.match(value):
            raise BuildFailure("tags", f"tag {value!r} (from {tag!r}) is not a valid image tag")
        if value not in out:
            out.append(value)
    return out


def _git(context: str, *args: str) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(["git", "-C", context, *args], capture_output=True, text=True, check=False, timeout=60)
    except FileNotFoundError:
        raise BuildFailure("context", f"git is not installed and no revision was given for {context}") from None
    return proc.returncode, proc.stdout, proc.stderr


def git_revision(context: str) -> str:
    """Last commit touching ``context``, ``-dirty`` appended when it has uncommitted changes.

    A context with no commit yet (new files) gets the repository's HEAD, marked dirty.
    """
    rc, out, err = _git(context, "log", "-1", "--format=%H", "--", ".")
    if rc != 0:
        raise BuildFailure(
            "context", f"{context} is not in a git work tree ({err.strip()}); set the service's revision"
        )
    revision = out.strip()
    if not revision:
        rc, out, err = _git(context, "rev-parse", "HEAD")
        if rc != 0:
            raise BuildFailure("context", f"{context}: the repository has no commit yet; set the service's revision")
        return out.strip() + "-dirty"
    rc, status, _err = _git(context, "status", "--porcelain", "--", ".")
    return revision + ("-dirty" if rc == 0 and status.strip() else "")


# --------------------------------------------------------------------------- registry


def split_repository(repository: str) -> tuple[str, str]:
    """``host[:port]/path`` -> (API host, path). A first part without ``.`` or ``:`` is Docker Hub."""
    first, _sep, rest = repository.partition("/")
    if rest and first in ("docker.io", "index.docker.io"):
        first = "registry-1.docker.io"
        rest = rest if "/" in rest else f"library/{rest}"
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return "registry-1.docker.io", repository if rest else f"library/{repository}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _open(
    url: str, timeout: int, method: str = "GET", headers: dict[str, str] | None = None, data: bytes | None = None
) -> Any:
    """One HTTP(S) request, redirects not followed (HTTPError for every status >= 300)."""
    if not url.startswith(("http://", "https://")):
        raise RegistryError("", None, f"refusing to open {url!r}: not an http(s) URL")
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)  # noqa: S310 - checked
    return _OPENER.open(request, timeout=timeout)


class RegistryError(Exception):
    def __init__(self, registry: str, status: int | None, message: str) -> None:
        super().__init__(message)
        self.registry = registry
        self.status = status


class RegistryClient:
    """Distribution API v2 with basic auth, and bearer tokens when the registry asks for them."""

    def __init__(self, registry: str, username: str | None, password: str | None, insecure: bool, timeout: int):
        self.registry = registry
        self.base = ("http" if insecure else "https") + f"://{registry}"
        self.username = username
        self.password = password
        self.timeout = timeout
        self._token: dict[str, str] = {}

    def _basic(self) -> str | None:
        if not self.username:
            return None
        raw = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _fetch_token(self, challenge: str, scope: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        if not realm:
            raise RegistryError(self.registry, 401, f"registry {self.registry} sent no token realm")
        query = "&".join(f"{k}={v}" for k, v in (("service", params.get("service", "")), ("scope", scope)) if v)
        headers = {}
        if self._basic():
            headers["Authorization"] = self._basic()
        try:
            with _open(f"{realm}?{query}", self.timeout, headers=headers) as resp:
                body = json.loads(resp.read())
        except HTTPError as err:
            raise RegistryError(
                self.registry, err.code, f"token service of {self.registry} answered HTTP {err.code}"
            ) from None
        return body.get("token") or body.get("access_token") or ""

    def request(
        self, method: str, path: str, scope: str, headers: dict[str, str] | None = None, data: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body); 404 is returned, every other error raises RegistryError."""
        for attempt in (1, 2):
            sent = dict(headers or {})
            auth = ("Bearer " + self._token[scope]) if scope in self._token else self._basic()
            if auth:
                sent["Authorization"] = auth
            try:
                try:
                    with _open(self.base + path, self.timeout, method, sent, data) as resp:
                        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
                except HTTPError as err:
                    if err.code not in (301, 302, 303, 307, 308) or method not in ("GET", "HEAD"):
                        raise
                    # blob storage behind the registry: follow without the registry's credentials
                    with _open(err.headers["Location"], self.timeout, method) as resp:
                        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
            except HTTPError as err:
                challenge = err.headers.get("WWW-Authenticate", "") if err.headers else ""
                if err.code == 401 and attempt == 1 and challenge.lower().startswith("bearer"):
                    self._token[scope] = self._fetch_token(challenge, scope)
                    continue
                if err.code == 404:
                    return 404, {}, b""
                reason = {401: "rejected the credentials", 403: "denied access"}.get(err.code, "answered")
                who = f" of user {self.username!r}" if err.code == 401 and self.username else ""
                raise RegistryError(
                    self.registry,
                    err.code,
                    f"registry {self.registry} {reason}{who}: HTTP {err.code} {err.reason} ({method} {path})",
                ) from None
            except (URLError, OSError) as err:
                raise RegistryError(self.registry, None, f"registry {self.registry} unreachable: {err}") from None
        raise RegistryError(self.registry, 401, f"registry {self.registry} refused the token")  # pragma: no cover

    def manifest(self, repo: str, ref: str, method: str = "GET") -> tuple[str, str, bytes] | None:
        """(digest, media type, body) of a tag, or None when the tag does not exist."""
        status, headers, body = self.request(
            method, f"/v2/{repo}/manifests/{ref}", f"repository:{repo}:pull,push", {"Accept": ",".join(MANIFEST_TYPES)}
        )
        if status == 404:
            return None
        digest = headers.get("docker-content-digest") or ("sha256:" + hashlib.sha256(body).hexdigest())
        return digest, headers.get("content-type", MANIFEST_TYPES[0]), body

    def labels(self, repo: str, manifest: bytes) -> dict[str, str]:
        doc = json.loads(manifest)
        config = (doc.get("config") or {}).get("digest")
        if not config:  # an index: no single config to read
            return {}
        status, _headers, body = self.request("GET", f"/v2/{repo}/blobs/{config}", f"repository:{repo}:pull,push")
        if status == 404:
            return {}
        return (json.loads(body).get("config") or {}).get("Labels") or {}

    def put_manifest(self, repo: str, tag: str, media_type: str, body: bytes) -> None:
        self.request(
            "PUT", f"/v2/{repo}/manifests/{tag}", f"repository:{repo}:pull,push", {"Content-Type": media_type}, body
        )


# --------------------------------------------------------------------------- engine


def docker_client(params: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {"version": "auto", "timeout": params["timeout"]}
    kwargs["base_url"] = params.get("docker_host") or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return docker.APIClient(**kwargs)


def local_image_with_hash(client: Any, value: str) -> str:
    images = client.images(filters={"label": f"{HASH_LABEL}={value}"})
    return images[0]["Id"] if images else ""


def image_id(client: Any, ref: str) -> str:
    try:
        return client.inspect_image(ref)["Id"]
    except docker.errors.ImageNotFound:
        return ""


def run_build(client: Any, params: dict[str, Any], archive: io.BytesIO, labels: dict[str, str], tag: str) -> str:
    log: deque[str] = deque(maxlen=params["log_lines"])
    pending = ""
    built = ""
    stream = client.build(
        fileobj=archive,
        custom_context=True,
        dockerfile=INJECTED_DOCKERFILE,
        tag=tag,
        buildargs={k: str(v) for k, v in params["build_args"].items()},
        target=params.get("target") or None,
        labels=labels,
        nocache=params["nocache"],
        pull=params["pull"],
        rm=True,
        forcerm=True,
        decode=True,
    )
    for chunk in stream:
        if "stream" in chunk:
            pending += chunk["stream"]
            *lines, pending = pending.split("\n")
            log.extend(line for line in lines if line.strip())
        if "aux" in chunk and "ID" in chunk["aux"]:
            built = chunk["aux"]["ID"]
        if "error" in chunk:
            if pending.strip():
                log.append(pending)
            log.append(chunk["error"].strip())
            raise BuildFailure(
                "build",
                f"building the image of service {params['name']!r} failed: {chunk['error'].strip()}",
                list(log),
            )
    return built or image_id(client, tag)


def push_tag(client: Any, params: dict[str, Any], repository: str, tag: str) -> str:
    auth = None
    if params.get("registry_username"):
        auth = {"username": params["registry_username"], "password": params.get("registry_password") or ""}
    digest = ""
    for chunk in client.push(repository, tag=tag, auth_config=auth, stream=True, decode=True):
        if "error" in chunk:
            raise BuildFailure("push", f"pushing {repository}:{tag} failed: {chunk['error'].strip()}")
        digest = (chunk.get("aux") or {}).get("Digest", digest)
    return digest


# --------------------------------------------------------------------------- main flow


def prepare(p: dict[str, Any]) -> dict[str, Any]:
    """Everything that decides the image, read from disk and the engine; changes nothing."""
    context = os.path.abspath(p["context"])
    if not os.path.isdir(context):
        raise BuildFailure("context", f"service {p['name']!r}: build context {context} is not a directory")
    own = os.path.join(context, p["dockerfile"])
    if os.path.isfile(own):
        with open(own, encoding="utf-8") as handle:
            text = handle.read()
        source = own
    elif p.get("dockerfile_content"):
        text, source = p["dockerfile_content"], "template"
    else:
        raise BuildFailure(
            "dockerfile", f"service {p['name']!r}: no Dockerfile at {own} and no template for the service"
        )
    text = rewrite_from(text, p["base_images"])
    extra: dict[str, bytes] = {}
    for name, path in sorted(p["extra_files"].items()):
        if not os.path.isfile(path):
            raise BuildFailure("context", f"service {p['name']!r}: extra build file {path} ({name}) does not exist")
        with open(path, "rb") as handle:
            extra[name] = handle.read()
    patterns = dockerignore_patterns(context)
    files = [f for f in context_files(context, patterns) if f not in extra and f != INJECTED_DOCKERFILE]
    try:
        revision = p.get("revision") or git_revision(context)
    except BuildFailure as err:
        raise BuildFailure(err.kind, f"service {p['name']!r}: {err}") from None
    client = docker_client(p)
    bases = {ref: image_id(client, ref) or "absent" for ref in from_images(text, p["build_args"])}
    settings = {
        "build_args": {k: str(v) for k, v in p["build_args"].items()},
        "target": p.get("target") or "",
        "labels": p["labels"],
        "bases": bases,
        "revision": revision,
        "source": p["source_url"],
        "version": p["version"],
    }
    value = inputs_hash(context, files, text, settings, extra)
    tags = expand_tags(p["tags"], revision)
    labels = dict(p["labels"])
    labels.update(
        {
            HASH_LABEL: value,
            "org.opencontainers.image.source": p["source_url"],
            "org.opencontainers.image.revision": revision,
            "org.opencontainers.image.version": p["version"] or short_revision(revision),
        }
    )
    return dict(
        context=context, dockerfile=text, dockerfile_source=source, extra=extra, patterns=patterns,
        files=files, revision=revision, hash=value, tags=tags, labels=labels, client=client,
    )  # fmt: skip


def archive_for(plan: dict[str, Any]) -> io.BytesIO:
    ignore = [*plan["patterns"], INJECTED_DOCKERFILE, ".dockerignore"]
    extra = [(INJECTED_DOCKERFILE, plan["dockerfile"]), (".dockerignore", "\n".join(ignore))]
    extra += [(name, content.decode("utf-8")) for name, content in plan["extra"].items()]
    files = [f for f in plan["files"] if f != ".dockerignore"]
    return create_archive(root=plan["context"], files=files, fileobj=io.BytesIO(), extra_files=extra)


def execute(p: dict[str, Any]) -> dict[str, Any]:
    """Plan, and unless ``check_mode``, build/tag/push. Returns the result (see the file's docstring)."""
    check_mode = bool(p.get("check_mode"))
    plan = prepare(p)
    registry, repo = split_repository(p["repository"])
    result: dict[str, Any] = dict(
        repository=p["repository"],
        name=p["name"], inputs_hash=plan["hash"], revision=plan["revision"], tags=plan["tags"],
        dockerfile=plan["dockerfile_source"], actions=[], pushed_tags=[], digest="", reference="", image_id="",
    )  # fmt: skip
    primary = plan["tags"][0]
    missing_tags = list(plan["tags"])
    remote = None
    if p["push"]:
        client = RegistryClient(
            registry, p.get("registry_username"), p.get("registry_password"), p["registry_insecure"], p["timeout"]
        )
        remote = client.manifest(repo, primary)
        if remote and client.labels(repo, remote[2]).get(HASH_LABEL) == plan["hash"]:
            missing_tags = []
            for tag in plan["tags"][1:]:
                found = client.manifest(repo, tag, method="HEAD")
                if not found or found[0] != remote[0]:
                    missing_tags.append(tag)
            result["digest"] = remote[0]
            if missing_tags:
                result["actions"].append("tag")
                if not check_mode:
                    for tag in missing_tags:
                        client.put_manifest(repo, tag, remote[1], remote[2])
                result["pushed_tags"] = missing_tags
            result["reference"] = f"{p['repository']}@{remote[0]}"
            return result

    engine = plan["client"]
    local = local_image_with_hash(engine, plan["hash"])
    if not local:
        result["actions"].append("build")
    if p["push"]:
        result["actions"].append("push")
        result["pushed_tags"] = list(plan["tags"])
    if check_mode:
        result["image_id"] = local
        return result
    if not local:
        labels = dict(plan["labels"], **{"org.opencontainers.image.created": _now()})
        local = run_build(engine, p, archive_for(plan), labels, f"{p['repository']}:{primary}")
    result["image_id"] = local
    for tag in plan["tags"]:
        if image_id(engine, f"{p['repository']}:{tag}") != local:
            engine.tag(local, p["repository"], tag, force=True)
    if p["push"]:
        for tag in plan["tags"]:
            digest = push_tag(engine, p, p["repository"], tag)
            result["digest"] = result["digest"] or digest
        if result["digest"]:
            result["reference"] = f"{p['repository']}@{result['digest']}"
    return result


def _now() -> str:
    utc = datetime.timezone.utc  # noqa: UP017 - build hosts may run Python < 3.11
    return datetime.datetime.now(utc).strftime("%Y-%m-%dT%H:%M:%SZ")


DEFAULTS: dict[str, Any] = {
    "dockerfile": "Dockerfile", "dockerfile_content": None, "base_images": {}, "revision": None,
    "build_args": {}, "target": None, "labels": {}, "source_url": "", "version": "", "extra_files": {},
    "push": True, "registry_username": None, "registry_password": None, "registry_insecure": False,
    "nocache": False, "pull": False, "log_lines": 40, "timeout": 600, "docker_host": None, "check_mode": False,
}  # fmt: skip
REQUIRED = ("name", "context", "repository", "tags")


def run_params(params: dict[str, Any]) -> dict[str, Any]:
    """The result object for one call; never raises."""
    p = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    name = p.get("name") or "?"
    missing = [k for k in REQUIRED if not p.get(k)]
    if missing:
        return dict(name=name, failed=True, error="parameters", actions=[], msg=f"missing parameters: {missing}")
    if docker is None:
        return dict(name=name, failed=True, error="docker", actions=[],
                    msg="the docker Python SDK is not installed for the interpreter running the build")  # fmt: skip
    try:
        result = execute(p)
    except BuildFailure as err:
        return dict(name=name, failed=True, msg=str(err), error=err.kind, build_log=err.log, actions=[])
    except RegistryError as err:
        return dict(name=name, failed=True, msg=f"service {name!r}: {err}", error="registry", status=err.status,
                    actions=[])  # fmt: skip
    except docker.errors.DockerException as err:
        return dict(name=name, failed=True, msg=f"service {name!r}: Docker engine error: {err}", error="docker",
                    actions=[])  # fmt: skip
    return dict(result, changed=bool(result["actions"]), failed=False)


def run_all(params: dict[str, Any]) -> dict[str, Any]:
    """All services of one call: ``{"services": [...], "check_mode": bool, "stop_on_failure": bool}``.

    Every service is planned even after a failure when ``stop_on_failure`` is false (the plan
    pass reports every problem at once); a real run stops at the first failure so nothing is
    pushed after it.
    """
    results = []
    for service in params.get("services") or []:
        result = run_params({**service, "check_mode": params.get("check_mode", False)})
        results.append(result)
        if result.get("failed") and params.get("stop_on_failure", True):
            break
    return dict(
        results=results,
        changed=any(r.get("changed") for r in results),
        failed=any(r.get("failed") for r in results),
    )


def run(encoded: str) -> None:
    """Entry point of the role: base64 JSON parameters; prints the result, exits 1 on failure."""
    result = run_all(json.loads(base64.b64decode(encoded)))
    print(json.dumps(result, sort_keys=True))
    sys.exit(1 if result["failed"] else 0)


if __name__ == "__main__" and sys.argv[1:]:
    with open(sys.argv[1], encoding="utf-8") as _handle:
        _params = json.load(_handle)
    _params["check_mode"] = "--check" in sys.argv[2:]
    _params.setdefault("stop_on_failure", not _params["check_mode"])
    run(base64.b64encode(json.dumps(_params).encode()).decode())
