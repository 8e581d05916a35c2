# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Lease arithmetic of thinkus.ops.k8s_lease (coordination.k8s.io/v1), without a cluster."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

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
