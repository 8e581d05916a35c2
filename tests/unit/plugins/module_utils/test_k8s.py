# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of the k8s module_utils: comparison, rollout status, revisions, leases."""

from __future__ import annotations

import contextlib
import datetime
import http.server
import json
import os
import signal
import subprocess
import threading
import time
from typing import Any, ClassVar

import pytest

from ansible_collections.thinkus.ops.plugins.module_utils import _k8s, _k8s_apply, _k8s_lease, _k8s_rollout

UTC = datetime.UTC


def deployment(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "api",
            "generation": 2,
            "uid": "u1",
            "annotations": {"deployment.kubernetes.io/revision": "3"},
        },
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}}},
        "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3, **status},
    }


# ------------------------------------------------------------------ comparison


def test_normalize_drops_status_and_server_bookkeeping_only() -> None:
    live = {
        "metadata": {
            "name": "api",
            "resourceVersion": "7",
            "managedFields": [{"manager": "x"}],
            "uid": "u",
            "generation": 4,
            "creationTimestamp": "t",
            "labels": {"app": "api"},
            "annotations": {"deployment.kubernetes.io/revision": "3", "team": "core"},
        },
        "spec": {"replicas": 3},
        "status": {"replicas": 3},
    }
    assert _k8s.normalize(live) == {
        "metadata": {"name": "api", "labels": {"app": "api"}, "annotations": {"team": "core"}},
        "spec": {"replicas": 3},
    }
    assert live["metadata"]["resourceVersion"] == "7"  # the input is not modified
    assert _k8s.normalize(None) is None


def test_same_object_with_other_resource_version_is_not_a_change() -> None:
    a = {"metadata": {"name": "x", "resourceVersion": "1"}, "spec": {"a": 1}}
    b = {"metadata": {"name": "x", "resourceVersion": "2", "managedFields": []}, "spec": {"a": 1}}
    assert _k8s.normalize(a) == _k8s.normalize(b)


def test_secret_diff_never_shows_values_and_marks_changed_keys() -> None:
    before = {"kind": "Secret", "data": {"url": "b2xk", "same": "c2FtZQ=="}}
    after = {"kind": "Secret", "data": {"url": "bmV3", "same": "c2FtZQ==", "added": "eA=="}}
    diff = _k8s.object_diff(_k8s.ObjectRef("v1", "Secret", "db", "ns"), before, after)
    text = diff["before"] + diff["after"]
    for value in ("b2xk", "bmV3", "c2FtZQ==", "eA=="):
        assert value not in text
    assert "url: <redacted, changed>" in diff["after"]
    assert "same: <redacted>" in diff["after"]
    assert "added: <redacted, changed>" in diff["after"]
    assert diff["before_header"] == "Secret ns/db (live)"


def test_object_diff_headers_for_created_and_deleted() -> None:
    ref = _k8s.ObjectRef("v1", "ConfigMap", "c", "ns")
    assert _k8s.object_diff(ref, None, {"a": 1})["before_header"] == "ConfigMap ns/c (absent)"
    assert _k8s.object_diff(ref, {"a": 1}, None)["after_header"] == "ConfigMap ns/c (deleted)"


CORE_V1 = {
    "kind": "APIResourceList",
    "groupVersion": "v1",
    "resources": [
        {"name": "namespaces", "kind": "Namespace", "namespaced": False, "verbs": ["get", "patch"]},
        {"name": "namespaces/status", "kind": "Namespace", "namespaced": False},
        {"name": "secrets", "kind": "Secret", "namespaced": True},
        {"name": "resourcequotas", "kind": "ResourceQuota", "namespaced": True},
    ],
}
APPS_V1 = {
    "groupVersion": "apps/v1",
    "resources": [
        {"name": "deployments", "kind": "Deployment", "namespaced": True},
        {"name": "deployments/scale", "kind": "Scale", "namespaced": True},
    ],
}
SCHEDULING_V1 = {
    "groupVersion": "scheduling.k8s.io/v1",
    "resources": [{"name": "priorityclasses", "kind": "PriorityClass", "namespaced": False}],
}


