# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private helpers of thinkus.ops.k8s_cluster_guard: is this the cluster the inventory names?

A cluster proves which environment it is by two things it carries itself, not by the name a
kubeconfig gives it: the UID of its ``kube-system`` namespace (fixed for the cluster's life,
pinned in the inventory) and an environment marker, a ConfigMap the collection writes once
("claims") and never overwrites. Pure functions, unit-tested without a cluster.
"""

from __future__ import annotations

from typing import Any

MARKER_KEY = "environment"
MANAGED_BY = "thinkus.ops"


def marker_environment(marker: dict[str, Any] | None) -> str | None:
    """The environment a marker ConfigMap names; None when there is no marker."""
    if marker is None:
        return None
    return str((marker.get("data") or {}).get(MARKER_KEY, ""))


def marker_body(name: str, namespace: str, environment: str, claimed_at: str) -> dict[str, Any]:
    """The marker ConfigMap written when a run claims an unmarked cluster."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
            "annotations": {"thinkus.ai/claimed-at": claimed_at},
        },
        "data": {MARKER_KEY: environment},
    }


def identity_problems(
    *,
    where: str,
    marker_ref: str,
    expected_environment: str,
    found_environment: str | None,
    expected_uid: str,
    found_uid: str,
    claim: bool,
) -> list[str]:
    """What does not match, each naming the expected and the found side; empty when all match."""
    problems: list[str] = []
    if expected_uid and expected_uid != found_uid:
        problems.append(
            f"the kube-system namespace UID of {where} is {found_uid!r}, expected {expected_uid!r} "
            "(the cluster's pinned UID)"
        )
    if found_environment is None:
        if not claim:
            problems.append(
                f"{where} carries no environment marker ({marker_ref}), expected one naming "
                f"{expected_environment!r}; to claim a new cluster for it, run once with claim: true in the "
                "role's *_cluster_identity (in the inventories: -e thinkus_cluster_claim=true)"
            )
    elif found_environment != expected_environment:
        problems.append(
            f"{where} is marked as environment {found_environment!r} ({marker_ref}), expected {expected_environment!r}"
        )
    return problems
