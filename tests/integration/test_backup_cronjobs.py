# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The backup CronJobs, run for real: the execution environment image on the real node.

The backup role configures its schedules in cluster mode (the mode dev, staging and prod
use) in the platform's namespace, with the EE image that `make ee` pushed to the local
registry. A Job is created from each CronJob with ``kubectl create job --from=cronjob/...``,
so it runs exactly the command line, environment, volumes and security context the schedule
holds. The node pulls the image through the registry pull Secret; the pods reach PostgreSQL,
Redis and the S3 store at the node address, as a cluster reaches managed services. Each
backup Job must complete and write its backup; the drill Job then restores the latest ones
into scratch targets and verifies them (restore_verify), and must complete too.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from kubernetes import client, config

from ansible_collections.thinkus.ops.tests.support.ansible import REPO_ROOT, run_playbook
from tools import ee
from tools.localenv import _secrets, k8s, node, registry
from tools.localenv._proc import Context

pytestmark = [pytest.mark.localenv, pytest.mark.slow]

INVENTORY = str(REPO_ROOT / "inventories" / "local")
KUBECONFIG = REPO_ROOT / ".local" / "kubeconfig"
LOCAL_DEPLOY = yaml.safe_load((REPO_ROOT / "inventories/local/group_vars/all/k8s_deploy.yml").read_text())
NAMESPACE = "thinkus"
BUCKET = "thinkus-backups"
KINDS = ("full", "hourly", "redis")


