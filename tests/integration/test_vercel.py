# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Integration tests of thinkus.ops.vercel_deploy and vercel_env.

Starts the local Vercel API double on a free 127.0.0.1 port, then runs the integration
targets (tests/integration/targets/vercel_*) with ansible-playbook at -vvv, api_url
pointed at the double. The targets assert each scenario themselves; here we check that
they passed, that no secret reached the output, and a few things only the server knows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.thinkus.ops.tests.support.ansible import REPO_ROOT, PlaybookResult, run_playbook
from ansible_collections.thinkus.ops.tests.support.vercel_api import VercelAPIServer

TARGETS = REPO_ROOT / "tests" / "integration" / "targets"
PROJECT = "thinkus-web"
TEAM = "team_thinkusLocal01"

pytestmark = pytest.mark.slow


@pytest.fixture
def token() -> str:
    return "vtok_" + secrets.token_hex(16)


@pytest.fixture
def api(token: str) -> Iterator[VercelAPIServer]:
    with VercelAPIServer(token=token, team_id=TEAM) as server:
        server.add_project(PROJECT)
        yield server


def run_target(name: str, api: VercelAPIServer, token: str, tmp_path: Path, **extra: Any) -> PlaybookResult:
    playbook = tmp_path / f"{name}.yml"
    playbook.write_text(
        "---\n"
        f"- name: Integration target {name}\n"
        "  hosts: localhost\n"
        "  connection: local\n"
        "  gather_facts: false\n"
        "  vars:\n"
        '    ansible_python_interpreter: "{{ ansible_playbook_python }}"\n'
        "  roles:\n"
        f"    - role: {TARGETS / name}\n"
    )
    extra_vars = dict(
        vercel_api_url=api.url,
        vercel_test_token=token,
        vercel_test_team_id=TEAM,
        vercel_test_project=PROJECT,
        **extra,
    )
    return run_playbook(playbook, extra_vars=extra_vars, verbosity=3, env={"VERCEL_TOKEN": "", "VERCEL_TEAM_ID": ""})


def failure_excerpt(output: str | PlaybookResult) -> str:
    """The task sections that failed, so a red test shows why without scrolling -vvv output."""
    if isinstance(output, PlaybookResult):
        if output.tasks:
            failed = output.failed_tasks()
            return "\n".join(f"{t['task']}: {t['result'].get('msg')}" for t in failed) or output.output[-4000:]
        output = output.output
    sections = output.split("\nTASK [")
    failed = [s for s in sections if ("fatal: [" in s or "FAILED!" in s) and "...ignoring" not in s]
    return "\n---\n".join("TASK [" + s[:6000] for s in failed) or output[-8000:]


def assert_passed(result: PlaybookResult) -> None:
    assert result.rc == 0, failure_excerpt(result.output)
    assert "failed=0" in result.output, failure_excerpt(result.output)


def test_vercel_deploy_target(api: VercelAPIServer, token: str, tmp_path: Path) -> None:
    result = run_target("vercel_deploy", api, token, tmp_path)
    assert_passed(result)
    # The token was a module option in every task, at -vvv: it must never be printed.
    assert token not in result.output
    assert "Bearer" not in result.output

    held = api.snapshot(PROJECT)
    production = [d for d in held["deployments"] if d["target"] == "production" and d["readyState"] == "READY"]
    assert len(production) == 2, "first deploy and the changed build, nothing more"
    assert held["production"] == max(production, key=lambda d: d["createdAt"])["id"]
    # Every API request carried the team.
    api_requests = [r for r in api.requests if not r["path"].startswith("/_test/")]
    assert all(r["query"].get("teamId") == TEAM for r in api_requests if r["status"] != 401)


