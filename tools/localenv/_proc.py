"""Process bookkeeping for the local environment.

Every process the local environment starts is tracked by a PID file under
``.local/run/<name>.pid`` and logs to ``.local/log/<name>.log``. ``stop`` only ever
signals a PID that this project wrote and whose command line still matches, so
``make local-down`` never touches somebody else's process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class LocalEnvError(RuntimeError):
    """A component could not be brought up; the message says which and why."""


def default_cache_dir() -> Path:
    """Persistent caches (Go modules and builds, base image tarballs) outside the checkout."""
    env = os.environ.get("THINKUS_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "thinkus-ops"


@dataclass
class Context:
    state_dir: Path = field(default_factory=lambda: Path(os.environ.get("THINKUS_LOCAL_DIR") or ROOT / ".local"))
    cache_dir: Path = field(default_factory=default_cache_dir)

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    def ensure(self) -> None:
        for d in (self.state_dir, self.run_dir, self.log_dir, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        # traversable (not listable) so services run under their own account (PostgreSQL)
        # reach their directories; secrets inside are 0600.
        os.chmod(self.state_dir, 0o711)

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def pid_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"


def say(msg: str) -> None:
    print(f"local-env: {msg}", flush=True)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_status(url: str, timeout: float = 3) -> int:
    """The HTTP status ``url`` answers with; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def require_binary(component: str, name: str, package: str) -> str:
    """The path of ``name`` on PATH, or an error telling how to get it."""
    found = shutil.which(name)
    if not found:
        raise LocalEnvError(f"{component}: {name} not found; run `make setup` (Debian's {package})")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (reaping it if it is our child)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def tracked_pid(ctx: Context, name: str) -> int | None:
    """The PID of our process ``name`` if it is still running, else None."""
    pidfile = ctx.pid_path(name)
    try:
        pid_s, _sep, marker = pidfile.read_text().partition("\n")
        pid = int(pid_s)
    except (OSError, ValueError):
        return None
    cmd = _cmdline(pid)
    if not cmd or (marker.strip() and marker.strip() not in cmd):
        return None
    return pid


def tail(path: Path, lines: int = 30) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(data[-lines:])


def fail(ctx: Context, name: str, why: str) -> LocalEnvError:
    log = ctx.log_path(name)
    return LocalEnvError(f"{name}: {why}\n--- last lines of {log} ---\n{tail(log)}")


