# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Run ansible-playbook from the repository's virtualenv, the way an operator would.

Generic on purpose: nothing here knows about a particular module or service.

    result = run_playbook("playbooks/site.yml", extra_vars={"x": 1}, check=True, json_output=True)
    assert result.rc == 0, result.output
    assert result.task("Deploy")["changed"] is False

Extra vars go through a temporary JSON file (``-e @file``), never the command line, so
secrets in them do not show in ``ps``. The file is deleted when the run ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
JSON_CALLBACK = "ansible.posix.json"


def _venv_bin(name: str) -> str:
    """The tool next to the running interpreter (the repo's .venv under pytest), else PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    candidate = REPO_ROOT / ".venv" / "bin" / name
    return str(candidate) if candidate.exists() else name


@dataclass
class PlaybookResult:
    rc: int
    output: str  # stdout and stderr, interleaved as the process wrote them
    command: list[str]
    tasks: list[dict[str, Any]] = field(default_factory=list)  # json callback only, one entry per task and host
    stats: dict[str, Any] = field(default_factory=dict)

    def task(self, name: str, host: str | None = None) -> dict[str, Any]:
        """The result of the last task with this name (on ``host``, or the only host)."""
        found = [t for t in self.tasks if t["task"] == name and (host is None or t["host"] == host)]
        if not found:
            known = sorted({t["task"] for t in self.tasks})
            raise KeyError(f"no result for task {name!r}; tasks run: {known}")
        return found[-1]["result"]

    def failed_tasks(self) -> list[dict[str, Any]]:
        return [t for t in self.tasks if t["result"].get("failed") and not t["result"].get("ignore_errors")]


def _parse_json_output(stdout: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    start = stdout.find("{\n")
    if start < 0:
        return [], {}
    try:
        document = json.loads(stdout[start:])
    except ValueError:
        # Something printed after the JSON document (a warning): cut at its last closing brace.
        end = stdout.rfind("\n}")
        try:
            document = json.loads(stdout[start : end + 2])
        except ValueError:
            return [], {}
    tasks = []
    for play in document.get("plays", []):
        for task in play.get("tasks", []):
            for host, result in task.get("hosts", {}).items():
                tasks.append({"task": task["task"]["name"], "host": host, "result": result})
    return tasks, document.get("stats", {})


def run_playbook(
    playbook: str | os.PathLike[str],
    extra_vars: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    check: bool = False,
    diff: bool = False,
    verbosity: int = 0,
    json_output: bool = False,
    inventory: str | None = None,
    tags: list[str] | None = None,
    args: list[str] | None = None,
    timeout: float = 600,
    cwd: str | os.PathLike[str] | None = None,
) -> PlaybookResult:
    """Run one playbook; ``playbook`` may be relative to the repository root.

    ``env`` is added to the current environment. ``inventory`` defaults to an implicit
    localhost (``localhost,``) so tests need no inventory file. With ``json_output`` the
    ``ansible.posix.json`` callback is used and per-task results are parsed; keep it off
    when asserting on what an operator would see on the terminal.
    """
    root = Path(cwd) if cwd else REPO_ROOT
    command = [_venv_bin("ansible-playbook"), str(playbook), "-i", inventory or "localhost,"]
    if check:
        command.append("--check")
    if diff:
        command.append("--diff")
    if verbosity:
        command.append("-" + "v" * verbosity)
    if tags:
        command += ["--tags", ",".join(tags)]
    command += list(args or [])

    run_env = dict(os.environ)
    run_env.update(
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        PYTHONUNBUFFERED="1",
    )
    if json_output:
        run_env["ANSIBLE_STDOUT_CALLBACK"] = JSON_CALLBACK
    run_env.update(env or {})

    vars_file = None
    try:
        if extra_vars:
            handle, vars_file = tempfile.mkstemp(prefix="extra-vars-", suffix=".json")
            with os.fdopen(handle, "w") as out:
                json.dump(extra_vars, out)
            command += ["-e", f"@{vars_file}"]
        proc = subprocess.run(
            command,
            cwd=root,
            env=run_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        if vars_file:
            os.unlink(vars_file)
    tasks, stats = _parse_json_output(proc.stdout) if json_output else ([], {})
    return PlaybookResult(rc=proc.returncode, output=proc.stdout, command=command, tasks=tasks, stats=stats)


class RunningPlaybook:
    """An ansible-playbook started in a process group of its own, to be killed mid-run.

    Its output is collected line by line on a thread; ``wait_for`` blocks until a line
    contains a text (a task banner, say). ``kill`` sends SIGKILL to the whole group: the
    playbook, its workers and the modules they run, as ``kill -9 -<pgid>`` would.
    """

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, vars_file: str | None) -> None:
        self.command = command
        self.vars_file = vars_file
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.pgid = self.proc.pid
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    @property
    def output(self) -> str:
        with self._seen:
            return "".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._seen:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise TimeoutError(f"{text!r} not seen in the output:\n{''.join(self.lines)}")
                self._seen.wait(min(left, 0.5))

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        return True

    def survivors(self) -> list[int]:
        """Processes of this run outside its process group: Ansible's workers call setsid(), so
        they (and the module each one runs) outlive a killed group until they notice it."""
        if not self.vars_file:
            return []
        found = []
        marker = self.vars_file.encode()
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if marker in (proc / "cmdline").read_bytes():
                        found.append(int(proc.name))
                except OSError:
                    continue
        return found

    def kill(self, timeout: float = 10) -> None:
        """SIGKILL the whole process group; returns once no process of it is left (the workers
        that escaped it are left to notice on their own: see ``survivors``)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.1)  # orphaned children are reaped by init

    def finish(self, timeout: float = 600) -> int:
        """Wait for the run to end by itself; returns its exit code (output complete)."""
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return rc

    def close(self) -> None:
        if self.vars_file and os.path.exists(self.vars_file):
            os.unlink(self.vars_file)


def start_playbook(
    playbook: str | os.PathLike[str],
    extra_vars: dict[str, Any] | None = None,
    inventory: str | None = None,
    env: dict[str, str] | None = None,
) -> RunningPlaybook:
    """Start one playbook in the background (same conventions as ``run_playbook``)."""
    command = [_venv_bin("ansible-playbook"), str(playbook), "-i", inventory or "localhost,"]
    run_env = dict(os.environ)
    run_env.update(
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        PYTHONUNBUFFERED="1",
    )
    run_env.update(env or {})
    vars_file = None
    if extra_vars:
        handle, vars_file = tempfile.mkstemp(prefix="extra-vars-", suffix=".json")
        with os.fdopen(handle, "w") as out:
            json.dump(extra_vars, out)
        command += ["-e", f"@{vars_file}"]
    return RunningPlaybook(command, run_env, REPO_ROOT, vars_file)
