"""The local environment's process bookkeeping: it never touches what it did not start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.localenv._proc import Context, LocalEnvError, spawn, stop, tracked_pid, wait_for


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    c = Context(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    c.ensure()
    return c


def test_a_port_taken_by_someone_else_stops_with_component_and_port(ctx: Context) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(LocalEnvError, match=rf"^demo: port {port} on 127.0.0.1 is already in use"):
            spawn(ctx, "demo", [sys.executable, "-c", "import time; time.sleep(30)"], ports=[port])
        assert not ctx.pid_path("demo").exists()


def test_spawn_tracks_and_stop_ends_only_our_process(ctx: Context) -> None:
    pid = spawn(ctx, "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    assert tracked_pid(ctx, "sleeper") == pid
    assert spawn(ctx, "sleeper", [sys.executable, "-c", "pass"]) == pid  # idempotent
    assert stop(ctx, "sleeper") is True
    assert tracked_pid(ctx, "sleeper") is None
    assert stop(ctx, "sleeper") is False


def test_a_recycled_pid_is_not_ours(ctx: Context) -> None:
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        # a PID file naming a process whose command line is not what we started
        ctx.pid_path("ghost").write_text(f"{stranger.pid}\nredis-server\n")
        assert tracked_pid(ctx, "ghost") is None
        assert stop(ctx, "ghost") is False
        time.sleep(0.1)
        assert stranger.poll() is None, "stop() signalled a process this project did not start"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_component_that_dies_reports_its_log(ctx: Context) -> None:
    spawn(ctx, "crasher", [sys.executable, "-c", "import sys; print('bad config line 3'); sys.exit(3)"])
    with pytest.raises(LocalEnvError) as err:
        wait_for(ctx, "crasher", lambda: False, timeout=10)
    assert "crasher: exited during start-up" in str(err.value)
    assert "bad config line 3" in str(err.value)
    assert str(ctx.log_path("crasher")) in str(err.value)


def test_state_dir_is_traversable_but_not_listable(ctx: Context) -> None:
    assert oct(os.stat(ctx.state_dir).st_mode & 0o777) == oct(0o711)
