# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Cluster mode of the monitoring role against the local Kubernetes (kube-apiserver + kwok).

Check mode first (a server-side dry run: changes announced, nothing created), then a real
run (the objects exist with the role's rendered configuration, and the Deployments'
pods become Ready on the kwok nodes), then a second run that changes nothing. A last run
with stand-in Prometheus Operator CRDs installed shows the switch to PrometheusRule and
PodMonitor objects. Everything lives in its own namespace and is deleted afterwards.
"""

from __future__ import annotations

import base64
import http.server
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from ansible.constants import DEFAULT_VAULT_ID_MATCH
from ansible.parsing.vault import VaultLib, VaultSecret
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.support.ansible import REPO_ROOT, PlaybookResult, run_playbook

pytestmark = [pytest.mark.localenv, pytest.mark.slow]

NAMESPACE = "thinkus-test-monitoring"
ROLE = "thinkus.ops.monitoring : "
APPLY_TASK = ROLE + "Apply the monitoring objects"
SECRET = "https://hooks.slack.example/services/T000/B000/cluster-test-secret"
CRDS = {"prometheusrules": "PrometheusRule", "podmonitors": "PodMonitor"}


def _run(kubeconfig: Path, check: bool = False, **overrides: Any) -> PlaybookResult:
    extra_vars = {
        "monitoring_mode": "cluster",
        "monitoring_k8s_kubeconfig": str(kubeconfig),
        "monitoring_k8s_namespace": NAMESPACE,
        "monitoring_k8s_app_namespaces": ["thinkus-test-monitoring-apps"],
        "monitoring_k8s_operator": "auto",
        # On the kwok nodes (every image "runs" there, Grafana's and Loki's included), which have no
        # volumes: the real node, its claims and its pulls are test_monitoring_real_node's.
        "monitoring_k8s_persistence": False,
        "monitoring_k8s_node_selector": {},
        "monitoring_k8s_tolerations": [],
        "monitoring_alertmanager_receivers": [
            {"name": "chat", "type": "slack", "slack_api_url": SECRET, "slack_channel": "#thinkus-alerts"},
        ],
        "monitoring_alertmanager_default_receiver": "chat",
        "monitoring_alertmanager_critical_receiver": "chat",
        "monitoring_alertmanager_warning_receiver": "chat",
        **overrides,
    }
    result = run_playbook(
        "playbooks/monitoring.yml",
        extra_vars=extra_vars,
        inventory=str(REPO_ROOT / "inventories" / "local"),
        check=check,
        json_output=True,
    )
    assert result.rc == 0, result.output[-6000:]
    assert SECRET not in result.output
    return result


@pytest.fixture(scope="module")
def kubeconfig() -> Path:
    env = os.environ.get("THINKUS_KUBECONFIG") or os.environ.get("KUBECONFIG")
    path = Path(env.split(os.pathsep)[0]).expanduser() if env else REPO_ROOT / ".local" / "kubeconfig"
    assert path.is_file(), f"no kubeconfig at {path}: bring the local environment up first (make local-up)"
    return path


def _delete(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture(scope="module")
def api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    yield api_client
    rbac = client.RbacAuthorizationV1Api(api_client)
    for name in (f"{NAMESPACE}-prometheus", f"{NAMESPACE}-vector"):
        _delete(rbac.delete_cluster_role_binding, name)
        _delete(rbac.delete_cluster_role, name)
    _delete(client.CoreV1Api(api_client).delete_namespace, NAMESPACE)
    for plural in CRDS:
        _delete(
            client.ApiextensionsV1Api(api_client).delete_custom_resource_definition, f"{plural}.monitoring.coreos.com"
        )


@pytest.fixture(scope="module")
def runs(api: client.ApiClient, kubeconfig: Path) -> dict[str, PlaybookResult]:
    core = client.CoreV1Api(api)
    _delete(core.delete_namespace, NAMESPACE)  # leftovers of an interrupted run
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            core.read_namespace(NAMESPACE)
            time.sleep(0.5)
        except ApiException:
            break
    check = _run(kubeconfig, check=True)
    with pytest.raises(ApiException):
        core.read_namespace(NAMESPACE)
    first = _run(kubeconfig)
    second = _run(kubeconfig)
    return {"check": check, "first": first, "second": second}


def test_check_mode_announces_the_objects_and_creates_nothing(runs: dict[str, PlaybookResult]) -> None:
    check = runs["check"]
    assert check.task(ROLE + "Apply the monitoring namespace")["changed"] is True
    announced = check.task(ROLE + "Announce the objects a real run creates in the new namespace")
    assert announced["changed"] is True
    for name in ("ConfigMap/prometheus-rules", "Deployment/prometheus", "Service/alertmanager", "DaemonSet/vector"):
        assert name in announced["msg"]


def test_the_objects_hold_the_rendered_configuration(runs: dict[str, PlaybookResult], api: client.ApiClient) -> None:
    assert runs["first"].task(APPLY_TASK)["changed"] is True
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    prometheus = yaml.safe_load(core.read_namespaced_config_map("prometheus-config", NAMESPACE).data["prometheus.yml"])
    pods_job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "thinkus-pods")
    assert pods_job["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["thinkus-test-monitoring-apps"]
    # Every service of the platform, the worker (which has no Service) included.
    keep = [r["regex"] for r in pods_job["relabel_configs"] if r.get("action") == "keep"]
    assert keep == ["true", "go-orchestrator|py-ai-engine|worker"]
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        f"alertmanager.{NAMESPACE}.svc:9093"
    ]
    assert prometheus["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    rules = core.read_namespaced_config_map("prometheus-rules", NAMESPACE).data
    alerts = yaml.safe_load(rules["thinkus-alerts.yml"])
    assert {r["alert"] for r in alerts["groups"][0]["rules"]} >= {"ThinkusHighErrorRate", "ThinkusPodRestarted"}
    assert 'namespace=~"thinkus-test-monitoring-apps"' in rules["thinkus-alerts.yml"]
    am = yaml.safe_load(core.read_namespaced_config_map("alertmanager-config", NAMESPACE).data["alertmanager.yml"])
    assert am["receivers"][0]["slack_configs"][0]["api_url_file"] == "/etc/alertmanager/secrets/chat.slack_api_url"
    secret = core.read_namespaced_secret("alertmanager-secrets", NAMESPACE)
    assert base64.b64decode(secret.data["chat.slack_api_url"]).decode() == SECRET
    dashboards = core.read_namespaced_config_map("grafana-dashboards", NAMESPACE).data
    assert sorted(dashboards) == ["thinkus-go-orchestrator.json", "thinkus-py-ai-engine.json", "thinkus-worker.json"]
    assert "retention_stream" in core.read_namespaced_config_map("loki-config", NAMESPACE).data["config.yml"]
    assert "kubernetes_logs" in core.read_namespaced_config_map("vector-config", NAMESPACE).data["vector.yaml"]
    services = {s.metadata.name: s.spec.ports[0].port for s in core.list_namespaced_service(NAMESPACE).items}
    assert services == {"prometheus": 9090, "alertmanager": 9093, "grafana": 3000, "loki": 3100}
    assert apps.read_namespaced_daemon_set("vector", NAMESPACE).spec.template.spec.service_account_name == "vector"
    # kwok schedules the pods: the Deployments are complete enough to become available
    names = ["prometheus", "alertmanager", "grafana", "loki"]
    deadline = time.monotonic() + 60
    ready: dict[str, int] = {}
    while time.monotonic() < deadline:
        ready = {n: apps.read_namespaced_deployment(n, NAMESPACE).status.ready_replicas or 0 for n in names}
        if all(ready.values()):
            break
        time.sleep(1)
    assert all(ready.values()), ready
    # a config change is reloaded by the sidecar: no checksum annotation restarts the pods
    template = apps.read_namespaced_deployment("prometheus", NAMESPACE).spec.template
    assert not (template.metadata.annotations or {})
    assert {c.name for c in template.spec.containers} == {"prometheus", "config-reloader"}


def test_a_second_run_changes_nothing(runs: dict[str, PlaybookResult]) -> None:
    assert runs["second"].task(APPLY_TASK)["changed"] is False
    secrets_task = ROLE + "Apply the monitoring Secrets (receivers, Grafana, Loki, registry pull)"
    assert runs["second"].task(secrets_task)["changed"] is False
    assert runs["second"].stats["localhost"]["changed"] == 0


class _Backend(http.server.BaseHTTPRequestHandler):
    """Stands in for Loki behind the gateway: answers 200 and remembers each request's headers."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()} | {":path": self.path})
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0  # not listening (yet)


