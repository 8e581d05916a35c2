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

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.thinkus.ops.plugins.module_utils._k8s import K8sClient, K8sError, k8s_argument_spec
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_lease import LockLost, keeper_of, lock_argument_spec
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_steps import Rollout, rolled_back, rolled_out


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
