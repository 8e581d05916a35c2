# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private helpers shared by the thinkus.ops backup modules: bucket layout, manifests,
retention and the restore checks.

Not a public API. Everything here is pure (no network, no processes) so it is unit-tested
on its own; the clients live in ``_s3_store``, ``_pg_backup`` and ``_redis_backup``.

Bucket layout, one folder per backup::

    <prefix>/<kind>/<backup id>/<object>...      the dump, RDB file, ...
    <prefix>/<kind>/<backup id>/manifest.json    written LAST, only after every object
                                                 was uploaded and verified

A backup id starts with its UTC start time (``20260117T030000Z-1a2b3c``), so ids sort in
time order. A folder without ``manifest.json`` is an incomplete backup: it is never
"latest" and never counts as the newest good backup of its kind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "thinkus.ops/backup-manifest/v1"
KINDS = ("full", "hourly", "redis")
ENGINE_OF_KIND = {"full": "postgres", "hourly": "postgres", "redis": "redis"}
DEFAULT_RETENTION_DAYS = {"full": 30, "hourly": 7, "redis": 7}
# The seed's schedule (daily, hourly, every 6 hours) plus a margin for the job's own run time.
DEFAULT_RPO_SECONDS = {"full": 26 * 3600, "hourly": 2 * 3600, "redis": 6 * 3600 + 1800}

# The backup modules run where the jobs run: the controller, the backup image (Python 3.11) or,
# in host mode, the target host, which the role supports on Debian 12 (bookworm, Python 3.11)
# and newer. They use Python 3.11 features; on anything older they fail at once (the code
# below and everything these modules import stays importable by Python 3.8 so that they can).
MIN_PYTHON = (3, 11)

_ID_RE = re.compile(r"^(?P<ts>\d{8}T\d{6}Z)(?:-[0-9a-z]+)?$")
_TS_FORMAT = "%Y%m%dT%H%M%SZ"


class BackupError(Exception):
    """A failure with a message meant for the operator (no secrets in it)."""


# --------------------------------------------------------------------------- python


def python_problem(module: str, version: Sequence[int] | None = None, executable: str | None = None) -> str | None:
    """The message a backup module fails with on a Python older than MIN_PYTHON, else None."""
    version = tuple(version if version is not None else sys.version_info[:3])
    if version[:2] >= MIN_PYTHON:
        return None
    found = ".".join(str(v) for v in version[:3])
    need = ".".join(str(v) for v in MIN_PYTHON)
    return (
        f"{module} needs Python {need} or newer on the host that runs it; {executable or sys.executable} is "
        f"Python {found}. Debian 12 (bookworm) and newer have it as python3: point ansible_python_interpreter "
        "at a Python 3.11+ or run the backup from the backup image or the controller (backup_mode: cluster)"
    )


# --------------------------------------------------------------------------- time


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def new_backup_id(moment: dt.datetime | None = None) -> str:
    moment = moment or utcnow()
    return f"{moment.astimezone(dt.UTC).strftime(_TS_FORMAT)}-{secrets.token_hex(3)}"


def backup_id_time(backup_id: str) -> dt.datetime | None:
    match = _ID_RE.match(backup_id)
    if not match:
        return None
    return dt.datetime.strptime(match.group("ts"), _TS_FORMAT).replace(tzinfo=dt.UTC)


# --------------------------------------------------------------------------- layout


def normalise_prefix(prefix: str | None) -> str:
    return (prefix or "").strip("/")


def backup_folder(prefix: str, kind: str, backup_id: str) -> str:
    parts = [p for p in (normalise_prefix(prefix), kind, backup_id) if p]
    return "/".join(parts) + "/"


def manifest_key(prefix: str, kind: str, backup_id: str) -> str:
    return backup_folder(prefix, kind, backup_id) + MANIFEST_NAME


@dataclass
class BackupRef:
    """One backup folder in the bucket, as listed (manifest not read)."""

    kind: str
    backup_id: str
    folder: str
    keys: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return any(k.endswith("/" + MANIFEST_NAME) for k in self.keys)

    @property
    def timestamp(self) -> dt.datetime | None:
        return backup_id_time(self.backup_id)

    @property
    def manifest_key(self) -> str:
        return self.folder + MANIFEST_NAME


def group_backups(keys: Iterable[str], prefix: str) -> list[BackupRef]:
    """Group object keys under ``prefix`` into backup folders; keys outside the layout are ignored."""
    base = normalise_prefix(prefix)
    start = base + "/" if base else ""
    found: dict[tuple[str, str], BackupRef] = {}
    for key in keys:
        if not key.startswith(start):
            continue
        rest = key[len(start) :].split("/")
        if len(rest) < 3 or rest[0] not in KINDS or backup_id_time(rest[1]) is None:
            continue
        kind, backup_id = rest[0], rest[1]
        ref = found.setdefault((kind, backup_id), BackupRef(kind, backup_id, backup_folder(prefix, kind, backup_id)))
        ref.keys.append(key)
    return sorted(found.values(), key=lambda r: (r.kind, r.backup_id))


