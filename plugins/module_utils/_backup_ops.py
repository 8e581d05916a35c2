# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private flows of the thinkus.ops backup modules: take a backup, find one, fetch it
(verifying every checksum), restore it into a scratch target and compare.

The modules (backup_run, backup_restore, restore_verify) only parse options and report;
these functions do the work and raise ``BackupError`` with an operator-facing message.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.basic import env_fallback

from ansible_collections.thinkus.ops.plugins.module_utils import _backup_crypto as crypto
from ansible_collections.thinkus.ops.plugins.module_utils import _pg_backup as pg
from ansible_collections.thinkus.ops.plugins.module_utils import _redis_backup as rd
from ansible_collections.thinkus.ops.plugins.module_utils import _s3_store as s3
from ansible_collections.thinkus.ops.plugins.module_utils._backup_common import (
    ENGINE_OF_KIND,
    MANIFEST_NAME,
    BackupError,
    Check,
    backup_folder,
    build_manifest,
    latest_complete,
    list_files,
    manifest_json,
    new_backup_id,
    openssl_crypt,
    parse_iso,
    sha256_file,
    tool_version,
    utcnow,
    validate_manifest,
)
from ansible_collections.thinkus.ops.plugins.module_utils._s3_store import S3Store

PG_DUMP_FILE = "postgres.dump"
PG_DUMP_DIR = "postgres.dir"
RDB_FILE = "redis.rdb"
LOGICAL_FILE = "redis.logical"
ENC_SUFFIX = ".enc"


def backup_argument_spec(**own: dict[str, Any]) -> dict[str, Any]:
    """A backup module's argument spec: its own options plus what every one of them takes
    (the bucket, PostgreSQL and Redis connections, the encryption key and a work directory)."""
    spec: dict[str, Any] = dict(
        own,
        encryption_key=dict(type="str", no_log=True, fallback=(env_fallback, ["THINKUS_BACKUP_ENCRYPTION_KEY"])),
        work_dir=dict(type="path"),
    )
    spec.update(s3.s3_argument_spec())
    spec.update(pg.postgres_argument_spec())
    spec.update(rd.redis_argument_spec())
    return spec


@dataclass
class WorkDir:
    """A private (0700) temporary directory, removed with everything in it."""

    parent: str | None = None
    path: str = ""

    def __enter__(self) -> str:
        if self.parent:
            os.makedirs(self.parent, mode=0o700, exist_ok=True)
        self.path = tempfile.mkdtemp(prefix="thinkus-backup-", dir=self.parent or None)
        return self.path

    def __exit__(self, *_exc: Any) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# --------------------------------------------------------------------------- backup


@dataclass
class BackupRequest:
    kind: str
    prefix: str
    postgres: pg.PgConn | None = None
    postgres_format: str = "custom"
    postgres_jobs: int = 1
    postgres_compress: int | None = None
    redis: dict[str, Any] | None = None
    redis_sample_size: int = 100
    redis_snapshot_mode: str = "auto"
    encryption_key: str | None = None
    part_size: int = 32 * 1024 * 1024
    timings: dict[str, float] = field(default_factory=dict)


def plan_backup(req: BackupRequest, backup_id: str) -> dict[str, Any]:
    folder = backup_folder(req.prefix, req.kind, backup_id)
    suffix = ENC_SUFFIX if req.encryption_key else ""
    if ENGINE_OF_KIND[req.kind] == "redis":
        # auto: the RDB file, or a logical snapshot when the server turns out to refuse SYNC
        names = {"rdb": [RDB_FILE], "logical": [LOGICAL_FILE]}.get(req.redis_snapshot_mode, [RDB_FILE])
        objects = [folder + name + suffix for name in names]
    elif req.postgres_format == "directory":
        objects = [folder + PG_DUMP_DIR + "/*" + suffix]
    else:
        objects = [folder + PG_DUMP_FILE + suffix]
    plan = {"id": backup_id, "folder": folder, "objects": objects, "manifest": folder + MANIFEST_NAME}
    if ENGINE_OF_KIND[req.kind] == "redis":
        plan["redis_snapshot_mode"] = req.redis_snapshot_mode
        if req.redis_snapshot_mode == "auto":
            plan["fallback_object"] = folder + LOGICAL_FILE + suffix
    return plan


