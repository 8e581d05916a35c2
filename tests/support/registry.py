# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reads what a Docker registry (Distribution HTTP API v2) really holds, for tests to assert on.

Talks to the registry directly with basic auth (never through the code under test): tags,
manifest digests, image labels, blobs a manifest names that are missing, and clean-up.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = ",".join(
    [
        MANIFEST_V2,
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


class RegistryReader:
    def __init__(self, address: str, username: str, password: str) -> None:
        self.address = address
        self.username = username
        self.password = password
        self.auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def call(self, method: str, path: str, accept: str = MANIFEST_TYPES) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(
            f"http://{self.address}{path}", method=method, headers={"Authorization": self.auth, "Accept": accept}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers or {}), b""

    def answers(self) -> bool:
        return self.call("GET", "/v2/")[0] == 200

    def tags(self, repo: str) -> list[str]:
        status, _headers, body = self.call("GET", f"/v2/{repo}/tags/list")
        return sorted(json.loads(body).get("tags") or []) if status == 200 else []

    def digest(self, repo: str, tag: str) -> str:
        status, headers, _body = self.call("HEAD", f"/v2/{repo}/manifests/{tag}")
        return headers.get("Docker-Content-Digest", "") if status == 200 else ""

    def config_digest(self, repo: str, ref: str) -> str:
        """The image (config blob) a manifest names: the same image behind two manifests has one."""
        return json.loads(self.call("GET", f"/v2/{repo}/manifests/{ref}")[2])["config"]["digest"]

    def labels(self, repo: str, ref: str) -> dict[str, str]:
        manifest = json.loads(self.call("GET", f"/v2/{repo}/manifests/{ref}")[2])
        blob = self.call("GET", f"/v2/{repo}/blobs/{manifest['config']['digest']}", accept="*/*")[2]
        return json.loads(blob)["config"]["Labels"]

    def missing_blobs(self, repo: str, ref: str) -> list[str]:
        """Blobs the manifest ``ref`` (or each manifest of an index) names that the registry lacks."""
        status, _headers, body = self.call("GET", f"/v2/{repo}/manifests/{ref}")
        if status != 200:
            raise AssertionError(f"{repo}:{ref}: no manifest (HTTP {status})")
        manifest = json.loads(body)
        if "manifests" in manifest:
            return [b for m in manifest["manifests"] for b in self.missing_blobs(repo, m["digest"])]
        digests = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
        return [d for d in digests if self.call("HEAD", f"/v2/{repo}/blobs/{d}", accept="*/*")[0] != 200]

    def delete_repo(self, repo: str) -> None:
        for digest in {self.digest(repo, tag) for tag in self.tags(repo)} - {""}:
            self.call("DELETE", f"/v2/{repo}/manifests/{digest}")
