# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private client of the container registry HTTP API (distribution API v2) for thinkus.ops.

Only what thinkus.ops.docker_build_image needs: read a tag's manifest and digest, read an
image's labels from its configuration blob, resolve a base image tag to its digest, and put
a manifest under another tag. Basic auth, and bearer tokens when the registry asks for them
(anonymous tokens for public images). Redirects (blob storage) are followed for reads only,
without the registry's credentials. Error messages name the registry, the user and the HTTP
status, never the password.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.request
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode

HASH_LABEL = "ai.thinkus.build.inputs-hash"
DOCKER_HUB = "registry-1.docker.io"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (
    MANIFEST_V2,
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class RegistryError(Exception):
    """A registry that cannot be reached or refuses a request (status None when unreachable)."""

    def __init__(self, registry: str, status: int | None, message: str) -> None:
        super().__init__(message)
        self.registry = registry
        self.status = status


def split_repository(repository: str) -> tuple[str, str]:
    """``host[:port]/path`` -> (API host, path). A first part without ``.`` or ``:`` is Docker Hub."""
    first, _sep, rest = repository.partition("/")
    if rest and first in ("docker.io", "index.docker.io"):
        first = DOCKER_HUB
        rest = rest if "/" in rest else f"library/{rest}"
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return DOCKER_HUB, repository if rest else f"library/{repository}"


def parse_reference(reference: str) -> tuple[str, str, str]:
    """``name[:tag][@digest]`` -> (name, tag, digest); the tag is ``latest`` when neither is given."""
    name, _sep, digest = reference.partition("@")
    tag = ""
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _sep, tag = name.rpartition(":")
    if not tag and not digest:
        tag = "latest"
    return name, tag, digest


def same_registry(one: str, other: str) -> bool:
    """Whether two registry hosts (as split_repository returns them) are the same."""
    return one.lower() == other.lower()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _open(
    url: str, timeout: float, method: str = "GET", headers: dict[str, str] | None = None, data: bytes | None = None
) -> Any:
    """One HTTP(S) request, redirects not followed (HTTPError for every status >= 300)."""
    if not url.startswith(("http://", "https://")):
        raise RegistryError("", None, f"refusing to open {url!r}: not an http(s) URL")
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    return _OPENER.open(request, timeout=timeout)


class RegistryClient:
    """Distribution API v2 with basic auth, and bearer tokens when the registry asks for them."""

    def __init__(
        self,
        registry: str,
        username: str | None = None,
        password: str | None = None,
        insecure: bool = False,
        timeout: float = 60,
    ) -> None:
        self.registry = registry
        self.base = ("http" if insecure else "https") + f"://{registry}"
        self.username = username or None
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
        query = urlencode([(k, v) for k, v in (("service", params.get("service", "")), ("scope", scope)) if v])
        headers = {}
        basic = self._basic()
        if basic:
            headers["Authorization"] = basic
        try:
            with _open(f"{realm}?{query}", self.timeout, headers=headers) as resp:
                body = json.loads(resp.read())
        except HTTPError as err:
            raise RegistryError(
                self.registry, err.code, f"token service of {self.registry} answered HTTP {err.code}"
            ) from None
        except (URLError, OSError, ValueError) as err:
            raise RegistryError(self.registry, None, f"token service of {self.registry} failed: {err}") from None
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
                if err.code == 401 and not self.username:
                    reason = "asks for credentials"
                who = f" of user {self.username!r}" if err.code == 401 and self.username else ""
                raise RegistryError(
                    self.registry,
                    err.code,
                    f"registry {self.registry} {reason}{who}: HTTP {err.code} {err.reason} ({method} {path})",
                ) from None
            except (URLError, OSError) as err:
                raise RegistryError(self.registry, None, f"registry {self.registry} unreachable: {err}") from None
        raise RegistryError(self.registry, 401, f"registry {self.registry} refused the token")  # pragma: no cover

    def manifest(
        self, repo: str, ref: str, method: str = "GET", scope_actions: str = "pull,push"
    ) -> tuple[str, str, bytes] | None:
        """(digest, media type, body) of a tag or digest, or None when it does not exist."""
        status, headers, body = self.request(
            method,
            f"/v2/{repo}/manifests/{ref}",
            f"repository:{repo}:{scope_actions}",
            {"Accept": ",".join(MANIFEST_TYPES)},
        )
        if status == 404:
            return None
        digest = headers.get("docker-content-digest") or ""
        if not digest and method == "GET":
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
        return digest, headers.get("content-type", MANIFEST_V2), body

    def resolve(self, repo: str, ref: str) -> str:
        """The digest a tag points at now (of the index when the image has several platforms).

        Read-only (pull scope). Raises RegistryError when the tag does not exist.
        """
        found = self.manifest(repo, ref, method="HEAD", scope_actions="pull")
        if found and not found[0]:  # a registry that sends no digest on HEAD
            found = self.manifest(repo, ref, scope_actions="pull")
        if not found:
            raise RegistryError(self.registry, 404, f"registry {self.registry} has no {repo}:{ref}")
        return found[0]

    def labels(self, repo: str, manifest: bytes) -> dict[str, str]:
        """Labels of the image a single-platform manifest describes ({} for an index)."""
        doc = json.loads(manifest)
        config = (doc.get("config") or {}).get("digest")
        if not config:  # an index: no single config to read
            return {}
        status, _headers, body = self.request("GET", f"/v2/{repo}/blobs/{config}", f"repository:{repo}:pull,push")
        if status == 404:
            return {}
        return (json.loads(body).get("config") or {}).get("Labels") or {}

    def put_manifest(self, repo: str, tag: str, media_type: str, body: bytes) -> str:
        """Store ``body`` under ``tag``; returns the digest the registry reports."""
        _status, headers, _body = self.request(
            "PUT", f"/v2/{repo}/manifests/{tag}", f"repository:{repo}:pull,push", {"Content-Type": media_type}, body
        )
        return headers.get("docker-content-digest", "")
