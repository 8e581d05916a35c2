# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Jobs run the way AWX runs them: ansible-navigator, in the execution environment built here.

The EE image is the one `make ee` builds (tools/ee.py: ansible-builder FROM the local base
image by digest). Credentials reach each job as AWX injects them: the credential types of
playbooks/vars/awx.yml are rendered with the local environment's values, their env injectors
become the job's environment and their file injectors files outside the project, mounted into
the container. Each job template of the dev environment is run with its own playbook, its
schedules' extra_data and its credentials' injections, against inventories/local.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import jinja2
import pytest
import yaml

from ansible_collections.thinkus.ops.tests.support.ansible import REPO_ROOT, run_playbook
from tools import ee
from tools.localenv import _secrets
from tools.localenv._proc import Context

pytestmark = [pytest.mark.localenv, pytest.mark.slow]

AWX = yaml.safe_load((REPO_ROOT / "playbooks" / "vars" / "awx.yml").read_text())
LOCAL = REPO_ROOT / ".local"
NAVIGATOR = str(REPO_ROOT / ".venv" / "bin" / "ansible-navigator")
S3_ENDPOINT = "http://127.0.0.1:19000"
BUCKET = "thinkus-backups"
ENVIRONMENT = "dev"  # the job templates whose credentials and schedules are exercised


@pytest.fixture(scope="module")
def creds() -> dict[str, str]:
    return _secrets.load(Context())


@pytest.fixture(scope="module")
def ee_image() -> str:
    """The EE image; `make test` builds it in its own stage, a direct pytest run builds it here."""
    tag = ee.image_tag()
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False).returncode != 0:
        ee.build(push=True)
    return tag


def _render(template: str, context: dict[str, Any]) -> str:
    """awx.yml's injectors as AWX gets them (Ansible renders the {% raw %} away), then as AWX renders them."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 - not HTML
    as_sent = env.from_string(template).render()
    return env.from_string(as_sent).render(**context)


# ansible-runner's job events ride along in the output as base64 that the terminal erases again
_EVENT = re.compile(r"\x1b\[K(?:[A-Za-z0-9+/=]*\x1b\[\d+D\x1b\[K)?")


def plain(output: str) -> str:
    return _EVENT.sub("", output)


def inject(type_name: str, inputs: dict[str, str], files_dir: Path) -> dict[str, str]:
    """What AWX does with a credential of this type: write its file injectors, return its env."""
    ctype = next(t for t in AWX["awx_credential_types"] if t["name"] == type_name)
    required = set(ctype["inputs"].get("required", []))
    assert required <= set(inputs), f"{type_name}: inputs {sorted(required - set(inputs))} missing"
    filenames: dict[str, str] = {}
    for key, template in (ctype["injectors"].get("file") or {}).items():
        name = key.removeprefix("template.") if key != "template" else "file"
        path = files_dir / f"{type_name.replace(' ', '_').lower()}_{name}"
        path.write_text(_render(template, inputs))
        path.chmod(0o600)
        filenames[name] = str(path)
    # one unnamed file: tower.filename is its path; named files: tower.filename.<name>
    context = {**inputs, "tower": {"filename": filenames.get("file", "") if "file" in filenames else filenames}}
    return {k: _render(v, context) for k, v in (ctype["injectors"].get("env") or {}).items()}


@pytest.fixture(scope="module")
def job_credentials(creds: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    """The injections of every credential type, with the local environment's values."""
    files = tmp_path_factory.mktemp("awx-credentials")
    inputs = {
        "Thinkus Kubeconfig": {"kubeconfig": (LOCAL / "kubeconfig").read_text()},
        "Thinkus Container Registry": {
            "host": "127.0.0.1:5000",
            "username": creds["registry_username"],
            "password": creds["registry_password"],
        },
        "Thinkus Vercel": {"token": creds["vercel_token"], "team_id": ""},
        "Thinkus Backup Store": {
            "endpoint": S3_ENDPOINT,
            "access_key": creds["s3_access_key"],
            "secret_key": creds["s3_secret_key"],
        },
    }
    assert set(inputs) == {t["name"] for t in AWX["awx_credential_types"]}, "a credential type has no local values"
    injected: dict[str, dict[str, str]] = {name: inject(name, values, files) for name, values in inputs.items()}
    return {"by_type": injected, "files": files}  # type: ignore[return-value]


def template(name: str) -> dict[str, Any]:
    return next(t for t in AWX["awx_job_templates"] if t["name"] == name)


def credential_type(credential: str) -> str:
    return next(c["credential_type"] for c in AWX["awx_credentials"] if c["name"] == credential)


