#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: k8s_lease
short_description: Take and release a lock held as a Kubernetes Lease
version_added: 0.1.0
description:
  - A C(coordination.k8s.io/v1) Lease used as a lock, for example so that two deploys of the same
    environment cannot interleave.
  - With O(state=acquired), takes the Lease when nobody holds it, when its holder's time is up
    (C(renewTime) + C(leaseDurationSeconds) in the past) or when O(holder_identity) already holds it
    (then it is renewed). Otherwise waits, up to O(wait_timeout), then fails naming the holder and when
    its Lease expires.
  - With O(state=released), deletes the Lease if O(holder_identity) holds it, and leaves it alone if someone
    else took it over meanwhile.
  - Every write carries the C(resourceVersion) read just before, so two takers racing for the Lease cannot
    both win.
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
      - Reads the Lease only; reports whether it would be taken (C(changed)) or who holds it, without waiting.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - Taking a Lease one already holds renews it, which is a change (C(renewTime) moves).
      - Releasing a Lease one does not hold changes nothing.
options:
  name:
    description:
      - Name of the Lease.
    type: str
    required: true
  namespace:
    description:
      - Namespace of the Lease. It must exist.
    type: str
    required: true
  state:
    description:
      - V(acquired) takes or renews the Lease; V(released) gives it back.
    type: str
    choices: [acquired, released]
    default: acquired
  holder:
    description:
      - Who takes the Lease, as people will read it in the failure message of the next deploy, for example
        C(alice@laptop). Defaults to the user and host name the module runs as.
      - A random suffix is added so that two runs by the same person are told apart; the full identity is
        returned as RV(holder_identity).
    type: str
  holder_identity:
    description:
      - The exact identity returned by an earlier O(state=acquired), to renew or release that hold.
      - Required with O(state=released).
    type: str
  lease_duration:
    description:
      - Seconds the hold is valid without renewal. After that, another run takes it over.
      - Keep it above the longest deploy, or renew the Lease during the deploy (option C(lock) of
        M(thinkus.ops.k8s_apply) and M(thinkus.ops.k8s_rollout) does, from inside the module doing the work).
    type: int
    default: 900
  wait_timeout:
    description:
      - Seconds to wait for a Lease another holder has, before failing. V(0) fails at once.
      - With O(state=released), how long to keep trying to give the Lease back while the API server does
        not answer or answers 429/5xx (restarting); past that, the Lease lapses after its duration anyway.
    type: int
    default: 300
  poll_interval:
    description:
      - Seconds between two reads while waiting.
    type: float
    default: 2
  labels:
    description:
      - Labels set on the Lease when it is created.
    type: dict
    default: {}
seealso:
  - module: thinkus.ops.k8s_apply
  - name: Leases
    description: Kubernetes Lease objects and their use as locks.
    link: https://kubernetes.io/docs/concepts/architecture/leases/
"""

EXAMPLES = r"""
- name: Take the deploy lock (waits up to 5 minutes for another deploy)
  thinkus.ops.k8s_lease:
    name: thinkus-deploy
    namespace: thinkus
    lease_duration: 900
    wait_timeout: 300
  register: __lock

- name: Give the deploy lock back
  thinkus.ops.k8s_lease:
    name: thinkus-deploy
    namespace: thinkus
    state: released
    holder_identity: "{{ __lock.holder_identity }}"
"""

RETURN = r"""
holder_identity:
  description: The identity holding the Lease for this run (pass it to renew or release).
  returned: success
  type: str
  sample: alice@laptop/5f3a9c1e
previous_holder:
  description: Who held the Lease before, if anyone (an expired holder when RV(took_over) is true).
  returned: success
  type: str
  sample: bob@ci-runner/0c1d2e3f
took_over:
  description: Whether the Lease was taken from a holder whose time was up.
  returned: success
  type: bool
waited:
  description: Seconds spent waiting for another holder.
  returned: success
  type: float
  sample: 12.5
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.thinkus.ops.plugins.module_utils._k8s import K8sClient, K8sError, ObjectRef, k8s_argument_spec
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_steps import acquire, release


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    argument_spec = k8s_argument_spec()
    argument_spec.update(
        name=dict(type="str", required=True),
        namespace=dict(type="str", required=True),
        state=dict(type="str", choices=["acquired", "released"], default="acquired"),
        holder=dict(type="str"),
        holder_identity=dict(type="str"),
        lease_duration=dict(type="int", default=900),
        wait_timeout=dict(type="int", default=300),
        poll_interval=dict(type="float", default=2.0),
        labels=dict(type="dict", default={}),
    )
    return dict(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("state", "released", ["holder_identity"])],
    )


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    if module.params["lease_duration"] < 1:
        module.fail_json(msg=f"lease_duration must be at least 1 second, got {module.params['lease_duration']}")
    ref = ObjectRef("coordination.k8s.io/v1", "Lease", module.params["name"], module.params["namespace"])
    try:
        client = K8sClient(module.params["kubeconfig"], module.params["context"], module.params["request_timeout"])
        if module.params["state"] == "acquired":
            module.exit_json(**acquire(module, client, ref))
        module.exit_json(**release(module, client, ref))
    except K8sError as exc:
        module.fail_json(msg=str(exc))


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