def test_vercel_env_target(api: VercelAPIServer, token: str, tmp_path: Path) -> None:
    api.add_env(PROJECT, "UNMANAGED_DEV_ONLY", "dev-only-value-3f9a", ["development"])
    values = {
        "nextauth_secret": "nas_" + secrets.token_hex(12),
        "nextauth_secret_rotated": "nas_" + secrets.token_hex(12),
        "stripe_secret": "sk_test_" + secrets.token_hex(12),
        "stripe_secret_rotated": "sk_test_" + secrets.token_hex(12),
        "extra_value": "extra_" + secrets.token_hex(12),
        "fingerprint_key": secrets.token_hex(32),
    }
    result = run_target("vercel_env", api, token, tmp_path, vercel_test_values=values)
    assert_passed(result)
    assert token not in result.output
    for name, value in values.items():
        assert value not in result.output, f"{name} leaked into the -vvv output"
    # The fingerprints the module wrote (HMAC under fingerprint_key) are never printed either.
    for key, value in (
        ("NEXTAUTH_SECRET", values["nextauth_secret"]),
        ("NEXTAUTH_SECRET", values["nextauth_secret_rotated"]),
        ("STRIPE_SECRET_KEY", values["stripe_secret"]),
        ("STRIPE_SECRET_KEY", values["stripe_secret_rotated"]),
    ):
        fingerprint = fingerprint_of(values["fingerprint_key"], key, value)
        assert fingerprint not in result.output, f"the fingerprint of {key} leaked into the -vvv output"

    held = {(e["key"], tuple(e["target"])) for e in api.env_of(PROJECT)}
    # The target's cleanup removed what it created and left the unmanaged variable alone.
    assert held == {("UNMANAGED_DEV_ONLY", ("development",))}


def fingerprint_of(key: str, name: str, value: str) -> str:
    """The fingerprint vercel_env documents: HMAC-SHA256 under the key, computed independently here."""
    return hmac.new(key.encode(), f"thinkus.ops.vercel_env:v1\0{name}\0{value}".encode(), hashlib.sha256).hexdigest()


def test_vercel_env_fingerprints_rotation_of_encrypted_and_sensitive(
    api: VercelAPIServer, token: str, tmp_path: Path
) -> None:
    """The issue's acceptance scenario, checked on what the server holds: comments carry keyed fingerprints."""
    key = secrets.token_hex(32)
    old = {"ENC": "enc_" + secrets.token_hex(8), "SENS": "sens_" + secrets.token_hex(8)}
    new = {"ENC": "enc_" + secrets.token_hex(8), "SENS": "sens_" + secrets.token_hex(8)}
    playbook = tmp_path / "rotate.yml"
    playbook.write_text(
        "---\n"
        "- name: Rotate\n"
        "  hosts: localhost\n"
        "  connection: local\n"
        "  gather_facts: false\n"
        "  vars:\n"
        '    ansible_python_interpreter: "{{ ansible_playbook_python }}"\n'
        "  tasks:\n"
        "    - name: Set the variables\n"
        "      thinkus.ops.vercel_env:\n"
        '        api_url: "{{ api }}"\n'
        '        token: "{{ tok }}"\n'
        '        team_id: "{{ team }}"\n'
        '        project: "{{ project }}"\n'
        '        fingerprint_key: "{{ key }}"\n'
        "        variables:\n"
        '          - {key: ENC, value: "{{ values.ENC }}", targets: [production], type: encrypted}\n'
        '          - {key: SENS, value: "{{ values.SENS }}", targets: [production], type: sensitive}\n'
    )

    def run(values: dict[str, str]) -> dict[str, Any]:
        extra = dict(api=api.url, tok=token, team=TEAM, project=PROJECT, key=key, values=values)
        result = run_playbook(playbook, extra_vars=extra, env={"VERCEL_TOKEN": ""}, json_output=True, verbosity=3)
        assert result.rc == 0, failure_excerpt(result)
        for secret in (token, key, *values.values()):
            assert secret not in result.output
        return result.task("Set the variables")

    assert run(old)["changed"]
    held = {e["key"]: e for e in api.env_of(PROJECT)}
    for name in ("ENC", "SENS"):
        assert fingerprint_of(key, name, old[name]) in held[name]["comment"]
        assert hashlib.sha256(old[name].encode()).hexdigest() not in held[name]["comment"]
    assert not run(old)["changed"]

    api.clear()
    rotated = run(new)
    assert rotated["changed"]
    assert sorted(c["key"] for c in rotated["changes"]) == ["ENC", "SENS"]
    patches = api.requests_for("PATCH")
    assert len(patches) == 2 and len(api.mutations()) == 2
    held = {e["key"]: e for e in api.env_of(PROJECT)}
    assert {name: held[name]["value"] for name in new} == new
    assert fingerprint_of(key, "SENS", new["SENS"]) in held["SENS"]["comment"]

    api.clear()
    assert not run(new)["changed"]
    assert api.mutations() == []


