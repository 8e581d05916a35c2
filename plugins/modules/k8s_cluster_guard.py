#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: k8s_cluster_guard
short_description: Refuse to go on unless the cluster is the one the inventory names
version_added: 0.1.0
description:
  - Checks, read only and before a role or playbook changes anything, that the API server reached through
    O(kubeconfig) and the pinned O(context) is the environment's own cluster, and fails naming the expected
    and the found value of whatever differs.
  - The context must be given and must exist in the kubeconfig; the kubeconfig's C(current-context) is never
    used, so a shell pointed at another cluster cannot redirect a run.
  - The cluster itself must carry the identity. O(identity.uid), when set, is compared with the UID of the cluster's
    C(kube-system) namespace (it never changes during the cluster's life). The environment marker, a ConfigMap
    (O(identity.marker_namespace)/O(identity.marker_name), key C(environment)), must name O(identity.environment).
  - A cluster without a marker is refused unless O(identity.claim=true); then the marker is created (never replaced),
    so the first deploy into a new or freshly reset cluster claims it and every later run is checked against it.
    A marker naming another environment is never overwritten.
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
      - Reads only; reports C(changed) when a real run would write the marker.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  context:
    description:
      - The kubeconfig context of the environment's cluster. Required here (no fallback to the
        current context or E(K8S_AUTH_CONTEXT)).
    type: str
    required: true
  identity:
    description:
      - What the cluster must carry. Roles pass their C(<role>_cluster_identity) variable as it is.
    type: dict
    required: true
    suboptions:
      environment:
        description:
          - The environment name the cluster's marker must hold, for example C(staging).
        type: str
        required: true
      uid:
        description:
          - The UID of the cluster's C(kube-system) namespace
            (C(kubectl --context <context> get namespace kube-system -o jsonpath='{.metadata.uid}')).
          - Empty does not compare it (for clusters that are recreated, like a local one).
        type: str
        default: ""
      claim:
        description:
          - Write the marker when the cluster has none. A marker that exists is never changed.
        type: bool
        default: false
      marker_namespace:
        description:
          - Namespace of the marker ConfigMap. It must exist.
        type: str
        default: kube-system
      marker_name:
        description:
          - Name of the marker ConfigMap.
        type: str
        default: thinkus-environment
seealso:
  - module: thinkus.ops.k8s_apply
"""

EXAMPLES = r"""
- name: Check that this is the staging cluster before changing it
  thinkus.ops.k8s_cluster_guard:
    kubeconfig: "{{ k8s_deploy_kubeconfig }}"
    context: thinkus-staging
    identity:
      environment: staging
      uid: 6f0c7f8e-2b1d-4c52-9a57-0e9a3a6f1b21

- name: Claim a brand-new local cluster on its first deploy
  thinkus.ops.k8s_cluster_guard:
    context: thinkus-local
    identity:
      environment: local
      claim: true
"""

RETURN = r"""
context:
  description: The kubeconfig context used.
  returned: success
  type: str
  sample: thinkus-staging
server:
  description: The API server URL of that context.
  returned: success
  type: str
  sample: https://127.0.0.1:6443
uid:
  description: The UID of the cluster's kube-system namespace.
  returned: success
  type: str
environment:
  description: The environment the cluster's marker names (after a claim, the one written).
  returned: success
  type: str
  sample: staging
claimed:
  description: Whether this run wrote the marker (in check mode, whether a real run would).
  returned: success
  type: bool
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.thinkus.ops.plugins.module_utils._k8s import K8sClient, K8sError, k8s_argument_spec
from ansible_collections.thinkus.ops.plugins.module_utils._k8s_guard import (
    Refused,
    check_cluster,
    identity_spec,
    input_problem,
)


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    argument_spec = k8s_argument_spec()
    argument_spec.update(
        context=dict(type="str", required=True),
        identity=dict(type="dict", required=True, options=identity_spec()),
    )
    return dict(argument_spec=argument_spec, supports_check_mode=True)


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    problem = input_problem(module.params["context"], module.params["identity"])
    if problem:
        module.fail_json(msg=problem)
    try:
        client = K8sClient(module.params["kubeconfig"], module.params["context"], module.params["request_timeout"])
        found = check_cluster(client, module.params["identity"], module.check_mode)
    except Refused as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    except K8sError as exc:
        module.fail_json(msg=f"Cannot check the cluster's identity: {exc}. Nothing was changed.")
    module.exit_json(changed=found["claimed"], **found)


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
