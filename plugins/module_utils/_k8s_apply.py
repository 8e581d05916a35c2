# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pure helpers of thinkus.ops.k8s_apply: input checks and autoscaler targets."""

from __future__ import annotations

from typing import Any

from ansible_collections.thinkus.ops.plugins.module_utils._k8s import KINDS, ObjectRef


def validate_resources(resources: list[dict[str, Any]], namespace: str | None) -> list[str]:
    """Every problem with the objects given, before any request is made."""
    problems: list[str] = []
    seen: set[ObjectRef] = set()
    for index, obj in enumerate(resources):
        where = f"resources[{index}]"
        if not isinstance(obj, dict):
            problems.append(f"{where} is not a dictionary")
            continue
        key = (obj.get("apiVersion"), obj.get("kind"))
        name = (obj.get("metadata") or {}).get("name")
        if key not in KINDS:
            problems.append(f"{where}: unsupported apiVersion/kind {key[0]}/{key[1]}")
            continue
        if not name:
            problems.append(f"{where} ({key[1]}): metadata.name is missing")
            continue
        ref = ObjectRef.of(obj, namespace)
        if KINDS[key][2] and not ref.namespace:
            problems.append(f"{where} ({key[1]} {name}): no metadata.namespace and no namespace option")
        if ref in seen:
            problems.append(f"{where}: {ref} is listed twice")
        seen.add(ref)
    return problems


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
