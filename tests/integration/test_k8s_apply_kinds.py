# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""thinkus.ops.k8s_apply and k8s_info with kinds that no table lists, against the local kube-apiserver.

One call applies a CustomResourceDefinition the test makes up (a group of its own), an object of
that new kind, and built-in kinds the collection never listed before (PriorityClass, cluster-scoped;
ResourceQuota and LimitRange, namespaced). The order of the runs is check mode -> real run -> check
mode again -> real run again, then the same for state=absent; after each, what the API server holds
is read with the kubernetes client: nothing after check mode, every object owned by the collection's
field manager after the real run, nothing changed by the second run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.support.ansible import REPO_ROOT, PlaybookResult, run_playbook

pytestmark = [pytest.mark.localenv, pytest.mark.slow]

PLAYBOOK = "tests/integration/targets/k8s_apply/apply.yml"
KUBECONFIG = REPO_ROOT / ".local" / "kubeconfig"
APPLY = "Apply the objects"
FIELD_MANAGER = "thinkus-ops"


class Cluster:
    """The objects of one test, read straight from the API server (None when absent)."""

    def __init__(self, api: client.ApiClient, suffix: str) -> None:
        self.api = api
        self.namespace = f"thinkus-test-kinds-{suffix}"
        self.group = f"k{suffix}.thinkus.test"
        self.crd_name = f"widgets.{self.group}"
        self.priority_class = f"thinkus-test-{suffix}"

    def _read(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def crd(self) -> Any:
        return self._read(client.ApiextensionsV1Api(self.api).read_custom_resource_definition, self.crd_name)

    def widget(self) -> Any:
        custom = client.CustomObjectsApi(self.api)
        return self._read(custom.get_namespaced_custom_object, self.group, "v1", self.namespace, "widgets", "gear")

    def priority(self) -> Any:
        return self._read(client.SchedulingV1Api(self.api).read_priority_class, self.priority_class)

    def quota(self) -> Any:
        return self._read(client.CoreV1Api(self.api).read_namespaced_resource_quota, "compute", self.namespace)

    def limits(self) -> Any:
        return self._read(client.CoreV1Api(self.api).read_namespaced_limit_range, "defaults", self.namespace)

    def all(self) -> dict[str, Any]:
        return {
            "crd": self.crd(),
            "widget": self.widget(),
            "priority": self.priority(),
            "quota": self.quota(),
            "limits": self.limits(),
        }


def managers(obj: Any) -> set[tuple[str, str]]:
    """(manager, operation) of an object's managedFields, from a model or a custom object dict."""
    if isinstance(obj, dict):
        fields = obj["metadata"].get("managedFields") or []
        return {(f["manager"], f["operation"]) for f in fields}
    return {(f.manager, f.operation) for f in obj.metadata.managed_fields or []}


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    api = config.new_client_from_config(config_file=str(KUBECONFIG))
    client.VersionApi(api).get_code(_request_timeout=10)  # fail, not skip, when down
    found = Cluster(api, uuid.uuid4().hex[:8])
    client.CoreV1Api(api).create_namespace({"metadata": {"name": found.namespace}})
    try:
        yield found
    finally:
        for delete, args in (
            (client.CoreV1Api(api).delete_namespace, (found.namespace,)),
            (client.ApiextensionsV1Api(api).delete_custom_resource_definition, (found.crd_name,)),
            (client.SchedulingV1Api(api).delete_priority_class, (found.priority_class,)),
        ):
            try:
                delete(*args)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def resources(cluster: Cluster, quota_pods: str = "10") -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/managed-by": "thinkus.ops", "thinkus.test/kinds": "yes"}
    return [
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": cluster.crd_name},
            "spec": {
                "group": cluster.group,
                "scope": "Namespaced",
                "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "properties": {"size": {"type": "integer"}, "color": {"type": "string"}},
                                    }
                                },
                            }
                        },
                    }
                ],
            },
        },
        {
            "apiVersion": f"{cluster.group}/v1",
            "kind": "Widget",
            "metadata": {"name": "gear", "labels": labels},
            "spec": {"size": 3, "color": "teal"},
        },
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": cluster.priority_class, "labels": labels},
            "value": 1000,
            "globalDefault": False,
            "description": "thinkus.ops integration test",
        },
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "compute", "labels": labels},
            "spec": {"hard": {"pods": quota_pods}},
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "defaults", "labels": labels},
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "200m"}, "defaultRequest": {"cpu": "100m"}}]},
        },
    ]