def spawn(
    ctx: Context,
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ports: Sequence[int] = (),
    user: str | None = None,
) -> int:
    """Start ``argv`` detached, logging to .local/log/<name>.log, tracked by a PID file.

    A port already taken by a process that is not ours stops the bring-up with the
    component and the port named; nothing is killed. ``user`` runs the program as that
    account (for servers that refuse to run as root, such as PostgreSQL).
    """
    pid = tracked_pid(ctx, name)
    if pid:
        return pid
    for port in ports:
        if port_in_use(port):
            raise LocalEnvError(
                f"{name}: port {port} on 127.0.0.1 is already in use by a process this project did not start; "
                f"free it or choose another port (see inventories/local and tools/localenv)"
            )
    ctx.ensure()
    log = ctx.log_path(name).open("ab")
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    program = Path(argv[0]).name
    if user and os.geteuid() == 0:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *argv]
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=str(cwd) if cwd else None,
        start_new_session=True,
    )
    log.close()
    ctx.pid_path(name).write_text(f"{proc.pid}\n{program}\n")
    # Popen can return while the kernel is still finishing the exec, when
    # /proc/<pid>/cmdline reads empty and tracked_pid would call the process dead.
    deadline = time.monotonic() + 2.0
    while not _cmdline(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc.pid


def stop(ctx: Context, name: str, timeout: float = 20.0) -> bool:
    """Stop our process ``name`` (TERM, then KILL). Returns True if one was running."""
    pid = tracked_pid(ctx, name)
    ctx.pid_path(name).unlink(missing_ok=True)
    if not pid:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _cmdline(pid):
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def cmdline_differs(pid: int, argv: Sequence[str]) -> bool:
    """True when the running process ``pid`` was started with other arguments than ``argv``."""
    try:
        running = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return False
    return [a.decode(errors="replace") for a in running] != list(argv)


def start_process(
    ctx: Context,
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    ports: Sequence[int] = (),
) -> bool:
    """Start ``name`` unless it already runs with exactly ``argv`` (a changed command line, as
    after a newer checkout, restarts it). True when this call started it."""
    pid = tracked_pid(ctx, name)
    if pid and cmdline_differs(pid, argv):
        say(f"{name}: its command line changed, restarting it")
        stop(ctx, name)
    if tracked_pid(ctx, name):
        return False
    spawn(ctx, name, argv, env=env, ports=ports)
    say(f"started {name}")
    return True


def stop_processes(ctx: Context, names: Sequence[str]) -> None:
    """Stop ``names`` in reverse order (the last started goes first)."""
    for name in reversed(names):
        if stop(ctx, name):
            say(f"stopped {name}")


def component_main(
    name: str,
    up: Callable[[Context], object],
    down: Callable[[Context], None],
    status: Callable[[Context], tuple[bool, str]],
    argv: Sequence[str],
) -> int:
    """``python -m tools.localenv.<component> up|down|status``: one component on its own."""
    ctx = Context()
    action = argv[0] if argv else "status"
    if action == "up":
        up(ctx)
    elif action == "down":
        down(ctx)
    elif action == "status":
        ok, text = status(ctx)
        print(f"{name}: {'up' if ok else 'down'} {text}")
        return 0 if ok else 1
    else:
        print(f"usage: python -m tools.localenv.<component> up|down|status (got {action!r})", file=sys.stderr)
        return 2
    return 0


def wait_for(ctx: Context, name: str, check: Callable[[], bool], timeout: float = 60.0, interval: float = 0.25) -> None:
    """Poll ``check`` until it is true; fail with the log tail when the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        try:
            pid = int(ctx.pid_path(name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = 0
        if pid and not _alive(pid):
            raise fail(ctx, name, "exited during start-up")
        time.sleep(interval)
    raise fail(ctx, name, f"not ready after {timeout:.0f}s")


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input_: bytes | None = None,
    quiet: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run a short command; on failure raise with its output (never with secrets: pass those via env/stdin)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    res = subprocess.run(
        list(argv),
        env=full_env,
        cwd=str(cwd) if cwd else None,
        input=input_,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    if res.returncode != 0:
        out = res.stdout.decode(errors="replace")[-4000:]
        raise LocalEnvError(f"command failed ({res.returncode}): {' '.join(argv[:3])} ...\n{out}")
    if not quiet and os.environ.get("THINKUS_VERBOSE"):
        sys.stdout.write(res.stdout.decode(errors="replace"))
    return res


def run_with_progress(
    argv: Sequence[str],
    what: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    every: float = 30.0,
    unit: str = "lines",
) -> subprocess.CompletedProcess[bytes]:
    """Run a long command, saying every ``every`` seconds that ``what`` is still going.

    Each progress line gives the elapsed time and how many lines of output the command has
    written so far (``go build -v`` and ``go mod download -x`` write one per package), so a
    user watching a cold build sees it move. On failure raise with the output's tail.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    started = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        env=full_env,
        cwd=str(cwd) if cwd else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, b"")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    while True:
        try:
            proc.wait(timeout=every)
            break
        except subprocess.TimeoutExpired:
            say(f"  ... {what}: {time.monotonic() - started:.0f}s, {len(lines)} {unit} so far")
    reader.join()
    out = b"".join(lines)
    if proc.returncode != 0:
        tail_text = out.decode(errors="replace")[-4000:]
        raise LocalEnvError(f"command failed ({proc.returncode}): {' '.join(argv[:3])} ...\n{tail_text}")
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, None)
