# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The k8s_deploy role against the local environment's kube-apiserver (on its kwok nodes).

Each test deploys into a namespace of its own (thinkus-test-k8s-deploy-<random>) through
inventories/local, like an operator would, then reads back from the API server what the
role produced. Replica counts are lowered to keep the rollouts short; the seed's values
are checked by the Molecule scenario. Pods labelled thinkus.test/never-ready never become
Ready, which is how a broken release is simulated. Nothing skips: a cluster that is down
fails the tests.
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from ansible_collections.thinkus.ops.tests.support.ansible import REPO_ROOT, PlaybookResult, run_playbook
from ansible_collections.thinkus.ops.tests.support.kube import local_api, scratch_namespace

pytestmark = [pytest.mark.localenv, pytest.mark.slow]

PLAYBOOK = "tests/integration/targets/k8s_deploy/deploy.yml"
INVENTORY = str(REPO_ROOT / "inventories" / "local")
KUBECONFIG = REPO_ROOT / ".local" / "kubeconfig"
DEPLOYMENTS = ["go-orchestrator", "py-ai-engine", "worker"]
SMALL = {
    "go-orchestrator": {"replicas": 1},
    "py-ai-engine": {"replicas": 1, "hpa": {"min_replicas": 1, "max_replicas": 2}},
    "worker": {"replicas": 1, "hpa": {"min_replicas": 1, "max_replicas": 2}},
}
RELEASE_TASK = "thinkus.ops.k8s_deploy : Deploy under the lock (apply, rollout wait, rollback on failure)"
NEVER_READY = {"thinkus.test/never-ready": "true"}
LOCAL_SECRETS = yaml.safe_load((REPO_ROOT / "inventories/local/group_vars/all/k8s_deploy.yml").read_text())


@pytest.fixture(scope="module")
def api() -> client.ApiClient:
    return local_api()


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    with scratch_namespace(api, "thinkus-test-k8s-deploy") as name:
        yield name


def deploy(namespace: str, **extra: Any) -> PlaybookResult:
    extra_vars: dict[str, Any] = {
        "k8s_deploy_namespace": namespace,
        "k8s_deploy_instance": namespace,
        "k8s_deploy_service_overrides": copy.deepcopy(SMALL),
        "k8s_deploy_rollout_timeout": 60,
        "thinkus_local_dir": str(REPO_ROOT / ".local"),
        # Tags v1/v2 exist in no registry: these scenarios (scale, never-ready, lock) run on the
        # kwok nodes, whose pods need no image; test_real_node.py proves the real node.
        "k8s_deploy_node_selector": {"type": "kwok"},
        "k8s_deploy_tolerations": [],
    }
    options = {k: extra.pop(k) for k in ("check", "diff", "verbosity", "json_output") if k in extra}
    extra_vars.update(extra)
    return run_playbook(PLAYBOOK, extra_vars=extra_vars, inventory=INVENTORY, **options)


