# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Lease arithmetic of thinkus.ops.k8s_lease (coordination.k8s.io/v1), and keeping a held Lease.

Pure: the keeper talks to the API server only through the client it is given.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ansible_collections.thinkus.ops.plugins.module_utils._k8s import ObjectRef

UTC = datetime.timezone.utc  # noqa: UP017 - modules also run on Python < 3.11


def parse_time(value: str | None) -> datetime.datetime | None:
    """An RFC 3339 (Micro)Time from the API server, timezone-aware."""
    if not value:
        return None
    text = value.replace("Z", "+00:00")
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        # Python < 3.11 does not accept every fraction length: cut it to microseconds.
        head, _dot, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())[:6].ljust(6, "0")
        zone = rest[len(rest.rstrip("+-:0123456789")) :] if rest else ""
        offset = zone[zone.find("+") :] if "+" in zone else "+00:00"
        return datetime.datetime.fromisoformat(f"{head}.{digits}{offset}")


def micro_time(moment: datetime.datetime) -> str:
    """A MicroTime the API server accepts: 2026-01-17T10:00:00.123456Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaseState:
    holder: str | None
    acquired: datetime.datetime | None
    renewed: datetime.datetime | None
    duration: int
    transitions: int

    @classmethod
    def of(cls, lease: dict[str, Any] | None) -> LeaseState:
        spec = (lease or {}).get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or None,
            acquired=parse_time(spec.get("acquireTime")),
            renewed=parse_time(spec.get("renewTime")),
            duration=int(spec.get("leaseDurationSeconds") or 0),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def expires(self) -> datetime.datetime | None:
        start = self.renewed or self.acquired
        return start + datetime.timedelta(seconds=self.duration) if start else None

    def expired(self, now: datetime.datetime) -> bool:
        end = self.expires()
        return end is None or now >= end

    def free_for(self, identity: str, now: datetime.datetime) -> bool:
        """Whether ``identity`` may take (or renew) the lease now."""
        return self.holder is None or self.holder == identity or self.expired(now)

    def describe(self, now: datetime.datetime) -> str:
        if self.holder is None:
            return "not held"
        end = self.expires()
        since = f" since {micro_time(self.acquired)[:19]}Z" if self.acquired else ""
        if end is None:
            return f"held by {self.holder!r}{since}"
        left = (end - now).total_seconds()
        when = f"expires in {left:.0f}s" if left > 0 else f"expired {-left:.0f}s ago"
        return f"held by {self.holder!r}{since}, {when} ({micro_time(end)[:19]}Z) unless renewed"


def lease_body(
    name: str,
    namespace: str,
    identity: str,
    duration: int,
    now: datetime.datetime,
    previous: dict[str, Any] | None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Lease after ``identity`` takes or renews it (keeps resourceVersion for an update)."""
    state = LeaseState.of(previous)
    renewing = previous is not None and state.holder == identity
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if previous is not None:
        metadata["resourceVersion"] = previous["metadata"]["resourceVersion"]
        metadata["labels"] = (previous["metadata"].get("labels") or {}) | (labels or {})
    elif labels:
        metadata["labels"] = dict(labels)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": identity,
            "leaseDurationSeconds": duration,
            "acquireTime": micro_time(state.acquired) if renewing and state.acquired else micro_time(now),
            "renewTime": micro_time(now),
            "leaseTransitions": state.transitions + (0 if renewing or previous is None else 1),
        },
    }


# ----------------------------------------------------------------- keeping a held Lease
# A deploy renews its lock from inside the modules that do the long work (k8s_apply before
# each write, k8s_rollout on every status poll). The heartbeat is the module process itself:
# when the deploy is killed, its modules die with it and the Lease lapses after its duration.


class LockLost(Exception):
    """The lock cannot be shown to be ours: the run must stop before its next write."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient  # the API server did not answer: a later try may still succeed


def _proc_stat(pid: int) -> tuple[int, str]:
    """(parent pid, start time) of a process, from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[1]), fields[19]


def _runs_ansible(pid: int) -> bool:
    """Whether a process is an ansible command (ansible-playbook, or one of its forked workers)."""
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        argv = cmdline.read().split(b"\0")[:2]
    return any(os.path.basename(arg).startswith(b"ansible") for arg in argv)


class Lifeline:
    """The chain of processes from this module up to the ansible command that runs it.

    Ansible's workers run in a session of their own, so killing ansible-playbook (even its
    whole process group) leaves a running module alive, and with it any heartbeat. The
    keeper asks ``alive()`` before each renewal: once a process of the chain is gone or has
    been re-parented (its parent died), the run that holds the lock is dead and the module stops.
    Without /proc (not Linux), the chain is empty and always alive.
    """

    def __init__(self, pid: int | None = None) -> None:
        self.chain: list[tuple[int, int, str]] = []  # (pid, parent pid, start time)
        try:
            pid = pid or os.getpid()
            found = False
            for _depth in range(16):
                ppid, start = _proc_stat(pid)
                self.chain.append((pid, ppid, start))
                if ppid <= 1:
                    break
                parent_is_ansible = _runs_ansible(ppid)
                if found and not parent_is_ansible:
                    break  # pid is the ansible command itself: its own parent may come and go
                found = found or parent_is_ansible
                pid = ppid
            if not found:
                self.chain = self.chain[:1]  # not run by ansible: watch the direct parent only
        except (OSError, ValueError, IndexError):
            self.chain = []

    def alive(self) -> bool:
        for index, (pid, ppid, start) in enumerate(self.chain):
            try:
                now_ppid, now_start = _proc_stat(pid)
            except (OSError, ValueError, IndexError):
                return False
            last = index == len(self.chain) - 1 and len(self.chain) > 1
            if now_start != start or (now_ppid != ppid and not last):
                return False
        return True


