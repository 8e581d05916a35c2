# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""End to end: the monitoring role's configuration turns errors into delivered alerts.

A throwaway Prometheus and Alertmanager (Debian's binaries, free loopback ports, state in
a temp dir) are started with a minimal configuration; then playbooks/monitoring.yml (host
mode) installs the role's rules and configuration into that temp dir and reloads them.
Three metrics exporters play the services:

* ``e2e-critical`` serves 6 % errors  -> ThinkusHighErrorRate critical reaches the pager
  webhook; its warning twin is inhibited (never delivered, suppressed in Alertmanager);
* ``e2e-warning`` serves 1.2 % errors -> the warning reaches the chat webhook;
* ``e2e-quiet`` serves 0.5 % errors   -> nothing is delivered.

The shared Prometheus of the local environment is not touched: other tests use it. The
intervals are shortened through the role's variables (1 s scrape and evaluation, 3 s
``for:``, 1 s group_wait); the thresholds are the role's defaults (1 % and 5 %).
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.alert_receiver import AlertReceiver, iter_alerts, pager_and_chat_vars
from tests.support.ansible import REPO_ROOT, PlaybookResult, run_playbook

pytestmark = [pytest.mark.localenv, pytest.mark.slow]

PLAYBOOK = "playbooks/monitoring.yml"
INVENTORY = str(REPO_ROOT / "inventories" / "local")
ALERT = "ThinkusHighErrorRate"
FOR = "3s"
DELIVERY_TIMEOUT = 60  # generous bound; the measured delay is printed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{url} exited early:\n{log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready after {timeout}s:\n{log.read_text()[-2000:]}")


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in {url}/metrics")


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    answer = _get_json(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Stack:
    tmp: Path
    prom_url: str
    am_url: str
    prom: subprocess.Popen[bytes]
    am: subprocess.Popen[bytes]
    exporters: dict[str, int]
    receiver: AlertReceiver
    tokens: dict[str, str]
    extra_vars: dict[str, Any]
    run: PlaybookResult
    run_started: float
    prom_start_time: float
    prom_reload_before: float
    am_reload_before: float


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for tool in ("prometheus", "prometheus-alertmanager", "promtool", "amtool"):
        assert shutil.which(tool), f"{tool} not found: run `make setup` (Debian's prometheus packages)"
    tmp = tmp_path_factory.mktemp("monitoring-e2e")
    prom_port, am_port = _free_port(), _free_port()
    prom_url, am_url = f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}"
    (tmp / "prometheus").mkdir()
    (tmp / "alertmanager").mkdir()
    prom_cfg, am_cfg = tmp / "prometheus" / "prometheus.yml", tmp / "alertmanager" / "alertmanager.yml"
    # the configuration a freshly installed host starts with; the role replaces both
    prom_cfg.write_text(
        yaml.safe_dump(
            {
                "scrape_configs": [
                    {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{prom_port}"]}]}
                ]
            }
        )
    )
    am_cfg.write_text(yaml.safe_dump({"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}))

    procs: list[subprocess.Popen[bytes]] = []
    receiver = AlertReceiver().start()
    try:
        exporters: dict[str, int] = {}
        for service, ratio in (("e2e-critical", 0.06), ("e2e-warning", 0.012), ("e2e-quiet", 0.005)):
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.metrics_exporter", "--port", "0", "--error-ratio", str(ratio)],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
            )
            procs.append(proc)
            assert proc.stdout is not None
            exporters[service] = int(proc.stdout.readline().decode().rsplit(":", 1)[1])
        prom = _start(
            [
                "prometheus",
                f"--config.file={prom_cfg}",
                f"--storage.tsdb.path={tmp / 'prometheus' / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--web.enable-lifecycle",
            ],
            tmp / "prometheus.log",
        )
        procs.append(prom)
        am = _start(
            [
                "prometheus-alertmanager",
                f"--config.file={am_cfg}",
                f"--storage.path={tmp / 'alertmanager' / 'data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            tmp / "alertmanager.log",
        )
        procs.append(am)
        _wait_ready(prom_url, prom, tmp / "prometheus.log")
        _wait_ready(am_url, am, tmp / "alertmanager.log")

        tokens = {"pager": secrets.token_hex(16), "chat": secrets.token_hex(16)}
        extra_vars = {
            "monitoring_mode": "host",
            "monitoring_services": [
                {"name": name, "targets": [f"127.0.0.1:{port}"]} for name, port in exporters.items()
            ],
            "monitoring_scrape_interval": "1s",
            "monitoring_scrape_timeout": "1s",
            "monitoring_evaluation_interval": "1s",
            "monitoring_alert_error_critical_for": FOR,
            "monitoring_alert_error_warning_for": FOR,
            "monitoring_alertmanager_group_wait": "1s",
            "monitoring_alertmanager_group_interval": "1s",
            **pager_and_chat_vars(receiver, tokens),
            "monitoring_prometheus_url": prom_url,
            "monitoring_prometheus_config_file": str(prom_cfg),
            "monitoring_prometheus_rules_dir": str(tmp / "prometheus" / "rules"),
            "monitoring_alertmanager_url": am_url,
            "monitoring_alertmanager_config_file": str(am_cfg),
            "monitoring_alertmanager_secrets_dir": str(tmp / "alertmanager" / "secrets"),
            "monitoring_host_group": grp.getgrgid(os.getgid()).gr_name,
            "monitoring_grafana_provisioning_dir": str(tmp / "grafana" / "provisioning"),
            "monitoring_grafana_dashboards_dir": str(tmp / "grafana" / "dashboards"),
            "monitoring_vector_config_file": str(tmp / "vector" / "vector.yaml"),
            "monitoring_loki_config_file": str(tmp / "loki" / "config.yml"),
            "monitoring_loki_storage_dir": str(tmp / "loki" / "data"),
        }
        prom_start_time = _metric(prom_url, "process_start_time_seconds")
        prom_reload_before = _metric(prom_url, "prometheus_config_last_reload_success_timestamp_seconds")
        am_reload_before = _metric(am_url, "alertmanager_config_last_reload_success_timestamp_seconds")
        time.sleep(1.1)  # reload timestamps have a one-second resolution
        run_started = time.time()
        run = run_playbook(PLAYBOOK, extra_vars=extra_vars, inventory=INVENTORY, verbosity=3)
        assert run.rc == 0, run.output[-6000:]
        yield Stack(
            tmp,
            prom_url,
            am_url,
            prom,
            am,
            exporters,
            receiver,
            tokens,
            extra_vars,
            run,
            run_started,
            prom_start_time,
            prom_reload_before,
            am_reload_before,
        )
    finally:
        receiver.stop()
        for proc in reversed(procs):
            _stop(proc)


def test_the_role_reloads_prometheus_and_alertmanager_without_restarting_them(stack: Stack) -> None:
    assert stack.prom.poll() is None and stack.am.poll() is None
    assert _metric(stack.prom_url, "process_start_time_seconds") == stack.prom_start_time
    assert _metric(stack.prom_url, "prometheus_config_last_reload_success_timestamp_seconds") > stack.prom_reload_before
    assert _metric(stack.prom_url, "prometheus_config_last_reload_successful") == 1
    assert _metric(stack.am_url, "alertmanager_config_last_reload_success_timestamp_seconds") > stack.am_reload_before
    groups = {g["name"]: g for g in _get_json(f"{stack.prom_url}/api/v1/rules")["data"]["groups"]}
    assert {"thinkus-recording", "thinkus-alerts"} <= set(groups)
    alerts = {(r["name"], r["labels"].get("severity")) for r in groups["thinkus-alerts"]["rules"]}
    assert {(ALERT, "critical"), (ALERT, "warning"), ("ThinkusHighLatencyP99", "warning")} <= alerts
    # the role's scrape jobs, one per service, with the service label attached
    # target discovery runs on its own clock after a reload: poll (bounded) instead of racing it
    deadline = time.monotonic() + 30
    services: set[str | None] = set()
    while time.monotonic() < deadline:
        targets = _get_json(f"{stack.prom_url}/api/v1/targets")["data"]["activeTargets"]
        services = {t["labels"].get("service") for t in targets if t["labels"]["job"].startswith("thinkus-")}
        if services == set(stack.exporters):
            break
        time.sleep(0.5)
    assert services == set(stack.exporters)
    status = _get_json(f"{stack.am_url}/api/v2/status")["config"]["original"]
    assert "inhibit_rules" in status and "pager" in status


def test_six_percent_errors_page_and_the_warning_is_inhibited(stack: Stack) -> None:
    critical = stack.receiver.wait_for(
        lambda n: n.alert(ALERT, service="e2e-critical", severity="critical"), DELIVERY_TIMEOUT
    )
    assert critical is not None, f"no critical alert within {DELIVERY_TIMEOUT}s: {stack.receiver.notifications}"
    assert critical.path == "/pager", "critical alerts are routed to the pager receiver"
    assert critical.headers.get("authorization") == f"Bearer {stack.tokens['pager']}"
    alert = critical.alert(ALERT, service="e2e-critical", severity="critical")
    assert alert is not None and "of requests fail" in alert["annotations"]["summary"]
    assert alert["annotations"]["runbook_url"].endswith("/thinkushigherrorrate")

    # The warning twin is active in Alertmanager, suppressed by the critical alert...
    deadline = time.monotonic() + 20
    warning: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        found = _get_json(
            f"{stack.am_url}/api/v2/alerts?" + urllib.parse.urlencode({"filter": 'service="e2e-critical"'})
        )
        warning = next((a for a in found if a["labels"].get("severity") == "warning"), None)
        if warning and warning["status"]["state"] == "suppressed":
            break
        time.sleep(0.5)
    assert warning is not None, "the warning alert for e2e-critical never reached Alertmanager"
    assert warning["status"]["state"] == "suppressed" and warning["status"]["inhibitedBy"], warning["status"]
    # ...and was never delivered.
    delivered = [
        (n.path, a["labels"])
        for n, a in iter_alerts(stack.receiver.notifications)
        if a["labels"]["service"] == "e2e-critical"
    ]
    assert all(labels["severity"] == "critical" for _path, labels in delivered), delivered

    # Time from the error ratio (as the recording rule computes it) crossing 5 % to the webhook.
    samples = _query(stack.prom_url, 'service:http_requests_error_ratio:rate5m{service="e2e-critical"}[10m]')
    crossed = next(float(ts) for ts, value in samples[0]["values"] if float(value) > 0.05)
    print(
        f"\nmonitoring e2e: error ratio crossed 5 % at +{crossed - stack.run_started:.1f}s after the role run started;"
        f" critical delivered {critical.received_at - crossed:.1f}s later"
        f" (scrape/eval 1s, for {FOR}, group_wait 1s)"
    )


def test_one_point_two_percent_errors_send_a_warning_to_chat(stack: Stack) -> None:
    warning = stack.receiver.wait_for(
        lambda n: n.alert(ALERT, service="e2e-warning", severity="warning"), DELIVERY_TIMEOUT
    )
    assert warning is not None, f"no warning within {DELIVERY_TIMEOUT}s: {stack.receiver.notifications}"
    assert warning.path == "/chat"
    assert warning.headers.get("authorization") == f"Bearer {stack.tokens['chat']}"
    assert not any(
        a["labels"]["service"] == "e2e-warning" and a["labels"]["severity"] == "critical"
        for _note, a in iter_alerts(stack.receiver.notifications)
    )


def test_half_a_percent_errors_deliver_nothing(stack: Stack) -> None:
    # By the time both noisy services have been delivered, the quiet one has been evaluated
    # for longer than `for:` plus group_wait at the same scrape cadence.
    for service in ("e2e-critical", "e2e-warning"):
        assert stack.receiver.wait_for(lambda n, s=service: n.alert(ALERT, service=s), DELIVERY_TIMEOUT)
    time.sleep(3)  # one more `for:` period
    ratio = _query(stack.prom_url, 'service:http_requests_error_ratio:rate5m{service="e2e-quiet"}')
    assert ratio and abs(float(ratio[0]["value"][1]) - 0.005) < 0.001, f"e2e-quiet is not being evaluated: {ratio}"
    quiet = [
        a
        for _note, a in iter_alerts(stack.receiver.notifications, status=None)
        if a["labels"].get("service") == "e2e-quiet"
    ]
    assert quiet == []
    active = _get_json(f"{stack.am_url}/api/v2/alerts?" + urllib.parse.urlencode({"filter": 'service="e2e-quiet"'}))
    assert active == []


def test_every_dashboard_query_is_valid_promql_with_data(stack: Stack) -> None:
    dashboards = sorted((stack.tmp / "grafana" / "dashboards").glob("thinkus-*.json"))
    assert [p.name for p in dashboards] == sorted(f"thinkus-{s}.json" for s in stack.exporters)
    dashboard = json.loads((stack.tmp / "grafana" / "dashboards" / "thinkus-e2e-critical.json").read_text())
    empty = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            if target["datasource"]["type"] != "prometheus":
                continue
            if not _query(stack.prom_url, target["expr"]):  # a PromQL syntax error fails inside _query
                empty.append((panel["title"], target["expr"]))
    assert empty == [], f"dashboard queries without data: {empty}"


def test_no_secret_in_the_output_or_the_configuration(stack: Stack) -> None:
    assert "Read the rule groups Prometheus serves" in stack.run.output  # the -vvv run really ran the role
    for token in stack.tokens.values():
        assert token not in stack.run.output
        assert token not in (stack.tmp / "alertmanager" / "alertmanager.yml").read_text()
    for name, token in stack.tokens.items():
        secret_file = stack.tmp / "alertmanager" / "secrets" / f"{name}.bearer_token"
        assert secret_file.read_text() == token
        assert secret_file.stat().st_mode & 0o777 == 0o640


def _installed(stack: Stack) -> dict[str, str]:
    files = [
        Path(stack.extra_vars["monitoring_prometheus_config_file"]),
        Path(stack.extra_vars["monitoring_alertmanager_config_file"]),
        *sorted(Path(stack.extra_vars["monitoring_prometheus_rules_dir"]).glob("*.yml")),
    ]
    return {str(p): _sha(p) for p in files}


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        pytest.param(
            {
                "monitoring_extra_alert_rules": [
                    {"alert": "QuotaBurn", "expr": "rate(ai_tokens_total[5m]", "labels": {"severity": "warning"}}
                ]
            },
            ['"QuotaBurn"', "could not parse expression", "promtool rejected"],
            id="invalid-promql",
        ),
        pytest.param(
            {
                "monitoring_alertmanager_receivers": [
                    {"name": "pager", "type": "webhook", "url": "pager.example"},
                    {"name": "chat", "type": "none"},
                    {"name": "blackhole", "type": "none"},
                ]
            },
            ['receiver "pager"', "monitoring_alertmanager_receivers", "http:// or https://"],
            id="invalid-receiver",
        ),
        pytest.param(
            {"monitoring_alertmanager_critical_receiver": "oncall"},
            ["monitoring_alertmanager_critical_receiver (oncall)"],
            id="route-to-unknown-receiver",
        ),
    ],
)
def test_bad_input_fails_naming_it_and_leaves_the_running_configuration(
    stack: Stack, overrides: dict[str, Any], named: list[str]
) -> None:
    before = _installed(stack)
    reloaded = _metric(stack.prom_url, "prometheus_config_last_reload_success_timestamp_seconds")
    result = run_playbook(PLAYBOOK, extra_vars={**stack.extra_vars, **overrides}, inventory=INVENTORY)
    assert result.rc != 0
    flat = " ".join(result.output.split())  # the callback wraps long messages
    for text in named:
        assert text in flat, result.output[-4000:]
    assert _installed(stack) == before
    assert _metric(stack.prom_url, "prometheus_config_last_reload_success_timestamp_seconds") == reloaded
    groups = [g["name"] for g in _get_json(f"{stack.prom_url}/api/v1/rules")["data"]["groups"]]
    assert "thinkus-extra" not in groups and "thinkus-alerts" in groups
