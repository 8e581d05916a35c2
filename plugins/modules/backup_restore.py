#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_restore
short_description: Restore a PostgreSQL or Redis backup into a target database or Redis server
version_added: 0.1.0
description:
  - Restores a backup made by M(thinkus.ops.backup_run), a named one or the latest good one of a kind,
    after checking the size and SHA-256 of every object against its manifest.
  - PostgreSQL - C(pg_restore) into O(postgres_database). A target that already holds tables, views or
    sequences is refused unless O(force=true), which restores with C(--clean --if-exists) (objects the
    backup holds are replaced, others are left).
  - Redis - the snapshot is loaded by a throwaway C(redis-server) (an RDB file the way Redis restores one,
    C(redis-cli --rdb) only downloads it; a logical snapshot key by key with RESTORE ... ABSTTL; the manifest's
    C(dump.mode) says which) and the keys of O(redis_databases) matching O(redis_key_pattern)
    are copied to the target with DUMP/RESTORE, TTLs kept. A target holding matching keys is refused
    unless O(force=true), which deletes the matching keys first. This works for managed Redis too, over TLS.
  - After a PostgreSQL restore the row count of every table in the manifest is checked in the target.
author:
  - Thinkus platform team (@thinkus-ai)
requirements:
  - Python 3.11 or newer on the host that runs the module (it fails at once, naming this, on an older one)
  - boto3
  - psycopg2 and C(pg_restore) (PostgreSQL backups)
  - redis (Python library) and C(redis-server) (Redis backups)
  - cryptography (encrypted backups); C(openssl) for backups encrypted before AES-256-GCM
extends_documentation_fragment:
  - thinkus.ops.backup
  - thinkus.ops.backup.postgres
  - thinkus.ops.backup.redis
  - thinkus.ops.attributes
attributes:
  check_mode:
    support: full
    details:
      - Finds the backup and inspects the target (fails the same way on a non-empty target without
        O(force)); downloads and restores nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - A restore always writes the target and reports a change.
