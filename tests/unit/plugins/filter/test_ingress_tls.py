# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The ingress_tls role's checks of its variables (plugins/filter/ingress_tls.py).

The inputs are the role's own defaults (roles/ingress_tls/defaults/main.yml) with an ACME e-mail,
changed one value at a time; tests/integration/test_ingress_tls.py runs the same checks through the role.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ansible_collections.thinkus.ops.plugins.filter.ingress_tls import FilterModule, all_hosts, preflight_problems

ROLE = Path(__file__).resolve().parents[4] / "roles" / "ingress_tls"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def values(**changes: Any) -> dict[str, Any]:
    """The role's defaults as the check gets them (the CA namespace templated), with an ACME e-mail."""
    base = {k: copy.deepcopy(v) for k, v in DEFAULTS.items() if k.startswith("ingress_tls_")}
    base["ingress_tls_ca_namespace"] = base["ingress_tls_namespace"]
    base["ingress_tls_acme_email"] = "ops@thinkus.ai"
    base.update(changes)
    return base


def problems(**changes: Any) -> list[str]:
    return preflight_problems(values(**changes))


def test_the_defaults_with_an_acme_email_pass() -> None:
    assert problems() == []


def test_the_filter_is_registered_under_its_documented_name() -> None:
    assert FilterModule().filters() == {"ingress_tls_preflight": preflight_problems}


def test_hosts_are_merged_in_order_each_once() -> None:
    assert all_hosts(values(ingress_tls_extra_hosts=["b.thinkus.ai", "api.thinkus.ai", "b.thinkus.ai"])) == [
        "api.thinkus.ai",
        "b.thinkus.ai",
    ]


@pytest.mark.parametrize(
    ("changes", "invalid"),
    [
        ({"ingress_tls_hosts": ["API.Thinkus.test"]}, ["API.Thinkus.test"]),
        ({"ingress_tls_extra_hosts": ["ok.thinkus.test", "bad_host.thinkus.test"]}, ["bad_host.thinkus.test"]),
        ({"ingress_tls_extra_hosts": ["*.thinkus.ai"]}, ["*.thinkus.ai"]),
        ({"ingress_tls_extra_hosts": ["a" * 64 + ".thinkus.ai"]}, ["a" * 64 + ".thinkus.ai"]),
        ({"ingress_tls_extra_hosts": [("a" * 60 + ".") * 5 + "ai"]}, [("a" * 60 + ".") * 5 + "ai"]),
        ({"ingress_tls_hosts": [], "ingress_tls_extra_hosts": []}, []),
    ],
    ids=["upper-case", "underscore", "wildcard", "label-too-long", "name-too-long", "none"],
)
def test_host_names_must_be_lower_case_dns_names(changes: dict[str, Any], invalid: list[str]) -> None:
    assert problems(**changes) == [
        "ingress_tls_hosts / ingress_tls_extra_hosts must be a non-empty list of lower-case DNS names"
        " (labels of a-z, 0-9 and '-', no wildcards, at most 253 characters);"
        f" not valid: {json.dumps(invalid)}"
    ]


def test_a_host_name_of_253_characters_passes() -> None:
    name = ".".join(["a" * 63] * 3 + ["b" * 61])
    assert len(name) == 253
    assert problems(ingress_tls_hosts=[name]) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"ingress_tls_namespace": "Thinkus"},
        {"ingress_tls_ca_namespace": "a.b"},
        {"ingress_tls_ingress_name": "thinkus_ingress"},
        {"ingress_tls_secret_name": ""},
        {"ingress_tls_ca_secret_name": "CA"},
        {"ingress_tls_ca_configmap_name": "-bundle"},
        {"ingress_tls_ingress_class": "nginx/internal"},
        {"ingress_tls_secret_name": "thinkus-ca"},
    ],
    ids=["namespace", "ca-namespace", "ingress", "secret", "ca-secret", "configmap", "class", "tls-is-the-ca"],
)
def test_object_names(changes: dict[str, Any]) -> None:
    [message] = problems(**changes)
    assert message.startswith("ingress_tls_namespace and ingress_tls_ca_namespace must be DNS labels;")
    assert message.endswith(
        "ingress_tls_secret_name must differ from ingress_tls_ca_secret_name in the same namespace."
    )


