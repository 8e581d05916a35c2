"""Benchmark of the docker_build role against plain `docker build`, side by side in one run.

Targets (issue 4): a no-op converge of the three services under 15 s, and a rebuild after a
one-line change in one service under 2x a plain `docker build` of that service with a warm
cache. Needs the local environment (make local-up).

    .venv/bin/python tools/bench_docker_build.py [--rounds 3]

The sample services are copied into a temporary git repository; images go to
127.0.0.1:5000/thinkus-test-docker-build/bench/*, removed from the registry afterwards.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools import benchlib  # noqa: E402
from tools.localenv import _secrets  # noqa: E402
from tools.localenv._proc import Context  # noqa: E402

REGISTRY = "127.0.0.1:5000"
PREFIX = "thinkus-test-docker-build/bench"
SERVICES = [
    {
        "name": "go-orchestrator",
        "template": "go",
        "go_package": "./cmd",
        "ports": [8080, 50051],
        "compose_name": "orchestrator",
    },
    {"name": "py-ai-engine", "template": "python", "ports": [8000, 50052], "compose_name": "ai-engine"},
    {"name": "worker", "template": "python", "ports": [8001], "command": ["python", "-m", "worker"]},
]
# What the role's Go template renders to with the local stand-ins, for the plain build.
PLAIN_GO_DOCKERFILE = """FROM thinkus-base/golang:bookworm AS builder
WORKDIR /src
COPY go.mod go.sum* ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=linux go build -ldflags="-s -w" -o /out/go-orchestrator ./cmd
FROM thinkus-base/debian:bookworm
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
WORKDIR /app
COPY --from=builder /out/go-orchestrator /app/go-orchestrator
EXPOSE 8080 50051
USER 65532:65532
ENTRYPOINT ["/app/go-orchestrator"]
"""


def git(repo: Path, *args: str) -> None:
    cmd = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", *args]
    subprocess.run(cmd, check=True, capture_output=True)


def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd[:3])} ...\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def role_run(work: Path, sources: Path) -> float:
    extra = work / "vars.json"
    services = [{**s, "repository": f"{PREFIX}/{s['name']}"} for s in SERVICES]
    extra.write_text(
        json.dumps(
            {
                "docker_build_services": services,
                "docker_build_source_dir": str(sources),
                "docker_build_artifacts_dir": str(work / "artifacts"),
            }
        )
    )
    cmd = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "playbooks/build.yml", "-i", "inventories/local"]
    return timed([*cmd, "-e", f"@{extra}"], env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}, cwd=ROOT)


def plain_build(context: Path, dockerfile: Path) -> float:
    cmd = ["docker", "build", "-q", "-f", str(dockerfile), "-t", f"{REGISTRY}/{PREFIX}/plain:bench", str(context)]
    return timed(cmd, env={**os.environ, "DOCKER_BUILDKIT": "0"})


def cleanup_registry() -> None:
    creds = _secrets.load(Context())
    auth = base64.b64encode(f"{creds['registry_username']}:{creds['registry_password']}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}", "Accept": "application/vnd.docker.distribution.manifest.v2+json"}

    def call(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(f"http://{REGISTRY}{path}", method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, {}, b""

    for service in SERVICES:
        repo = f"{PREFIX}/{service['name']}"
        status, _headers, body = call("GET", f"/v2/{repo}/tags/list")
        tags = (json.loads(body).get("tags") or []) if status == 200 else []
        digests = {call("HEAD", f"/v2/{repo}/manifests/{t}")[1].get("Docker-Content-Digest") for t in tags}
        for digest in digests - {None}:
            call("DELETE", f"/v2/{repo}/manifests/{digest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of each measurement (median reported)")
    benchlib.add_json_argument(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-docker-build-") as tmp:
        work = Path(tmp)
        sources = work / "services"
        shutil.copytree(ROOT / "tests" / "fixtures" / "services", sources)
        git(sources, "init", "-q")
        git(sources, "add", "-A")
        git(sources, "commit", "-q", "-m", "bench")
        plain_dockerfile = work / "go.Dockerfile"
        plain_dockerfile.write_text(PLAIN_GO_DOCKERFILE)
        try:
            print("warming up (first build and push of the three services) ...", flush=True)
            first = role_run(work, sources)
            plain_build(sources / "go-orchestrator", plain_dockerfile)

            noop = [role_run(work, sources) for _round in range(args.rounds)]
            plain_cached = [plain_build(sources / "go-orchestrator", plain_dockerfile) for _round in range(args.rounds)]

            rebuild, plain = [], []
            main_go = sources / "go-orchestrator" / "cmd" / "main.go"
            for i in range(args.rounds):
                main_go.write_text(main_go.read_text() + f"\n// bench change {i}\n")
                git(sources, "commit", "-q", "-am", f"change {i}")
                rebuild.append(role_run(work, sources))
                main_go.write_text(main_go.read_text() + f"\n// plain change {i}\n")
                plain.append(plain_build(sources / "go-orchestrator", plain_dockerfile))
        finally:
            cleanup_registry()
            subprocess.run(
                ["docker", "rmi", "-f", f"{REGISTRY}/{PREFIX}/plain:bench"], capture_output=True, check=False
            )

    med = statistics.median
    print(f"first converge (3 services built and pushed):   {first:6.1f} s")
    print(f"no-op converge, role (3 services):               {med(noop):6.1f} s   (goal < 15 s)")
    print(f"plain docker build, fully cached (1 service):     {med(plain_cached):6.1f} s")
    print(f"rebuild after a one-line change, role (+push):    {med(rebuild):6.1f} s")
    print(f"plain docker build after the same change:         {med(plain):6.1f} s")
    print(f"ratio rebuild role / plain docker build:          {med(rebuild) / med(plain):6.2f}x (goal < 2x)")
    benchlib.write(
        args.json,
        [
            benchlib.row(
                "no-op docker_build converge (3 services: input hashes against the registry)",
                noop,
                "plain `docker build` of 1 service, fully cached",
                plain_cached,
                below=15,
            ),
            benchlib.row(
                "docker_build rebuild after a one-line change (build + push)",
                rebuild,
                "plain `docker build` after the same change",
                plain,
                max_ratio=2.0,
            ),
        ],
    )


if __name__ == "__main__":
    main()
