"""Alert delay of the monitoring role's configuration, side by side with a plain one.

One metrics exporter serves 6 % errors. Two throwaway Prometheus + Alertmanager pairs
scrape it with the same short intervals:

* ``role``:  the configuration playbooks/monitoring.yml renders (recording rules, then
  ThinkusHighErrorRate on the recorded ratio, severity routes, inhibition);
* ``plain``: a hand-written single alert on ``rate(errors) / rate(total) > 0.05`` and a
  single-route Alertmanager, the least a Prometheus user would write.

For each: the time from the error ratio crossing 5 % (as Prometheus computed it) to the
webhook receiving the critical alert. The ratio shows the cost of the role's recording-rule
indirection. Then the delay with the role's DEFAULT intervals, computed.

    .venv/bin/python tools/bench_monitoring.py [--for 3s] [--interval 1s] [--group-wait 1s]
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.alert_receiver import AlertReceiver  # noqa: E402
from tests.support.ansible import run_playbook  # noqa: E402
from tools import benchlib  # noqa: E402

ROLE_RATIO = 'service:http_requests_error_ratio:rate5m{service="bench"}'
PLAIN_RATIO = 'sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} not ready")


def _pair(base: Path, prom_cfg: dict, am_cfg: dict) -> tuple[str, str, list[subprocess.Popen[bytes]]]:
    base.mkdir(parents=True)
    pp, ap = _free_port(), _free_port()
    prom_cfg.setdefault("alerting", {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ap}"]}]}]})
    (base / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg))
    (base / "alertmanager.yml").write_text(yaml.safe_dump(am_cfg))
    log = (base / "log").open("wb")
    procs = [
        subprocess.Popen(
            ["prometheus", f"--config.file={base / 'prometheus.yml'}", f"--storage.tsdb.path={base / 'data'}",
             f"--web.listen-address=127.0.0.1:{pp}", "--web.enable-lifecycle"],
            stdout=log, stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            ["prometheus-alertmanager", f"--config.file={base / 'alertmanager.yml'}",
             f"--storage.path={base / 'am-data'}", f"--web.listen-address=127.0.0.1:{ap}", "--cluster.listen-address="],
            stdout=log, stderr=subprocess.STDOUT,
        ),
    ]  # fmt: skip
    _ready(f"http://127.0.0.1:{pp}")
    _ready(f"http://127.0.0.1:{ap}")
    return f"http://127.0.0.1:{pp}", f"http://127.0.0.1:{ap}", procs


def _first_crossing(prom: str, expr: str, since: float) -> float:
    query = f"({expr})[15m:1s]" if "sum(" in expr else f"{expr}[15m]"
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as resp:
        result = json.load(resp)["data"]["result"]
    return next(float(ts) for ts, value in result[0]["values"] if float(ts) >= since and float(value) > 0.05)


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if duration.endswith(suffix):
            return float(duration[: -len(suffix)]) * units[suffix]
    raise ValueError(duration)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--for", dest="for_", default="3s")
    parser.add_argument("--interval", default="1s", help="scrape and evaluation interval")
    parser.add_argument("--group-wait", default="1s")
    parser.add_argument("--timeout", type=float, default=120)
    benchlib.add_json_argument(parser)
    args = parser.parse_args()

    procs: list[subprocess.Popen[bytes]] = []
    receiver = AlertReceiver().start()
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            exporter = subprocess.Popen(
                [sys.executable, "-m", "tests.support.metrics_exporter", "--error-ratio", "0.06"],
                cwd=ROOT, stdout=subprocess.PIPE,
            )  # fmt: skip
            procs.append(exporter)
            assert exporter.stdout is not None
            target = exporter.stdout.readline().decode().split()[-1]
            glob = {"scrape_interval": args.interval, "evaluation_interval": args.interval}
            route = {"group_by": ["alertname"], "group_wait": args.group_wait, "group_interval": "1s"}

            plain_rules = tmp / "plain-rules.yml"
            plain_rules.write_text(yaml.safe_dump({"groups": [{"name": "plain", "rules": [
                {"alert": "PlainHighErrorRate", "expr": f"{PLAIN_RATIO} > 0.05", "for": args.for_,
                 "labels": {"severity": "critical"}}]}]}))  # fmt: skip
            plain_prom, _plain_am, pair = _pair(
                tmp / "plain",
                {"global": glob, "rule_files": [str(plain_rules)],
                 "scrape_configs": [{"job_name": "bench", "static_configs": [{"targets": [target]}]}]},
                {"route": {**route, "receiver": "hook"},
                 "receivers": [{"name": "hook", "webhook_configs": [{"url": receiver.url("/plain")}]}]},
            )  # fmt: skip
            procs += pair

            role_prom, role_am, pair = _pair(
                tmp / "role", {"scrape_configs": []}, {"route": {"receiver": "x"}, "receivers": [{"name": "x"}]}
            )
            procs += pair
            extra_vars = {
                "monitoring_mode": "host",
                "monitoring_services": [{"name": "bench", "targets": [target]}],
                "monitoring_scrape_interval": args.interval,
                "monitoring_scrape_timeout": args.interval,
                "monitoring_evaluation_interval": args.interval,
                "monitoring_alert_error_critical_for": args.for_,
                "monitoring_alert_error_warning_for": args.for_,
                "monitoring_alertmanager_group_wait": args.group_wait,
                "monitoring_alertmanager_group_interval": "1s",
                "monitoring_alertmanager_receivers": [
                    {"name": "hook", "type": "webhook", "url": receiver.url("/role")}
                ],
                "monitoring_alertmanager_default_receiver": "hook",
                "monitoring_alertmanager_critical_receiver": "hook",
                "monitoring_alertmanager_warning_receiver": "hook",
                "monitoring_prometheus_url": role_prom,
                "monitoring_prometheus_config_file": str(tmp / "role" / "prometheus.yml"),
                "monitoring_prometheus_rules_dir": str(tmp / "role" / "rules"),
                "monitoring_alertmanager_url": role_am,
                "monitoring_alertmanager_config_file": str(tmp / "role" / "alertmanager.yml"),
                "monitoring_alertmanager_secrets_dir": str(tmp / "role" / "secrets"),
                "monitoring_host_group": grp.getgrgid(os.getgid()).gr_name,
                "monitoring_grafana_enabled": False,
                "monitoring_logs_enabled": False,
            }
            run = run_playbook(
                "playbooks/monitoring.yml", extra_vars=extra_vars, inventory=str(ROOT / "inventories" / "local")
            )
            if run.rc != 0:
                print(run.output[-4000:])
                return 1
            role_loaded = time.time()

            results = {}
            for name, prom, path, expr, since in (
                ("role", role_prom, "/role", ROLE_RATIO, role_loaded),
                ("plain", plain_prom, "/plain", PLAIN_RATIO, 0.0),
            ):
                note = receiver.wait_for(lambda n, p=path: n.path == p and n.alerts(), args.timeout)
                if note is None:
                    print(f"{name}: no alert within {args.timeout}s")
                    return 1
                results[name] = note.received_at - _first_crossing(prom, expr, since)
        finally:
            receiver.stop()
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(timeout=10)

    expected = _seconds(args.for_) + _seconds(args.group_wait)
    print(f"intervals: scrape/eval {args.interval}, for {args.for_}, group_wait {args.group_wait}")
    print(f"role : ratio crossed 5 % -> webhook {results['role']:6.2f}s")
    print(f"plain: ratio crossed 5 % -> webhook {results['plain']:6.2f}s")
    print(f"ratio role/plain: {results['role'] / results['plain']:.2f}  (for + group_wait = {expected:.1f}s)")
    benchlib.write(
        args.json,
        [
            benchlib.row(
                f"6 % errors -> critical alert at the webhook (scrape/eval {args.interval}, for {args.for_})",
                [results["role"]],
                "one hand-written alert rule and a single-route Alertmanager",
                [results["plain"]],
            )
        ],
    )
    # the role's defaults: scrape 15s, evaluation 15s, for 2m (critical), group_wait 30s
    lo, hi = 120 + 30, 120 + 30 + 15
    print(
        f"role defaults (computed): {lo}-{hi}s from the recorded ratio crossing 5 % "
        f"(for 2m + group_wait 30s + up to one 15s evaluation), plus up to 30s (scrape + recording "
        f"evaluation) from the raw counters; a step from 0 % to 6 % errors needs 250s of the 5m rate "
        f"window before the ratio crosses 5 %"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
