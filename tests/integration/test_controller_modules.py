# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The modules' code run in the controller (their action plugins) against the same code run as modules.

A task environment sends a task to the module path (plugin_utils/_controller_module.py), so
one playbook runs each call both ways against the local kube-apiserver: the results must be
the same, a no_log option must be masked the same, bad options must fail the same way, and
at -vvv only the tasks with an environment, and an async one, may show a module file being shipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.support.ansible import REPO_ROOT, run_playbook

pytestmark = [pytest.mark.localenv]

KUBECONFIG = REPO_ROOT / ".local" / "kubeconfig"

PLAYBOOK = """---
- name: Each call in the controller, then as a module
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/thinkus.ops.k8s:
      kubeconfig: "{{ kubeconfig }}"
  tasks:
    - name: Apply in the controller
      thinkus.ops.k8s_apply:
        namespace: "{{ namespace }}"
        resources: &objects
          - {apiVersion: v1, kind: Namespace, metadata: {name: "{{ namespace }}"}}
          - apiVersion: v1
            kind: ConfigMap
            metadata: {name: probe, namespace: "{{ namespace }}"}
            data: {answer: "42"}
      register: in_controller

    - name: Apply again as a module
      thinkus.ops.k8s_apply:
        namespace: "{{ namespace }}"
        resources: *objects
      environment: {THINKUS_TEST_MODULE_PATH: "1"}
      register: as_module

    - name: Read in the controller
      thinkus.ops.k8s_info: {kind: ConfigMap, namespace: "{{ namespace }}", name: probe}
      register: read_controller

    - name: Read as a module
      thinkus.ops.k8s_info: {kind: ConfigMap, namespace: "{{ namespace }}", name: probe}
      environment: {THINKUS_TEST_MODULE_PATH: "1"}
      register: read_module

    - name: Read as an async module job
      thinkus.ops.k8s_info: {kind: ConfigMap, namespace: "{{ namespace }}", name: probe}
      async: 60
      poll: 1
      register: read_async

    - name: Roll out nothing, with a no_log option, in the controller
      thinkus.ops.k8s_rollout: {namespace: "{{ namespace }}", deployments: [], redact: ["{{ hidden }}"]}
      register: rollout_controller

    - name: Roll out nothing, with a no_log option, as a module
      thinkus.ops.k8s_rollout: {namespace: "{{ namespace }}", deployments: [], redact: ["{{ hidden }}"]}
      environment: {THINKUS_TEST_MODULE_PATH: "1"}
      register: rollout_module

    - name: Release in the controller (lock, a Secret, a ConfigMap, lock given back)
      thinkus.ops.k8s_release: &release
        namespace: "{{ namespace }}"
        lock: {name: probe-lock, wait_timeout: 5}
        secrets:
          - {apiVersion: v1, kind: Secret, metadata: {name: probe}, stringData: {token: "{{ hidden }}"}}
        resources:
          - {apiVersion: v1, kind: ConfigMap, metadata: {name: released}, data: {answer: "43"}}
      register: release_controller

    - name: Release again as a module
      thinkus.ops.k8s_release: *release
      environment: {THINKUS_TEST_MODULE_PATH: "1"}
      register: release_module

    - name: Release a kind the server does not serve (refused before the namespace or the lock)
      thinkus.ops.k8s_release:
        namespace: "{{ namespace }}-refused"
        lock: {name: probe-lock, wait_timeout: 5}
        secrets:
          - {apiVersion: v1, kind: Secret, metadata: {name: probe}, stringData: {token: "{{ hidden }}"}}
        resources:
          - {apiVersion: example.com/v1, kind: NoSuchKind, metadata: {name: nothing}}
      register: release_refused
      ignore_errors: true

    - name: An unknown option in the controller
      thinkus.ops.k8s_info: {kind: ConfigMap, colour: blue}
      register: bad_controller
      ignore_errors: true

    - name: An unknown option as a module
      thinkus.ops.k8s_info: {kind: ConfigMap, colour: blue}
      environment: {THINKUS_TEST_MODULE_PATH: "1"}
      register: bad_module
      ignore_errors: true

    - name: Hand the results to the test
      ansible.builtin.copy:
        content: "{{ {'apply': [in_controller, as_module], 'read': [read_controller, read_module, read_async],
                     'rollout': [rollout_controller, rollout_module], 'bad': [bad_controller, bad_module],
                     'release': [release_controller, release_module], 'refused': release_refused} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""


def test_the_controller_path_matches_the_module_path(tmp_path: Path) -> None:
    namespace = f"thinkus-test-controller-{uuid.uuid4().hex[:8]}"
    hidden = f"hidden-{uuid.uuid4().hex}"
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK)
    out = tmp_path / "out.json"
    api = config.new_client_from_config(config_file=str(KUBECONFIG))
    try:
        run = run_playbook(
            playbook,
            extra_vars={
                "kubeconfig": str(KUBECONFIG),
                "namespace": namespace,
                "hidden": hidden,
                "out": str(out),
                "ansible_connection": "local",
                "ansible_python_interpreter": str(REPO_ROOT / ".venv" / "bin" / "python"),
            },
            verbosity=3,
        )
        assert run.rc == 0, run.output[-4000:]
        results = json.loads(out.read_text())
        first, second = results["apply"]
        assert first["changed"] is True and second["changed"] is False  # the module saw what the controller applied
        assert [o["name"] for o in first["objects"]] == [o["name"] for o in second["objects"]]
        live = client.CoreV1Api(api).read_namespaced_config_map("probe", namespace)
        assert live.data == {"answer": "42"}
        controller, module, in_background = results["read"]
        assert controller["resources"] == module["resources"] == in_background["resources"]
        assert in_background["finished"] == 1  # async went to the module, wrapped as Ansible wraps it
        assert controller["resources"][0]["data"] == {"answer": "42"}
        for rollout in results["rollout"]:
            assert rollout["failed"] is False and rollout["deployments"] == []
        # -vvv prints each task's invocation: the no_log option masked on both paths
        assert run.output.count("VALUE_SPECIFIED_IN_NO_LOG_PARAMETER") >= 2, run.output[-4000:]
        first, second = results["release"]
        assert first["changed"] is True and second["changed"] is False, results["release"]
        assert first["secrets"]["changed"] == ["probe"] and second["secrets"]["changed"] == []
        assert first["lock"]["released"] is True and second["lock"]["released"] is True
        assert client.CoordinationV1Api(api).list_namespaced_lease(namespace).items == []
        assert client.CoreV1Api(api).read_namespaced_config_map("released", namespace).data == {"answer": "43"}
        refused = results["refused"]
        assert refused["failed"] is True and "NoSuchKind" in refused["msg"], refused
        namespaces = {n.metadata.name for n in client.CoreV1Api(api).list_namespace().items}
        assert f"{namespace}-refused" not in namespaces  # nothing applied, not even the namespace
        for bad in results["bad"]:
            assert bad["failed"] is True
            assert bad["msg"].startswith("Unsupported parameters for (thinkus.ops.k8s_info) module: colour.")
        assert hidden not in run.output
        # only the five tasks with an environment and the async one shipped a module
        shipped = [line for line in run.output.splitlines() if "Using module file" in line and "thinkus/ops" in line]
        assert len(shipped) == 6, shipped
    finally:
        with contextlib.suppress(client.exceptions.ApiException):
            client.CoreV1Api(api).delete_namespace(namespace)


ENGINE_PLAYBOOK = """---
- name: The Docker engine, asked in the controller and as a module
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Ask in the controller
      thinkus.ops.docker_engine_info:
      register: in_controller

    - name: Ask as a module
      thinkus.ops.docker_engine_info:
      environment: {THINKUS_TEST_MODULE_PATH: "1"}
      register: as_module

    - name: Ask an address where no engine listens
      thinkus.ops.docker_engine_info:
        docker_host: "unix://{{ missing_socket }}"
        timeout: 2
      register: missing
      ignore_errors: true

    - name: Keep the results
      ansible.builtin.copy:
        content: "{{ {'in_controller': in_controller, 'as_module': as_module, 'missing': missing} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""