class FakeDiscoveryServer:
    """The discovery documents of a small cluster; counts what is fetched."""

    def __init__(self) -> None:
        self.documents: dict[str, Any] = {
            "/api": {"versions": ["v1"]},
            "/apis": {
                "groups": [
                    {"name": "apps", "preferredVersion": {"groupVersion": "apps/v1"}},
                    {"name": "scheduling.k8s.io", "preferredVersion": {"groupVersion": "scheduling.k8s.io/v1"}},
                ]
            },
            "/api/v1": CORE_V1,
            "/apis/apps/v1": APPS_V1,
            "/apis/scheduling.k8s.io/v1": SCHEDULING_V1,
        }
        self.fetched: list[str] = []

    def __call__(self, path: str) -> Any:
        self.fetched.append(path)
        return self.documents.get(path)


def test_discovery_resolves_any_served_kind_and_reads_each_group_version_once() -> None:
    server = FakeDiscoveryServer()
    discovery = _k8s.Discovery(server)
    deployment_kind = discovery.resource("apps/v1", "Deployment")
    assert deployment_kind == _k8s.Resource("apps/v1", "Deployment", "deployments", True, ())
    assert deployment_kind.object_path("api", "thinkus") == "/apis/apps/v1/namespaces/thinkus/deployments/api"
    assert discovery.resource("apps/v1", "Deployment").plural == "deployments"
    priority = discovery.resource("scheduling.k8s.io/v1", "PriorityClass")
    assert priority.object_path("high") == "/apis/scheduling.k8s.io/v1/priorityclasses/high"
    namespace = discovery.resource("v1", "Namespace")
    assert not namespace.namespaced and namespace.verbs == ("get", "patch")  # not the status subresource
    assert namespace.object_path("thinkus", "ignored") == "/api/v1/namespaces/thinkus"
    quota = discovery.resource("v1", "ResourceQuota")
    assert quota.collection_path("ns") == "/api/v1/namespaces/ns/resourcequotas"
    assert quota.collection_path(None, all_namespaces=True) == "/api/v1/resourcequotas"
    with pytest.raises(_k8s.K8sError, match="ResourceQuota is namespaced"):
        quota.collection_path(None)
    assert server.fetched == ["/apis/apps/v1", "/apis/scheduling.k8s.io/v1", "/api/v1"]


def test_discovery_names_what_the_server_does_not_serve_and_sees_new_kinds_after_forget() -> None:
    server = FakeDiscoveryServer()
    discovery = _k8s.Discovery(server)
    with pytest.raises(
        _k8s.UnknownKind, match=r"does not serve apiVersion stable\.example\.com/v1 \(for kind CronTab\)"
    ):
        discovery.resource("stable.example.com/v1", "CronTab")
    with pytest.raises(
        _k8s.UnknownKind, match=r"no kind Deployment in v1 \(it has: Namespace, ResourceQuota, Secret\)"
    ):
        discovery.resource("v1", "Deployment")
    with pytest.raises(_k8s.K8sError, match="invalid apiVersion"):
        discovery.resource("a/b/c", "X")
    server.documents["/apis/stable.example.com/v1"] = {
        "resources": [{"name": "crontabs", "kind": "CronTab", "namespaced": True}]
    }
    with pytest.raises(_k8s.UnknownKind):  # still the answer read before
        discovery.resource("stable.example.com/v1", "CronTab")
    discovery.forget("stable.example.com/v1")
    assert discovery.resource("stable.example.com/v1", "CronTab").plural == "crontabs"


def test_discovery_finds_a_kind_by_name_in_the_preferred_versions() -> None:
    server = FakeDiscoveryServer()
    discovery = _k8s.Discovery(server)
    assert discovery.find_kind("PriorityClass").api_version == "scheduling.k8s.io/v1"
    assert discovery.find_kind("Secret").api_version == "v1"
    with pytest.raises(_k8s.UnknownKind, match="serves no kind Nope"):
        discovery.find_kind("Nope")
    assert server.fetched.count("/apis") == 1


