# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Finding and rendering a role's template file, for the thinkus.ops.template and manifests lookups.

Not a public API: the leading underscore means other collections must not import it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleError


def find_template(lookup: Any, variables: Mapping[str, Any], term: str) -> tuple[str, list[str]]:
    """The file a template lookup reads for ``term`` (the role's ``templates`` first), and the search
    path of the includes inside it, both as ansible.builtin.template's lookup finds them."""
    path = lookup.find_file_in_search_path(variables, "templates", term)
    if not path:
        raise AnsibleError(f"the template file {term} could not be found for the lookup")
    searchpath = [os.path.dirname(path)]
    for base in variables.get("ansible_search_path", []):
        searchpath += [os.path.join(base, "templates"), base]
    return path, searchpath


def render(templar: Any, source: Any, variables: Mapping[str, Any], searchpath: list[str]) -> Any:
    """``source`` rendered as ansible.builtin.template's lookup renders a file with its default options:
    backslashes kept, trim_blocks, no forced finalization of the top level."""
    from ansible._internal._templating._engine import TemplateOptions, TemplateOverrides

    overrides = TemplateOverrides.from_kwargs(
        dict(
            variable_start_string="{{",
            variable_end_string="}}",
            comment_start_string="{#",
            comment_end_string="#}",
            trim_blocks=True,
        )
    )
    engine = templar.copy_with_new_env(available_variables=variables, searchpath=searchpath)._engine
    return engine.template(source, options=TemplateOptions(escape_backslashes=False, overrides=overrides))