def latest_complete(backups: Iterable[BackupRef], kind: str) -> BackupRef | None:
    complete = [b for b in backups if b.kind == kind and b.complete]
    return max(complete, key=lambda b: b.backup_id) if complete else None


# --------------------------------------------------------------------------- retention


@dataclass
class RetentionPlan:
    keep: list[BackupRef]
    delete: list[BackupRef]
    reasons: dict[str, str]  # folder -> why it is deleted or kept against the age rule


def plan_retention(
    backups: Sequence[BackupRef],
    retention_days: Mapping[str, float],
    now: dt.datetime,
    incomplete_grace_hours: float,
) -> RetentionPlan:
    """Which backups to delete.

    A complete backup older than its kind's retention is deleted, except the newest complete
    backup of each kind, which is always kept however old it is. Kinds without a retention
    are left alone. An incomplete backup (no manifest) older than the grace period is a
    failed or abandoned upload and is deleted; a younger one may still be in progress.
    """
    keep: list[BackupRef] = []
    delete: list[BackupRef] = []
    reasons: dict[str, str] = {}
    newest = {kind: latest_complete(backups, kind) for kind in KINDS}
    for ref in backups:
        moment = ref.timestamp
        if ref.kind not in retention_days or moment is None:
            keep.append(ref)
            continue
        age = now - moment
        if not ref.complete:
            if age > dt.timedelta(hours=incomplete_grace_hours):
                delete.append(ref)
                reasons[ref.folder] = f"incomplete (no manifest) and older than {incomplete_grace_hours:g}h"
            else:
                keep.append(ref)
            continue
        if age > dt.timedelta(days=retention_days[ref.kind]):
            if newest.get(ref.kind) is ref:
                keep.append(ref)
                reasons[ref.folder] = "older than retention but the newest good backup of its kind"
            else:
                delete.append(ref)
                reasons[ref.folder] = f"older than {retention_days[ref.kind]:g} days"
        else:
            keep.append(ref)
    return RetentionPlan(keep=keep, delete=delete, reasons=reasons)


# --------------------------------------------------------------------------- manifests


def build_manifest(
    *,
    backup_id: str,
    kind: str,
    source: Mapping[str, Any],
    started_at: dt.datetime,
    finished_at: dt.datetime,
    tools: Mapping[str, str],
    objects: Sequence[Mapping[str, Any]],
    fingerprint: Mapping[str, Any],
    encryption: Mapping[str, Any] | None,
    dump: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "id": backup_id,
        "kind": kind,
        "engine": ENGINE_OF_KIND[kind],
        "source": dict(source),
        "started_at": iso(started_at),
        "finished_at": iso(finished_at),
        "duration_seconds": round((finished_at - started_at).total_seconds(), 3),
        "tools": dict(tools),
        "objects": [dict(o) for o in objects],
        "size": sum(int(o["size"]) for o in objects),
        "encryption": dict(encryption) if encryption else None,
        "dump": dict(dump or {}),
        "fingerprint": dict(fingerprint),
    }


def validate_manifest(manifest: Any, where: str) -> dict[str, Any]:
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise BackupError(f"{where} is not a {MANIFEST_FORMAT} manifest")
    for name in ("id", "kind", "finished_at", "objects", "fingerprint"):
        if name not in manifest:
            raise BackupError(f"{where} has no {name!r}")
    if manifest["kind"] not in KINDS:
        raise BackupError(f"{where}: unknown kind {manifest['kind']!r}")
    return manifest