def job_env(jt: dict[str, Any], job_credentials: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for cred in jt["credentials"]:
        kind = credential_type(cred)
        if kind != "Vault":  # the local vault's password is in the project (ansible.cfg)
            env |= job_credentials["by_type"][kind]
    return env


def navigator(
    jt: dict[str, Any],
    image: str,
    job_credentials: dict[str, Any],
    tmp_path: Path,
    extra_vars: dict[str, Any] | None = None,
) -> subprocess.CompletedProcess[str]:
    """ansible-navigator run of a job template's playbook, with its credentials' injections only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("K8S_AUTH_", "THINKUS_", "AWS_", "VERCEL_"))}
    injected = job_env(jt, job_credentials)
    env |= injected
    cmd = [
        NAVIGATOR,
        "run",
        jt["playbook"],
        "-i",
        "inventories/local",
        "--eei",
        image,
        "--pp",
        "never",
        "--mode",
        "stdout",
        "--pae",
        "false",
        "--eev",
        f"{job_credentials['files']}:{job_credentials['files']}",
        "--co=--network=host",
        "--co=--volume=/var/run/docker.sock:/var/run/docker.sock",
    ]
    for name in injected:
        cmd += ["--penv", name]
    if extra_vars is not None:
        # extra vars as AWX passes them: a file, never the command line
        path = job_credentials["files"] / f"extra-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps(extra_vars))
        cmd += ["-e", f"@{path}"]
    res = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=1800)
    return subprocess.CompletedProcess(res.args, res.returncode, plain(res.stdout), plain(res.stderr))


def recap(output: str) -> dict[str, int]:
    line = next(ln for ln in output.splitlines() if ln.startswith("localhost") and "ok=" in ln)
    return {k: int(v) for k, v in (part.split("=") for part in line.split()[2:])}


def assert_no_secret(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, "a credential's value appears in the job's output"


def test_ee_contains_what_the_roles_need(ee_image: str) -> None:
    script = (
        "import importlib.metadata as m, json;"
        "print(json.dumps({p: m.version(p) for p in ['ansible-core','ansible-runner','kubernetes',"
        "'docker','boto3','psycopg2-binary','redis','cryptography']}))"
    )
    res = subprocess.run(
        ["docker", "run", "--rm", ee_image, "python3", "-c", script], capture_output=True, text=True, check=True
    )
    installed = json.loads(res.stdout)
    pins = ee.read_pins(REPO_ROOT / "requirements.txt")
    assert installed == {name: pins[name] for name in installed}, (
        "the EE's Python packages differ from requirements.txt"
    )
    res = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            ee_image,
            "sh",
            "-c",
            "pg_dump --version && redis-cli --version && ansible-galaxy collection list thinkus.ops",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "pg_dump (PostgreSQL) 15" in res.stdout
    assert "/usr/share/ansible/collections" in res.stdout
    # the collections: exactly those of execution-environment/requirements.yml, at their pinned versions
    res = subprocess.run(
        ["docker", "run", "--rm", ee_image, "ansible-galaxy", "collection", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    found = {
        name: info["version"]
        for path in json.loads(res.stdout).values()
        for name, info in path.items()
        if not name.startswith("ansible._")  # ansible-core's own internal collection
    }
    pinned = yaml.safe_load((REPO_ROOT / "execution-environment" / "requirements.yml").read_text())["collections"]
    assert found == {"thinkus.ops": ee.galaxy_version()} | {c["name"]: c["version"] for c in pinned}


def test_deploy_job_in_the_ee_agrees_with_a_plain_run(
    ee_image: str, job_credentials: dict[str, Any], creds: dict[str, str], tmp_path: Path
) -> None:
    """After a plain `ansible-playbook` deploy converged, the same job in the EE changes nothing."""
    jt = template(f"thinkus - Deploy {ENVIRONMENT}")
    converged = run_playbook(jt["playbook"], inventory=str(REPO_ROOT / "inventories" / "local"))
    assert converged.rc == 0, converged.output[-3000:]
    t0 = time.monotonic()
    res = navigator(jt, ee_image, job_credentials, tmp_path)
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    counts = recap(res.stdout)
    assert counts["failed"] == 0 and counts["changed"] == 0, res.stdout[-3000:]
    assert_no_secret(res.stdout + res.stderr, [creds["registry_password"], creds["vercel_token"]])
    print(f"navigator deploy (no-op) in the EE: {elapsed:.1f}s")


@pytest.fixture
def backup_prefix(creds: dict[str, str]) -> Any:
    prefix = f"test-ee/{uuid.uuid4().hex[:8]}"
    yield prefix
    s3 = boto3.client(
        "s3",
        endpoint_url=S3_ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id=creds["s3_access_key"],
        aws_secret_access_key=creds["s3_secret_key"],
    )
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=obj["Key"])


def test_scheduled_backups_and_the_drill_run_in_the_ee(
    ee_image: str, job_credentials: dict[str, Any], creds: dict[str, str], backup_prefix: str, tmp_path: Path
) -> None:
    backup_jt = template(f"thinkus - Backup {ENVIRONMENT}")
    drill_jt = template(f"thinkus - Restore drill {ENVIRONMENT}")
    schedules = [s for s in AWX["awx_schedules"] if s["unified_job_template"].startswith("thinkus - Backup ")]
    assert schedules, "no backup schedules in playbooks/vars/awx.yml"
    s3 = boto3.client(
        "s3",
        endpoint_url=S3_ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id=creds["s3_access_key"],
        aws_secret_access_key=creds["s3_secret_key"],
    )
    secrets = [creds["s3_secret_key"], creds["postgres_password"], creds["redis_password"]]
    kinds_seen: set[str] = set()
    for schedule in schedules:
        extra = {**schedule.get("extra_data", {}), "backup_s3_prefix": backup_prefix}
        res = navigator(backup_jt, ee_image, job_credentials, tmp_path, extra_vars=extra)
        assert res.returncode == 0, f"{schedule['name']}:\n" + (res.stdout + res.stderr)[-4000:]
        assert_no_secret(res.stdout + res.stderr, secrets)
        kinds_seen |= set(schedule["extra_data"]["backup_kinds"])
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=backup_prefix + "/")
        for o in page.get("Contents", [])
    ]
    for kind in kinds_seen:
        assert any(f"/{kind}/" in k for k in keys), f"no {kind} backup under {backup_prefix}: {keys}"
    res = navigator(
        drill_jt,
        ee_image,
        job_credentials,
        tmp_path,
        extra_vars={"backup_s3_prefix": backup_prefix, "backup_drill_kinds": sorted(kinds_seen)},
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert_no_secret(res.stdout + res.stderr, secrets)


def test_a_wrong_kubeconfig_credential_fails_the_job_in_preflight(
    ee_image: str, job_credentials: dict[str, Any], tmp_path: Path
) -> None:
    """The job reads the injected kubeconfig, not the checkout's: a wrong one stops it before any change."""
    jt = template(f"thinkus - Deploy {ENVIRONMENT}")
    data = yaml.safe_load((LOCAL / "kubeconfig").read_text())
    for cluster in data["clusters"]:
        cluster["cluster"]["server"] = "https://127.0.0.1:1"
    files = job_credentials["files"]
    wrong = dict(job_credentials)
    wrong["by_type"] = dict(job_credentials["by_type"])
    wrong["by_type"]["Thinkus Kubeconfig"] = inject("Thinkus Kubeconfig", {"kubeconfig": yaml.safe_dump(data)}, files)
    res = navigator(jt, ee_image, wrong, tmp_path)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    flat = " ".join(out.split())
    # the injected file, and the server only it names
    assert f"The Kubernetes API server does not answer (kubeconfig {files / 'thinkus_kubeconfig_kubeconfig'}" in flat
    assert "cannot reach the Kubernetes API server https://127.0.0.1:1" in flat, out[-3000:]
    assert "changed=0" in out, out[-3000:]
    # the good one again, for the tests after this one
    inject("Thinkus Kubeconfig", {"kubeconfig": (LOCAL / "kubeconfig").read_text()}, files)


def test_a_job_without_its_credentials_fails_at_its_start_naming_them(tmp_path: Path) -> None:
    """prod's backup job with nothing injected: each missing credential named with its AWX type."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("K8S_AUTH_", "THINKUS_", "AWS_"))}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config to fall back to
    res = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "ansible-playbook"), "playbooks/backup.yml", "-i", "inventories/prod"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0
    out = " ".join(out.split())  # the callback wraps long messages
    assert "set AWS_SECRET_ACCESS_KEY in the job's environment" in out
    assert 'in AWX: a credential of the type "Thinkus Backup Store"' in out
    assert "set K8S_AUTH_KUBECONFIG in the job's environment" in out
    assert 'in AWX: a credential of the type "Thinkus Kubeconfig"' in out
    assert "Take the backups and prune" not in out, "the job went on after its preflight failed"


def test_a_job_without_a_python_package_it_imports_fails_at_its_start_naming_it(tmp_path: Path) -> None:
    """A Python without boto3 and psycopg2 (a bare virtualenv): the backup job names the packages."""
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "bare")], check=True)
    res = subprocess.run(
        [
            str(REPO_ROOT / ".venv" / "bin" / "ansible-playbook"),
            "playbooks/backup.yml",
            "-i",
            "inventories/local",
            "-e",
            f"ansible_python_interpreter={tmp_path / 'bare' / 'bin' / 'python'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "lacks boto3, psycopg2-binary, redis, cryptography" in " ".join(out.split()), out[-3000:]
    assert "Take the backups and prune" not in out