class LeaseKeeper:
    """Renews one Lease held by ``identity``, at most every quarter of its duration.

    ``client`` needs ``get(ref)`` and ``request(method, path, body=...)`` like
    ``_k8s.K8sClient``; errors it raises must carry ``status`` (None: not answered).
    """

    def __init__(
        self,
        client: Any,
        ref: Any,
        identity: str,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime.datetime] | None = None,
        lifeline: Lifeline | None = None,
    ) -> None:
        self.lifeline = lifeline
        self.client = client
        self.ref = ref
        self.identity = identity
        self.clock = clock
        self.wall_clock = wall_clock or (lambda: datetime.datetime.now(UTC))
        self.duration = 0
        self.renewed_at: float | None = None  # clock() of the last renewal the server accepted
        self.renewals = 0

    @property
    def name(self) -> str:
        return f"the deploy lock Lease {self.ref.namespace}/{self.ref.name}"

    def due(self) -> bool:
        return self.renewed_at is None or self.clock() - self.renewed_at >= max(self.duration / 4, 1)

    def check_holder_alive(self) -> None:
        if self.lifeline is not None and not self.lifeline.alive():
            raise LockLost(
                f"the ansible run holding {self.name} has ended (killed?): stopped renewing it, and before "
                "any further change; it lapses after its duration"
            )

    def renew(self) -> None:
        """Renew now; raises LockLost naming why when the Lease is not (or no longer) ours."""
        self.check_holder_alive()
        if self.renewed_at is not None and self.clock() - self.renewed_at >= self.duration:
            raise LockLost(
                f"{self.name} was last renewed {self.clock() - self.renewed_at:.0f}s ago, past its "
                f"{self.duration}s duration: another deploy may have taken it; stopped before the next change"
            )
        path = f"/apis/coordination.k8s.io/v1/namespaces/{self.ref.namespace}/leases/{self.ref.name}"
        try:
            lease = self.client.get(self.ref)
            state = LeaseState.of(lease)
            if lease is None or state.holder != self.identity:
                now = self.wall_clock()
                held = (
                    "no longer exists (released or deleted by someone else)"
                    if lease is None
                    else f"is {state.describe(now)}, not by this run ({self.identity!r})"
                )
                raise LockLost(f"{self.name} {held}: stopped before the next change")
            self.duration = state.duration
            body = lease_body(
                self.ref.name, self.ref.namespace or "", self.identity, state.duration, self.wall_clock(), lease
            )
            self.client.request("PUT", path, body=body)
        except LockLost:
            raise
        except Exception as exc:
            status = getattr(exc, "status", "no status")
            if status == 409:
                raise LockLost(f"{self.name} was changed by someone else while renewing it: stopped") from None
            transient = status is None or (isinstance(status, int) and (status >= 500 or status == 429))
            raise LockLost(f"cannot renew {self.name}: {exc}", transient=transient) from None
        self.renewed_at = self.clock()
        self.renewals += 1

    def heartbeat(self, before_write: bool = False) -> str | None:
        """Renew when due. Before a write every failure stops the run; while only waiting, a
        server that does not answer is tried again on the next poll (returned as a warning)
        until the Lease's duration has passed since the last renewal."""
        self.check_holder_alive()  # on every call: a module of a killed run stops within one poll
        if not self.due():
            return None
        try:
            self.renew()
        except LockLost as exc:
            if before_write or not exc.transient:
                raise
            return str(exc)
        return None


def lock_argument_spec() -> dict[str, Any]:
    """Option ``lock`` of the modules that renew a deploy lock (doc fragment thinkus.ops.k8s.lock)."""
    return {
        "lock": {
            "type": "dict",
            "options": {
                "name": {"type": "str", "required": True},
                "namespace": {"type": "str", "required": True},
                "holder_identity": {"type": "str", "required": True},
            },
        }
    }


def keeper_of(params: dict[str, Any], client: Any, check_mode: bool) -> LeaseKeeper | None:
    """The keeper of the lock in ``params['lock']``, renewed once now; None without a lock or in check mode."""
    lock = params.get("lock")
    if not lock or check_mode:
        return None
    keeper = LeaseKeeper(
        client,
        ObjectRef("coordination.k8s.io/v1", "Lease", lock["name"], lock["namespace"]),
        lock["holder_identity"],
        lifeline=Lifeline(),
    )
    keeper.renew()
    return keeper
