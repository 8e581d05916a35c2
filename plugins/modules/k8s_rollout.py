#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: k8s_rollout
short_description: Wait for Deployments to roll out, and roll them back to a previous revision
version_added: 0.1.0
description:
  - With O(state=rolled_out), waits until every Deployment of O(deployments) has rolled out, that is
    C(status.observedGeneration >= metadata.generation), C(updatedReplicas), C(replicas) and
    C(availableReplicas) all equal to C(spec.replicas).
  - When one does not within O(timeout) (or its progress deadline is exceeded), the Deployments named in
    O(rollback_revisions) are put back on the revision given for each, the module waits for them to be
    available again, then fails with a message naming each failed Deployment, why its pods are not
    ready (pod conditions, container states, Warning events) and the revision it went back to.
  - With O(lock), the deploy lock is renewed on every status poll while waiting (a heartbeat that lives
    exactly as long as this module), and renewed or confirmed right before a rollback changes anything.
  - With O(state=rolled_back), puts the Deployments back on a revision (the previous one by default,
    like C(kubectl rollout undo)) and waits for them.
  - A rollback replaces C(spec.template) with the template of the ReplicaSet of that revision, so the
    controller scales that ReplicaSet up again.
author:
  - Thinkus platform team (@thinkus-ai)
extends_documentation_fragment:
  - thinkus.ops.k8s
  - thinkus.ops.attributes
  - thinkus.ops.k8s.action_group
  - thinkus.ops.k8s.lock
attributes:
  check_mode:
    support: full
    details:
      - With O(state=rolled_out), reports the current rollout status once, without waiting.
      - With O(state=rolled_back), sends the rollback with C(dryRun=All) and reports which Deployments would
        go back to which revision, without waiting.
  diff_mode:
    support: full
    details:
      - With O(state=rolled_back), the revision and images before and after, per Deployment.
  idempotent:
    support: partial
    details:
      - O(state=rolled_out) never changes anything unless a rollback is needed.
      - O(state=rolled_back) with a O(revision) is idempotent; without one it goes back one revision on
        every run, as C(kubectl rollout undo) does.
options:
  namespace:
    description:
      - Namespace of the Deployments.
    type: str
    required: true
  deployments:
    description:
      - Names of the Deployments to wait for, or to roll back.
    type: list
    elements: str
    required: true
  state:
    description:
      - V(rolled_out) waits for the rollout (and rolls back on failure, see O(rollback_revisions)).
      - V(rolled_back) rolls the Deployments back, then waits for them.
    type: str
    choices: [rolled_out, rolled_back]
    default: rolled_out
  timeout:
    description:
      - How long in seconds to wait for the rollout, and again for a rollback to become available.
    type: int
    default: 300
  redact:
    description:
      - Values never to show. A failure message quotes the last lines of a crashed container's log, where an
        application may print its connection string or key, so every occurrence of these values (the
        Secrets the pods get) is masked in everything the module returns.
    type: list
    elements: str
    default: []
  rollback_revisions:
    description:
      - Deployment name to revision.
      - With O(state=rolled_out), the Deployments to roll back, and where to, when the rollout fails. Pass the
        Deployments your deploy changed with their revision before it (C(revision_before) of
        M(thinkus.ops.k8s_apply)). Deployments not listed are never rolled back.
      - With O(state=rolled_back), the revision per Deployment; those not listed go to O(revision) or to the
        previous revision.
    type: dict
    default: {}
  revision:
    description:
      - With O(state=rolled_back), the revision the Deployments not in O(rollback_revisions) go back to.
        Defaults to each one's previous revision.
    type: int
  field_manager:
    description:
      - Field manager recorded for the rollback's change of C(spec.template).
    type: str
    default: thinkus-ops-rollback
  poll_interval:
    description:
      - Seconds between two status reads while waiting.
    type: float
    default: 1
seealso:
  - module: thinkus.ops.k8s_apply
  - name: Deployment status
    description: What observedGeneration, updatedReplicas and availableReplicas mean.
    link: https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#deployment-status
"""

EXAMPLES = r"""
- name: Wait for the backend, rolling back what this deploy changed on failure
  thinkus.ops.k8s_rollout:
    namespace: thinkus
    deployments: [go-orchestrator, py-ai-engine, worker]
    timeout: 300
    rollback_revisions:
      py-ai-engine: 4
    lock:
      name: thinkus-deploy
      namespace: thinkus
      holder_identity: "{{ __lock.holder_identity }}"

