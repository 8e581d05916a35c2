# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The ingress_tls role's checks of its variables, in Python.

They were nine assert tasks (one a loop over the ClusterIssuers, one over the ACME issuers). Every
task costs a worker process, and the expressions were compiled again in each: here they are plain
code, run by one task. The messages are the ones the asserts gave.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.filter.core import to_json

# RFC 1123 host name, lower case as Kubernetes requires, at most 253 characters.
HOST = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$")
LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+$")
BODY_SIZE = re.compile(r"[0-9]+[kKmMgG]?$")
ACME_SERVER = re.compile(r"https://[^\s]+$")
CHART_VERSION = re.compile(r"v?[0-9]+\.[0-9]+\.[0-9]+")
ABSOLUTE_PATH = re.compile("/")
PATH_TYPES = ("Prefix", "Exact", "ImplementationSpecific")
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


def _matches(pattern: re.Pattern[str], value: Any) -> bool:
    """Jinja's ``value is match(pattern)``: the value as text, matched from its start."""
    return pattern.match(to_text(value, errors="surrogate_or_strict")) is not None


def _to_int(value: Any) -> int:
    """Jinja's ``int`` filter: a number or numeric text as an integer, anything else 0."""
    if isinstance(value, bool):
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return 0


def all_hosts(values: Mapping[str, Any]) -> list[Any]:
    """ingress_tls_hosts then ingress_tls_extra_hosts, each name once (the role's _ingress_tls_all_hosts)."""
    hosts: list[Any] = []
    for host in [*values["ingress_tls_hosts"], *values["ingress_tls_extra_hosts"]]:
        if host not in hosts:
            hosts.append(host)
    return hosts


def _hosts(values: Mapping[str, Any]) -> list[str]:
    hosts = all_hosts(values)
    invalid = [h for h in hosts if not _matches(HOST, h)]
    if hosts and not invalid:
        return []
    return [
        "ingress_tls_hosts / ingress_tls_extra_hosts must be a non-empty list of lower-case DNS names"
        " (labels of a-z, 0-9 and '-', no wildcards, at most 253 characters);"
        f" not valid: {to_json(invalid)}"
    ]


def _names(values: Mapping[str, Any]) -> list[str]:
    labels = ("ingress_tls_namespace", "ingress_tls_ca_namespace")
    names = (
        "ingress_tls_ingress_name",
        "ingress_tls_secret_name",
        "ingress_tls_ca_secret_name",
        "ingress_tls_ca_configmap_name",
        "ingress_tls_ingress_class",
    )
    valid = (
        all(_matches(LABEL, values[v]) for v in labels)
        and all(_matches(HOST, values[v]) for v in names)
        and (
            values["ingress_tls_secret_name"] != values["ingress_tls_ca_secret_name"]
            or values["ingress_tls_namespace"] != values["ingress_tls_ca_namespace"]
        )
    )
    if valid:
        return []
    return [
        "ingress_tls_namespace and ingress_tls_ca_namespace must be DNS labels; ingress_tls_ingress_name,"
        " ingress_tls_secret_name, ingress_tls_ca_secret_name, ingress_tls_ca_configmap_name and"
        " ingress_tls_ingress_class lower-case DNS names; ingress_tls_secret_name must differ from"
        " ingress_tls_ca_secret_name in the same namespace."
    ]


def _paths(values: Mapping[str, Any]) -> list[str]:
    paths = values["ingress_tls_paths"]

    def valid(item: Any) -> bool:
        if not isinstance(item, Mapping) or "path" not in item:
            return False
        port = _to_int(item.get("port", values["ingress_tls_backend_port"]))
        return (
            _matches(ABSOLUTE_PATH, item["path"])
            and item.get("path_type", "Prefix") in PATH_TYPES
            and _matches(LABEL, item.get("service", values["ingress_tls_backend_service"]))
            and 0 < port <= 65535
        )

    if len(paths) > 0 and all(valid(item) for item in paths):
        return []
    return [
        "ingress_tls_paths must be a non-empty list of {path: /..., path_type: Prefix|Exact|ImplementationSpecific,"
        " service: <Service name>, port: 1-65535}; service and port default to ingress_tls_backend_service"
        " and ingress_tls_backend_port."
    ]


def _annotations(values: Mapping[str, Any]) -> list[str]:
    if _matches(BODY_SIZE, values["ingress_tls_proxy_body_size"]) and values["ingress_tls_hsts_max_age"] >= 0:
        return []
    return [
        "ingress_tls_proxy_body_size must be a size like 50m (a number with an optional k, m or g suffix);"
        " ingress_tls_hsts_max_age must be 0 or more seconds."
    ]


