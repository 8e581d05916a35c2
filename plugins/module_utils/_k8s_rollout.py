# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Rollout status, revisions and failure reasons of Deployments (thinkus.ops.k8s_rollout).

Pure functions over the JSON objects the API server returns, unit-tested without a
cluster; the module wires them to requests.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH_LABEL = "pod-template-hash"


@dataclass
class Progress:
    done: bool
    message: str
    failed: bool = False  # the controller itself gave up (ProgressDeadlineExceeded)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def revision_of(obj: dict[str, Any] | None) -> int | None:
    value = (((obj or {}).get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def deployment_progress(deployment: dict[str, Any]) -> Progress:
    """Whether a Deployment has fully rolled out, and if not, what it waits for."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = _int(spec.get("replicas", 1))
    if _int(status.get("observedGeneration")) < _int(meta.get("generation")):
        return Progress(False, "the controller has not observed the latest generation yet")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return Progress(False, f"progress deadline exceeded: {condition.get('message', '')}".strip(), True)
    updated = _int(status.get("updatedReplicas"))
    total = _int(status.get("replicas"))
    available = _int(status.get("availableReplicas"))
    if updated < wanted:
        return Progress(False, f"{updated} of {wanted} replicas updated")
    if total > updated:
        return Progress(False, f"{total - updated} old replicas pending termination")
    if available < wanted:
        return Progress(False, f"{available} of {wanted} updated replicas available")
    return Progress(True, f"{available} of {wanted} replicas available")


def owned_replicasets(deployment: dict[str, Any], replicasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ReplicaSets the Deployment controls, oldest revision first."""
    uid = (deployment.get("metadata") or {}).get("uid")
    owned = [
        rs
        for rs in replicasets
        if any(
            o.get("uid") == uid and o.get("controller") for o in (rs.get("metadata") or {}).get("ownerReferences") or []
        )
    ]
    return sorted(owned, key=lambda rs: revision_of(rs) or 0)


def replicaset_for_revision(replicasets: list[dict[str, Any]], revision: int) -> dict[str, Any] | None:
    for rs in replicasets:
        if revision_of(rs) == revision:
            return rs
    return None


def previous_revision(replicasets: list[dict[str, Any]], current: int | None) -> int | None:
    """The highest revision below the current one (what C(kubectl rollout undo) goes back to)."""
    revisions = sorted({r for r in (revision_of(rs) for rs in replicasets) if r is not None})
    below = [r for r in revisions if current is None or r < current]
    return below[-1] if below else None


def template_of(replicaset: dict[str, Any]) -> dict[str, Any]:
    """A ReplicaSet's pod template as a Deployment template (without the hash label)."""
    template = copy.deepcopy((replicaset.get("spec") or {}).get("template") or {})
    labels = (template.get("metadata") or {}).get("labels") or {}
    labels.pop(TEMPLATE_HASH_LABEL, None)
    return template


def same_template(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def strip(t: dict[str, Any]) -> dict[str, Any]:
        t = copy.deepcopy(t)
        ((t.get("metadata") or {}).get("labels") or {}).pop(TEMPLATE_HASH_LABEL, None)
        (t.get("metadata") or {}).pop("creationTimestamp", None)
        return t

    return strip(a) == strip(b)


def images_of(template: dict[str, Any]) -> list[str]:
    return [c.get("image", "") for c in ((template.get("spec") or {}).get("containers") or [])]


def selector_string(deployment: dict[str, Any]) -> str:
    labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def pod_problems(pods: list[dict[str, Any]], limit: int = 3) -> list[str]:
    """Why pods are not Ready, from their conditions and container states, deduplicated."""
    reasons: dict[str, list[str]] = {}
    for pod in pods:
        status = pod.get("status") or {}
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        ready = conditions.get("Ready")
        if ready and ready.get("status") == "True":
            continue
        parts = []
        scheduled = conditions.get("PodScheduled")
        if scheduled and scheduled.get("status") == "False":
            parts.append(f"PodScheduled=False {scheduled.get('reason', '')}: {scheduled.get('message', '')}".strip())
        elif ready:
            parts.append(f"Ready=False {ready.get('reason', '')}: {ready.get('message', '')}".strip().rstrip(":"))
        else:
            parts.append(f"phase {status.get('phase', 'Pending')}, no Ready condition yet")
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting")
            if waiting:
                why = f"{waiting.get('reason', '')} {waiting.get('message', '')}".strip()
                parts.append(f"container {cs.get('name')} waiting: {why}")
            if _int(cs.get("restartCount")) > 0:
                parts.append(f"container {cs.get('name')} restarted {cs.get('restartCount')} times")
            last = (cs.get("lastState") or {}).get("terminated")
            if last:
                parts.append(
                    f"container {cs.get('name')} last terminated: {last.get('reason', '?')} "
                    f"(exit code {last.get('exitCode', '?')})"
                )
        reasons.setdefault("; ".join(parts), []).append((pod.get("metadata") or {}).get("name", "?"))
    out = []
    for reason, names in list(reasons.items())[:limit]:
        shown = ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")
        out.append(f"pod {shown}: {reason}")
    return out


def crashed_containers(pods: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(pod, container) of every container that has terminated at least once, first ones first."""
    out = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if (cs.get("lastState") or {}).get("terminated"):
                out.append(((pod.get("metadata") or {}).get("name", "?"), cs.get("name", "?")))
    return out


def log_excerpt(text: str, lines: int = 5, width: int = 200) -> str:
    """The last ``lines`` lines of a log, each cut to ``width`` characters, joined by " | "."""
    kept = [line.rstrip()[:width] for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)


def warning_events(events: list[dict[str, Any]], names: set[str], limit: int = 3) -> list[str]:
    """The latest Warning events about the named objects, deduplicated by reason and message."""
    picked: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        if event.get("type") != "Warning":
            continue
        involved = (event.get("involvedObject") or {}).get("name")
        if involved not in names:
            continue
        key = (event.get("reason", ""), event.get("message", ""))
        picked[key] = event
    ordered = sorted(picked.values(), key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "", reverse=True)
    return [
        f"{(e.get('involvedObject') or {}).get('kind')} {(e.get('involvedObject') or {}).get('name')}: "
        f"{e.get('reason')}: {e.get('message', '').strip()}"
        for e in ordered[:limit]
    ]
