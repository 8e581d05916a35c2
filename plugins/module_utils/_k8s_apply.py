# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pure helpers of thinkus.ops.k8s_apply: input checks, kind resolution, Secret data and autoscaler targets."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from ansible_collections.thinkus.ops.plugins.module_utils._k8s import ObjectRef, UnknownKind

CRD_API_VERSION = "apiextensions.k8s.io/v1"
CRD_KIND = "CustomResourceDefinition"

# Kinds prune never deletes: deleting them deletes everything in or of them.
NEVER_PRUNED = frozenset(("Namespace", CRD_KIND))


def validate_resources(resources: list[dict[str, Any]]) -> list[str]:
    """Every problem with the shape of the objects given, before any request is made."""
    problems: list[str] = []
    for index, obj in enumerate(resources):
        where = f"resources[{index}]"
        if not isinstance(obj, dict):
            problems.append(f"{where} is not a dictionary")
            continue
        if not obj.get("apiVersion") or not obj.get("kind"):
            problems.append(f"{where}: apiVersion and kind are required")
            continue
        if not (obj.get("metadata") or {}).get("name"):
            problems.append(f"{where} ({obj['kind']}): metadata.name is missing")
    return problems


def crd_kinds(resources: list[dict[str, Any]]) -> dict[tuple[str, str], bool]:
    """(apiVersion, kind) -> namespaced, for every version of the CRDs in the set."""
    found: dict[tuple[str, str], bool] = {}
    for obj in resources:
        if (obj.get("apiVersion"), obj.get("kind")) != (CRD_API_VERSION, CRD_KIND):
            continue
        spec = obj.get("spec") or {}
        kind = (spec.get("names") or {}).get("kind")
        group = spec.get("group")
        if not kind or not group:
            continue
        for version in spec.get("versions") or []:
            if version.get("name") and version.get("served", True):
                found[(f"{group}/{version['name']}", kind)] = spec.get("scope", "Namespaced") == "Namespaced"
    return found


def resolve_refs(
    resources: list[dict[str, Any]],
    namespace: str | None,
    namespaced_of: Callable[[str, str], bool],
    unknown_kinds_ok: bool = False,
) -> tuple[list[ObjectRef], set[tuple[str, str]], list[str]]:
    """References of the objects, the kinds still to come from CRDs of the set, and every problem.

    ``namespaced_of(api_version, kind)`` asks the server (discovery) and raises UnknownKind
    for a kind it does not serve; such a kind is accepted when a CustomResourceDefinition
    earlier in the set defines it, or with ``unknown_kinds_ok`` (deleting: no such object
    can exist). Any other error (the server unreachable, discovery refused) is raised.
    """
    defined = crd_kinds(resources)
    refs: list[ObjectRef] = []
    pending: set[tuple[str, str]] = set()
    problems: list[str] = []
    seen: set[ObjectRef] = set()
    for index, obj in enumerate(resources):
        where = f"resources[{index}]"
        key = (obj["apiVersion"], obj["kind"])
        try:
            namespaced = namespaced_of(*key)
        except UnknownKind as exc:
            earlier = crd_kinds(resources[:index])
            if unknown_kinds_ok:
                refs.append(ObjectRef.of(obj, namespace))
                continue
            if key not in earlier:
                hint = " (nor does a CustomResourceDefinition before it in resources)" if key in defined else ""
                problems.append(f"{where}: {exc}{hint}")
                refs.append(ObjectRef.of(obj, namespace))
                continue
            namespaced = earlier[key]
            pending.add(key)
        ref = ObjectRef.of(obj, namespace, namespaced)
        refs.append(ref)
        if namespaced and not ref.namespace:
            problems.append(f"{where} ({ref.kind} {ref.name}): no metadata.namespace and no namespace option")
        if ref in seen:
            problems.append(f"{where}: {ref} is listed twice")
        seen.add(ref)
    return refs, pending, problems


def split_kind(entry: str) -> tuple[str | None, str]:
    """A prune_kinds entry: C(Kind) or C(<apiVersion>/Kind) -> (apiVersion or None, Kind)."""
    api_version, _sep, kind = entry.rpartition("/")
    return (api_version or None), kind


def secret_as_data(manifest: dict[str, Any]) -> dict[str, Any]:
    """A Secret's stringData moved into data (base64), so that the field manager owns each key.

    The API server folds stringData into data on every write, but server-side apply records
    the stringData fields as owned, not the data keys: a key later left out of stringData
    would stay in the Secret. Sent as data, it is removed.
    """
    if (manifest.get("apiVersion"), manifest.get("kind")) != ("v1", "Secret") or "stringData" not in manifest:
        return manifest
    out = dict(manifest)
    data = dict(out.get("data") or {})
    for key, value in (out.pop("stringData") or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    out["data"] = data
    return out


def hpa_targets(resources: list[dict[str, Any]], namespace: str | None) -> set[ObjectRef]:
    """The Deployments that a HorizontalPodAutoscaler of the set scales."""
    targets: set[ObjectRef] = set()
    for obj in resources:
        if obj.get("kind") != "HorizontalPodAutoscaler":
            continue
        target = (obj.get("spec") or {}).get("scaleTargetRef") or {}
        if target.get("kind") == "Deployment" and target.get("name"):
            hpa_namespace = (obj.get("metadata") or {}).get("namespace") or namespace
            targets.add(ObjectRef(target.get("apiVersion") or "apps/v1", "Deployment", target["name"], hpa_namespace))
    return targets
