# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private helpers of thinkus.ops.k8s_cluster_guard: is this the cluster the inventory names?

A cluster proves which environment it is by two things it carries itself, not by the name a
kubeconfig gives it: the UID of its ``kube-system`` namespace (fixed for the cluster's life,
pinned in the inventory) and an environment marker, a ConfigMap the collection writes once
("claims") and never overwrites. Pure functions, unit-tested without a cluster, and
``check_cluster``, the check itself (k8s_cluster_guard, and k8s_release before its first change).
"""

from __future__ import annotations

import datetime
from typing import Any

from ansible_collections.thinkus.ops.plugins.module_utils._k8s import K8sClient, K8sError, ObjectRef
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_lease import UTC

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


class Refused(Exception):
    """The cluster is not the environment's own: nothing was changed. ``result`` is what was found."""

    def __init__(self, msg: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result or {}


def identity_spec() -> dict[str, Any]:
    """The ``identity`` option (AnsibleModule argument spec) of the modules that check the cluster."""
    return dict(
        environment=dict(type="str", required=True),
        uid=dict(type="str", default=""),
        claim=dict(type="bool", default=False),
        marker_namespace=dict(type="str", default="kube-system"),
        marker_name=dict(type="str", default="thinkus-environment"),
    )


def input_problem(context: str | None, identity: dict[str, Any]) -> str | None:
    """What is wrong with the check's own inputs (the pinned context, the environment), before any request."""
    if not (context or "").strip():
        return "context must name the kubeconfig context of the environment's cluster; it is empty"
    if not (identity["environment"] or "").strip():
        return "identity.environment must name the environment the cluster is marked as; it is empty"
    return None


def check_cluster(client: K8sClient, identity: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """Read the cluster's identity, raise Refused naming each mismatch, claim an unmarked cluster when allowed.

    Returns context, server, uid, environment and claimed (in check mode: whether a real run would claim).
    """
    ref = ObjectRef("v1", "ConfigMap", identity["marker_name"], identity["marker_namespace"])
    marker_ref = f"ConfigMap {ref.namespace}/{ref.name}"
    kube_system = client.request("GET", "/api/v1/namespaces/kube-system")
    found_uid = str((kube_system.get("metadata") or {}).get("uid", ""))
    found_env = marker_environment(client.get(ref))
    problems = identity_problems(
        where=client.where(),
        marker_ref=marker_ref,
        expected_environment=identity["environment"],
        found_environment=found_env,
        expected_uid=identity["uid"],
        found_uid=found_uid,
        claim=identity["claim"],
    )
    if problems:
        raise Refused(
            "Refusing to touch this cluster: " + "; ".join(problems) + ". Nothing was changed.",
            {"context": client.context, "server": client.server, "uid": found_uid, "environment": found_env},
        )
    claimed = found_env is None
    if claimed and not check_mode:
        now = datetime.datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = marker_body(ref.name, ref.namespace or "", identity["environment"], now)
        try:
            client.request("POST", f"/api/v1/namespaces/{ref.namespace}/configmaps", body=body)
        except K8sError as exc:
            if exc.status != 409:
                raise
            # Another run claimed it between our read and write: check what it wrote.
            found_env = marker_environment(client.get(ref))
            if found_env != identity["environment"]:
                raise Refused(
                    f"Refusing to touch this cluster: {client.where()} was just marked as environment "
                    f"{found_env!r} ({marker_ref}) by another run, expected {identity['environment']!r}. "
                    "Nothing was changed."
                ) from None
            claimed = False
    return {
        "claimed": claimed,
        "context": client.context,
        "server": client.server,
        "uid": found_uid,
        "environment": identity["environment"],
    }