def test_the_tls_and_ca_secret_may_share_a_name_in_other_namespaces() -> None:
    assert problems(ingress_tls_secret_name="thinkus-ca", ingress_tls_ca_namespace="security") == []


@pytest.mark.parametrize(
    "paths",
    [
        [],
        [{"path_type": "Prefix"}],
        [{"path": "api"}],
        [{"path": "/", "path_type": "Regex"}],
        [{"path": "/", "service": "Go_Orchestrator"}],
        [{"path": "/", "port": 0}],
        [{"path": "/", "port": 65536}],
        [{"path": "/", "port": "http"}],
        [{"path": "/"}, {"path": "/v2", "port": -1}],
    ],
    ids=["none", "no-path", "relative", "path-type", "service", "port-0", "port-too-high", "port-name", "second"],
)
def test_paths_and_the_backend(paths: list[dict[str, Any]]) -> None:
    assert problems(ingress_tls_paths=paths) == [
        "ingress_tls_paths must be a non-empty list of {path: /..., path_type: Prefix|Exact|ImplementationSpecific,"
        " service: <Service name>, port: 1-65535}; service and port default to ingress_tls_backend_service"
        " and ingress_tls_backend_port."
    ]


def test_paths_take_the_backend_defaults_and_numeric_text() -> None:
    paths = [{"path": "/"}, {"path": "/v2", "path_type": "Exact", "service": "ai-engine", "port": "8000"}]
    assert problems(ingress_tls_paths=paths) == []
    assert problems(ingress_tls_paths=[{"path": "/"}], ingress_tls_backend_port=70000) != []
    assert problems(ingress_tls_paths=[{"path": "/"}], ingress_tls_backend_service="Bad") != []


@pytest.mark.parametrize(
    "changes",
    [{"ingress_tls_proxy_body_size": "50 MB"}, {"ingress_tls_proxy_body_size": "m"}, {"ingress_tls_hsts_max_age": -1}],
)
def test_the_ingress_annotations(changes: dict[str, Any]) -> None:
    [message] = problems(**changes)
    assert message.startswith("ingress_tls_proxy_body_size must be a size like 50m")


def test_a_body_size_given_as_a_number_passes() -> None:
    assert problems(ingress_tls_proxy_body_size=50, ingress_tls_hsts_max_age=0) == []


LOCAL_CA = {"ingress_tls_certificate_source": "local_ca"}


@pytest.mark.parametrize(
    ("changes", "shown"),
    [
        ({"ingress_tls_renew_before_days": 0}, "(0) < ingress_tls_cert_validity_days (90)"),
        ({"ingress_tls_cert_validity_days": 30}, "(30) < ingress_tls_cert_validity_days (30)"),
        ({"ingress_tls_ca_validity_days": 90}, "< ingress_tls_ca_validity_days (90)"),
        ({"ingress_tls_ca_common_name": ""}, "< ingress_tls_ca_validity_days (3650)"),
    ],
)
def test_the_local_ca_day_counts(changes: dict[str, Any], shown: str) -> None:
    [message] = problems(**LOCAL_CA, **changes)
    assert message.startswith("Need 0 < ingress_tls_renew_before_days (")
    assert shown in message
    assert message.endswith("or every run would renew; and a non-empty ingress_tls_ca_common_name.")


def test_the_local_ca_day_counts_do_not_matter_with_cert_manager() -> None:
    assert problems(ingress_tls_renew_before_days=0) == []


def test_the_issuer_must_be_a_managed_cluster_issuer() -> None:
    assert problems(ingress_tls_issuer="letsencrypt") == [
        'ingress_tls_issuer ("letsencrypt") must name a ClusterIssuer; with ingress_tls_manage_cluster_issuers'
        ' it must be one of ingress_tls_cluster_issuers (["letsencrypt-prod", "letsencrypt-staging", "thinkus-ca"]).'
    ]
    assert problems(ingress_tls_issuer="Lets_Encrypt", ingress_tls_manage_cluster_issuers=False) != []
    assert problems(ingress_tls_issuer="letsencrypt", ingress_tls_manage_cluster_issuers=False) == []
    assert problems(ingress_tls_issuer="letsencrypt", **LOCAL_CA) == []