- name: Put go-orchestrator back on revision 3
  thinkus.ops.k8s_rollout:
    namespace: thinkus
    deployments: [go-orchestrator]
    state: rolled_back
    revision: 3
"""

RETURN = r"""
deployments:
  description: One entry per Deployment of O(deployments).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The Deployment's name.
      type: str
      sample: py-ai-engine
    status:
      description: V(rolled_out), V(failed), V(rolled_back), V(rollback_failed), V(pending) (check mode) or
        V(unchanged) (already on the revision asked for).
      type: str
      sample: rolled_back
    message:
      description: What the rollout reached, or why it failed.
      type: str
      sample: "3 of 3 replicas available"
    revision:
      description: The Deployment's revision when the module ended.
      type: int
      sample: 5
    rolled_back_to:
      description: The revision the Deployment was put back on, if it was.
      type: int
      sample: 3
    replicaset:
      description: The ReplicaSet of the revision rolled back to.
      type: str
      sample: py-ai-engine-5d8f7c9b6
"""

import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.thinkus.ops.plugins.module_utils._k8s import (
    K8sClient,
    K8sError,
    ObjectRef,
    is_transient,
    k8s_argument_spec,
)
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_lease import (
    LeaseKeeper,
    LockLost,
    keeper_of,
    lock_argument_spec,
)
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_rollout import (
    Progress,
    crashed_containers,
    deployment_progress,
    images_of,
    log_excerpt,
    owned_replicasets,
    pod_problems,
    previous_revision,
    replicaset_for_revision,
    revision_of,
    same_template,
    selector_string,
    template_of,
    warning_events,
)


class Rollout:
    def __init__(self, module: AnsibleModule, client: K8sClient, keeper: LeaseKeeper | None = None) -> None:
        self.module = module
        self.client = client
        self.namespace: str = module.params["namespace"]
        self.keeper = keeper
        self.lock_warnings: set[str] = set()

    def heartbeat(self, before_write: bool = False) -> None:
        """Renew the deploy lock when due; LockLost stops the module before its next change."""
        if self.keeper is None:
            return
        warning = self.keeper.heartbeat(before_write=before_write)
        if warning:
            self.warn_once(f"{warning}; trying again on the next poll")

    def warn_once(self, warning: str) -> None:
        if warning not in self.lock_warnings:
            self.lock_warnings.add(warning)
            self.module.warn(warning)

    def get(self, name: str) -> dict[str, Any]:
        obj = self.client.get(ObjectRef("apps/v1", "Deployment", name, self.namespace))
        if obj is None:
            raise K8sError(f"Deployment {self.namespace}/{name} does not exist")
        return obj

    def wait(self, names: list[str], timeout: float) -> dict[str, tuple[dict[str, Any], Progress]]:
        """Poll until all are rolled out, one has failed for good, or the timeout passes.

        An API server that does not answer for a while (restarted, overloaded) is polled again
        until the timeout: the rollout goes on without it. Past the timeout the module fails
        naming the API server, without touching the Deployments it could not see.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                state = {name: self._progress(name) for name in names}
            except K8sError as exc:
                if not is_transient(exc) or time.monotonic() >= deadline:
                    raise
                self.warn_once(f"{exc}; polling again until the rollout timeout ({timeout:.0f}s)")
                self.heartbeat()  # a killed run, or a lock past its duration, still stops the wait
                time.sleep(min(self.module.params["poll_interval"], max(deadline - time.monotonic(), 0.05)))
                continue
            pending = [n for n, (_obj, p) in state.items() if not p.done]
            if not pending or any(p.failed for _obj, p in state.values()) or time.monotonic() >= deadline:
                return state
            time.sleep(min(self.module.params["poll_interval"], max(deadline - time.monotonic(), 0.05)))

    def _progress(self, name: str) -> tuple[dict[str, Any], Progress]:
        obj = self.get(name)
        self.heartbeat()
        return obj, deployment_progress(obj)

    def reason(self, deployment: dict[str, Any], progress: Progress, timeout: float) -> str:
        """Why a rollout did not finish: its progress, pod conditions, Warning events."""
        name = deployment["metadata"]["name"]
        replicasets = owned_replicasets(deployment, self.client.list("apps/v1", "ReplicaSet", self.namespace))
        newest = replicaset_for_revision(replicasets, revision_of(deployment) or -1)
        pods: list[dict[str, Any]] = []
        names = {name}
        if newest is not None:
            names.add(newest["metadata"]["name"])
            pod_hash = (newest["metadata"].get("labels") or {}).get("pod-template-hash")
            selector = selector_string(deployment) + (f",pod-template-hash={pod_hash}" if pod_hash else "")
            pods = self.client.list("v1", "Pod", self.namespace, label_selector=selector)
            names.update(p["metadata"]["name"] for p in pods)
        self.heartbeat()
        events = self.client.list("v1", "Event", self.namespace)
        what = progress.message if progress.failed else f"not rolled out within {timeout:.0f}s ({progress.message})"
        details = pod_problems(pods)
        for pod_name, container in crashed_containers(pods)[:1]:
            excerpt = log_excerpt(self.client.log_tail(self.namespace, pod_name, container, previous=True))
            if excerpt:
                details.append(f"last log lines of {pod_name}/{container}: {excerpt}")
        details += [f"event {e}" for e in warning_events(events, names)]
        return what + ("; " + "; ".join(details) if details else "")

    def rollback(self, name: str, revision: int | None) -> dict[str, Any]:
        """Put one Deployment back on a revision; returns a result entry (without waiting)."""
        deployment = self.get(name)
        replicasets = owned_replicasets(deployment, self.client.list("apps/v1", "ReplicaSet", self.namespace))
        current = revision_of(deployment)
        target = revision if revision is not None else previous_revision(replicasets, current)
        entry: dict[str, Any] = {"name": name, "revision": current}
        replicaset = replicaset_for_revision(replicasets, target) if target is not None else None
        if replicaset is None:
            known = [revision_of(rs) for rs in replicasets]
            raise K8sError(
                f"Deployment {self.namespace}/{name}: no ReplicaSet for revision {target} to go back to "
                f"(revisions kept: {known})"
            )
        template = template_of(replicaset)
        entry.update(rolled_back_to=target, replicaset=replicaset["metadata"]["name"])
        live_template = (deployment.get("spec") or {}).get("template") or {}
        if same_template(live_template, template):
            entry.update(status="unchanged", changed=False, message=f"already on the template of revision {target}")
            return entry
        if not self.module.check_mode:
            self.heartbeat(before_write=True)
        self.client.request(
            "PATCH",
            f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{name}",
            body=[{"op": "replace", "path": "/spec/template", "value": template}],
            query={
                "fieldManager": self.module.params["field_manager"],
                "dryRun": "All" if self.module.check_mode else None,
            },
            content_type="application/json-patch+json",
        )
        entry.update(
            status="pending" if self.module.check_mode else "rolled_back",
            changed=True,
            diff={
                "before_header": f"Deployment {self.namespace}/{name} (revision {current})",
                "after_header": f"Deployment {self.namespace}/{name} (revision {target}, {entry['replicaset']})",
                "before": "images: " + ", ".join(images_of(live_template)) + "\n",
                "after": "images: " + ", ".join(images_of(template)) + "\n",
            },
        )
        return entry


