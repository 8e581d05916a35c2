"""thinkus.ops.http_load against a real HTTP server on loopback."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.support.ansible import run_playbook

TARGET = Path(__file__).parent / "targets" / "http_load"


class _Handler(BaseHTTPRequestHandler):
    counter = itertools.count()
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        status = 200
        if self.path == "/flaky" and next(self.counter) % 2:
            status = 500
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    _Handler.seen = []
    _Handler.counter = itertools.count()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_http_load_measures_and_enforces_thresholds(tmp_path: Path, server: tuple[str, list[str]]) -> None:
    base_url, seen = server
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "---\n- hosts: localhost\n  connection: local\n  gather_facts: false\n"
        '  vars:\n    ansible_python_interpreter: "{{ ansible_playbook_python }}"\n  tasks:\n'
        f"    - ansible.builtin.include_tasks: {TARGET / 'tasks' / 'main.yml'}\n"
    )
    result = run_playbook(playbook, extra_vars={"http_load_base_url": base_url})
    assert result.rc == 0, result.output[-3000:]
    # check mode sent nothing; the three real runs sent exactly what they were bounded to
    assert seen.count("/fast") == 220
    assert seen.count("/flaky") == 40
