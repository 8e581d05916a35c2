# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""thinkus.ops.k8s_apply's apply, delete and prune against an in-memory API server with discovery."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ansible_collections.thinkus.ops.plugins.module_utils import _k8s, _k8s_steps
from ansible_collections.thinkus.ops.plugins.modules import k8s_apply

SERVED = {
    "/api/v1": [("namespaces", "Namespace", False), ("secrets", "Secret", True), ("limitranges", "LimitRange", True)],
    "/apis/scheduling.k8s.io/v1": [("priorityclasses", "PriorityClass", False)],
    "/apis/apiextensions.k8s.io/v1": [("customresourcedefinitions", "CustomResourceDefinition", False)],
}


class FakeServer:
    """Objects by ObjectRef; a CRD applied for real starts serving its kind."""

    def __init__(self) -> None:
        self.documents: dict[str, Any] = {
            path: {"resources": [{"name": p, "kind": k, "namespaced": n} for p, k, n in kinds]}
            for path, kinds in SERVED.items()
        }
        self.documents["/api"] = {"versions": ["v1"]}
        self.documents["/apis"] = {
            "groups": [
                {"preferredVersion": {"groupVersion": v}} for v in ("scheduling.k8s.io/v1", "apiextensions.k8s.io/v1")
            ]
        }
        self.objects: dict[_k8s.ObjectRef, dict[str, Any]] = {}
        self.discovery = _k8s.Discovery(lambda path: copy.deepcopy(self.documents.get(path)))
        self.writes: list[tuple[str, str, bool]] = []
        self.reads: list[tuple[str, ...]] = []
        self.refuse_lists = False

    def resource(self, api_version: str, kind: str) -> _k8s.Resource:
        return self.discovery.resource(api_version, kind)

    def ref_of(self, obj: dict[str, Any], default_namespace: str | None = None) -> _k8s.ObjectRef:
        return _k8s.ObjectRef.of(obj, default_namespace, self.resource(obj["apiVersion"], obj["kind"]).namespaced)

    def get(self, ref: _k8s.ObjectRef) -> dict[str, Any] | None:
        self.resource(ref.api_version, ref.kind)
        self.reads.append(("get", str(ref)))
        return copy.deepcopy(self.objects.get(ref))

    def list(self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None) -> list:
        self.reads.append(("list", kind, str(namespace), str(label_selector)))
        if self.refuse_lists:
            raise _k8s.K8sError("secrets is forbidden: cannot list resource", status=403)
        key, _sep, value = (label_selector or "").partition("=")
        return [
            copy.deepcopy(o)
            for r, o in self.objects.items()
            if (r.api_version, r.kind) == (api_version, kind)
            and (r.namespace in (namespace, None))
            and (o["metadata"].get("labels") or {}).get(key) == value
        ]

    def apply(self, obj: dict[str, Any], field_manager: str, force: bool = True, dry_run: bool = False) -> dict:
        ref = self.ref_of(obj)
        self.writes.append(("apply", str(ref), dry_run))
        answer = copy.deepcopy(obj)
        answer["metadata"]["managedFields"] = [{"manager": field_manager, "operation": "Apply"}]
        if not dry_run:
            self.objects[ref] = answer
            if obj["kind"] == "CustomResourceDefinition":
                spec = obj["spec"]
                path = f"/apis/{spec['group']}/{spec['versions'][0]['name']}"
                self.documents[path] = {
                    "resources": [{"name": spec["names"]["plural"], "kind": spec["names"]["kind"], "namespaced": True}]
                }
        return answer

    def delete(self, ref: _k8s.ObjectRef, dry_run: bool = False) -> None:
        self.writes.append(("delete", str(ref), dry_run))
        if not dry_run:
            self.objects.pop(ref, None)


