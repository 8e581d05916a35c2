# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin of thinkus.ops.host_files: runs the module's code in the controller when the task's target
is the controller itself (plugin_utils/_controller_module.py says when), else the module as usual."""

from __future__ import annotations

from ansible_collections.thinkus.ops.plugins.modules import host_files
from ansible_collections.thinkus.ops.plugins.plugin_utils._controller_module import ControllerModuleAction


class ActionModule(ControllerModuleAction):
    MODULE = host_files