def _kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = Context().cache_dir / "bin" / f"kubernetes-{k8s.k8s_version()}" / "kubectl"
    assert binary.exists(), f"{binary} is missing: make local-up builds it"
    return subprocess.run(
        [str(binary), "--kubeconfig", str(KUBECONFIG), "-n", NAMESPACE, *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


@pytest.fixture(scope="module")
def api() -> client.ApiClient:
    api_client = config.new_client_from_config(config_file=str(KUBECONFIG))
    client.VersionApi(api_client).get_code(_request_timeout=10)
    return api_client


@pytest.fixture(scope="module")
def ee_pushed() -> str:
    """The EE in the local registry; `make test` builds it in its own stage, a direct run builds it here."""
    ref = f"{registry.HOST}:{registry.PORT}/{ee.PUSH_REPOSITORY}:{ee.galaxy_version()}"
    info = REPO_ROOT / ".local" / "artifacts" / "ee.json"
    if not info.exists() or json.loads(info.read_text()).get("pushed") != ref:
        ee.build(push=True)
    return ref


@pytest.fixture(scope="module")
def platform() -> None:
    """The namespace, its registry pull Secret and the real node, as `make demo` leaves them."""
    result = run_playbook("playbooks/deploy.yml", inventory=INVENTORY, tags=["backend"])
    assert result.rc == 0, result.output[-5000:]


@pytest.fixture
def schedules(api: client.ApiClient, ee_pushed: str, platform: None, tmp_path: Path) -> Iterator[dict[str, Any]]:
    name = f"thinkus-bk-{uuid.uuid4().hex[:6]}"
    prefix = f"test-cronjob/{name}"
    creds = _secrets.load(Context())
    extra = {
        "backup_mode": "cluster",
        "backup_name": name,
        "backup_namespace": NAMESPACE,
        "backup_image": ee_pushed,
        "backup_job_image_pull_secrets": [LOCAL_DEPLOY["k8s_deploy_registry_pull_secret"]],
        "backup_job_node_selector": LOCAL_DEPLOY["k8s_deploy_node_selector"],
        "backup_job_tolerations": LOCAL_DEPLOY["k8s_deploy_tolerations"],
        "backup_job_resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "768Mi"}},
        # managed services as the cluster sees them: at the node address
        "backup_postgres_host": node.NODE_IP,
        "backup_redis_host": node.NODE_IP,
        "backup_s3_endpoint_url": f"http://{node.NODE_IP}:{node.HOST_SERVICE_PORTS['s3']}",
        "backup_s3_prefix": prefix,
        "backup_drill_kinds": ["full", "redis"],
        "backup_configure_schedules": True,
        "backup_install_tools": False,
        "backup_run_kinds": [],
    }
    playbook = tmp_path / "configure.yml"
    playbook.write_text(
        "---\n- name: Configure the backup schedules\n  hosts: thinkus\n  gather_facts: false\n"
        "  roles:\n    - role: thinkus.ops.backup\n"
    )
    result = run_playbook(playbook, inventory=INVENTORY, extra_vars=extra)
    assert result.rc == 0, result.output[-5000:]
    try:
        yield {"name": name, "prefix": prefix, "creds": creds}
    finally:
        _kubectl(
            "delete",
            "cronjob,job,configmap,secret",
            "-l",
            f"app.kubernetes.io/instance={name}",
            "--wait=false",
            check=False,
        )
        s3 = _s3(creds)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=BUCKET, Key=obj["Key"])


def _s3(creds: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{node.HOST_SERVICE_PORTS['s3']}",
        region_name="us-east-1",
        aws_access_key_id=creds["s3_access_key"],
        aws_secret_access_key=creds["s3_secret_key"],
    )


def run_job_from_cronjob(api: client.ApiClient, cronjob: str, timeout: float = 900) -> tuple[client.V1Job, str]:
    job_name = f"{cronjob}-manual"
    _kubectl("create", "job", f"--from=cronjob/{cronjob}", job_name)
    batch = client.BatchV1Api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = batch.read_namespaced_job(job_name, NAMESPACE)
        if (job.status.succeeded or 0) >= 1 or (job.status.failed or 0) >= 1:
            break
        time.sleep(3)
    else:
        pods = _kubectl("get", "pods", "-l", f"job-name={job_name}", "-o", "wide", check=False).stdout
        pytest.fail(f"Job {job_name} did not finish in {timeout:.0f}s:\n{pods}")
    logs = _kubectl("logs", f"job/{job_name}", "--tail=80", check=False).stdout
    return job, logs


def test_a_job_from_each_cronjob_completes_and_the_drill_verifies_its_backups(
    api: client.ApiClient, schedules: dict[str, Any]
) -> None:
    batch = client.BatchV1Api(api)
    name = schedules["name"]
    timings = {}
    for kind in (*KINDS, "drill"):
        cronjob = batch.read_namespaced_cron_job(f"{name}-{kind}", NAMESPACE)
        t0 = time.monotonic()
        job, logs = run_job_from_cronjob(api, f"{name}-{kind}")
        timings[kind] = round(time.monotonic() - t0, 1)
        assert (job.status.succeeded or 0) == 1, f"{kind} Job failed:\n{logs}"
        ran = job.spec.template.spec.containers[0]
        scheduled = cronjob.spec.job_template.spec.template.spec.containers[0]
        assert ran.command == scheduled.command and ran.image == scheduled.image
        pods = (
            client.CoreV1Api(api).list_namespaced_pod(NAMESPACE, label_selector=f"job-name={job.metadata.name}").items
        )
        # on the real node, admitted under the namespace's enforced Pod Security level (restricted)
        assert pods and all(p.spec.node_name == node.NODE_NAME for p in pods), "the Job did not run on the real node"
        assert "failed=0" in logs, logs
        for secret in (schedules["creds"]["postgres_password"], schedules["creds"]["s3_secret_key"]):
            assert secret not in logs
    keys = [
        o["Key"]
        for page in _s3(schedules["creds"])
        .get_paginator("list_objects_v2")
        .paginate(Bucket=BUCKET, Prefix=schedules["prefix"] + "/")
        for o in page.get("Contents", [])
    ]
    for kind in KINDS:
        assert any(f"/{kind}/" in k for k in keys), (
            f"the {kind} Job wrote no backup under {schedules['prefix']}: {keys}"
        )
    print(f"Jobs from the CronJobs (seconds, image pull included on the first): {timings}")
