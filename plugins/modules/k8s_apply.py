#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: k8s_apply
short_description: Server-side apply a set of Kubernetes objects, with a truthful check mode and diff
version_added: 0.1.0
description:
  - Applies each object with Kubernetes server-side apply under a field manager of its own, so the
    API server merges, defaults and validates exactly as it would for C(kubectl apply --server-side).
  - An object is reported changed only when what the server holds after the apply differs from what it
    held before, with status and server bookkeeping (C(resourceVersion), C(managedFields), C(uid),
    C(generation), the Deployment revision annotation) left out. Both sides come from the server, so
    defaulted fields never show as a change and a second run reports C(changed=false).
  - Optionally deletes the objects carrying a label selector that are no longer in the set (prune).
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
      - Every apply and delete is sent with C(dryRun=All), so admission, defaulting and validation run on
        the server and nothing is stored.
      - An object in a namespace that does not exist yet cannot be dry-run by the server; it is reported
        as to be created, with the manifest as given, and a warning.
  diff_mode:
    support: full
    details:
      - One diff entry per changed object, live object against the server's answer, both without
        status and server bookkeeping. Secret values are shown as C(<redacted>), or
        C(<redacted, changed>) when they change.
  idempotent:
    support: full
options:
  resources:
    description:
      - The objects to apply, as dictionaries with C(apiVersion), C(kind) and C(metadata.name).
      - Supported kinds are Namespace, ConfigMap, Secret, Service, ServiceAccount, Deployment,
        HorizontalPodAutoscaler (C(autoscaling/v2)), PodDisruptionBudget (C(policy/v1)) and Lease.
      - Objects are applied in the order given.
    type: list
    elements: dict
    required: true
  namespace:
    description:
      - Namespace of the namespaced objects that do not set C(metadata.namespace), and of prune.
    type: str
  field_manager:
    description:
      - The server-side apply field manager recorded as the owner of the fields given.
    type: str
    default: thinkus-ops
  force_conflicts:
    description:
      - Take over fields another manager owns (C(kubectl apply --server-side --force-conflicts)).
      - With V(false) a conflict fails the module, naming the other manager.
    type: bool
    default: true
  hpa_owns_replicas:
    description:
      - When a HorizontalPodAutoscaler in O(resources) scales a Deployment that already exists, apply that
        Deployment with the replica count it has on the server, so the autoscaler's decision is kept and
        the field is not reported as changed. A new Deployment gets the replicas given.
    type: bool
    default: true
  prune:
    description:
      - Delete the objects of O(prune_kinds) in O(namespace) that match O(prune_selector) and are not in
        O(resources).
    type: bool
    default: false
  prune_selector:
    description:
      - Label selector of the objects this set owns, for example
        C(app.kubernetes.io/managed-by=thinkus.ops,app.kubernetes.io/part-of=thinkus).
      - Required with O(prune=true).
    type: str
  prune_kinds:
    description:
      - The kinds pruned. Defaults to the kinds present in O(resources), without Namespace.
    type: list
    elements: str
seealso:
  - module: thinkus.ops.k8s_rollout
  - module: thinkus.ops.k8s_lease
  - name: Server-side apply
    description: How the API server merges and tracks field ownership.
    link: https://kubernetes.io/docs/reference/using-api/server-side-apply/
"""

EXAMPLES = r"""
- name: Apply the backend's workloads
  thinkus.ops.k8s_apply:
    kubeconfig: "{{ thinkus_kubeconfig }}"
    namespace: thinkus
    field_manager: thinkus-ops
    resources: "{{ lookup('ansible.builtin.template', 'workloads.yml.j2') | ansible.builtin.from_yaml_all | list }}"
    prune: true
    prune_selector: app.kubernetes.io/managed-by=thinkus.ops,app.kubernetes.io/part-of=thinkus
    prune_kinds: [Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget, ConfigMap]
    # Held by this run (thinkus.ops.k8s_lease): renewed before each change, which stops if it is lost.
    lock:
      name: thinkus-deploy
      namespace: thinkus
      holder_identity: "{{ __lock.holder_identity }}"
  register: __applied

- name: Secrets, never logged
  thinkus.ops.k8s_apply:
    namespace: thinkus
    resources:
      - apiVersion: v1
        kind: Secret
        metadata:
          name: db-credentials
        type: Opaque
        data:
          url: "{{ vault_database_url | ansible.builtin.b64encode }}"
  no_log: true
