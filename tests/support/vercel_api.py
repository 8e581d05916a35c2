# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A local stand-in for the Vercel REST API, for integration tests.

It implements the documented endpoints the thinkus.ops Vercel modules call, with the
documented shapes: error bodies ``{"error": {"code", "message"}}``, the ``missing_files``
handshake of ``POST /v13/deployments``, SHA1-checked uploads to ``POST /v2/files``,
``readyState`` moving QUEUED -> BUILDING -> READY over successive polls, the production
alias assigned after READY, ``teamId`` scoping and 401 for a wrong token.

Where Vercel is stricter than a module might hope, so is the stand-in (docs/vercel.md lists
each behaviour and its source):

- the env list never decrypts (``decrypt=true`` is deprecated and ignored): encrypted
  values come back as ciphertext, sensitive ones without a value; only
  ``GET /v1/projects/{idOrName}/env/{id}`` decrypts, and never a sensitive value;
- ``gitSource`` takes the fields of its provider only (github ``repoId`` or ``org``/``repo``,
  gitlab ``projectId``, bitbucket ``repoUuid`` or ``owner``/``slug``);
- promote and rollback answer 201 at once and run an alias job that the project reports in
  ``lastAliasRequest.jobStatus`` (pending -> in-progress -> succeeded or failed) over
  successive ``GET /v9/projects/{id}``; failed aliases are listed by the aliases endpoints.

Tests drive it from Python (``VercelAPIServer`` methods) or over HTTP (``/_test/...``):
inject faults (N x 500, optionally after the first K matching requests, 429 with Retry-After,
a build ending in ERROR, a 500 or a slow answer *after* the request was carried out, a failed
alias job) and read the log of every request it served.

    with VercelAPIServer(token="t0k3n") as api:
        api.add_project("web")
        api.inject_fault(status=500, times=2, method="POST", path=r"^/v13/deployments$")
        ... point the module's api_url at api.url ...
        assert api.requests_for("PATCH") == []
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_TYPES = ("system", "secret", "encrypted", "plain", "sensitive")
ENV_TARGETS = ("production", "preview", "development")
ENV_COMMENT_MAX = 500
GIT_SOURCE_FIELDS = {
    # provider -> the field sets the create call accepts besides type, ref and sha
    "github": ({"repoId"}, {"org", "repo"}),
    "gitlab": ({"projectId"},),
    "bitbucket": ({"repoUuid"}, {"repoUuid", "workspaceUuid"}, {"owner", "slug"}),
}

Query = dict[str, str]
Reply = tuple[int, Any]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"code": code, "message": message, **extra}}


@dataclass
class Fault:
    status: int
    times: int
    method: str | None = None
    path: str | None = None  # regular expression matched against the path (no query)
    retry_after: str | None = None
    code: str | None = None
    after: bool = False  # carry the request out first, then answer with the fault
    delay: float = 0.0  # with after: seconds to wait before answering (a client timeout)
    skip: int = 0  # let this many matching requests through first (a fault in the middle of a series)

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method != method:
            return False
        return not self.path or re.search(self.path, path) is not None


@dataclass
class ServerState:
    token: str
    team_id: str | None
    lock: threading.RLock = field(default_factory=threading.RLock)
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    envs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    build_errors: list[tuple[str, str]] = field(default_factory=list)
    alias_job_failures: list[list[str]] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


