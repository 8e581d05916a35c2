"""Each environment's own inventory, end to end, against the local platform.

``-i inventories/<env> -i tests/overlays/local-platform -i tests/overlays/<env>-local``: the
overlays change where the platform is (cluster, registry, bucket, database, Redis, ACME
server, Vercel) and the requests that must fit the local node, nothing else. For dev, staging
and prod in turn, on the one local cluster:

- a run of the inventory while the cluster carries another environment's marker is refused
  in preflight, naming both, with nothing changed;
- the operator hands the cluster over (the marker removed, ``-e thinkus_cluster_claim=true``
  as docs/deploy.md says) and ``deploy.yml`` runs every stage: the build, the backend with the
  environment's replica counts on the real node, the environment's API host with a
  certificate from its own ClusterIssuer name, cluster-mode monitoring, the frontend on the
  environment's Vercel target, smoke and load test through the host's own https URL;
- a second run changes nothing;
- ``backup.yml`` writes to the environment's bucket and prefix from its URLs,
  ``restore_drill.yml`` proves those backups, and ``rollback.yml`` puts the backend back on
  its previous revision.

Afterwards the local environment's marker is given back, so the local inventory claims the
cluster again.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support.ansible import REPO_ROOT, run_playbook
from tests.support.kube import KUBECONFIG, local_api
from tools import ee

LOCAL = REPO_ROOT / ".local"
ENVIRONMENTS = ["dev", "staging", "prod"]
MARKER = ("kube-system", "thinkus-environment")
NAMESPACE = "thinkus"
SERVICES = ("go-orchestrator", "py-ai-engine", "worker")
NODE = "thinkus-node-0"
NODE_ADDRESS = "10.244.0.1"
MONITORING = "monitoring"


def _inventory_vars(env: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted((REPO_ROOT / "inventories" / env / "group_vars" / "all").glob("*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def _role_defaults() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "roles/k8s_deploy/defaults/main.yml").read_text())


def _credentials() -> dict[str, str]:
    return yaml.safe_load((LOCAL / "credentials.yml").read_text())


def _recap(output: str) -> dict[str, int]:
    match = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output)
    assert match, f"no PLAY RECAP in the output:\n{output[-3000:]}"
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups()), strict=True))


@pytest.fixture(scope="module")
def api() -> client.ApiClient:
    return local_api()


@pytest.fixture(scope="module")
def marker_restored(api: client.ApiClient) -> Iterator[None]:
    """Give the cluster back to the local inventory afterwards (it claims a cluster without a marker).

    The environments' cluster-mode monitoring is removed with its namespace when this module
    created it (the local environment monitors from the host), and so are their backup CronJobs
    (prod's hourly one would otherwise start Jobs during the rest of the suite); the backend
    stays deployed.
    """
    core = client.CoreV1Api(api)
    had_monitoring = any(ns.metadata.name == MONITORING for ns in core.list_namespace().items)
    yield
    _drop_marker(api)
    batch = client.BatchV1Api(api)
    for selector in ("app.kubernetes.io/instance=thinkus-backup", "thinkus.test/run=env"):
        batch.delete_collection_namespaced_cron_job(NAMESPACE, label_selector=selector)
        batch.delete_collection_namespaced_job(NAMESPACE, label_selector=selector, propagation_policy="Background")
    if not had_monitoring:
        try:
            core.delete_namespace(MONITORING, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise


def _marker(api: client.ApiClient) -> str | None:
    try:
        cm = client.CoreV1Api(api).read_namespaced_config_map(MARKER[1], MARKER[0])
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return (cm.data or {}).get("environment")


def _drop_marker(api: client.ApiClient) -> None:
    try:
        client.CoreV1Api(api).delete_namespaced_config_map(MARKER[1], MARKER[0])
    except ApiException as exc:
        if exc.status != 404:
            raise


def _state(api: client.ApiClient) -> dict[str, Any]:
    """What a refused run must leave as it was: the Deployments' generations and the marker."""
    apps = client.AppsV1Api(api)
    generations = {}
    for name in SERVICES:
        try:
            generations[name] = apps.read_namespaced_deployment(name, NAMESPACE).metadata.generation
        except ApiException as exc:
            if exc.status != 404:
                raise
            generations[name] = None
    return {"marker": _marker(api), "generations": generations}


@pytest.fixture(scope="module")
def ee_pushed() -> str:
    """The EE the backup CronJobs run, in the local registry: `make test` builds it in its own stage."""
    ref = f"127.0.0.1:5000/{ee.PUSH_REPOSITORY}:{ee.galaxy_version()}"
    info = LOCAL / "artifacts" / "ee.json"
    if not info.exists() or json.loads(info.read_text()).get("pushed") != ref:
        ee.build(push=True)
    return ref


@pytest.fixture(scope="module")
def app_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The application repository checked out next to this one, as CI lays it out."""
    root = tmp_path_factory.mktemp("app-source")
    (root / "services").symlink_to(REPO_ROOT / "tests" / "fixtures" / "services")
    # a copy: the frontend play writes vercel.json into the build output, as it does in CI
    shutil.copytree(REPO_ROOT / "tests" / "fixtures" / "frontend", root / "thinkus-app" / ".vercel" / "output")
    return root


def _kubeconfig_for(env: str, directory: Path) -> Path:
    """The local cluster under the context name the environment's inventory pins (thinkus-<env>)."""
    config = yaml.safe_load(KUBECONFIG.read_text())
    for ctx in config["contexts"]:
        ctx["name"] = f"thinkus-{env}"
    config["current-context"] = f"thinkus-{env}"
    path = directory / f"kubeconfig-{env}"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _env_vars(env: str, app_source: Path, directory: Path) -> dict[str, str]:
    creds = _credentials()
    revision = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD:tests/fixtures"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return {
        "K8S_AUTH_KUBECONFIG": str(_kubeconfig_for(env, directory)),
        "THINKUS_REGISTRY": "127.0.0.1:5000",
        "THINKUS_REGISTRY_USERNAME": creds["registry_username"],
        "THINKUS_REGISTRY_PASSWORD": creds["registry_password"],
        # the store at the node address, reached from here and from the backup CronJobs' pods
        "THINKUS_S3_ENDPOINT": f"http://{NODE_ADDRESS}:19000",
        "AWS_ACCESS_KEY_ID": creds["s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": creds["s3_secret_key"],
        "THINKUS_APP_SOURCE": str(app_source),
        "THINKUS_APP_REVISION": revision,
        "VERCEL_TOKEN": creds["vercel_token"],
    }


def _vercel(path: str) -> Any:
    """A GET of the local Vercel API, with the token CI would have."""
    request = urllib.request.Request(
        "http://127.0.0.1:19300" + path, headers={"Authorization": f"Bearer {_credentials()['vercel_token']}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _bucket(env: str) -> str:
    return _inventory_vars(env)["backup_s3_bucket"]


def _s3() -> Any:
    creds = _credentials()
    return boto3.client(
        "s3",
        endpoint_url=f"http://{NODE_ADDRESS}:19000",
        aws_access_key_id=creds["s3_access_key"],
        aws_secret_access_key=creds["s3_secret_key"],
        region_name="us-east-1",
    )


def _keys(env: str) -> list[str]:
    pages = _s3().get_paginator("list_objects_v2").paginate(Bucket=_bucket(env), Prefix=f"{env}/")
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _has_backup(env: str, kind: str, keys: set[str]) -> bool:
    """A complete backup of ``kind`` among ``keys``: its manifest, which is written last."""
    return any(k.startswith(f"{env}/{kind}/") and k.endswith("/manifest.json") for k in keys)


def _job_from_cronjob(batch: client.BatchV1Api, cronjob: client.V1CronJob) -> str:
    """``kubectl create job --from=cronjob/<name>``: a Job of the CronJob's template, now."""
    name = f"{cronjob.metadata.name}-{uuid.uuid4().hex[:5]}"
    job = client.V1Job(
        metadata=client.V1ObjectMeta(
            name=name, annotations={"cronjob.kubernetes.io/instantiate": "manual"}, labels={"thinkus.test/run": "env"}
        ),
        spec=cronjob.spec.job_template.spec,
    )
    batch.create_namespaced_job(NAMESPACE, job)
    return name


def _wait_for_job(api: client.ApiClient, name: str, timeout: float = 600) -> client.V1Job:
    batch = client.BatchV1Api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = batch.read_namespaced_job(name, NAMESPACE)
        if job.status.succeeded or job.status.failed:
            return job
        time.sleep(3)
    pytest.fail(f"Job {name} did not finish within {timeout:.0f} s: {job.status}")


def _job_logs(api: client.ApiClient, name: str) -> str:
    core = client.CoreV1Api(api)
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={name}").items
    return "\n".join(core.read_namespaced_pod_log(p.metadata.name, NAMESPACE, tail_lines=60) for p in pods)


def _ensure_bucket(name: str) -> None:
    """The environment's backup bucket, as the operator creates it once per environment."""
    s3 = _s3()
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if name not in existing:
        s3.create_bucket(Bucket=name)


def _expected_replicas(env: str) -> dict[str, tuple[int, int]]:
    """Per service, the replica range the environment allows: its count, or its autoscaler's bounds."""
    defaults = _role_defaults()["k8s_deploy_services"]
    overrides = _inventory_vars(env).get("k8s_deploy_service_overrides", {})
    out = {}
    for name in SERVICES:
        spec = {**defaults[name], **overrides.get(name, {})}
        hpa = spec.get("hpa")
        out[name] = (hpa["min_replicas"], hpa["max_replicas"]) if hpa else (spec["replicas"], spec["replicas"])
    return out


def _checkout_changes() -> str:
    """``git status`` of what a run must not write into: the tests, inventories and playbooks."""
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "tests", "inventories", "playbooks"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _revision(apps: client.AppsV1Api, name: str) -> int:
    annotations = apps.read_namespaced_deployment(name, NAMESPACE).metadata.annotations
    return int(annotations["deployment.kubernetes.io/revision"])


def test_the_overlays_keep_each_environments_replicas_and_autoscalers() -> None:
    """The capacity overlays may shrink requests only: replicas and HPA bounds stay the environment's."""
    for env in ENVIRONMENTS:
        own = _inventory_vars(env).get("k8s_deploy_service_overrides", {})
        overlay = yaml.safe_load((REPO_ROOT / f"tests/overlays/{env}-local/group_vars/all/capacity.yml").read_text())
        for name, spec in overlay["k8s_deploy_service_overrides"].items():
            assert set(spec) - {"resources"} == set(own.get(name, {})), (env, name)
            for key in ("replicas", "hpa"):
                assert spec.get(key) == own.get(name, {}).get(key), (env, name, key)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_environment_runs_end_to_end(
    env: str, api: client.ApiClient, marker_restored: None, app_source: Path, ee_pushed: str, tmp_path: Path
) -> None:
    inventory = ["-i", f"inventories/{env}", "-i", "tests/overlays/local-platform", "-i", f"tests/overlays/{env}-local"]
    env_vars = _env_vars(env, app_source, tmp_path)
    own = _inventory_vars(env)
    api_host = own["thinkus_api_host"]
    _ensure_bucket(_bucket(env))
    checkout_before = _checkout_changes()

    def play(playbook: str, extra: dict[str, Any] | None = None, timeout: float = 900) -> Any:
        started = time.monotonic()
        result = run_playbook(
            playbook, inventory=inventory[1], args=inventory[2:], env=env_vars, extra_vars=extra, timeout=timeout
        )
        print(f"environment {env}: {playbook} rc={result.rc} in {time.monotonic() - started:.1f} s")
        return result

    # 1. Another environment's cluster (or the local one's) is refused before any change.
    if _marker(api) is None:
        client.CoreV1Api(api).create_namespaced_config_map(
            MARKER[0],
            client.V1ConfigMap(metadata=client.V1ObjectMeta(name=MARKER[1]), data={"environment": "local"}),
        )
    before = _state(api)
    refused = play("playbooks/deploy.yml")
    assert refused.rc != 0, f"{env}: a run against the {before['marker']} cluster was not refused"
    # the guard's own sentence, naming both sides ("localhost" or a path would match the bare names)
    refusal = f"is marked as environment {before['marker']!r}"
    assert refusal in refused.output and f"expected {env!r}" in refused.output, refused.output[-3000:]
    assert _state(api) == before, f"{env}: a refused run changed the cluster"

    # 2. The cluster handed over: the first deploy claims it and runs every stage.
    _drop_marker(api)
    first = play("playbooks/deploy.yml", {"thinkus_cluster_claim": True})
    assert first.rc == 0, f"{env}: deploy.yml failed:\n{first.output[-6000:]}"
    assert _marker(api) == env

    apps = client.AppsV1Api(api)
    core = client.CoreV1Api(api)
    for name, (low, high) in _expected_replicas(env).items():
        deployment = apps.read_namespaced_deployment(name, NAMESPACE)
        assert low <= deployment.spec.replicas <= high, (env, name, deployment.spec.replicas, low, high)
        assert deployment.status.ready_replicas == deployment.spec.replicas, (env, name, deployment.status)
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"app={name}").items
        running = [p for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
        assert running and all(p.spec.node_name == NODE for p in running), (name, [p.spec.node_name for p in pods])
    ingress = client.NetworkingV1Api(api).list_namespaced_ingress(NAMESPACE).items
    assert any(rule.host == api_host for ing in ingress for rule in ing.spec.rules), [i.metadata.name for i in ingress]
    issuers = {ing.metadata.annotations.get("cert-manager.io/cluster-issuer") for ing in ingress}
    assert own["ingress_tls_issuer"] in issuers, issuers
    prometheus = apps.read_namespaced_deployment("prometheus", MONITORING)
    assert prometheus.status.ready_replicas == 1
    summary = json.loads((LOCAL / "artifacts" / env / "deploy-summary.json").read_text())
    assert summary["result"] == "ok" and summary["environment"] == env, summary
    assert f"https://{api_host}" in summary["urls"].values(), summary["urls"]
    # the load test went through the environment's own https URL, at its own size
    assert summary["load_test"]["requests"] == own["deploy_load_test_requests"], summary["load_test"]
    assert summary["load_test"]["errors"] == 0, summary["load_test"]
    # the frontend: a READY deployment of this revision on the environment's target, with its own URLs
    target = own["frontend_vercel_target"]
    revision = env_vars["THINKUS_APP_REVISION"]
    deployments = _vercel(f"/v6/deployments?projectId=thinkus-app&target={target}&meta-commitSha={revision}")
    assert any(d["readyState"] == "READY" for d in deployments["deployments"]), deployments
    envs = {(e["key"], tuple(e["target"])): e.get("value") for e in _vercel("/v10/projects/thinkus-app/env")["envs"]}
    assert envs[("NEXTAUTH_URL", (target,))] == own["thinkus_app_url"], envs

    # 3. A second run changes nothing.
    again = play("playbooks/deploy.yml")
    assert again.rc == 0, f"{env}: the re-run failed:\n{again.output[-6000:]}"
    assert _recap(again.output)["changed"] == 0, again.output[-6000:]

    # 4. Backups from the environment's URLs into its bucket, proven by the drill.
    before_backup = set(_keys(env))
    backup = play("playbooks/backup.yml")
    assert backup.rc == 0, f"{env}: backup.yml failed:\n{backup.output[-6000:]}"
    written = set(_keys(env)) - before_backup
    for kind in ("full", "redis"):  # a new complete backup of each kind (its manifest is written last)
        assert _has_backup(env, kind, written), (kind, written)
    drill = play("playbooks/restore_drill.yml")
    assert drill.rc == 0, f"{env}: restore_drill.yml failed:\n{drill.output[-6000:]}"
    for kind in ("full", "redis"):  # each kind restored into scratch and compared with its manifest
        assert re.search(rf"{kind} backup \S+: OK, RTO", drill.output), drill.output[-3000:]

    # 5. The environment's backup schedules: CronJobs on the real node running the EE image. In
    # prod (the others run the same objects), a Job from the full and the redis CronJob each
    # back up into the bucket from inside the cluster.
    schedules = play("playbooks/backup_schedules.yml")
    assert schedules.rc == 0, f"{env}: backup_schedules.yml failed:\n{schedules.output[-6000:]}"
    wanted = yaml.safe_load((REPO_ROOT / "roles/backup/defaults/main.yml").read_text())["backup_schedules"]
    batch = client.BatchV1Api(api)
    cronjobs = {c.metadata.name: c for c in batch.list_namespaced_cron_job(NAMESPACE).items}
    for kind, schedule in wanted.items():
        cronjob = cronjobs.get(f"thinkus-backup-{kind}")
        assert cronjob is not None and cronjob.spec.schedule == schedule, (env, kind, sorted(cronjobs))
        assert cronjob.spec.job_template.spec.template.spec.containers[0].image == ee_pushed
    again = play("playbooks/backup_schedules.yml")
    assert again.rc == 0 and _recap(again.output)["changed"] == 0, again.output[-3000:]
    if env == "prod":
        before = set(_keys(env))
        jobs = [_job_from_cronjob(batch, cronjobs[f"thinkus-backup-{kind}"]) for kind in ("full", "redis")]
        for job in jobs:
            done = _wait_for_job(api, job)
            assert (done.status.succeeded or 0) == 1, f"{job}: {done.status}\n{_job_logs(api, job)}"
        written = set(_keys(env)) - before
        for kind in ("full", "redis"):
            assert _has_backup(env, kind, written), (kind, written)

    # 6. Rollback puts each Deployment on its previous revision.
    revisions = {name: _revision(apps, name) for name in SERVICES}
    rollback = play("playbooks/rollback.yml")
    assert rollback.rc == 0, f"{env}: rollback.yml failed:\n{rollback.output[-6000:]}"
    for name, revision in revisions.items():
        assert _revision(apps, name) > revision, (name, revision, _revision(apps, name))
    assert _marker(api) == env
    # nothing written into the checkout (the app source is a copy)
    assert _checkout_changes() == checkout_before, f"{env}: the runs changed files of the checkout"