def test_find_kind_skips_an_aggregated_api_that_does_not_answer() -> None:
    server = FakeDiscoveryServer()
    server.documents["/apis"]["groups"].append(
        {"name": "metrics.k8s.io", "preferredVersion": {"groupVersion": "metrics.k8s.io/v1beta1"}}
    )

    def fetch(path: str) -> Any:
        if path == "/apis/metrics.k8s.io/v1beta1":
            raise _k8s.K8sError("the server is currently unable to handle the request", status=503)
        return server(path)

    discovery = _k8s.Discovery(fetch)
    assert discovery.find_kind("PriorityClass").plural == "priorityclasses"
    with pytest.raises(_k8s.UnknownKind, match=r"no kind PodMetrics \(not answering: metrics.k8s.io/v1beta1\)"):
        discovery.find_kind("PodMetrics")


def test_object_ref_takes_the_default_namespace_for_namespaced_kinds_only() -> None:
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "thinkus"}}
    assert _k8s.ObjectRef.of(manifest, "other", namespaced=False).namespace is None
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}
    assert _k8s.ObjectRef.of(secret, "ns") == _k8s.ObjectRef("v1", "Secret", "s", "ns")
    assert str(_k8s.ObjectRef.of(secret, "ns")) == "Secret ns/s"


CRONTAB_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "crontabs.stable.example.com"},
    "spec": {
        "group": "stable.example.com",
        "scope": "Namespaced",
        "names": {"kind": "CronTab", "plural": "crontabs"},
        "versions": [{"name": "v1", "served": True}, {"name": "v0", "served": False}],
    },
}


def test_validate_resources_reports_every_shape_problem() -> None:
    problems = _k8s_apply.validate_resources(
        [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
            "text",
            {"kind": "Thing", "metadata": {"name": "b"}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {}},
        ]
    )
    assert problems == [
        "resources[1] is not a dictionary",
        "resources[2]: apiVersion and kind are required",
        "resources[3] (Service): metadata.name is missing",
    ]


def test_resolve_refs_asks_discovery_and_accepts_kinds_of_crds_earlier_in_the_set() -> None:
    server = FakeDiscoveryServer()
    server.documents["/apis/apiextensions.k8s.io/v1"] = {
        "resources": [{"name": "customresourcedefinitions", "kind": "CustomResourceDefinition", "namespaced": False}]
    }
    discovery = _k8s.Discovery(server)

    def namespaced_of(api_version: str, kind: str) -> bool:
        return discovery.resource(api_version, kind).namespaced

    crontab = {"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "nightly"}}
    resources = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a", "namespace": "ns"}},
        {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}},
        CRONTAB_CRD,
        crontab,
    ]
    refs, pending, problems = _k8s_apply.resolve_refs(resources, "ns", namespaced_of)
    assert problems == [
        "resources[0]: the API server has no kind ConfigMap in v1 (it has: Namespace, ResourceQuota, Secret)",
        "resources[2]: Secret ns/a is listed twice",
    ]
    assert refs[3] == _k8s.ObjectRef("scheduling.k8s.io/v1", "PriorityClass", "high", None)
    assert refs[5] == _k8s.ObjectRef("stable.example.com/v1", "CronTab", "nightly", "ns")
    assert pending == {("stable.example.com/v1", "CronTab")}

    _refs, _pending, problems = _k8s_apply.resolve_refs([crontab, CRONTAB_CRD], "ns", namespaced_of)
    assert problems == [
        "resources[0]: the API server does not serve apiVersion stable.example.com/v1 (for kind CronTab)"
        " (nor does a CustomResourceDefinition before it in resources)"
    ]
    _refs, _pending, problems = _k8s_apply.resolve_refs([crontab], None, namespaced_of, unknown_kinds_ok=True)
    assert problems == []
    assert "no metadata.namespace" in _k8s_apply.resolve_refs([resources[1]], None, namespaced_of)[2][0]

    def unreachable(api_version: str, kind: str) -> bool:
        raise _k8s.K8sUnreachable("cannot reach the Kubernetes API server https://127.0.0.1:1")

    with pytest.raises(_k8s.K8sUnreachable):  # not a problem of the resources
        _k8s_apply.resolve_refs([resources[1]], "ns", unreachable)