def test_docker_engine_info_reports_the_engine_both_ways(tmp_path: Path) -> None:
    expected = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    playbook = tmp_path / "engine.yml"
    playbook.write_text(ENGINE_PLAYBOOK)
    out = tmp_path / "out.json"
    missing_socket = tmp_path / "no-engine.sock"
    result = run_playbook(
        str(playbook),
        extra_vars={
            "out": str(out),
            "missing_socket": str(missing_socket),
            "ansible_connection": "local",
            "ansible_python_interpreter": str(REPO_ROOT / ".venv" / "bin" / "python"),
        },
    )
    assert result.rc == 0, result.output[-3000:]
    results = json.loads(out.read_text())
    for path in ("in_controller", "as_module"):
        answer = results[path]
        assert answer["changed"] is False
        assert [answer["version"], answer["api_version"]] == expected, path
        assert answer["docker_host"] == (os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
        assert answer["os"] == "linux"
    missing = results["missing"]
    assert missing["failed"] is True
    assert missing["msg"].startswith(f"The Docker engine at unix://{missing_socket} does not answer: ")


RELEASE_CHECKS_PLAYBOOK = """---
- name: k8s_release refuses what the caller's checks found before it renders or reads anything
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Problems found, and workloads that cannot render (an undefined variable)
      thinkus.ops.k8s_release:
        kubeconfig: "{{ kubeconfig }}"
        preflight_problems: ["k8s_deploy_namespace (Bad) must be a DNS label", "and a second one"]
        namespace: "{{ release_namespace }}"
        lock: {name: thinkus-deploy}
        secrets: "{{ never_defined_secrets }}"
        resources: "{{ never_defined_resources }}"
        redact: "{{ [never_defined_password] }}"
      environment: "{{ module_environment }}"
      register: refused
      ignore_errors: true

    - name: No problems, the same undefined workloads
      thinkus.ops.k8s_release:
        kubeconfig: "{{ kubeconfig }}"
        preflight_problems: []
        namespace: "{{ release_namespace }}"
        lock: {name: thinkus-deploy}
        resources: "{{ never_defined_resources }}"
      environment: "{{ module_environment }}"
      register: rendered
      ignore_errors: true

    - name: Keep the results
      ansible.builtin.copy:
        content: "{{ {'refused': refused, 'rendered': rendered} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""


@pytest.mark.parametrize("module_environment", [{}, {"THINKUS_TEST_MODULE_PATH": "1"}], ids=["controller", "module"])
def test_k8s_release_refuses_the_callers_problems_before_rendering_its_inputs(
    tmp_path: Path, module_environment: dict[str, str]
) -> None:
    namespace = f"thinkus-test-release-checks-{uuid.uuid4().hex[:6]}"
    playbook = tmp_path / "release.yml"
    playbook.write_text(RELEASE_CHECKS_PLAYBOOK)
    out = tmp_path / "out.json"
    extra_vars = {
        "out": str(out),
        "kubeconfig": str(KUBECONFIG),
        "release_namespace": namespace,
        "module_environment": module_environment,
        "ansible_connection": "local",
        "ansible_python_interpreter": str(REPO_ROOT / ".venv" / "bin" / "python"),
    }
    result = run_playbook(str(playbook), extra_vars=extra_vars)
    assert result.rc == 0, result.output[-3000:]
    results = json.loads(out.read_text())
    refused = results["refused"]
    assert refused["failed"] is True
    assert refused["msg"] == "k8s_deploy_namespace (Bad) must be a DNS label; and a second one"
    # Without problems, the workloads are rendered, and their undefined variable is the failure.
    rendered = results["rendered"]
    assert rendered["failed"] is True
    assert "never_defined_resources" in rendered["msg"]
    config.load_kube_config(config_file=str(KUBECONFIG))
    names = [ns.metadata.name for ns in client.CoreV1Api().list_namespace().items]
    assert namespace not in names  # nothing was read or changed