def deployments(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    items = client.AppsV1Api(api).list_namespaced_deployment(namespace).items
    return {d.metadata.name: d for d in items}


def current_replicaset(api: client.ApiClient, deployment: Any) -> str:
    revision = deployment.metadata.annotations["deployment.kubernetes.io/revision"]
    for rs in client.AppsV1Api(api).list_namespaced_replica_set(deployment.metadata.namespace).items:
        owners = [o.uid for o in rs.metadata.owner_references or []]
        if (
            deployment.metadata.uid in owners
            and rs.metadata.annotations.get("deployment.kubernetes.io/revision") == revision
        ):
            return rs.metadata.name
    raise AssertionError(f"no ReplicaSet for revision {revision} of {deployment.metadata.name}")


def assert_available(deps: dict[str, Any]) -> None:
    for name, dep in deps.items():
        assert dep.status.observed_generation >= dep.metadata.generation, name
        assert dep.status.available_replicas == dep.spec.replicas, name
        assert dep.status.updated_replicas == dep.spec.replicas, name


def test_check_mode_on_a_changed_inventory_changes_nothing_and_diff_names_the_change(
    api: client.ApiClient, namespace: str
) -> None:
    first = deploy(namespace, k8s_deploy_image_tag="v1")
    assert first.rc == 0, first.output
    before = deployments(api, namespace)

    preview = deploy(
        namespace,
        check=True,
        diff=True,
        k8s_deploy_image_tag="v2",
        k8s_deploy_config={**LOCAL_SECRETS["k8s_deploy_config"], "PINECONE_INDEX": "thinkus-memories-v2"},
    )
    assert preview.rc == 0, preview.output
    # The diff names the real changes and nothing else (no server bookkeeping).
    assert "-        image: 127.0.0.1:5000/thinkus/go-orchestrator:v1" in preview.output
    assert "+        image: 127.0.0.1:5000/thinkus/go-orchestrator:v2" in preview.output
    assert "-  PINECONE_INDEX: thinkus-memories-local" in preview.output
    assert "+  PINECONE_INDEX: thinkus-memories-v2" in preview.output
    for noise in ("resourceVersion", "managedFields", "deployment.kubernetes.io/revision", "creationTimestamp"):
        assert noise not in preview.output, noise
    # The server holds exactly what it held before.
    after = deployments(api, namespace)
    for name in DEPLOYMENTS:
        assert after[name].metadata.resource_version == before[name].metadata.resource_version
        assert after[name].spec.template.spec.containers[0].image.endswith(":v1")
    cm = client.CoreV1Api(api).read_namespaced_config_map("thinkus-config", namespace)
    assert cm.data["PINECONE_INDEX"] == "thinkus-memories-local"

    # And an unchanged inventory previews no change at all.
    again = deploy(namespace, check=True, diff=True, k8s_deploy_image_tag="v1", json_output=True)
    assert again.rc == 0, again.output
    assert again.stats["localhost"]["changed"] == 0


def test_a_release_that_never_becomes_ready_is_rolled_back(api: client.ApiClient, namespace: str) -> None:
    v1 = deploy(namespace, k8s_deploy_image_tag="v1")
    assert v1.rc == 0, v1.output
    v1_deps = deployments(api, namespace)
    v1_replicasets = {name: current_replicaset(api, dep) for name, dep in v1_deps.items()}
    v1_revisions = {
        name: dep.metadata.annotations["deployment.kubernetes.io/revision"] for name, dep in v1_deps.items()
    }

    v2 = deploy(namespace, k8s_deploy_image_tag="v2", k8s_deploy_pod_labels=NEVER_READY, k8s_deploy_rollout_timeout=8)
    assert v2.rc != 0, v2.output
    assert "Traceback" not in v2.output
    for name in DEPLOYMENTS:
        assert f"Deployment {namespace}/{name}: not rolled out within 8s" in v2.output
        assert f"rolled back to revision {v1_revisions[name]} (ReplicaSet {v1_replicasets[name]})" in v2.output
    assert "readiness probe never succeeds" in v2.output  # the pods' own Ready condition

    now = deployments(api, namespace)
    assert_available(now)
    for name, dep in now.items():
        assert current_replicaset(api, dep) == v1_replicasets[name], name
        assert dep.spec.template.spec.containers[0].image.endswith(":v1"), name
        assert "thinkus.test/never-ready" not in dep.spec.template.metadata.labels, name
    # The lock was given back even though the play failed.
    leases = client.CoordinationV1Api(api).list_namespaced_lease(namespace).items
    assert [lease.metadata.name for lease in leases] == []

    # v1 again after the rollback: nothing to do.
    again = deploy(namespace, k8s_deploy_image_tag="v1", json_output=True)
    assert again.rc == 0, again.output
    assert again.stats["localhost"]["changed"] == 0


def test_two_deploys_at_once_take_turns(api: client.ApiClient, namespace: str) -> None:
    first = deploy(namespace, k8s_deploy_image_tag="v1")  # namespace and objects exist
    assert first.rc == 0, first.output
    results: dict[str, PlaybookResult] = {}

    def run(tag: str) -> None:
        results[tag] = deploy(namespace, k8s_deploy_image_tag=tag, json_output=True)

    threads = [threading.Thread(target=run, args=(tag,)) for tag in ("v2", "v3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for tag, result in results.items():
        assert result.rc == 0, f"{tag}: {result.output}"
    locks = {tag: r.task(RELEASE_TASK)["lock"] for tag, r in results.items()}
    waited = sorted(locks, key=lambda tag: locks[tag]["waited"])
    # One went first; the other waited for it (the lease is polled every 2 s).
    assert locks[waited[1]]["waited"] > 0, locks
    assert locks[waited[1]]["previous_holder"] is None  # it was released, not taken over
    # The objects are all from the deploy that ran last, and Available.
    deps = deployments(api, namespace)
    assert_available(deps)
    assert {d.spec.template.spec.containers[0].image.rsplit(":", 1)[1] for d in deps.values()} == {waited[1]}


def _lease(namespace: str, holder: str, renewed_ago: float, duration: int) -> dict[str, Any]:
    renewed = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=renewed_ago)
    stamp = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "thinkus-deploy", "namespace": namespace},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "acquireTime": stamp, "renewTime": stamp},
    }


