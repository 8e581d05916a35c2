"""Benchmark of the local environment (numbers for the README and the issue note).

    python tools/bench_localenv.py            # warm bring-up + Deployment to Available
    python tools/bench_localenv.py --cold     # also a cold bring-up with empty caches

warm: every component stopped (state and caches kept), then `up` again.
cold: a throwaway state and cache directory, so everything is built from nothing
(debootstrap, base images, the Kubernetes build). It takes many minutes; it stops the
running environment first because the components listen on fixed ports.
deployment: a 3-replica Deployment on the kwok nodes, from create to availableReplicas == 3.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client, config  # noqa: E402

PY = sys.executable


def localenv(*args: str, env: dict[str, str] | None = None) -> float:
    t0 = time.monotonic()
    subprocess.run(
        [PY, "-m", "tools.localenv", *args],
        cwd=ROOT,
        check=True,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - t0


def deployment_seconds(kubeconfig: Path, runs: int) -> list[float]:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    ns = f"bench-localenv-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    times = []
    try:
        for i in range(runs):
            name = f"bench-{i}"
            labels = {"app": name}
            body = {
                "metadata": {"name": name},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "c", "image": "bench:1"}]},
                    },
                },
            }
            t0 = time.monotonic()
            apps.create_namespaced_deployment(ns, body)
            while (apps.read_namespaced_deployment(name, ns).status.available_replicas or 0) < 3:
                if time.monotonic() - t0 > 120:
                    raise RuntimeError(f"{name} not Available after 120s")
                time.sleep(0.1)
            times.append(time.monotonic() - t0)
    finally:
        core.delete_namespace(ns)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="also measure a cold bring-up (slow)")
    parser.add_argument("--runs", type=int, default=5, help="Deployments to time")
    args = parser.parse_args()

    results: dict[str, str] = {}
    if args.cold:
        localenv("down")
        with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
            env = {"THINKUS_CACHE_DIR": str(Path(tmp) / "cache"), "THINKUS_LOCAL_DIR": str(Path(tmp) / "state")}
            try:
                results["cold bring-up (empty caches)"] = f"{localenv('up', env=env):.0f} s"
            finally:
                localenv("down", env=env)
    localenv("up")
    localenv("down")
    results["warm bring-up (caches kept, all stopped)"] = f"{localenv('up'):.1f} s"
    results["no-op bring-up (all running)"] = f"{localenv('up'):.1f} s"
    times = deployment_seconds(ROOT / ".local" / "kubeconfig", args.runs)
    results["3-replica Deployment to Available"] = (
        f"median {statistics.median(times):.2f} s, max {max(times):.2f} s over {len(times)} runs"
    )
    for key, value in results.items():
        print(f"{key:<45} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