def test_grafana_and_loki_take_their_credentials_from_the_vault(
    runs: dict[str, PlaybookResult], api: client.ApiClient, tmp_path: Path
) -> None:
    """Grafana's admin account from the Secret; Loki only behind its gateway, run here with Debian's nginx."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    vault = _local_vault()
    admin = core.read_namespaced_secret("grafana-admin", NAMESPACE).data
    assert base64.b64decode(admin["admin-password"]).decode() == vault["vault_grafana_admin_password"]
    grafana = apps.read_namespaced_deployment("grafana", NAMESPACE).spec.template.spec.containers[0]
    env = {e.name: e.value_from.secret_key_ref.name if e.value_from else e.value for e in grafana.env}
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "grafana-admin"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    for result in runs.values():
        assert vault["vault_grafana_admin_password"] not in result.output
        assert vault["vault_loki_password"] not in result.output
    policy = client.NetworkingV1Api(api).read_namespaced_network_policy("loki", NAMESPACE)
    allowed = policy.spec.ingress[0]._from[0].pod_selector.match_expressions[0].values
    assert sorted(allowed) == ["grafana", "vector"]
    loki = yaml.safe_load(core.read_namespaced_config_map("loki-config", NAMESPACE).data["config.yml"])
    assert loki["auth_enabled"] is True
    assert loki["server"]["http_listen_address"] == "127.0.0.1"

    # The gateway's configuration as the cluster holds it, served by a real nginx in front of a stub.
    gateway = core.read_namespaced_config_map("loki-gateway", NAMESPACE).data["default.conf"]
    access = core.read_namespaced_secret("loki-access", NAMESPACE).data
    (tmp_path / "credentials.conf").write_text(base64.b64decode(access["credentials.conf"]).decode())
    listen, backend = _free_port(), _free_port()
    site = (
        gateway.replace("/etc/nginx/secrets/credentials.conf", str(tmp_path / "credentials.conf"))
        .replace("listen 3100;", f"listen 127.0.0.1:{listen};")
        .replace("127.0.0.1:3101", f"127.0.0.1:{backend}")
    )
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\ndaemon off;\nevents {{}}\n"
        f"http {{\n access_log off;\n client_body_temp_path {tmp_path}/body;\n proxy_temp_path {tmp_path}/proxy;\n"
        f"{site}\n}}\n"
    )
    stub = http.server.ThreadingHTTPServer(("127.0.0.1", backend), _Backend)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    nginx = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")])
    try:
        base = f"http://127.0.0.1:{listen}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _status(f"{base}/ready", {}) != 200:
            time.sleep(0.1)
        good = base64.b64encode(f"thinkus-logs:{vault['vault_loki_password']}".encode()).decode()
        bad = base64.b64encode(b"thinkus-logs:not-the-password").decode()
        assert _status(f"{base}/ready", {}) == 200, nginx.poll()
        assert _status(f"{base}/loki/api/v1/labels", {}) == 401
        assert _status(f"{base}/loki/api/v1/labels", {"Authorization": f"Basic {bad}"}) == 401
        _Backend.seen.clear()
        headers = {"Authorization": f"Basic {good}", "X-Scope-OrgID": "someone-else"}
        assert _status(f"{base}/loki/api/v1/labels", headers) == 200
        (request,) = _Backend.seen
        assert request["x-scope-orgid"] == "thinkus"  # the gateway's tenant, whatever the client sent
        assert "authorization" not in request  # the password goes no further than the gateway
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        stub.shutdown()


def _local_vault() -> dict[str, str]:
    password = (REPO_ROOT / "inventories/local/vault-password.txt").read_bytes().strip()
    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password))])
    return yaml.safe_load(vault.decrypt((REPO_ROOT / "inventories/local/group_vars/all/vault.yml").read_bytes()))


def test_operator_crds_switch_to_prometheusrule_and_podmonitor(
    runs: dict[str, PlaybookResult], api: client.ApiClient, kubeconfig: Path
) -> None:
    ext = client.ApiextensionsV1Api(api)
    for plural, kind in CRDS.items():
        body = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.monitoring.coreos.com"},
            "spec": {
                "group": "monitoring.coreos.com",
                "scope": "Namespaced",
                "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    }
                ],
            },
        }
        try:
            ext.create_custom_resource_definition(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conditions = [
            {
                c.type: c.status
                for c in (ext.read_custom_resource_definition(f"{p}.monitoring.coreos.com").status.conditions or [])
            }
            for p in CRDS
        ]
        if all(c.get("Established") == "True" for c in conditions):
            break
        time.sleep(0.5)
    _run(kubeconfig, monitoring_k8s_operator_labels={"release": "kube-prometheus-stack"})
    custom = client.CustomObjectsApi(api)
    rule = custom.get_namespaced_custom_object("monitoring.coreos.com", "v1", NAMESPACE, "prometheusrules", "thinkus")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert {g["name"] for g in rule["spec"]["groups"]} == {"thinkus-recording", "thinkus-alerts"}
    critical = next(
        r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("labels", {}).get("severity") == "critical"
    )
    assert critical["expr"] == "service:http_requests_error_ratio:rate5m > 0.05"
    assert "{{ $labels.service }}" in critical["annotations"]["summary"]
    monitors = custom.list_namespaced_custom_object("monitoring.coreos.com", "v1", NAMESPACE, "podmonitors")["items"]
    by_name = {m["metadata"]["name"]: m["spec"] for m in monitors}
    # Pods, not Services: the worker has no Service and is monitored like the others.
    assert sorted(by_name) == ["thinkus-go-orchestrator", "thinkus-py-ai-engine", "thinkus-worker"]
    assert by_name["thinkus-worker"]["podMetricsEndpoints"][0]["port"] == "http"
    assert by_name["thinkus-go-orchestrator"]["selector"]["matchLabels"] == {"app": "go-orchestrator"}
    assert by_name["thinkus-go-orchestrator"]["namespaceSelector"]["matchNames"] == ["thinkus-test-monitoring-apps"]
