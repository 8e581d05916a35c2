# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Faults in the middle of a run: the run, or something it depends on, dies; every run must end safe.

Each case injects one fault, then asserts the end state (not only the exit code) and records
one line ``fault: <case> | left behind: ... | usable again after N s | person needed: no``
(also gathered in a "faults" section at the end of the pytest output).

The deploy cases run k8s_deploy through inventories/local into a namespace of their own, on
the kwok nodes (like test_k8s_deploy.py), and kill the whole ansible-playbook process group
with SIGKILL, as ``kill -9 -<pgid>`` would: the deploy lock must lapse within its 60 s, the
next deploy must take it over and leave every Deployment whole (not paused, one active
ReplicaSet, on the release it says), and no Lease may be left behind. Nothing skips.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from ansible_collections.thinkus.ops.tests.support.ansible import (
    REPO_ROOT,
    PlaybookResult,
    RunningPlaybook,
    run_playbook,
    start_playbook,
)
from ansible_collections.thinkus.ops.tests.support.fault_proxy import FaultProxy
from ansible_collections.thinkus.ops.tests.support.vercel_api import VercelAPIServer
from tools.localenv import _secrets
from tools.localenv._proc import Context

pytestmark = [pytest.mark.localenv, pytest.mark.slow, pytest.mark.faults]

PLAYBOOK = "tests/integration/targets/k8s_deploy/deploy.yml"
INVENTORY = str(REPO_ROOT / "inventories" / "local")
KUBECONFIG = REPO_ROOT / ".local" / "kubeconfig"
SMALL = {
    "go-orchestrator": {"replicas": 1},
    "py-ai-engine": {"replicas": 1, "hpa": {"min_replicas": 1, "max_replicas": 2}},
    "worker": {"replicas": 1, "hpa": {"min_replicas": 1, "max_replicas": 2}},
}
NEVER_READY = {"thinkus.test/never-ready": "true"}
LOCK_TASK = "thinkus.ops.k8s_deploy : Take the deploy lock"
BANNER = "TASK [thinkus.ops.k8s_deploy : {}]"
APPLY_TASK = BANNER.format("Apply the ConfigMap, Deployments, Services, autoscalers and disruption budgets")
WAIT_TASK = BANNER.format("Wait for every Deployment to roll out")
LEASE_DURATION = 60  # the role's default, which these cases prove
TAKEOVER_BOUND = LEASE_DURATION + 10  # a killed deploy blocks the next one for about a minute


