# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A small process serving Prometheus metrics in the platform services' shape.

It stands in for a Thinkus service behind Prometheus: the counters grow as if the
service answered ``rps`` requests a second, ``error_ratio`` of them with a 500, each
taking ``latency`` seconds, and spent AI tokens on every request. The numbers are exact
(no randomness), so a test knows which alert must fire and which must not.

    python -m tests.support.metrics_exporter --port 0 --error-ratio 0.06
    # first line on stdout: "listening on 127.0.0.1:<port>"

Endpoints: ``GET /metrics`` (text format 0.0.4), ``GET /control`` (current settings),
``POST /control`` with JSON ``{"error_ratio": .., "latency": .., "rps": ..}`` to change
them from now on, ``POST /restart`` to behave like a restarted process (counters back to
zero, new ``process_start_time_seconds``).

Series (the role's ``monitoring_metric_*`` defaults; the ``service`` label is added by
Prometheus at scrape time, as for the real services):
``http_requests_total{method,route,code}``, ``http_request_duration_seconds`` (histogram,
the Go client's default buckets), ``ai_tokens_total{model,type}``, and the process
collector's ``process_start_time_seconds``, ``process_cpu_seconds_total``,
``process_resident_memory_bytes``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROUTES = (("GET", "/api/v1/projects"), ("POST", "/api/v1/chat"))
MODELS = (("claude-sonnet", 600.0, 250.0), ("gemini-pro", 200.0, 80.0))  # model, input and output tokens per request


@dataclass
class Settings:
    error_ratio: float = 0.0
    latency: float = 0.05
    rps: float = 20.0

    def check(self) -> None:
        if not 0.0 <= self.error_ratio <= 1.0:
            raise ValueError(f"error_ratio must be within [0, 1], got {self.error_ratio}")
        if self.latency < 0 or self.rps < 0:
            raise ValueError("latency and rps must not be negative")


@dataclass
class Counters:
    ok: float = 0.0
    errors: float = 0.0
    duration_sum: float = 0.0
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(BUCKETS))
    tokens: dict[tuple[str, str], float] = field(default_factory=dict)


class Exporter:
    """The exporter's state; every read first accrues the traffic since the last one."""

    def __init__(self, settings: Settings) -> None:
        settings.check()
        self._lock = threading.Lock()
        self.settings = settings
        self.counters = Counters()
        self.start_time = time.time()
        self._last = time.monotonic()

    def _accrue(self) -> None:
        now = time.monotonic()
        requests = self.settings.rps * (now - self._last)
        self._last = now
        errors = requests * self.settings.error_ratio
        c = self.counters
        c.errors += errors
        c.ok += requests - errors
        c.duration_sum += requests * self.settings.latency
        for i, bound in enumerate(BUCKETS):
            if self.settings.latency <= bound:
                c.buckets[i] += requests
        for model, tokens_in, tokens_out in MODELS:
            c.tokens[(model, "input")] = c.tokens.get((model, "input"), 0.0) + requests * tokens_in / len(MODELS)
            c.tokens[(model, "output")] = c.tokens.get((model, "output"), 0.0) + requests * tokens_out / len(MODELS)

    def update(self, changes: dict[str, Any]) -> Settings:
        unknown = set(changes) - {"error_ratio", "latency", "rps"}
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        with self._lock:
            self._accrue()
            new = Settings(**{**self.settings.__dict__, **{k: float(v) for k, v in changes.items()}})
            new.check()
            self.settings = new
            return new

    def restart(self) -> None:
        with self._lock:
            self.counters = Counters()
            self.start_time = time.time()
            self._last = time.monotonic()

    def render(self) -> str:
        with self._lock:
            self._accrue()
            c = self.counters
            total = c.ok + c.errors
            lines = [
                "# HELP http_requests_total Requests served, by route and status code.",
                "# TYPE http_requests_total counter",
            ]
            for method, route in ROUTES:
                share = 1.0 / len(ROUTES)
                labels = f'method="{method}",route="{route}"'
                lines.append(f'http_requests_total{{{labels},code="200"}} {c.ok * share!r}')
                lines.append(f'http_requests_total{{{labels},code="500"}} {c.errors * share!r}')
            lines += [
                "# HELP http_request_duration_seconds Request latency.",
                "# TYPE http_request_duration_seconds histogram",
            ]
            for bound, count in zip(BUCKETS, c.buckets, strict=True):
                lines.append(f'http_request_duration_seconds_bucket{{le="{bound}"}} {count!r}')
            lines += [
                f'http_request_duration_seconds_bucket{{le="+Inf"}} {total!r}',
                f"http_request_duration_seconds_sum {c.duration_sum!r}",
                f"http_request_duration_seconds_count {total!r}",
                "# HELP ai_tokens_total AI tokens consumed, by model and direction.",
                "# TYPE ai_tokens_total counter",
            ]
            for (model, kind), value in sorted(c.tokens.items()):
                lines.append(f'ai_tokens_total{{model="{model}",type="{kind}"}} {value!r}')
            start = self.start_time
        times = os.times()
        lines += [
            "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {start!r}",
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
            "# TYPE process_cpu_seconds_total counter",
            f"process_cpu_seconds_total {times.user + times.system!r}",
            "# HELP process_resident_memory_bytes Resident memory size in bytes.",
            "# TYPE process_resident_memory_bytes gauge",
            f"process_resident_memory_bytes {_resident_bytes()}",
        ]
        return "\n".join(lines) + "\n"


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def make_handler(exporter: Exporter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every second would flood the test output

        def _send(self, status: int, body: str, content_type: str = "application/json") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, exporter.render(), "text/plain; version=0.0.4; charset=utf-8")
            elif self.path == "/control":
                self._send(200, json.dumps(exporter.settings.__dict__))
            else:
                self._send(404, '{"error": "not found"}')

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b"{}"
            try:
                if self.path == "/control":
                    self._send(200, json.dumps(exporter.update(json.loads(body)).__dict__))
                elif self.path == "/restart":
                    exporter.restart()
                    self._send(200, '{"restarted": true}')
                else:
                    self._send(404, '{"error": "not found"}')
            except (ValueError, TypeError) as exc:
                self._send(400, json.dumps({"error": str(exc)}))

    return Handler


def serve(host: str, port: int, settings: Settings) -> ThreadingHTTPServer:
    """Bind the server (port 0 picks a free one); the caller runs ``serve_forever``."""
    exporter = Exporter(settings)
    server = ThreadingHTTPServer((host, port), make_handler(exporter))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--error-ratio", type=float, default=0.0)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--rps", type=float, default=20.0, help="requests per second")
    args = parser.parse_args(argv)
    server = serve(args.host, args.port, Settings(args.error_ratio, args.latency, args.rps))
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