def _local_ca(values: Mapping[str, Any]) -> list[str]:
    if values["ingress_tls_certificate_source"] != "local_ca":
        return []
    renew = values["ingress_tls_renew_before_days"]
    validity = values["ingress_tls_cert_validity_days"]
    ca_validity = values["ingress_tls_ca_validity_days"]
    if 0 < renew < validity < ca_validity and len(values["ingress_tls_ca_common_name"]) > 0:
        return []
    return [
        f"Need 0 < ingress_tls_renew_before_days ({renew}) < ingress_tls_cert_validity_days ({validity})"
        f" < ingress_tls_ca_validity_days ({ca_validity}), or every run would renew;"
        " and a non-empty ingress_tls_ca_common_name."
    ]


def _issuer(values: Mapping[str, Any]) -> list[str]:
    if values["ingress_tls_certificate_source"] != "cert_manager":
        return []
    issuer = values["ingress_tls_issuer"]
    issuers = values["ingress_tls_cluster_issuers"]
    named = [i.get("name", "") if isinstance(i, Mapping) else "" for i in issuers]
    if _matches(HOST, issuer) and (not values["ingress_tls_manage_cluster_issuers"] or issuer in named):
        return []
    shown = [i.get("name", "?") if isinstance(i, Mapping) else "?" for i in issuers]
    return [
        f"ingress_tls_issuer ({to_json(issuer)}) must name a ClusterIssuer; with"
        f" ingress_tls_manage_cluster_issuers it must be one of ingress_tls_cluster_issuers ({to_json(shown)})."
    ]


def _cluster_issuer_valid(item: Any) -> bool:
    if not isinstance(item, Mapping):
        return False
    acme = "acme_server" in item
    template = item.get("solver_pod_template")
    return (
        _matches(HOST, item.get("name", ""))
        and acme != ("ca_secret" in item)
        and (not acme or _matches(ACME_SERVER, item["acme_server"]))
        and ("ca_secret" not in item or _matches(HOST, item["ca_secret"]))
        and (
            "ca_bundle" not in item
            or (acme and isinstance(item["ca_bundle"], str) and PEM_CERTIFICATE in item["ca_bundle"])
        )
        and (
            "solver_pod_template" not in item
            or (acme and isinstance(template, Mapping) and set(template) <= {"metadata", "spec"})
        )
    )


def _cluster_issuers(values: Mapping[str, Any]) -> list[str]:
    if not values["ingress_tls_manage_cluster_issuers"]:
        return []
    problems = []
    for index, item in enumerate(values["ingress_tls_cluster_issuers"]):
        if _cluster_issuer_valid(item):
            continue
        shown = {**item, "ca_bundle": "<PEM>"} if isinstance(item, Mapping) and "ca_bundle" in item else item
        problems.append(
            f"ingress_tls_cluster_issuers[{index}] must be {{name: <DNS name>, acme_server: https://...}}"
            " (optional ca_bundle: PEM certificates the ACME server's HTTPS chains to; optional solver_pod_template:"
            " {metadata: ..., spec: ...} for the HTTP-01 solver pods) or {name: <DNS name>, ca_secret: <Secret name>};"
            f" got {to_json(shown)}."
        )
    return problems


def _acme_emails(values: Mapping[str, Any]) -> list[str]:
    if not values["ingress_tls_manage_cluster_issuers"]:
        return []
    problems = []
    for item in values["ingress_tls_cluster_issuers"]:
        if not isinstance(item, Mapping) or "acme_server" not in item:
            continue
        if not _matches(EMAIL, item.get("email", values["ingress_tls_acme_email"])):
            problems.append(
                "ingress_tls_acme_email must be an e-mail address (user@example.com): the ACME issuer"
                f" {item.get('name')} registers an account with it (or give the issuer its own email)."
            )
    return problems


def _charts(values: Mapping[str, Any]) -> list[str]:
    if not values["ingress_tls_install_controllers"]:
        return []
    versions = (values["ingress_tls_ingress_nginx_chart_version"], values["ingress_tls_cert_manager_chart_version"])
    if all(_matches(CHART_VERSION, v) for v in versions):
        return []
    return [
        "ingress_tls_ingress_nginx_chart_version and ingress_tls_cert_manager_chart_version must be exact"
        " chart versions (like 4.12.1 and v1.17.2), never a range or latest."
    ]


SECTIONS = (_hosts, _names, _paths, _annotations, _local_ca, _issuer, _cluster_issuers, _acme_emails, _charts)


def preflight_problems(values: Mapping[str, Any]) -> list[str]:
    """Every check of the ingress_tls role's variables, in order; the first section that fails stops there.

    ``values`` maps the role's variables by name (the argument spec has checked their types). Each
    message names the variable and the form expected; the ClusterIssuer and ACME e-mail sections name
    every issuer they refuse.
    """
    for section in SECTIONS:
        problems = section(values)
        if problems:
            return problems
    return []


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"ingress_tls_preflight": preflight_problems}
