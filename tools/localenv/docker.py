"""Docker engine: Debian's docker.io, reused when one already answers, else started here."""

from __future__ import annotations

import os
import shutil
import subprocess

from ._proc import Context, LocalEnvError, say, spawn, stop, tracked_pid, wait_for

NAME = "docker"
SOCKET = "/var/run/docker.sock"


def _host() -> str:
    return os.environ.get("DOCKER_HOST") or f"unix://{SOCKET}"


def answers() -> bool:
    if not shutil.which("docker"):
        return False
    res = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=20,
    )
    return res.returncode == 0


def up(ctx: Context) -> dict[str, str]:
    if answers():
        return {"docker_host": _host(), "docker_owned": str(bool(tracked_pid(ctx, NAME)))}
    if os.environ.get("DOCKER_HOST"):
        raise LocalEnvError(f"docker: DOCKER_HOST={os.environ['DOCKER_HOST']} is set but no engine answers there")
    dockerd = shutil.which("dockerd")
    if not dockerd:
        raise LocalEnvError("docker: dockerd not found; run `make setup` (installs Debian's docker.io)")
    data_root = ctx.cache_dir / "docker"
    data_root.mkdir(parents=True, exist_ok=True)
    say(f"starting dockerd (data root {data_root})")
    spawn(
        ctx,
        NAME,
        [
            dockerd,
            "--host",
            f"unix://{SOCKET}",
            "--data-root",
            str(data_root),
            "--pidfile",
            str(ctx.run_dir / "dockerd.self.pid"),
        ],
    )
    wait_for(ctx, NAME, answers, timeout=60, interval=0.5)
    return {"docker_host": _host(), "docker_owned": "True"}


def status(ctx: Context) -> tuple[bool, str]:
    return answers(), _host()


def down(ctx: Context) -> None:
    stop(ctx, NAME, timeout=30)