class VercelAPIServer:
    """Starts on 127.0.0.1 and a free port; ``url`` is the base URL to give the modules."""

    def __init__(
        self,
        token: str = "test-token",  # noqa: S107 - the test double's own token
        team_id: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.state = ServerState(token=token, team_id=team_id)
        handler = type("Handler", (_Handler,), {"api": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> VercelAPIServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="vercel-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> VercelAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls

    def add_project(self, name: str) -> dict[str, Any]:
        with self.state.lock:
            project = {
                "id": _new_id("prj_"),
                "name": name,
                "accountId": self.state.team_id or "user_local",
                "createdAt": _now_ms(),
                "updatedAt": _now_ms(),
                "framework": "nextjs",
                "targets": {},
            }
            self.state.projects[project["id"]] = project
            self.state.envs[project["id"]] = []
            return project

    def inject_fault(
        self,
        status: int,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
        retry_after: str | None = None,
        code: str | None = None,
        after: bool = False,
        delay: float = 0.0,
        skip: int = 0,
    ) -> None:
        with self.state.lock:
            self.state.faults.append(Fault(status, times, method, path, retry_after, code, after, delay, skip))

    def fail_next_build(self, error_code: str, error_message: str) -> None:
        """The next deployment created ends in ERROR with this errorCode."""
        with self.state.lock:
            self.state.build_errors.append((error_code, error_message))

    def fail_next_alias_job(self, aliases: list[str] | None = None) -> None:
        """The next promote or rollback job ends ``failed``, leaving these aliases unmoved."""
        with self.state.lock:
            self.state.alias_job_failures.append(list(aliases or []))

    def clear(self) -> None:
        """Forget faults and the request log (projects, blobs, deployments and env stay)."""
        with self.state.lock:
            self.state.faults.clear()
            self.state.build_errors.clear()
            self.state.alias_job_failures.clear()
            self.state.log.clear()

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.log)

    def requests_for(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.requests
            if (method is None or r["method"] == method) and (path is None or re.search(path, r["path"]))
        ]

    def mutations(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] in ("POST", "PATCH", "PUT", "DELETE")]

    def project(self, id_or_name: str) -> dict[str, Any] | None:
        with self.state.lock:
            return self._find_project(id_or_name)

    def env_of(self, id_or_name: str) -> list[dict[str, Any]]:
        """What the server holds: every variable of the project, values included (test-side only)."""
        with self.state.lock:
            project = self._find_project(id_or_name)
            return [dict(e) for e in self.state.envs[project["id"]]] if project else []

    def add_env(self, id_or_name: str, key: str, value: str, targets: list[str], type_: str = "encrypted") -> dict:
        with self.state.lock:
            project = self._find_project(id_or_name)
            env = self._new_env(project["id"], {"key": key, "value": value, "type": type_, "target": targets})
            self.state.envs[project["id"]].append(env)
            return dict(env)

    def snapshot(self, id_or_name: str) -> dict[str, Any]:
        """What the server holds for a project, without secrets: safe to print in a test."""
        with self.state.lock:
            project = self._find_project(id_or_name)
            if project is None:
                return {"project": None}
            return {
                "project": {"id": project["id"], "name": project["name"]},
                "production": (project["targets"].get("production") or {}).get("id"),
                "deployments": [
                    self._deployment_view(d) for d in self.state.deployments if d["projectId"] == project["id"]
                ],
                "blobs": len(self.state.blobs),
                "envs": [
                    {
                        "id": e["id"],
                        "key": e["key"],
                        "target": e["target"],
                        "type": e["type"],
                        "value_sha256": hashlib.sha256(e["value"].encode()).hexdigest(),
                        "has_comment": bool(e.get("comment")),
                    }
                    for e in self.state.envs[project["id"]]
                ],
            }

    def deployments_of(self, id_or_name: str) -> list[dict[str, Any]]:
        with self.state.lock:
            project = self._find_project(id_or_name)
            return [self._deployment_view(d) for d in self.state.deployments if d["projectId"] == project["id"]]

    # -- helpers (lock held)

    def _find_project(self, id_or_name: str) -> dict[str, Any] | None:
        if id_or_name in self.state.projects:
            return self.state.projects[id_or_name]
        for project in self.state.projects.values():
            if project["name"] == id_or_name:
                return project
        return None

    def _project_or_404(self, id_or_name: str) -> dict[str, Any]:
        project = self._find_project(id_or_name)
        if project is None:
            raise ApiError(404, "not_found", f"Project not found: {id_or_name}")
        return project

    def _find_deployment(self, id_or_url: str) -> dict[str, Any] | None:
        host = id_or_url.split("://", 1)[-1].rstrip("/")
        for deployment in self.state.deployments:
            if deployment["id"] == id_or_url or deployment["url"] == host:
                return deployment
        return None

    def _deployment_view(self, d: dict[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in d.items() if not k.startswith("_")}
        view["status"] = d["readyState"]
        return view

    def _list_view(self, d: dict[str, Any]) -> dict[str, Any]:
        return {
            "uid": d["id"],
            "name": d["name"],
            "url": d["url"],
            "created": d["createdAt"],
            "createdAt": d["createdAt"],
            "state": d["readyState"],
            "readyState": d["readyState"],
            "target": d["target"],
            "meta": d["meta"],
            "projectId": d["projectId"],
            "inspectorUrl": d["inspectorUrl"],
            "aliasAssigned": d["aliasAssigned"],
            "aliasError": d["aliasError"],
            "creator": {"uid": "user_local"},
            "type": "LAMBDAS",
        }

    def _advance(self, d: dict[str, Any]) -> None:
        """One poll moves the build one step: QUEUED -> BUILDING -> READY (-> alias for production)."""
        state = d["readyState"]
        if state == "QUEUED":
            d["readyState"] = "BUILDING"
            d["buildingAt"] = _now_ms()
        elif state == "BUILDING":
            if d["_build_error"]:
                d["readyState"] = "ERROR"
                d["errorCode"], d["errorMessage"] = d["_build_error"]
            else:
                d["readyState"] = "READY"
                d["ready"] = _now_ms()
                if d["target"] != "production":
                    d["aliasAssigned"] = True
        elif state == "READY" and d["target"] == "production" and not d["aliasAssigned"]:
            self._assign_production(d)

    def _assign_production(self, d: dict[str, Any]) -> None:
        project = self.state.projects[d["projectId"]]
        d["aliasAssigned"] = True
        d["alias"] = [f"{project['name']}.vercel.app"]
        project["targets"]["production"] = {
            "id": d["id"],
            "url": d["url"],
            "alias": d["alias"],
            "readyState": d["readyState"],
            "createdAt": d["createdAt"],
            "meta": d["meta"],
        }
        for other in self.state.deployments:
            if other is not d and other["projectId"] == d["projectId"] and other["target"] == "production":
                other["alias"] = []
        project["updatedAt"] = _now_ms()

    def _advance_alias_job(self, project: dict[str, Any]) -> None:
        """One project poll moves the alias job one step: pending -> in-progress -> succeeded or failed."""
        job = project.get("lastAliasRequest")
        if not job or job["jobStatus"] not in ("pending", "in-progress"):
            return
        if job["jobStatus"] == "pending":
            job["jobStatus"] = "in-progress"
            return
        failure = project.pop("_alias_job_failure", None)
        if failure is not None:
            job["jobStatus"] = "failed"
            project["_failed_aliases"] = [
                {
                    "id": _new_id("alias_")[:24],
                    "alias": {"alias": alias, "deploymentId": job["toDeploymentId"]},
                    "status": "failed",
                }
                for alias in failure
            ]
            return
        job["jobStatus"] = "succeeded"
        deployment = self._find_deployment(job["toDeploymentId"])
        if deployment is not None:
            self._assign_production(deployment)

    def _new_env(self, project_id: str, item: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": _new_id("env_")[:20],
            "key": item["key"],
            "value": item["value"],
            "type": item["type"],
            "target": sorted(item["target"]),
            "gitBranch": item.get("gitBranch"),
            "comment": item.get("comment"),
            "configurationId": None,
            "createdAt": _now_ms(),
            "updatedAt": _now_ms(),
        }

    def _env_view(self, env: dict[str, Any], decrypt: bool) -> dict[str, Any]:
        """A variable as Vercel shows it. ``decrypt`` only for GET /v1/projects/{p}/env/{id}.

        Plain values are shown as they are. Encrypted values are ciphertext unless read one
        by one through the decrypting endpoint (the list's ``decrypt`` parameter is
        deprecated and ignored). Sensitive values are never returned.
        """
        view = {k: v for k, v in env.items() if v is not None or k == "configurationId"}
        view["decrypted"] = False
        if env["type"] == "sensitive":
            view.pop("value", None)
        elif env["type"] != "plain":
            if decrypt:
                view["decrypted"] = True
            else:
                nonce = secrets.token_hex(8)
                view["value"] = "eyJ2IjoxfQ." + hashlib.sha256((nonce + env["value"]).encode()).hexdigest() + nonce
        return view


# --------------------------------------------------------------------------- request handling


def _validate_env_item(item: Any, partial: bool = False) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ApiError(400, "bad_request", "Invalid request: each environment variable must be an object.")
    required = () if partial else ("key", "value", "type", "target")
    for name in required:
        if name not in item:
            raise ApiError(400, "bad_request", f"Invalid request: missing required property `{name}`.")
    if "key" in item and (not isinstance(item["key"], str) or not ENV_KEY_RE.match(item["key"])):
        raise ApiError(400, "bad_request", f"Invalid request: `key` {item.get('key')!r} is not a valid name.")
    if "type" in item and item["type"] not in ENV_TYPES:
        raise ApiError(400, "bad_request", f"Invalid request: `type` should be one of {', '.join(ENV_TYPES)}.")
    if "target" in item:
        targets = item["target"]
        if isinstance(targets, str):
            targets = [targets]
        if not targets or any(t not in ENV_TARGETS for t in targets):
            raise ApiError(
                400, "bad_request", "Invalid request: `target` should be production, preview or development."
            )
        item = dict(item, target=list(targets))
    if "value" in item and not isinstance(item["value"], str):
        raise ApiError(400, "bad_request", "Invalid request: `value` should be a string.")
    if "comment" in item and (not isinstance(item["comment"], str) or len(item["comment"]) > ENV_COMMENT_MAX):
        message = f"Invalid request: `comment` should be a string of at most {ENV_COMMENT_MAX} characters."
        raise ApiError(400, "bad_request", message)
    return item


def _validate_git_source(git: Any) -> None:
    """The per-provider shapes of ``gitSource`` in the POST /v13/deployments reference."""
    if not isinstance(git, dict) or git.get("type") not in GIT_SOURCE_FIELDS:
        raise ApiError(400, "bad_request", "Invalid request: `gitSource.type` should be github, gitlab or bitbucket.")
    if not isinstance(git.get("ref"), str) or not git["ref"]:
        raise ApiError(400, "bad_request", "Invalid request: `gitSource` missing required property `ref`.")
    if "sha" in git and not isinstance(git["sha"], str):
        raise ApiError(400, "bad_request", "Invalid request: `gitSource.sha` should be a string.")
    provided = set(git) - {"type", "ref", "sha"}
    shapes = GIT_SOURCE_FIELDS[git["type"]]
    if provided not in shapes:
        wanted = " or ".join("/".join(sorted(shape)) for shape in shapes)
        got = ", ".join(sorted(provided)) or "none"
        message = f"Invalid request: `gitSource` of type {git['type']} takes {wanted}, got {got}."
        raise ApiError(400, "bad_request", message)
    for name in provided:
        value = git[name]
        if name in ("repoId", "projectId"):
            if not (isinstance(value, int) or (isinstance(value, str) and value)):
                raise ApiError(400, "bad_request", f"Invalid request: `gitSource.{name}` should be a number or string.")
        elif not isinstance(value, str) or not value:
            raise ApiError(400, "bad_request", f"Invalid request: `gitSource.{name}` should be a non-empty string.")


def _redact(body: Any) -> Any:
    """The request log keeps which fields were sent, never a variable's value or comment (its fingerprint)."""
    if isinstance(body, list):
        return [_redact(item) for item in body]
    if isinstance(body, dict):
        return {k: ("<redacted>" if k in ("value", "comment") else _redact(v)) for k, v in body.items()}
    return body


class _Handler(BaseHTTPRequestHandler):
    api: VercelAPIServer
    protocol_version = "HTTP/1.1"
    server_version = "VercelLocal/1.0"

    # Quiet: the request log is the record.
    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        api = self.api
        entry: dict[str, Any] = {"method": method, "path": path, "query": query, "time": time.time()}
        if path.startswith("/_test/"):
            self._test_control(method, path, raw)
            return
        # Logged when it arrives (its status is filled in when it is answered), so a slow answer
        # still under way belongs to the log a test clears after it, never to the next one.
        with api.state.lock:
            api.state.log.append(entry)
        status = 500
        try:
            body: Any = None
            if raw and path != "/v2/files":
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise ApiError(400, "bad_request", "Invalid JSON body.") from None
            entry["body"] = _redact(body)
            if path == "/v2/files":
                entry["digest"] = self.headers.get("x-vercel-digest") or self.headers.get("x-now-digest")
                entry["size"] = len(raw)
            with api.state.lock:
                self._authorize(query)
                self._fault(method, path, after=False)
                status, result = self._route(method, path, query, body, raw)
                late = self._take_fault(method, path, after=True)
            if late is not None:
                entry["late_fault"] = late.status
                if late.delay:
                    time.sleep(late.delay)
                if late.status >= 400:
                    raise self._fault_error(late)
            self._send(status, result)
        except ApiError as exc:
            status = exc.status
            headers = getattr(exc, "headers", None)
            self._send(exc.status, exc.body, headers)
            entry["error"] = exc.body["error"]["code"]
        finally:
            entry["status"] = status

    def _authorize(self, query: dict[str, str]) -> None:
        header = self.headers.get("Authorization") or ""
        if header != f"Bearer {self.api.state.token}":
            raise ApiError(401, "forbidden", "Not authorized", invalidToken=True)
        team = query.get("teamId")
        if team is not None and team != self.api.state.team_id:
            raise ApiError(403, "forbidden", "You don't have permission to access this team.")
        if self.api.state.team_id and team is None:
            raise ApiError(403, "forbidden", "The token is scoped to a team: pass teamId.")

    def _take_fault(self, method: str, path: str, after: bool) -> Fault | None:
        for fault in self.api.state.faults:
            if fault.times > 0 and fault.after == after and fault.matches(method, path):
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                fault.times -= 1
                if fault.times == 0:
                    self.api.state.faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _fault_error(fault: Fault) -> ApiError:
        code = fault.code or {429: "rate_limited", 503: "service_unavailable"}.get(
            fault.status, "internal_server_error"
        )
        err = ApiError(fault.status, code, f"Injected fault: HTTP {fault.status}")
        if fault.retry_after is not None:
            err.headers = {"Retry-After": fault.retry_after}
        return err

    def _fault(self, method: str, path: str, after: bool) -> None:
        fault = self._take_fault(method, path, after)
        if fault is not None:
            raise self._fault_error(fault)

    def _test_control(self, method: str, path: str, raw: bytes) -> None:
        api = self.api
        if method == "POST" and path == "/_test/faults":
            spec = json.loads(raw or b"{}")
            api.inject_fault(**spec)
            self._send(200, {"ok": True})
        elif method == "POST" and path == "/_test/build-error":
            spec = json.loads(raw or b"{}")
            api.fail_next_build(spec["errorCode"], spec.get("errorMessage", "Build failed"))
            self._send(200, {"ok": True})
        elif method == "POST" and path == "/_test/alias-job-failure":
            spec = json.loads(raw or b"{}")
            api.fail_next_alias_job(spec.get("aliases"))
            self._send(200, {"ok": True})
        elif method == "GET" and path == "/_test/requests":
            self._send(200, {"requests": api.requests})
        elif method == "GET" and path == "/_test/state":
            self._send(200, api.snapshot(parse_qs(urlsplit(self.path).query).get("project", [""])[-1]))
        elif method == "POST" and path == "/_test/clear":
            api.clear()
            self._send(200, {"ok": True})
        else:
            self._send(404, {"error": {"code": "not_found", "message": "Unknown test control"}})

    # -- routes

    def _route(self, method: str, path: str, query: Query, body: Any, raw: bytes) -> Reply:
        routes = (
            ("POST", r"^/v2/files$", self._upload),
            ("POST", r"^/v13/deployments$", self._create_deployment),
            ("GET", r"^/v13/deployments/(?P<deployment_id>[^/]+)$", self._get_deployment),
            ("GET", r"^/v6/deployments$", self._list_deployments),
            ("POST", r"^/v10/projects/(?P<project>[^/]+)/promote/(?P<deployment_id>[^/]+)$", self._promote),
            ("POST", r"^/v1/projects/(?P<project>[^/]+)/rollback/(?P<deployment_id>[^/]+)$", self._rollback),
            ("GET", r"^/v(1|9)/projects/(?P<project>[^/]+)/(?P<kind>promote|rollback)/aliases$", self._job_aliases),
            ("GET", r"^/v9/projects/(?P<project>[^/]+)$", self._get_project),
            ("GET", r"^/v(9|10)/projects/(?P<project>[^/]+)/env$", self._list_env),
            ("GET", r"^/v1/projects/(?P<project>[^/]+)/env/(?P<env>[^/]+)$", self._get_env),
            ("POST", r"^/v10/projects/(?P<project>[^/]+)/env$", self._create_env),
            ("PATCH", r"^/v9/projects/(?P<project>[^/]+)/env/(?P<env>[^/]+)$", self._update_env),
            ("DELETE", r"^/v9/projects/(?P<project>[^/]+)/env/(?P<env>[^/]+)$", self._delete_env),
        )
        known_path = False
        for route_method, pattern, handler in routes:
            match = re.match(pattern, path)
            if match:
                known_path = True
                if route_method == method:
                    return handler(query=query, body=body, raw=raw, **match.groupdict())
        if known_path:
            raise ApiError(405, "method_not_allowed", f"Method {method} not allowed on {path}")
        raise ApiError(404, "not_found", f"The requested path {path} was not found")

    def _upload(self, query: Query, body: Any, raw: bytes) -> Reply:
        digest = self.headers.get("x-vercel-digest") or self.headers.get("x-now-digest")
        if not digest:
            raise ApiError(400, "missing_digest", "Missing `x-vercel-digest` header")
        size = self.headers.get("Content-Length") or self.headers.get("x-now-size")
        if size is not None and int(size) != len(raw):
            raise ApiError(400, "invalid_file_size", "The file size does not match Content-Length")
        actual = hashlib.sha1(raw).hexdigest()  # noqa: S324 - Vercel's content address
        if actual != digest.lower():
            raise ApiError(400, "invalid_digest", f"The SHA1 of the body ({actual}) does not match {digest}")
        self.api.state.blobs[actual] = raw
        return 200, {}

    def _create_deployment(self, query: Query, body: Any, raw: bytes) -> Reply:
        api = self.api
        if not isinstance(body, dict) or not body.get("name"):
            raise ApiError(400, "bad_request", "Invalid request: missing required property `name`.")
        project = api._project_or_404(body.get("project") or body["name"])
        files = body.get("files")
        git = body.get("gitSource")
        if files is None and git is None:
            raise ApiError(400, "bad_request", "Invalid request: either `files` or `gitSource` is required.")
        if files is not None:
            missing = []
            for item in files:
                if not isinstance(item, dict) or not {"file", "sha"} <= set(item):
                    raise ApiError(400, "bad_request", "Invalid request: `files` entries need `file` and `sha`.")
                blob = api.state.blobs.get(item["sha"])
                if blob is None:
                    if item["sha"] not in missing:
                        missing.append(item["sha"])
                elif "size" in item and item["size"] != len(blob):
                    raise ApiError(400, "bad_request", f"Invalid request: size of {item['file']} does not match.")
            if missing:
                raise ApiError(400, "missing_files", "Missing files", missing=missing)
        if git is not None:
            _validate_git_source(git)
        meta = body.get("meta") or {}
        if not all(isinstance(v, str) for v in meta.values()):
            raise ApiError(400, "bad_request", "Invalid request: `meta` values should be strings.")
        dep_id = _new_id("dpl_")
        build_error = api.state.build_errors.pop(0) if api.state.build_errors else None
        deployment = {
            "id": dep_id,
            "name": body["name"],
            "url": f"{project['name']}-{dep_id[4:12].lower()}.vercel.app",
            "projectId": project["id"],
            "target": body.get("target"),
            "meta": dict(meta),
            "readyState": "QUEUED",
            "createdAt": _now_ms(),
            "buildingAt": None,
            "ready": None,
            "alias": [],
            "aliasAssigned": False,
            "aliasError": None,
            "errorCode": None,
            "errorMessage": None,
            "inspectorUrl": f"https://vercel.com/{api.state.team_id or 'personal'}/{project['name']}/{dep_id[4:]}",
            "gitSource": git,
            "files": [{"file": f["file"], "sha": f["sha"]} for f in files or []],
            "_build_error": build_error,
        }
        api.state.deployments.append(deployment)
        return 200, api._deployment_view(deployment)

    def _get_deployment(self, query: Query, body: Any, raw: bytes, deployment_id: str) -> Reply:
        api = self.api
        deployment = api._find_deployment(deployment_id)
        if deployment is None:
            raise ApiError(404, "not_found", "Deployment not found")
        api._advance(deployment)
        return 200, api._deployment_view(deployment)

    def _list_deployments(self, query: Query, body: Any, raw: bytes) -> Reply:
        api = self.api
        selected = list(api.state.deployments)
        if "projectId" in query:
            project = api._find_project(query["projectId"])
            selected = [d for d in selected if project and d["projectId"] == project["id"]]
        if "app" in query:
            selected = [d for d in selected if d["name"] == query["app"]]
        if "target" in query:
            wanted = query["target"]
            selected = [d for d in selected if (d["target"] or "preview") == wanted]
        if "state" in query:
            states = set(query["state"].split(","))
            selected = [d for d in selected if d["readyState"] in states]
        for name, value in query.items():
            if name.startswith("meta-"):
                key = name[len("meta-") :]
                selected = [d for d in selected if d["meta"].get(key) == value]
        selected.sort(key=lambda d: d["createdAt"], reverse=True)
        limit = int(query.get("limit") or 20)
        page = selected[:limit]
        return 200, {
            "deployments": [api._list_view(d) for d in page],
            "pagination": {"count": len(page), "next": None, "prev": None},
        }

    def _switch(self, project_ref: str, deployment_id: str, production_only: bool) -> dict[str, Any]:
        api = self.api
        project = api._project_or_404(project_ref)
        deployment = api._find_deployment(deployment_id)
        if deployment is None or deployment["projectId"] != project["id"]:
            raise ApiError(404, "not_found", "Deployment not found")
        if deployment["readyState"] != "READY":
            raise ApiError(400, "bad_request", f"Deployment {deployment_id} is not READY")
        if production_only and deployment["target"] != "production":
            raise ApiError(400, "bad_request", "Only production deployments can be rolled back to")
        # The request only queues an alias job; GET /v9/projects/{id} reports its progress.
        current = (project["targets"].get("production") or {}).get("id")
        project["lastAliasRequest"] = {
            "fromDeploymentId": current,
            "toDeploymentId": deployment["id"],
            "jobStatus": "pending",
            "requestedAt": _now_ms(),
            "type": "rollback" if production_only else "promote",
        }
        project.pop("_failed_aliases", None)
        project.pop("_alias_job_failure", None)
        if api.state.alias_job_failures:
            project["_alias_job_failure"] = api.state.alias_job_failures.pop(0) or [f"{project['name']}.vercel.app"]
        return deployment

    def _promote(self, query: Query, body: Any, raw: bytes, project: str, deployment_id: str) -> Reply:
        self._switch(project, deployment_id, production_only=False)
        return 201, {}

    def _rollback(self, query: Query, body: Any, raw: bytes, project: str, deployment_id: str) -> Reply:
        self._switch(project, deployment_id, production_only=True)
        return 201, {}

    def _job_aliases(self, query: Query, body: Any, raw: bytes, project: str, kind: str) -> Reply:
        found = self.api._project_or_404(project)
        job = found.get("lastAliasRequest") or {}
        # Only failed aliases are kept: with or without failedOnly=true, those are the answer.
        aliases = (found.get("_failed_aliases") or []) if job.get("type") == kind else []
        return 200, {"aliases": aliases, "pagination": None}

    def _get_project(self, query: Query, body: Any, raw: bytes, project: str) -> Reply:
        found = self.api._project_or_404(project)
        self.api._advance_alias_job(found)
        view = json.loads(json.dumps({k: v for k, v in found.items() if not k.startswith("_")}))
        latest = [d for d in self.api.state.deployments if d["projectId"] == found["id"]]
        latest.sort(key=lambda d: d["createdAt"], reverse=True)
        view["latestDeployments"] = [self.api._list_view(d) for d in latest[:5]]
        return 200, view

    def _list_env(self, query: Query, body: Any, raw: bytes, project: str) -> Reply:
        found = self.api._project_or_404(project)
        # `decrypt=true` is deprecated on this endpoint: accepted, and ignored.
        return 200, {"envs": [self.api._env_view(e, False) for e in self.api.state.envs[found["id"]]]}

    def _get_env(self, query: Query, body: Any, raw: bytes, project: str, env: str) -> Reply:
        _found, record = self._env_or_404(project, env)
        return 200, self.api._env_view(record, True)

    def _conflict(self, project_id: str, key: str, targets: list[str], branch: Any, exclude: str | None) -> Any:
        for env in self.api.state.envs[project_id]:
            if env["id"] == exclude or env["key"] != key or env.get("gitBranch") != branch:
                continue
            if set(env["target"]) & set(targets):
                return env
        return None

    def _create_env(self, query: Query, body: Any, raw: bytes, project: str) -> Reply:
        api = self.api
        found = api._project_or_404(project)
        single = isinstance(body, dict)
        items = [body] if single else body
        if not isinstance(items, list) or not items:
            raise ApiError(400, "bad_request", "Invalid request: body should be an object or a non-empty array.")
        upsert = query.get("upsert") == "true"
        created, failed = [], []
        for item in items:
            item = _validate_env_item(item)
            if item["type"] == "sensitive" and "development" in item["target"]:
                raise ApiError(400, "bad_request", "Sensitive environment variables cannot target development.")
            existing = self._conflict(found["id"], item["key"], item["target"], item.get("gitBranch"), None)
            if existing is not None and upsert:
                existing.update(
                    value=item["value"],
                    type=item["type"],
                    target=sorted(item["target"]),
                    comment=item.get("comment", existing.get("comment")),
                    updatedAt=_now_ms(),
                )
                created.append(api._env_view(existing, False))
            elif existing is not None:
                failed.append(
                    {
                        "error": {
                            "code": "ENV_ALREADY_EXISTS",
                            "message": f"A variable with the name `{item['key']}` already exists for the target.",
                            "key": item["key"],
                            "envVarId": existing["id"],
                            "target": item["target"],
                        }
                    }
                )
            else:
                env = api._new_env(found["id"], item)
                api.state.envs[found["id"]].append(env)
                created.append(api._env_view(env, False))
        if failed and not created:
            error = failed[0]["error"]
            raise ApiError(400, error["code"], error["message"], key=error["key"], envVarId=error["envVarId"])
        return 201, {"created": created[0] if single else created, "failed": failed}

    def _env_or_404(self, project: str, env_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        found = self.api._project_or_404(project)
        for env in self.api.state.envs[found["id"]]:
            if env["id"] == env_id:
                return found, env
        raise ApiError(404, "not_found", f"Environment variable {env_id} not found")

    def _update_env(self, query: Query, body: Any, raw: bytes, project: str, env: str) -> Reply:
        found, record = self._env_or_404(project, env)
        fields = _validate_env_item(body or {}, partial=True)
        editable = ("key", "value", "type", "target", "gitBranch", "comment")
        new = dict(record, **{k: v for k, v in fields.items() if k in editable})
        if new["type"] == "sensitive" and "development" in new["target"]:
            raise ApiError(400, "bad_request", "Sensitive environment variables cannot target development.")
        clash = self._conflict(found["id"], new["key"], new["target"], new.get("gitBranch"), record["id"])
        if clash is not None:
            raise ApiError(
                400,
                "ENV_CONFLICT",
                f"A variable with the name `{new['key']}` already exists for the target.",
                key=new["key"],
                envVarId=clash["id"],
            )
        new["target"] = sorted(new["target"])
        new["updatedAt"] = _now_ms()
        record.update(new)
        return 200, self.api._env_view(record, False)

    def _delete_env(self, query: Query, body: Any, raw: bytes, project: str, env: str) -> Reply:
        found, record = self._env_or_404(project, env)
        self.api.state.envs[found["id"]].remove(record)
        return 200, self.api._env_view(record, False)