class FakeModule:
    def __init__(self, check_mode: bool = False, **params: Any) -> None:
        self.check_mode = check_mode
        self._diff = True
        self.warnings: list[str] = []
        self.params = {
            "resources": [],
            "state": "present",
            "namespace": "ns",
            "field_manager": "thinkus-ops",
            "force_conflicts": True,
            "hpa_owns_replicas": True,
            "prune": False,
            "prune_selector": None,
            "prune_kinds": None,
            **params,
        }

    def warn(self, message: str) -> None:
        self.warnings.append(message)


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets"},
        "versions": [{"name": "v1", "served": True}],
    },
}
WIDGET = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "gear"}, "spec": {"size": 3}}
PRIORITY = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 9}


def run(server: FakeServer, module: FakeModule) -> dict[str, Any]:
    refs, pending, problems = k8s_apply.resolve_refs(
        module.params["resources"], module.params["namespace"], lambda v, k: server.resource(v, k).namespaced
    )
    assert problems == []
    return k8s_apply.apply_all(module, server, None, refs, pending)  # type: ignore[arg-type]


def test_check_mode_previews_a_crd_and_its_object_and_stores_nothing() -> None:
    server = FakeServer()
    module = FakeModule(check_mode=True, resources=[CRD, WIDGET, PRIORITY])
    result = run(server, module)
    assert result["changed"] is True
    assert [(o["kind"], o["namespace"], o["created"]) for o in result["objects"]] == [
        ("CustomResourceDefinition", None, True),
        ("Widget", "ns", True),
        ("PriorityClass", None, True),
    ]
    assert server.objects == {}
    assert ("apply", "CustomResourceDefinition widgets.example.com", True) in server.writes
    assert not any("Widget" in w[1] for w in server.writes)  # not sent: the server does not know it yet
    assert module.warnings == [
        "Widget ns/gear: its kind comes from a CRD this run creates, so the server cannot dry-run it yet"
    ]
    assert [d["before_header"] for d in result["diff"]][1] == "Widget ns/gear (absent)"


def test_a_real_run_applies_the_new_kind_after_its_crd_and_a_second_run_changes_nothing() -> None:
    server = FakeServer()
    first = run(server, FakeModule(resources=[CRD, WIDGET, PRIORITY]))
    assert first["changed"] is True
    assert server.objects[_k8s.ObjectRef("example.com/v1", "Widget", "gear", "ns")]["spec"] == {"size": 3}
    again = run(server, FakeModule(resources=[CRD, WIDGET, PRIORITY]))
    assert again["changed"] is False and again["diff"] == []


def test_state_absent_deletes_what_exists_and_a_kind_no_longer_served_is_absent() -> None:
    server = FakeServer()
    run(server, FakeModule(resources=[PRIORITY]))
    module = FakeModule(check_mode=True, state="absent", resources=[PRIORITY, WIDGET])
    refs, _pending, problems = k8s_apply.resolve_refs(
        [PRIORITY, WIDGET], "ns", lambda v, k: server.resource(v, k).namespaced, unknown_kinds_ok=True
    )
    assert problems == []
    preview = k8s_apply.delete_all(module, server, refs, None)  # type: ignore[arg-type]
    assert [(o["kind"], o["deleted"]) for o in preview["objects"]] == [("PriorityClass", True), ("Widget", False)]
    assert preview["diff"][0]["after_header"] == "PriorityClass high (deleted)"
    assert server.objects  # check mode: still there
    module.check_mode = False
    assert k8s_apply.delete_all(module, server, refs, None)["changed"] is True  # type: ignore[arg-type]
    assert server.objects == {}
    assert k8s_apply.delete_all(module, server, refs, None)["changed"] is False  # type: ignore[arg-type]


