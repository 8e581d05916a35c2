# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private Redis helpers of the thinkus.ops backup modules.

- Two kinds of snapshot. ``rdb``: the server's own RDB file, DOWNLOADED with
  ``redis-cli --rdb`` (the replication command SYNC; the password in ``REDISCLI_AUTH``).
  ``logical``: for servers that refuse SYNC (managed Redis such as Upstash or Redis Cloud),
  every key is read with SCAN, DUMP and PTTL and written to a file of our own format
  (``LOGICAL_FORMAT`` below); it is restored with RESTORE ... ABSTTL, so keys keep their
  expiry time. A logical snapshot is consistent per key, not across keys (the keyspace
  may change while it is scanned), and its DUMP payloads load only into a Redis of the
  same or a newer version. Both work over TLS (``rediss://`` or ``redis_tls``).
- An RDB file is RESTORED the way Redis itself loads one: a ``redis-server`` started with
  the file in its ``dir`` (``ScratchRedis``: a throwaway server on a free loopback port, its
  password in a 0600 config file, never on a command line). From there keys are copied to
  a live target with DUMP/RESTORE, which also works for managed Redis where nobody can put
  a file in the server's directory.
- The fingerprint (keys per database, split into keys with and without a TTL, and a digest
  of a deterministic sample of keys and values) is always read from a server that loaded
  the RDB file, so it describes the snapshot itself.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from ansible.module_utils.basic import env_fallback

from ansible_collections.thinkus.ops.plugins.module_utils._backup_common import BackupError, run_tool, scrub

try:
    import redis

    HAS_REDIS = True
    REDIS_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module
    HAS_REDIS = False
    REDIS_IMPORT_ERROR = exc

RDB_MAGIC = b"REDIS"
SCAN_COUNT = 1000
SNAPSHOT_MODES = ("auto", "rdb", "logical")
# The logical snapshot file: a header, one record per key, and an end record holding the
# number of keys (a truncated file is refused):
#   header  "TKOPSRDL" | version (1) | snapshot time, unix ms (8)
#   record  db (2) | key length (4) | key | expires at, unix ms, -1 = never (8) | payload length (4) | DUMP payload
#   end     db 0xFFFF | key count (8)
LOGICAL_FORMAT = "thinkus.ops/redis-logical/v1"
LOGICAL_MAGIC = b"TKOPSRDL"
_LOGICAL_HEADER = struct.Struct(">8sBq")
_RECORD_DB = struct.Struct(">H")
_LEN = struct.Struct(">I")
_EXPIRY = struct.Struct(">q")
_COUNT = struct.Struct(">Q")
_END_DB = 0xFFFF
# What a server that refuses replication says (renamed/disabled SYNC, ACL, managed services).
_SYNC_REFUSED = ("unknown command", "noperm", "not allowed", "not supported", "unsupported", "disabled")


def redis_argument_spec() -> dict[str, Any]:
    return dict(
        redis_url=dict(type="str", no_log=True, fallback=(env_fallback, ["THINKUS_BACKUP_REDIS_URL"])),
        redis_host=dict(type="str", default="127.0.0.1"),
        redis_port=dict(type="int", default=6379),
        redis_username=dict(type="str"),
        redis_password=dict(type="str", no_log=True, fallback=(env_fallback, ["REDISCLI_AUTH"])),
        redis_tls=dict(type="bool", default=False),
        redis_tls_ca_file=dict(type="path"),
    )


def parse_url(url: str) -> dict[str, Any]:
    """``redis://`` or ``rediss://`` (TLS) ``[user[:password]@]host[:port]`` as connection parts."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise BackupError("redis_url must look like rediss://user:password@host:port (or redis:// without TLS)")
    try:
        port = parts.port
    except ValueError as exc:
        raise BackupError("redis_url has an invalid port") from exc
    return {
        "host": unquote(parts.hostname),
        "port": port,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "tls": parts.scheme == "rediss",
    }


def params_from_module(params: Mapping[str, Any], prefix: str = "redis_") -> dict[str, Any]:
    """The connection as the helpers here take it: host, port, username, password, tls, tls_ca_file.

    As for PostgreSQL, what ``redis_url`` gives wins and the other options fill in what it lacks.
    """
    explicit = {name: params.get(prefix + name) for name in ("host", "port", "username", "password")}
    explicit["tls"] = bool(params.get(prefix + "tls"))
    explicit["tls_ca_file"] = params.get(prefix + "tls_ca_file")
    url = params.get(prefix + "url")
    if not url:
        return explicit
    conn = parse_url(url)
    for name, value in explicit.items():
        if conn.get(name) in (None, "") and value not in (None, ""):
            conn[name] = value
    conn["tls"] = conn["tls"] or explicit["tls"]
    return conn


def _require() -> None:
    if not HAS_REDIS:
        raise BackupError(f"the redis Python library is required: {REDIS_IMPORT_ERROR}")


def client(params: Mapping[str, Any], db: int = 0) -> Any:
    _require()
    tls: dict[str, Any] = {}
    if params.get("tls"):
        # the server certificate and its name are always verified
        tls = {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": True}
        if params.get("tls_ca_file"):
            tls["ssl_ca_certs"] = params["tls_ca_file"]
    return redis.Redis(
        host=params["host"],
        port=params["port"],
        username=params.get("username") or None,
        password=params.get("password") or None,
        db=db,
        socket_timeout=30,
        socket_connect_timeout=10,
        **tls,
    )


def ping(params: Mapping[str, Any]) -> None:
    """Connect and authenticate, or raise BackupError saying what is wrong."""
    try:
        client(params).ping()
    except redis.exceptions.AuthenticationError as exc:
        raise BackupError(f"Redis at {params['host']}:{params['port']} refused the credentials: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise BackupError(f"cannot reach Redis at {params['host']}:{params['port']}: {exc}") from exc


def describe(params: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "host": params["host"],
        "port": params["port"],
        "username": params.get("username"),
        "tls": bool(params.get("tls")),
    }


# --------------------------------------------------------------------------- snapshot


class SyncRefused(BackupError):
    """The server refuses SYNC, so it cannot hand out an RDB file: take a logical snapshot."""


def snapshot_argv(params: Mapping[str, Any], out: str) -> list[str]:
    argv = ["redis-cli", "-h", str(params["host"]), "-p", str(params["port"]), "--no-auth-warning"]
    if params.get("username"):
        argv += ["--user", params["username"]]
    if params.get("tls"):
        argv += ["--tls", "--sni", str(params["host"])]
        if params.get("tls_ca_file"):
            argv += ["--cacert", params["tls_ca_file"]]
    return [*argv, "--rdb", out]


def snapshot(params: Mapping[str, Any], out: str) -> None:
    """Download an RDB snapshot with redis-cli --rdb; check its exit status and the file.

    Raises SyncRefused when the server refuses the replication command (managed Redis).
    """
    env = {"REDISCLI_AUTH": params["password"]} if params.get("password") else {}
    try:
        run_tool(snapshot_argv(params, out), env=env, secrets_=[params.get("password")], timeout=3600)
    except BackupError as exc:
        text = str(exc).lower()
        if "sync" in text and any(sign in text for sign in _SYNC_REFUSED):
            raise SyncRefused(f"the server refuses SYNC ({scrub(str(exc), [params.get('password')])[-300:]})") from exc
        raise
    check_rdb_file(out)


# --------------------------------------------------------------------------- logical snapshot


def _now_ms() -> int:
    return int(time.time() * 1000)


def logical_snapshot(params: Mapping[str, Any], out: str, databases: Sequence[int] | None = None) -> dict[str, Any]:
    """Write every key of ``databases`` (default: every database with keys) with SCAN, PTTL and DUMP.

    Keys that expire or disappear between SCAN and DUMP are skipped. Returns counts per database.
    """
    base = client(params)
    try:
        dbs = sorted(databases) if databases is not None else sorted(_keyspace(base)) or [0]
    except redis.exceptions.ResponseError:  # INFO keyspace not allowed: managed Redis has db 0
        dbs = [0]
    except redis.exceptions.RedisError as exc:
        raise BackupError(f"cannot read the keyspace of Redis at {params['host']}:{params['port']}: {exc}") from exc
    counts: dict[str, int] = {}
    total = 0
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(_LOGICAL_HEADER.pack(LOGICAL_MAGIC, 1, _now_ms()))
        for db in dbs:
            conn = client(params, db)
            written = 0
            try:
                for keys in iter_keys(conn):
                    pipe = conn.pipeline(transaction=False)
                    for key in keys:
                        pipe.pttl(key)
                        pipe.dump(key)
                    results = pipe.execute()
                    now = _now_ms()
                    for i, key in enumerate(keys):
                        ttl, payload = results[2 * i], results[2 * i + 1]
                        if payload is None or ttl == -2:
                            continue  # expired or deleted meanwhile
                        expires = -1 if ttl < 0 else now + int(ttl)
                        fh.write(_RECORD_DB.pack(db) + _LEN.pack(len(key)) + key)
                        fh.write(_EXPIRY.pack(expires) + _LEN.pack(len(payload)) + payload)
                        written += 1
            except redis.exceptions.RedisError as exc:
                raise BackupError(
                    f"logical snapshot of db {db} failed: {scrub(str(exc), [params.get('password')])}"
                ) from exc
            if written:
                counts[str(db)] = written
            total += written
        fh.write(_RECORD_DB.pack(_END_DB) + _COUNT.pack(total))
    return {"databases": counts, "keys": total}


def _read_exact(fh: Any, size: int, path: str) -> bytes:
    data = fh.read(size)
    if len(data) != size:
        raise BackupError(f"{os.path.basename(path)} is truncated: not a complete logical Redis snapshot")
    return data


def iter_logical(path: str) -> Iterator[tuple[int, bytes, int, bytes]]:
    """(db, key, expires at unix ms or -1, DUMP payload) of every record; checks header and end record."""
    with open(path, "rb") as fh:
        magic, version, _taken = _LOGICAL_HEADER.unpack(_read_exact(fh, _LOGICAL_HEADER.size, path))
        if magic != LOGICAL_MAGIC or version != 1:
            raise BackupError(f"{os.path.basename(path)} is not a {LOGICAL_FORMAT} file")
        seen = 0
        while True:
            (db,) = _RECORD_DB.unpack(_read_exact(fh, _RECORD_DB.size, path))
            if db == _END_DB:
                (count,) = _COUNT.unpack(_read_exact(fh, _COUNT.size, path))
                if count != seen or fh.read(1):
                    raise BackupError(f"{os.path.basename(path)} is damaged: {seen} records, end record says {count}")
                return
            (klen,) = _LEN.unpack(_read_exact(fh, _LEN.size, path))
            key = _read_exact(fh, klen, path)
            (expires,) = _EXPIRY.unpack(_read_exact(fh, _EXPIRY.size, path))
            (plen,) = _LEN.unpack(_read_exact(fh, _LEN.size, path))
            yield db, key, expires, _read_exact(fh, plen, path)
            seen += 1


def logical_databases(path: str) -> int:
    """The highest database number in a logical snapshot (0 when empty)."""
    return max((db for db, _k, _e, _p in iter_logical(path)), default=0)


def load_logical(path: str, target: Mapping[str, Any], batch: int = 500) -> dict[int, int]:
    """RESTORE every record (ABSTTL keeps the expiry time; keys already expired are skipped)."""
    loaded: dict[int, int] = {}
    pipes: dict[int, Any] = {}
    pending = 0

    def flush() -> None:
        for pipe in pipes.values():
            try:
                pipe.execute()
            except redis.exceptions.ResponseError as exc:
                raise BackupError(f"RESTORE of the logical snapshot failed: {exc}") from exc
        pipes.clear()

    for db, key, expires, payload in iter_logical(path):
        if expires != -1 and expires <= _now_ms():
            continue
        if db not in pipes:
            pipes[db] = client(target, db).pipeline(transaction=False)
        pipes[db].restore(key, 0 if expires == -1 else expires, payload, replace=True, absttl=expires != -1)
        loaded[db] = loaded.get(db, 0) + 1
        pending += 1
        if pending >= batch:
            flush()
            pending = 0
    flush()
    return loaded


def check_rdb_file(path: str) -> None:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError as exc:
        raise BackupError(f"redis-cli --rdb left no snapshot file: {exc}") from exc
    if size < 18 or not head.startswith(RDB_MAGIC) or not head[5:9].isdigit():
        raise BackupError(f"{os.path.basename(path)} is not an RDB file ({size} bytes, starts with {head[:9]!r})")


# --------------------------------------------------------------------------- throwaway server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ScratchRedis:
    """A throwaway redis-server that loads one snapshot (an RDB file, or a logical snapshot
    restored into it key by key); removed with its files on exit."""

    def __init__(
        self,
        rdb_path: str,
        databases: int = 16,
        binary: str = "redis-server",
        timeout: float = 600,
        fmt: str = "rdb",
    ) -> None:
        _require()
        self.rdb_path = rdb_path
        self.fmt = fmt
        self.databases = max(16, databases)
        self.binary = binary
        self.timeout = timeout
        self.password = secrets.token_urlsafe(24)
        self.port = 0
        self.dir = ""
        self.proc: subprocess.Popen | None = None
        self.load_seconds = 0.0

    @property
    def params(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "password": self.password}

    def __enter__(self) -> ScratchRedis:
        self.dir = tempfile.mkdtemp(prefix="thinkus-redis-restore-")
        try:
            start = time.monotonic()
            if self.fmt == "logical":
                self._start()
                load_logical(self.rdb_path, self.params)
            else:
                shutil.copyfile(self.rdb_path, os.path.join(self.dir, "dump.rdb"))
                self._start()
            self.load_seconds = time.monotonic() - start
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self, attempts: int = 3) -> None:
        for _attempt in range(attempts):
            self.port = free_port()
            conf = os.path.join(self.dir, "redis.conf")
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(
                    "\n".join(
                        [
                            "bind 127.0.0.1",
                            f"port {self.port}",
                            "protected-mode yes",
                            "daemonize no",
                            f'dir "{self.dir}"',
                            "dbfilename dump.rdb",
                            'save ""',
                            "appendonly no",
                            f"databases {self.databases}",
                            f'logfile "{os.path.join(self.dir, "redis.log")}"',
                            f"requirepass {self.password}",
                            "",
                        ]
                    )
                )
            try:
                self.proc = subprocess.Popen([self.binary, conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except FileNotFoundError as exc:
                raise BackupError(f"{self.binary} not found: it is needed to load an RDB file") from exc
            if self._wait_ready():
                return
            self._stop()
        raise BackupError(f"redis-server could not load the snapshot: {self._log_tail()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.timeout
        conn = client(self.params)
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                if int(conn.info("persistence").get("loading", 1)) == 0:
                    return True
            except redis.exceptions.BusyLoadingError:
                pass
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                pass
            time.sleep(0.05)
        return False

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.dir, "redis.log"), encoding="utf-8", errors="replace") as fh:
                lines = [ln for ln in fh.read().splitlines() if ln.strip()]
            return " | ".join(lines[-4:])
        except OSError:
            return "no log"

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __exit__(self, *_exc: Any) -> None:
        self._stop()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- fingerprint


def canonical_value(conn: Any, key: bytes, kind: str) -> Any:
    """The value of ``key`` in a form that does not depend on the server's internal encoding."""
    if kind == "string":
        return conn.get(key)
    if kind == "hash":
        return sorted(conn.hgetall(key).items())
    if kind == "list":
        return conn.lrange(key, 0, -1)
    if kind == "set":
        return sorted(conn.smembers(key))
    if kind == "zset":
        return conn.zrange(key, 0, -1, withscores=True)
    if kind == "stream":
        return conn.xrange(key)
    return conn.dump(key)


def _keyspace(conn: Any) -> dict[int, dict[str, int]]:
    info = conn.info("keyspace")
    return {int(name[2:]): value for name, value in info.items() if name.startswith("db")}


def iter_keys(conn: Any, pattern: str | None = None) -> Iterator[list[bytes]]:
    cursor = 0
    while True:
        cursor, keys = conn.scan(cursor=cursor, match=pattern, count=SCAN_COUNT)
        if keys:
            yield keys
        if int(cursor) == 0:
            return


def fingerprint(params: Mapping[str, Any], sample_size: int = 100) -> dict[str, Any]:
    """Keys per database (with/without TTL) and a digest of a deterministic sample of persistent keys.

    The sample is the ``sample_size`` persistent keys with the smallest SHA-256 of
    ``<db>:<key>``: the same keys are chosen from any server holding the same data.
    """
    base = client(params)
    databases: dict[str, dict[str, int]] = {}
    heap: list[tuple[bytes, int, bytes]] = []  # the sample so far, digests inverted: heap[0] is the largest
    for db in sorted(_keyspace(base)):
        conn = client(params, db)
        persistent = volatile = 0
        for keys in iter_keys(conn):
            pipe = conn.pipeline(transaction=False)
            for key in keys:
                pipe.pttl(key)
            for key, ttl in zip(keys, pipe.execute(), strict=True):
                if ttl == -1:
                    persistent += 1
                    digest = hashlib.sha256(f"{db}:".encode() + key).digest()
                    entry = (bytes(255 - b for b in digest), db, key)  # invert so heap[0] is the largest digest
                    if sample_size <= 0:
                        continue
                    if len(heap) < sample_size:
                        heapq.heappush(heap, entry)
                    elif entry > heap[0]:
                        heapq.heapreplace(heap, entry)
                elif ttl >= 0:
                    volatile += 1
        if persistent or volatile:
            databases[str(db)] = {"keys": persistent + volatile, "persistent": persistent, "volatile": volatile}
    sample = sorted((db, key) for _inv, db, key in heap)
    digest = hashlib.sha256()
    for db, key in sample:
        conn = client(params, db)
        kind = conn.type(key).decode()
        digest.update(repr((db, key, kind, canonical_value(conn, key, kind))).encode())
    return {"databases": databases, "sample": {"size": len(sample), "digest": digest.hexdigest()}}


def highest_db(params: Mapping[str, Any]) -> int:
    spaces = _keyspace(client(params))
    return max(spaces) if spaces else 0


# --------------------------------------------------------------------------- copy into a live server


def count_keys(params: Mapping[str, Any], databases: Sequence[int], pattern: str) -> dict[int, int]:
    counts = {}
    for db in databases:
        conn = client(params, db)
        counts[db] = sum(len(keys) for keys in iter_keys(conn, pattern))
    return counts


def copy_keys(
    source: Mapping[str, Any], target: Mapping[str, Any], databases: Sequence[int], pattern: str, replace: bool
) -> dict[int, int]:
    """Copy keys (with their TTLs) with DUMP/RESTORE; with ``replace`` the target's matching keys are deleted first."""
    copied: dict[int, int] = {}
    for db in databases:
        src, dst = client(source, db), client(target, db)
        if replace:
            for keys in iter_keys(dst, pattern):
                dst.delete(*keys)
        total = 0
        for keys in iter_keys(src, pattern):
            pipe = src.pipeline(transaction=False)
            for key in keys:
                pipe.pttl(key)
                pipe.dump(key)
            results = pipe.execute()
            out = dst.pipeline(transaction=False)
            for i, key in enumerate(keys):
                ttl, payload = results[2 * i], results[2 * i + 1]
                if payload is None or ttl == -2:
                    continue  # expired meanwhile
                out.restore(key, max(int(ttl), 0), payload, replace=replace)
                total += 1
            try:
                out.execute()
            except redis.exceptions.ResponseError as exc:
                raise BackupError(
                    f"restoring keys into db {db} failed: {scrub(str(exc), [target.get('password')])}"
                ) from exc
        copied[db] = total
    return copied