def test_secret_string_data_is_sent_as_data() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "data": {"a": "eA=="}, "stringData": {"b": "y", "c": 5}}
    assert _k8s_apply.secret_as_data(secret) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "data": {"a": "eA==", "b": "eQ==", "c": "NQ=="},
    }
    assert "stringData" in secret  # the input is not modified
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "x"}}
    assert _k8s_apply.secret_as_data(config_map) is config_map


def test_crd_kinds_are_the_served_versions_and_scope() -> None:
    cluster_scoped = {**CRONTAB_CRD, "spec": {**CRONTAB_CRD["spec"], "scope": "Cluster"}}
    assert _k8s_apply.crd_kinds([CRONTAB_CRD]) == {("stable.example.com/v1", "CronTab"): True}
    assert _k8s_apply.crd_kinds([cluster_scoped]) == {("stable.example.com/v1", "CronTab"): False}
    assert _k8s_apply.split_kind("batch/v1/CronJob") == ("batch/v1", "CronJob")
    assert _k8s_apply.split_kind("v1/Secret") == ("v1", "Secret")
    assert _k8s_apply.split_kind("Secret") == (None, "Secret")


def test_hpa_targets_are_the_scaled_deployments() -> None:
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "h"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}},
    }
    assert _k8s_apply.hpa_targets([hpa], "ns") == {_k8s.ObjectRef("apps/v1", "Deployment", "api", "ns")}


def test_status_message_of_an_error_answer() -> None:
    body = json.dumps({"kind": "Status", "message": 'deployments.apps "x" not found', "reason": "NotFound"})
    assert _k8s._status_message(body, 404) == ('deployments.apps "x" not found', "NotFound")
    assert _k8s._status_message(b"<html>", 502) == ("HTTP 502", None)


def test_connection_errors_are_described_in_one_line() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    wrapper = type("MaxRetryError", (Exception,), {})("pool: Max retries exceeded")
    wrapper.reason = type("NewConnectionError", (Exception,), {})(
        "conn: Failed to establish: [Errno 111] Connection refused"
    )
    assert _k8s.describe_connection_error(wrapper) == "connection refused"
    assert _k8s.describe_connection_error(refused) == "connection refused"
    assert _k8s.describe_connection_error(TimeoutError("timed out")) == "connection timed out"


def test_unreachable_server_message_names_server_and_context(tmp_path: Any) -> None:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "ctx-a", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx-a",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kubeconfig))
    k8s = _k8s.K8sClient(str(path), None, request_timeout=2)
    with pytest.raises(_k8s.K8sUnreachable) as caught:
        k8s.request("GET", "/version")
    assert str(caught.value) == (
        "cannot reach the Kubernetes API server https://127.0.0.1:1 (kubeconfig context 'ctx-a'): connection refused"
    )
    with pytest.raises(_k8s.K8sConfigError, match="context 'nope' is not in kubeconfig"):
        _k8s.K8sClient(str(path), "nope")


# ------------------------------------------------------------------ rollout


@pytest.mark.parametrize(
    ("status", "done", "message"),
    [
        ({}, True, "3 of 3 replicas available"),
        ({"observedGeneration": 1}, False, "the controller has not observed the latest generation yet"),
        ({"updatedReplicas": 1}, False, "1 of 3 replicas updated"),
        ({"replicas": 4}, False, "1 old replicas pending termination"),
        ({"availableReplicas": 2}, False, "2 of 3 updated replicas available"),
    ],
)
def test_deployment_progress(status: dict[str, Any], done: bool, message: str) -> None:
    progress = _k8s_rollout.deployment_progress(deployment(**status))
    assert (progress.done, progress.message, progress.failed) == (done, message, False)