def test_a_held_lock_makes_the_deploy_fail_naming_the_holder_and_an_expired_one_is_taken_over(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    coordination = client.CoordinationV1Api(api)
    coordination.create_namespaced_lease(namespace, _lease(namespace, "alice@ci-runner/0badc0de", 0, 600))

    blocked = deploy(namespace, k8s_deploy_lock_timeout=2)
    assert blocked.rc != 0
    assert f"the deploy lock Lease {namespace}/thinkus-deploy is held by 'alice@ci-runner/0badc0de'" in blocked.output
    assert "gave up after waiting 2s" in blocked.output
    assert client.AppsV1Api(api).list_namespaced_deployment(namespace).items == []  # nothing applied
    assert (
        coordination.read_namespaced_lease("thinkus-deploy", namespace).spec.holder_identity
        == "alice@ci-runner/0badc0de"
    )

    coordination.delete_namespaced_lease("thinkus-deploy", namespace)
    coordination.create_namespaced_lease(namespace, _lease(namespace, "bob@laptop/deadbeef", 3600, 60))
    taken = deploy(namespace, k8s_deploy_lock_timeout=2, json_output=True)
    assert taken.rc == 0, taken.output
    lock = taken.task(RELEASE_TASK)["lock"]
    assert lock["took_over"] is True
    assert lock["previous_holder"] == "bob@laptop/deadbeef"
    assert coordination.list_namespaced_lease(namespace).items == []  # released at the end
    assert_available(deployments(api, namespace))


def test_a_changed_secret_rolls_the_pods_and_no_secret_reaches_the_output(
    api: client.ApiClient, namespace: str
) -> None:
    first = deploy(namespace, k8s_deploy_image_tag="v1")
    assert first.rc == 0, first.output
    before = deployments(api, namespace)
    before_rs = {name: current_replicaset(api, dep) for name, dep in before.items()}

    new_url = f"redis://:rotated-{uuid.uuid4().hex}@127.0.0.1:16379/0"
    rotated = deploy(namespace, k8s_deploy_image_tag="v1", k8s_deploy_redis_url=new_url, verbosity=3)
    assert rotated.rc == 0, rotated.output
    secret_values = [new_url] + [v for k, v in LOCAL_SECRETS.items() if k.endswith(("_url", "_key", "_dsn", "_id"))]
    for value in secret_values:
        assert value not in rotated.output, "a secret value reached the -vvv output"
        assert base64.b64encode(value.encode()).decode() not in rotated.output
    assert "changed: redis-credentials" in rotated.output  # named, not shown

    stored = client.CoreV1Api(api).read_namespaced_secret("redis-credentials", namespace)
    assert base64.b64decode(stored.data["url"]).decode() == new_url
    after = deployments(api, namespace)
    assert_available(after)
    for name in DEPLOYMENTS:  # every service reads REDIS_URL: all roll to a new ReplicaSet
        assert current_replicaset(api, after[name]) != before_rs[name], name
        old = before[name].spec.template.metadata.annotations["thinkus.ops/config-checksum"]
        assert after[name].spec.template.metadata.annotations["thinkus.ops/config-checksum"] != old
        pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={name}").items
        live = [p for p in pods if not p.metadata.deletion_timestamp]
        assert live, name
        assert all(p.metadata.name.startswith(current_replicaset(api, after[name])) for p in live), name


BAD_INPUTS = [
    pytest.param(
        {"k8s_deploy_service_overrides": {"go-orchestrator": {"replicas": "three"}}},
        "k8s_deploy_services['go-orchestrator']: the name must be a DNS-1123 label, replicas an integer >= 0",
        id="replicas-not-int",
    ),
    pytest.param(
        {"k8s_deploy_service_overrides": {"worker": {"replicas": -1}}},
        "k8s_deploy_services['worker']: the name must be a DNS-1123 label, replicas an integer >= 0 (got -1)",
        id="replicas-negative",
    ),
    pytest.param(
        {"k8s_deploy_service_overrides": {"py-ai-engine": {"hpa": {"min_replicas": 5, "max_replicas": 3}}}},
        "k8s_deploy_services['py-ai-engine'].hpa must be {} or {min_replicas, max_replicas, cpu_utilization,",
        id="hpa-min-above-max",
    ),
    pytest.param(
        {
            "k8s_deploy_service_overrides": {
                "py-ai-engine": {
                    "hpa": {"min_replicas": 1, "max_replicas": 2, "scale_down_stabilization_seconds": 7200}
                }
            }
        },
        "a stabilization window of 0 to 3600 seconds (got min 1, max 2, window 7200)",
        id="hpa-window-too-long",
    ),
    pytest.param(
        {"k8s_deploy_service_overrides": {"worker": {"metrics": {"port": 9100, "path": "/metrics"}}}},
        "k8s_deploy_services['worker'].metrics must be {} or {port, path} with port one of the ports the container"
        " declares ([8001]; got 9100)",
        id="metrics-port-not-declared",
    ),
    pytest.param(
        {"k8s_deploy_service_overrides": {"go-orchestrator": {"readiness_probe": {"path": "ready"}}}},
        "k8s_deploy_services['go-orchestrator'].readiness_probe: path must start with '/' (got 'ready')",
        id="probe-path-without-slash",
    ),
    pytest.param(
        {"k8s_deploy_sentry_dsn": ""},
        "these secret values are empty or undefined: k8s_deploy_sentry_dsn (Secret sentry-credentials, key dsn)",
        id="missing-secret",
    ),
    pytest.param(
        {"k8s_deploy_image_tag": ""},
        "the image of service go-orchestrator is '127.0.0.1:5000/thinkus/go-orchestrator': it must be an image "
        "reference [registry[:port]/]path[:tag][@sha256:digest]",
        id="image-without-tag",
    ),
    pytest.param(
        {"k8s_deploy_image_tag": "latest"},
        "is '127.0.0.1:5000/thinkus/go-orchestrator:latest': it must be an image reference",
        id="image-latest",
    ),
    pytest.param(
        {"k8s_deploy_lock_duration": 10},
        "k8s_deploy_lock_duration (10 s) is too short for k8s_deploy_request_timeout (10 s)",
        id="lock-shorter-than-two-requests",
    ),
    pytest.param(
        {"k8s_deploy_tolerations": [{"key": "thinkus.ops/real-node", "effect": "Never"}]},
        "k8s_deploy_tolerations must be a list of {key, operator: Equal|Exists, value, effect:",
        id="toleration-effect",
    ),
    pytest.param(
        {"k8s_deploy_service_overrides": {"worker": {"liveness_probe": "/healthz"}}},
        "k8s_deploy_services['worker'].liveness_probe: path must start with '/' (got 'nothing')",
        id="probe-not-a-mapping",
    ),
]


@pytest.mark.parametrize(("bad", "message"), BAD_INPUTS)
def test_bad_input_fails_in_preflight_before_anything_is_applied(
    api: client.ApiClient, namespace: str, bad: dict[str, Any], message: str
) -> None:
    overrides = copy.deepcopy(SMALL)
    for name, change in bad.pop("k8s_deploy_service_overrides", {}).items():
        overrides[name].update(change)
    result = deploy(namespace, k8s_deploy_service_overrides=overrides, **bad)
    assert result.rc != 0
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    names = [ns.metadata.name for ns in client.CoreV1Api(api).list_namespace().items]
    assert namespace not in names  # failed before the first request that changes anything


def test_an_unreachable_api_server_fails_naming_server_and_context(tmp_path: Path, namespace: str) -> None:
    kubeconfig = (
        json.loads(KUBECONFIG.read_text())
        if KUBECONFIG.read_text().lstrip().startswith("{")
        else yaml.safe_load(KUBECONFIG.read_text())
    )
    kubeconfig["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    kubeconfig["contexts"][0]["name"] = "thinkus-unreachable"
    kubeconfig["current-context"] = "thinkus-unreachable"
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kubeconfig))
    path.chmod(0o600)
    result = deploy(namespace, k8s_deploy_kubeconfig=str(path), k8s_deploy_context="thinkus-unreachable")
    assert result.rc != 0
    assert (
        "cannot reach the Kubernetes API server https://127.0.0.1:1 "
        "(kubeconfig context 'thinkus-unreachable'): connection refused" in result.output
    ), result.output
    assert "Traceback" not in result.output
