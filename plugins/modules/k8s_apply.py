#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: k8s_apply
short_description: Server-side apply (or delete) Kubernetes objects of any kind, with a truthful check mode and diff
version_added: 0.1.0
description:
  - Applies each object with Kubernetes server-side apply under a field manager of its own, so the
    API server merges, defaults and validates exactly as it would for C(kubectl apply --server-side).
  - Any kind the API server serves can be applied, built-in or defined by a CustomResourceDefinition;
    kinds are resolved through the server's discovery documents (C(/api/v1), C(/apis/<group>/<version>)),
    each group version read once per run of the module.
  - An object is reported changed only when what the server holds after the apply differs from what it
    held before, with status and server bookkeeping (C(resourceVersion), C(managedFields), C(uid),
    C(generation), the Deployment revision annotation) left out. Both sides come from the server, so
    defaulted fields never show as a change and a second run reports C(changed=false).
  - Optionally deletes the objects carrying a label selector that are no longer in the set (prune).
  - With O(state=absent), deletes the objects given instead.
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
        as to be created, with the manifest as given, and a warning. So is an object whose kind a
        CustomResourceDefinition earlier in O(resources) defines, when that CRD is not on the server yet.
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
      - Any kind the API server serves. A kind the server does not serve fails the module before any change,
        unless a CustomResourceDefinition earlier in the list defines it; then the module waits (up to 60 seconds)
        for the server to serve the kind before applying its objects.
      - Objects are applied in the order given.
      - A Secret's C(stringData) is sent as C(data) (base64), so that the field manager owns each key and a key
        left out later is removed from the Secret.
    type: list
    elements: dict
    required: true
  state:
    description:
      - V(present) applies the objects; V(absent) deletes those that exist (background propagation), identified
        by C(apiVersion), C(kind), C(metadata.name) and namespace. An object of a kind the server no longer
        serves is taken as absent.
    type: str
    choices: [present, absent]
    default: present
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
      - The kinds pruned, each as C(Kind) or C(<apiVersion>/Kind) (for example C(batch/v1/CronJob)). A bare kind
        takes the apiVersion it has in O(resources), else the preferred version of the group that serves it.
      - Defaults to the kinds present in O(resources). Namespace and CustomResourceDefinition are never pruned.
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

- name: A kind from a CustomResourceDefinition, and an object of it, in one call
  thinkus.ops.k8s_apply:
    resources:
      - "{{ lookup('ansible.builtin.file', 'crontabs.example.com.yml') | ansible.builtin.from_yaml }}"
      - apiVersion: example.com/v1
        kind: CronTab
        metadata:
          name: nightly
          namespace: thinkus
        spec:
          cronSpec: "0 3 * * *"

- name: Remove a CronJob no longer scheduled
  thinkus.ops.k8s_apply:
    state: absent
    namespace: thinkus
    resources:
      - apiVersion: batch/v1
        kind: CronJob
        metadata:
          name: backup-hourly
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
      description: Whether the object did not exist before (always false with O(state=absent)).
      type: bool
    deleted:
      description: With O(state=absent), whether the object existed and was deleted (or would be in check mode).
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

from ansible_collections.thinkus.ops.plugins.module_utils._k8s import K8sClient, K8sError, k8s_argument_spec
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_apply import (
    NEVER_PRUNED,
    resolve_refs,
    split_kind,
    validate_resources,
)
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_lease import LockLost, keeper_of, lock_argument_spec
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_steps import apply_all, delete_all


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    argument_spec = k8s_argument_spec()
    argument_spec.update(
        resources=dict(type="list", elements="dict", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        namespace=dict(type="str"),
        field_manager=dict(type="str", default="thinkus-ops"),
        force_conflicts=dict(type="bool", default=True),
        hpa_owns_replicas=dict(type="bool", default=True),
        prune=dict(type="bool", default=False),
        prune_selector=dict(type="str"),
        prune_kinds=dict(type="list", elements="str"),
    )
    argument_spec.update(lock_argument_spec())
    return dict(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("prune", True, ["prune_selector", "namespace"])],
    )


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    params = module.params
    problems = validate_resources(params["resources"])
    for entry in params["prune_kinds"] or []:
        if split_kind(entry)[1] in NEVER_PRUNED or not split_kind(entry)[1]:
            problems.append(f"prune_kinds: {entry} cannot be pruned (never {', '.join(sorted(NEVER_PRUNED))})")
    if params["state"] == "absent" and params["prune"]:
        problems.append("prune applies to state=present only")
    if problems:
        module.fail_json(msg="invalid resources: " + "; ".join(problems))
    try:
        client = K8sClient(params["kubeconfig"], params["context"], params["request_timeout"])
        refs, pending, problems = resolve_refs(
            params["resources"],
            params["namespace"],
            lambda v, k: client.resource(v, k).namespaced,
            unknown_kinds_ok=params["state"] == "absent",  # its CRD is gone: no such object can exist
        )
        if problems:
            module.fail_json(msg="invalid resources: " + "; ".join(problems))
        keeper = keeper_of(params, client, module.check_mode)
        if params["state"] == "absent":
            module.exit_json(**delete_all(module, client, refs, keeper))
        module.exit_json(**apply_all(module, client, keeper, refs, pending))
    except LockLost as exc:
        module.fail_json(msg=f"{exc} (nothing applied after that point)")
    except K8sError as exc:
        module.fail_json(msg=str(exc))


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
