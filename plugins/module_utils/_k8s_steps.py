# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The steps of a deploy against the API server: apply (and prune), the deploy lock, the rollout wait.

Not a public API: the leading underscore means other collections must not import it.

thinkus.ops.k8s_apply, k8s_lease and k8s_rollout each run one of these steps; thinkus.ops.k8s_release
runs them all in one call. ``module`` is an AnsibleModule, or anything with its ``params``,
``check_mode``, ``_diff``, ``warn`` and ``fail_json``.
"""

from __future__ import annotations

import datetime
import getpass
import secrets
import socket
import time
from collections import Counter
from typing import Any

from ansible_collections.thinkus.ops.plugins.module_utils._k8s import (
    K8sClient,
    K8sError,
    K8sUnreachable,
    ObjectRef,
    Resource,
    UnknownKind,
    is_transient,
    normalize,
    object_diff,
)
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_apply import (
    NEVER_PRUNED,
    hpa_targets,
    secret_as_data,
    split_kind,
)
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_lease import (
    UTC,
    LeaseKeeper,
    LeaseState,
    lease_body,
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

# --------------------------------------------------------------------------- apply and prune

# How long a kind defined by a CustomResourceDefinition of the same set may take to be served.
CRD_ESTABLISH_SECONDS = 60.0


def rollback_target(client: K8sClient, live: dict[str, Any] | None, entry: dict[str, Any]) -> int | None:
    """Where a failed rollout after this apply should take the Deployment back to (see RETURN)."""
    if live is None:
        return None
    if entry["changed"]:
        return revision_of(live)
    if not entry["unfinished_rollout"]:
        return None
    replicasets = owned_replicasets(live, client.list("apps/v1", "ReplicaSet", entry["namespace"]))
    return previous_revision(replicasets, revision_of(live))


def wait_for_kind(client: K8sClient, ref: ObjectRef, timeout: float = CRD_ESTABLISH_SECONDS) -> None:
    """Wait until the server serves a kind whose CustomResourceDefinition this run just applied."""
    deadline = time.monotonic() + timeout
    while True:
        client.discovery.forget(ref.api_version)
        try:
            client.resource(ref.api_version, ref.kind)
            return
        except UnknownKind as exc:
            if time.monotonic() >= deadline:
                raise K8sError(f"{ref}: {exc} {timeout:.0f}s after its CustomResourceDefinition was applied") from None
        time.sleep(0.5)


def entry_of(ref: ObjectRef, live: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "api_version": ref.api_version,
        "kind": ref.kind,
        "namespace": ref.namespace,
        "name": ref.name,
        "created": live is None,
    }


def delete_all(module: Any, client: K8sClient, refs: list[ObjectRef], keeper: LeaseKeeper | None) -> dict[str, Any]:
    """state=absent: delete the objects that exist; an object already gone (or of a kind gone) is unchanged."""
    results: list[dict[str, Any]] = []
    diffs: list[dict[str, str]] = []
    for ref in refs:
        try:
            live = client.get(ref)
        except UnknownKind:
            live = None
        entry = entry_of(ref, live)
        entry.update(created=False, deleted=live is not None, changed=live is not None)
        if live is not None:
            if keeper:
                keeper.heartbeat(before_write=True)
            try:
                client.delete(ref, dry_run=module.check_mode)
            except K8sError as exc:
                raise K8sError(f"{ref}: {exc}", status=exc.status, reason=exc.reason) from None
            diffs.append(object_diff(ref, normalize(live), None))
        results.append(entry)
    result: dict[str, Any] = {"changed": any(r["changed"] for r in results), "objects": results, "pruned": []}
    if module._diff:
        result["diff"] = diffs
    return result


def prune_resources(client: K8sClient, params: dict[str, Any], refs: list[ObjectRef]) -> list[Resource]:
    """The kinds prune looks at: O(prune_kinds), or the kinds of the set.

    A kind of the set that the server does not serve yet (its CRD is created by this set, in
    check mode) has no objects to prune and is left out; any other unknown kind is an error.
    """
    in_set = {(r.api_version, r.kind) for r in refs}
    if params["prune_kinds"]:
        versions_in_set = {r.kind: r.api_version for r in refs}
        wanted = []
        for entry in params["prune_kinds"]:
            api_version, kind = split_kind(entry)
            wanted.append((api_version or versions_in_set.get(kind), kind))
    else:
        wanted = sorted(kind for kind in in_set if kind[1] not in NEVER_PRUNED)
    resources = []
    for api_version, kind in wanted:
        try:
            resources.append(client.resource(api_version, kind) if api_version else client.discovery.find_kind(kind))
        except UnknownKind:
            if (api_version, kind) not in in_set:
                raise
    return resources


def read_before(
    client: K8sClient, refs: list[ObjectRef], pending: set[tuple[str, str]], selector: str | None
) -> dict[ObjectRef, dict[str, Any]]:
    """The live objects of ``refs``, read with one list per kind and namespace where two or more share one.

    The list asks for ``selector`` (the set's own labels, its prune selector): a namespace's other
    objects of the kind are not read. An object the list does not return (new, or without those
    labels) is read on its own by the caller, as is every object when there is no selector, or
    when the server refuses the list (a role allowed to get but not to list).
    """
    if not selector:
        return {}
    counts = Counter(
        (ref.api_version, ref.kind, ref.namespace)
        for ref in refs
        if ref.namespace and (ref.api_version, ref.kind) not in pending
    )
    wanted = set(refs)  # a set lists no object twice (resolve_refs refuses it)
    found: dict[ObjectRef, dict[str, Any]] = {}
    for (api_version, kind, namespace), count in counts.items():
        if count < 2:
            continue
        try:
            items = client.list(api_version, kind, namespace, selector)
        except K8sUnreachable:
            raise
        except K8sError:
            continue
        for item in items:
            ref = ObjectRef.of(item, namespace)
            if ref in wanted:
                found[ref] = item
    return found


def apply_all(
    module: Any,
    client: K8sClient,
    keeper: LeaseKeeper | None = None,
    refs: list[ObjectRef] | None = None,
    pending: set[tuple[str, str]] | None = None,
    answers: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Apply each object in order; ``answers``, when given, gets the server's answer to each Deployment's
    apply by name (its status included), for a rollout check that need not read it again."""
    params = module.params
    check = module.check_mode
    resources = [secret_as_data(dict(r)) for r in params["resources"]]
    if refs is None:
        refs = [client.ref_of(r, params["namespace"]) for r in resources]
    pending = set(pending or ())
    autoscaled = hpa_targets(resources, params["namespace"]) if params["hpa_owns_replicas"] else set()
    results: list[dict[str, Any]] = []
    diffs: list[dict[str, str]] = []
    applied: set[ObjectRef] = set()
    # The live objects, read before the first apply: applying one object of the set does not change
    # another's declared state, which is what each is compared with (normalize).
    listed = read_before(client, refs, pending, params.get("prune_selector"))
    for manifest, ref in zip(resources, refs, strict=True):
        if ref.namespace:
            manifest["metadata"] = dict(manifest.get("metadata") or {}, namespace=ref.namespace)
        applied.add(ref)
        kind_key = (ref.api_version, ref.kind)
        if kind_key in pending:
            # Defined by a CustomResourceDefinition earlier in the set: served once it is established.
            if check:
                try:
                    client.discovery.forget(ref.api_version)
                    client.resource(*kind_key)
                    pending.discard(kind_key)
                except UnknownKind:
                    pass
            else:
                wait_for_kind(client, ref)
                pending.discard(kind_key)
        if kind_key in pending:
            live = None
        elif ref in listed:
            live = listed.pop(ref)
        else:
            live = client.get(ref)
        entry = entry_of(ref, live)
        if ref.kind == "Deployment":
            entry["revision_before"] = ((live or {}).get("metadata", {}).get("annotations") or {}).get(
                "deployment.kubernetes.io/revision"
            )
            entry["unfinished_rollout"] = live is not None and not deployment_progress(live).done
            live_replicas = ((live or {}).get("spec") or {}).get("replicas")
            if ref in autoscaled and live_replicas is not None:
                manifest.setdefault("spec", {})["replicas"] = live_replicas
                entry["replicas_kept_for_hpa"] = live_replicas
        if keeper:
            keeper.heartbeat(before_write=True)
        if kind_key in pending:  # check mode only: the CRD is not on the server yet
            module.warn(f"{ref}: its kind comes from a CRD this run creates, so the server cannot dry-run it yet")
            after = manifest
        else:
            try:
                after = client.apply(manifest, params["field_manager"], force=params["force_conflicts"], dry_run=check)
            except K8sError as exc:
                if check and live is None and exc.status == 404 and ref.namespace and "namespaces" in str(exc):
                    module.warn(f"{ref}: namespace {ref.namespace} does not exist yet, so the server cannot dry-run it")
                    after = manifest
                else:
                    raise K8sError(f"{ref}: {exc}", status=exc.status, reason=exc.reason) from None
        if answers is not None and ref.kind == "Deployment" and not check:
            answers[ref.name] = after
        before_n, after_n = normalize(live), normalize(after)
        entry["changed"] = before_n != after_n
        if ref.kind == "Deployment":
            entry["rollback_to"] = rollback_target(client, live, entry)
        if entry["changed"]:
            diffs.append(object_diff(ref, before_n, after_n))
        results.append(entry)

    pruned: list[str] = []
    if params["prune"]:
        for resource in prune_resources(client, params, refs):
            for item in client.list(resource.api_version, resource.kind, params["namespace"], params["prune_selector"]):
                ref = ObjectRef.of(item, params["namespace"], resource.namespaced)
                if ref in applied or (item.get("metadata") or {}).get("deletionTimestamp"):
                    continue
                if keeper:
                    keeper.heartbeat(before_write=True)
                client.delete(ref, dry_run=check)
                pruned.append(str(ref))
                diffs.append(object_diff(ref, normalize(item), None))

    result: dict[str, Any] = {
        "changed": bool(pruned) or any(r["changed"] for r in results),
        "objects": results,
        "pruned": pruned,
    }
    if module._diff:
        result["diff"] = diffs
    return result


# --------------------------------------------------------------------------- the deploy lock


def default_holder() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "ansible"
    return f"{user}@{socket.gethostname()}"


def acquire(module: Any, client: K8sClient, ref: ObjectRef) -> dict[str, Any]:
    params = module.params
    identity = params["holder_identity"] or f"{params['holder'] or default_holder()}/{secrets.token_hex(4)}"
    started = time.monotonic()
    deadline = started + params["wait_timeout"]
    path = f"/apis/coordination.k8s.io/v1/namespaces/{ref.namespace}/leases"
    while True:
        now = datetime.datetime.now(UTC)
        lease = client.get(ref)
        state = LeaseState.of(lease)
        if state.free_for(identity, now):
            result = {
                "changed": True,
                "holder_identity": identity,
                "previous_holder": state.holder if state.holder != identity else None,
                "took_over": bool(state.holder and state.holder != identity),
                "waited": round(time.monotonic() - started, 1),
            }
            if module.check_mode:
                return result
            body = lease_body(
                ref.name, ref.namespace or "", identity, params["lease_duration"], now, lease, params["labels"]
            )
            try:
                if lease is None:
                    client.request("POST", path, body=body)
                else:
                    client.request("PUT", f"{path}/{ref.name}", body=body)
            except K8sError as exc:
                if exc.status == 409:  # someone else wrote it between our read and write: read again
                    continue
                raise
            return result
        if module.check_mode:
            module.warn(f"the deploy lock {ref.namespace}/{ref.name} is {state.describe(now)}: a real run would wait")
            return {
                "changed": False,
                "holder_identity": identity,
                "previous_holder": state.holder,
                "took_over": False,
                "waited": 0.0,
            }
        if time.monotonic() >= deadline:
            module.fail_json(
                msg=f"the deploy lock Lease {ref.namespace}/{ref.name} is {state.describe(now)}; gave up after "
                f"waiting {params['wait_timeout']}s. Wait for that deploy to finish, or delete the Lease if it "
                "is certain that nothing holds it.",
                holder=state.holder,
            )
        time.sleep(min(params["poll_interval"], max(deadline - time.monotonic(), 0.05)))


def release(module: Any, client: K8sClient, ref: ObjectRef) -> dict[str, Any]:
    """Give the lock back; while the API server does not answer (restarting), keep trying for
    up to wait_timeout seconds, so the next deploy need not wait for the Lease to lapse."""
    deadline = time.monotonic() + module.params["wait_timeout"]
    warned = False
    while True:
        try:
            return release_once(module, client, ref)
        except K8sError as exc:
            if not is_transient(exc) or time.monotonic() >= deadline:
                raise
            if not warned:
                module.warn(f"{exc}; trying to give the lock back for up to {module.params['wait_timeout']}s")
                warned = True
            time.sleep(min(module.params["poll_interval"], max(deadline - time.monotonic(), 0.05)))


def release_once(module: Any, client: K8sClient, ref: ObjectRef) -> dict[str, Any]:
    identity = module.params["holder_identity"]
    lease = client.get(ref)
    state = LeaseState.of(lease)
    if lease is None or state.holder != identity:
        if lease is not None and state.holder:
            module.warn(f"the Lease {ref.namespace}/{ref.name} is now held by {state.holder!r}: left alone")
        return {"changed": False, "holder_identity": identity, "previous_holder": state.holder}
    if not module.check_mode:
        client.request(
            "DELETE",
            f"/apis/coordination.k8s.io/v1/namespaces/{ref.namespace}/leases/{ref.name}",
            body={"preconditions": {"resourceVersion": lease["metadata"]["resourceVersion"]}},
            not_found_ok=True,
        )
    return {"changed": True, "holder_identity": identity, "previous_holder": state.holder}


# --------------------------------------------------------------------------- the rollout wait


class Rollout:
    def __init__(self, module: Any, client: K8sClient, keeper: LeaseKeeper | None = None) -> None:
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


def rolled_out(module: Any, rollout: Rollout, answers: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Wait for the Deployments; roll back what this deploy changed when one does not make it.

    ``answers``: the server's answers to this run's apply of some of them (apply_all). One whose answer
    already shows it rolled out (its observedGeneration at its generation, every replica updated and
    available) is not waited for: the apply left its pod template as it was, and nothing rolls.
    """
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

    done = {}
    for name, obj in (answers or {}).items():
        progress = deployment_progress(obj)
        if name in names and progress.done:
            done[name] = (obj, progress)
    waited = rollout.wait([n for n in names if n not in done], timeout) if len(done) < len(names) else {}
    state = {name: done.get(name) or waited[name] for name in names}
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


def rolled_back(module: Any, rollout: Rollout) -> dict[str, Any]:
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
