# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private Redis helpers of the thinkus.ops backup modules.

- A snapshot is DOWNLOADED with ``redis-cli --rdb`` (the password in ``REDISCLI_AUTH``).
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
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

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


def redis_argument_spec() -> dict[str, Any]:
    return dict(
        redis_host=dict(type="str", default="127.0.0.1"),
        redis_port=dict(type="int", default=6379),
        redis_username=dict(type="str"),
        redis_password=dict(type="str", no_log=True, fallback=(env_fallback, ["REDISCLI_AUTH"])),
    )


def params_from_module(params: Mapping[str, Any], prefix: str = "redis_") -> dict[str, Any]:
    """The connection as the helpers here take it: host, port, username, password."""
    return {name: params.get(prefix + name) for name in ("host", "port", "username", "password")}


def _require() -> None:
    if not HAS_REDIS:
        raise BackupError(f"the redis Python library is required: {REDIS_IMPORT_ERROR}")


def client(params: Mapping[str, Any], db: int = 0) -> Any:
    _require()
    return redis.Redis(
        host=params["host"],
        port=params["port"],
        username=params.get("username") or None,
        password=params.get("password") or None,
        db=db,
        socket_timeout=30,
        socket_connect_timeout=10,
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
    return {"host": params["host"], "port": params["port"], "username": params.get("username")}


# --------------------------------------------------------------------------- snapshot


def snapshot_argv(params: Mapping[str, Any], out: str) -> list[str]:
    argv = ["redis-cli", "-h", str(params["host"]), "-p", str(params["port"]), "--no-auth-warning"]
    if params.get("username"):
        argv += ["--user", params["username"]]
    return [*argv, "--rdb", out]


def snapshot(params: Mapping[str, Any], out: str) -> None:
    """Download an RDB snapshot with redis-cli --rdb; check its exit status and the file."""
    env = {"REDISCLI_AUTH": params["password"]} if params.get("password") else {}
    run_tool(snapshot_argv(params, out), env=env, secrets_=[params.get("password")], timeout=3600)
    check_rdb_file(out)


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
    """A throwaway redis-server that loads one RDB file; removed with its files on exit."""

    def __init__(self, rdb_path: str, databases: int = 16, binary: str = "redis-server", timeout: float = 600) -> None:
        _require()
        self.rdb_path = rdb_path
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
            shutil.copyfile(self.rdb_path, os.path.join(self.dir, "dump.rdb"))
            start = time.monotonic()
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
