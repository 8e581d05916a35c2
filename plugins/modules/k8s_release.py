#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: k8s_release
short_description: One release under the deploy lock - namespace, Secrets, workloads, rollout wait, rollback, release
version_added: 0.3.0
description:
  - Runs in one call what M(thinkus.ops.k8s_apply), M(thinkus.ops.k8s_lease) and M(thinkus.ops.k8s_rollout) do
    as separate tasks, in this order, stopping at the first failure.
  - 0. With O(identity), checks that the cluster is the environment's own, as M(thinkus.ops.k8s_cluster_guard)
    does (O(context) is then required), and refuses to go on otherwise, before anything changes.
  - 1. Applies the namespace O(namespace) with O(namespace_labels) (the deploy lock lives in it).
  - 2. Takes the deploy lock, the Lease O(lock.name), waiting up to O(lock.wait_timeout) for another holder.
  - 3. Applies O(secrets), then O(resources), each with prune when O(prune) is set, renewing the lock before
    every change. A lock that is lost stops the module before its next change.
  - 4. Waits for every Deployment of O(resources) to roll out, renewing the lock on every poll. When one fails
    and O(rollback=true), puts back every Deployment this call changed (and any an earlier run left rolling out)
    on the revision it had before, waits for that, and fails saying why the rollout failed and where each
    Deployment is now.
  - 5. Gives the lock back, whether the steps before succeeded or not (while the API server does not answer, it
    keeps trying for up to O(lock.lease_duration) seconds).
  - One task instead of six, so the fixed cost of a task (a worker process, templating its arguments, the
    connection settings) is paid once. The steps and their results are those of the three modules.
  - The names of the Secrets that changed (or would, in check mode) are printed at every verbosity, never their
    values, unless the task has C(no_log).
author:
  - Thinkus platform team (@thinkus-ai)
extends_documentation_fragment:
  - thinkus.ops.k8s
  - thinkus.ops.attributes
  - thinkus.ops.k8s.action_group
attributes:
  check_mode:
    support: full
    details:
      - The lock is read, not taken (a lock held by another run is reported in a warning); every apply and prune
        is a server-side dry run; the rollout is reported as the Deployments stand, without waiting.
  diff_mode:
    support: full
    details:
      - One diff entry per changed namespace, ConfigMap, Deployment, Service, autoscaler or disruption budget.
      - Secrets never get a diff entry; RV(secrets) names those that change, never their values.
  idempotent:
    support: full
    details:
      - Taking and giving back the lock is not a change.
