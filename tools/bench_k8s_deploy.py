# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""No-op deploy of the k8s_deploy role against kubectl on the same manifests, side by side.

    .venv/bin/python tools/bench_k8s_deploy.py [--runs 3]

1. deploys the role once into a scratch namespace (thinkus-test-k8s-deploy-bench);
2. renders the same manifests (the role's render entry point; the Secrets read back from
   the cluster into a 0600 temporary directory, deleted at the end);
3. times, alternately, a no-op `ansible-playbook` run of the role and
   `kubectl apply --server-side` of those manifests followed by `kubectl rollout status`
   for each Deployment; prints the medians and their ratio.
Needs the local environment (make local-up) and a kubectl: the one the local environment
built (~/.cache/thinkus-ops/bin/kubernetes-*/kubectl) or one on PATH.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / ".collections")]

from ansible_collections.thinkus.ops.tests.support.ansible import run_playbook  # noqa: E402
from tools import benchlib  # noqa: E402

NAMESPACE = "thinkus-test-k8s-deploy-bench"
KUBECONFIG = ROOT / ".local" / "kubeconfig"
PLAYBOOK = "tests/integration/targets/k8s_deploy/deploy.yml"
RENDER = """---
- name: Render the k8s_deploy manifests
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Render
      ansible.builtin.include_role:
        name: thinkus.ops.k8s_deploy
        tasks_from: render.yml
    - name: Write them
      ansible.builtin.copy:
        content: "{{ _k8s_deploy_manifests | to_json }}"
        dest: "{{ bench_out }}"
        mode: "0600"
"""


def find_kubectl() -> str | None:
    built = sorted(glob.glob(os.path.expanduser("~/.cache/thinkus-ops/bin/kubernetes-*/kubectl")))
    return built[-1] if built else shutil.which("kubectl")


def timed(command: list[str], env: dict[str, str], expect: str | None = None) -> float:
    """Seconds one command took; with ``expect``, its output must contain that text (a no-op must be one)."""
    start = time.perf_counter()
    done = subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if expect and expect not in done.stdout:
        recap = done.stdout[done.stdout.rfind("PLAY RECAP") :]
        print(f"not a no-op ({expect!r} missing): {recap.strip()}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    benchlib.add_json_argument(parser)
    args = parser.parse_args()
    kubectl = find_kubectl()
    if not kubectl:
        print("no kubectl found (~/.cache/thinkus-ops/bin or PATH): nothing to compare against")
        return 1
    extra = {
        "k8s_deploy_namespace": NAMESPACE,
        "k8s_deploy_instance": NAMESPACE,
        "thinkus_local_dir": str(ROOT / ".local"),
    }
    env = dict(os.environ, KUBECONFIG=str(KUBECONFIG))
    work = Path(tempfile.mkdtemp(prefix="bench-k8s-deploy-"))
    os.chmod(work, 0o700)
    try:
        setup = run_playbook(PLAYBOOK, extra_vars=extra, inventory=str(ROOT / "inventories" / "local"))
        if setup.rc != 0:
            print(setup.output)
            return 1
        render = work / "render.yml"
        render.write_text(RENDER)
        out = work / "manifests.json"
        rendered = run_playbook(
            render, extra_vars={**extra, "bench_out": str(out)}, inventory=str(ROOT / "inventories" / "local")
        )
        if rendered.rc != 0:
            print(rendered.output)
            return 1
        manifests = json.loads(out.read_text())
        secrets = json.loads(
            subprocess.run(
                [
                    kubectl,
                    "get",
                    "secrets",
                    "-n",
                    NAMESPACE,
                    "-l",
                    "app.kubernetes.io/managed-by=thinkus.ops",
                    "-o",
                    "json",
                ],
                check=True,
                env=env,
                capture_output=True,
                text=True,
            ).stdout
        )["items"]
        for secret in secrets:
            secret["metadata"] = {k: secret["metadata"][k] for k in ("name", "namespace", "labels")}
        # The namespace as the role applies it (its labels): without them, each kubectl apply under the
        # same field manager removed the labels and the role's next run put them back, a change, not a no-op.
        live_namespace = json.loads(
            subprocess.run(
                [kubectl, "get", "namespace", NAMESPACE, "-o", "json"],
                check=True,
                env=env,
                capture_output=True,
                text=True,
            ).stdout
        )
        labels = live_namespace["metadata"].get("labels") or {}
        labels = {k: v for k, v in labels.items() if not k.startswith("kubernetes.io/")}
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": labels}}
        all_yaml = work / "all.yaml"
        all_yaml.write_text(yaml.safe_dump_all([namespace, *secrets, *manifests]))
        all_yaml.chmod(0o600)
        deployments = [m["metadata"]["name"] for m in manifests if m["kind"] == "Deployment"]
        kubectl_steps = [
            [kubectl, "apply", "--server-side", "--force-conflicts", "--field-manager=thinkus-ops", "-f", str(all_yaml)]
        ]
        kubectl_steps += [
            [kubectl, "rollout", "status", f"deployment/{d}", "-n", NAMESPACE, "--timeout=300s"] for d in deployments
        ]
        playbook_cmd = [
            str(ROOT / ".venv" / "bin" / "ansible-playbook"),
            PLAYBOOK,
            "-i",
            str(ROOT / "inventories" / "local"),
            "-e",
            json.dumps(extra),
        ]
        role_times, kubectl_times = [], []
        for _run in range(args.runs):
            role_times.append(
                timed(playbook_cmd, dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")), expect="changed=0")
            )
            kubectl_times.append(sum(timed(step, env) for step in kubectl_steps))
        role, plain = statistics.median(role_times), statistics.median(kubectl_times)
        print(f"objects: {len(manifests) + len(secrets) + 1} ({len(deployments)} Deployments), runs: {args.runs}")
        print(f"k8s_deploy no-op (ansible-playbook, lock + apply + rollout wait): median {role:.2f}s  {role_times}")
        print(f"kubectl apply --server-side + rollout status:                   median {plain:.2f}s  {kubectl_times}")
        print(f"ratio role/kubectl: {role / plain:.1f}x (goal: <= 2x)")
        benchlib.write(
            args.json,
            [
                benchlib.row(
                    "no-op k8s_deploy (ansible-playbook: preflight, lock, apply, rollout check, release)",
                    role_times,
                    "`kubectl apply --server-side` + `kubectl rollout status` per Deployment, same manifests",
                    kubectl_times,
                    max_ratio=2.0,
                )
            ],
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(
            [kubectl or "kubectl", "delete", "namespace", NAMESPACE, "--wait=false"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )


if __name__ == "__main__":
    sys.exit(main())
