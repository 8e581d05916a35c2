# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The k8s_deploy role's preflight checks and image references (plugins/filter/k8s_deploy.py).

The inputs are the role's own defaults (roles/k8s_deploy/defaults/main.yml), changed one value at a
time; tests/integration/test_preflight_inputs.py runs the same checks through deploy.yml.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from ansible_collections.thinkus.ops.plugins.filter.k8s_deploy import image_references, preflight_problems, quantity

ROLE = Path(__file__).resolve().parents[4] / "roles" / "k8s_deploy"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
SECRET_KEYS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["_k8s_deploy_secret_keys"]
DIGEST = "sha256:" + "ab" * 32


def values(**changes: Any) -> dict[str, Any]:
    """The role's defaults as the preflight gets them, with a tag set (the default, empty, is refused)."""
    base = {k: copy.deepcopy(v) for k, v in DEFAULTS.items() if k.startswith("k8s_deploy_")}
    base["_k8s_deploy_services"] = base.pop("k8s_deploy_services")
    base["k8s_deploy_image_tag"] = "1.4.2"
    base["docker_build_results"] = {}
    base.update(changes)
    return base


def services(**per_service: dict[str, Any]) -> dict[str, Any]:
    """The default services, with some keys of some services replaced."""
    out = copy.deepcopy(DEFAULTS["k8s_deploy_services"])
    for name, change in per_service.items():
        out[name.replace("_", "-")].update(change)
    return out


def problems(**changes: Any) -> list[str]:
    return preflight_problems(values(**changes), SECRET_KEYS, [])


def test_the_defaults_with_a_tag_pass() -> None:
    assert problems() == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"k8s_deploy_namespace": "Thinkus"}, "k8s_deploy_namespace (Thinkus) and k8s_deploy_lock_name"),
        ({"k8s_deploy_field_manager": ""}, "k8s_deploy_field_manager a non-empty string"),
        ({"k8s_deploy_rollout_timeout": "300"}, "k8s_deploy_rollout_timeout and k8s_deploy_lock_duration must be"),
        ({"k8s_deploy_request_timeout": True}, "k8s_deploy_request_timeout a positive number"),
        ({"k8s_deploy_lock_duration": 20}, "k8s_deploy_lock_duration (20 s) is too short for"),
        ({"_k8s_deploy_services": {"worker": "x"}}, "must map each service name to a dictionary"),
        ({"_k8s_deploy_services": services(worker={"replicas": -1})}, "['worker']: the name must be a DNS-1123"),
        ({"_k8s_deploy_services": services(worker={"ports": [{"name": "http"}]})}, "with integer ports"),
        (
            {"_k8s_deploy_services": services(worker={"readiness_probe": {"path": "/ready", "port": 9999}})},
            "['worker'].readiness_probe: path must start with '/' (got '/ready'), port one of the ports the container"
            " declares ([8001]; got 9999)",
        ),
        (
            {"_k8s_deploy_services": services(worker={"metrics": {"port": 8001, "path": "metrics"}})},
            "['worker'].metrics must be {} or {port, path}",
        ),
        (
            {"_k8s_deploy_services": services(py_ai_engine={"hpa": {"min_replicas": 5, "max_replicas": 3}})},
            "['py-ai-engine'].hpa must be {} or {min_replicas, max_replicas, cpu_utilization,"
            " scale_down_stabilization_seconds} with integers, 1 <= min_replicas <= max_replicas and a stabilization"
            " window of 0 to 3600 seconds (got min 5, max 3, window none); pdb must be a dictionary",
        ),
        ({"k8s_deploy_image_tag": "latest"}, "a tag other than 'latest' (k8s_deploy_image_tag \"latest\""),
        ({"k8s_deploy_image_prefix": "127.0.0.1:5000/Thinkus"}, "is '127.0.0.1:5000/Thinkus/go-orchestrator:1.4.2'"),
        (
            {"_k8s_deploy_services": services(worker={"resources": {"requests": {"memory": "48MB"}}})},
            "k8s_deploy_services['worker'].resources.requests.memory is \"48MB\", not a Kubernetes quantity",
        ),
        (
            {
                "_k8s_deploy_services": services(
                    worker={"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}
                )
            },
            "k8s_deploy_services['worker'].resources.requests.cpu (2) is above its limit (1): a request must be at most"
            " the limit (k8s_deploy_services with k8s_deploy_service_overrides).",
        ),
        ({"k8s_deploy_config": {"AI SERVICE URL": "x"}}, "must match [-._a-zA-Z0-9]+ (at most 253 characters); not"),
        (
            {"_k8s_deploy_services": services(worker={"secret_env": [{"name": "X", "secret": "nope", "key": "k"}]})},
            "['worker'].secret_env must be a list of {name, secret, key} naming Secret keys the role manages;"
            " unknown: nope/k (known: db-credentials/url,",
        ),
        (
            {"k8s_deploy_registry_pull_secret": "pull", "k8s_deploy_registry_server": "https://r.example"},
            'k8s_deploy_registry_server ("https://r.example") a registry host[:port] without a scheme',
        ),
        ({"k8s_deploy_tolerations": [{"key": "k", "effect": "Never"}]}, "k8s_deploy_tolerations must be a list of"),
        (
            {"k8s_deploy_node_selector": {"disk": 1}},
            'k8s_deploy_node_selector must map label names to strings ({"disk": 1})',
        ),
    ],
)
def test_each_check_names_the_variable_and_the_form(changes: dict[str, Any], expected: str) -> None:
    found = problems(**changes)
    assert len(found) >= 1
    assert expected in "; ".join(found)


