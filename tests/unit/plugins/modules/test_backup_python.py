# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The backup modules fail at once, naming the minimum, on a Python older than 3.11.

Only Python 3.11 is installed where these tests run, so the check itself is tested with
given versions, and the files the modules load are parsed as Python 3.8 source: an older
interpreter must get as far as the check instead of stopping at a SyntaxError.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ansible_collections.thinkus.ops.plugins.module_utils import _backup_common as bc

ROOT = Path(__file__).resolve().parents[4]
MODULES = ["backup_prune", "backup_run", "backup_restore", "restore_verify"]
LOADED = [ROOT / "plugins" / "modules" / f"{m}.py" for m in MODULES] + sorted(
    (ROOT / "plugins" / "module_utils").glob("_[bprs]*_*.py")
)


@pytest.mark.parametrize(
    ("version", "fails"), [((3, 8, 10), True), ((3, 10, 12), True), ((3, 11, 2), False), ((3, 13, 0), False)]
)
def test_python_problem_names_the_minimum(version: tuple[int, int, int], fails: bool) -> None:
    msg = bc.python_problem("thinkus.ops.backup_run", version, "/usr/bin/python3")
    if not fails:
        assert msg is None
        return
    assert msg is not None
    assert msg.startswith("thinkus.ops.backup_run needs Python 3.11 or newer on the host that runs it")
    assert f"/usr/bin/python3 is Python {'.'.join(map(str, version))}" in msg
    assert "ansible_python_interpreter" in msg


def test_this_python_passes() -> None:
    assert bc.python_problem("x") is None


@pytest.mark.parametrize("path", LOADED, ids=lambda p: p.name)
def test_files_the_modules_load_parse_on_python_3_8(path: Path) -> None:
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 8))


@pytest.mark.parametrize("module", MODULES)
def test_every_backup_module_checks_before_anything_else(module: str) -> None:
    source = (ROOT / "plugins" / "modules" / f"{module}.py").read_text()
    # run_module is the module's work, as a module and in the controller (its action plugin)
    body = source[source.index("def run_module(") :]
    after = [ln.strip() for ln in body.splitlines()[2:] if ln.strip()]  # after the docstring line
    assert after[0] == f'too_old = python_problem("thinkus.ops.{module}")'
    assert after[2] == "module.fail_json(msg=too_old)"
    assert "Python 3.11 or newer" in source.split('"""')[1]