def test_prune_resolves_kinds_by_api_version_by_the_set_or_by_discovery() -> None:
    server = FakeServer()
    old_limits = {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "old", "labels": {"owner": "me"}}}
    kept_priority = {**PRIORITY, "metadata": {"name": "high", "labels": {"owner": "me"}}}
    old_priority = {**PRIORITY, "metadata": {"name": "old", "labels": {"owner": "me"}}}
    run(server, FakeModule(resources=[old_limits, kept_priority, old_priority]))
    module = FakeModule(
        resources=[kept_priority],
        prune=True,
        prune_selector="owner=me",
        prune_kinds=["PriorityClass", "v1/LimitRange"],
    )
    result = run(server, module)
    assert sorted(result["pruned"]) == ["LimitRange ns/old", "PriorityClass old"]
    assert list(server.objects) == [_k8s.ObjectRef("scheduling.k8s.io/v1", "PriorityClass", "high", None)]
    found = _k8s_steps.prune_resources(server, {"prune_kinds": ["PriorityClass"]}, [])  # type: ignore[arg-type]
    assert found[0].api_version == "scheduling.k8s.io/v1"  # not in the set: found through discovery
    with pytest.raises(_k8s.UnknownKind):
        _k8s_steps.prune_resources(server, {"prune_kinds": ["Nope"]}, [])  # type: ignore[arg-type]


def test_check_mode_prune_leaves_out_a_kind_whose_crd_the_set_creates() -> None:
    server = FakeServer()
    module = FakeModule(check_mode=True, resources=[CRD, WIDGET], prune=True, prune_selector="owner=me")
    result = run(server, module)
    assert result["pruned"] == [] and result["changed"] is True


def test_secret_string_data_reaches_the_server_as_data() -> None:
    server = FakeServer()
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    result = run(server, FakeModule(resources=[secret]))
    stored = server.objects[_k8s.ObjectRef("v1", "Secret", "s", "ns")]
    assert stored["data"] == {"k": "dg=="} and "stringData" not in stored
    assert "dg==" not in result["diff"][0]["after"]


def secret(name: str, value: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": {"k": value}}


def test_objects_of_a_kind_are_read_with_one_list_of_the_sets_labels() -> None:
    server = FakeServer()
    mine = {"owner": "me"}
    others = [secret("a", "MQ==", mine), secret("b", "Mg==", mine), secret("c", "Mw==", mine), PRIORITY]
    run(server, FakeModule(resources=others, prune_selector="owner=me"))
    # A Secret of the set that lost the labels (edited by hand) and one not created yet.
    server.objects[_k8s.ObjectRef("v1", "Secret", "c", "ns")]["metadata"].pop("labels")
    wanted = [
        secret("a", "MQ==", mine),
        secret("b", "Mg==", mine),
        secret("c", "Mw==", mine),
        secret("d", "NA==", mine),
    ]
    server.reads.clear()
    result = run(server, FakeModule(resources=[*wanted, PRIORITY], prune_selector="owner=me"))
    assert server.reads == [
        ("list", "Secret", "ns", "owner=me"),
        ("get", "Secret ns/c"),  # not returned by the list: read on its own
        ("get", "Secret ns/d"),
        ("get", "PriorityClass high"),  # the only one of its kind, and cluster-wide
    ]
    assert [(o["name"], o["changed"], o["created"]) for o in result["objects"]] == [
        ("a", False, False),
        ("b", False, False),
        ("c", True, False),  # the labels go back
        ("d", True, True),
        ("high", False, False),
    ]
    assert [d["before_header"] for d in result["diff"]] == ["Secret ns/c (live)", "Secret ns/d (absent)"]

    # The same answers in check mode, and when the server refuses the list, or there is no selector.
    for module in (
        FakeModule(check_mode=True, resources=[*wanted, PRIORITY], prune_selector="owner=me"),
        FakeModule(resources=[*wanted, PRIORITY]),
    ):
        assert [o["changed"] for o in run(server, module)["objects"]] == [False] * 5
    server.refuse_lists = True
    server.reads.clear()
    again = run(server, FakeModule(resources=[*wanted, PRIORITY], prune_selector="owner=me"))
    assert [o["changed"] for o in again["objects"]] == [False] * 5
    assert [r[0] for r in server.reads] == ["list"] + ["get"] * 5