@pytest.mark.parametrize(
    "issuer",
    [
        {"acme_server": "https://acme.example/dir"},
        {"name": "both", "acme_server": "https://acme.example/dir", "ca_secret": "ca"},
        {"name": "neither"},
        {"name": "plain", "acme_server": "http://acme.example/dir"},
        {"name": "ca", "ca_secret": "CA_Secret"},
        {"name": "ca", "ca_secret": "ca", "ca_bundle": PEM},
        {"name": "acme", "acme_server": "https://acme.example/dir", "ca_bundle": "not a PEM"},
        {"name": "acme", "acme_server": "https://acme.example/dir", "solver_pod_template": {"nodeSelector": {}}},
        {"name": "ca", "ca_secret": "ca", "solver_pod_template": {"spec": {}}},
    ],
    ids=["no-name", "both", "neither", "http", "ca-secret", "bundle-on-ca", "bundle", "template", "template-on-ca"],
)
def test_each_managed_cluster_issuer(issuer: dict[str, Any]) -> None:
    issuers = [{"name": "letsencrypt-prod", "acme_server": "https://acme.example/dir"}, issuer]
    [message] = problems(ingress_tls_cluster_issuers=issuers)
    assert message.startswith("ingress_tls_cluster_issuers[1] must be {name: <DNS name>, acme_server: https://...}")
    assert "PEM certificates the ACME server's HTTPS chains to" in message
    assert "MIIB" not in message and "not a PEM" not in message
    if "ca_bundle" in issuer:
        assert '"ca_bundle": "<PEM>"' in message


def test_every_refused_cluster_issuer_is_named_and_valid_ones_pass() -> None:
    issuers = [
        {"name": "bad_one", "ca_secret": "ca"},
        {"name": "internal", "acme_server": "https://acme.internal/dir", "ca_bundle": PEM, "email": "a@b.cd"},
        {"name": "solver", "acme_server": "https://acme.internal/dir", "solver_pod_template": {"metadata": {}}},
        {"name": "Bad-Two", "ca_secret": "ca"},
    ]
    found = problems(ingress_tls_cluster_issuers=issuers, ingress_tls_issuer="internal")
    assert [m.split(" ")[0] for m in found] == ["ingress_tls_cluster_issuers[0]", "ingress_tls_cluster_issuers[3]"]
    assert problems(ingress_tls_cluster_issuers=issuers[1:3], ingress_tls_issuer="internal") == []
    assert problems(ingress_tls_cluster_issuers=issuers, ingress_tls_manage_cluster_issuers=False) == []


def test_each_acme_issuer_needs_an_email() -> None:
    assert problems(ingress_tls_acme_email="") == [
        "ingress_tls_acme_email must be an e-mail address (user@example.com): the ACME issuer "
        f"{name} registers an account with it (or give the issuer its own email)."
        for name in ("letsencrypt-prod", "letsencrypt-staging")
    ]
    own = [
        {"name": "letsencrypt-prod", "acme_server": "https://acme.example/dir", "email": "ops@thinkus.ai"},
        {"name": "thinkus-ca", "ca_secret": "thinkus-ca"},
    ]
    assert problems(ingress_tls_acme_email="not an address", ingress_tls_cluster_issuers=own) == []
    assert problems(ingress_tls_acme_email="", ingress_tls_manage_cluster_issuers=False) == []


@pytest.mark.parametrize(
    "changes",
    [{"ingress_tls_ingress_nginx_chart_version": "latest"}, {"ingress_tls_cert_manager_chart_version": ">=1.17"}],
)
def test_the_chart_versions_are_pinned_when_the_role_installs_them(changes: dict[str, Any]) -> None:
    assert problems(**changes) == []
    [message] = problems(ingress_tls_install_controllers=True, **changes)
    assert message.startswith("ingress_tls_ingress_nginx_chart_version and ingress_tls_cert_manager_chart_version")


def test_the_first_section_that_fails_stops_there() -> None:
    found = problems(ingress_tls_hosts=["Bad"], ingress_tls_paths=[], ingress_tls_acme_email="")
    assert len(found) == 1 and found[0].startswith("ingress_tls_hosts / ingress_tls_extra_hosts")
