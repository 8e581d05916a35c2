"""The execution environment: its size, a warm build, and what a navigator run costs.

    .venv/bin/python tools/bench_ee.py [--runs 3]

- a warm `python -m tools.ee build --no-push` (ansible-builder with the layer cache; the
  collection tarball changes, so its layers are rebuilt);
- the image's size;
- a no-op `playbooks/deploy.yml` against inventories/local through `ansible-navigator run` in
  the EE (the way AWX runs a job), against the same playbook run by plain `ansible-playbook`,
  interleaved in one run. Every timed deploy must end with changed=0.
The cold build time is in .local/artifacts/ee.json after the first `make ee` on a new machine.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools import benchlib, ee  # noqa: E402

BIN = ROOT / ".venv" / "bin"


def _timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    return elapsed, done.stdout


def _changed(output: str) -> int:
    m = re.search(r"^localhost\s*:.*\bchanged=(\d+)", output, re.M)
    if not m:
        sys.exit("no play recap in the output:\n" + output[-2000:])
    return int(m.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    benchlib.add_json_argument(parser)
    args = parser.parse_args()
    tag = ee.image_tag()
    print("warm EE build ...", flush=True)
    build_seconds, _output = _timed([str(BIN / "python"), "-m", "tools.ee", "build", "--no-push"])
    inspect = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=True)
    size = json.loads(inspect.stdout)[0]["Size"]
    plain_cmd = [str(BIN / "ansible-playbook"), "playbooks/deploy.yml", "-i", "inventories/local"]
    nav_cmd = [
        str(BIN / "ansible-navigator"),
        "run",
        "playbooks/deploy.yml",
        "-i",
        "inventories/local",
        "--eei",
        tag,
        "--pp",
        "never",
        "--mode",
        "stdout",
        "--pae",
        "false",
        "--co=--network=host",
        "--co=--volume=/var/run/docker.sock:/var/run/docker.sock",
    ]
    print("converging first (ansible-playbook) ...", flush=True)
    _timed(plain_cmd)
    plain, nav = [], []
    for i in range(args.runs):
        pair = ((plain_cmd, plain, "ansible-playbook"), (nav_cmd, nav, "ansible-navigator in the EE"))
        for cmd, times, label in pair:
            seconds, out = _timed(cmd)
            if _changed(out):
                sys.exit(f"run {i + 1} of {label} was not a no-op:\n{out[-3000:]}")
            times.append(seconds)
            print(f"run {i + 1}: {label}: no-op deploy in {seconds:.1f} s", flush=True)
    benchlib.write(
        args.json,
        [
            benchlib.row(
                "no-op deploy.yml through `ansible-navigator run` in the execution environment",
                nav,
                baseline="the same no-op `ansible-playbook playbooks/deploy.yml`",
                plain=plain,
            ),
            benchlib.row("warm EE build (`python -m tools.ee build --no-push`, layer cache)", [build_seconds]),
            benchlib.row("EE image size", [size / 1e6], unit="MB"),
        ],
    )
    print(f"EE {tag}: {size / 1e6:.0f} MB; warm build {build_seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
