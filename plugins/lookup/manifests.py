# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: manifests
version_added: 0.3.0
short_description: Kubernetes objects rendered from a role's templates
description:
  - Renders each template file with the task's variables and reads the result as a YAML stream, returning the
    objects of every file in order; empty documents (a C(---) with nothing after it) are left out.
  - The same as C(lookup('ansible.builtin.template', file) | ansible.builtin.from_yaml_all | list), without one cost of
    it, which was most of the time a no-op deploy spent on its manifests (that lookup deep-copies every variable of
    the host for each file, to add the C(template_*) variables). Here the variables are read as they are, and the
    C(template_path), C(template_mtime) and C(ansible_managed) variables are not set.
  - Template files are found as for M(ansible.builtin.template) (the role's C(templates) directory first).
  - Use it with C(query) or C(wantlist=true); the result is a list of dictionaries.
options:
  _terms:
    description: The template files.
    type: list
    elements: path
    required: true
author:
  - Thinkus platform team (@thinkus-ai)
seealso:
  - plugin: ansible.builtin.template
    plugin_type: lookup
"""

EXAMPLES = r"""
- name: Deploy the role's objects
  thinkus.ops.k8s_apply:
    resources: "{{ query('thinkus.ops.manifests', 'workloads.yml.j2') }}"
"""

RETURN = r"""
_list:
  description: The objects of every file, in order.
  type: list
  elements: dict
"""

import yaml
from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase
from ansible.template import trust_as_template

from ansible_collections.thinkus.ops.plugins.plugin_utils._template_files import find_template

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if kwargs:
            raise AnsibleError(f"thinkus.ops.manifests takes no options, got {', '.join(sorted(kwargs))}")
        variables = variables or {}
        objects = []
        for term in terms:
            path, searchpath = find_template(self, variables, term)
            source = trust_as_template(self._loader.get_text_file_contents(path))
            # The variables as they are: nothing is added to them, so nothing needs the copy the template lookup makes.
            templar = self._templar.copy_with_new_env(available_variables=variables, searchpath=searchpath)
            text = templar.template(source, escape_backslashes=False)
            try:
                documents = list(yaml.load_all(str(text), Loader=Loader))
            except yaml.YAMLError as exc:
                # Where, never what: a rendered Secret holds its values.
                mark = getattr(exc, "problem_mark", None)
                where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
                raise AnsibleError(f"{term} did not render to valid YAML{where}") from None
            for number, document in enumerate(documents, 1):
                if document is None:
                    continue
                if not isinstance(document, dict):
                    kind = type(document).__name__
                    raise AnsibleError(f"{term}: document {number} is a {kind}, not an object (a mapping)")
                objects.append(document)
        return objects