def test_progress_deadline_exceeded_is_a_failure() -> None:
    condition = {"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "took too long"}
    progress = _k8s_rollout.deployment_progress(deployment(updatedReplicas=1, conditions=[condition]))
    assert progress.failed and not progress.done
    assert "took too long" in progress.message


def replicaset(name: str, revision: int, owner: str = "u1", image: str = "img:1") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
            "labels": {"app": "api", "pod-template-hash": name[-4:]},
            "ownerReferences": [{"uid": owner, "controller": True}],
        },
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "api", "pod-template-hash": name[-4:]}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            }
        },
    }


def test_revisions_and_templates_of_owned_replicasets() -> None:
    sets = [
        replicaset("api-aaaa", 3, image="img:3"),
        replicaset("api-bbbb", 1),
        replicaset("other-cccc", 2, owner="u2"),
    ]
    owned = _k8s_rollout.owned_replicasets(deployment(), sets)
    assert [rs["metadata"]["name"] for rs in owned] == ["api-bbbb", "api-aaaa"]
    assert _k8s_rollout.previous_revision(owned, 3) == 1
    assert _k8s_rollout.previous_revision(owned, 1) is None
    rs = _k8s_rollout.replicaset_for_revision(owned, 1)
    assert rs is not None
    template = _k8s_rollout.template_of(rs)
    assert template["metadata"]["labels"] == {"app": "api"}
    assert _k8s_rollout.images_of(template) == ["img:1"]
    assert _k8s_rollout.same_template(template, rs["spec"]["template"])
    assert not _k8s_rollout.same_template(template, _k8s_rollout.template_of(sets[0]))