def run_backup(req: BackupRequest, store: S3Store, work: str) -> dict[str, Any]:
    """Dump, fingerprint, upload (verified) and write the manifest LAST; returns the manifest.

    If anything fails after an upload started, the objects already uploaded are deleted; if
    even that fails they stay without a manifest, which makes them an incomplete backup that
    is never "latest" and that pruning removes after its grace period.
    """
    started = utcnow()
    backup_id = new_backup_id(started)
    folder = backup_folder(req.prefix, req.kind, backup_id)
    local: list[tuple[str, str]] = []  # (path on disk, name in the folder)
    t0 = time.monotonic()
    if ENGINE_OF_KIND[req.kind] == "postgres":
        if req.postgres is None:
            raise BackupError(f"kind {req.kind} needs a PostgreSQL connection")
        out = os.path.join(work, PG_DUMP_DIR if req.postgres_format == "directory" else PG_DUMP_FILE)
        fp = pg.dump(req.postgres, out, req.postgres_format, req.postgres_jobs, req.postgres_compress)
        fingerprint = {"postgres": fp}
        tools = {"pg_dump": tool_version("pg_dump"), "server": pg.server_version(req.postgres)}
        source = {"engine": "postgres", **req.postgres.describe()}
        if req.postgres_format == "directory":
            local = [(os.path.join(out, rel), f"{PG_DUMP_DIR}/{rel}") for rel in list_files(out)]
        else:
            local = [(out, PG_DUMP_FILE)]
        dump = {"tool": "pg_dump", "format": req.postgres_format, "jobs": req.postgres_jobs}
    else:
        if req.redis is None:
            raise BackupError("kind redis needs a Redis connection")
        out, dump = redis_snapshot(req.redis, req.redis_snapshot_mode, work)
        fmt = dump["mode"]
        databases = rd.logical_databases(out) + 1 if fmt == "logical" else 16
        with rd.ScratchRedis(out, databases=databases, fmt=fmt) as scratch:
            fingerprint = {"redis": rd.fingerprint(scratch.params, req.redis_sample_size)}
        tools = {"redis-cli": tool_version("redis-cli"), "redis-server": tool_version("redis-server")}
        source = {"engine": "redis", **rd.describe(req.redis)}
        local = [(out, os.path.basename(out))]
    req.timings["dump_seconds"] = round(time.monotonic() - t0, 3)

    objects: list[dict[str, Any]] = []
    uploaded: list[str] = []
    t1 = time.monotonic()
    encryptor = crypto.Encryptor(req.encryption_key) if req.encryption_key else None
    try:
        for path, name in local:
            entry: dict[str, Any] = {"name": name}
            if encryptor is not None:
                entry["plaintext_sha256"], entry["plaintext_size"] = sha256_file(path)
                encryptor.encrypt_file(path, path + ENC_SUFFIX)
                os.unlink(path)
                path, name = path + ENC_SUFFIX, name + ENC_SUFFIX
                entry["name"] = name
            key = folder + name
            result = store.upload_file(path, key, req.part_size)
            uploaded.append(key)
            entry.update(key=key, size=result["size"], sha256=result["sha256"])
            objects.append(entry)
        finished = utcnow()
        manifest = build_manifest(
            backup_id=backup_id,
            kind=req.kind,
            source=source,
            started_at=started,
            finished_at=finished,
            tools=tools,
            objects=objects,
            fingerprint=fingerprint,
            encryption=encryptor.info() if encryptor is not None else None,
            dump=dump,
        )
        store.put_json(folder + MANIFEST_NAME, manifest, manifest_json(manifest))
    except BaseException:
        # without a manifest, leftovers are an incomplete backup: never latest, pruned later
        with contextlib.suppress(Exception):
            store.delete_keys(uploaded)
        raise
    req.timings["upload_seconds"] = round(time.monotonic() - t1, 3)
    return manifest


