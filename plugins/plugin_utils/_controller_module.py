# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Run a thinkus.ops module's code inside the controller when the target is the controller itself.

Not a public API: the leading underscore means other collections must not import it.

Every thinkus.ops task of the roles runs on the controller (``ansible_connection: local``): the
module would be zipped, written to a temporary directory, started as a new Python process
that imports Ansible's module library again, and then thrown away. That fixed cost was most
of a no-op deploy. The action plugins of those modules call the same ``run_module`` in the
worker process Ansible has already forked for the task, with the same argument validation
(the module's own ``module_args()``), check mode, diff, warnings and ``no_log`` masking.

Anything that changes where or how a module runs is left to the module, unchanged: another
connection (delegation to a host over SSH), ``become``, ``async``, or a task ``environment``
(the module reads its fallbacks, K8S_AUTH_KUBECONFIG and the like, from its environment).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.json import Direction, get_module_encoder
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.errors import UnsupportedError
from ansible.plugins.action import ActionBase

MODULES_PACKAGE = "ansible_collections.thinkus.ops.plugins.modules"
LOCAL_CONNECTIONS = frozenset(("local", "ansible.builtin.local"))
# The packages whose plain source files _BytecodeCachedImports loads: this collection's own.
_OWN_PACKAGES = frozenset(
    (
        MODULES_PACKAGE,
        "ansible_collections.thinkus.ops.plugins.module_utils",
        "ansible_collections.thinkus.ops.plugins.plugin_utils",
    )
)


class _BytecodeCachedImports(importlib.abc.MetaPathFinder):
    """Finds this collection's modules, module_utils and plugin_utils as Python's own file loader would.

    Ansible's collection loader compiles a module's source again in every process that imports
    it: it keeps no bytecode cache. The file loader reads and writes ``__pycache__`` beside the
    source, as it does for Ansible itself and for the plugin files (which Ansible's plugin loader
    loads with it). Installed in front of Ansible's finder only while a module's code is imported
    in the controller (``bytecode_cached_imports``); a package that is not a plain directory of
    source files (a redirect, a namespace spread over several paths) is left to Ansible's finder.
    """

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _dot, leaf = fullname.rpartition(".")
        if package not in _OWN_PACKAGES or not path:
            return None
        for entry in path:
            candidate = os.path.join(entry, leaf + ".py")
            if os.path.isfile(candidate):
                return importlib.util.spec_from_file_location(fullname, candidate)
        return None


@contextlib.contextmanager
def bytecode_cached_imports() -> Iterator[None]:
    """Imports of this collection's Python in the block use (and fill) the bytecode cache."""
    finder = _BytecodeCachedImports()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


class _Exit(BaseException):
    """exit_json / fail_json: ends the module's work like sys.exit ends a module process.

    A BaseException, so that the module's own ``except Exception`` clauses let it through,
    as they let SystemExit through in a module process.
    """

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__()
        self.result = result


class ControllerModule:
    """What ``run_module`` uses of an AnsibleModule: params, check_mode, _diff, warn, run_command, exit_json
    and fail_json."""

    def __init__(self, params: dict[str, Any], check_mode: bool, diff: bool) -> None:
        self.params = params
        self.check_mode = check_mode
        self._diff = diff
        self.warnings: list[str] = []
        # As AnsibleModule's: the values of the no_log options (set by the action plugin), masked in the
        # result; a module may add more, or narrow them.
        self.no_log_values: set[str] = set()

    def warn(self, warning: str) -> None:
        self.warnings.append(str(warning))

    def run_command(self, args: list[str]) -> tuple[int, str, str]:
        """AnsibleModule.run_command of an argument list (no shell): return code, stdout, stderr."""
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        return done.returncode, done.stdout, done.stderr

    def exit_json(self, **result: Any) -> None:
        result.setdefault("changed", False)
        raise _Exit(result)

    def fail_json(self, msg: str, **result: Any) -> None:
        result.update(failed=True, msg=msg)
        raise _Exit(result)


class ControllerModuleAction(ActionBase):
    """The action plugin of a module that defines ``module_args()`` and ``run_module(module)``.

    A module's action plugin is this class under the module's name (``plugins/action/<module>.py``
    imports it as ``ActionModule``); the module it runs is the one the task resolved to.
    """

    @property
    def module_code(self) -> ModuleType:
        name = self._task.resolved_action.rsplit(".", 1)[-1]
        with bytecode_cached_imports():
            return importlib.import_module(f"{MODULES_PACKAGE}.{name}")

    _supports_check_mode = True
    _supports_async = True  # async goes to the module, which supports it

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Import the module's code when its action plugin is loaded.

        The strategy loads each task's action plugin class in the main process (to read
        BYPASS_HOST_LOOP) before it forks the worker that runs the task: importing the module
        (and its module_utils) there means every worker inherits it, instead of each paying
        for the import again. The import reads compiled code from ``__pycache__`` where it can
        (bytecode_cached_imports): compiling the module and its module_utils again was about
        17 ms of every run that uses k8s_release.
        """
        super().__init_subclass__(**kwargs)
        name = cls.__module__.rsplit(".", 1)[-1]
        with contextlib.suppress(ImportError), bytecode_cached_imports():  # reported when the task runs
            importlib.import_module(f"{MODULES_PACKAGE}.{name}")

    def in_controller(self) -> bool:
        """Whether running in this process is the same as running the module on its target."""
        connection = getattr(self._connection, "transport", None) or self._play_context.connection
        return (
            connection in LOCAL_CONNECTIONS
            and not self._task.async_val
            and not self._play_context.become
            and not any(self._task.environment or [])  # a list of mappings, often [{}]
        )

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp
        if not self.in_controller():  # as ansible.builtin.normal runs a module, async included
            wrap_async = bool(self._task.async_val) and not self._connection.has_native_async
            result.update(
                self._execute_module(module_name=self._task.resolved_action, task_vars=task_vars, wrap_async=wrap_async)
            )
            if not wrap_async:
                self._remove_tmp_path(self._connection._shell.tmpdir)
            return result
        args = self.module_code.module_args()
        args.pop("supports_check_mode", None)
        # What a module process would receive: the arguments through Ansible's own module encoder,
        # so plain JSON types (no templating tags, vault markers or datetimes) reach the module's code.
        plain = json.loads(
            json.dumps(dict(self._task.args), cls=get_module_encoder("legacy", Direction.CONTROLLER_TO_MODULE))
        )
        validation = ArgumentSpecValidator(**args).validate(plain)
        if validation.error_messages:
            msg = validation.errors.msg
            if isinstance(validation.errors.errors[0], UnsupportedError):
                msg = f"Unsupported parameters for ({self._task.resolved_action}) module: {msg}"
            return dict(result, failed=True, msg=msg)
        params = validation.validated_parameters
        module = ControllerModule(params, check_mode=bool(self._task.check_mode), diff=bool(self._task.diff))
        module.no_log_values.update(validation._no_log_values)
        try:
            self.module_code.run_module(module)
            outcome: dict[str, Any] = {"changed": False}  # run_module always exits; this is a guard
        except _Exit as done:
            outcome = done.result
        no_log_values = module.no_log_values
        if module.warnings:
            outcome["warnings"] = module.warnings
        outcome["invocation"] = {"module_args": params}
        # ... and what a module process would return: JSON, with the no_log values masked.
        encoded = json.dumps(
            remove_values(outcome, no_log_values), cls=get_module_encoder("legacy", Direction.MODULE_TO_CONTROLLER)
        )
        result.update(json.loads(encoded))
        return result