"""

RETURN = r"""
objects:
  description: One entry per object of O(resources), in order.
  returned: always
  type: list
  elements: dict
  contains:
    api_version:
      description: The object's C(apiVersion).
      type: str
      sample: apps/v1
    kind:
      description: The object's kind.
      type: str
      sample: Deployment
    namespace:
      description: The object's namespace (null for cluster-scoped kinds).
      type: str
      sample: thinkus
    name:
      description: The object's name.
      type: str
      sample: py-ai-engine
    changed:
      description: Whether the declared state of the object changed (or would change in check mode).
      type: bool
    created:
      description: Whether the object did not exist before.
      type: bool
    revision_before:
      description: For a Deployment, its C(deployment.kubernetes.io/revision) before the apply (null if new).
      type: str
      sample: "3"
    unfinished_rollout:
      description:
        - For a Deployment, whether it was still rolling out when this apply found it (an earlier run that
          stopped or was killed before its rollout ended), so the Deployment has more than one active ReplicaSet.
      type: bool
    rollback_to:
      description:
        - For a Deployment, the revision to go back to if the rollout that follows fails, or null for none.
        - RV(objects[].revision_before) when this apply changed it; when it did not change it but found an
          unfinished rollout, the revision before the unfinished one, so that a run re-applying the same
          release can still roll it back (or finish it); null for a new Deployment.
      type: int
      sample: 3
    replicas_kept_for_hpa:
      description: For a Deployment scaled by an autoscaler, the live replica count that was kept.
      type: int
      sample: 7
pruned:
  description: The objects deleted (or that would be deleted in check mode) by prune, as C(Kind namespace/name).
  returned: always
  type: list
  elements: str
  sample: ["Service thinkus/old-api"]
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.thinkus.ops.plugins.module_utils._k8s import (
    API_VERSION_OF_KIND,
    KINDS,
    K8sClient,
    K8sError,
    ObjectRef,
    k8s_argument_spec,
    normalize,
    object_diff,
)
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_apply import (
    hpa_targets,
    validate_resources,
)
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_lease import (
    LeaseKeeper,
    LockLost,
    keeper_of,
    lock_argument_spec,
)
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_rollout import (
    deployment_progress,
    owned_replicasets,
    previous_revision,
    revision_of,
)


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


def apply_all(module: AnsibleModule, client: K8sClient, keeper: LeaseKeeper | None = None) -> dict[str, Any]:
    params = module.params
    check = module.check_mode
    resources = [dict(r) for r in params["resources"]]
    autoscaled = hpa_targets(resources, params["namespace"]) if params["hpa_owns_replicas"] else set()
    results: list[dict[str, Any]] = []
    diffs: list[dict[str, str]] = []
    applied: set[ObjectRef] = set()
    for manifest in resources:
        ref = ObjectRef.of(manifest, params["namespace"])
        if ref.namespace:
            manifest.setdefault("metadata", {})["namespace"] = ref.namespace
        applied.add(ref)
        live = client.get(ref)
        entry: dict[str, Any] = {
            "api_version": ref.api_version,
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
            "created": live is None,
        }
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
        try:
            after = client.apply(manifest, params["field_manager"], force=params["force_conflicts"], dry_run=check)
        except K8sError as exc:
            if check and live is None and exc.status == 404 and ref.namespace and "namespaces" in str(exc):
                module.warn(f"{ref}: namespace {ref.namespace} does not exist yet, so the server cannot dry-run it")
                after = manifest
            else:
                raise K8sError(f"{ref}: {exc}", status=exc.status, reason=exc.reason) from None
        before_n, after_n = normalize(live), normalize(after)
        entry["changed"] = before_n != after_n
        if ref.kind == "Deployment":
            entry["rollback_to"] = rollback_target(client, live, entry)
        if entry["changed"]:
            diffs.append(object_diff(ref, before_n, after_n))
        results.append(entry)

    pruned: list[str] = []
    if params["prune"]:
        kinds = params["prune_kinds"] or sorted({r.kind for r in applied if r.kind != "Namespace"})
        for kind in kinds:
            for item in client.list(API_VERSION_OF_KIND[kind], kind, params["namespace"], params["prune_selector"]):
                ref = ObjectRef.of(item, params["namespace"])
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


def main() -> None:
    argument_spec = k8s_argument_spec()
    argument_spec.update(
        resources=dict(type="list", elements="dict", required=True),
        namespace=dict(type="str"),
        field_manager=dict(type="str", default="thinkus-ops"),
        force_conflicts=dict(type="bool", default=True),
        hpa_owns_replicas=dict(type="bool", default=True),
        prune=dict(type="bool", default=False),
        prune_selector=dict(type="str"),
        prune_kinds=dict(type="list", elements="str"),
    )
    argument_spec.update(lock_argument_spec())
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("prune", True, ["prune_selector", "namespace"])],
    )
    problems = validate_resources(module.params["resources"], module.params["namespace"])
    for kind in module.params["prune_kinds"] or []:
        if kind not in API_VERSION_OF_KIND or kind == "Namespace":
            known = sorted(kind for (_version, kind) in KINDS if kind != "Namespace")
            problems.append(f"prune_kinds: {kind} is not a kind that can be pruned (one of {', '.join(known)})")
    if problems:
        module.fail_json(msg="invalid resources: " + "; ".join(problems))
    try:
        client = K8sClient(module.params["kubeconfig"], module.params["context"], module.params["request_timeout"])
        keeper = keeper_of(module.params, client, module.check_mode)
        module.exit_json(**apply_all(module, client, keeper))
    except LockLost as exc:
        module.fail_json(msg=f"{exc} (nothing applied after that point)")
    except K8sError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
