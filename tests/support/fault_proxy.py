# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A throwaway HTTP proxy in front of a real local service, that can break in the middle of a run.

Generic on purpose: it forwards every request unchanged (headers included, so signed requests
such as S3's SigV4 stay valid) to one upstream, until told to fail:

    with FaultProxy("127.0.0.1", 19000) as proxy:
        proxy.fail(503, method="PUT", skip=1)   # the second PUT on, answer 503
        proxy.go_down(method="PUT", skip=1)     # or: drop the connection without an answer
        ... point the client at proxy.url ...
        proxy.heal()
        assert [r for r in proxy.log if r["status"] == 503]

It listens on a free loopback port and serves from a thread; the log holds method, path and
status of every request, never bodies or headers.
"""

from __future__ import annotations

import http.client
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Rule:
    status: int | None  # None: drop the connection (the service went down)
    method: str | None
    path: str | None
    skip: int

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method != method:
            return False
        return not self.path or re.search(self.path, path) is not None


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rules: list[Rule] = []
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes | None:
                """The request body, de-chunked (Docker streams blob uploads chunked)."""
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _handle(self) -> None:
                body = self._body()
                rule = proxy._take(self.command, self.path)
                if rule is not None and rule.status is None:
                    proxy._record(self.command, self.path, None)
                    self.close_connection = True
                    self.connection.close()
                    return
                if rule is not None:
                    payload = b"<Error><Code>InternalError</Code><Message>injected fault</Message></Error>"
                    self.send_response(rule.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    proxy._record(self.command, self.path, rule.status)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if body is not None:
                    headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                proxy._record(self.command, self.path, answer.status)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail(self, status: int, method: str | None = None, path: str | None = None, skip: int = 0) -> None:
        """From the (skip+1)th matching request on, answer ``status`` until healed."""
        with self.lock:
            self.rules.append(Rule(status, method, path, skip))

    def go_down(self, method: str | None = None, path: str | None = None, skip: int = 0) -> None:
        """From the (skip+1)th matching request on, drop the connection without an answer."""
        with self.lock:
            self.rules.append(Rule(None, method, path, skip))

    def heal(self) -> None:
        with self.lock:
            self.rules.clear()

    def _take(self, method: str, path: str) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    if rule.skip > 0:
                        rule.skip -= 1
                        return None
                    return rule
        return None

    def _record(self, method: str, path: str, status: int | None) -> None:
        with self.lock:
            self.log.append({"method": method, "path": path.split("?", 1)[0], "status": status})

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
