# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Options and attributes shared by the thinkus.ops Kubernetes modules."""

    # How every k8s_* module finds and reaches the API server.
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path to the kubeconfig file.
      - If not set, the value of E(K8S_AUTH_KUBECONFIG) or E(KUBECONFIG) is used, then the in-cluster
        service account when running in a pod, then C(~/.kube/config).
    type: path
  context:
    description:
      - The kubeconfig context to use.
      - If not set, the value of E(K8S_AUTH_CONTEXT) is used, then the kubeconfig's C(current-context).
    type: str
  request_timeout:
    description:
      - Timeout in seconds of one request to the API server.
      - A server that cannot be reached fails the module at once with its address and the
        kubeconfig context in the message (no retries).
    type: float
    default: 10
requirements:
  - kubernetes (the Python client) >= 29
notes:
  - Talks to the API server directly with the C(kubernetes) Python client; kubectl is not needed.
"""

    # The action group the modules belong to (meta/runtime.yml). Extend it together with
    # thinkus.ops.attributes, which describes check_mode, diff_mode and idempotent.
    ACTION_GROUP = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/thinkus.ops.k8s) in C(module_defaults) to set the connection options once.
    support: full
    membership:
      - thinkus.ops.k8s
"""

    # Option lock of the modules that keep a deploy lock (thinkus.ops.k8s_lease) renewed.
    LOCK = r"""
options:
  lock:
    description:
      - A Lease this run holds (taken with M(thinkus.ops.k8s_lease)), renewed while the module works so
        that the lock lives exactly as long as the run. It is renewed once when the module starts, then whenever
        a quarter of its C(leaseDurationSeconds) has passed.
      - When the Lease is no longer held by O(lock.holder_identity), has not been renewed within its duration,
        or cannot be renewed right before a change, the module fails before that change, saying why.
      - Before each renewal, and on every status poll, the module checks that the ansible command running it
        is still alive (Ansible's workers outlive a killed C(ansible-playbook) in sessions of their own); once it
        is gone, the module stops renewing and fails before any further change, so the Lease lapses after its
        duration. Linux only (C(/proc)); elsewhere only the Lease itself is checked.
      - Not used in check mode, where M(thinkus.ops.k8s_lease) does not take the Lease either.
    type: dict
    suboptions:
      name:
        description: Name of the Lease.
        type: str
        required: true
      namespace:
        description: Namespace of the Lease.
        type: str
        required: true
      holder_identity:
        description: The identity that holds it (RV(thinkus.ops.k8s_lease#module:holder_identity)).
        type: str
        required: true
"""
