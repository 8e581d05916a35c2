# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""thinkus.ops.k8s_info's read() against a fake client: one object, a list, a kind not served."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.thinkus.ops.plugins.module_utils import _k8s
from ansible_collections.thinkus.ops.plugins.modules import k8s_info

KINDS = {
    ("v1", "Secret"): _k8s.Resource("v1", "Secret", "secrets", True),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): _k8s.Resource(
        "apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False
    ),
}


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def resource(self, api_version: str, kind: str) -> _k8s.Resource:
        if (api_version, kind) not in KINDS:
            raise _k8s.UnknownKind(f"no kind {kind}", status=404)
        return KINDS[(api_version, kind)]

    def get(self, ref: _k8s.ObjectRef) -> dict[str, Any] | None:
        self.calls.append(("get", ref))
        return {"metadata": {"name": ref.name}} if ref.name != "missing" else None

    def list(self, api_version: str, kind: str, namespace: str | None, **selectors: Any) -> list[dict[str, Any]]:
        self.calls.append(("list", api_version, kind, namespace, selectors))
        return [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}]


def params(**given: Any) -> dict[str, Any]:
    base = {"api_version": "v1", "kind": "Secret", "name": None, "namespace": None}
    return {**base, "label_selector": None, "field_selector": None, **given}


def test_one_object_by_name_or_none() -> None:
    fake = FakeClient()
    found = k8s_info.read(fake, params(name="tls", namespace="ns"))
    assert found == {"changed": False, "resources": [{"metadata": {"name": "tls"}}], "api_found": True}
    assert fake.calls == [("get", _k8s.ObjectRef("v1", "Secret", "tls", "ns"))]
    assert k8s_info.read(fake, params(name="missing", namespace="ns"))["resources"] == []


def test_cluster_scoped_kind_ignores_the_namespace_and_a_list_passes_the_selectors() -> None:
    fake = FakeClient()
    crd = "apiextensions.k8s.io/v1"
    k8s_info.read(fake, params(api_version=crd, kind="CustomResourceDefinition", name="x.io", namespace="ns"))
    assert fake.calls[-1] == ("get", _k8s.ObjectRef(crd, "CustomResourceDefinition", "x.io", None))
    listed = k8s_info.read(fake, params(namespace="ns", label_selector="app=x"))
    assert [o["metadata"]["name"] for o in listed["resources"]] == ["a", "b"]
    assert fake.calls[-1] == ("list", "v1", "Secret", "ns", {"label_selector": "app=x", "field_selector": None})


def test_a_kind_the_server_does_not_serve_is_no_error() -> None:
    found = k8s_info.read(FakeClient(), params(api_version="monitoring.coreos.com/v1", kind="PrometheusRule"))
    assert found == {"changed": False, "resources": [], "api_found": False}


def test_a_namespaced_object_by_name_needs_the_namespace() -> None:
    with pytest.raises(_k8s.K8sError, match="needs the namespace option"):
        k8s_info.read(FakeClient(), params(name="tls"))
