# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What the monitoring role writes with its DEFAULT thresholds and durations.

playbooks/monitoring.yml runs in host mode with ``monitoring_host_reload: false`` and
every path in a temp dir: first with ``--check --diff`` (nothing may be written, every
file must be announced), then for real. Then:

* ``promtool test rules`` runs tests/promtool/*_test.yml against the rendered rules: each
  alert fires where the seed says and stays silent where it must;
* the Grafana provisioning and dashboards are checked for the structure Grafana loads
  (there is no Grafana binary here), and every dashboard query is parsed by promtool;
* the Vector pipeline and Loki configuration are checked for structure and content.
  Neither Vector nor Grafana Loki is installable on this machine (Debian's ``loki``
  package is an unrelated genetics program), so their own validators (``vector
  validate``, ``loki -verify-config``) cannot run here: these checks are structural only.
"""

from __future__ import annotations

import grp
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ansible import REPO_ROOT, PlaybookResult, run_playbook

pytestmark = [pytest.mark.localenv, pytest.mark.slow]

PROMTOOL_TESTS = REPO_ROOT / "tests" / "promtool"
SERVICES = ("go-orchestrator", "py-ai-engine")  # monitoring_services of inventories/local
SEED_FIELDS = ("timestamp", "level", "service", "trace_id", "user_id", "message", "extra")
SLACK_URL = "https://hooks.slack.example/services/T000/B000/rendered-test-secret"
PD_KEY = "pd-routing-key-rendered-test-secret"


@dataclass
class Rendered:
    root: Path
    check: PlaybookResult
    run: PlaybookResult

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendered]:
    root = tmp_path_factory.mktemp("monitoring-rendered")
    extra_vars = {
        "monitoring_mode": "host",
        "monitoring_host_reload": False,
        "monitoring_host_group": grp.getgrgid(os.getgid()).gr_name,
        "monitoring_prometheus_config_file": str(root / "prometheus" / "prometheus.yml"),
        "monitoring_prometheus_rules_dir": str(root / "prometheus" / "rules"),
        "monitoring_alertmanager_config_file": str(root / "alertmanager" / "alertmanager.yml"),
        "monitoring_alertmanager_secrets_dir": str(root / "alertmanager" / "secrets"),
        "monitoring_grafana_provisioning_dir": str(root / "grafana" / "provisioning"),
        "monitoring_grafana_dashboards_dir": str(root / "grafana" / "dashboards"),
        "monitoring_vector_config_file": str(root / "vector" / "vector.yaml"),
        "monitoring_loki_config_file": str(root / "loki" / "config.yml"),
        "monitoring_loki_storage_dir": str(root / "loki" / "data"),
        "monitoring_logs_paths": ["/var/log/thinkus/*.log"],
        "monitoring_alertmanager_receivers": [
            {"name": "chat", "type": "slack", "slack_api_url": SLACK_URL, "slack_channel": "#thinkus-alerts"},
            {"name": "pager", "type": "pagerduty", "pagerduty_routing_key": PD_KEY},
        ],
        "monitoring_alertmanager_default_receiver": "chat",
        "monitoring_alertmanager_critical_receiver": "pager",
        "monitoring_alertmanager_warning_receiver": "chat",
    }
    inventory = str(REPO_ROOT / "inventories" / "local")
    check = run_playbook("playbooks/monitoring.yml", extra_vars=extra_vars, inventory=inventory, check=True, diff=True)
    assert check.rc == 0, check.output[-6000:]
    assert not any(p.is_file() for p in root.rglob("*")), "check mode wrote files"
    run = run_playbook("playbooks/monitoring.yml", extra_vars=extra_vars, inventory=inventory)
    assert run.rc == 0, run.output[-6000:]
    yield Rendered(root, check, run)


def test_check_mode_announces_every_file_with_its_content(rendered: Rendered) -> None:
    out = rendered.check.output
    assert re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)", out) and "changed=0" not in out
    for marker in (
        "service:http_requests_error_ratio:rate5m > 0.05",
        "job_name: thinkus-go-orchestrator",
        "inhibit_rules:",
    ):
        assert marker in out, f"--check --diff does not show {marker!r}"
    for secret in (SLACK_URL, PD_KEY):
        assert secret not in out and secret not in rendered.run.output


def test_promtool_unit_tests_pass_against_the_default_rules(rendered: Rendered, tmp_path: Path) -> None:
    for rule_file in ("thinkus-recording.yml", "thinkus-alerts.yml"):
        shutil.copy(rendered.path("prometheus", "rules", rule_file), tmp_path)
    tests = sorted(PROMTOOL_TESTS.glob("*_test.yml"))
    assert len(tests) >= 3
    for test in tests:
        shutil.copy(test, tmp_path)
    result = subprocess.run(
        ["promtool", "test", "rules", *[t.name for t in tests]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests)


def test_every_alert_has_a_promtool_test(rendered: Rendered) -> None:
    rules = yaml.safe_load(rendered.path("prometheus", "rules", "thinkus-alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tested = set()
    for test in PROMTOOL_TESTS.glob("*_test.yml"):
        for case in yaml.safe_load(test.read_text())["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert alerts - tested == set(), "alerts no promtool test sees firing"


def test_alertmanager_reads_receiver_secrets_from_files(rendered: Rendered) -> None:
    config = yaml.safe_load(rendered.path("alertmanager", "alertmanager.yml").read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    slack = receivers["chat"]["slack_configs"][0]
    pager = receivers["pager"]["pagerduty_configs"][0]
    assert Path(slack["api_url_file"]).read_text() == SLACK_URL
    assert Path(pager["routing_key_file"]).read_text() == PD_KEY
    assert oct(Path(slack["api_url_file"]).stat().st_mode & 0o777) == "0o640"
    text = rendered.path("alertmanager", "alertmanager.yml").read_text()
    assert SLACK_URL not in text and PD_KEY not in text
    assert [r["receiver"] for r in config["route"]["routes"]] == ["pager", "chat"]
    assert config["inhibit_rules"][0]["equal"] == ["alertname", "service"]


def test_grafana_provisioning_points_at_the_dashboards(rendered: Rendered) -> None:
    datasources = yaml.safe_load(rendered.path("grafana", "provisioning", "datasources", "thinkus.yml").read_text())
    assert datasources["apiVersion"] == 1
    by_uid = {d["uid"]: d for d in datasources["datasources"]}
    assert by_uid["thinkus-prometheus"]["type"] == "prometheus" and by_uid["thinkus-prometheus"]["url"].startswith(
        "http"
    )
    assert by_uid["thinkus-loki"]["type"] == "loki"
    assert sum(1 for d in datasources["datasources"] if d.get("isDefault")) == 1
    providers = yaml.safe_load(rendered.path("grafana", "provisioning", "dashboards", "thinkus.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and Path(provider["options"]["path"]) == rendered.path("grafana", "dashboards")


def _dashboards(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(rendered.path("grafana", "dashboards").glob("*.json"))}


def test_one_dashboard_per_service_in_grafanas_schema(rendered: Rendered) -> None:
    dashboards = _dashboards(rendered)
    assert sorted(dashboards) == sorted(f"thinkus-{s}.json" for s in SERVICES)
    datasources = yaml.safe_load(rendered.path("grafana", "provisioning", "datasources", "thinkus.yml").read_text())
    known_uids = {d["uid"]: d["type"] for d in datasources["datasources"]}
    uids = set()
    for name, board in dashboards.items():
        service = name.removeprefix("thinkus-").removesuffix(".json")
        assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", board["uid"]) and board["uid"] not in uids
        uids.add(board["uid"])
        assert board["title"] and board["time"]["from"] and isinstance(board["templating"]["list"], list)
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            assert panel["type"] in {"timeseries", "stat", "logs"}, panel["type"]
            pos = panel["gridPos"]
            assert all(isinstance(pos[k], int) for k in "hwxy") and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
            covered = {
                (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert not covered & cells, f"{name}: panel {panel['title']!r} overlaps another"
            cells |= covered
            assert known_uids.get(panel["datasource"]["uid"]) == panel["datasource"]["type"]
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs))
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"] and target["expr"]
                assert f'service="{service}"' in target["expr"], target["expr"]
        titles = " ".join(p["title"] for p in board["panels"])
        for metric in ("Request rate", "Error ratio", "p50 / p95 / p99", "CPU", "Memory", "API calls", "AI tokens"):
            assert metric in titles, f"{name}: no {metric} panel (seed section 5.1 core metrics)"


def test_every_dashboard_promql_query_parses(rendered: Rendered, tmp_path: Path) -> None:
    exprs = [
        t["expr"]
        for board in _dashboards(rendered).values()
        for p in board["panels"]
        for t in p["targets"]
        if t["datasource"]["type"] == "prometheus"
    ]
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [{"record": f"dashboard:query:{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        ["promtool", "check", "rules", "queries.yml"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def _vector(rendered: Rendered) -> dict[str, Any]:
    return yaml.safe_load(rendered.path("vector", "vector.yaml").read_text())


def test_vector_pipeline_is_a_connected_graph_ending_in_loki(rendered: Rendered) -> None:
    vector = _vector(rendered)
    components = {**vector["sources"], **vector["transforms"], **vector["sinks"]}
    for name, component in {**vector["transforms"], **vector["sinks"]}.items():
        for upstream in component["inputs"]:
            assert upstream in components and upstream not in vector["sinks"], f"{name} reads from unknown {upstream}"
    consumed = {i for c in {**vector["transforms"], **vector["sinks"]}.values() for i in c["inputs"]}
    assert set(vector["sources"]) | set(vector["transforms"]) <= consumed, "a component's output goes nowhere"
    assert vector["sources"]["thinkus_logs"] == {
        "type": "file",
        "include": ["/var/log/thinkus/*.log"],
        "read_from": "end",
    }
    assert all(t["type"] == "remap" for t in vector["transforms"].values())
    (sink,) = vector["sinks"].values()
    assert sink["type"] == "loki" and sink["endpoint"] == "http://127.0.0.1:3100"
    assert sink["labels"] == {"service": "{{ service }}", "level": "{{ level }}", "stream": "{{ stream }}"}


def test_vector_keeps_the_seed_fields_and_drops_secrets(rendered: Rendered) -> None:
    vector = _vector(rendered)
    structured = vector["transforms"]["thinkus_structured"]["source"]
    assert "parse_json(.message)" in structured
    for field in SEED_FIELDS:
        assert re.search(rf"^\.{field} = ", structured, re.M), f"seed field {field} is not set"
    redacted = vector["transforms"]["thinkus_redacted"]["source"]
    secret_keys = json.loads(re.search(r"^secret_keys = (\[.*\])$", redacted, re.M).group(1))
    assert {"authorization", "token", "password", "api_key", "cookie"} <= set(secret_keys)
    assert redacted.count("!includes(secret_keys, downcase(key))") == 3  # extra, extra.headers, extra.request.headers
    patterns = re.findall(r"r'([^']+)'", redacted)
    samples = ["Authorization: Bearer eyJhbGciOi.abc", "token=abc123", "key sk-ant-0123456789abcdefXYZ"]
    for sample in samples:
        assert any(re.search(p.replace("(?i)", ""), sample, re.I) for p in patterns), f"no redaction covers {sample!r}"
    assert '.stream = "error"' in redacted and '.stream = "audit"' in redacted


def test_loki_keeps_each_stream_for_its_seed_retention(rendered: Rendered) -> None:
    loki = yaml.safe_load(rendered.path("loki", "config.yml").read_text())
    assert loki["compactor"]["retention_enabled"] is True
    limits = loki["limits_config"]
    assert limits["retention_period"] == "720h"  # production logs: 30 days
    streams = {s["selector"]: s["period"] for s in limits["retention_stream"]}
    assert streams == {'{stream="error"}': "2160h", '{stream="audit"}': "8760h"}  # 90 days, 1 year
    for period in [limits["retention_period"], *streams.values()]:
        assert int(period.removesuffix("h")) % 24 == 0, "retention must be a multiple of the 24h index period"
    assert loki["schema_config"]["configs"][0]["index"]["period"] == "24h"
    # the stream values Loki selects on are the ones Vector writes
    redacted = _vector(rendered)["transforms"]["thinkus_redacted"]["source"]
    for selector in streams:
        value = re.search(r'stream="(\w+)"', selector).group(1)
        assert f'.stream = "{value}"' in redacted
