#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: http_load
short_description: Run a bounded HTTP load test and enforce latency and error thresholds
version_added: 0.1.0
description:
  - Sends a bounded number of HTTP requests, spread round-robin over O(targets), with a fixed
    concurrency, and measures latency percentiles and the error rate, per target and overall.
  - Stops by itself at O(requests) requests or O(max_seconds) seconds, whichever comes first.
  - Fails when the overall p99 latency or error rate breaks O(max_p99_ms) or O(max_error_rate_pct),
    naming the measured value and the threshold.
author:
  - Thinkus platform team (@thinkus-ai)
extends_documentation_fragment:
  - thinkus.ops.attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode no request is sent; the module reports the plan (targets, request count).
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - Reads only; never reports a change.
options:
  targets:
    description:
      - The endpoints to load.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: A short name used in the report.
        type: str
        required: true
      url:
        description: The URL to request (http or https).
        type: str
        required: true
      method:
        description: HTTP method; only safe methods are allowed.
        type: str
        choices: [GET, HEAD]
        default: GET
      expected_status:
        description: Status codes that count as success.
        type: list
        elements: int
        default: [200]
  requests:
    description: Total number of requests (1 to 100000).
    type: int
    default: 500
  concurrency:
    description: Requests in flight at once (1 to 64).
    type: int
    default: 8
  max_seconds:
    description: Hard stop in seconds (1 to 600), even when fewer than O(requests) were sent.
    type: float
    default: 60
  timeout:
    description: Timeout of one request, in seconds.
    type: float
    default: 10
  connect_address:
    description:
      - Send every request to this IP address or host name instead of the address the URL's
        host resolves to, as C(curl --resolve) does. The Host header, TLS SNI and the
        certificate check keep the URL's host.
      - For checking an environment before its DNS points at it, or through a known load balancer.
    type: str
  ca_path:
    description:
      - A PEM bundle of the CAs HTTPS certificates must chain to, instead of the system roots
        (a private CA, or a staging ACME server's root). The certificate is always verified.
    type: path
  max_p99_ms:
    description: Fail when the overall p99 latency in milliseconds is above this. Unset means no limit.
    type: float
  max_error_rate_pct:
    description: Fail when the overall error rate in percent is above this. Unset means no limit.
    type: float
"""

EXAMPLES = r"""
- name: Load the API health endpoint and one representative endpoint
  thinkus.ops.http_load:
    targets:
      - name: health
        url: https://api.thinkus.ai/health
      - name: ready
        url: https://api.thinkus.ai/ready
    requests: 2000
    concurrency: 16
    max_seconds: 120
    max_p99_ms: 500
    max_error_rate_pct: 1
  register: load_report
"""

RETURN = r"""
overall:
  description: Statistics over all requests.
  returned: success or threshold failure, not in check mode
  type: dict
  sample:
    requests: 500
    errors: 0
    error_rate_pct: 0.0
    p50_ms: 2.1
    p95_ms: 4.0
    p99_ms: 7.9
    max_ms: 12.0
    rps: 850.2
per_target:
  description: The same statistics per target name.
  returned: success or threshold failure, not in check mode
  type: dict
breaches:
  description: Thresholds that were broken, as sentences.
  returned: always
  type: list
  elements: str
duration_seconds:
  description: Wall time of the load.
  returned: success or threshold failure, not in check mode
  type: float
plan:
  description: What would be sent (check mode).
  returned: check mode
  type: dict
"""

import os
from typing import Any
from urllib.parse import urlparse

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.thinkus.ops.plugins.module_utils._loadtest import (
    Target,
    run_load,
    summarise,
    threshold_breaches,
)


def _validate(module: AnsibleModule) -> list[Target]:
    p = module.params
    bounds = {"requests": (1, 100000), "concurrency": (1, 64), "max_seconds": (1, 600)}
    for key, (low, high) in bounds.items():
        if not low <= p[key] <= high:
            module.fail_json(msg=f"{key} must be between {low} and {high}, got {p[key]}")
    targets = []
    for t in p["targets"]:
        parsed = urlparse(t["url"])
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            module.fail_json(msg=f"targets[{t['name']}].url must be an http(s) URL, got {t['url']!r}")
        targets.append(Target(t["name"], t["url"], t["method"], tuple(t["expected_status"])))
    if not targets:
        module.fail_json(msg="targets must name at least one endpoint")
    return targets


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    return dict(
        argument_spec={
            "targets": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "name": {"type": "str", "required": True},
                    "url": {"type": "str", "required": True},
                    "method": {"type": "str", "choices": ["GET", "HEAD"], "default": "GET"},
                    "expected_status": {"type": "list", "elements": "int", "default": [200]},
                },
            },
            "requests": {"type": "int", "default": 500},
            "concurrency": {"type": "int", "default": 8},
            "max_seconds": {"type": "float", "default": 60},
            "timeout": {"type": "float", "default": 10},
            "connect_address": {"type": "str"},
            "ca_path": {"type": "path"},
            "max_p99_ms": {"type": "float"},
            "max_error_rate_pct": {"type": "float"},
        },
        supports_check_mode=True,
    )


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    targets = _validate(module)
    p = module.params
    if module.check_mode:
        plan = {"targets": [t.name for t in targets], "requests": p["requests"], "concurrency": p["concurrency"]}
        module.exit_json(changed=False, plan=plan, breaches=[])
    if p["ca_path"] and not os.path.isfile(p["ca_path"]):
        module.fail_json(msg=f"ca_path must be a readable PEM file, got {p['ca_path']!r}")
    samples, wall = run_load(
        targets, p["requests"], p["concurrency"], p["max_seconds"], p["timeout"], p["connect_address"], p["ca_path"]
    )
    overall = summarise(samples, wall)
    per_target = {t.name: summarise([s for s in samples if s.target == t.name], wall) for t in targets}
    breaches = threshold_breaches(overall, p["max_p99_ms"], p["max_error_rate_pct"], "overall")
    result = {
        "changed": False,
        "overall": overall,
        "per_target": per_target,
        "breaches": breaches,
        "duration_seconds": round(wall, 2),
    }
    if breaches:
        module.fail_json(msg="load test thresholds broken: " + "; ".join(breaches), **result)
    module.exit_json(**result)


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
