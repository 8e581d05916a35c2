# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleValueOmittedError

from ansible_collections.thinkus.ops.plugins.plugin_utils._controller_module import ControllerModuleAction


class ActionModule(ControllerModuleAction):
    """thinkus.ops.k8s_release, in the controller when it can (see plugin_utils/_controller_module.py).

    Names the Secrets the release changed (or would change), at every verbosity: a rotated
    credential is worth a line in the log even when the task is only reported as changed.
    Names only: the values are never in the result.
    """

    # Templated in run(), after the preflight_problems check: a role's templates for them may not
    # render at all from the inputs its checks refuse (nor its secret variables be defined), and the
    # check's message is the one to give.
    _AFTER_THE_CHECK = frozenset(("secrets", "resources", "redact"))

    @classmethod
    def finalize_task_arg(cls, name: str, value: Any, templar: Any, context: Any) -> Any:
        if name in cls._AFTER_THE_CHECK:
            return value
        return super().finalize_task_arg(name, value, templar, context)

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        problems = self._task.args.get("preflight_problems") or []
        if problems and isinstance(problems, list):
            return {"failed": True, "changed": False, "msg": "; ".join(map(str, problems))}
        args = dict(self._task.args)
        for name in self._AFTER_THE_CHECK & set(args):
            try:
                args[name] = self._templar.template(args[name])
            except AnsibleValueOmittedError:
                del args[name]  # as Ansible's own templating of task arguments drops an omitted one
        self._task.args = args
        result = super().run(tmp, task_vars)
        secrets = result.get("secrets") or {}
        names = [*(secrets.get("changed") or []), *(secrets.get("pruned") or [])]
        if names and not self._task.no_log:
            verb = "would change" if self._task.check_mode else "changed"
            self._display.display(f"{self._task.get_name()}: Secrets {verb}: {', '.join(map(str, names))}")
        return result