def test_frontend_playbook(api: VercelAPIServer, token: str, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html>thinkus</html>\n")
    secret = "nas_" + secrets.token_hex(12)
    stripe = "sk_test_" + secrets.token_hex(12)
    fingerprint_key = secrets.token_hex(32)
    extra_vars = dict(
        frontend_vercel_project=PROJECT,
        frontend_vercel_team_id=TEAM,
        frontend_vercel_api_url=api.url,
        frontend_vercel_token=token,
        frontend_vercel_fingerprint_key=fingerprint_key,
        frontend_source_dir=str(site),
        frontend_commit_sha="c" * 40,
        frontend_api_host="api.staging.thinkus.test",
        frontend_regions=["fra1", "cdg1"],
        frontend_env=[
            {
                "key": "NEXT_PUBLIC_API_URL",
                "value": "https://api.staging.thinkus.test",
                "targets": ["production"],
                "type": "plain",
            },
            {"key": "NEXTAUTH_SECRET", "value": secret, "targets": ["production", "preview"]},
            {"key": "STRIPE_SECRET_KEY", "value": stripe, "targets": ["production"], "type": "sensitive"},
        ],
    )
    env = {"VERCEL_TOKEN": "", "VERCEL_TEAM_ID": ""}

    check = run_playbook("playbooks/frontend.yml", extra_vars=extra_vars, env=env, check=True, json_output=True)
    assert check.rc == 0, failure_excerpt(check)
    assert api.mutations() == [], "check mode must not write"
    assert not (site / "vercel.json").exists()

    first = run_playbook("playbooks/frontend.yml", extra_vars=extra_vars, env=env, json_output=True)
    assert first.rc == 0, failure_excerpt(first)
    deploy = first.task("Deploy the frontend")
    assert deploy["changed"] and deploy["deployment"]["readyState"] == "READY"
    assert first.task("Set the project's environment variables")["changed"]

    config = json.loads((site / "vercel.json").read_text())
    assert config["regions"] == ["fra1", "cdg1"]
    assert {"source": "/api/:path*", "destination": "https://api.staging.thinkus.test/api/:path*"} in config["rewrites"]
    header_names = {h["key"] for h in config["headers"][0]["headers"]}
    assert {"Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options"} <= header_names
    held = api.snapshot(PROJECT)
    assert held["production"] == deploy["deployment"]["id"]
    deployed = next(d for d in held["deployments"] if d["id"] == deploy["deployment"]["id"])
    assert {f["file"] for f in deployed["files"]} == {"index.html", "vercel.json"}
    assert {e["key"] for e in held["envs"]} == {"NEXT_PUBLIC_API_URL", "NEXTAUTH_SECRET", "STRIPE_SECRET_KEY"}
    # The playbook passed frontend_vercel_fingerprint_key: the secrets carry its fingerprints.
    stored = {e["key"]: e for e in api.env_of(PROJECT)}
    assert fingerprint_of(fingerprint_key, "STRIPE_SECRET_KEY", stripe) in stored["STRIPE_SECRET_KEY"]["comment"]
    assert fingerprint_of(fingerprint_key, "NEXTAUTH_SECRET", secret) in stored["NEXTAUTH_SECRET"]["comment"]

    again = run_playbook("playbooks/frontend.yml", extra_vars=extra_vars, env=env, json_output=True, verbosity=3)
    assert again.rc == 0, failure_excerpt(again)
    assert not again.task("Deploy the frontend")["changed"]
    assert not again.task("Set the project's environment variables")["changed"]
    assert not again.task("Render vercel.json")["changed"]
    for result in (check, first, again):
        assert token not in result.output
        for value in (secret, stripe, fingerprint_key, fingerprint_of(fingerprint_key, "STRIPE_SECRET_KEY", stripe)):
            assert value not in result.output
