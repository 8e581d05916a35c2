# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""thinkus.ops.k8s_release: which values it masks, and the input it refuses before any request."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from ansible_collections.thinkus.ops.plugins.modules import k8s_release
from ansible_collections.thinkus.ops.plugins.plugin_utils._controller_module import ControllerModule, _Exit


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_secret_values_are_the_data_as_given_and_decoded_and_the_registry_password() -> None:
    login = {"username": "ci", "password": "hunter2-registry", "auth": b64("ci:x")}
    config = {"auths": {"registry.example:5000": login}}
    secrets = [
        {
            "kind": "Secret",
            "metadata": {"name": "db", "labels": {"part-of": "thinkus"}},
            "data": {"url": b64("pg://u:p@h")},
        },
        {"kind": "Secret", "metadata": {"name": "ai"}, "stringData": {"key": "sk-plain"}},
        {"kind": "Secret", "metadata": {"name": "pull"}, "data": {".dockerconfigjson": b64(json.dumps(config))}},
    ]
    values = k8s_release.secret_values(secrets)
    assert {"pg://u:p@h", b64("pg://u:p@h"), "sk-plain", b64("sk-plain"), "hunter2-registry", b64("ci:x")} <= values
    # names, labels and the registry's address are not secrets: masking them would hide the diff
    assert not values & {"db", "ai", "pull", "thinkus", "registry.example:5000", "ci", "Secret"}


def params(**own: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kubeconfig": None,
        "context": None,
        "request_timeout": 5,
        "namespace": "thinkus",
        "namespace_labels": {},
        "lock": {"name": "thinkus-deploy", "holder": None, "lease_duration": 60, "wait_timeout": 0},
        "secrets": [],
        "resources": [],
        "prune_kinds": None,
        "identity": None,
        "preflight_problems": [],
    }
    base.update(own)
    return base


@pytest.mark.parametrize(
    ("own", "expected"),
    [
        ({"lock": {"name": "l", "lease_duration": 0}}, "lock.lease_duration must be at least 1 second, got 0"),
        (
            {"secrets": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}]},
            "ConfigMap is not a Secret",
        ),
        ({"resources": [{"kind": "Deployment", "metadata": {"name": "d"}}]}, "apiVersion"),
        (
            {"identity": {"environment": "staging", "uid": "", "claim": False}},
            "context must name the kubeconfig context of the environment's cluster; it is empty",
        ),
        (
            {"context": "thinkus-staging", "identity": {"environment": " ", "uid": "", "claim": False}},
            "identity.environment must name the environment the cluster is marked as; it is empty",
        ),
        (
            # the caller's own checks come first, before the module's: both problems are present here
            {
                "preflight_problems": ["k8s_deploy_namespace (Bad) must be a DNS label", "and another"],
                "resources": [{}],
            },
            "k8s_deploy_namespace (Bad) must be a DNS label; and another",
        ),
    ],
)
def test_bad_input_fails_before_any_request(own: dict[str, Any], expected: str) -> None:
    module = ControllerModule(params(**own), check_mode=False, diff=False)
    with pytest.raises(_Exit) as done:
        k8s_release.run_module(module)  # no kubeconfig: a request would fail differently
    assert done.value.result["failed"] is True
    assert expected in done.value.result["msg"]


def test_no_log_on_the_secrets_is_narrowed_to_their_values() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "data": {"url": b64("pg://s3cret")}}
    module = ControllerModule(params(secrets=[secret], lock={"name": "l", "lease_duration": 0}), False, False)
    # what no_log on the option makes Ansible mask: every string of it (the action plugin loads these)
    module.no_log_values.update({"v1", "Secret", "db", b64("pg://s3cret"), "a-redacted-value"})
    with pytest.raises(_Exit):
        k8s_release.run_module(module)
    assert {"pg://s3cret", b64("pg://s3cret"), "a-redacted-value"} <= module.no_log_values
    assert not module.no_log_values & {"v1", "Secret", "db"}