@pytest.fixture(scope="module")
def api() -> client.ApiClient:
    api_client = config.new_client_from_config(config_file=str(KUBECONFIG))
    client.VersionApi(api_client).get_code(_request_timeout=10)  # fail, not skip, when down
    return api_client


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    name = f"thinkus-test-faults-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        try:
            client.CoreV1Api(api).delete_namespace(name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise


def deploy_vars(namespace: str, **extra: Any) -> dict[str, Any]:
    extra_vars: dict[str, Any] = {
        "k8s_deploy_namespace": namespace,
        "k8s_deploy_instance": namespace,
        "k8s_deploy_service_overrides": copy.deepcopy(SMALL),
        "k8s_deploy_rollout_timeout": 60,
        "k8s_deploy_image_tag": "v1",
        "thinkus_local_dir": str(REPO_ROOT / ".local"),
        "k8s_deploy_node_selector": {"type": "kwok"},
        "k8s_deploy_tolerations": [],
    }
    extra_vars.update(extra)
    return extra_vars


def deploy(namespace: str, json_output: bool = False, **extra: Any) -> PlaybookResult:
    return run_playbook(
        PLAYBOOK, extra_vars=deploy_vars(namespace, **extra), inventory=INVENTORY, json_output=json_output
    )


def start_deploy(namespace: str, **extra: Any) -> RunningPlaybook:
    return start_playbook(PLAYBOOK, extra_vars=deploy_vars(namespace, **extra), inventory=INVENTORY)


def deployments(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    return {d.metadata.name: d for d in client.AppsV1Api(api).list_namespaced_deployment(namespace).items}


def owned_replicasets(api: client.ApiClient, deployment: Any) -> list[Any]:
    items = client.AppsV1Api(api).list_namespaced_replica_set(deployment.metadata.namespace).items
    return [rs for rs in items if deployment.metadata.uid in [o.uid for o in rs.metadata.owner_references or []]]


def active_replicasets(api: client.ApiClient, deployment: Any) -> list[str]:
    return sorted(rs.metadata.name for rs in owned_replicasets(api, deployment) if (rs.spec.replicas or 0) > 0)


def current_replicaset(api: client.ApiClient, deployment: Any) -> str:
    revision = deployment.metadata.annotations["deployment.kubernetes.io/revision"]
    for rs in owned_replicasets(api, deployment):
        if (rs.metadata.annotations or {}).get("deployment.kubernetes.io/revision") == revision:
            return rs.metadata.name
    raise AssertionError(f"no ReplicaSet for revision {revision} of {deployment.metadata.name}")


def leases(api: client.ApiClient, namespace: str) -> list[Any]:
    return client.CoordinationV1Api(api).list_namespaced_lease(namespace).items


def describe(api: client.ApiClient, namespace: str) -> str:
    """What a fault left behind: per Deployment its active ReplicaSets, and the Lease."""
    parts = []
    for name, dep in sorted(deployments(api, namespace).items()):
        never = "never-ready" if NEVER_READY.keys() & (dep.spec.template.metadata.labels or {}).keys() else "ready"
        paused = ", paused" if dep.spec.paused else ""
        parts.append(f"{name} {len(active_replicasets(api, dep))} active RS ({never} template{paused})")
    held = [lease.spec.holder_identity for lease in leases(api, namespace)]
    parts.append(f"lease held by a dead run ({held[0]})" if held else "no lease")
    return "; ".join(parts)


def assert_settled(api: client.ApiClient, namespace: str, pod_labels: dict[str, str]) -> None:
    """Every Deployment whole: not paused, rolled out, exactly one active ReplicaSet (its current one),
    on the release asked for; and the deploy lock given back."""
    deps = deployments(api, namespace)
    assert sorted(deps) == ["go-orchestrator", "py-ai-engine", "worker"]
    for name, dep in deps.items():
        assert not dep.spec.paused, name
        assert dep.status.observed_generation >= dep.metadata.generation, name
        assert dep.status.available_replicas == dep.spec.replicas, name
        assert dep.status.updated_replicas == dep.spec.replicas, name
        assert active_replicasets(api, dep) == [current_replicaset(api, dep)], name
        labels = dep.spec.template.metadata.labels or {}
        for key, value in pod_labels.items():
            assert labels.get(key) == value, (name, labels)
        assert "thinkus.test/never-ready" not in labels or pod_labels.get("thinkus.test/never-ready"), name
    assert leases(api, namespace) == []


def kill_and_check_the_lock(api: client.ApiClient, namespace: str, run: RunningPlaybook) -> tuple[float, str, str]:
    """kill -9 the run's process group; nothing of it may survive to renew the lock. Returns
    (monotonic time of the kill, the dead holder, what was left behind)."""
    held = leases(api, namespace)
    assert len(held) == 1, run.output
    holder = held[0].spec.holder_identity
    run.kill()
    killed_at = time.monotonic()
    assert not run.group_alive(), "a process of the killed deploy survived"
    # Ansible's workers run in sessions of their own: the module each runs must notice that its
    # run is dead and end (taking its heartbeat with it) on its own, within a few seconds.
    # A worker whose module already finished can stay blocked writing its result to the dead
    # run's queue (a pipe it holds both ends of): harmless to the cluster (its module is done and
    # renews nothing, as the check below proves), but a process left behind, so it is reported.
    hung = []
    try:
        wait_until(lambda: not run.survivors(), timeout=20, what="the killed run's workers to end")
    except AssertionError:
        for pid in run.survivors():
            wchan = Path(f"/proc/{pid}/wchan").read_text() if Path(f"/proc/{pid}/wchan").exists() else "?"
            assert wchan == "anon_pipe_write", f"worker {pid} of the killed run is still working ({wchan})"
            hung.append(pid)
    run.close()
    left = describe(api, namespace) + (
        f"; {len(hung)} ansible worker(s) blocked on the dead run's pipe" if hung else ""
    )
    # Nothing renews the lock any more: its renewTime stays where the dead run left it.
    renewed = leases(api, namespace)[0].spec.renew_time
    time.sleep(LEASE_DURATION / 4 + 2)
    after = leases(api, namespace)
    assert len(after) == 1 and after[0].spec.renew_time == renewed, "the lock was renewed after its holder died"
    for pid in hung:  # the test's own clean-up, after proving they did nothing
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return killed_at, holder, left


def rerun_takes_over(namespace: str, holder: str, killed_at: float, **extra: Any) -> tuple[PlaybookResult, float]:
    """The next deploy: it takes over the dead run's lock within about a minute."""
    result = deploy(namespace, json_output=True, **extra)
    usable_after = time.monotonic() - killed_at
    lock = result.task(LOCK_TASK)
    assert lock["took_over"] is True, lock
    assert lock["previous_holder"] == holder, lock
    assert lock["waited"] <= TAKEOVER_BOUND, lock
    return result, usable_after


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_a_deploy_killed_during_apply_is_taken_over_within_a_minute_and_converges(
    api: client.ApiClient, namespace: str, fault_report: Callable[..., None]
) -> None:
    assert deploy(namespace).rc == 0
    release = {"thinkus.test/release": "v2"}  # one changed pod label, as in the issue
    run = start_deploy(namespace, k8s_deploy_pod_labels=release)
    try:
        run.wait_for(APPLY_TASK, timeout=120)
        time.sleep(0.5)  # the apply module is running
    finally:
        killed_at, holder, left = kill_and_check_the_lock(api, namespace, run)

    result, usable_after = rerun_takes_over(namespace, holder, killed_at, k8s_deploy_pod_labels=release)
    assert result.rc == 0, result.output
    assert_settled(api, namespace, release)
    assert usable_after <= TAKEOVER_BOUND + 60
    fault_report("kill -9 during apply", left, usable_after)


def test_a_deploy_killed_during_the_rollout_wait_renewed_its_lock_and_the_next_one_rolls_back(
    api: client.ApiClient, namespace: str, fault_report: Callable[..., None]
) -> None:
    assert deploy(namespace).rc == 0
    before = {name: current_replicaset(api, dep) for name, dep in deployments(api, namespace).items()}
    run = start_deploy(namespace, k8s_deploy_image_tag="v2", k8s_deploy_pod_labels=NEVER_READY)
    try:
        run.wait_for(WAIT_TASK, timeout=120)
        time.sleep(LEASE_DURATION / 4 + 8)  # long enough for the heartbeat to renew at least once
        lease = leases(api, namespace)[0]
        assert (lease.spec.renew_time - lease.spec.acquire_time) >= datetime.timedelta(seconds=LEASE_DURATION / 4)
    finally:
        killed_at, holder, left = kill_and_check_the_lock(api, namespace, run)
    for dep in deployments(api, namespace).values():  # half-updated: the old and the new ReplicaSet
        assert len(active_replicasets(api, dep)) == 2, left

    # The same broken release again: it finds the unfinished rollouts and, failing, puts them back.
    result, usable_after = rerun_takes_over(
        namespace,
        holder,
        killed_at,
        k8s_deploy_image_tag="v2",
        k8s_deploy_pod_labels=NEVER_READY,
        k8s_deploy_rollout_timeout=8,
    )
    assert result.rc != 0
    assert "rolled back to revision" in result.output
    assert_settled(api, namespace, {})
    now = deployments(api, namespace)
    for name, dep in now.items():
        assert dep.spec.template.spec.containers[0].image.endswith(":v1"), name
        assert current_replicaset(api, dep) == before[name], name  # the v1 ReplicaSet, scaled up again
    fault_report("kill -9 during the rollout wait", left, usable_after)


def test_a_deploy_killed_during_its_rollback_leaves_nothing_the_next_one_cannot_settle(
    api: client.ApiClient, namespace: str, fault_report: Callable[..., None]
) -> None:
    assert deploy(namespace).rc == 0
    before = {name: current_replicaset(api, dep) for name, dep in deployments(api, namespace).items()}
    run = start_deploy(
        namespace, k8s_deploy_image_tag="v2", k8s_deploy_pod_labels=NEVER_READY, k8s_deploy_rollout_timeout=8
    )

    def rolling_back() -> bool:
        return (
            any(
                "thinkus.test/never-ready" not in (d.spec.template.metadata.labels or {})
                for d in deployments(api, namespace).values()
            )
            and run.output.count(WAIT_TASK) == 1
        )

    try:
        run.wait_for(WAIT_TASK, timeout=120)
        wait_until(rolling_back, timeout=60, what="the rollback's first change")
    finally:
        killed_at, holder, left = kill_and_check_the_lock(api, namespace, run)

    result, usable_after = rerun_takes_over(
        namespace,
        holder,
        killed_at,
        k8s_deploy_image_tag="v2",
        k8s_deploy_pod_labels=NEVER_READY,
        k8s_deploy_rollout_timeout=8,
    )
    assert result.rc != 0
    assert "rolled back to revision" in result.output
    assert_settled(api, namespace, {})
    for name, dep in deployments(api, namespace).items():
        assert dep.spec.template.spec.containers[0].image.endswith(":v1"), name
        assert current_replicaset(api, dep) == before[name], name
    fault_report("kill -9 during a rollback", left, usable_after)


# ------------------------------------------------------------------ Vercel: 5xx in the middle of the uploads

VERCEL_PLAYBOOK = """---
- name: Deploy a build to the Vercel stand-in
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Deploy the build
      thinkus.ops.vercel_deploy:
        api_url: "{{ vercel_api_url }}"
        token: "{{ vercel_test_token }}"
        team_id: "{{ vercel_test_team_id }}"
        project: web
        path: "{{ vercel_build }}"
        commit_sha: 0123456789abcdef0123456789abcdef01234567
        target: production
        retries: 2
        retry_max_delay: 0.2
        upload_concurrency: 1
        poll_interval: 0.05
        wait_timeout: 30
      register: __vercel
"""


def test_vercel_answering_5xx_in_the_middle_of_the_uploads_and_a_rerun_uploads_only_what_is_missing(
    tmp_path: Path, fault_report: Callable[..., None]
) -> None:
    token, team = "vtok_" + uuid.uuid4().hex, "team_thinkusFaults01"
    build = tmp_path / "build"
    build.mkdir()
    for index in range(10):
        (build / f"chunk-{index}.js").write_text(f"console.log({index}, '{uuid.uuid4().hex}');\n")
    playbook = tmp_path / "vercel.yml"
    playbook.write_text(VERCEL_PLAYBOOK)
    extra = {"vercel_test_token": token, "vercel_test_team_id": team, "vercel_build": str(build)}
    env = {"VERCEL_TOKEN": "", "VERCEL_TEAM_ID": ""}
    with VercelAPIServer(token=token, team_id=team) as api:
        api.add_project("web")
        extra["vercel_api_url"] = api.url
        # Four uploads go through, then every upload answers 500 (more than the retries).
        api.inject_fault(status=500, times=1000, method="POST", path=r"^/v2/files$", skip=4)
        failed = run_playbook(playbook, extra_vars=extra, env=env, json_output=True)
        assert failed.rc != 0
        assert "500" in (failed.failed_tasks()[0]["result"]["msg"]), failed.output
        assert token not in failed.output
        held = api.snapshot("web")
        assert len(api.state.blobs) == 4  # what got through before the fault, nothing half-stored
        assert held["deployments"] == []  # no deployment of a build with missing files
        left = f"{len(api.state.blobs)} of 10 files uploaded, no deployment"

        api.clear()  # Vercel answers again
        started = time.monotonic()
        again = run_playbook(playbook, extra_vars=extra, env=env, json_output=True)
        usable_after = time.monotonic() - started
        assert again.rc == 0, again.output
        result = again.task("Deploy the build")
        assert result["files_uploaded"] == 6, result  # only what was missing
        assert len(api.requests_for("POST", r"^/v2/files$")) == 6
        assert len(api.state.blobs) == 10
        ready = [d for d in api.snapshot("web")["deployments"] if d["readyState"] == "READY"]
        assert len(ready) == 1
    fault_report("Vercel 5xx in the middle of the uploads", left, usable_after)


# ------------------------------------------------------------------ S3: 5xx, or down, in the middle of a backup

BACKUP_PLAYBOOK = """---
- name: Back up PostgreSQL, then prune
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Take a backup
      thinkus.ops.backup_run:
        kind: full
        bucket: "{{ backup_s3_bucket }}"
        prefix: "{{ faults_prefix }}"
        endpoint_url: "{{ faults_s3_endpoint }}"
        access_key: "{{ backup_s3_access_key }}"
        secret_key: "{{ backup_s3_secret_key }}"
        postgres_host: "{{ backup_postgres_host }}"
        postgres_port: "{{ backup_postgres_port }}"
        postgres_user: "{{ backup_postgres_user }}"
        postgres_password: "{{ backup_postgres_password }}"
        postgres_database: "{{ faults_database }}"
      when: not (faults_prune_only | default(false))

    - name: Prune backups
      thinkus.ops.backup_prune:
        bucket: "{{ backup_s3_bucket }}"
        prefix: "{{ faults_prefix }}"
        endpoint_url: "{{ backup_s3_endpoint_url }}"
        access_key: "{{ backup_s3_access_key }}"
        secret_key: "{{ backup_s3_secret_key }}"
        retention_days: {full: 0.00001, hourly: 0.00001, redis: 0.00001}
        incomplete_grace_hours: 0
      register: __prune
      when: faults_prune_only | default(false)
"""


@pytest.fixture
def scratch_database() -> Iterator[tuple[str, dict[str, str]]]:
    """A small database in the shared PostgreSQL (created and dropped here; the server is never touched)."""
    creds = _secrets.load(Context())
    name = f"thinkus_faults_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(
        dbname="thinkus", user=creds["postgres_user"], password=creds["postgres_password"], host="127.0.0.1", port=15432
    )
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn = psycopg2.connect(
        dbname=name, user=creds["postgres_user"], password=creds["postgres_password"], host="127.0.0.1", port=15432
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE orders (id serial PRIMARY KEY, customer text NOT NULL)")
        cur.execute("INSERT INTO orders (customer) SELECT 'c-' || i FROM generate_series(1, 500) i")
    conn.close()
    try:
        yield name, creds
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def s3_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return sorted(
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for o in page.get("Contents", [])
    )


def assert_every_manifest_has_its_objects(s3: Any, bucket: str, prefix: str) -> list[str]:
    """Returns the complete backups' folders, newest last."""
    complete = []
    for key in s3_keys(s3, bucket, prefix):
        if key.endswith("/manifest.json"):
            manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            for obj in manifest["objects"]:
                head = s3.head_object(Bucket=bucket, Key=obj["key"])
                assert head["ContentLength"] == obj["size"], obj["key"]
            complete.append(key.rsplit("/", 1)[0] + "/")
    return sorted(complete)


@pytest.mark.parametrize("mode", ["5xx", "down"])
def test_s3_failing_in_the_middle_of_a_backup_upload_leaves_no_manifest_without_its_objects(
    scratch_database: tuple[str, dict[str, str]], mode: str, tmp_path: Path, fault_report: Callable[..., None]
) -> None:
    database, creds = scratch_database
    prefix = f"test-faults/{uuid.uuid4().hex[:8]}"
    bucket = "thinkus-backups"
    s3 = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:19000",
        region_name="us-east-1",
        aws_access_key_id=creds["s3_access_key"],
        aws_secret_access_key=creds["s3_secret_key"],
    )
    playbook = tmp_path / "backup.yml"
    playbook.write_text(BACKUP_PLAYBOOK)
    try:
        with FaultProxy("127.0.0.1", 19000) as proxy:
            extra = {"faults_prefix": prefix, "faults_database": database, "faults_s3_endpoint": proxy.url}
            good = run_playbook(playbook, extra_vars=extra, inventory=INVENTORY)
            assert good.rc == 0, good.output[-3000:]
            first = assert_every_manifest_has_its_objects(s3, bucket, prefix + "/")
            assert len(first) == 1

            # The dump's upload goes through; from the next PUT on (the manifest) S3 fails.
            if mode == "5xx":
                proxy.fail(500, method="PUT", skip=1)
            else:
                proxy.go_down(skip=1 + 1)  # a HEAD/PUT or two in, everything is refused
            broken = run_playbook(playbook, extra_vars=extra, inventory=INVENTORY)
            assert broken.rc != 0
            assert creds["s3_secret_key"] not in broken.output
            assert creds["postgres_password"] not in broken.output
            assert [r for r in proxy.log if r["status"] in (500, None)], proxy.log
            complete = assert_every_manifest_has_its_objects(s3, bucket, prefix + "/")
            assert complete == first  # no new manifest; the good one is whole
            leftovers = [k for k in s3_keys(s3, bucket, prefix + "/") if not k.startswith(tuple(first))]
            left = f"{len(leftovers)} object(s) without a manifest, the previous backup whole"

            # The pruner, even with a retention of a second, keeps the newest complete backup.
            pruned = run_playbook(playbook, extra_vars={**extra, "faults_prune_only": True}, inventory=INVENTORY)
            assert pruned.rc == 0, pruned.output[-3000:]
            assert assert_every_manifest_has_its_objects(s3, bucket, prefix + "/") == first

            proxy.heal()
            started = time.monotonic()
            again = run_playbook(playbook, extra_vars=extra, inventory=INVENTORY)
            usable_after = time.monotonic() - started
            assert again.rc == 0, again.output[-3000:]
            after = assert_every_manifest_has_its_objects(s3, bucket, prefix + "/")
            assert len(after) == 2 and after[0] == first[0]
    finally:
        for key in s3_keys(s3, bucket, prefix + "/"):
            s3.delete_object(Bucket=bucket, Key=key)
    fault_report(
        f"S3 {'answering 5xx' if mode == '5xx' else 'down'} in the middle of a backup upload", left, usable_after
    )
