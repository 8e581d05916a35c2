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
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
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


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to a fixed address; the Host header stays the URL's host (curl's --resolve)."""

    def __init__(self, netloc: str, address: str, **kwargs: Any) -> None:
        super().__init__(netloc, **kwargs)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed address; SNI, the Host header and the certificate check keep the URL's host."""

    def __init__(self, netloc: str, address: str, context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(netloc, context=context, **kwargs)
        self.address = address
        self.tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


def tls_context(ca_path: str | None = None) -> ssl.SSLContext:
    """The system roots, or only the CA bundle at ``ca_path`` (a private CA, a staging ACME root)."""
    if ca_path:
        return ssl.create_default_context(cafile=ca_path)
    return ssl.create_default_context()


class _Client:
    """One keep-alive connection per target and worker, reopened after any failure.

    ``connect_address`` sends every request to that address instead of the URL host's DNS
    answer, as ``curl --resolve`` does; ``ca_path`` trusts only that CA bundle for HTTPS.
    """

    def __init__(self, timeout: float, connect_address: str | None = None, ca_path: str | None = None) -> None:
        self.timeout = timeout
        self.connect_address = connect_address
        self.ca_path = ca_path
        self.conns: dict[str, http.client.HTTPConnection] = {}

    def _new(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        if scheme == "https":
            context = tls_context(self.ca_path)
            if self.connect_address:
                return _PinnedHTTPSConnection(netloc, self.connect_address, context, timeout=self.timeout)
            return http.client.HTTPSConnection(netloc, timeout=self.timeout, context=context)
        if self.connect_address:
            return _PinnedHTTPConnection(netloc, self.connect_address, timeout=self.timeout)
        return http.client.HTTPConnection(netloc, timeout=self.timeout)

    def _conn(self, url: str) -> tuple[http.client.HTTPConnection, str]:
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        if key not in self.conns:
            self.conns[key] = self._new(parts.scheme, parts.netloc)
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
    targets: list[Target],
    requests: int,
    concurrency: int,
    max_seconds: float,
    timeout: float,
    connect_address: str | None = None,
    ca_path: str | None = None,
) -> tuple[list[Sample], float]:
    """Send ``requests`` requests round-robin over ``targets``; stop early at ``max_seconds``."""
    deadline = time.monotonic() + max_seconds
    lock = threading.Lock()
    counter = {"next": 0}
    samples: list[Sample] = []

    def worker() -> None:
        client = _Client(timeout, connect_address, ca_path)
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
