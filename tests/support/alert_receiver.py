# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A webhook receiver that records what Alertmanager delivers, for tests.

    with AlertReceiver() as receiver:          # listens on 127.0.0.1:<free port> (or host=...)
        url = receiver.url("/pager")           # give this to Alertmanager
        found = receiver.wait_for(lambda n: n.alert("ThinkusHighErrorRate"), timeout=30)

Each POST is kept as a :class:`Notification`: the path it came to, when it arrived
(``time.time()``), its headers and the Alertmanager webhook payload (version 4). The
receiver answers 200 to everything, so Alertmanager never retries and a notification
arrives exactly once per group flush.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Notification:
    path: str
    received_at: float
    headers: dict[str, str]
    payload: dict[str, Any]

    def alerts(self, status: str | None = "firing") -> list[dict[str, Any]]:
        return [a for a in self.payload.get("alerts", []) if status is None or a.get("status") == status]

    def alert(self, name: str, **labels: str) -> dict[str, Any] | None:
        """The first firing alert called ``name`` whose labels include ``labels``."""
        for candidate in self.alerts():
            found = candidate.get("labels", {})
            if found.get("alertname") == name and all(found.get(k) == v for k, v in labels.items()):
                return candidate
        return None


class AlertReceiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._notifications: list[Notification] = []
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body or b"{}")
                except ValueError:
                    payload = {"unparsed": body.decode(errors="replace")}
                note = Notification(self.path, arrived, {k.lower(): v for k, v in self.headers.items()}, payload)
                with receiver._arrived:
                    receiver._notifications.append(note)
                    receiver._arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"http://{self._host}:{self.port}{path}"

    @property
    def notifications(self) -> list[Notification]:
        with self._lock:
            return list(self._notifications)

    def wait_for(self, predicate: Callable[[Notification], Any], timeout: float) -> Notification | None:
        """The first notification (already here or arriving within ``timeout`` s) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for note in self._notifications:
                    if predicate(note):
                        return note
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._arrived.wait(remaining)

    def start(self) -> AlertReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> AlertReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pager_and_chat_vars(receiver: AlertReceiver, tokens: dict[str, str]) -> dict[str, Any]:
    """The monitoring role's routing to ``receiver``: critical to /pager, warning to /chat (each
    with its Bearer token from ``tokens``), anything else nowhere."""
    return {
        "monitoring_alertmanager_receivers": [
            {"name": "pager", "type": "webhook", "url": receiver.url("/pager"), "bearer_token": tokens["pager"]},
            {"name": "chat", "type": "webhook", "url": receiver.url("/chat"), "bearer_token": tokens["chat"]},
            {"name": "blackhole", "type": "none"},
        ],
        "monitoring_alertmanager_default_receiver": "blackhole",
        "monitoring_alertmanager_critical_receiver": "pager",
        "monitoring_alertmanager_warning_receiver": "chat",
    }


def iter_alerts(
    notifications: list[Notification], status: str | None = "firing"
) -> Iterator[tuple[Notification, dict]]:
    for note in notifications:
        for alert in note.alerts(status):
            yield note, alert
