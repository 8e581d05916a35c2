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
        "extra_value": "extra_" + secrets.token_hex(12),
    }
    result = run_target("vercel_env", api, token, tmp_path, vercel_test_values=values)
    assert_passed(result)
    assert token not in result.output
    for name, value in values.items():
        assert value not in result.output, f"{name} leaked into the -vvv output"

    held = {(e["key"], tuple(e["target"])) for e in api.env_of(PROJECT)}
    # The target's cleanup removed what it created and left the unmanaged variable alone.
    assert held == {("UNMANAGED_DEV_ONLY", ("development",))}


def test_frontend_playbook(api: VercelAPIServer, token: str, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html>thinkus</html>\n")
    secret = "nas_" + secrets.token_hex(12)
    extra_vars = dict(
        frontend_vercel_project=PROJECT,
        frontend_vercel_team_id=TEAM,
        frontend_vercel_api_url=api.url,
        frontend_vercel_token=token,
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
    assert {e["key"] for e in held["envs"]} == {"NEXT_PUBLIC_API_URL", "NEXTAUTH_SECRET"}

    again = run_playbook("playbooks/frontend.yml", extra_vars=extra_vars, env=env, json_output=True, verbosity=3)
    assert again.rc == 0, failure_excerpt(again)
    assert not again.task("Deploy the frontend")["changed"]
    assert not again.task("Set the project's environment variables")["changed"]
    assert not again.task("Render vercel.json")["changed"]
    for result in (check, first, again):
        assert token not in result.output
        assert secret not in result.output
