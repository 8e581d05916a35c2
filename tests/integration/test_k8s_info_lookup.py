# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The thinkus.ops.k8s_info lookup against the local kube-apiserver, compared with the kubernetes client.

The local inventory reads the Services' ClusterIPs with it (inventories/local, monitoring_services),
and deploy.yml's smoke stage its Services.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.support.ansible import REPO_ROOT, run_playbook

pytestmark = [pytest.mark.localenv]

KUBECONFIG = REPO_ROOT / ".local" / "kubeconfig"

PLAYBOOK = """---
- name: Read objects with the k8s_info lookup
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Query
      ansible.builtin.set_fact:
        every: "{{ query('thinkus.ops.k8s_info', kind='Service', namespace='default') }}"
        one: "{{ query('thinkus.ops.k8s_info', kind='Service', name='kubernetes', namespace='default') }}"
        labelled: "{{ query('thinkus.ops.k8s_info', kind='Service', label_selector='component=apiserver') }}"
        nodes: "{{ query('thinkus.ops.k8s_info', kind='Node') }}"
        no_namespace: "{{ query('thinkus.ops.k8s_info', kind='Service', namespace='thinkus-test-no-such-namespace') }}"
        no_kind: "{{ query('thinkus.ops.k8s_info', kind='Widget', api_version='nothing.thinkus.test/v1') }}"
"""

FAILING = """---
- name: A lookup that cannot work
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Query
      ansible.builtin.debug:
        msg: "{{ query('thinkus.ops.k8s_info', %s) }}"
"""


@pytest.fixture(scope="module")
def api() -> client.ApiClient:
    api_client = config.new_client_from_config(config_file=str(KUBECONFIG))
    client.VersionApi(api_client).get_code(_request_timeout=10)
    return api_client


def test_the_lookup_returns_what_the_api_server_holds(tmp_path: Path, api: client.ApiClient) -> None:
    playbook = tmp_path / "lookup.yml"
    playbook.write_text(PLAYBOOK)
    # The kubeconfig from the environment, as the modules take it (no option given).
    result = run_playbook(playbook, env={"K8S_AUTH_KUBECONFIG": str(KUBECONFIG)}, json_output=True)
    assert result.rc == 0, result.output
    facts = result.task("Query")["ansible_facts"]
    core = client.CoreV1Api(api)
    live = {s.metadata.name: s.spec.cluster_ip for s in core.list_namespaced_service("default").items}
    assert {s["metadata"]["name"]: s["spec"]["clusterIP"] for s in facts["every"]} == live
    assert all(s["kind"] == "Service" and s["apiVersion"] == "v1" for s in facts["every"])
    assert [s["spec"]["clusterIP"] for s in facts["one"]] == [live["kubernetes"]]
    # Every namespace, filtered by label: the API server's own Service.
    selected = core.list_service_for_all_namespaces(label_selector="component=apiserver").items
    assert sorted((s["metadata"]["namespace"], s["metadata"]["name"]) for s in facts["labelled"]) == sorted(
        (s.metadata.namespace, s.metadata.name) for s in selected
    )
    assert sorted(n["metadata"]["name"] for n in facts["nodes"]) == sorted(
        n.metadata.name for n in core.list_node().items
    )
    assert facts["no_namespace"] == []
    assert facts["no_kind"] == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param("'Service'", "takes options only", id="terms"),
        pytest.param("namespace='default'", "Required config 'kind'", id="no-kind"),
        pytest.param(
            "kind='Service', kubeconfig='{kubeconfig}'",
            "127.0.0.1:1",
            id="unreachable",
        ),
    ],
)
def test_a_lookup_that_cannot_work_fails_saying_why(tmp_path: Path, arguments: str, message: str) -> None:
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}
                ],
                "users": [{"name": "u", "user": {"token": "not-a-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    playbook = tmp_path / "failing.yml"
    playbook.write_text(FAILING % arguments.format(kubeconfig=unreachable))
    result = run_playbook(playbook, env={"K8S_AUTH_KUBECONFIG": str(KUBECONFIG)})
    assert result.rc != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert "not-a-token" not in result.output
