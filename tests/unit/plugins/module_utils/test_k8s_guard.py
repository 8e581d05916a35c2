# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of the cluster identity comparison of thinkus.ops.k8s_cluster_guard."""

from __future__ import annotations

from typing import Any

from ansible_collections.thinkus.ops.plugins.module_utils._k8s_guard import (
    identity_problems,
    marker_body,
    marker_environment,
)

UID = "b224b504-05d3-43e6-8d0c-7c6c066c8345"


def problems(**overrides: Any) -> list[str]:
    args: dict[str, Any] = {
        "where": "https://k8s (kubeconfig context 'thinkus-staging')",
        "marker_ref": "ConfigMap kube-system/thinkus-environment",
        "expected_environment": "staging",
        "found_environment": "staging",
        "expected_uid": "",
        "found_uid": UID,
        "claim": False,
    }
    return identity_problems(**(args | overrides))


def test_matching_identity_has_no_problem() -> None:
    assert problems() == []
    assert problems(expected_uid=UID) == []


def test_another_environment_names_both_sides() -> None:
    (problem,) = problems(found_environment="prod", claim=True)
    assert "is marked as environment 'prod'" in problem
    assert "expected 'staging'" in problem
    assert "thinkus-staging" in problem


def test_a_different_uid_names_both_sides() -> None:
    (problem,) = problems(expected_uid="0000")
    assert f"is {UID!r}, expected '0000'" in problem


def test_an_unmarked_cluster_needs_claim() -> None:
    (problem,) = problems(found_environment=None)
    assert "carries no environment marker" in problem and "thinkus_cluster_claim=true" in problem
    assert problems(found_environment=None, claim=True) == []


def test_marker_round_trip() -> None:
    body = marker_body("thinkus-environment", "kube-system", "local", "2026-01-01T00:00:00Z")
    assert marker_environment(body) == "local"
    assert marker_environment(None) is None
    assert marker_environment({"data": {}}) == ""
    assert body["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "thinkus.ops"}
