# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: k8s_info
version_added: 0.3.0
short_description: Kubernetes objects of one kind, read as the thinkus.ops.k8s_info module reads them
description:
  - Returns the objects M(thinkus.ops.k8s_info) returns in RV(thinkus.ops.k8s_info#module:resources), read with the
    same client, connection options and kind discovery, for variables that need them, for example an inventory
    that points at the ClusterIP of a Service.
  - The client is the collection's own; the C(kubernetes) Python package is not imported unless the kubeconfig uses
    an auth-provider or a proxy-url. A variable that uses this lookup is templated again in every task that reads
    it, so that import (a quarter of a second) would be paid by each of those tasks.
  - A kind the API server does not serve returns no objects, as does a list in a namespace that does not exist.
  - Takes options only, no terms. Use it with C(query) or C(wantlist=true); the result is a list of dictionaries.
options:
  api_version:
    description: The C(apiVersion) of the kind, for example V(v1) or V(apps/v1).
    type: str
    default: v1
  kind:
    description: The kind, for example V(Service).
    type: str
    required: true
  name:
    description: Name of the one object to read. Without it, every object that matches the selectors is returned.
    type: str
  namespace:
    description: Namespace of a namespaced kind. Without it, a list covers every namespace.
    type: str
  label_selector:
    description: Label selector of a list.
    type: str
  field_selector:
    description: Field selector of a list.
    type: str
  kubeconfig:
    description:
      - Path to the kubeconfig file; then the in-cluster service account when running in a pod, then
        C(~/.kube/config).
    type: path
    env:
      - name: K8S_AUTH_KUBECONFIG
      - name: KUBECONFIG
  context:
    description: The kubeconfig context to use; the kubeconfig's C(current-context) if not set.
    type: str
    env:
      - name: K8S_AUTH_CONTEXT
  request_timeout:
    description: Timeout in seconds of one request to the API server.
    type: float
    default: 10
notes:
  - A Secret's values are in the objects returned; a task that reads Secrets this way needs C(no_log=true).
author:
  - Thinkus platform team (@thinkus-ai)
seealso:
  - module: thinkus.ops.k8s_info
"""

EXAMPLES = r"""
- name: The ClusterIP of every Service in the thinkus namespace
  ansible.builtin.debug:
    msg: "{{ query('thinkus.ops.k8s_info', kind='Service', namespace='thinkus') | items2dict('metadata', 'spec') }}"
"""

RETURN = r"""
_list:
  description: The objects, as the API server holds them.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

from ansible_collections.thinkus.ops.plugins.module_utils._k8s import K8sClient, K8sError
from ansible_collections.thinkus.ops.plugins.modules.k8s_info import read

OPTIONS = (
    "api_version",
    "kind",
    "name",
    "namespace",
    "label_selector",
    "field_selector",
    "kubeconfig",
    "context",
    "request_timeout",
)


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if terms:
            raise AnsibleError("thinkus.ops.k8s_info takes options only (kind=..., namespace=...), not terms")
        self.set_options(var_options=variables, direct=kwargs)
        params = {option: self.get_option(option) for option in OPTIONS}
        try:
            client = K8sClient(params["kubeconfig"], params["context"], params["request_timeout"])
            return read(client, params)["resources"]
        except K8sError as exc:
            raise AnsibleError(f"thinkus.ops.k8s_info: {exc}") from None
