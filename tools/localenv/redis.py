"""Redis 7 (Debian's redis-server) with a generated password."""

from __future__ import annotations

import shutil

import redis as redis_client

from . import _secrets
from ._proc import Context, LocalEnvError, spawn, stop, tracked_pid, wait_for

NAME = "redis"
HOST = "127.0.0.1"
PORT = 16379


def _client(ctx: Context) -> redis_client.Redis:
    return redis_client.Redis(host=HOST, port=PORT, password=_secrets.load(ctx).get("redis_password"), socket_timeout=3)


def up(ctx: Context) -> dict[str, str]:
    binary = shutil.which("redis-server")
    if not binary:
        raise LocalEnvError("redis: redis-server not found; run `make setup`")
    base = ctx.state_dir / "redis"
    base.mkdir(parents=True, exist_ok=True)
    password = _secrets.get(ctx, "redis_password")
    conf = "\n".join(
        [
            f"bind {HOST}",
            f"port {PORT}",
            "protected-mode yes",
            "daemonize no",
            f"dir {base}",
            "dbfilename dump.rdb",
            "appendonly no",
            f"requirepass {password}",
            "",
        ]
    )
    cfg = base / "redis.conf"
    if _secrets.write_private(cfg, conf) and tracked_pid(ctx, NAME):
        stop(ctx, NAME)
    spawn(ctx, NAME, [binary, str(cfg)], ports=[PORT])
    wait_for(ctx, NAME, lambda: _client(ctx).ping(), timeout=30)
    return {"redis_host": HOST, "redis_port": str(PORT)}


def status(ctx: Context) -> tuple[bool, str]:
    try:
        ok = bool(_client(ctx).ping())
    except Exception:
        ok = False
    return ok, f"{HOST}:{PORT}"


def down(ctx: Context) -> None:
    stop(ctx, NAME)
