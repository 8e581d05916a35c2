"""A no-op `make demo` on a warm local environment: the whole command, as a user types it.

    .venv/bin/python tools/bench_demo.py [--runs 3]

The first `make demo` converges (it may change things); then each timed run must report
`result=ok changed=0` in .local/artifacts/deploy-summary.json, or the benchmark fails: a
run that changed something is not a no-op. Goal: under 15 s. The per-stage times of the
last run come from the summary file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools import benchlib  # noqa: E402

SUMMARY = ROOT / ".local" / "artifacts" / "deploy-summary.json"


def make_demo() -> tuple[float, dict]:
    start = time.perf_counter()
    command = ["make", "--no-print-directory", "demo"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"make demo failed (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
    return elapsed, json.loads(SUMMARY.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    benchlib.add_json_argument(parser)
    args = parser.parse_args()
    print("converging first (make demo) ...", flush=True)
    make_demo()
    times = []
    summary: dict = {}
    for i in range(args.runs):
        seconds, summary = make_demo()
        changed = summary.get("changed")
        if summary.get("result") != "ok" or changed:
            sys.exit(f"run {i + 1} was not a no-op: result={summary.get('result')} changed={changed}")
        times.append(seconds)
        print(f"run {i + 1}: no-op make demo in {seconds:.1f} s (changed=0)", flush=True)
    stages = summary.get("stages") or {}
    print(
        f"last run: playbook {summary.get('duration_seconds')} s; "
        + ", ".join(f"{name} {entry.get('duration_seconds', 0)} s" for name, entry in stages.items())
    )
    benchlib.write(
        args.json,
        [benchlib.row("no-op `make demo` on a warm local environment (changed=0)", times, below=15)],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
