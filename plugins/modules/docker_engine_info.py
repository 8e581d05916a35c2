#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_engine_info
short_description: Check that the Docker engine answers, and report its version
version_added: 0.1.0
description:
  - Asks the Docker engine for its version, at the address M(thinkus.ops.docker_build_image) builds at for the
    same settings. Fails, naming that address, when the engine does not answer.
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
  docker_host:
    description:
      - The engine's address, such as C(unix:///var/run/docker.sock) or C(tcp://127.0.0.1:2375).
      - If not set, the value of the E(DOCKER_HOST) environment variable, else C(unix:///var/run/docker.sock).
    type: str
  timeout:
    description: Seconds to wait for the engine's answer.
    type: int
    default: 10
requirements:
  - docker (the Docker SDK for Python)
"""

EXAMPLES = r"""
- name: Check that the Docker engine answers
  thinkus.ops.docker_engine_info:
  register: engine
"""

RETURN = r"""
docker_host:
  description: The address that was asked.
  returned: always
  type: str
  sample: unix:///var/run/docker.sock
version:
  description: The engine's version.
  returned: success
  type: str
  sample: 26.1.5
api_version:
  description: The API version the engine speaks.
  returned: success
  type: str
  sample: "1.45"
os:
  description: The engine's operating system.
  returned: success
  type: str
  sample: linux
arch:
  description: The engine's architecture.
  returned: success
  type: str
  sample: amd64
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.thinkus.ops.plugins.module_utils import _docker_engine as engine


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    return dict(
        argument_spec={
            "docker_host": {"type": "str", "fallback": (env_fallback, ["DOCKER_HOST"])},
            "timeout": {"type": "int", "default": 10},
        },
        supports_check_mode=True,
    )


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    if not engine.HAS_DOCKER:
        module.fail_json(msg=missing_required_lib("docker"), exception=engine.DOCKER_IMPORT_ERROR)
    address = module.params["docker_host"] or engine.DEFAULT_DOCKER_HOST
    if module.params["timeout"] <= 0:
        module.fail_json(msg=f"timeout must be more than 0 seconds, got {module.params['timeout']}")
    try:
        client = engine.engine_client(address, module.params["timeout"])
        try:
            version = client.version()
        finally:
            client.close()
    except Exception as error:  # the SDK raises DockerException, requests' and socket errors alike
        module.fail_json(
            msg=f"The Docker engine at {address} does not answer: {error}. Is dockerd running, and is "
            "docker_host (or DOCKER_HOST) its address?",
            docker_host=address,
        )
    module.exit_json(
        changed=False,
        docker_host=address,
        version=version.get("Version", ""),
        api_version=version.get("ApiVersion", ""),
        os=version.get("Os", ""),
        arch=version.get("Arch", ""),
    )


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
