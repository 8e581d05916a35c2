"""Alertmanager (Debian's prometheus-alertmanager binary, run by hand)."""

from __future__ import annotations

import shutil

import yaml

from ._proc import Context, http_status, require_binary, run, spawn, stop, tracked_pid, wait_for

NAME = "alertmanager"
HOST = "127.0.0.1"
PORT = 19093


def url() -> str:
    return f"http://{HOST}:{PORT}"


def _ready() -> bool:
    return http_status(f"{url()}/-/ready") == 200


def up(ctx: Context) -> dict[str, str]:
    binary = require_binary(NAME, "prometheus-alertmanager", "prometheus-alertmanager")
    base = ctx.state_dir / "alertmanager"
    (base / "data").mkdir(parents=True, exist_ok=True)
    cfg = base / "alertmanager.yml"
    if not cfg.exists():
        # the monitoring role owns this file afterwards; bring-up only seeds it
        cfg.write_text(yaml.safe_dump({"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}))
    run([shutil.which("amtool") or "amtool", "check-config", str(cfg)], quiet=True)
    if not tracked_pid(ctx, NAME):
        spawn(
            ctx,
            NAME,
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.path={base / 'data'}",
                f"--web.listen-address={HOST}:{PORT}",
                "--cluster.listen-address=",
            ],
            ports=[PORT],
        )
    wait_for(ctx, NAME, _ready, timeout=60)
    return {"alertmanager_url": url(), "alertmanager_config": str(cfg)}


def status(ctx: Context) -> tuple[bool, str]:
    return _ready(), url()


def down(ctx: Context) -> None:
    stop(ctx, NAME)
