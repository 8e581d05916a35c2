# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of k8s_rollout's wait: an API server that goes away for a while does not end it."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.thinkus.ops.plugins.module_utils._k8s import K8sError, K8sUnreachable, is_transient
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_steps import rolled_out as rolled_out_step
from ansible_collections.thinkus.ops.plugins.modules.k8s_rollout import Rollout


class FakeModule:
    check_mode = False

    def __init__(self) -> None:
        self.params = {"namespace": "thinkus", "poll_interval": 0.01}
        self.warnings: list[str] = []

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)


class FlakyClient:
    """Answers with ``answers`` in turn: an exception is raised, a dict returned."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls = 0

    def get(self, _ref: Any) -> dict[str, Any]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


def rolled_out() -> dict[str, Any]:
    return {
        "metadata": {"name": "api", "namespace": "thinkus", "generation": 3},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
    }


def test_the_wait_goes_on_while_the_api_server_restarts() -> None:
    down = K8sUnreachable("cannot reach the Kubernetes API server https://127.0.0.1:6443: connection refused")
    starting = K8sError("the server is starting", status=503)
    module = FakeModule()
    client = FlakyClient([down, down, starting, rolled_out()])
    state = Rollout(module, client).wait(["api"], timeout=10)  # type: ignore[arg-type]
    assert state["api"][1].done
    assert client.calls == 4
    assert len(module.warnings) == 2  # each distinct cause once, naming the API server
    assert "cannot reach the Kubernetes API server" in module.warnings[0]


def test_an_api_server_down_past_the_timeout_fails_naming_it() -> None:
    down = K8sUnreachable("cannot reach the Kubernetes API server https://127.0.0.1:6443: connection refused")
    with pytest.raises(K8sUnreachable, match="Kubernetes API server"):
        Rollout(FakeModule(), FlakyClient([down])).wait(["api"], timeout=0.05)  # type: ignore[arg-type]


def test_a_refusal_is_not_retried() -> None:
    forbidden = K8sError("deployments.apps is forbidden", status=403)
    client = FlakyClient([forbidden, rolled_out()])
    with pytest.raises(K8sError, match="forbidden"):
        Rollout(FakeModule(), client).wait(["api"], timeout=10)  # type: ignore[arg-type]
    assert client.calls == 1
    assert not is_transient(forbidden)
    assert not is_transient(K8sError("Deployment thinkus/api does not exist"))


class WaitModule(FakeModule):
    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.params.update(deployments=names, timeout=10, rollback_revisions={})


def named(name: str, **status: int) -> dict[str, Any]:
    obj = rolled_out()
    obj["metadata"]["name"] = name
    obj["status"].update(status)
    return obj


def test_a_deployment_whose_apply_answer_shows_it_rolled_out_is_not_read_again() -> None:
    module = WaitModule(["api", "worker", "engine"])
    client = FlakyClient([named("engine")])
    answers = {
        "api": named("api"),
        "worker": named("worker", observedGeneration=2),  # a new generation: it rolls, and is waited for
        "engine": named("engine", availableReplicas=1),  # not all available: waited for
        "other": named("other"),  # not one of the Deployments waited for
    }
    result = rolled_out_step(module, Rollout(module, client), answers)  # type: ignore[arg-type]
    assert [d["name"] for d in result["deployments"]] == ["api", "worker", "engine"]
    assert {d["status"] for d in result["deployments"]} == {"rolled_out"}
    assert client.calls == 2  # worker and engine, read once each; api not at all


def test_without_answers_every_deployment_is_read() -> None:
    module = WaitModule(["api", "worker"])
    client = FlakyClient([rolled_out()])
    result = rolled_out_step(module, Rollout(module, client))  # type: ignore[arg-type]
    assert [d["status"] for d in result["deployments"]] == ["rolled_out", "rolled_out"]
    assert client.calls == 2