options:
  identity:
    description:
      - What the cluster must carry, checked first (as O(thinkus.ops.k8s_cluster_guard#module:identity)).
        Roles pass their C(<role>_cluster_identity) variable when its C(environment) is set.
      - Without it, the cluster is not checked.
    type: dict
    suboptions:
      environment:
        description: The environment name the cluster's marker must hold.
        type: str
        required: true
      uid:
        description: The UID of the cluster's C(kube-system) namespace; empty does not compare it.
        type: str
        default: ""
      claim:
        description: Write the marker when the cluster has none. A marker that exists is never changed.
        type: bool
        default: false
      marker_namespace:
        description: Namespace of the marker ConfigMap. It must exist.
        type: str
        default: kube-system
      marker_name:
        description: Name of the marker ConfigMap.
        type: str
        default: thinkus-environment
  namespace:
    description:
      - The namespace of every object, applied first.
    type: str
    required: true
  namespace_labels:
    description:
      - Labels of the namespace.
    type: dict
    default: {}
  lock:
    description:
      - The deploy lock, a C(coordination.k8s.io/v1) Lease in O(namespace) (M(thinkus.ops.k8s_lease)).
    type: dict
    required: true
    suboptions:
      name:
        description: Name of the Lease.
        type: str
        required: true
      holder:
        description:
          - Who takes the lock, as the failure message of a deploy that has to wait shows it. Defaults to the user
            and host name; a random suffix tells two runs apart (RV(lock.holder_identity)).
        type: str
      lease_duration:
        description: Seconds the lock is valid without renewal; it is renewed while the module works.
        type: int
        default: 900
      wait_timeout:
        description: Seconds to wait for a lock another run holds before failing naming it. V(0) fails at once.
        type: int
        default: 300
      poll_interval:
        description: Seconds between two reads of the Lease while waiting.
        type: float
        default: 2
      labels:
        description: Labels of the Lease.
        type: dict
        default: {}
  secrets:
    description:
      - The Secrets, applied before O(resources). Never logged, never in a diff; C(stringData) is sent as C(data).
      - Their values (as given and decoded, and the passwords of a C(.dockerconfigjson)) are masked wherever
        they would appear in the result; their names, labels and namespace are not.
    type: list
    elements: dict
    default: []
  resources:
    description:
      - The other objects (ConfigMaps, Deployments, Services, autoscalers, disruption budgets...), in the order given,
        as for M(thinkus.ops.k8s_apply).
    type: list
    elements: dict
    required: true
  field_manager:
    description: The server-side apply field manager of O(secrets) and O(resources).
    type: str
    default: thinkus-ops
  prune:
    description:
      - Delete the Secrets, and the objects of O(prune_kinds), in O(namespace) that match O(prune_selector) and are
        not in O(secrets) or O(resources).
    type: bool
    default: false
  prune_selector:
    description: Label selector of the objects this release owns. Required with O(prune=true).
    type: str
  prune_kinds:
    description: The kinds of O(resources) pruned (as in M(thinkus.ops.k8s_apply)); Secrets are pruned among O(secrets).
    type: list
    elements: str
  rollout_timeout:
    description: Seconds to wait for the Deployments to roll out (and again for a rollback).
    type: int
    default: 300
  rollout_poll_interval:
    description: Seconds between two reads of the Deployments while waiting.
    type: float
    default: 1
  rollback:
    description:
      - When a rollout fails, put the Deployments back on the revisions they had before (see description).
      - With V(false) they are left as they are, and the module fails.
    type: bool
    default: true
  rollback_field_manager:
    description: The field manager of a rollback's change.
    type: str
    default: thinkus-ops-rollback
  redact:
    description:
      - Values masked wherever they would appear in a failure message (crash logs are quoted). Never logged.
    type: list
    elements: str
    default: []
  preflight_problems:
    description:
      - What the caller's own checks of its inputs found, one sentence each (the k8s_deploy role passes its
        preflight filter's result). When not empty, the module fails with them, joined by C(; ), before it
        reads or changes anything.
      - The action plugin templates O(secrets), O(resources) and O(redact) only after this check, so an input
        the checks refuse never reaches the templates that render them (ansible-core 2.19 and later).
    type: list
    elements: str
    default: []
seealso:
  - module: thinkus.ops.k8s_apply
  - module: thinkus.ops.k8s_lease
  - module: thinkus.ops.k8s_rollout
"""

EXAMPLES = r"""
- name: Deploy the backend under the lock
  thinkus.ops.k8s_release:
    kubeconfig: "{{ thinkus_kubeconfig }}"
    namespace: thinkus
    namespace_labels:
      app.kubernetes.io/part-of: thinkus
    lock:
      name: thinkus-deploy
      lease_duration: 900
      wait_timeout: 300
    secrets: "{{ lookup('ansible.builtin.template', 'secrets.yml.j2') | ansible.builtin.from_yaml_all | list }}"
    resources: "{{ lookup('ansible.builtin.template', 'workloads.yml.j2') | ansible.builtin.from_yaml_all | list }}"
    prune: true
    prune_selector: app.kubernetes.io/managed-by=thinkus.ops,app.kubernetes.io/part-of=thinkus
    prune_kinds: [ConfigMap, Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget]
    rollout_timeout: 600
    redact: ["{{ vault_openai_api_key }}"]
  register: __release
"""

RETURN = r"""
cluster:
  description: What the cluster carries (RV(thinkus.ops.k8s_cluster_guard#module:environment) and the rest).
  returned: when O(identity) was given
  type: dict
  contains:
    context:
      description: The kubeconfig context used.
      type: str
    server:
      description: The API server URL of that context.
      type: str
    uid:
      description: The UID of the cluster's kube-system namespace.
      type: str
    environment:
      description: The environment the cluster's marker names.
      type: str
    claimed:
      description: Whether this run wrote the marker (in check mode, whether a real run would).
      type: bool
namespace:
  description: The namespace's entry, as in RV(thinkus.ops.k8s_apply#module:objects).
  returned: always
  type: dict
lock:
  description: The lock as it was taken (RV(thinkus.ops.k8s_lease#module:holder_identity) and the rest).
  returned: when the namespace was applied
  type: dict
  contains:
    holder_identity:
      description: The identity this run held the Lease under.
      type: str
      sample: alice@laptop/5f2a9c1e
    previous_holder:
      description: Who held it before, when this run took it over from a holder whose time was up.
      type: str
    took_over:
      description: Whether the Lease was taken over from another holder whose time was up.
      type: bool
    waited:
      description: Seconds spent waiting for another run to give the lock back.
      type: float
    released:
      description: Whether this call gave the lock back (false in check mode, where it was never taken).
      type: bool
secrets:
  description: The Secrets, by name only.
  returned: when the lock was taken
  type: dict
  contains:
    changed:
      description: Names of the Secrets that changed (or would).
      type: list
      elements: str
    pruned:
      description: The Secrets pruned, as C(Secret namespace/name).
      type: list
      elements: str
workloads:
  description: The result of applying O(resources), as RV(thinkus.ops.k8s_apply#module:objects) and pruned.
  returned: when the lock was taken
  type: dict
deployments:
  description: Each Deployment's rollout, as RV(thinkus.ops.k8s_rollout#module:deployments).
  returned: when the workloads were applied
  type: list
  elements: dict
seconds:
  description: How long the call took, from the first request to the lock given back.
  returned: success
  type: float
  sample: 0.21
"""

import base64
import binascii
import contextlib
import json
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.thinkus.ops.plugins.module_utils._k8s import K8sClient, K8sError, ObjectRef, k8s_argument_spec
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_apply import resolve_refs, split_kind, validate_resources
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_guard import (
    Refused,
    check_cluster,
    identity_spec,
    input_problem,
)
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_lease import LeaseKeeper, Lifeline, LockLost
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_steps import (
    Rollout,
    acquire,
    apply_all,
    release,
    rolled_out,
)


def secret_values(secrets: list[dict[str, Any]]) -> set[str]:
    """Every value of the Secrets, as given and decoded, and the passwords of a registry pull Secret."""
    found: set[str] = set()
    for secret in secrets:
        for value in (secret.get("stringData") or {}).values():
            found.update((str(value), base64.b64encode(str(value).encode()).decode()))
        for value in (secret.get("data") or {}).values():
            found.add(str(value))
            try:
                plain = base64.b64decode(str(value), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                continue
            found.add(plain)
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                for auth in (json.loads(plain).get("auths") or {}).values():
                    found.update(str(auth[k]) for k in ("password", "auth") if auth.get(k))
    return {v for v in found if v}


def strings_of(value: Any) -> set[str]:
    """Every scalar in a structure, as text: what no_log makes Ansible mask for an option."""
    if isinstance(value, dict):
        return set().union(*(strings_of(v) for v in value.values())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*(strings_of(v) for v in value)) if value else set()
    return set() if value is None else {str(value)}


def mask_secret_values(module: Any) -> None:
    """Narrow what no_log masks for O(secrets) to their values.

    The option is no_log, so it is never logged (not in the invocation, not in the host's journal);
    but as a whole it would make every string of the manifests masked wherever it appears in the
    result, names, labels and the namespace too, hiding every diff. Masked instead: the values.
    """
    values = secret_values(module.params["secrets"])
    module.no_log_values.difference_update(strings_of(module.params["secrets"]) - values)
    module.no_log_values.update(values)


# Per option (secrets, resources): the objects' references, and the kinds a CRD of the set brings.
Refs = dict[str, tuple[list[ObjectRef], set[tuple[str, str]]]]


class StepFailed(Exception):
    """A step called fail_json: the release stops there (and the lock is still given back)."""

    def __init__(self, msg: str, result: dict[str, Any]) -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result


class Step:
    """What a step of the three modules uses of an AnsibleModule, with the step's own params."""

    def __init__(self, module: Any, params: dict[str, Any]) -> None:
        self.module = module
        self.params = params
        self.check_mode = module.check_mode
        self._diff = module._diff

    def warn(self, warning: str) -> None:
        self.module.warn(warning)

    def fail_json(self, msg: str, **result: Any) -> None:
        raise StepFailed(msg, result)


def step(module: Any, **params: Any) -> Step:
    base = {k: module.params[k] for k in ("kubeconfig", "context", "request_timeout")}
    return Step(module, {**base, **params})


def apply_params(module: Any, resources: list[dict[str, Any]], prune: bool, prune_kinds: Any) -> dict[str, Any]:
    p = module.params
    return {
        "resources": resources,
        "state": "present",
        "namespace": p["namespace"],
        "field_manager": p["field_manager"],
        "force_conflicts": True,
        "hpa_owns_replicas": True,
        "prune": prune,
        "prune_selector": p["prune_selector"],
        "prune_kinds": prune_kinds,
    }


def resolve(module: Any, client: K8sClient) -> Refs:
    """The references of O(secrets) and O(resources) (discovery), before anything changes."""
    refs: Refs = {}
    problems: list[str] = []
    for option in ("secrets", "resources"):
        found, pending, wrong = resolve_refs(
            module.params[option], module.params["namespace"], lambda v, k: client.resource(v, k).namespaced
        )
        refs[option] = (found, pending)
        problems += [f"{option}: {m}" for m in wrong]
    if problems:
        raise StepFailed("invalid resources: " + "; ".join(problems), {})
    return refs


def release_run(module: Any, client: K8sClient, refs: Refs, result: dict[str, Any]) -> dict[str, Any]:
    """Take the lock, apply, wait; the lock is given back in any case. Fills ``result`` as it goes."""
    p = module.params
    lock = p["lock"]
    ref = ObjectRef("coordination.k8s.io/v1", "Lease", lock["name"], p["namespace"])
    taken = acquire(
        step(
            module,
            holder_identity=None,
            holder=lock["holder"],
            wait_timeout=lock["wait_timeout"],
            lease_duration=lock["lease_duration"],
            labels=lock["labels"],
            poll_interval=lock["poll_interval"],
        ),
        client,
        ref,
    )
    taken.pop("changed", None)
    result["lock"] = dict(taken, released=False)
    keeper = None
    if not module.check_mode:
        keeper = LeaseKeeper(client, ref, taken["holder_identity"], lifeline=Lifeline())
        keeper.duration = lock["lease_duration"]
        keeper.renewed_at = keeper.clock()  # just written by acquire
    done = lost = False
    try:
        own = apply_params(module, p["secrets"], p["prune"], ["Secret"])
        secrets = apply_all(step(module, **own), client, keeper, *refs["secrets"])
        result["secrets"] = {
            "changed": [o["name"] for o in secrets["objects"] if o["changed"]],
            "pruned": secrets["pruned"],
        }
        result["changed"] = result["changed"] or secrets["changed"]
        own = apply_params(module, p["resources"], p["prune"], p["prune_kinds"])
        answers: dict[str, dict[str, Any]] = {}
        workloads = apply_all(step(module, **own), client, keeper, *refs["resources"], answers=answers)
        result["diff"].extend(workloads.pop("diff", []))
        result["workloads"] = workloads
        result["changed"] = result["changed"] or workloads["changed"]
        deployments = [o for o in workloads["objects"] if o["kind"] == "Deployment"]
        revisions = (
            {o["name"]: o["rollback_to"] for o in deployments if o.get("rollback_to") is not None}
            if p["rollback"]
            else {}
        )
        wait = step(
            module,
            namespace=p["namespace"],
            deployments=[o["name"] for o in deployments],
            timeout=p["rollout_timeout"],
            rollback_revisions=revisions,
            redact=p["redact"],
            field_manager=p["rollback_field_manager"],
            poll_interval=p["rollout_poll_interval"],
        )
        try:
            # A Deployment whose apply answer shows it rolled out is not read again (its generation
            # did not change, so nothing rolls); the others are waited for.
            rolled = rolled_out(wait, Rollout(wait, client, keeper), answers)
        except StepFailed as failed:
            result["deployments"] = failed.result.get("deployments", [])
            result["changed"] = result["changed"] or bool(failed.result.get("changed"))
            raise
        result["deployments"] = rolled["deployments"]
        done = True
    except LockLost:
        # Not ours any more, or the run that holds it is dead (killed): deleting the Lease would be
        # a change after that point. It lapses after its duration, and the next deploy takes it over.
        lost = True
        raise
    finally:
        try:
            if not lost:
                give_back(module, client, ref, result)
        except (K8sError, LockLost) as exc:
            if done:
                raise
            module.warn(f"could not give the deploy lock back ({exc}): it lapses after its duration")
    return result


def give_back(module: Any, client: K8sClient, ref: ObjectRef, result: dict[str, Any]) -> None:
    """Delete the Lease if this run still holds it; in check mode it was never taken."""
    if module.check_mode:
        return
    lock = module.params["lock"]
    released = release(
        step(
            module,
            holder_identity=result["lock"]["holder_identity"],
            wait_timeout=lock["lease_duration"],
            poll_interval=lock["poll_interval"],
        ),
        client,
        ref,
    )
    result["lock"]["released"] = bool(released["changed"])


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    argument_spec = k8s_argument_spec()
    argument_spec.update(
        identity=dict(type="dict", options=identity_spec()),
        namespace=dict(type="str", required=True),
        namespace_labels=dict(type="dict", default={}),
        lock=dict(
            type="dict",
            required=True,
            options=dict(
                name=dict(type="str", required=True),
                holder=dict(type="str"),
                lease_duration=dict(type="int", default=900),
                wait_timeout=dict(type="int", default=300),
                poll_interval=dict(type="float", default=2.0),
                labels=dict(type="dict", default={}),
            ),
        ),
        # In the result, only their values are masked (mask_secret_values).
        secrets=dict(type="list", elements="dict", default=[], no_log=True),
        resources=dict(type="list", elements="dict", required=True),
        field_manager=dict(type="str", default="thinkus-ops"),
        prune=dict(type="bool", default=False),
        prune_selector=dict(type="str"),
        prune_kinds=dict(type="list", elements="str"),
        rollout_timeout=dict(type="int", default=300),
        rollout_poll_interval=dict(type="float", default=1.0),
        rollback=dict(type="bool", default=True),
        rollback_field_manager=dict(type="str", default="thinkus-ops-rollback"),
        redact=dict(type="list", elements="str", default=[], no_log=True),
        preflight_problems=dict(type="list", elements="str", default=[]),
    )
    return dict(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("prune", True, ["prune_selector"])],
    )


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    p = module.params
    if p["preflight_problems"]:
        module.fail_json(msg="; ".join(p["preflight_problems"]))
    mask_secret_values(module)
    if p["lock"]["lease_duration"] < 1:
        module.fail_json(msg=f"lock.lease_duration must be at least 1 second, got {p['lock']['lease_duration']}")
    problems = [f"secrets: {m}" for m in validate_resources(p["secrets"])]
    problems += [f"secrets: {s.get('kind')} is not a Secret" for s in p["secrets"] if s.get("kind") != "Secret"]
    problems += validate_resources(p["resources"])
    problems += [f"prune_kinds: {e} is not a kind" for e in p["prune_kinds"] or [] if not split_kind(e)[1]]
    if problems:
        module.fail_json(msg="invalid resources: " + "; ".join(problems))
    problem = input_problem(p["context"], p["identity"]) if p["identity"] else None
    if problem:
        module.fail_json(msg=problem)
    result: dict[str, Any] = {"changed": False, "diff": []}
    started = time.monotonic()
    try:
        client = K8sClient(p["kubeconfig"], p["context"], p["request_timeout"])
        if p["identity"]:
            try:
                result["cluster"] = check_cluster(client, p["identity"], module.check_mode)
            except Refused as exc:
                module.fail_json(msg=exc.msg, cluster=exc.result)
            result["changed"] = result["cluster"]["claimed"]
        refs = resolve(module, client)  # a kind the server does not serve: refused before any change
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": p["namespace"]}}
        if p["namespace_labels"]:
            namespace["metadata"]["labels"] = p["namespace_labels"]
        applied = apply_all(step(module, **apply_params(module, [namespace], False, None)), client)
        result["namespace"] = applied["objects"][0]
        result["changed"] = result["changed"] or applied["changed"]
        result["diff"].extend(applied.get("diff", []))
        release_run(module, client, refs, result)
    except StepFailed as exc:
        fail(module, result, exc.msg)
    except LockLost as exc:
        fail(module, result, f"{exc} (nothing applied after that point)")
    except K8sError as exc:
        fail(module, result, str(exc))
    result["seconds"] = round(time.monotonic() - started, 2)
    finish(module, result)


def fail(module: Any, result: dict[str, Any], msg: str) -> None:
    with contextlib.suppress(KeyError):
        del result["diff"]
    module.fail_json(msg=msg, **result)


def finish(module: Any, result: dict[str, Any]) -> None:
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
