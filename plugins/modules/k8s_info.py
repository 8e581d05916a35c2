#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: k8s_info
short_description: Read Kubernetes objects of any kind the cluster serves
version_added: 0.1.0
description:
  - Reads one object by name, or the objects of a kind in a namespace (or cluster-wide), optionally filtered by
    label and field selectors, through the same client, connection options and kind discovery as
    M(thinkus.ops.k8s_apply).
  - A kind the API server does not serve (for example a CustomResourceDefinition that is not installed) is not an
    error; the module then returns no objects and RV(api_found=false).
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
      - Reads only; runs the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  api_version:
    description: The C(apiVersion) of the kind, for example V(v1), V(apps/v1), V(cert-manager.io/v1).
    type: str
    default: v1
  kind:
    description: The kind, for example V(Secret) or V(CustomResourceDefinition).
    type: str
    required: true
  name:
    description: Name of the one object to read. Without it, every object that matches the selectors is returned.
    type: str
  namespace:
    description:
      - Namespace of a namespaced kind. Without it, a list covers every namespace; reading one object by
        O(name) needs it.
    type: str
  label_selector:
    description: Label selector of a list, for example C(app.kubernetes.io/part-of=thinkus).
    type: str
  field_selector:
    description: Field selector of a list, for example C(metadata.name=prometheus).
    type: str
notes:
  - The objects are returned as the server holds them. A Secret's values are in them, so a task that reads
    Secrets needs C(no_log=true).
seealso:
  - module: thinkus.ops.k8s_apply
"""

EXAMPLES = r"""
- name: Look for cert-manager's ClusterIssuer CRD
  thinkus.ops.k8s_info:
    api_version: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    name: clusterissuers.cert-manager.io
  register: __issuer_crd

- name: Wait for cert-manager to fill the TLS Secret
  thinkus.ops.k8s_info:
    kind: Secret
    namespace: thinkus
    name: api-tls
  register: __tls
  until: __tls.resources | length > 0
  retries: 60
  delay: 5
  no_log: true
"""

RETURN = r"""
resources:
  description: The objects found (an empty list when there are none), each as the server returns it.
  returned: always
  type: list
  elements: dict
api_found:
  description: Whether the API server serves O(kind) in O(api_version).
  returned: always
  type: bool
  sample: true
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.thinkus.ops.plugins.module_utils._k8s import (
    K8sClient,
    K8sError,
    ObjectRef,
    UnknownKind,
    k8s_argument_spec,
)


def read(client: K8sClient, params: dict[str, Any]) -> dict[str, Any]:
    try:
        resource = client.resource(params["api_version"], params["kind"])
    except UnknownKind:
        return {"changed": False, "resources": [], "api_found": False}
    if params["name"]:
        namespace = params["namespace"] if resource.namespaced else None
        if resource.namespaced and not namespace:
            raise K8sError(f"{params['kind']} is namespaced: reading {params['name']} needs the namespace option")
        found = client.get(ObjectRef(params["api_version"], params["kind"], params["name"], namespace))
        items = [found] if found is not None else []
    else:
        items = client.list(
            params["api_version"],
            params["kind"],
            params["namespace"] if resource.namespaced else None,
            label_selector=params["label_selector"],
            field_selector=params["field_selector"],
        )
    return {"changed": False, "resources": items, "api_found": True}


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    argument_spec = k8s_argument_spec()
    argument_spec.update(
        api_version=dict(type="str", default="v1"),
        kind=dict(type="str", required=True),
        name=dict(type="str"),
        namespace=dict(type="str"),
        label_selector=dict(type="str"),
        field_selector=dict(type="str"),
    )
    return dict(argument_spec=argument_spec, supports_check_mode=True)


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    try:
        client = K8sClient(module.params["kubeconfig"], module.params["context"], module.params["request_timeout"])
        module.exit_json(**read(client, module.params))
    except K8sError as exc:
        module.fail_json(msg=str(exc))


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
