#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: restore_verify
short_description: Prove a backup by restoring it into a scratch target and comparing its content
version_added: 0.1.0
description:
  - Takes a backup made by M(thinkus.ops.backup_run) (a named one, or the latest good backup of a kind),
    downloads every object and checks its size and SHA-256 against the manifest.
  - PostgreSQL backups are restored with C(pg_restore) into a new scratch database, Redis snapshots are
    loaded by a throwaway C(redis-server) on a free loopback port (an RDB file the way Redis restores one, a
    logical snapshot key by key with RESTORE ... ABSTTL).
  - The restored content is compared with the fingerprint in the manifest (or, with O(compare_to=live),
    with the live source right now) - the set of tables, the row count of each table and the schema
    hash; for Redis the number of keys per database and the digest of a sample of keys and values.
  - The backup's age is checked against the recovery point objective of its kind (O(rpo_seconds)), and the
    time to get the data back (download + restore, the RTO) is measured and returned.
  - The scratch database is dropped and the throwaway server stopped whatever happens.
  - Returns a report with one entry per check (name, expected, actual, ok) and fails when any check fails,
    naming the checks (for example C(checksum:postgres.dump), C(row_count:public.orders), C(schema_hash),
    C(rpo), C(key_count:db0)).
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
      - Reads the manifest and returns the checks a real run would make, with their expected values;
        nothing is downloaded, restored or created.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - The scratch target is removed before the module returns; it never reports a change.
options:
  key:
    description:
      - The backup to verify, as its folder (C(<prefix>/<kind>/<id>/)) or its manifest key. When not set,
        the latest complete backup of O(kind) under O(prefix) is verified.
    type: str
  kind:
    description:
      - Kind of backup to take the latest of when O(key) is not set. Also picks the RPO.
    type: str
    choices: [full, hourly, redis]
  postgres_url:
    description:
      - Connection URL of the server that receives the scratch database (C(CREATE DATABASE) rights needed)
        and, with O(compare_to=live), of the live database (its database part).
      - Never logged; the password never reaches a command line.
    type: str
  postgres_database:
    description:
      - Database to connect to for creating and dropping the scratch database, and the live database
        O(compare_to=live) compares with. Falls back to E(PGDATABASE).
    type: str
  scratch_prefix:
    description:
      - Name prefix of the scratch database; a random suffix is added. The module refuses to use a
        database that already exists.
    type: str
    default: thinkus_restore_verify
  restore_jobs:
    description: Parallel C(pg_restore) jobs.
    type: int
    default: 2
  redis_sample_size:
    description:
      - Sample size for the live Redis fingerprint (O(compare_to=live)); with the manifest, the manifest's
        own sample size is used.
    type: int
    default: 100
  compare_to:
    description:
      - V(manifest) compares the restored content with the fingerprint taken at backup time.
      - V(live) compares it with the live source right now (O(postgres_database) or the Redis server),
        to see what changed since the backup.
      - O(redis_host), O(redis_port), O(redis_username) and O(redis_password) name that live Redis server;
        they are used with O(compare_to=live) only.
    type: str
    choices: [manifest, live]
    default: manifest
  rpo_seconds:
    description:
      - Maximum age of a backup per kind, in seconds. Kinds not given keep their default
        (V(full) 26 hours, V(hourly) 2 hours, V(redis) 6.5 hours). V(0) disables the check for a kind.
    type: dict
    default: {}
  rto_max_seconds:
    description: When set, an C(rto) check fails if download and restore together take longer.
    type: float
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
  - module: thinkus.ops.backup_restore
"""

EXAMPLES = r"""
- name: Prove last night's full backup (weekly drill)
  thinkus.ops.restore_verify:
    kind: full
    bucket: thinkus-backups
    prefix: prod
    endpoint_url: https://0123456789abcdef.r2.cloudflarestorage.com
    access_key: "{{ vault_r2_access_key }}"
    secret_key: "{{ vault_r2_secret_key }}"
    postgres_url: "{{ vault_drill_postgres_url }}"
  register: drill
  no_log: true

- name: Show the checks (no secrets in the report)
  ansible.builtin.debug:
    msg: "{{ drill.report.checks | map(attribute='name') | zip(drill.report.checks | map(attribute='ok')) }}"

- name: What changed in the live database since a given backup?
  thinkus.ops.restore_verify:
    key: prod/full/20260117T030000Z-1a2b3c/
    compare_to: live
    rpo_seconds: {full: 0}
    bucket: thinkus-backups
    postgres_url: "{{ vault_database_url }}"
  no_log: true
