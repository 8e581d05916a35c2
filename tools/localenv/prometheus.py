"""Prometheus (Debian's binary, run by hand) with lifecycle reloads and a rules directory."""

from __future__ import annotations

import shutil

import yaml

from . import alertmanager
from ._proc import Context, http_status, require_binary, run, spawn, stop, tracked_pid, wait_for

NAME = "prometheus"
HOST = "127.0.0.1"
PORT = 19090


def url() -> str:
    return f"http://{HOST}:{PORT}"


def _ready() -> bool:
    return http_status(f"{url()}/-/ready") == 200


def up(ctx: Context) -> dict[str, str]:
    binary = require_binary(NAME, "prometheus", "prometheus")
    base = ctx.state_dir / "prometheus"
    rules = base / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    (base / "data").mkdir(exist_ok=True)
    config = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": [str(rules / "*.yml")],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"{alertmanager.HOST}:{alertmanager.PORT}"]}]}]
        },
        "scrape_configs": [{"job_name": "prometheus", "static_configs": [{"targets": [f"{HOST}:{PORT}"]}]}],
    }
    cfg = base / "prometheus.yml"
    if not cfg.exists():
        # the monitoring role owns this file afterwards; bring-up only seeds it
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    run([shutil.which("promtool") or "promtool", "check", "config", str(cfg)], quiet=True)
    if not tracked_pid(ctx, NAME):
        spawn(
            ctx,
            NAME,
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={base / 'data'}",
                f"--web.listen-address={HOST}:{PORT}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=2d",
            ],
            ports=[PORT],
        )
    wait_for(ctx, NAME, _ready, timeout=60)
    return {"prometheus_url": url(), "prometheus_config": str(cfg), "prometheus_rules_dir": str(rules)}


def status(ctx: Context) -> tuple[bool, str]:
    return _ready(), url()


def down(ctx: Context) -> None:
    stop(ctx, NAME)
