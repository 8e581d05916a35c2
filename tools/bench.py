"""`make bench`: every tools/bench_*.py, one after the other, and one table of their results.

    python tools/bench.py                 # all benchmarks, the backup one on a 1 GB database
    python tools/bench.py --quick         # fewer runs, a 150 MB database (a smoke run, not for the README)
    python tools/bench.py --only k8s_deploy,demo

Each benchmark measures our path against the plain tool doing the same work, side by side in
the same run (tools/benchlib.py); the table gives the medians, the ratio and the goal. It is
written to .local/artifacts/bench.json; `python -m tools.measurements record` copies it into
docs/measurements.json and the README's performance table. Needs the local environment
(make local-up); bench_localenv restarts it, so it runs last.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT = ROOT / ".local" / "artifacts" / "bench.json"

# name -> (arguments, quick arguments); the order is the order they run in
# k8s_deploy takes 11 runs: a run varies by up to a third on a busy 2-core machine, and its row
# is a ratio of two medians (about 20 s more than 5 runs).
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "k8s_deploy": (["--runs", "11"], ["--runs", "2"]),
    "demo": (["--runs", "3"], ["--runs", "1"]),
    "docker_build": (["--rounds", "3"], ["--rounds", "1"]),
    "backup": (["--scale", "70", "--rounds", "2"], ["--scale", "10", "--rounds", "1"]),
    "monitoring": ([], []),
    "k8s": (["--runs", "5"], ["--runs", "2"]),
    "localenv": (["--runs", "5"], ["--runs", "2"]),
    "ee": (["--runs", "3"], ["--runs", "1"]),
}


def _cell(value: float, unit: str) -> str:
    return f"{value:.0f} {unit}" if unit != "s" or value >= 100 else f"{value:.2f} {unit}"


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| what | median | baseline (same run) | baseline median | ratio | goal | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        unit = row.get("unit", "s")
        base = _cell(row["baseline_median"], unit) if "baseline_median" in row else "-"
        ratio = f"{row['ratio']:.2f}" if row.get("ratio") is not None else "-"
        met = {True: "yes", False: "**no**"}.get(row.get("met"), "-")
        lines.append(
            f"| {row['what']} ({len(row['runs'])} runs) | {_cell(row['median'], unit)} | {row.get('baseline', '-')} "
            f"| {base} | {ratio} | {row.get('goal', '-')} | {met} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and a small database: a smoke run")
    parser.add_argument("--only", help="comma-separated names: " + ", ".join(BENCHMARKS))
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    found = sorted(p.stem.removeprefix("bench_") for p in (ROOT / "tools").glob("bench_*.py"))
    missing = [n for n in found if n not in BENCHMARKS]
    if unknown or missing:
        sys.exit(f"unknown benchmarks {unknown}; tools/bench_*.py not in tools/bench.py: {missing}")
    rows: list[dict] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in names:
            full, quick = BENCHMARKS[name]
            out = Path(tmp) / f"{name}.json"
            command = [sys.executable, str(ROOT / "tools" / f"bench_{name}.py"), *(quick if args.quick else full)]
            print(f"==> bench_{name}: {' '.join(command[2:]) or '(defaults)'}", flush=True)
            started = time.monotonic()
            done = subprocess.run([*command, "--json", str(out)], cwd=ROOT, check=False)
            print(f"<== bench_{name}: exit {done.returncode} in {time.monotonic() - started:.0f}s", flush=True)
            if done.returncode != 0 or not out.exists():
                failed.append(name)
                continue
            rows.extend(dict(row, bench=name) for row in json.loads(out.read_text()))
    print()
    print("\n".join(table(rows)))
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout
    ARTIFACT.write_text(
        json.dumps(
            {
                "rows": rows,
                "quick": args.quick,
                "benchmarks": names,
                "commit": commit.strip(),
                "finished": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
                "failed": failed,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten to {ARTIFACT.relative_to(ROOT)}; `python -m tools.measurements record` puts it in the README")
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
