# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of thinkus.ops.restore_verify and backup_prune: RPO options and the check-mode plan."""

from __future__ import annotations

import datetime as dt

import pytest

from ansible_collections.thinkus.ops.plugins.module_utils._backup_common import BackupError, iso
from ansible_collections.thinkus.ops.plugins.module_utils._backup_ops import rpo_check
from ansible_collections.thinkus.ops.plugins.modules import backup_prune
from ansible_collections.thinkus.ops.plugins.modules import restore_verify as mod

MANIFEST = {
    "objects": [{"name": "postgres.dump", "sha256": "a" * 64, "size": 10}],
    "fingerprint": {"postgres": {"schema_hash": "h", "tables": {"public.b": 2, "public.a": 1}}},
}


def test_rpo_defaults_and_overrides() -> None:
    assert mod.rpo_for("hourly", {}) == 7200
    assert mod.rpo_for("full", {"full": "60"}) == 60
    with pytest.raises(BackupError, match="unknown kind 'weekly'"):
        mod.rpo_for("full", {"weekly": 1})
    with pytest.raises(BackupError, match=r"rpo_seconds\.full must be a number"):
        mod.rpo_for("full", {"full": "soon"})


def test_check_mode_plans_every_check_without_results() -> None:
    checks = mod.planned_checks(MANIFEST, 3600, "manifest", 120)
    assert [c.name for c in checks] == [
        "checksum:postgres.dump",
        "rpo",
        "schema_hash",
        "tables",
        "row_count:public.a",
        "row_count:public.b",
        "rto",
    ]
    assert all(c.ok is None and c.actual is None for c in checks)
    assert checks[4].expected == 1
    live = mod.planned_checks(MANIFEST, 0, "live", None)
    assert "rpo" not in [c.name for c in live] and live[1].expected == "live"


def test_rpo_check_names_the_age() -> None:
    now = dt.datetime(2026, 1, 17, 12, 0, tzinfo=dt.UTC)
    old = {"finished_at": iso(now - dt.timedelta(hours=30))}
    check = rpo_check(old, 26 * 3600, now)
    assert (check.name, check.ok, check.actual) == ("rpo", False, "age 108000s")
    assert rpo_check({"finished_at": iso(now - dt.timedelta(hours=1))}, 26 * 3600, now).ok


def test_prune_retention_validation() -> None:
    assert backup_prune.parse_retention({"full": "30"}) == {"full": 30.0}
    with pytest.raises(BackupError, match="unknown kind"):
        backup_prune.parse_retention({"daily": 1})
    with pytest.raises(BackupError, match="more than 0"):
        backup_prune.parse_retention({"full": 0})
