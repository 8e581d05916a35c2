# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A bounded HTTP load generator and its statistics (private to thinkus.ops).

Bounded in both request count and wall time, so a load test always stops by itself.
The statistics are pure functions, unit-tested without any network.
"""

from __future__ import annotations

import http.client
import math
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Target:
    name: str
    url: str
    method: str = "GET"
    expected_status: tuple[int, ...] = (200,)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Sample:
    target: str
    seconds: float
    ok: bool
    status: int  # 0 when no HTTP answer came back (connection error, timeout)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (the value below which ``pct`` percent of samples fall)."""
    if not values:
        return 0.0
    if not 0 < pct <= 100:
        raise ValueError("pct must be in (0, 100]")
    ordered = sorted(values)
    rank = math.ceil(pct / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def summarise(samples: list[Sample], wall_seconds: float) -> dict[str, float | int]:
    latencies_ms = [s.seconds * 1000 for s in samples]
    errors = sum(1 for s in samples if not s.ok)
    total = len(samples)
    return {
        "requests": total,
        "errors": errors,
        "error_rate_pct": round(100.0 * errors / total, 3) if total else 0.0,
        "p50_ms": round(percentile(latencies_ms, 50), 2),
        "p95_ms": round(percentile(latencies_ms, 95), 2),
        "p99_ms": round(percentile(latencies_ms, 99), 2),
        "max_ms": round(max(latencies_ms), 2) if latencies_ms else 0.0,
        "rps": round(total / wall_seconds, 1) if wall_seconds > 0 else 0.0,
    }


def threshold_breaches(
    stats: dict[str, float | int], max_p99_ms: float | None, max_error_rate_pct: float | None, scope: str
) -> list[str]:
    breaches = []
    if max_p99_ms is not None and stats["p99_ms"] > max_p99_ms:
        breaches.append(f"{scope}: p99 {stats['p99_ms']} ms exceeds the threshold of {max_p99_ms} ms")
    if max_error_rate_pct is not None and stats["error_rate_pct"] > max_error_rate_pct:
        breaches.append(
            f"{scope}: error rate {stats['error_rate_pct']}% exceeds the threshold of {max_error_rate_pct}%"
        )
    return breaches


class _Client:
    """One keep-alive connection per target and worker, reopened after any failure."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.conns: dict[str, http.client.HTTPConnection] = {}

    def _conn(self, url: str) -> tuple[http.client.HTTPConnection, str]:
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        if key not in self.conns:
            if parts.scheme == "https":
                self.conns[key] = http.client.HTTPSConnection(
                    parts.netloc, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                self.conns[key] = http.client.HTTPConnection(parts.netloc, timeout=self.timeout)
        path = parts.path or "/"
        return self.conns[key], path + (f"?{parts.query}" if parts.query else "")

    def request(self, target: Target) -> Sample:
        conn, path = self._conn(target.url)
        start = time.monotonic()
        try:
            conn.request(target.method, path, headers=target.headers)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException):  # refused, reset, timed out, bad answer
            conn.close()
            self.conns = {k: c for k, c in self.conns.items() if c is not conn}
            status = 0
        return Sample(target.name, time.monotonic() - start, status in target.expected_status, status)

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


def run_load(
    targets: list[Target], requests: int, concurrency: int, max_seconds: float, timeout: float
) -> tuple[list[Sample], float]:
    """Send ``requests`` requests round-robin over ``targets``; stop early at ``max_seconds``."""
    deadline = time.monotonic() + max_seconds
    lock = threading.Lock()
    counter = {"next": 0}
    samples: list[Sample] = []

    def worker() -> None:
        client = _Client(timeout)
        try:
            while time.monotonic() < deadline:
                with lock:
                    i = counter["next"]
                    if i >= requests:
                        return
                    counter["next"] = i + 1
                sample = client.request(targets[i % len(targets)])
                with lock:
                    samples.append(sample)
        finally:
            client.close()

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for _worker in range(concurrency):
            pool.submit(worker)
    return samples, time.monotonic() - start