def redis_snapshot(params: Mapping[str, Any], mode: str, work: str) -> tuple[str, dict[str, Any]]:
    """Take a Redis snapshot in ``mode`` (auto, rdb, logical); returns its path and the manifest's ``dump``.

    ``auto`` downloads the RDB file (SYNC) and falls back to a logical snapshot when the
    server refuses SYNC, as managed Redis does; any other failure is reported as it is.
    """
    if mode not in rd.SNAPSHOT_MODES:
        raise BackupError(f"redis_snapshot_mode must be one of {', '.join(rd.SNAPSHOT_MODES)}, got {mode!r}")
    dump: dict[str, Any] = {"requested_mode": mode}
    if mode in ("auto", "rdb"):
        out = os.path.join(work, RDB_FILE)
        try:
            rd.snapshot(params, out)
            dump.update(tool="redis-cli --rdb", format="rdb", mode="rdb")
            return out, dump
        except rd.SyncRefused as exc:
            if mode == "rdb":
                raise BackupError(f"{exc}: set redis_snapshot_mode to logical (or auto) for this server") from exc
            dump["fallback_reason"] = str(exc)
            with contextlib.suppress(OSError):
                os.unlink(out)
    out = os.path.join(work, LOGICAL_FILE)
    counts = rd.logical_snapshot(params, out)
    dump.update(tool="SCAN + DUMP/PTTL", format=rd.LOGICAL_FORMAT, mode="logical", keys=counts["keys"])
    return out, dump


def redis_snapshot_file(manifest: Mapping[str, Any], plain: Mapping[str, str]) -> tuple[str, str]:
    """The snapshot among a Redis backup's plaintext files, and its format (rdb or logical)."""
    if LOGICAL_FILE in plain:
        return plain[LOGICAL_FILE], "logical"
    if RDB_FILE in plain:
        return plain[RDB_FILE], "rdb"
    raise BackupError(f"backup {manifest['id']} holds no Redis snapshot ({RDB_FILE} or {LOGICAL_FILE})")


# --------------------------------------------------------------------------- find and fetch


def resolve_backup(store: S3Store, prefix: str, key: str | None, kind: str | None) -> dict[str, Any]:
    """The manifest of a named backup (its folder or manifest key) or of the latest good one of a kind."""
    if key:
        manifest_key = key if key.endswith("/" + MANIFEST_NAME) or key == MANIFEST_NAME else key.rstrip("/") + "/"
        if not manifest_key.endswith(MANIFEST_NAME):
            manifest_key += MANIFEST_NAME
    else:
        if not kind:
            raise BackupError("give either a backup key or a kind to take the latest backup of")
        latest = latest_complete(store.list_backups(prefix), kind)
        if latest is None:
            where = f"{store.bucket}/{prefix.strip('/')}" if prefix.strip("/") else store.bucket
            raise BackupError(f"no complete {kind} backup (one with a manifest) under {where}")
        manifest_key = latest.manifest_key
    manifest = validate_manifest(store.get_json(manifest_key), manifest_key)
    manifest["_key"] = manifest_key
    manifest["_folder"] = manifest_key[: -len(MANIFEST_NAME)]
    return manifest