def test_pod_problems_and_warning_events_are_summarised() -> None:
    not_ready = {
        "type": "Ready",
        "status": "False",
        "reason": "ContainersNotReady",
        "message": "readiness probe failed",
    }
    pods = [{"metadata": {"name": f"api-{i}"}, "status": {"conditions": [not_ready]}} for i in range(3)] + [
        {"metadata": {"name": "api-ok"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    ]
    assert _k8s_rollout.pod_problems(pods) == [
        "pod api-0, api-1 and 1 more: Ready=False ContainersNotReady: readiness probe failed"
    ]
    events = [
        {
            "type": "Warning",
            "reason": "BackOff",
            "message": "pulling",
            "involvedObject": {"kind": "Pod", "name": "api-0"},
        },
        {"type": "Normal", "reason": "Scheduled", "message": "ok", "involvedObject": {"kind": "Pod", "name": "api-0"}},
        {"type": "Warning", "reason": "Other", "message": "x", "involvedObject": {"kind": "Pod", "name": "elsewhere"}},
    ]
    assert _k8s_rollout.warning_events(events, {"api-0"}) == ["Pod api-0: BackOff: pulling"]


def test_crash_looping_container_names_its_last_termination_and_log() -> None:
    crashed = {
        "metadata": {"name": "api-7"},
        "status": {
            "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
            "containerStatuses": [
                {
                    "name": "orchestrator",
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                    "lastState": {"terminated": {"reason": "Error", "exitCode": 3}},
                }
            ],
        },
    }
    healthy = {"metadata": {"name": "api-1"}, "status": {"containerStatuses": [{"name": "orchestrator"}]}}
    (problem,) = _k8s_rollout.pod_problems([crashed])
    assert "container orchestrator waiting: CrashLoopBackOff back-off 40s" in problem
    assert "container orchestrator last terminated: Error (exit code 3)" in problem
    assert _k8s_rollout.crashed_containers([healthy, crashed]) == [("api-7", "orchestrator")]
    log = "boot\n\nconfig missing: DB_URL\n" + "x" * 500 + "\n"
    assert _k8s_rollout.log_excerpt(log, lines=2, width=10) == "config mis | xxxxxxxxxx"


# ------------------------------------------------------------------ lease


def test_lease_expiry_and_who_may_take_it() -> None:
    now = datetime.datetime(2026, 1, 17, 10, 0, 0, tzinfo=UTC)
    lease = {
        "spec": {"holderIdentity": "alice/1", "leaseDurationSeconds": 60, "renewTime": "2026-01-17T09:59:30.000000Z"}
    }
    state = _k8s_lease.LeaseState.of(lease)
    assert not state.expired(now)
    assert not state.free_for("bob/2", now)
    assert state.free_for("alice/1", now)
    assert state.free_for("bob/2", now + datetime.timedelta(seconds=31))
    assert "held by 'alice/1'" in state.describe(now) and "expires in 30s" in state.describe(now)
    assert _k8s_lease.LeaseState.of(None).free_for("bob/2", now)


def test_lease_body_counts_transitions_and_keeps_acquire_time_on_renewal() -> None:
    now = datetime.datetime(2026, 1, 17, 10, 0, 0, 123456, tzinfo=UTC)
    fresh = _k8s_lease.lease_body("l", "ns", "me/1", 900, now, None, {"a": "b"})
    assert fresh["spec"]["leaseTransitions"] == 0
    assert fresh["spec"]["acquireTime"] == "2026-01-17T10:00:00.123456Z"
    assert "resourceVersion" not in fresh["metadata"]
    held = {"metadata": {"name": "l", "resourceVersion": "9"}, "spec": {**fresh["spec"], "holderIdentity": "other/2"}}
    taken = _k8s_lease.lease_body("l", "ns", "me/1", 900, now, held)
    assert taken["spec"]["leaseTransitions"] == 1
    assert taken["metadata"]["resourceVersion"] == "9"
    later = now + datetime.timedelta(seconds=10)
    mine = {"metadata": {"name": "l", "resourceVersion": "10"}, "spec": taken["spec"]}
    renewed = _k8s_lease.lease_body("l", "ns", "me/1", 900, later, mine)
    assert renewed["spec"]["acquireTime"] == taken["spec"]["acquireTime"]
    assert renewed["spec"]["renewTime"] == "2026-01-17T10:00:10.123456Z"
    assert renewed["spec"]["leaseTransitions"] == 1


class FakeLeaseServer:
    """Just enough of K8sClient for LeaseKeeper: one Lease, optional failures."""

    def __init__(self, holder: str | None, duration: int = 60) -> None:
        self.lease: dict[str, Any] | None = None
        if holder:
            self.lease = {
                "metadata": {"name": "thinkus-deploy", "namespace": "ns", "resourceVersion": "1"},
                "spec": {
                    "holderIdentity": holder,
                    "leaseDurationSeconds": duration,
                    "acquireTime": "2026-01-17T10:00:00.000000Z",
                    "renewTime": "2026-01-17T10:00:00.000000Z",
                },
            }
        self.fail_with: _k8s.K8sError | None = None
        self.puts: list[dict[str, Any]] = []

    def get(self, ref: _k8s.ObjectRef) -> dict[str, Any] | None:
        if self.fail_with:
            raise self.fail_with
        return self.lease

    def request(self, method: str, path: str, body: Any = None) -> Any:
        assert method == "PUT" and path.endswith("/namespaces/ns/leases/thinkus-deploy")
        if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise _k8s.K8sError("conflict", status=409)
        self.puts.append(body)
        body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
        self.lease = body
        return body


def keeper(server: FakeLeaseServer, clock: list[float]) -> _k8s_lease.LeaseKeeper:
    ref = _k8s.ObjectRef("coordination.k8s.io/v1", "Lease", "thinkus-deploy", "ns")
    now = datetime.datetime(2026, 1, 17, 10, 0, 0, tzinfo=UTC)
    return _k8s_lease.LeaseKeeper(
        server, ref, "me/1", clock=lambda: clock[0], wall_clock=lambda: now + datetime.timedelta(seconds=clock[0])
    )


def test_keeper_renews_every_quarter_of_the_duration_and_keeps_the_acquire_time() -> None:
    server, clock = FakeLeaseServer("me/1", duration=60), [0.0]
    keep = keeper(server, clock)
    keep.renew()
    assert len(server.puts) == 1 and keep.duration == 60
    clock[0] = 14.0
    assert keep.heartbeat() is None
    assert len(server.puts) == 1  # not due before 15 s
    clock[0] = 15.0
    keep.heartbeat()
    assert len(server.puts) == 2
    assert server.lease["spec"]["renewTime"] == "2026-01-17T10:00:15.000000Z"
    assert server.lease["spec"]["acquireTime"] == "2026-01-17T10:00:00.000000Z"
    assert server.lease["spec"]["holderIdentity"] == "me/1"


@pytest.mark.parametrize(
    ("holder", "expected"),
    [
        (None, "the deploy lock Lease ns/thinkus-deploy no longer exists (released or deleted by someone else)"),
        ("bob/2", "the deploy lock Lease ns/thinkus-deploy is held by 'bob/2'"),
    ],
)
def test_keeper_stops_when_the_lease_is_gone_or_taken_over(holder: str | None, expected: str) -> None:
    server, clock = FakeLeaseServer(holder), [0.0]
    with pytest.raises(_k8s_lease.LockLost, match="stopped before the next change") as caught:
        keeper(server, clock).heartbeat()  # even while only waiting: someone else holds it
    assert str(caught.value).startswith(expected)
    assert not caught.value.transient
    assert server.puts == []


def test_keeper_tolerates_an_unanswered_renewal_while_waiting_but_not_before_a_write() -> None:
    server, clock = FakeLeaseServer("me/1", duration=60), [0.0]
    keep = keeper(server, clock)
    keep.renew()
    server.fail_with = _k8s.K8sUnreachable("cannot reach the Kubernetes API server https://127.0.0.1:6443")
    clock[0] = 20.0
    warning = keep.heartbeat()
    assert warning and "cannot renew the deploy lock Lease ns/thinkus-deploy" in warning
    assert "https://127.0.0.1:6443" in warning
    with pytest.raises(_k8s_lease.LockLost, match="cannot reach the Kubernetes API server"):
        keep.heartbeat(before_write=True)
    # Back within the duration: renewed, nothing lost.
    server.fail_with = None
    clock[0] = 40.0
    assert keep.heartbeat(before_write=True) is None
    assert keep.renewals == 2
    # Not renewed for a whole duration: the run may no longer count on the lock, even if the server is back.
    clock[0] = 100.0
    with pytest.raises(_k8s_lease.LockLost, match="last renewed 60s ago, past its 60s duration"):
        keep.heartbeat()


def test_keeper_stops_on_a_conflicting_write() -> None:
    server, clock = FakeLeaseServer("me/1"), [0.0]
    keep = keeper(server, clock)
    original = server.request

    def racing(method: str, path: str, body: Any = None) -> Any:
        server.lease = {**server.lease, "metadata": {**server.lease["metadata"], "resourceVersion": "7"}}
        return original(method, path, body)

    server.request = racing  # type: ignore[method-assign]
    with pytest.raises(_k8s_lease.LockLost, match="changed by someone else"):
        keep.renew()


def test_keeper_of_needs_a_lock_and_a_real_run() -> None:
    server = FakeLeaseServer("me/1")
    lock = {"name": "thinkus-deploy", "namespace": "ns", "holder_identity": "me/1"}
    assert _k8s_lease.keeper_of({"lock": None}, server, check_mode=False) is None
    assert _k8s_lease.keeper_of({"lock": lock}, server, check_mode=True) is None
    assert server.puts == []
    kept = _k8s_lease.keeper_of({"lock": lock}, server, check_mode=False)
    assert kept is not None and kept.renewals == 1 and len(server.puts) == 1


def test_lifeline_notices_that_the_process_that_started_it_died() -> None:
    # sh starts sleep and waits; sleep stands for a module, sh for the run that started it.
    shell = subprocess.Popen(["sh", "-c", "sleep 30 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
    try:
        assert shell.stdout is not None
        module_pid = int(shell.stdout.readline())
        line = _k8s_lease.Lifeline(module_pid)
        assert line.chain and line.chain[0][:2] == (module_pid, shell.pid)
        assert line.alive()
        shell.kill()
        shell.wait()
        deadline = time.monotonic() + 5
        while line.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not line.alive()  # re-parented: its run is gone
    finally:
        shell.kill()
        with contextlib.suppress(ProcessLookupError, UnboundLocalError):
            os.kill(module_pid, signal.SIGKILL)


def test_keeper_stops_renewing_once_its_run_is_gone() -> None:
    class Dead:
        def alive(self) -> bool:
            return False

    server, clock = FakeLeaseServer("me/1"), [0.0]
    keep = keeper(server, clock)
    keep.lifeline = Dead()  # type: ignore[assignment]
    with pytest.raises(
        _k8s_lease.LockLost, match="the ansible run holding the deploy lock Lease ns/thinkus-deploy has ended"
    ):
        keep.heartbeat()
    assert server.puts == []


def test_parse_time_accepts_server_formats() -> None:
    assert _k8s_lease.parse_time("2026-01-17T10:00:00Z") == datetime.datetime(2026, 1, 17, 10, 0, tzinfo=UTC)
    assert _k8s_lease.parse_time("2026-01-17T10:00:00.123456Z").microsecond == 123456
    assert _k8s_lease.parse_time(None) is None


# ------------------------------------------------------------------ the client on the wire


class _FakeApiServer(http.server.BaseHTTPRequestHandler):
    """Discovery for one group version and server-side apply of PriorityClasses, over plain HTTP."""

    seen: ClassVar[list[tuple[str, str, str]]] = []

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, ""))
        if self.path == "/apis/scheduling.k8s.io/v1":
            self._answer(
                200, {"resources": [{"name": "priorityclasses", "kind": "PriorityClass", "namespaced": False}]}
            )
        else:
            self._answer(404, {"kind": "Status", "message": "not found", "reason": "NotFound"})

    def do_PATCH(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(("PATCH", self.path, self.headers["Content-Type"]))
        self._answer(200, json.loads(body))

    def do_DELETE(self) -> None:
        options = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(("DELETE", self.path, json.dumps(options, sort_keys=True)))
        self._answer(200, {"kind": "Status", "status": "Success"})

    def log_message(self, *args: Any) -> None:
        pass


def test_apply_goes_to_the_discovered_path_with_field_manager_and_dry_run(tmp_path: Any) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeApiServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "ctx",
        }
        path = tmp_path / "kubeconfig"
        path.write_text(json.dumps(kubeconfig))
        k8s = _k8s.K8sClient(str(path), None, request_timeout=5)
        manifest = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}}
        ref = k8s.ref_of(manifest, "ignored")
        assert ref == _k8s.ObjectRef("scheduling.k8s.io/v1", "PriorityClass", "high", None)
        assert k8s.get(ref) is None
        assert k8s.apply(manifest, "thinkus-ops", dry_run=True) == manifest
        k8s.delete(ref, dry_run=True)
        with pytest.raises(_k8s.UnknownKind, match=r"does not serve apiVersion example\.com/v1"):
            k8s.ref_of({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    finally:
        server.shutdown()
    assert _FakeApiServer.seen == [
        ("GET", "/apis/scheduling.k8s.io/v1", ""),  # discovery, once
        ("GET", "/apis/scheduling.k8s.io/v1/priorityclasses/high", ""),
        (
            "PATCH",
            "/apis/scheduling.k8s.io/v1/priorityclasses/high?fieldManager=thinkus-ops&force=true&dryRun=All",
            "application/apply-patch+yaml",
        ),
        # the server takes DeleteOptions from the body when there is one: the dry run must be in it
        (
            "DELETE",
            "/apis/scheduling.k8s.io/v1/priorityclasses/high?dryRun=All",
            '{"apiVersion": "v1", "dryRun": ["All"], "kind": "DeleteOptions", "propagationPolicy": "Background"}',
        ),
        ("GET", "/apis/example.com/v1", ""),
    ]