def manifest_json(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


# --------------------------------------------------------------------------- checks


@dataclass
class Check:
    name: str
    expected: Any
    actual: Any
    ok: bool | None  # None: not run (check mode)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "expected": self.expected, "actual": self.actual, "ok": self.ok}


def compare_postgres(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[Check]:
    """Checks of a restored PostgreSQL database against a fingerprint (manifest or live)."""
    checks = [Check("schema_hash", expected.get("schema_hash"), actual.get("schema_hash"), False)]
    checks[0].ok = checks[0].expected == checks[0].actual
    exp_tables: Mapping[str, int] = expected.get("tables", {})
    act_tables: Mapping[str, int] = actual.get("tables", {})
    checks.append(Check("tables", sorted(exp_tables), sorted(act_tables), set(exp_tables) == set(act_tables)))
    for table in sorted(set(exp_tables) | set(act_tables)):
        exp, act = exp_tables.get(table), act_tables.get(table)
        checks.append(Check(f"row_count:{table}", exp, act, exp == act))
    return checks


def compare_redis(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[Check]:
    """Checks of a restored Redis snapshot against a fingerprint.

    Keys without a TTL must all be there; keys with a TTL may have expired since the snapshot
    was taken, so there may be fewer of them, never more.
    """
    checks: list[Check] = []
    exp_dbs: Mapping[str, Mapping[str, int]] = expected.get("databases", {})
    act_dbs: Mapping[str, Mapping[str, int]] = actual.get("databases", {})
    for db in sorted(set(exp_dbs) | set(act_dbs), key=int):
        exp = exp_dbs.get(db, {})
        act = act_dbs.get(db, {})
        checks.append(Check(f"key_count:db{db}", exp.get("persistent", 0), act.get("persistent", 0), False))
        checks[-1].ok = checks[-1].expected == checks[-1].actual
        exp_vol, act_vol = exp.get("volatile", 0), act.get("volatile", 0)
        checks.append(Check(f"volatile_keys:db{db}", f"<= {exp_vol}", act_vol, act_vol <= exp_vol))
    exp_sample = expected.get("sample", {})
    act_sample = actual.get("sample", {})
    checks.append(
        Check(
            "sample_digest",
            exp_sample.get("digest"),
            act_sample.get("digest"),
            exp_sample.get("digest") == act_sample.get("digest"),
        )
    )
    return checks


def failed_names(checks: Iterable[Check]) -> list[str]:
    return [c.name for c in checks if not c.ok]


# --------------------------------------------------------------------------- files and processes


def sha256_file(path: str, chunk: int = 4 * 1024 * 1024) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def list_files(root: str) -> list[str]:
    """Files under ``root`` as sorted relative paths (a directory-format dump)."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def assert_no_secret(argv: Sequence[str], secrets_: Iterable[str | None]) -> None:
    """Refuse to start a process whose command line would show a secret in ``ps``."""
    joined = "\0".join(argv)
    for secret in secrets_:
        if secret and secret in joined:
            raise BackupError(f"refusing to run {argv[0]}: a secret would be visible on its command line")


def run_tool(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    secrets_: Iterable[str | None] = (),
    timeout: float | None = None,
    input_: bytes | None = None,
) -> subprocess.CompletedProcess:
    """Run a client tool with secrets in its environment only; raise BackupError on failure."""
    assert_no_secret(argv, secrets_)
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        proc = subprocess.run(list(argv), env=full_env, input=input_, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise BackupError(f"{argv[0]} not found: install it on the host that runs the backup") from exc
    except subprocess.TimeoutExpired as exc:
        raise BackupError(f"{argv[0]} did not finish within {timeout:g}s") from exc
    if proc.returncode != 0:
        name = os.path.basename(argv[0])
        raise BackupError(f"{name} failed (exit {proc.returncode}): {scrub(proc.stderr, secrets_)}")
    return proc


def scrub(output: bytes | str, secrets_: Iterable[str | None]) -> str:
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    for secret in secrets_:
        if secret:
            text = text.replace(secret, "********")
    return text.strip()[-2000:]


def tool_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False, timeout=30
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return "unavailable"
    return out.stdout.decode(errors="replace").strip().splitlines()[0] if out.stdout else "unknown"


# --------------------------------------------------------------------------- legacy encryption

# Backups made before authenticated encryption (see _backup_crypto) were encrypted with
# ``openssl enc`` AES-256-CBC; their manifests say so and they still restore through openssl.
CIPHER = "aes-256-cbc"
KDF_ITERATIONS = 200000
_KEY_ENV = "THINKUS_BACKUP_ENCRYPTION_KEY"


def encryption_info() -> dict[str, Any]:
    """The manifest's ``encryption`` of a legacy (openssl AES-256-CBC) backup."""
    return {"tool": "openssl enc", "cipher": CIPHER, "kdf": "pbkdf2-sha256", "iterations": KDF_ITERATIONS}


def openssl_crypt(src: str, dst: str, key: str, decrypt: bool) -> None:
    """Encrypt or decrypt a legacy object with openssl; the key reaches openssl through its environment.

    Only decryption is used by the modules (old backups); encryption is kept for the tests
    that prove old backups still restore."""
    argv = [
        "openssl",
        "enc",
        "-" + CIPHER,
        "-pbkdf2",
        "-iter",
        str(KDF_ITERATIONS),
        "-md",
        "sha256",
        "-in",
        src,
        "-out",
        dst,
        "-pass",
        "env:" + _KEY_ENV,
    ]
    if decrypt:
        argv.insert(2, "-d")
    else:
        argv.insert(2, "-salt")
    run_tool(argv, env={_KEY_ENV: key}, secrets_=[key])