def test_the_first_section_that_fails_stops_there() -> None:
    """Bad names and bad services: only the names are reported (the later checks would see wrong types)."""
    found = problems(k8s_deploy_namespace="Bad_Name", _k8s_deploy_services={"worker": 1})
    assert len(found) == 1 and found[0].startswith("k8s_deploy_namespace (Bad_Name)")


def test_a_section_names_every_service_it_refuses() -> None:
    bad = {"replicas": "three"}
    found = problems(_k8s_deploy_services=services(worker=bad, py_ai_engine=bad))
    assert {p.split("]")[0] for p in found} == {"k8s_deploy_services['py-ai-engine'", "k8s_deploy_services['worker'"}


def test_missing_secrets_are_named_never_their_values() -> None:
    found = preflight_problems(
        values(
            k8s_deploy_registry_pull_secret="pull",
            k8s_deploy_registry_server="r:5000",
            k8s_deploy_registry_username="u",
            k8s_deploy_registry_password="hunter2-not-shown",
            k8s_deploy_rollout_timeout=0,
        ),
        SECRET_KEYS,
        ["k8s_deploy_openai_api_key (Secret ai-credentials, key openai-key)"],
    )
    assert "hunter2" not in str(found)
    found = preflight_problems(
        values(), SECRET_KEYS, ["k8s_deploy_openai_api_key (Secret ai-credentials, key openai-key)"]
    )
    assert found == [
        "these secret values are empty or undefined: k8s_deploy_openai_api_key (Secret ai-credentials, key openai-key)."
        " Set them from Ansible Vault in the inventory (non-empty strings)."
    ]


def test_image_references_prefer_the_pushed_digest() -> None:
    svc = {"api": {"image": "api"}, "ext": {"image": "docker.example/ext"}, "pinned": {"image": "p@" + DIGEST}}
    built = {"api": {"reference": "127.0.0.1:5000/thinkus/api@" + DIGEST}}
    assert image_references(svc, built, "thinkus", "1.0") == {
        "api": "127.0.0.1:5000/thinkus/api@" + DIGEST,
        "ext": "docker.example/ext:1.0",
        "pinned": "thinkus/p@" + DIGEST,
    }
    assert image_references({"api": {"tag": "2.0"}}, {}, "", "1.0") == {"api": "api:2.0"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500m", 0.5), ("2", 2.0), ("512Mi", 512 * 2**20), ("1e3", 1000.0), ("1E", 1e18), ("0.5", 0.5), ("48MB", None)],
)
def test_quantities_in_base_units(text: str, expected: float | None) -> None:
    assert quantity(text) == expected
