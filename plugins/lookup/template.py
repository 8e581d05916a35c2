# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: template
version_added: 0.3.0
short_description: Template files rendered as ansible.builtin.template does, without deep-copying every variable
description:
  - Renders each template file with the task's variables and returns its text, the same text as the
    C(ansible.builtin.template) lookup with its default options gives. The C(template_*) variables and
    C(ansible_managed) (unless a variable of that name is set) are added, and so is O(template_vars).
  - That lookup deep-copies every variable of the host for each file before it adds those few. In a role
    that renders a dozen files from a large inventory the copies were most of its time on a no-op run. Here
    the variables are copied one level deep, which is enough to add those variables without changing the
    task's own; the templates are expected not to change the values they read, as no template of this
    collection does.
  - Template files are found as for M(ansible.builtin.template) (the role's C(templates) directory first),
    and includes and imports inside them as for that lookup.
options:
  _terms:
    description: The template files.
    type: list
    elements: path
    required: true
  template_vars:
    description: Variables added for these templates only, over the task's.
    type: dict
    default: {}
author:
  - Thinkus platform team (@thinkus-ai)
seealso:
  - plugin: ansible.builtin.template
    plugin_type: lookup
  - plugin: thinkus.ops.manifests
    plugin_type: lookup
"""

EXAMPLES = r"""
- name: Write the Prometheus configuration
  thinkus.ops.host_files:
    files:
      - path: /etc/prometheus/prometheus.yml
        content: "{{ lookup('thinkus.ops.template', 'prometheus.yml.j2') }}"

- name: One dashboard per service
  ansible.builtin.debug:
    msg: "{{ lookup('thinkus.ops.template', 'dashboard.json.j2', template_vars={'service': item}) }}"
  loop: "{{ services }}"
"""

RETURN = r"""
_raw:
  description: The text of each file, in order.
  type: list
  elements: str
"""

import copy
from collections.abc import Mapping

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase
from ansible.template import trust_as_template

from ansible_collections.thinkus.ops.plugins.plugin_utils._template_files import find_template, render


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        unknown = sorted(set(kwargs) - {"template_vars"})
        if unknown:
            raise AnsibleError(f"thinkus.ops.template takes only the option template_vars, got {', '.join(unknown)}")
        extra = kwargs.get("template_vars") or {}
        if not isinstance(extra, Mapping):
            raise AnsibleError(f"thinkus.ops.template: template_vars must be a dictionary, got {type(extra).__name__}")
        variables = variables if variables is not None else {}
        texts = []
        for term in terms:
            path, searchpath = find_template(self, variables, term)
            # One level: the template_* variables go on top, the task's own values are shared, not copied.
            available = copy.copy(variables)
            available.update(template_vars(term, path, "ansible_managed" not in available))
            available.update(extra)
            source = trust_as_template(self._loader.get_text_file_contents(path))
            texts.append(render(self._templar, source, available, searchpath))
        return texts


def template_vars(term: str, path: str, include_ansible_managed: bool) -> dict:
    """The variables ansible.builtin.template adds for one file (template_path, ansible_managed, ...)."""
    try:
        from ansible._internal._templating._template_vars import generate_ansible_template_vars
    except ImportError as exc:  # pragma: no cover - ansible-core moved it
        raise AnsibleError(f"thinkus.ops.template needs ansible-core 2.19's template variables: {exc}") from None
    return generate_ansible_template_vars(path=term, fullpath=path, include_ansible_managed=include_ansible_managed)