def rolled_out(module: AnsibleModule, rollout: Rollout) -> dict[str, Any]:
    names: list[str] = module.params["deployments"]
    timeout = module.params["timeout"]
    targets = {str(k): v for k, v in (module.params["rollback_revisions"] or {}).items()}
    if module.check_mode:
        entries = []
        for name in names:
            obj = rollout.client.get(ObjectRef("apps/v1", "Deployment", name, rollout.namespace))
            if obj is None:  # the preview of a first deploy: the apply before this was a dry run
                entries.append({"name": name, "status": "pending", "message": "would be created", "revision": None})
                continue
            progress = deployment_progress(obj)
            entries.append(
                {
                    "name": name,
                    "status": "rolled_out" if progress.done else "pending",
                    "message": progress.message,
                    "revision": revision_of(obj),
                }
            )
        return {"changed": False, "deployments": entries}

    state = rollout.wait(names, timeout)
    failed = {n: (o, p) for n, (o, p) in state.items() if not p.done}
    entries = {
        n: {"name": n, "status": "rolled_out", "message": p.message, "revision": revision_of(o)}
        for n, (o, p) in state.items()
    }
    if not failed:
        return {"changed": False, "deployments": list(entries.values())}

    for name, (obj, progress) in failed.items():
        entries[name].update(status="failed", message=rollout.reason(obj, progress, timeout))

    # Roll back every Deployment this deploy changed, failed or not, so the release is whole.
    rolled: list[str] = []
    notes: list[str] = []
    for name, revision in targets.items():
        if name not in entries:
            continue
        if revision in (None, ""):
            notes.append(f"Deployment {rollout.namespace}/{name} had no revision before this deploy: left as it is")
            continue
        try:
            result = rollout.rollback(name, int(revision))
        except K8sError as exc:
            entries[name].update(
                status="rollback_failed", message=f"{entries[name]['message']}; rollback failed: {exc}"
            )
            continue
        entries[name].update(rolled_back_to=result["rolled_back_to"], replicaset=result["replicaset"])
        rolled.append(name)
    if rolled:
        after = rollout.wait(rolled, timeout)
        for name in rolled:
            obj, progress = after[name]
            entries[name]["revision"] = revision_of(obj)
            if progress.done:
                entries[name]["after_rollback"] = f"Available again ({progress.message})"
                if entries[name]["status"] == "rolled_out":
                    entries[name]["status"] = "rolled_back"
            else:
                entries[name]["status"] = "rollback_failed"
                entries[name]["after_rollback"] = f"NOT available after the rollback ({progress.message})"

    lines = []
    for name, entry in entries.items():
        if name not in failed and name not in rolled:
            continue
        line = f"Deployment {rollout.namespace}/{name}: "
        line += entry["message"] if name in failed else "rolled out, but other Deployments failed"
        if "rolled_back_to" in entry:
            line += (
                f" -> rolled back to revision {entry['rolled_back_to']} (ReplicaSet {entry['replicaset']}), "
                f"{entry.get('after_rollback', '')}"
            )
        elif name in failed:
            line += " -> not rolled back (this deploy did not change it, or it had no previous revision)"
        lines.append(line)
    msg = f"rollout failed for {', '.join(sorted(failed))}. " + " | ".join(lines + notes)
    module.fail_json(msg=msg, changed=bool(rolled), deployments=list(entries.values()))
    return {}  # not reached


