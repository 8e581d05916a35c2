"""Benchmark of the local environment (numbers for the README and the issue note).

    python tools/bench_localenv.py            # warm bring-up + Deployment to Available
    python tools/bench_localenv.py --cold     # also a cold bring-up with empty caches

warm: every component stopped (state and caches kept), then `up` again.
cold: a throwaway state and cache directory, so everything is built from nothing
(debootstrap, base images, the Kubernetes build). It takes many minutes; it stops the
running environment first because the components listen on fixed ports.
deployment: a 3-replica Deployment on the kwok nodes, from create to availableReplicas == 3.
real node: the platform's three Deployments (images, pull Secret, placement as `make demo`
deployed them) applied into a fresh namespace, until every one is Available on the real node.
memory: the resident memory (RSS) of every process the local environment started, their
children, and the real node's pods (an upper bound: shared pages count once per process).
"""

from __future__ import annotations

import argparse
import json
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

from tools import benchlib  # noqa: E402

PY = sys.executable
RECORD = ROOT / ".local" / "artifacts" / "bench-localenv.json"


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


def real_node_seconds(kubeconfig: Path) -> float:
    """Apply the platform's Deployments (as deployed in `thinkus`) to a new namespace; time to all Available."""
    api = config.new_client_from_config(config_file=str(kubeconfig))
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    source = apps.list_namespaced_deployment("thinkus").items
    if not source:
        raise RuntimeError("no Deployments in namespace thinkus: run `make demo` first")
    ns = f"bench-node-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    try:
        for kind in ("secrets", "config_maps"):
            for obj in getattr(core, f"list_namespaced_{kind[:-1]}")("thinkus").items:
                kind_of = getattr(obj, "type", None) or ""
                if obj.metadata.name.startswith("kube-root-ca") or kind_of.startswith("kubernetes.io/service"):
                    continue
                obj.metadata = client.V1ObjectMeta(name=obj.metadata.name)
                getattr(core, f"create_namespaced_{kind[:-1]}")(ns, obj)
        t0 = time.monotonic()
        for dep in source:
            body = client.V1Deployment(metadata=client.V1ObjectMeta(name=dep.metadata.name), spec=dep.spec)
            apps.create_namespaced_deployment(ns, body)
        while True:
            items = apps.list_namespaced_deployment(ns).items
            if all((d.status.available_replicas or 0) == d.spec.replicas for d in items):
                return time.monotonic() - t0
            if time.monotonic() - t0 > 300:
                raise RuntimeError("the platform's Deployments were not Available after 300s")
            time.sleep(0.2)
    finally:
        core.delete_namespace(ns)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def local_env_rss_mib() -> tuple[float, int]:
    """(MiB, processes): every tracked process of .local/run, its descendants, and the node's pod shims."""
    roots = set()
    for pidfile in (ROOT / ".local" / "run").glob("*.pid"):
        try:
            roots.add(int(pidfile.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"/run/thinkus-ops/containerd.sock" in cmdline.read_bytes() and b"shim" in cmdline.read_bytes():
                roots.add(int(cmdline.parent.name))
        except OSError:
            continue
    tree, seen, todo = _children(), set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(tree.get(pid, []))
    return sum(_rss_kib(pid) for pid in seen) / 1024, len(seen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="also measure a cold bring-up (slow)")
    parser.add_argument("--runs", type=int, default=5, help="Deployments to time")
    parser.add_argument("--memory-only", action="store_true", help="only the resident memory of what runs now")
    parser.add_argument(
        "--record",
        action="store_true",
        help=f"also write the rows to {RECORD.relative_to(ROOT)} (python -m tools.measurements record)",
    )
    benchlib.add_json_argument(parser)
    args = parser.parse_args()

    results: dict[str, str] = {}
    mib, count = local_env_rss_mib()
    results["resident memory of the local environment"] = f"{mib:.0f} MiB in {count} processes (budget 8192 MiB)"
    if args.memory_only:
        print(f"{'resident memory of the local environment':<45} {results.popitem()[1]}")
        return 0
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
    warm = localenv("up")
    noop = localenv("up")
    results["warm bring-up (caches kept, all stopped)"] = f"{warm:.1f} s"
    results["no-op bring-up (all running)"] = f"{noop:.1f} s"
    times = deployment_seconds(ROOT / ".local" / "kubeconfig", args.runs)
    results["3-replica Deployment to Available"] = (
        f"median {statistics.median(times):.2f} s, max {max(times):.2f} s over {len(times)} runs"
    )
    results["platform Deployments to Available on the real node"] = (
        f"{real_node_seconds(ROOT / '.local' / 'kubeconfig'):.1f} s"
    )
    for key, value in results.items():
        print(f"{key:<45} {value}")
    benchlib.write(
        args.json,
        [
            benchlib.row("local environment: warm bring-up (caches kept, all stopped)", [warm]),
            benchlib.row("local environment: no-op bring-up (all running)", [noop]),
            benchlib.row("3-replica Deployment on the kwok nodes: create -> Available", times),
            benchlib.row("resident memory of the local environment", [mib], below=8192, unit="MiB"),
        ],
    )
    if args.record:
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps({"rows": results, "cold": args.cold}, indent=2) + "\n")
        print(f"recorded in {RECORD.relative_to(ROOT)}: python -m tools.measurements record")
    return 0


if __name__ == "__main__":
    sys.exit(main())
