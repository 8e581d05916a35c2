#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: tls_verify
short_description: Check a certificate's chain, what each host serves, HSTS and the HTTP redirect
version_added: 0.1.0
description:
  - Checks that a certificate bundle (the leaf first, then intermediates, as in a
    C(kubernetes.io/tls) Secret's C(tls.crt)) chains, signature by signature, to O(ca_pem) or to
    a CA of O(trust_store).
  - For each of O(hosts), connects with TLS and SNI and checks that the certificate served is the
    bundle's leaf, trusted by the same CA and valid for the host name. An ingress controller loads
    a new Secret a few seconds after it is written, so this is retried for up to O(wait_seconds).
  - With O(hsts_max_age), the answer to C(GET /) on that connection must carry a
    C(Strict-Transport-Security) header with exactly that C(max-age).
  - With O(redirect), C(GET /) over plain HTTP must redirect to C(https://<host>/).
  - Every check runs, and one failure message lists every problem found.
  - Runs inside the controller process when the task's connection is local (see the action plugin).
author:
  - Thinkus platform team (@thinkus-ai)
extends_documentation_fragment:
  - thinkus.ops.attributes
attributes:
  check_mode:
    support: full
    details:
      - Only reads, so it runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - Reads only; never reports a change.
options:
  certificate:
    description:
      - The PEM bundle to check, leaf certificate first. Text after or between the certificates
        (a private key, comments) is ignored.
    type: str
    required: true
  certificate_name:
    description: How failure messages name the bundle, for example the Secret it came from.
    type: str
    default: the bundle
  ca_pem:
    description:
      - PEM text of the CA (or CAs) the bundle must chain to and the hosts' certificates must be
        trusted by. When empty, O(trust_store) is used.
    type: str
    default: ""
  trust_store:
    description:
      - A PEM bundle file, or a directory of PEM files such as the system's certificate directory,
        used when O(ca_pem) is empty. Unset means the system's default trust store.
    type: path
  hosts:
    description:
      - The host names whose served certificate (and HSTS and redirect) are checked.
      - Empty checks the chain only.
    type: list
    elements: str
    default: []
  connect_address:
    description:
      - Connect to this address instead of each host's DNS answer, as C(curl --resolve) does.
        SNI, the Host header and the host name check keep the host's name.
    type: str
    default: ""
  https_port:
    description: The HTTPS port.
    type: int
    default: 443
  http_port:
    description: The plain HTTP port, for O(redirect).
    type: int
    default: 80
  hsts_max_age:
    description: The C(max-age) the HTTPS answer's C(Strict-Transport-Security) header must have. C(0) skips the check.
    type: int
    default: 0
  redirect:
    description: Whether plain HTTP must redirect to C(https://<host>/) with status 301, 302, 307 or 308.
    type: bool
    default: false
  wait_seconds:
    description: How long to keep trying until every host serves the bundle's leaf certificate.
    type: float
    default: 0
  poll_seconds:
    description: The pause between two tries.
    type: float
    default: 5
  timeout:
    description: The timeout of one connection, in seconds.
    type: float
    default: 10
requirements:
  - cryptography >= 40
"""

EXAMPLES = r"""
- name: Check the API's certificate and what its hosts serve
  thinkus.ops.tls_verify:
    certificate: "{{ tls_secret.data['tls.crt'] | b64decode }}"
    certificate_name: thinkus/thinkus-tls
    ca_pem: "{{ lookup('ansible.builtin.file', 'ca.crt') }}"
    hosts: [api.thinkus.ai, app.thinkus.ai]
    hsts_max_age: 31536000
    redirect: true
    wait_seconds: 30
"""

RETURN = r"""
serial_number:
  description: The serial number of the bundle's leaf certificate.
  returned: success
  type: int
chain:
  description: The subjects of the verified chain, from the leaf to the trusted CA.
  returned: success
  type: list
  elements: str
  sample: ["CN=api.thinkus.ai", "CN=Thinkus intermediate", "CN=Thinkus local CA"]
hosts:
  description: What each host served.
  returned: when O(hosts) is not empty
  type: list
  elements: dict
  contains:
    host:
      description: The host name, sent as SNI and Host.
      type: str
    serial_number:
      description: The serial number of the certificate it served, or null when none was read.
      type: int
    subject:
      description: The subject of the certificate it served.
      type: str
    issuer:
      description: The issuer of the certificate it served.
      type: str
    matches:
      description: Whether it served the bundle's leaf, trusted and valid for the host name.
      type: bool
    error:
      description: Why the connection or the verification failed, or an empty string.
      type: str
    hsts:
      description: The Strict-Transport-Security header, when O(hsts_max_age) is set.
      type: str
    redirect_status:
      description: The status of the plain HTTP answer, when O(redirect) is set.
      type: int
    redirect_location:
      description: Its Location header.
      type: str
"""

import ssl
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.thinkus.ops.plugins.module_utils import _tls_check as tls


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    return dict(
        argument_spec={
            "certificate": {"type": "str", "required": True},
            "certificate_name": {"type": "str", "default": "the bundle"},
            "ca_pem": {"type": "str", "default": ""},
            "trust_store": {"type": "path"},
            "hosts": {"type": "list", "elements": "str", "default": []},
            "connect_address": {"type": "str", "default": ""},
            "https_port": {"type": "int", "default": 443},
            "http_port": {"type": "int", "default": 80},
            "hsts_max_age": {"type": "int", "default": 0},
            "redirect": {"type": "bool", "default": False},
            "wait_seconds": {"type": "float", "default": 0},
            "poll_seconds": {"type": "float", "default": 5},
            "timeout": {"type": "float", "default": 10},
        },
        supports_check_mode=True,
    )


def _validate(module: Any) -> None:
    p = module.params
    for key in ("https_port", "http_port"):
        if not 1 <= p[key] <= 65535:
            module.fail_json(msg=f"{key} must be a port number from 1 to 65535, got {p[key]}")
    for key in ("wait_seconds", "hsts_max_age"):
        if p[key] < 0:
            module.fail_json(msg=f"{key} must be 0 or more, got {p[key]}")
    for key in ("poll_seconds", "timeout"):
        if p[key] <= 0:
            module.fail_json(msg=f"{key} must be more than 0, got {p[key]}")
    bad = [h for h in p["hosts"] if not h or any(c in h for c in "/: ")]
    if bad:
        module.fail_json(msg=f"hosts must be DNS names without a scheme, port or path, got {bad!r}")


def _roots(module: Any) -> tuple[list[Any], str]:
    """The trusted CA certificates, and how messages name them."""
    p = module.params
    if p["ca_pem"]:
        roots = tls.load_certificates(p["ca_pem"])
        if not roots:
            module.fail_json(msg="ca_pem must be PEM text holding at least one certificate")
        return roots, "the expected CA (" + ", ".join(tls.describe(r) for r in roots) + ")"
    defaults = ssl.get_default_verify_paths()
    store = p["trust_store"] or defaults.cafile or defaults.capath
    if not store:
        module.fail_json(
            msg="trust_store: this Python has no default trust store; set trust_store (a PEM file or a directory) "
            "or ca_pem"
        )
    try:
        roots = tls.load_trust_store(store)
    except OSError as error:
        module.fail_json(msg=f"trust_store must be a readable PEM file or directory, got {store!r}: {error}")
    return roots, f"a CA of the trust store {store}"


def _served_problem(name: str, leaf: Any, served: tls.Served) -> str:
    certificate = served.certificate()
    what = "no certificate"
    if certificate is not None:
        issuer = certificate.issuer.rfc4514_string()
        what = f"serial {certificate.serial_number} ({tls.describe(certificate)}) issued by {issuer}"
    reason = f" ({served.error})" if served.error else ""
    return (
        f"{served.host} serves {what}{reason}, not the certificate in {name} (serial {leaf.serial_number}): "
        "is the ingress controller using it?"
    )


def _serves_leaf(served: tls.Served, leaf_der: bytes) -> bool:
    return not served.error and served.der == leaf_der


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    if not tls.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=tls.CRYPTOGRAPHY_IMPORT_ERROR)
    _validate(module)
    p = module.params
    name = p["certificate_name"]
    roots, trusted = _roots(module)
    try:
        path = tls.chain_to(p["certificate"], roots)
    except (tls.ChainError, ValueError) as error:
        module.fail_json(msg=f"{name} does not chain to {trusted}: {error}")
    leaf = path[0]
    leaf_der = leaf.public_bytes(tls.Encoding.DER)
    result: dict[str, Any] = {
        "changed": False,
        "serial_number": leaf.serial_number,
        "chain": [tls.describe(c) for c in path],
    }
    if not p["hosts"]:
        module.exit_json(**result)

    context = tls.tls_context(p["ca_pem"], p["trust_store"] or "")
    read_hsts = p["hsts_max_age"] > 0
    deadline = time.monotonic() + p["wait_seconds"]
    served: dict[str, tls.Served] = {}
    while True:
        for host in p["hosts"]:
            if host not in served or not _serves_leaf(served[host], leaf_der):
                served[host] = tls.fetch_served(
                    host, p["connect_address"] or host, p["https_port"], context, p["timeout"], read_hsts
                )
        if all(_serves_leaf(s, leaf_der) for s in served.values()) or time.monotonic() + p["poll_seconds"] > deadline:
            break
        time.sleep(p["poll_seconds"])

    problems = []
    report = []
    for host in p["hosts"]:
        answer = served[host]
        certificate = answer.certificate()
        entry: dict[str, Any] = {
            "host": host,
            "serial_number": certificate.serial_number if certificate is not None else None,
            "subject": tls.describe(certificate) if certificate is not None else "",
            "issuer": certificate.issuer.rfc4514_string() if certificate is not None else "",
            "matches": _serves_leaf(answer, leaf_der),
            "error": answer.error,
        }
        if not entry["matches"]:
            problems.append(_served_problem(name, leaf, answer))
        if read_hsts:
            entry["hsts"] = answer.hsts or ""
            if entry["matches"] and tls.hsts_max_age(answer.hsts) != p["hsts_max_age"]:
                problems.append(
                    f"{host}: the HTTPS answer (status {answer.status}) has Strict-Transport-Security "
                    f"{answer.hsts!r}, not max-age={p['hsts_max_age']} (hsts_max_age)"
                )
        if p["redirect"]:
            redirect = tls.fetch_redirect(host, p["connect_address"] or host, p["http_port"], p["timeout"])
            entry["redirect_status"] = redirect.status
            entry["redirect_location"] = redirect.location
            if not tls.redirects_to_https(redirect):
                got = redirect.error or f"status {redirect.status}, Location {redirect.location!r}"
                problems.append(
                    f"{host}: plain HTTP on port {p['http_port']} does not redirect to https://{host}/ ({got})"
                )
        report.append(entry)
    result["hosts"] = report
    if problems:
        module.fail_json(msg="; ".join(problems), **result)
    module.exit_json(**result)


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
