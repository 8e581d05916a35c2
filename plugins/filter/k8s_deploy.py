# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The k8s_deploy role's preflight checks and image references, in Python.

They were Jinja expressions of roles/k8s_deploy/vars/main.yml. Ansible compiles every template
again in every worker process, and the checks alone took longer to compile than the rest of the
role's templates together; here they are plain code, run once per task.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.plugins.filter.core import to_json

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
REGISTRY_SERVER = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
QUANTITY = re.compile(r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
TAG_OR_DIGEST = re.compile(r"(@sha256:[0-9a-f]{64}|:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$")
# The distribution reference grammar: domain[:port]/path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_PART = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_HOST_PART}(?:\.{_HOST_PART})*|\[[0-9a-fA-F:]+\])"
IMAGE_REFERENCE = re.compile(
    rf"^({_DOMAIN}(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
UNITS = {
    "": 1,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
TAINT_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def field(value: Any, key: str, missing: str = "nothing") -> Any:
    """``value[key]`` for a message: ``missing`` when value is not a mapping or has no such key."""
    return value.get(key, missing) if isinstance(value, Mapping) else missing


def truncate(text: str, length: int) -> str:
    """Jinja's truncate filter with its defaults (a word is not cut, 5 characters of leeway, '...')."""
    if len(text) <= length + 5:
        return text
    return text[: length - 3].rsplit(" ", 1)[0] + "..."


def image_references(services: Mapping[str, Any], built: Any, prefix: Any, tag: Any) -> dict[str, str]:
    """Per service: the digest docker_build pushed (docker_build_results), else <prefix>/<image>:<tag>."""
    references = {}
    for name, svc in services.items():
        result: Any = built[name] if isinstance(built, Mapping) and name in built else ""
        if isinstance(result, Mapping):
            result = result.get("reference", result.get("image", ""))
        if result:
            references[name] = str(result)
            continue
        repo = str(svc.get("image", name))
        repo = repo if ("/" in repo or not prefix) else f"{prefix}/{repo}"
        own_tag = str(svc.get("tag", tag))
        has_ref = "@" in repo or ":" in repo.rsplit("/", maxsplit=1)[-1]
        references[name] = repo if (has_ref or not own_tag) else f"{repo}:{own_tag}"
    return references


def _names(v: Mapping[str, Any]) -> list[str]:
    names_ok = (
        isinstance(v["k8s_deploy_namespace"], str)
        and DNS_LABEL.search(v["k8s_deploy_namespace"])
        and isinstance(v["k8s_deploy_instance"], str)
        and LABEL_VALUE.search(v["k8s_deploy_instance"])
        and isinstance(v["k8s_deploy_field_manager"], str)
        and v["k8s_deploy_field_manager"]
        and DNS_NAME.search(str(v["k8s_deploy_lock_name"]))
    )
    if names_ok:
        return []
    return [
        f"k8s_deploy_namespace ({v['k8s_deploy_namespace']}) and k8s_deploy_lock_name ({v['k8s_deploy_lock_name']})"
        " must be DNS-1123 names (lower-case letters, digits, '-'),"
        f" k8s_deploy_instance ({v['k8s_deploy_instance']}) a label value, k8s_deploy_field_manager a non-empty string"
    ]


def _timeouts(v: Mapping[str, Any]) -> list[str]:
    rollout, lock_wait = v["k8s_deploy_rollout_timeout"], v["k8s_deploy_lock_timeout"]
    duration, request = v["k8s_deploy_lock_duration"], v["k8s_deploy_request_timeout"]
    if not (
        is_int(rollout)
        and rollout > 0
        and is_int(lock_wait)
        and lock_wait >= 0
        and is_int(duration)
        and duration > 0
        and is_number(request)
        and request > 0
    ):
        return [
            "k8s_deploy_rollout_timeout and k8s_deploy_lock_duration must be positive integers (seconds),"
            " k8s_deploy_lock_timeout an integer >= 0, k8s_deploy_request_timeout a positive number"
        ]
    # Renewed every quarter of its duration: that quarter, a status read and the renewal (each up to
    # k8s_deploy_request_timeout) and about 6 s between two tasks must end before the Lease does.
    if duration * 3 / 4 >= 2 * request + 6:
        return []
    return [
        f"k8s_deploy_lock_duration ({duration} s) is too short for k8s_deploy_request_timeout ({request} s):"
        " renewed every quarter of it, it must cover two requests and 6 s between tasks, so at least"
        f" {math.ceil((2 * request + 6) * 4 / 3)} s. The rollout and rollback waits (k8s_deploy_rollout_timeout"
        f" {rollout} s, twice) renew it as they go, so a rollback never outlasts the lock."
    ]


def _services(services: Any) -> list[str]:
    if not (isinstance(services, Mapping) and services and all(isinstance(s, Mapping) for s in services.values())):
        return ["k8s_deploy_services (with k8s_deploy_service_overrides) must map each service name to a dictionary"]
    out = []
    for name, svc in services.items():
        ports = svc.get("ports")
        ok = (
            isinstance(name, str)
            and DNS_LABEL.search(name)
            and is_int(svc.get("replicas"))
            and svc["replicas"] >= 0
            and isinstance(ports, Sequence)
            and not isinstance(ports, str)
            and len(ports) > 0
            and all(isinstance(p, Mapping) and "name" in p and is_int(p.get("port")) for p in ports)
        )
        if not ok:
            got = truncate(str(svc.get("replicas", "nothing")), 40)
            out.append(
                f"k8s_deploy_services['{name}']: the name must be a DNS-1123 label, replicas an integer >= 0"
                f" (got {got}), ports a list of {{name, port}} with integer ports"
            )
    return out


def _probes_and_metrics(services: Mapping[str, Any]) -> list[str]:
    out = []
    for name, svc in services.items():
        declared = [p["port"] for p in svc["ports"]]
        for which in ("liveness_probe", "readiness_probe"):
            probe = svc.get(which)
            if probe is None or (hasattr(probe, "__len__") and len(probe) == 0):
                continue
            ok = (
                isinstance(probe, Mapping)
                and isinstance(probe.get("path"), str)
                and probe["path"].startswith("/")
                and is_int(probe.get("port"))
                and probe["port"] in declared
                and is_int(probe.get("initial_delay_seconds", 0))
                and probe.get("initial_delay_seconds", 0) >= 0
                and is_int(probe.get("period_seconds", 10))
                and probe.get("period_seconds", 10) >= 1
            )
            if not ok:
                path, port = field(probe, "path"), field(probe, "port")
                out.append(
                    f"k8s_deploy_services['{name}'].{which}: path must start with '/' (got '{path}'), port one of the"
                    f" ports the container declares ({to_json(declared)}; got {to_json(port)}), initial_delay_seconds"
                    " an integer >= 0, period_seconds an integer >= 1"
                )
        metrics = svc.get("metrics") or {}
        ok = isinstance(metrics, Mapping) and (
            not metrics
            or (
                is_int(metrics.get("port"))
                and metrics["port"] in declared
                and isinstance(metrics.get("path"), str)
                and metrics["path"].startswith("/")
            )
        )
        if not ok:
            port, path = field(metrics, "port"), field(metrics, "path")
            out.append(
                f"k8s_deploy_services['{name}'].metrics must be {{}} or {{port, path}} with port one of the ports the"
                f" container declares ({to_json(declared)}; got {to_json(port)}) and a path starting with '/'"
                f" (got {to_json(path)})"
            )
    return out


def _autoscalers(services: Mapping[str, Any]) -> list[str]:
    out = []
    for name, svc in services.items():
        hpa, pdb = svc.get("hpa") or {}, svc.get("pdb") or {}
        ok = isinstance(hpa, Mapping) and isinstance(pdb, Mapping)
        if ok and hpa:
            low, high = hpa.get("min_replicas"), hpa.get("max_replicas")
            cpu, window = hpa.get("cpu_utilization", 70), hpa.get("scale_down_stabilization_seconds", 0)
            ok = (
                is_int(low)
                and low >= 1
                and is_int(high)
                and high >= low
                and is_int(cpu)
                and cpu > 0
                and is_int(window)
                and 0 <= window <= 3600
            )
        if not ok:
            got = {
                key: field(hpa, key, "none")
                for key in ("min_replicas", "max_replicas", "scale_down_stabilization_seconds")
            }
            out.append(
                f"k8s_deploy_services['{name}'].hpa must be {{}} or {{min_replicas, max_replicas, cpu_utilization,"
                " scale_down_stabilization_seconds} with integers, 1 <= min_replicas <= max_replicas and a"
                f" stabilization window of 0 to 3600 seconds (got min {got['min_replicas']}, max {got['max_replicas']},"
                f" window {got['scale_down_stabilization_seconds']}); pdb must be a dictionary"
            )
    return out


def _images(services: Mapping[str, Any], v: Mapping[str, Any]) -> list[str]:
    images = image_references(
        services, v.get("docker_build_results"), v["k8s_deploy_image_prefix"], v["k8s_deploy_image_tag"]
    )
    out = []
    for name in services:
        image = images[name]
        if (
            TAG_OR_DIGEST.search(image)
            and ("@sha256:" in image or image.split(":")[-1] != "latest")
            and IMAGE_REFERENCE.match(image)
        ):
            continue
        out.append(
            f"the image of service {name} is '{image}': it must be an image reference"
            " [registry[:port]/]path[:tag][@sha256:digest] with a lower-case path (k8s_deploy_image_prefix "
            f"{to_json(v['k8s_deploy_image_prefix'])}, k8s_deploy_services['{name}'].image), and a tag other than"
            f" 'latest' (k8s_deploy_image_tag {to_json(v['k8s_deploy_image_tag'])}, or"
            f" k8s_deploy_services['{name}'].tag: letters, digits, '_', '.', '-', at most 128) or a digest"
            f" (docker_build_results['{name}'] = <repository>@sha256:<64 hex>)"
        )
    return out


def quantity(text: str) -> float | None:
    """A Kubernetes quantity in base units (cores, bytes); None when it is not one."""
    if not QUANTITY.match(text):
        return None
    number = re.sub(r"[a-zA-Z].*$", "", text)
    suffix = text[len(number) :]
    factor = 10 ** int(suffix[1:]) if suffix[:1] in ("e", "E") and len(suffix) > 1 else UNITS[suffix]
    return float(number) * factor


def _resources(services: Mapping[str, Any]) -> list[str]:
    problems = []
    for name, svc in services.items():
        res = svc.get("resources") or {}
        at = f"k8s_deploy_services['{name}'].resources"
        if not isinstance(res, Mapping) or set(res) - {"requests", "limits"}:
            problems.append(f"{at} must be {{requests: {{...}}, limits: {{...}}}} (got {truncate(to_json(res), 80)})")
            continue
        parsed: dict[str, float] = {}
        for section in ("requests", "limits"):
            values = res.get(section) or {}
            if not isinstance(values, Mapping):
                problems.append(
                    f"{at}.{section} must map cpu / memory / ephemeral-storage to quantities"
                    f" (got {truncate(to_json(values), 80)})"
                )
                continue
            for key, value in values.items():
                amount = quantity(str(value))
                if amount is None:
                    problems.append(
                        f"{at}.{section}.{key} is {truncate(to_json(value), 40)}, not a Kubernetes quantity"
                        " (expected a number with an optional suffix such as 500m, 0.5, 512Mi or 2Gi)"
                    )
                else:
                    parsed[f"{section}/{key}"] = amount
        requests = res.get("requests") or {}
        for key, value in requests.items() if isinstance(requests, Mapping) else []:
            low, high = parsed.get(f"requests/{key}"), parsed.get(f"limits/{key}")
            if low is not None and high is not None and low > high:
                problems.append(
                    f"{at}.requests.{key} ({value}) is above its limit ({res['limits'][key]}):"
                    " a request must be at most the limit"
                )
    if not problems:
        return []
    return ["; ".join(problems) + " (k8s_deploy_services with k8s_deploy_service_overrides)."]


def _config(config: Any) -> list[str]:
    if isinstance(config, Mapping):
        bad = [str(k) for k in config if not CONFIG_KEY.match(str(k))]
        if not bad:
            return []
        got = to_json(bad)
    else:
        got = "k8s_deploy_config is not a mapping"
    return [
        "k8s_deploy_config keys become ConfigMap keys and must match [-._a-zA-Z0-9]+ (at most 253 characters);"
        f" not valid: {got}"
    ]


def _secret_refs(services: Mapping[str, Any], secret_keys: list[Mapping[str, str]]) -> list[str]:
    known = [f"{k['secret']}/{k['key']}" for k in secret_keys]
    out = []
    for name, svc in services.items():
        refs = svc.get("secret_env") or []
        refs = refs if isinstance(refs, Sequence) and not isinstance(refs, str) else [refs]
        unknown = [f"{r.get('secret', '?')}/{r.get('key', '?')}" if isinstance(r, Mapping) else "?/?" for r in refs]
        unknown = [u for u in unknown if u not in known]
        if unknown or any(not isinstance(r, Mapping) or "name" not in r for r in refs):
            out.append(
                f"k8s_deploy_services['{name}'].secret_env must be a list of {{name, secret, key}} naming Secret keys"
                f" the role manages; unknown: {', '.join(unknown)} (known: {', '.join(known)})"
            )
    return out


def _pull_secret(v: Mapping[str, Any]) -> list[str]:
    name, server = v["k8s_deploy_registry_pull_secret"], v["k8s_deploy_registry_server"]
    if not name:
        return []
    if (
        DNS_NAME.match(str(name))
        and REGISTRY_SERVER.match(str(server))
        and v["k8s_deploy_registry_username"]
        and v["k8s_deploy_registry_password"]
    ):
        return []
    return [
        f"k8s_deploy_registry_pull_secret ({to_json(name)}) must be a lower-case DNS name,"
        f" k8s_deploy_registry_server ({to_json(server)}) a registry host[:port] without a scheme,"
        " and k8s_deploy_registry_username and k8s_deploy_registry_password non-empty (from the vault or the"
        " environment)."
    ]


def _placement(selector: Any, tolerations: Any) -> list[str]:
    ok = (
        isinstance(selector, Mapping)
        and all(isinstance(value, str) for value in selector.values())
        and isinstance(tolerations, Sequence)
        and not isinstance(tolerations, str)
        and all(
            isinstance(t, Mapping)
            and t.get("effect", "") in TAINT_EFFECTS
            and t.get("operator", "Equal") in ("Equal", "Exists")
            for t in tolerations
        )
    )
    if ok:
        return []
    return [
        f"k8s_deploy_node_selector must map label names to strings ({to_json(selector)});"
        " k8s_deploy_tolerations must be a list of {key, operator: Equal|Exists, value,"
        " effect: NoSchedule|PreferNoSchedule|NoExecute}"
        f" ({to_json(tolerations)})."
    ]


def preflight_problems(
    values: Mapping[str, Any], secret_keys: list[Mapping[str, str]], missing: list[str]
) -> list[str]:
    """Every input check of the k8s_deploy role, in order; the first section that fails stops there.

    ``values`` maps the role's variables (by their names, ``_k8s_deploy_services`` for the services after
    the overrides) to their values; ``secret_keys`` is ``_k8s_deploy_secret_keys`` and ``missing`` the names
    of the secret variables that are empty (never a value). Each message names the variable and the form
    expected. A section that loops over the services names every service it refuses.
    """
    services = values["_k8s_deploy_services"]
    sections = (
        lambda: _names(values),
        lambda: _timeouts(values),
        lambda: _services(services),
        lambda: _probes_and_metrics(services),
        lambda: _autoscalers(services),
        lambda: _images(services, values),
        lambda: _resources(services),
        lambda: _config(values["k8s_deploy_config"]),
        lambda: _secret_refs(services, secret_keys),
        lambda: (
            [
                f"these secret values are empty or undefined: {', '.join(missing)}."
                " Set them from Ansible Vault in the inventory (non-empty strings)."
            ]
            if missing
            else []
        ),
        lambda: _pull_secret(values),
        lambda: _placement(values["k8s_deploy_node_selector"], values["k8s_deploy_tolerations"]),
    )
    for section in sections:
        problems = section()
        if problems:
            return problems
    return []


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"k8s_deploy_preflight": preflight_problems, "k8s_deploy_images": image_references}