def rolled_back(module: AnsibleModule, rollout: Rollout) -> dict[str, Any]:
    targets = {str(k): v for k, v in (module.params["rollback_revisions"] or {}).items()}
    entries = []
    for name in module.params["deployments"]:
        revision = targets.get(name, module.params["revision"])
        entries.append(rollout.rollback(name, int(revision) if revision not in (None, "") else None))
    changed_names = [e["name"] for e in entries if e["changed"]]
    if changed_names and not module.check_mode:
        after = rollout.wait(changed_names, module.params["timeout"])
        for entry in entries:
            if entry["name"] in after:
                obj, progress = after[entry["name"]]
                entry.update(revision=revision_of(obj), message=progress.message)
                if not progress.done:
                    entry["status"] = "rollback_failed"
        bad = [e for e in entries if e["status"] == "rollback_failed"]
        if bad:
            module.fail_json(
                msg="rollback did not become available: "
                + "; ".join(f"Deployment {rollout.namespace}/{e['name']}: {e['message']}" for e in bad),
                changed=True,
                deployments=entries,
            )
    result: dict[str, Any] = {"changed": bool(changed_names), "deployments": entries}
    diffs = [e.pop("diff") for e in entries if "diff" in e]
    if module._diff:
        result["diff"] = diffs
    return result


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    argument_spec = k8s_argument_spec()
    argument_spec.update(
        namespace=dict(type="str", required=True),
        deployments=dict(type="list", elements="str", required=True),
        state=dict(type="str", choices=["rolled_out", "rolled_back"], default="rolled_out"),
        timeout=dict(type="int", default=300),
        rollback_revisions=dict(type="dict", default={}),
        redact=dict(type="list", elements="str", default=[], no_log=True),
        revision=dict(type="int"),
        field_manager=dict(type="str", default="thinkus-ops-rollback"),
        poll_interval=dict(type="float", default=1.0),
    )
    argument_spec.update(lock_argument_spec())
    return dict(argument_spec=argument_spec, supports_check_mode=True)


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    try:
        client = K8sClient(module.params["kubeconfig"], module.params["context"], module.params["request_timeout"])
        rollout = Rollout(module, client, keeper_of(module.params, client, module.check_mode))
        if module.params["state"] == "rolled_out":
            module.exit_json(**rolled_out(module, rollout))
        module.exit_json(**rolled_back(module, rollout))
    except LockLost as exc:
        module.fail_json(msg=str(exc))
    except K8sError as exc:
        module.fail_json(msg=str(exc))


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
