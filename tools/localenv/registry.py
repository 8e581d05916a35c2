"""Container registry: Debian's docker-registry (distribution) with htpasswd auth."""

from __future__ import annotations

import yaml

from . import _secrets, images
from ._proc import Context, http_status, require_binary, run, say, spawn, stop, tracked_pid, wait_for

NAME = "registry"
HOST = "127.0.0.1"
PORT = 5000
USER = "thinkus"


def _url() -> str:
    return f"http://{HOST}:{PORT}"


def up(ctx: Context) -> dict[str, str]:
    binary = require_binary(NAME, "docker-registry", "docker-registry")
    base = ctx.state_dir / "registry"
    (base / "data").mkdir(parents=True, exist_ok=True)
    password = _secrets.get(ctx, "registry_password")
    htpasswd = base / "htpasswd"
    if not htpasswd.exists():
        # bcrypt entry; the password goes through stdin, never the command line
        res = run(["htpasswd", "-niB", USER], input_=password.encode(), quiet=True)
        _secrets.write_private(htpasswd, res.stdout.decode().strip() + "\n")
    _secrets.put(ctx, "registry_username", USER)
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(base / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"{HOST}:{PORT}", "secret": _secrets.get(ctx, "registry_http_secret")},
        "auth": {"htpasswd": {"realm": "thinkus-local", "path": str(htpasswd)}},
    }
    cfg = base / "config.yml"
    changed = _secrets.write_private(cfg, yaml.safe_dump(config, sort_keys=True))
    if changed and tracked_pid(ctx, NAME):
        stop(ctx, NAME)
    spawn(ctx, NAME, [binary, "serve", str(cfg)], ports=[PORT])
    wait_for(ctx, NAME, lambda: http_status(f"{_url()}/v2/") == 401, timeout=30)
    # the base images, so that builds take them by registry digest (docker_build_base_images)
    for ref in images.publish(f"{HOST}:{PORT}", USER, password):
        say(f"{NAME}: pushed {ref}")
    return {"registry": f"{HOST}:{PORT}", "registry_url": _url()}


def publish(ctx: Context, refs: list[str]) -> list[str]:
    """Push these local images to the registry (idempotent), as its user."""
    return images.publish(f"{HOST}:{PORT}", USER, _secrets.get(ctx, "registry_password"), refs)


def status(ctx: Context) -> tuple[bool, str]:
    return http_status(f"{_url()}/v2/") == 401, f"{HOST}:{PORT}"


def down(ctx: Context) -> None:
    stop(ctx, NAME)
