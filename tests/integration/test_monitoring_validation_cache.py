# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The monitoring role's validation stamp (monitoring_validation_cache_dir), with the real promtool and amtool.

A run stamps the fingerprint of the files promtool and amtool accepted; a later run that renders
the same bytes with the same tools skips the scratch-directory check. What must never happen:
a stamp standing in for a check it did not make (other bytes, other tools), or a preview
writing one.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from tests.support.ansible import REPO_ROOT, PlaybookResult, run_playbook

PLAYBOOK = """---
- name: Monitoring preflight (validation included)
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Preflight
      ansible.builtin.include_role:
        name: thinkus.ops.monitoring
        tasks_from: preflight
"""

SKIPPED = "promtool and amtool accepted these exact files earlier (stamp"
PROMTOOL_RAN = "Check the rule files with promtool"


def _run(
    tmp_path: Path, cache: Path, check: bool = False, env: dict[str, str] | None = None, **extra: object
) -> PlaybookResult:
    playbook = tmp_path / "validate.yml"
    playbook.write_text(PLAYBOOK)
    return run_playbook(
        playbook,
        inventory=str(REPO_ROOT / "inventories" / "local"),
        extra_vars={"monitoring_validation_cache_dir": str(cache), **extra},
        check=check,
        env=env,
        verbosity=1,
    )


def _flat(text: str) -> str:
    return " ".join(text.split())


def _ran(result: PlaybookResult, task: str) -> bool:
    """Whether the task ran (the first line after its header is not "skipping")."""
    found = re.findall(rf"TASK \[thinkus\.ops\.monitoring : {re.escape(task)}\] \**\n(\w+)", result.output)
    return bool(found) and found[-1] != "skipping"


def test_the_same_files_and_tools_are_checked_once_and_stamped(tmp_path: Path) -> None:
    cache = tmp_path / "validated"
    preview = _run(tmp_path, cache, check=True)
    assert preview.rc == 0, preview.output
    assert _ran(preview, PROMTOOL_RAN)
    assert not cache.exists(), "a preview wrote a stamp"

    first = _run(tmp_path, cache)
    assert first.rc == 0, first.output
    assert _ran(first, PROMTOOL_RAN) and SKIPPED not in _flat(first.output)
    stamps = list(cache.iterdir())
    assert len(stamps) == 1 and len(stamps[0].name) == 64, stamps
    assert oct(cache.stat().st_mode & 0o777) == "0o700" and oct(stamps[0].stat().st_mode & 0o777) == "0o600"
    assert "/promtool " in stamps[0].read_text() and "/amtool " in stamps[0].read_text()

    again = _run(tmp_path, cache)
    assert again.rc == 0, again.output
    assert SKIPPED in _flat(again.output) and stamps[0].name[:12] in again.output
    assert not _ran(again, PROMTOOL_RAN)

    # Other bytes: a rule promtool rejects is checked (and refused) although a stamp exists.
    bad = _run(
        tmp_path,
        cache,
        monitoring_extra_alert_rules=[
            {"alert": "QuotaBurn", "expr": "rate(ai_tokens_total[5m]", "labels": {"severity": "warning"}}
        ],
    )
    assert bad.rc != 0
    assert "promtool rejected" in _flat(bad.output) and '"QuotaBurn"' in bad.output
    assert len(list(cache.iterdir())) == 1

    # An empty value checks on every run and stamps nothing.
    off = _run(tmp_path, cache, monitoring_validation_cache_dir="")
    assert off.rc == 0, off.output
    assert _ran(off, PROMTOOL_RAN) and SKIPPED not in _flat(off.output)


def test_other_tools_are_not_covered_by_the_stamp(tmp_path: Path) -> None:
    """The stamp is of the files and the tools: a promtool found first on PATH is run, and its verdict holds."""
    cache = tmp_path / "validated"
    assert _run(tmp_path, cache).rc == 0
    assert len(list(cache.iterdir())) == 1

    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "promtool"
    fake.write_text("#!/bin/sh\necho 'FAILED: this promtool refuses everything' >&2\nexit 1\n")
    fake.chmod(0o755)
    assert shutil.which("amtool")
    env = {"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
    other = _run(tmp_path, cache, env=env)
    assert other.rc != 0, "a stamp of the real promtool stood in for another promtool"
    assert "promtool rejected" in _flat(other.output), other.output[-3000:]
    assert len(list(cache.iterdir())) == 1