def apply(cluster: Cluster, objects: list[dict[str, Any]], check: bool = False, **extra: Any) -> PlaybookResult:
    result = run_playbook(
        PLAYBOOK,
        check=check,
        diff=True,
        json_output=True,
        extra_vars={
            "test_kubeconfig": str(KUBECONFIG),
            "test_namespace": cluster.namespace,
            "test_resources": objects,
            **extra,
        },
    )
    assert result.rc == 0, result.output
    return result


def test_a_crd_kind_and_kinds_no_table_listed_are_applied_owned_idempotent_and_deleted(cluster: Cluster) -> None:
    objects = resources(cluster)

    # check mode: the server dry-runs what it can; nothing is stored
    previewed = apply(cluster, objects, check=True)
    preview = previewed.task(APPLY)
    assert preview["changed"] is True
    assert [(o["kind"], o["created"], o["changed"]) for o in preview["objects"]] == [
        ("CustomResourceDefinition", True, True),
        ("Widget", True, True),
        ("PriorityClass", True, True),
        ("ResourceQuota", True, True),
        ("LimitRange", True, True),
    ]
    assert f"Widget {cluster.namespace}/gear: its kind comes from a CRD this run creates" in previewed.output
    assert len(preview["diff"]) == 5
    assert cluster.all() == dict.fromkeys(("crd", "widget", "priority", "quota", "limits"))

    # real run: every object is in the cluster, its fields owned by the collection's field manager
    first = apply(cluster, objects)
    applied = first.task(APPLY)
    assert applied["changed"] is True
    assert all(o["changed"] and o["created"] for o in applied["objects"])
    ns = cluster.namespace
    assert [o["namespace"] for o in applied["objects"]] == [None, ns, None, ns, ns]
    live = cluster.all()
    assert all(live.values()), live
    assert live["widget"]["spec"] == {"size": 3, "color": "teal"}
    assert live["priority"].value == 1000
    assert live["quota"].spec.hard == {"pods": "10"}
    assert live["limits"].spec.limits[0].default == {"cpu": "200m"}
    for name, obj in live.items():
        assert (FIELD_MANAGER, "Apply") in managers(obj), (name, managers(obj))
    # k8s_info read each of them back through discovery
    read_back = first.task("Read the objects back")["results"]
    assert [len(r["resources"]) for r in read_back] == [1, 1, 1, 1, 1]

    # check mode again, then a second real run: nothing to change
    assert apply(cluster, objects, check=True).task(APPLY)["changed"] is False
    again = apply(cluster, objects).task(APPLY)
    assert again["changed"] is False
    assert not any(o["changed"] for o in again["objects"])
    assert again.get("diff", []) == []

    # a change to one object is that object's change only, with a diff against what the server held
    grown = apply(cluster, resources(cluster, quota_pods="20"), check=True).task(APPLY)
    assert [o["kind"] for o in grown["objects"] if o["changed"]] == ["ResourceQuota"]
    (entry,) = grown["diff"]
    assert "pods: '10'" in entry["before"] and "pods: '20'" in entry["after"]
    assert cluster.quota().spec.hard == {"pods": "10"}

    # state=absent: check mode deletes nothing, the real run deletes, a second run finds nothing to do
    removable = objects[1:]  # the Widget and the built-ins; the CRD last, on its own
    gone = apply(cluster, removable, check=True, test_state="absent").task(APPLY)
    assert gone["changed"] is True and all(o["deleted"] for o in gone["objects"])
    assert all(cluster.all().values())
    assert apply(cluster, removable, test_state="absent").task(APPLY)["changed"] is True
    assert cluster.widget() is None and cluster.priority() is None
    assert apply(cluster, removable, test_state="absent").task(APPLY)["changed"] is False
    assert apply(cluster, objects[:1], test_state="absent").task(APPLY)["changed"] is True
    # the CRD is going: its kind is no longer served, and deleting its objects is no change
    assert apply(cluster, objects[1:2], test_state="absent").task(APPLY)["changed"] is False


def test_prune_takes_a_kind_by_api_version_and_keeps_what_the_set_holds(cluster: Cluster) -> None:
    selector = "thinkus.test/kinds=yes"
    quota, limits = resources(cluster)[3:5]
    apply(cluster, [quota, limits])
    pruned = apply(
        cluster,
        [quota],
        test_prune=True,
        test_prune_selector=selector,
        test_prune_kinds=["v1/ResourceQuota", "LimitRange"],
    ).task(APPLY)
    assert pruned["changed"] is True
    assert pruned["pruned"] == [f"LimitRange {cluster.namespace}/defaults"]
    assert cluster.limits() is None and cluster.quota() is not None
