#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_prune
short_description: Delete backups older than their kind's retention, never the newest good one
version_added: 0.1.0
description:
  - Lists the backups made by M(thinkus.ops.backup_run) under a prefix and deletes the complete ones
    (with a manifest) older than the retention of their kind (O(retention_days)).
  - The newest complete backup of each kind is never deleted, however old it is.
  - Incomplete backups (no manifest; a failed or interrupted upload) older than
    O(incomplete_grace_hours) are deleted too; younger ones may still be uploading.
  - The age of a backup is the start time in its id (C(20260117T030000Z-...)). Kinds missing from
    O(retention_days) are left alone.
  - A backup's manifest is deleted before its other objects, so a half-deleted backup is never taken
    for a good one.
author:
  - Thinkus platform team (@thinkus-ai)
requirements:
  - Python 3.11 or newer on the host that runs the module (it fails at once, naming this, on an older one)
  - boto3
extends_documentation_fragment:
  - thinkus.ops.backup
  - thinkus.ops.attributes
attributes:
  check_mode:
    support: full
    details:
      - Lists the bucket and returns what a real run would delete, deleting nothing.
  diff_mode:
    support: full
    details:
      - The diff lists the backup folders before and after.
  idempotent:
    support: full
options:
  retention_days:
    description:
      - Days to keep each kind (C(full), C(hourly), C(redis)). A kind left out is never pruned.
    type: dict
    default: {full: 30, hourly: 7, redis: 7}
  incomplete_grace_hours:
    description: Age after which a backup without a manifest is deleted.
    type: float
    default: 24
seealso:
  - module: thinkus.ops.backup_run
"""

EXAMPLES = r"""
- name: Apply the seed's retention (full 30 days, hourly and Redis 7 days)
  thinkus.ops.backup_prune:
    bucket: thinkus-backups
    prefix: prod
    retention_days: {full: 30, hourly: 7, redis: 7}
"""

RETURN = r"""
deleted:
  description: Folders of the backups deleted (or, in check mode, that would be), with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{folder: prod/hourly/20260101T010000Z-1a2b3c/, kind: hourly, reason: older than 7 days}]
kept:
  description: Number of backups kept per kind.
  returned: always
  type: dict
  sample: {full: 30, hourly: 168, redis: 28}
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.thinkus.ops.plugins.module_utils import _s3_store as s3
from ansible_collections.thinkus.ops.plugins.module_utils._backup_common import (
    DEFAULT_RETENTION_DAYS,
    KINDS,
    MANIFEST_NAME,
    BackupError,
    plan_retention,
    python_problem,
    utcnow,
)


def parse_retention(raw: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for kind, days in (raw or {}).items():
        if kind not in KINDS:
            raise BackupError(f"retention_days: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
        try:
            out[kind] = float(days)
        except (TypeError, ValueError) as exc:
            raise BackupError(f"retention_days.{kind} must be a number of days, got {days!r}") from exc
        if out[kind] <= 0:
            raise BackupError(f"retention_days.{kind} must be more than 0, got {days!r}")
    return out


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    spec: dict[str, Any] = dict(
        retention_days=dict(type="dict", default=dict(DEFAULT_RETENTION_DAYS)),
        incomplete_grace_hours=dict(type="float", default=24.0),
    )
    spec.update(s3.s3_argument_spec())
    return dict(argument_spec=spec, supports_check_mode=True)


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    too_old = python_problem("thinkus.ops.backup_prune")
    if too_old:
        module.fail_json(msg=too_old)
    if not s3.HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=str(s3.BOTO3_IMPORT_ERROR))
    try:
        retention = parse_retention(module.params["retention_days"])
        store = s3.S3Store(module.params)
        backups = store.list_backups(module.params["prefix"])
        plan = plan_retention(backups, retention, utcnow(), module.params["incomplete_grace_hours"])
        deleted = [
            {"folder": ref.folder, "kind": ref.kind, "complete": ref.complete, "reason": plan.reasons[ref.folder]}
            for ref in plan.delete
        ]
        if plan.delete and not module.check_mode:
            # manifests first: from then on a half-deleted backup is merely incomplete
            store.delete_keys([k for ref in plan.delete for k in ref.keys if k.endswith("/" + MANIFEST_NAME)])
            store.delete_keys([k for ref in plan.delete for k in ref.keys if not k.endswith("/" + MANIFEST_NAME)])
    except BackupError as exc:
        module.fail_json(msg=str(exc))
    kept: dict[str, int] = {}
    for ref in plan.keep:
        kept[ref.kind] = kept.get(ref.kind, 0) + 1
    result: dict[str, Any] = dict(changed=bool(plan.delete), deleted=deleted, kept=kept)
    if module._diff:
        result["diff"] = {
            "before": "\n".join(ref.folder for ref in backups) + "\n",
            "after": "\n".join(ref.folder for ref in plan.keep) + "\n",
        }
    module.exit_json(**result)


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