"""

RETURN = r"""
report:
  description: What was verified and how it went.
  returned: always
  type: dict
  contains:
    backup:
      description: Id, kind, manifest key, finish time and size of the backup.
      type: dict
      sample: {id: 20260117T030000Z-1a2b3c, kind: full, manifest: prod/full/20260117T030000Z-1a2b3c/manifest.json}
    ok:
      description: Whether every check passed (always false when a check failed). Not set in check mode.
      type: bool
    checks:
      description: One entry per check, in the order they ran.
      type: list
      elements: dict
      contains:
        name:
          description:
            - The check, for example C(checksum:postgres.dump), C(rpo), C(schema_hash), C(row_count:public.users).
          type: str
        expected:
          description: The value from the manifest (or the live source).
          type: raw
        actual:
          description: What the restore produced; C(null) in check mode or when the check could not run.
          type: raw
        ok:
          description: Whether the check passed; C(null) in check mode.
          type: bool
    failed_checks:
      description: Names of the failed checks.
      type: list
      elements: str
    download_seconds:
      description: Time to download every object.
      type: float
    restore_seconds:
      description: Time for C(pg_restore), or for C(redis-server) to load the RDB file.
      type: float
    rto_seconds:
      description: Download plus restore (plus decryption) time, the recovery time objective measured.
      type: float
    scratch:
      description: The scratch database or server used, and whether it was removed.
      type: dict
      sample: {database: thinkus_restore_verify_3f2a1b, removed: true}
