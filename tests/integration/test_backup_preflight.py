# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The backup role refuses wrong input in its preflight, naming the variable, the wrong value
(never a secret) and the expected form, before anything changes. No servers needed: the
role runs in host mode against directories of the test's own, which must stay absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ansible_collections.thinkus.ops.tests.support.ansible import PlaybookResult, run_playbook

pytestmark = [pytest.mark.slow]

SECRETS = {
    "backup_s3_secret_key": "s3-secret-preflight-0001",
    "backup_postgres_password": "pg-secret-preflight-0002",
    "backup_redis_password": "redis-secret-preflight-0003",
    "backup_encryption_key": "enc-secret-preflight-0004",
}

PLAY = """---
- name: Backup role
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
  tasks:
    - name: The role
      ansible.builtin.import_role:
        name: thinkus.ops.backup
        tasks_from: {tasks}
"""


def run_role(tmp_path: Path, tasks: str = "main.yml", tags: list[str] | None = None, **extra: Any) -> PlaybookResult:
    playbook = tmp_path / f"play-{tasks}"
    playbook.write_text(PLAY.format(tasks=tasks))
    extra_vars = {
        "backup_mode": "host",
        "backup_install_tools": False,
        "backup_host_config_dir": str(tmp_path / "etc"),
        "backup_host_systemd_dir": str(tmp_path / "systemd"),
        "backup_host_cron_file": str(tmp_path / "cron.d" / "thinkus-backup"),
        "backup_host_systemd_manage": False,
        "backup_host_user": "root",
        "backup_postgres_host": "db.internal",
        "backup_redis_host": "redis.internal",
        "backup_environment": "prod",
        **SECRETS,
        **extra,
    }
    return run_playbook(playbook, extra_vars=extra_vars, verbosity=3, tags=tags)


def assert_refused(result: PlaybookResult, tmp_path: Path, *expected: str) -> None:
    assert result.rc != 0, result.output[-3000:]
    for text in expected:
        assert text in result.output, (text, result.output[-3000:])
    for name, secret in SECRETS.items():
        assert secret not in result.output, f"{name} leaked"
    assert not (tmp_path / "etc").exists() and not (tmp_path / "systemd").exists(), "something changed"


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("75 * * * *", 'backup_schedules.hourly: minute "75" is out of range 0-59'),
        ("*/0 * * * *", 'backup_schedules.hourly: minute "*/0" has a step that is not a whole number above 0'),
        ("0 24 * * *", 'backup_schedules.hourly: hour "24" is out of range 0-23'),
        ("0 3 0 * *", 'backup_schedules.hourly: day of month "0" is out of range 1-31'),
        ("0 3 * 13 *", 'backup_schedules.hourly: month "13" is out of range 1-12'),
        ("0 3 * * 1,77", 'backup_schedules.hourly: day of week "77" is out of range 0-7'),
        ("0 5-2 * * *", 'backup_schedules.hourly: hour "5-2" is a reversed range'),
        ("0 1-2-3 * * *", 'backup_schedules.hourly: hour "1-2-3" is not a number, a range a-b or *'),
    ],
)
def test_a_cron_field_out_of_range_fails_in_preflight(tmp_path: Path, schedule: str, message: str) -> None:
    schedules = {"full": "0 3 * * *", "hourly": schedule, "redis": "30 */6 * * *", "drill": "0 5 * * 0"}
    result = run_role(tmp_path, backup_schedules=schedules)
    assert_refused(result, tmp_path, message, "minute 0-59, hour 0-23", "Check the schedule values")


@pytest.mark.parametrize("days", [0.5, 0, "a week"])
def test_a_retention_shorter_than_a_day_fails_in_preflight(tmp_path: Path, days: Any) -> None:
    result = run_role(tmp_path, backup_retention_days={"full": 30, "hourly": days, "redis": 7})
    assert_refused(
        result,
        tmp_path,
        "backup_retention_days.hourly must be a number of days of at least 1, so that a day's backups are kept",
        f"(got {days!r}".replace("'", '"'),
    )


def test_good_settings_pass_and_render_the_units(tmp_path: Path) -> None:
    """Valid edge values pass preflight (no false refusals), and the role then writes its files."""
    schedules = {"full": "0 3 * * *", "hourly": "15 * * * *", "redis": "30 */6 * * *", "drill": "0 5 * * 0,7"}
    result = run_role(tmp_path, backup_schedules=schedules, backup_retention_days={"full": 30, "hourly": 1, "redis": 7})
    assert result.rc == 0, result.output[-3000:]
    assert (tmp_path / "etc" / "vars.yml").is_file()
    for secret in SECRETS.values():
        assert secret not in result.output
        assert secret not in (tmp_path / "etc" / "vars.yml").read_text()


RESTORE = {"backup_restore_confirmation_required": True}


def test_restore_over_the_live_source_needs_its_own_flag(tmp_path: Path) -> None:
    result = run_role(
        tmp_path, "restore.yml", ["backup_preflight"], backup_restore_postgres_database="thinkus", **RESTORE
    )
    assert_refused(
        result,
        tmp_path,
        "backup_restore_postgres_database=thinkus is the live source database: restoring over it needs "
        "backup_restore_over_source=true",
        "scratch database thinkus_restored",
    )


def test_a_redis_restore_goes_into_the_source_and_needs_the_flag(tmp_path: Path) -> None:
    result = run_role(tmp_path, "restore.yml", ["backup_preflight"], backup_restore_kind="redis", **RESTORE)
    assert_refused(
        result, tmp_path, "(redis:redis.internal:6379), the live source: set backup_restore_over_source=true"
    )


def test_the_confirmation_names_environment_and_target(tmp_path: Path) -> None:
    result = run_role(
        tmp_path, "restore.yml", ["backup_preflight"], backup_restore_confirm="thinkus_restored", **RESTORE
    )
    assert_refused(
        result,
        tmp_path,
        "confirm with backup_restore_confirm=prod/thinkus_restored (the form is <environment>/<target database>",
        'got "thinkus_restored"',
    )
    ok = run_role(
        tmp_path, "restore.yml", ["backup_preflight"], backup_restore_confirm="prod/thinkus_restored", **RESTORE
    )
    assert ok.rc == 0, ok.output[-3000:]


def test_the_confirmation_follows_the_database_in_the_url_and_never_shows_the_url(tmp_path: Path) -> None:
    url = "postgresql://app_user:url-secret-0005@db.example:6543/appdb?sslmode=require"
    result = run_role(
        tmp_path,
        "restore.yml",
        ["backup_preflight"],
        backup_postgres_url=url,
        backup_restore_confirm="prod/thinkus_restored",
        **RESTORE,
    )
    assert_refused(result, tmp_path, "backup_restore_confirm=prod/appdb_restored")
    assert "url-secret-0005" not in result.output
    over = run_role(
        tmp_path,
        "restore.yml",
        ["backup_preflight"],
        backup_postgres_url=url,
        backup_restore_postgres_database="appdb",
        backup_restore_confirm="prod/appdb",
        **RESTORE,
    )
    assert_refused(over, tmp_path, "backup_restore_postgres_database=appdb is the live source database")
    assert "url-secret-0005" not in over.output


def test_the_environment_must_be_named_when_confirmation_is_required(tmp_path: Path) -> None:
    result = run_role(tmp_path, "restore.yml", ["backup_preflight"], backup_environment="", **RESTORE)
    assert_refused(result, tmp_path, "backup_environment must name the environment")
