#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_run
short_description: Take a PostgreSQL or Redis backup into an S3-compatible bucket, with a manifest
version_added: 0.1.0
description:
  - Takes one backup of kind V(full) or V(hourly) (PostgreSQL, C(pg_dump) logical dump) or V(redis)
    (an RDB snapshot downloaded with C(redis-cli --rdb)) and uploads it to an S3-compatible bucket
    (Cloudflare R2, AWS S3, MinIO, ...) under C(<prefix>/<kind>/<backup id>/).
  - PostgreSQL needs nothing but a connection (a URL works), so managed databases (Supabase, Neon)
    are covered. The row count of every table and a schema hash are read in the very snapshot
    C(pg_dump) dumps (C(pg_export_snapshot)), while it runs.
  - Redis is snapshotted as an RDB file (C(redis-cli --rdb), the replication command SYNC) or, for servers
    that refuse SYNC (managed Redis such as Upstash or Redis Cloud), logically - every key with SCAN, DUMP and
    PTTL - see O(redis_snapshot_mode). Both work over TLS (C(rediss://) in O(redis_url), or O(redis_tls)).
    The manifest's C(dump.mode) records which one was taken; restores handle both.
  - The Redis snapshot is loaded into a throwaway C(redis-server) to check it and to take its
    fingerprint (keys per database, with and without a TTL, and a digest of a sample of keys).
  - Every upload is verified (the store's ETag against the MD5 of each part). The manifest
    (C(manifest.json)) is written LAST, with the kind, the source without credentials, start and
    end times, tool versions, the size and SHA-256 of each object and the fingerprint. A backup
    without a manifest is never the latest; on failure the objects already uploaded are deleted.
  - Passwords reach C(pg_dump) and C(redis-cli) through their environment (C(PGPASSWORD),
    C(REDISCLI_AUTH)), never their command line; encryption runs inside the module (no key on any command line).
author:
  - Thinkus platform team (@thinkus-ai)
requirements:
  - Python 3.11 or newer on the host that runs the module (it fails at once, naming this, on an older one)
  - boto3
  - psycopg2 (PostgreSQL kinds)
  - redis (Python library) and the C(redis-server) binary, and C(redis-cli) for RDB snapshots (V(redis) kind)
  - C(pg_dump) of the server's major version or newer (PostgreSQL kinds)
  - cryptography (with O(encryption_key))
extends_documentation_fragment:
  - thinkus.ops.backup
  - thinkus.ops.backup.postgres
  - thinkus.ops.backup.redis
  - thinkus.ops.attributes
attributes:
  check_mode:
    support: full
    details:
      - Connects to the source and the bucket (read only) and returns the keys a real run would write.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Every real run takes a new backup and reports a change.
options:
  kind:
    description:
      - V(full) and V(hourly) dump PostgreSQL (both are full logical dumps; they differ in schedule and
        retention), V(redis) snapshots Redis.
    type: str
    choices: [full, hourly, redis]
    required: true
  postgres_database:
    description: Database to back up. Falls back to E(PGDATABASE).
    type: str
  postgres_format:
    description:
      - V(custom) is one file; V(directory) is one file per table, dumped with O(postgres_jobs) parallel jobs.
    type: str
    choices: [custom, directory]
    default: custom
  postgres_jobs:
    description: Parallel C(pg_dump) jobs with O(postgres_format=directory).
    type: int
    default: 1
  postgres_compress:
    description: C(pg_dump --compress) level (0-9); the tool's default when not set.
    type: int
  redis_snapshot_mode:
    description:
      - V(rdb) downloads the server's RDB file with C(redis-cli --rdb) (needs SYNC); a point-in-time snapshot.
      - V(logical) reads every key with SCAN, DUMP and PTTL into a file restored with RESTORE ... ABSTTL (keys
        keep their expiry time). Works where SYNC is refused; consistent per key, not across keys. The
        C(redis-server) that loads it for the fingerprint and for restores must be of the source's version or newer.
      - V(auto) tries V(rdb) and falls back to V(logical) when the server refuses SYNC (an unknown, renamed or
        forbidden command); any other failure is reported as it is.
    type: str
    choices: [auto, rdb, logical]
    default: auto
  redis_sample_size:
    description: How many keys the Redis fingerprint's digest covers.
    type: int
    default: 100
  encryption_key:
    description:
      - Encrypt every object client-side before it leaves the host, with authenticated encryption
        (AES-256-GCM in 1 MiB chunks, each bound to its position and to whether it is the last one, so
        tampering, truncation and reordering are detected on restore). The key is a passphrase (for example
        the output of C(openssl rand -base64 32)); scrypt and HKDF-SHA256 derive a separate AES key for every
        object. The manifest records C(encryption.key_id), which identifies the key without revealing it.
      - Never logged. Falls back to E(THINKUS_BACKUP_ENCRYPTION_KEY).
      - Keep it in the vault; without it the backup cannot be restored.
    type: str
  work_dir:
    description: Where the dump is written before upload (a private directory is made inside and removed).
    type: path
  part_size_mb:
    description: Multipart upload part size in MiB (objects up to this size go in one request).
    type: int
    default: 32
seealso:
  - module: thinkus.ops.restore_verify
  - module: thinkus.ops.backup_prune
  - module: thinkus.ops.backup_restore
"""

EXAMPLES = r"""
- name: Daily full PostgreSQL backup to R2
  thinkus.ops.backup_run:
    kind: full
    bucket: thinkus-backups
    prefix: prod
    endpoint_url: https://0123456789abcdef.r2.cloudflarestorage.com
    access_key: "{{ vault_r2_access_key }}"
    secret_key: "{{ vault_r2_secret_key }}"
    postgres_url: "{{ vault_database_url }}"
  no_log: true

- name: Managed Redis over TLS without SYNC (Upstash, Redis Cloud) - a logical snapshot
  thinkus.ops.backup_run:
    kind: redis
    bucket: thinkus-backups
    redis_url: "{{ vault_redis_url }}"  # rediss://default:password@host:6379
    redis_snapshot_mode: logical
  no_log: true

- name: Redis snapshot, encrypted, credentials from the environment (AWS_*, REDISCLI_AUTH)
  thinkus.ops.backup_run:
    kind: redis
    bucket: thinkus-backups
    redis_host: redis.internal
    encryption_key: "{{ vault_backup_encryption_key }}"
  no_log: true
"""

RETURN = r"""
backup:
  description:
    - The backup's id, its folder in the bucket, the objects and the manifest key.
    - In check mode for kind V(redis) also C(redis_snapshot_mode) and, with V(auto), C(fallback_object), the
      key the logical snapshot gets if the server refuses SYNC.
  returned: always
  type: dict
  sample:
    id: 20260117T030000Z-1a2b3c
    folder: prod/full/20260117T030000Z-1a2b3c/
    objects: [prod/full/20260117T030000Z-1a2b3c/postgres.dump]
    manifest: prod/full/20260117T030000Z-1a2b3c/manifest.json
manifest:
  description: The manifest written to the bucket (no credentials in it).
  returned: success, not in check mode
  type: dict
  sample:
    kind: full
    engine: postgres
    source: {host: db.internal, port: 5432, database: thinkus, user: thinkus}
    started_at: "2026-01-17T03:00:00.000Z"
    finished_at: "2026-01-17T03:00:41.512Z"
    objects: [{name: postgres.dump, key: prod/full/.../postgres.dump, size: 104857600, sha256: 9f86d0...}]
    fingerprint: {postgres: {tables: {public.users: 1200}, schema_hash: 2c26b4...}}
timings:
  description: Seconds spent dumping (with the fingerprint) and uploading.
  returned: success, not in check mode
  type: dict
  sample: {dump_seconds: 38.2, upload_seconds: 2.9}
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.thinkus.ops.plugins.module_utils import _pg_backup as pg
from ansible_collections.thinkus.ops.plugins.module_utils import _redis_backup as rd
from ansible_collections.thinkus.ops.plugins.module_utils import _s3_store as s3
from ansible_collections.thinkus.ops.plugins.module_utils._backup_common import (
    ENGINE_OF_KIND,
    BackupError,
    new_backup_id,
    python_problem,
)
from ansible_collections.thinkus.ops.plugins.module_utils._backup_ops import (
    BackupRequest,
    WorkDir,
    backup_argument_spec,
    plan_backup,
    run_backup,
)


def argument_spec() -> dict[str, Any]:
    return backup_argument_spec(
        kind=dict(type="str", required=True, choices=["full", "hourly", "redis"]),
        postgres_format=dict(type="str", default="custom", choices=["custom", "directory"]),
        postgres_jobs=dict(type="int", default=1),
        postgres_compress=dict(type="int"),
        redis_sample_size=dict(type="int", default=100),
        redis_snapshot_mode=dict(type="str", default="auto", choices=["auto", "rdb", "logical"]),
        part_size_mb=dict(type="int", default=32),
    )


def build_request(params: dict[str, Any]) -> BackupRequest:
    kind = params["kind"]
    req = BackupRequest(
        kind=kind,
        prefix=params["prefix"] or "",
        postgres_format=params["postgres_format"],
        postgres_jobs=params["postgres_jobs"],
        postgres_compress=params["postgres_compress"],
        redis_sample_size=params["redis_sample_size"],
        redis_snapshot_mode=params["redis_snapshot_mode"],
        encryption_key=params["encryption_key"] or None,
        part_size=params["part_size_mb"] * 1024 * 1024,
    )
    if req.postgres_jobs < 1 or not 5 <= params["part_size_mb"] <= 5120:
        raise BackupError("postgres_jobs must be >= 1 and part_size_mb between 5 and 5120")
    if ENGINE_OF_KIND[kind] == "postgres":
        req.postgres = pg.PgConn.from_params(params)
        if not req.postgres.database:
            raise BackupError(f"kind {kind} backs up PostgreSQL: set postgres_url or postgres_database")
    else:
        req.redis = rd.params_from_module(params)
    return req


def check_access(req: BackupRequest, store: s3.S3Store) -> None:
    """Read-only probes, so that check mode finds bad credentials and unreachable services too."""
    store.check_access()
    if req.postgres is not None:
        pg.server_version(req.postgres)
    if req.redis is not None:
        rd.ping(req.redis)


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    return dict(argument_spec=argument_spec(), supports_check_mode=True)


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    too_old = python_problem("thinkus.ops.backup_run")
    if too_old:
        module.fail_json(msg=too_old)
    if not s3.HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=str(s3.BOTO3_IMPORT_ERROR))
    try:
        req = build_request(module.params)
        if req.postgres is not None and not pg.HAS_PSYCOPG2:
            module.fail_json(msg=missing_required_lib("psycopg2"))
        if req.redis is not None and not rd.HAS_REDIS:
            module.fail_json(msg=missing_required_lib("redis"))
        store = s3.S3Store(module.params)
        check_access(req, store)
        if module.check_mode:
            module.exit_json(changed=True, backup=plan_backup(req, new_backup_id()))
        with WorkDir(module.params["work_dir"]) as work:
            manifest = run_backup(req, store, work)
    except BackupError as exc:
        module.fail_json(msg=str(exc))
    folder = manifest["objects"][0]["key"].rsplit(manifest["objects"][0]["name"], 1)[0]
    module.exit_json(
        changed=True,
        backup={
            "id": manifest["id"],
            "folder": folder,
            "objects": [o["key"] for o in manifest["objects"]],
            "manifest": folder + "manifest.json",
        },
        manifest=manifest,
        timings=req.timings,
    )


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