options:
  key:
    description: The backup to restore, as its folder or manifest key. When not set, the latest of O(kind).
    type: str
  kind:
    description: Kind of backup to take the latest of when O(key) is not set.
    type: str
    choices: [full, hourly, redis]
  postgres_database:
    description:
      - Database of the connection when O(postgres_url) names none. Falls back to E(PGDATABASE).
      - The restore goes into this database unless O(target_database) is set.
    type: str
  target_database:
    description:
      - The database to restore into, on the server of the connection. When not set, the database of the
        connection (the one in O(postgres_url), else O(postgres_database)).
      - The role P(thinkus.ops.backup#role) sets it to a scratch database unless told to restore over the source.
    type: str
  create_database:
    description: Create the target database when it does not exist (else that is an error).
    type: bool
    default: false
  restore_jobs:
    description: Parallel C(pg_restore) jobs.
    type: int
    default: 2
  redis_databases:
    description: Database numbers to restore (each into the same number). Default every database in the backup.
    type: list
    elements: int
  redis_key_pattern:
    description: Only keys matching this glob (Redis C(SCAN MATCH) syntax) are restored, checked and replaced.
    type: str
    default: "*"
  force:
    description: Restore into a target that is not empty (see the description for what is replaced).
    type: bool
    default: false
  encryption_key:
    description:
      - Key of an encrypted backup. Never logged. Falls back to E(THINKUS_BACKUP_ENCRYPTION_KEY).
      - Every chunk of an AES-256-GCM object is authenticated before anything is restored; an object that
        was changed, truncated or reordered fails naming it. Backups made before authenticated encryption
        (C(openssl enc) AES-256-CBC, recognised from the manifest) are decrypted with C(openssl) and checked
        against the plaintext SHA-256 in their manifest.
    type: str
  encryption_previous_keys:
    description:
      - Earlier encryption keys, kept here after a key rotation until the backups made with them have aged
        out. The key whose id the manifest records (C(encryption.key_id)) is used. Never logged.
    type: list
    elements: str
    default: []
  work_dir:
    description: Where objects are downloaded (a private directory is made inside and removed).
    type: path
seealso:
  - module: thinkus.ops.backup_run
  - module: thinkus.ops.restore_verify
"""

EXAMPLES = r"""
- name: Restore the latest full backup into a new database
  thinkus.ops.backup_restore:
    kind: full
    bucket: thinkus-backups
    prefix: prod
    postgres_url: "{{ vault_restore_target_url }}"
    create_database: true
  no_log: true

- name: Put the sessions of the latest Redis snapshot back into db 0, replacing what is there
  thinkus.ops.backup_restore:
    kind: redis
    bucket: thinkus-backups
    prefix: prod
    redis_host: redis.internal
    redis_databases: [0]
    redis_key_pattern: "session:*"
    force: true
  no_log: true
"""

RETURN = r"""
backup:
  description: Id, kind, manifest key, finish time and age (seconds, when the module ran) of the backup restored.
  returned: always
  type: dict
  sample:
    id: 20260117T030000Z-1a2b3c
    kind: full
    manifest: prod/full/20260117T030000Z-1a2b3c/manifest.json
    finished_at: "2026-01-17T03:00:41.512Z"
    age_seconds: 5400
target:
  description: The target (no credentials) and what it held before.
  returned: always
  type: dict
  sample: {database: thinkus, host: db.internal, port: 5432, objects_before: 0}
checks:
  description: Checksum checks of the objects and, for PostgreSQL, row counts in the target afterwards.
  returned: success, not in check mode
  type: list
  elements: dict
restored_keys:
  description: Number of Redis keys copied per database.
  returned: Redis backups, not in check mode
  type: dict
  sample: {"0": 5000}
restore_seconds:
  description: Time the restore itself took.
  returned: success, not in check mode
  type: float
"""

import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.thinkus.ops.plugins.module_utils import _pg_backup as pg
from ansible_collections.thinkus.ops.plugins.module_utils import _redis_backup as rd
from ansible_collections.thinkus.ops.plugins.module_utils import _s3_store as s3
from ansible_collections.thinkus.ops.plugins.module_utils._backup_common import (
    BackupError,
    Check,
    failed_names,
    parse_iso,
    python_problem,
    utcnow,
)
from ansible_collections.thinkus.ops.plugins.module_utils._backup_ops import (
    WorkDir,
    backup_argument_spec,
    decrypt_objects,
    fetch_objects,
    postgres_dump_path,
    redis_snapshot_file,
    resolve_backup,
)


def argument_spec() -> dict[str, Any]:
    return backup_argument_spec(
        key=dict(type="str", no_log=False),
        kind=dict(type="str", choices=["full", "hourly", "redis"]),
        create_database=dict(type="bool", default=False),
        restore_jobs=dict(type="int", default=2),
        redis_databases=dict(type="list", elements="int"),
        redis_key_pattern=dict(type="str", default="*", no_log=False),
        force=dict(type="bool", default=False),
        target_database=dict(type="str"),
        encryption_previous_keys=dict(type="list", elements="str", no_log=True, default=[]),
    )


def inspect_postgres(params: dict[str, Any]) -> tuple[pg.PgConn, dict[str, Any], bool]:
    """The target, a description of it, and whether it must be created."""
    target = pg.PgConn.from_params(params)
    if params["target_database"]:
        target = target.with_database(params["target_database"])
    if not target.database:
        raise BackupError("set target_database (or postgres_database, or postgres_url) to the database to restore into")
    admin = target.with_database("postgres")
    exists = True
    try:
        objects = pg.user_table_count(target)
    except BackupError:
        if not pg.database_exists(admin, target.database):
            exists = False
            objects = 0
        else:
            raise
    if not exists and not params["create_database"]:
        raise BackupError(f"database {target.database!r} does not exist: create it or set create_database=true")
    if objects and not params["force"]:
        raise BackupError(
            f"database {target.database!r} is not empty ({objects} tables, views or sequences): "
            "refusing to restore into it without force=true; nothing was changed"
        )
    return target, {**target.describe(), "exists": exists, "objects_before": objects}, not exists


def inspect_redis(params: dict[str, Any], manifest: dict[str, Any]) -> tuple[dict[str, Any], list[int], dict]:
    target = rd.params_from_module(params)
    rd.ping(target)
    dbs = params["redis_databases"]
    if dbs is None:
        dbs = sorted(int(db) for db in manifest["fingerprint"]["redis"]["databases"])
    before = rd.count_keys(target, dbs, params["redis_key_pattern"])
    busy = {db: n for db, n in before.items() if n}
    if busy and not params["force"]:
        where = ", ".join(f"db {db}: {n} keys" for db, n in busy.items())
        raise BackupError(
            f"Redis target holds keys matching {params['redis_key_pattern']!r} ({where}): "
            "refusing to restore over them without force=true; nothing was changed"
        )
    return target, dbs, {**rd.describe(target), "databases": dbs, "keys_before": {str(k): v for k, v in before.items()}}


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    return dict(argument_spec=argument_spec(), supports_check_mode=True, required_one_of=[("key", "kind")])


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    too_old = python_problem("thinkus.ops.backup_restore")
    if too_old:
        module.fail_json(msg=too_old)
    if not s3.HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=str(s3.BOTO3_IMPORT_ERROR))
    params = module.params
    result: dict[str, Any] = {"changed": False}
    try:
        store = s3.S3Store(params)
        manifest = resolve_backup(store, params["prefix"], params["key"], params["kind"])
        result["backup"] = {
            "id": manifest["id"],
            "kind": manifest["kind"],
            "manifest": manifest["_key"],
            "finished_at": manifest["finished_at"],
            "age_seconds": int((utcnow() - parse_iso(manifest["finished_at"])).total_seconds()),
        }
        is_pg = "postgres" in manifest["fingerprint"]
        if is_pg and not pg.HAS_PSYCOPG2:
            module.fail_json(msg=missing_required_lib("psycopg2"))
        if not is_pg and not rd.HAS_REDIS:
            module.fail_json(msg=missing_required_lib("redis"))
        if is_pg:
            target, result["target"], create = inspect_postgres(params)
        else:
            rtarget, dbs, result["target"] = inspect_redis(params, manifest)
        result["changed"] = True
        if module.check_mode:
            module.exit_json(**result)
        with WorkDir(params["work_dir"]) as work:
            checks, paths = fetch_objects(store, manifest, work)
            if failed_names(checks):
                result["checks"] = [c.as_dict() for c in checks]
                result["changed"] = False
                module.fail_json(msg=f"backup {manifest['id']} is damaged: {', '.join(failed_names(checks))}", **result)
            plain = decrypt_objects(manifest, paths, params["encryption_key"], params["encryption_previous_keys"])
            t0 = time.monotonic()
            if is_pg:
                if create:
                    pg.create_database(target.with_database("postgres"), target.database)
                pg.restore(target, postgres_dump_path(plain, work), params["restore_jobs"], clean=params["force"])
                actual = pg.live_fingerprint(target)["tables"]
                for table, rows in sorted(manifest["fingerprint"]["postgres"]["tables"].items()):
                    checks.append(Check(f"row_count:{table}", rows, actual.get(table), actual.get(table) == rows))
            else:
                snap, fmt = redis_snapshot_file(manifest, plain)
                with rd.ScratchRedis(snap, databases=max(dbs, default=0) + 1, fmt=fmt) as scratch:
                    copied = rd.copy_keys(scratch.params, rtarget, dbs, params["redis_key_pattern"], params["force"])
                result["restored_keys"] = {str(k): v for k, v in copied.items()}
            result["restore_seconds"] = round(time.monotonic() - t0, 3)
        result["checks"] = [c.as_dict() for c in checks]
        if failed_names(checks):
            module.fail_json(
                msg=f"restored content differs from the manifest: {', '.join(failed_names(checks))}", **result
            )
    except BackupError as exc:
        module.fail_json(msg=str(exc), **result)
    module.exit_json(**result)


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
