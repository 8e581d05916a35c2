"""What every tools/bench_*.py reports to `make bench` (tools/bench.py): one row per measurement.

A row says what was measured, against which baseline (the plain tool doing the same work in
the same run), the medians of both, their ratio, and the goal; `--json FILE` on a benchmark
writes its rows there, and tools/bench.py prints them all as one table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, help="also write the result rows (for make bench) to this file")


def row(
    what: str,
    ours: list[float],
    baseline: str | None = None,
    plain: list[float] | None = None,
    max_ratio: float | None = None,
    below: float | None = None,
    unit: str = "s",
) -> dict[str, Any]:
    """One measurement: medians of ``ours`` (and of ``plain``, the baseline's runs), the ratio, the goal."""
    median = statistics.median(ours)
    out: dict[str, Any] = {"what": what, "median": round(median, 3), "runs": [round(x, 3) for x in ours], "unit": unit}
    if plain:
        base = statistics.median(plain)
        out.update(baseline=baseline, baseline_median=round(base, 3), baseline_runs=[round(x, 3) for x in plain])
        out["ratio"] = round(median / base, 3) if base else None
    elif baseline:
        out["baseline"] = baseline
    if max_ratio is not None:
        out["goal"] = f"ratio <= {max_ratio:g}"
        out["met"] = out.get("ratio") is not None and out["ratio"] <= max_ratio
    elif below is not None:
        out["goal"] = f"< {below:g} {unit}"
        out["met"] = median < below
    return out


def write(path: Path | None, rows: list[dict[str, Any]]) -> None:
    if path is not None:
        path.write_text(json.dumps(rows, indent=2) + "\n")