"""

import secrets
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.thinkus.ops.plugins.module_utils import _pg_backup as pg
from ansible_collections.thinkus.ops.plugins.module_utils import _redis_backup as rd
from ansible_collections.thinkus.ops.plugins.module_utils import _s3_store as s3
from ansible_collections.thinkus.ops.plugins.module_utils._backup_common import (
    DEFAULT_RPO_SECONDS,
    BackupError,
    Check,
    compare_postgres,
    compare_redis,
    failed_names,
    python_problem,
)
from ansible_collections.thinkus.ops.plugins.module_utils._backup_ops import (
    WorkDir,
    backup_argument_spec,
    decrypt_objects,
    fetch_objects,
    postgres_dump_path,
    redis_snapshot_file,
    resolve_backup,
    restore_postgres_scratch,
    rpo_check,
)


def argument_spec() -> dict[str, Any]:
    return backup_argument_spec(
        key=dict(type="str", no_log=False),
        kind=dict(type="str", choices=["full", "hourly", "redis"]),
        scratch_prefix=dict(type="str", default="thinkus_restore_verify"),
        restore_jobs=dict(type="int", default=2),
        redis_sample_size=dict(type="int", default=100),
        compare_to=dict(type="str", default="manifest", choices=["manifest", "live"]),
        rpo_seconds=dict(type="dict", default={}),
        rto_max_seconds=dict(type="float"),
        encryption_previous_keys=dict(type="list", elements="str", no_log=True, default=[]),
    )


def rpo_for(kind: str, overrides: dict[str, Any]) -> float:
    rpo = dict(DEFAULT_RPO_SECONDS)
    for name, value in (overrides or {}).items():
        if name not in rpo:
            raise BackupError(f"rpo_seconds: unknown kind {name!r} (expected full, hourly or redis)")
        try:
            rpo[name] = float(value)
        except (TypeError, ValueError) as exc:
            raise BackupError(f"rpo_seconds.{name} must be a number of seconds, got {value!r}") from exc
    return rpo[kind]


def planned_checks(manifest: dict[str, Any], rpo: float, compare_to: str, rto_max: float | None) -> list[Check]:
    """The checks a real run makes, with the expected values known before restoring (check mode)."""
    checks = [
        Check(f"checksum:{o['name']}", {"sha256": o["sha256"], "size": o["size"]}, None, None)
        for o in manifest["objects"]
    ]
    if rpo > 0:
        checks.append(Check("rpo", f"age <= {int(rpo)}s", None, None))
    live = compare_to == "live"
    fp = manifest["fingerprint"]
    if "postgres" in fp:
        exp = fp["postgres"]
        checks.append(Check("schema_hash", "live" if live else exp["schema_hash"], None, None))
        checks.append(Check("tables", "live" if live else sorted(exp["tables"]), None, None))
        for table, rows in sorted(exp["tables"].items()):
            checks.append(Check(f"row_count:{table}", "live" if live else rows, None, None))
    else:
        for db, counts in sorted(fp["redis"]["databases"].items(), key=lambda kv: int(kv[0])):
            checks.append(Check(f"key_count:db{db}", "live" if live else counts["persistent"], None, None))
        checks.append(Check("sample_digest", "live" if live else fp["redis"]["sample"]["digest"], None, None))
    if rto_max is not None:
        checks.append(Check("rto", f"<= {rto_max:g}s", None, None))
    return checks


def verify(module: AnsibleModule, manifest: dict[str, Any], store: s3.S3Store, report: dict[str, Any]) -> list[Check]:
    params = module.params
    rpo = rpo_for(manifest["kind"], params["rpo_seconds"])
    checks: list[Check] = []
    if rpo > 0:
        checks.append(rpo_check(manifest, rpo))
    with WorkDir(params["work_dir"]) as work:
        t0 = time.monotonic()
        sums, paths = fetch_objects(store, manifest, work)
        report["download_seconds"] = round(time.monotonic() - t0, 3)
        checks[:0] = sums
        if failed_names(sums):
            return checks  # a damaged object is not restored
        t1 = time.monotonic()
        plain = decrypt_objects(manifest, paths, params["encryption_key"], params["encryption_previous_keys"])
        decrypt_seconds = time.monotonic() - t1
        fp = manifest["fingerprint"]
        if "postgres" in fp:
            admin = pg.PgConn.from_params(params)
            if not admin.configured:
                raise BackupError("a PostgreSQL backup needs postgres_url or postgres_host to restore into")
            live = params["compare_to"] == "live"
            expected = pg.live_fingerprint(admin) if live else fp["postgres"]
            name = f"{params['scratch_prefix']}_{secrets.token_hex(4)}"
            report["scratch"] = {"database": name, "removed": False}
            try:
                seconds, actual = restore_postgres_scratch(
                    admin, postgres_dump_path(plain, work), name, params["restore_jobs"], pg.live_fingerprint
                )
            finally:
                report["scratch"]["removed"] = not pg.database_exists(admin, name)
            checks += compare_postgres(expected, actual)
        else:
            live_params = rd.params_from_module(params)
            expected = fp["redis"]
            if params["compare_to"] == "live":
                expected = rd.fingerprint(live_params, params["redis_sample_size"])
            snap, fmt = redis_snapshot_file(manifest, plain)
            with rd.ScratchRedis(snap, databases=_highest(expected) + 1, fmt=fmt) as scratch:
                report["scratch"] = {"redis_port": scratch.port, "removed": False}
                seconds = scratch.load_seconds
                actual = rd.fingerprint(scratch.params, int(expected["sample"]["size"]))
            report["scratch"]["removed"] = True
            checks += compare_redis(expected, actual)
        report["restore_seconds"] = round(seconds, 3)
        report["rto_seconds"] = round(report["download_seconds"] + decrypt_seconds + seconds, 3)
        if params["rto_max_seconds"] is not None:
            checks.append(
                Check(
                    "rto",
                    f"<= {params['rto_max_seconds']:g}s",
                    f"{report['rto_seconds']:g}s",
                    report["rto_seconds"] <= params["rto_max_seconds"],
                )
            )
    return checks


def _highest(fp: dict[str, Any]) -> int:
    return max((int(db) for db in fp.get("databases", {})), default=0)


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    return dict(argument_spec=argument_spec(), supports_check_mode=True, required_one_of=[("key", "kind")])


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    too_old = python_problem("thinkus.ops.restore_verify")
    if too_old:
        module.fail_json(msg=too_old)
    if not s3.HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=str(s3.BOTO3_IMPORT_ERROR))
    report: dict[str, Any] = {"checks": [], "failed_checks": []}
    try:
        store = s3.S3Store(module.params)
        manifest = resolve_backup(store, module.params["prefix"], module.params["key"], module.params["kind"])
        report["backup"] = {
            "id": manifest["id"],
            "kind": manifest["kind"],
            "manifest": manifest["_key"],
            "finished_at": manifest["finished_at"],
            "size": manifest.get("size"),
            "encrypted": bool(manifest.get("encryption")),
        }
        engine_lib = pg.HAS_PSYCOPG2 if "postgres" in manifest["fingerprint"] else rd.HAS_REDIS
        if not engine_lib:
            module.fail_json(msg=missing_required_lib("psycopg2" if "postgres" in manifest["fingerprint"] else "redis"))
        rpo = rpo_for(manifest["kind"], module.params["rpo_seconds"])
        if module.check_mode:
            checks = planned_checks(manifest, rpo, module.params["compare_to"], module.params["rto_max_seconds"])
            report["checks"] = [c.as_dict() for c in checks]
            module.exit_json(changed=False, report=report)
        t0 = time.monotonic()
        checks = verify(module, manifest, store, report)
        report.setdefault("rto_seconds", round(time.monotonic() - t0, 3))
    except BackupError as exc:
        module.fail_json(msg=str(exc), report=report)
    report["checks"] = [c.as_dict() for c in checks]
    report["failed_checks"] = failed_names(checks)
    report["ok"] = not report["failed_checks"]
    if not report["ok"]:
        details = "; ".join(f"{c.name} (expected {c.expected}, got {c.actual})" for c in checks if not c.ok)
        details = details[:2000]
        module.fail_json(
            msg=f"restore verification of {manifest['id']} failed: {', '.join(report['failed_checks'])}: {details}",
            report=report,
        )
    module.exit_json(changed=False, report=report)


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