def fetch_objects(store: S3Store, manifest: Mapping[str, Any], work: str) -> tuple[list[Check], dict[str, str]]:
    """Download every object of a backup; one checksum check per object. Returns checks and local paths."""
    checks: list[Check] = []
    paths: dict[str, str] = {}
    for obj in manifest["objects"]:
        name = obj["name"]
        path = os.path.join(work, "download", name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        got = store.download(obj.get("key") or manifest["_folder"] + name, path)
        ok = got["sha256"] == obj["sha256"] and got["size"] == obj["size"]
        checks.append(Check(f"checksum:{name}", {"sha256": obj["sha256"], "size": obj["size"]}, got, ok))
        paths[name] = path
    return checks, paths


def decrypt_objects(
    manifest: Mapping[str, Any], paths: dict[str, str], key: str | None, previous_keys: Sequence[str] = ()
) -> dict[str, str]:
    """Plaintext paths by plaintext name (decrypting when the backup is encrypted).

    AES-256-GCM objects (``thinkus.ops/backup-encryption/v1``) are authenticated chunk by chunk
    with the key whose id the manifest names; backups made before that (``openssl enc``
    AES-256-CBC, recognised from the manifest's ``encryption.cipher``) still restore through
    openssl. Either way the plaintext must match the SHA-256 the manifest recorded.
    """
    info = manifest.get("encryption")
    if not info:
        return dict(paths)
    keys = [key, *previous_keys]
    if crypto.is_legacy(info):
        chosen = next((k for k in keys if k), None)
        if not chosen:
            raise BackupError(f"backup {manifest['id']} is encrypted: give its encryption key")
        decryptor = None
    else:
        chosen = crypto.pick_key(info, keys, manifest["id"])
        decryptor = crypto.Decryptor(chosen)
    plain: dict[str, str] = {}
    for obj in manifest["objects"]:
        name = obj["name"]
        src = paths[name]
        dst = src[: -len(ENC_SUFFIX)] if src.endswith(ENC_SUFFIX) else src + ".plain"
        if decryptor is not None:
            decryptor.decrypt_file(src, dst, name)
        else:
            try:
                openssl_crypt(src, dst, chosen, decrypt=True)
            except BackupError as exc:
                raise BackupError(
                    f"cannot decrypt {name} (legacy AES-256-CBC backup): wrong encryption key or damaged object"
                ) from exc
        digest, _size = sha256_file(dst)
        if obj.get("plaintext_sha256") and digest != obj["plaintext_sha256"]:
            os.unlink(dst)
            raise BackupError(
                f"{name} decrypted to content whose checksum does not match the manifest: it was tampered with"
            )
        os.unlink(src)
        plain[name[: -len(ENC_SUFFIX)] if name.endswith(ENC_SUFFIX) else name] = dst
    return plain


def postgres_dump_path(paths: Mapping[str, str], work: str) -> str:
    if PG_DUMP_FILE in paths:
        return paths[PG_DUMP_FILE]
    names = [n for n in paths if n.startswith(PG_DUMP_DIR + "/")]
    if not names:
        raise BackupError("the backup holds no PostgreSQL dump")
    return os.path.join(work, "download", PG_DUMP_DIR)


def rpo_check(manifest: Mapping[str, Any], rpo_seconds: float, now: Any = None) -> Check:
    age = ((now or utcnow()) - parse_iso(manifest["finished_at"])).total_seconds()
    return Check("rpo", f"age <= {int(rpo_seconds)}s", f"age {int(age)}s", age <= rpo_seconds)


# --------------------------------------------------------------------------- scratch restores


def restore_postgres_scratch(
    admin: pg.PgConn,
    dump_path: str,
    scratch_name: str,
    jobs: int,
    on_restored: Callable[[pg.PgConn], dict[str, Any]],
) -> tuple[float, dict[str, Any]]:
    """Create ``scratch_name``, restore into it, fingerprint it, and drop it whatever happens."""
    if pg.database_exists(admin, scratch_name):
        raise BackupError(f"scratch database {scratch_name!r} already exists: refusing to touch it")
    pg.create_database(admin, scratch_name)
    try:
        target = admin.with_database(scratch_name)
        seconds = pg.restore(target, dump_path, jobs=jobs, clean=False, no_owner=True)
        return seconds, on_restored(target)
    finally:
        pg.drop_database(admin, scratch_name)
