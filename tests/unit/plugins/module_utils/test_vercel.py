# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of the private Vercel client: hashing, retry decisions, deployment states."""

from __future__ import annotations

import email.utils
import hashlib
import io
import json
import threading
import time
from email.message import Message
from typing import Any
from urllib.error import HTTPError, URLError

import pytest

from ansible_collections.thinkus.ops.plugins.module_utils import _vercel as v

NOW = 1_800_000_000.0


# ---------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),  # a date in the past: go now
        ("soon", None),
        ("", None),
        (None, None),
        ("-5", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert v.parse_retry_after(header, NOW) == expected


# ---------------------------------------------------------------- backoff and retry decisions


POLICY = v.RetryPolicy(retries=3, backoff_base=1.0, max_delay=10.0)


@pytest.mark.parametrize("attempt", range(6))
@pytest.mark.parametrize("rand", [0.0, 0.37, 1.0])
def test_backoff_stays_in_the_upper_half_of_a_capped_ceiling(attempt: int, rand: float) -> None:
    ceiling = min(10.0, 2**attempt)
    delay = v.backoff_delay(attempt, POLICY, rand)
    assert ceiling / 2 <= delay <= ceiling


def test_backoff_grows_then_caps() -> None:
    delays = [v.backoff_delay(n, POLICY, 1.0) for n in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_clamps_out_of_range_randomness() -> None:
    assert v.backoff_delay(1, POLICY, 5.0) == 2.0
    assert v.backoff_delay(1, POLICY, -1.0) == 1.0


def decide(
    status: int | None,
    attempt: int = 0,
    retry_after: str | None = None,
    method: str = "GET",
    policy: v.RetryPolicy = POLICY,
) -> float | None:
    return v.retry_delay(method, status, attempt, retry_after, policy, NOW, 1.0)


@pytest.mark.parametrize("status", [429, 503])
def test_rate_limits_honour_retry_after_seconds(status: int) -> None:
    assert decide(status, retry_after="3") == 3.0


def test_retry_after_http_date_is_honoured() -> None:
    assert decide(429, retry_after=email.utils.formatdate(NOW + 4, usegmt=True)) == 4.0


def test_retry_after_is_capped() -> None:
    assert decide(429, retry_after="3600") == POLICY.max_delay
    assert decide(503, retry_after=email.utils.formatdate(NOW + 3600, usegmt=True)) == POLICY.max_delay


def test_rate_limit_without_usable_retry_after_backs_off() -> None:
    assert decide(429, attempt=2) == 4.0
    assert decide(429, attempt=0, retry_after="whenever") == 1.0


@pytest.mark.parametrize("status", [500, 502, 504, 599])
def test_server_errors_back_off_exponentially(status: int) -> None:
    assert [decide(status, attempt=n) for n in range(3)] == [1.0, 2.0, 4.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_client_errors_are_never_retried(status: int) -> None:
    assert decide(status) is None


@pytest.mark.parametrize("status", [429, 500, 503, None])
def test_nothing_is_retried_past_the_bound(status: int | None) -> None:
    assert decide(status, attempt=3, retry_after="1") is None
    assert decide(status, attempt=0, policy=v.RetryPolicy(retries=0)) is None


def test_connection_errors_retry_reads_only() -> None:
    assert decide(None, method="GET") == 1.0
    assert decide(None, method="POST") is None
    assert decide(None, method="PATCH") is None


# ---------------------------------------------------------------- deployment state machine


@pytest.mark.parametrize(
    ("deployment", "require_alias", "expected"),
    [
        ({"readyState": "QUEUED"}, False, "pending"),
        ({"readyState": "INITIALIZING"}, False, "pending"),
        ({"readyState": "BUILDING"}, True, "pending"),
        ({"readyState": "READY"}, False, "ready"),
        ({"readyState": "READY", "aliasAssigned": False}, True, "pending"),
        ({"readyState": "READY", "aliasAssigned": True}, True, "ready"),
        ({"readyState": "ERROR", "errorCode": "BUILD_FAILED"}, False, "failed"),
        ({"readyState": "CANCELED"}, False, "failed"),
        ({"readyState": "BUILDING", "errorCode": "X"}, False, "failed"),
        ({"readyState": "READY", "aliasError": {"code": "alias_failed"}}, True, "failed"),
        ({"state": "READY"}, False, "ready"),  # list entries carry `state`
        ({}, False, "pending"),
    ],
)
def test_deployment_status(deployment: dict[str, Any], require_alias: bool, expected: str) -> None:
    assert v.deployment_status(deployment, require_alias) == expected


def test_failure_message_names_state_code_message_and_inspector() -> None:
    text = v.deployment_failure(
        {
            "id": "dpl_1",
            "readyState": "ERROR",
            "errorCode": "BUILD_UTILS_SPAWN_1",
            "errorMessage": "next build exited with 1",
            "inspectorUrl": "https://vercel.com/t/p/1",
        }
    )
    assert "dpl_1" in text
    assert "ERROR" in text
    assert "BUILD_UTILS_SPAWN_1" in text
    assert "next build exited with 1" in text
    assert "https://vercel.com/t/p/1" in text


def test_failure_message_uses_the_alias_error() -> None:
    text = v.deployment_failure(
        {"id": "d", "readyState": "READY", "aliasError": {"code": "cert_missing", "message": "no cert"}}
    )
    assert "cert_missing" in text
    assert "no cert" in text


# ---------------------------------------------------------------- files


def test_sha1_file_matches_hashlib(tmp_path: Any) -> None:
    content = b"x" * (3 << 20) + b"tail"  # more than one read chunk
    path = tmp_path / "big.bin"
    path.write_bytes(content)
    assert v.sha1_file(str(path)) == hashlib.sha1(content).hexdigest()  # noqa: S324


def test_scan_directory_lists_relative_sorted_files(tmp_path: Any) -> None:
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "b.js").write_text("b")
    (tmp_path / "a.html").write_text("aa")
    files = v.scan_directory(str(tmp_path))
    assert [(f.path, f.size) for f in files] == [("a.html", 2), ("static/b.js", 1)]
    assert files[0].sha == hashlib.sha1(b"aa").hexdigest()  # noqa: S324
    assert v.files_payload(files)[1] == {"file": "static/b.js", "sha": files[1].sha, "size": 1}


def test_source_digest_depends_on_names_and_contents_only(tmp_path: Any) -> None:
    a = v.LocalFile("a", "/x/a", "1" * 40, 1)
    b = v.LocalFile("b", "/x/b", "2" * 40, 1)
    assert v.source_digest([a, b]) == v.source_digest([b, a])
    assert v.source_digest([a, b]) != v.source_digest([a, v.LocalFile("b", "/x/b", "3" * 40, 1)])
    assert v.source_digest([a, b]) != v.source_digest([a, v.LocalFile("c", "/x/b", "2" * 40, 1)])


# ---------------------------------------------------------------- the client, without HTTP


def http_error(status: int, body: dict[str, Any] | None = None, retry_after: str | None = None) -> HTTPError:
    headers = Message()
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    raw = json.dumps(body).encode() if body is not None else b""
    return HTTPError("http://api.test/x", status, "Error", headers, io.BytesIO(raw))


class ScriptedClient(v.VercelClient):
    """A client whose transport replays a script of answers and records what it sent."""

    def __init__(self, script: list[Any], **kwargs: Any) -> None:
        self.sleeps: list[float] = []
        super().__init__(
            token="s3cr3t-token",
            api_url="http://api.test/",
            sleep=self.sleeps.append,
            clock=lambda: NOW,
            rand=lambda: 1.0,
            **kwargs,
        )
        self.script = list(script)
        self.sent: list[tuple[str, str, bytes | None, dict[str, str]]] = []

    def _send(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        self.sent.append((method, url, data, headers))
        answer = self.script.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return 200, {}, json.dumps(answer).encode() if answer is not None else b""


def test_request_sends_bearer_token_team_and_json() -> None:
    client = ScriptedClient([{"ok": True}], team_id="team_1")
    assert client.request("POST", "/v13/deployments", query={"a": "b", "skip": None}, body={"x": 1}) == {"ok": True}
    method, url, data, headers = client.sent[0]
    assert method == "POST"
    assert url == "http://api.test/v13/deployments?a=b&teamId=team_1"
    assert json.loads(data or b"") == {"x": 1}
    assert headers["Authorization"] == "Bearer s3cr3t-token"
    assert headers["Content-Type"] == "application/json"


def test_request_retries_429_then_succeeds() -> None:
    client = ScriptedClient(
        [http_error(429, retry_after="2"), http_error(503, retry_after="1"), {"id": "x"}],
        policy=v.RetryPolicy(retries=5, max_delay=60),
    )
    assert client.request("GET", "/v9/projects/p") == {"id": "x"}
    assert client.sleeps == [2.0, 1.0]


def test_request_gives_up_after_the_bound_and_names_it() -> None:
    error = {"error": {"code": "internal_server_error", "message": "boom"}}
    policy = v.RetryPolicy(retries=2, backoff_base=0.5)
    client = ScriptedClient([http_error(500, error) for _attempt in range(3)], policy=policy)
    with pytest.raises(v.VercelAPIError) as caught:
        client.request("GET", "/v9/projects/p")
    exc = caught.value
    assert (exc.status, exc.code, exc.attempts) == (500, "internal_server_error", 3)
    assert client.sleeps == [0.5, 1.0]
    assert "GET /v9/projects/p" in str(exc)
    assert "gave up after 3 attempts" in str(exc)
    assert "retry bound: 2 retries" in str(exc)


def test_request_fails_at_once_on_401_and_keeps_the_token_out() -> None:
    client = ScriptedClient([http_error(401, {"error": {"code": "forbidden", "message": "Not authorized"}})])
    with pytest.raises(v.VercelAPIError) as caught:
        client.request("GET", "/v9/projects/p")
    assert client.sleeps == []
    assert caught.value.to_result() == {
        "endpoint": "GET /v9/projects/p",
        "status": 401,
        "error_code": "forbidden",
        "api_attempts": 1,
    }
    assert "s3cr3t-token" not in str(caught.value)
    assert "HTTP 401" in str(caught.value)


def test_missing_files_error_keeps_the_missing_digests() -> None:
    body = {"error": {"code": "missing_files", "message": "Missing files", "missing": ["a" * 40]}}
    client = ScriptedClient([http_error(400, body)])
    with pytest.raises(v.VercelAPIError) as caught:
        client.create_deployment({"name": "p"})
    assert caught.value.code == "missing_files"
    assert caught.value.error["missing"] == ["a" * 40]


def test_connection_error_of_a_write_is_not_retried() -> None:
    client = ScriptedClient([URLError("refused")])
    with pytest.raises(v.VercelAPIError) as caught:
        client.request("POST", "/v13/deployments", body={})
    assert caught.value.status is None
    assert caught.value.code == "connection_error"
    assert client.sleeps == []


def test_list_deployments_sends_meta_filters() -> None:
    client = ScriptedClient([{"deployments": [{"uid": "d1"}]}])
    found = client.list_deployments("prj", target="production", state="READY", meta={"commitSha": "abc"}, limit=1)
    assert found == [{"uid": "d1"}]
    url = client.sent[0][1]
    assert "projectId=prj" in url
    assert "meta-commitSha=abc" in url
    assert "state=READY" in url


def test_upload_files_bounds_concurrency(tmp_path: Any) -> None:
    for n in range(12):
        (tmp_path / f"f{n}").write_text(str(n))
    files = v.scan_directory(str(tmp_path))
    active = 0
    peak = 0
    lock = threading.Lock()
    sent: list[dict[str, str]] = []

    class Counting(v.VercelClient):
        def _send(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> Any:
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
                sent.append(headers)
            time.sleep(0.02)
            with lock:
                active -= 1
            return 200, {}, b"{}"

    Counting(token="t", api_url="http://api.test").upload_files(files, concurrency=3)
    assert len(sent) == 12
    assert peak <= 3
    by_digest = {h["x-vercel-digest"]: h for h in sent}
    assert set(by_digest) == {f.sha for f in files}
    assert all(h["Content-Length"] == str(f.size) for f in files for h in [by_digest[f.sha]])


def test_upload_files_raises_the_first_failure(tmp_path: Any) -> None:
    (tmp_path / "a").write_text("a")
    client = ScriptedClient([http_error(400, {"error": {"code": "invalid_digest", "message": "bad"}})])
    with pytest.raises(v.VercelAPIError, match="invalid_digest"):
        client.upload_files(v.scan_directory(str(tmp_path)))


def test_upload_files_failing_with_files_still_queued_raises_that_failure_not_a_cancellation(tmp_path: Any) -> None:
    for n in range(6):
        (tmp_path / f"f{n}").write_text(str(n))
    sent: list[str] = []

    class FailingThird(v.VercelClient):
        def _send(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> Any:
            sent.append(headers["x-vercel-digest"])
            if len(sent) == 3:
                raise http_error(400, {"error": {"code": "invalid_digest", "message": "bad"}})
            return 200, {}, b"{}"

    with pytest.raises(v.VercelAPIError, match="invalid_digest"):
        FailingThird(token="t", api_url="http://api.test").upload_files(v.scan_directory(str(tmp_path)), 1)
    assert len(sent) < 6  # the uploads still queued were cancelled, not sent


# ---------------------------------------------------------------- Retry-After beyond the cap, unsafe writes


def test_retry_after_beyond_the_cap_is_reported_not_shortened() -> None:
    assert v.retry_after_too_long(429, "3600", POLICY, NOW) == 3600.0
    assert v.retry_after_too_long(503, email.utils.formatdate(NOW + 600, usegmt=True), POLICY, NOW) == 600.0
    assert v.retry_after_too_long(429, "3", POLICY, NOW) is None
    assert v.retry_after_too_long(500, "3600", POLICY, NOW) is None


def test_request_fails_at_once_on_a_retry_after_beyond_the_cap() -> None:
    client = ScriptedClient([http_error(429, {"error": {"code": "rate_limited"}}, retry_after="3600")])
    with pytest.raises(v.VercelRetryAfterError) as caught:
        client.request("GET", "/v9/projects/p")
    assert client.sleeps == []
    assert len(client.sent) == 1
    assert "Retry-After 3600s" in str(caught.value)
    assert "retry_max_delay (60s)" in str(caught.value)
    assert caught.value.to_result()["retry_after"] == 3600.0


@pytest.mark.parametrize("status", [500, 502, 503])
def test_create_deployment_hands_server_errors_back_without_retrying(status: int) -> None:
    client = ScriptedClient([http_error(status, {"error": {"code": "internal_server_error"}})])
    with pytest.raises(v.VercelAPIError) as caught:
        client.create_deployment({"name": "p"})
    assert caught.value.status == status
    assert len(client.sent) == 1


def test_create_deployment_still_retries_a_rate_limit() -> None:
    client = ScriptedClient([http_error(429, retry_after="2"), {"id": "dpl_1"}])
    assert client.create_deployment({"name": "p"}) == {"id": "dpl_1"}
    assert client.sleeps == [2.0]


def test_env_reads_use_the_documented_endpoints() -> None:
    client = ScriptedClient([{"envs": []}, {"decrypted": True, "value": "x"}])
    client.list_env("prj_1")
    client.get_env("prj_1", "env_1")
    assert client.sent[0][1] == "http://api.test/v10/projects/prj_1/env"
    assert client.sent[1][1] == "http://api.test/v1/projects/prj_1/env/env_1"


# ---------------------------------------------------------------- alias jobs


def project_with(job: dict[str, Any] | None, production: str | None = "dpl_old") -> dict[str, Any]:
    return {"lastAliasRequest": job, "targets": {"production": {"id": production}} if production else {}}


def job(status: str, to: str = "dpl_new", type_: str = "promote") -> dict[str, Any]:
    return {"jobStatus": status, "toDeploymentId": to, "fromDeploymentId": "dpl_old", "type": type_}


@pytest.mark.parametrize(
    ("project", "expected"),
    [
        (project_with(job("pending")), "pending"),
        (project_with(job("in-progress")), "pending"),
        (project_with(job("succeeded")), "succeeded"),
        (project_with(job("failed")), "failed"),
        (project_with(job("skipped")), "failed"),
        (project_with(job("skipped"), production="dpl_new"), "succeeded"),
        (project_with(job("whatever")), "failed"),
        (project_with(job("succeeded", to="dpl_other")), "pending"),  # not our job (yet)
        (project_with(job("succeeded", type_="rollback")), "pending"),
        (project_with(None, production="dpl_new"), "succeeded"),  # no job to wait on: production says it
        (project_with(None), "pending"),
    ],
)
def test_alias_job_status(project: dict[str, Any], expected: str) -> None:
    assert v.alias_job_status(project, "dpl_new", "promote")[0] == expected


def test_alias_job_failure_names_status_production_and_aliases() -> None:
    aliases = [{"alias": {"alias": "web.vercel.app", "deploymentId": "dpl_new"}, "status": "failed"}]
    text = v.alias_job_failure(job("failed"), "promote", aliases)
    assert "promote of deployment dpl_new" in text
    assert "jobStatus 'failed'" in text
    assert "production stays on dpl_old" in text
    assert "web.vercel.app (failed)" in text


# ---------------------------------------------------------------- value fingerprints


def test_fingerprint_is_a_keyed_hmac_of_name_and_value() -> None:
    key = "k" * 32
    fingerprint = v.value_fingerprint(key, "API_KEY", "s3cr3t")
    assert fingerprint == v.value_fingerprint(key, "API_KEY", "s3cr3t")
    assert fingerprint != v.value_fingerprint("j" * 32, "API_KEY", "s3cr3t")
    assert fingerprint != v.value_fingerprint(key, "OTHER", "s3cr3t")
    assert fingerprint != hashlib.sha256(b"s3cr3t").hexdigest()
    assert len(fingerprint) == 64


def test_fingerprint_comment_round_trips_and_fits_vercel() -> None:
    fingerprint = v.value_fingerprint("k" * 32, "A", "s3cr3t-value")
    comment = v.fingerprint_comment(fingerprint)
    assert len(comment) <= 500
    assert "s3cr3t-value" not in comment
    assert v.comment_fingerprint(comment) == fingerprint
    assert v.comment_fingerprint("set by hand") is None
    assert v.comment_fingerprint(None) is None
