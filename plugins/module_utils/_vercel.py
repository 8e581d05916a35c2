# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private Vercel REST API client shared by the thinkus.ops Vercel modules.

Not a public API: the leading underscore means other collections must not import it.

The decisions (when to retry and how long to wait, whether a deployment is finished)
are pure functions so they can be unit-tested without HTTP; ``VercelClient`` only
wires them to ``open_url``.
"""

from __future__ import annotations

import concurrent.futures
import email.utils
import hashlib
import hmac
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.urls import ConnectionError as UrlConnectionError
from ansible.module_utils.urls import open_url

DEFAULT_API_URL = "https://api.vercel.com"

# Statuses whose Retry-After header tells us when to come back.
RETRY_AFTER_STATUSES = frozenset((429, 503))

# readyState values after which a deployment never changes again.
FAILED_STATES = frozenset(("ERROR", "CANCELED"))

ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_TARGETS = ("production", "preview", "development")
ENV_TYPES = ("encrypted", "sensitive", "plain")

# lastAliasRequest.jobStatus values of a promote or rollback (the official CLI polls these).
ALIAS_JOB_PENDING = frozenset(("pending", "in-progress"))

# The value fingerprint vercel_env keeps in a variable's comment. Vercel allows 500 characters.
FINGERPRINT_VERSION = "v1"
FINGERPRINT_RE = re.compile(r"value fingerprint (v1):([0-9a-f]{64})")
FINGERPRINT_KEY_MIN_LENGTH = 32


def vercel_argument_spec() -> dict[str, Any]:
    """The options every Vercel module shares (documented by the thinkus.ops.vercel fragment)."""
    return dict(
        token=dict(type="str", no_log=True, fallback=(env_fallback, ["VERCEL_TOKEN"])),
        team_id=dict(type="str", fallback=(env_fallback, ["VERCEL_TEAM_ID"])),
        api_url=dict(type="str", default=DEFAULT_API_URL),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="float", default=30.0),
        retries=dict(type="int", default=5),
        retry_max_delay=dict(type="float", default=60.0),
    )


# --------------------------------------------------------------------------- errors


class VercelError(Exception):
    """A failure the module reports as is (the message is already operator-facing)."""


class VercelAPIError(VercelError):
    """A request that failed for good: names the endpoint, the HTTP status and Vercel's error code."""

    def __init__(
        self,
        method: str,
        endpoint: str,
        status: int | None,
        code: str,
        message: str,
        attempts: int = 1,
        retries: int = 0,
        error: dict[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.message = message
        self.attempts = attempts
        self.retries = retries
        self.error = error or {}
        super().__init__(self.describe())

    def describe(self) -> str:
        where = f"{self.method} {self.endpoint}"
        what = f"HTTP {self.status}" if self.status is not None else "no HTTP response"
        text = f"Vercel API {where} failed: {what}, error code {self.code!r}: {self.message}"
        if self.attempts > 1:
            text += f" (gave up after {self.attempts} attempts; retry bound: {self.retries} retries)"
        return text

    def to_result(self) -> dict[str, Any]:
        return dict(
            endpoint=f"{self.method} {self.endpoint}",
            status=self.status,
            error_code=self.code,
            api_attempts=self.attempts,
        )


class VercelRetryAfterError(VercelAPIError):
    """Vercel asked for a longer wait (Retry-After) than the task may wait: fail now, naming it."""

    def __init__(self, method: str, endpoint: str, status: int, code: str, wait: float, cap: float) -> None:
        self.wait = wait
        self.cap = cap
        super().__init__(method, endpoint, status, code, "")

    def describe(self) -> str:
        return (
            f"Vercel API {self.method} {self.endpoint} answered HTTP {self.status}, error code {self.code!r}, "
            f"with Retry-After {self.wait:.0f}s, longer than retry_max_delay ({self.cap:g}s): not retrying "
            f"while the API says its window is closed; run again in {self.wait:.0f}s or raise retry_max_delay."
        )

    def to_result(self) -> dict[str, Any]:
        return dict(super().to_result(), retry_after=self.wait)


# --------------------------------------------------------------------------- retry policy (pure)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the client tries: ``retries`` extra attempts, delays never above ``max_delay``."""

    retries: int = 5
    backoff_base: float = 0.5
    max_delay: float = 60.0


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        # RFC 9110 HTTP-dates are always GMT.
        return None
    return max(0.0, parsed.timestamp() - now)


def backoff_delay(attempt: int, policy: RetryPolicy, rand: float) -> float:
    """Exponential backoff with jitter for retry number ``attempt`` (0-based).

    The ceiling doubles each attempt (capped at ``policy.max_delay``) and the delay is drawn
    from the upper half of it, so waits grow but concurrent clients do not retry in step.
    """
    ceiling = min(policy.max_delay, policy.backoff_base * (2**attempt))
    rand = min(max(rand, 0.0), 1.0)
    return ceiling / 2 + (ceiling / 2) * rand


def retry_after_too_long(status: int | None, retry_after: str | None, policy: RetryPolicy, now: float) -> float | None:
    """The wait a 429/503 asks for when it is longer than ``policy.max_delay`` (else None).

    Waiting less than asked only burns attempts against a window the API said is closed.
    """
    if status not in RETRY_AFTER_STATUSES:
        return None
    wait = parse_retry_after(retry_after, now)
    if wait is not None and wait > policy.max_delay:
        return wait
    return None


def retry_delay(
    method: str,
    status: int | None,
    attempt: int,
    retry_after: str | None,
    policy: RetryPolicy,
    now: float,
    rand: float,
    server_errors: bool = True,
) -> float | None:
    """Seconds to wait before retrying, or None when the failure is final.

    ``attempt`` counts the retries already made. ``status`` None means no HTTP response
    (connection refused, timeout): only reads are retried then, because a write may
    have reached the server. ``server_errors=False`` is for writes that must not be
    repeated blindly (creating a deployment): only 429, which Vercel answers before doing
    anything, is retried; a 5xx goes back to the caller, which looks before it writes again.
    """
    if attempt >= policy.retries:
        return None
    if status is None:
        return backoff_delay(attempt, policy, rand) if method == "GET" else None
    if not server_errors and status != 429:
        return None
    if status in RETRY_AFTER_STATUSES:
        wait = parse_retry_after(retry_after, now)
        if wait is not None:
            return min(wait, policy.max_delay)
        return backoff_delay(attempt, policy, rand)
    if 500 <= status <= 599:
        return backoff_delay(attempt, policy, rand)
    return None


# --------------------------------------------------------------------------- deployment state (pure)


def deployment_state(deployment: dict[str, Any]) -> str:
    return deployment.get("readyState") or deployment.get("state") or "UNKNOWN"


def deployment_status(deployment: dict[str, Any], require_alias: bool) -> str:
    """Classify a deployment as ``pending``, ``ready`` or ``failed``.

    A production deployment is only ready once Vercel reports its alias assigned.
    """
    state = deployment_state(deployment)
    if state in FAILED_STATES or deployment.get("errorCode") or deployment.get("aliasError"):
        return "failed"
    if state == "READY":
        if require_alias and not deployment.get("aliasAssigned"):
            return "pending"
        return "ready"
    return "pending"


def deployment_failure(deployment: dict[str, Any]) -> str:
    """An operator-facing sentence for a deployment that failed."""
    state = deployment_state(deployment)
    code = deployment.get("errorCode")
    message = deployment.get("errorMessage")
    alias_error = deployment.get("aliasError") or {}
    if not code and alias_error:
        code = alias_error.get("code")
        message = alias_error.get("message")
    text = f"Deployment {deployment.get('id', '?')} ended in {state}"
    if code:
        text += f", error code {code!r}"
    if message:
        text += f": {message}"
    if deployment.get("inspectorUrl"):
        text += f" (inspect: {deployment['inspectorUrl']})"
    return text


# --------------------------------------------------------------------------- promote / rollback job (pure)


def alias_job_status(project: dict[str, Any], deployment_id: str, kind: str) -> tuple[str, dict[str, Any]]:
    """Classify the project's alias job for ``deployment_id`` as pending, succeeded or failed.

    Vercel records the last promote or rollback in ``project.lastAliasRequest``
    (``jobStatus``: pending, in-progress, succeeded, failed, skipped). A job for another
    deployment or of another kind is not ours yet: pending, unless production already
    points at the deployment (a job Vercel did not need to run).
    """
    job = project.get("lastAliasRequest") or {}
    production = ((project.get("targets") or {}).get("production") or {}).get("id")
    if job.get("toDeploymentId") != deployment_id or job.get("type", kind) != kind:
        return ("succeeded" if production == deployment_id else "pending"), job
    status = job.get("jobStatus")
    if status in ALIAS_JOB_PENDING:
        return "pending", job
    if status == "succeeded":
        return "succeeded", job
    if status == "skipped" and production == deployment_id:
        return "succeeded", job
    return "failed", job


def alias_job_failure(job: dict[str, Any], kind: str, failed_aliases: list[dict[str, Any]]) -> str:
    """An operator-facing sentence for a promote or rollback job that did not succeed."""
    text = (
        f"Vercel {kind} of deployment {job.get('toDeploymentId', '?')} ended with "
        f"lastAliasRequest.jobStatus {job.get('jobStatus')!r}"
    )
    if job.get("fromDeploymentId"):
        text += f" (production stays on {job['fromDeploymentId']})"
    names = []
    for item in failed_aliases:
        alias = item.get("alias") or {}
        name = alias.get("alias") if isinstance(alias, dict) else alias
        names.append(f"{name} ({item.get('status', 'failed')})")
    if names:
        text += "; aliases Vercel could not move: " + ", ".join(names)
    return text


# --------------------------------------------------------------------------- value fingerprints (pure)


def value_fingerprint(key: str, name: str, value: str) -> str:
    """HMAC-SHA256 of a variable's name and value under the operator's fingerprint key.

    Keyed so that the comment it is stored in says nothing about the value to anyone
    without the key (an unkeyed hash of a short secret can be brute-forced).
    """
    message = f"thinkus.ops.vercel_env:{FINGERPRINT_VERSION}\0{name}\0{value}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def fingerprint_comment(fingerprint: str) -> str:
    return f"Managed by Ansible (thinkus.ops.vercel_env); value fingerprint {FINGERPRINT_VERSION}:{fingerprint}"


def comment_fingerprint(comment: str | None) -> str | None:
    """The fingerprint a comment written by ``fingerprint_comment`` holds, None otherwise."""
    match = FINGERPRINT_RE.search(comment or "")
    return match.group(2) if match else None


# --------------------------------------------------------------------------- files (pure but for reading)


@dataclass(frozen=True)
class LocalFile:
    path: str  # relative, "/"-separated: the name Vercel sees
    abspath: str
    sha: str
    size: int


def sha1_file(path: str) -> str:
    digest = hashlib.sha1()  # noqa: S324 - Vercel addresses files by SHA1, not a security use
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def scan_directory(root: str) -> list[LocalFile]:
    """Every regular file under ``root``, hashed, sorted by path."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            abspath = os.path.join(dirpath, name)
            if not os.path.isfile(abspath):
                continue
            rel = os.path.relpath(abspath, root).replace(os.sep, "/")
            files.append(LocalFile(path=rel, abspath=abspath, sha=sha1_file(abspath), size=os.path.getsize(abspath)))
    files.sort(key=lambda f: f.path)
    return files


def source_digest(files: list[LocalFile]) -> str:
    """One SHA1 over the names and contents of a file set: equal sets give equal digests."""
    digest = hashlib.sha1()  # noqa: S324 - content identity, not a security use
    for item in sorted(files, key=lambda f: f.path):
        digest.update(f"{item.path}\0{item.sha}\n".encode())
    return digest.hexdigest()


def files_payload(files: list[LocalFile]) -> list[dict[str, Any]]:
    return [{"file": f.path, "sha": f.sha, "size": f.size} for f in files]


# --------------------------------------------------------------------------- the client


def _error_fields(body: Any) -> tuple[str, str, dict[str, Any]]:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return str(error.get("code") or "unknown"), str(error.get("message") or ""), error
    return "unknown", "", {}


class VercelClient:
    """Talks JSON to the Vercel REST API with a Bearer token, ``teamId`` and the retry policy."""

    def __init__(
        self,
        token: str,
        team_id: str | None = None,
        api_url: str = DEFAULT_API_URL,
        policy: RetryPolicy | None = None,
        timeout: float = 30.0,
        validate_certs: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._token = token
        self.team_id = team_id
        self.api_url = api_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self.timeout = timeout
        self.validate_certs = validate_certs
        self._sleep = sleep
        self._clock = clock
        self._rand = rand

    # -- transport

    def _url(self, path: str, query: dict[str, Any] | None) -> str:
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        if self.team_id:
            params.append(("teamId", self.team_id))
        url = self.api_url + path
        if params:
            url += "?" + urlencode(params)
        return url

    def _send(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        response = open_url(
            url,
            data=data,
            headers=headers,
            method=method,
            timeout=self.timeout,
            validate_certs=self.validate_certs,
            follow_redirects="safe",
            use_netrc=False,
        )
        raw = response.read()
        return response.status, response.headers, raw

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        server_errors: bool = True,
    ) -> Any:
        """Send one API call with retries; returns the decoded JSON body (None when empty).

        ``server_errors=False``: a 5xx is not retried here (see ``retry_delay``).
        """
        send_headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            send_headers["Content-Type"] = "application/json"
        send_headers.update(headers or {})
        url = self._url(path, query)
        attempt = 0
        while True:
            status: int | None
            retry_after = None
            try:
                status, _headers, raw = self._send(method, url, data, send_headers)
                return json.loads(raw) if raw.strip() else None
            except HTTPError as exc:
                status = exc.code
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                raw = exc.read() if exc.fp else b""
                try:
                    err_body = json.loads(raw) if raw else None
                except ValueError:
                    err_body = None
                code, message, error = _error_fields(err_body)
                if not message:
                    message = exc.reason if isinstance(exc.reason, str) else "request failed"
            except (URLError, OSError, UrlConnectionError) as exc:
                status = None
                reason = getattr(exc, "reason", exc)
                code, message, error = "connection_error", str(reason), {}
            except ValueError as exc:
                raise VercelAPIError(method, path, 200, "invalid_json", f"response is not JSON: {exc}") from None
            too_long = retry_after_too_long(status, retry_after, self.policy, self._clock())
            if too_long is not None and status is not None:
                raise VercelRetryAfterError(method, path, status, code, too_long, self.policy.max_delay)
            wait = retry_delay(
                method, status, attempt, retry_after, self.policy, self._clock(), self._rand(), server_errors
            )
            if wait is None:
                raise VercelAPIError(
                    method,
                    path,
                    status,
                    code,
                    message,
                    attempts=attempt + 1,
                    retries=self.policy.retries,
                    error=error,
                )
            self._sleep(wait)
            attempt += 1

    # -- projects

    def get_project(self, id_or_name: str) -> dict[str, Any]:
        return self.request("GET", f"/v9/projects/{quote(id_or_name, safe='')}")

    # -- deployments

    def create_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
        """One create call. A 5xx or a timeout is not retried here: the deployment may exist."""
        return self.request(
            "POST",
            "/v13/deployments",
            query={"skipAutoDetectionConfirmation": "1"},
            body=body,
            server_errors=False,
        )

    def get_deployment(self, id_or_url: str) -> dict[str, Any]:
        return self.request("GET", f"/v13/deployments/{quote(id_or_url, safe='')}")

    def list_deployments(
        self,
        project_id: str,
        target: str | None = None,
        state: str | None = None,
        meta: dict[str, str] | None = None,
        limit: int = 20,
    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"projectId": project_id, "target": target, "state": state, "limit": limit}
        for key, value in sorted((meta or {}).items()):
            query[f"meta-{key}"] = value
        result = self.request("GET", "/v6/deployments", query=query) or {}
        return list(result.get("deployments") or [])

    def upload_file(self, item: LocalFile) -> None:
        with open(item.abspath, "rb") as handle:
            content = handle.read()
        self.request(
            "POST",
            "/v2/files",
            data=content,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(len(content)),
                "x-vercel-digest": item.sha,
            },
        )

    def upload_files(self, files: list[LocalFile], concurrency: int = 8) -> None:
        """Upload blobs with at most ``concurrency`` requests in flight; the first failure wins."""
        if not files:
            return
        workers = max(1, min(concurrency, len(files)))
        failed = threading.Event()

        def upload(item: LocalFile) -> None:
            if failed.is_set():  # an earlier upload failed: send nothing more
                return
            try:
                self.upload_file(item)
            except BaseException:
                failed.set()
                raise

        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(upload, item) for item in files]
            first_error: BaseException | None = None
            for future in concurrent.futures.as_completed(futures):
                if future.cancelled():  # not started after an earlier failure
                    continue
                error = future.exception()
                if error is not None and first_error is None:
                    first_error = error
                    for pending in futures:
                        pending.cancel()
        if first_error is not None:
            raise first_error

    def promote(self, project_id: str, deployment_id: str) -> Any:
        path = f"/v10/projects/{quote(project_id, safe='')}/promote/{quote(deployment_id, safe='')}"
        return self.request("POST", path)

    def rollback(self, project_id: str, deployment_id: str, description: str | None = None) -> Any:
        return self.request(
            "POST",
            f"/v1/projects/{quote(project_id, safe='')}/rollback/{quote(deployment_id, safe='')}",
            query={"description": description},
        )

    def failed_aliases(self, project_id: str, kind: str) -> list[dict[str, Any]]:
        """Aliases the last promote (or rollback) could not move, as the official CLI lists them."""
        if kind == "promote":
            path = f"/v1/projects/{quote(project_id, safe='')}/promote/aliases"
        else:
            path = f"/v9/projects/{quote(project_id, safe='')}/rollback/aliases"
        result = self.request("GET", path, query={"failedOnly": "true", "limit": 20}) or {}
        return list(result.get("aliases") or [])

    # -- environment variables

    def list_env(self, project_id: str) -> list[dict[str, Any]]:
        """Every variable, values as the list returns them: ciphertext for encrypted, none for sensitive."""
        result = self.request("GET", f"/v10/projects/{quote(project_id, safe='')}/env") or {}
        return list(result.get("envs") or [])

    def get_env(self, project_id: str, env_id: str) -> dict[str, Any]:
        """One variable through the documented decrypting read (``decrypted`` says whether it did)."""
        path = f"/v1/projects/{quote(project_id, safe='')}/env/{quote(env_id, safe='')}"
        return self.request("GET", path) or {}

    def create_env(self, project_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self.request("POST", f"/v10/projects/{quote(project_id, safe='')}/env", body=items) or {}

    def update_env(self, project_id: str, env_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        path = f"/v9/projects/{quote(project_id, safe='')}/env/{quote(env_id, safe='')}"
        return self.request("PATCH", path, body=fields)

    def delete_env(self, project_id: str, env_id: str) -> Any:
        return self.request("DELETE", f"/v9/projects/{quote(project_id, safe='')}/env/{quote(env_id, safe='')}")


def client_from_module(module: Any) -> VercelClient:
    """Build the client from the shared options; fails the module when no token is set."""
    params = module.params
    if not params.get("token"):
        module.fail_json(msg="No Vercel token: set the token option or the VERCEL_TOKEN environment variable.")
    if params["retries"] < 0:
        module.fail_json(msg="retries must be 0 or more.")
    policy = RetryPolicy(retries=params["retries"], max_delay=max(0.0, params["retry_max_delay"]))
    return VercelClient(
        token=params["token"],
        team_id=params.get("team_id") or None,
        api_url=params["api_url"],
        policy=policy,
        timeout=params["timeout"],
        validate_certs=params["validate_certs"],
    )
