# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible_collections.thinkus.ops.plugins.plugin_utils._controller_module import ControllerModuleAction


class ActionModule(ControllerModuleAction):
    """thinkus.ops.docker_build_image, in the controller when it can (see plugin_utils/_controller_module.py).

    Only where the controller's own Python has the Docker SDK; otherwise the module runs as a module,
    with the interpreter the task names (the docker_build role's docker_build_python_interpreter).
    """

    def in_controller(self) -> bool:
        code = self.module_code
        return super().in_controller() and code.docker is not None and bool(code.HAS_DOCKER_SDK)
