"""How long a 3-replica Deployment takes to become Available on the local cluster.

Usage (from the repository root, with the local environment up):
    .venv/bin/python tools/bench_k8s.py [--runs 5] [--replicas 3] [--kubeconfig PATH]

Each run creates a Deployment in a scratch namespace and times create -> availableReplicas
== replicas; the namespace is deleted afterwards. Prints every run and the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools import benchlib  # noqa: E402

TIMEOUT = 120.0


def _default_kubeconfig() -> str:
    env = os.environ.get("THINKUS_KUBECONFIG") or os.environ.get("KUBECONFIG")
    return env.split(os.pathsep)[0] if env else str(ROOT / ".local" / "kubeconfig")


def _deployment(replicas: int) -> client.V1Deployment:
    labels = {"app": "bench"}
    container = client.V1Container(name="app", image="thinkus-bench/noop:1")
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name="bench"),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels), spec=client.V1PodSpec(containers=[container])
            ),
        ),
    )


def _wait_service_account(core: client.CoreV1Api, namespace: str) -> None:
    """Pods are only admitted once the namespace's default ServiceAccount exists; not part of the timing."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if core.list_namespaced_service_account(namespace, field_selector="metadata.name=default").items:
            return
        time.sleep(0.05)
    raise TimeoutError(f"no default ServiceAccount in {namespace}")


def one_run(api: client.ApiClient, replicas: int) -> float:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    namespace = f"thinkus-bench-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    try:
        _wait_service_account(core, namespace)
        started = time.monotonic()
        apps.create_namespaced_deployment(namespace, _deployment(replicas))
        while time.monotonic() - started < TIMEOUT:
            if apps.read_namespaced_deployment_status("bench", namespace).status.available_replicas == replicas:
                return time.monotonic() - started
            time.sleep(0.02)
        raise TimeoutError(f"Deployment not Available within {TIMEOUT:.0f}s")
    finally:
        core.delete_namespace(namespace, propagation_policy="Background")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--kubeconfig", default=_default_kubeconfig())
    benchlib.add_json_argument(parser)
    args = parser.parse_args()
    api = config.new_client_from_config(config_file=args.kubeconfig)
    times = []
    for i in range(args.runs):
        seconds = one_run(api, args.replicas)
        times.append(seconds)
        print(f"run {i + 1}: {args.replicas}-replica Deployment Available in {seconds:.2f}s")
    print(f"median {statistics.median(times):.2f}s, max {max(times):.2f}s over {args.runs} runs")
    what = f"{args.replicas}-replica Deployment on the kwok nodes: create -> Available"
    benchlib.write(args.json, [benchlib.row(what, times)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
