# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""thinkus.ops.template: the text of ansible.builtin.template's lookup, the variables left as they were."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleError
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import lookup_loader
from ansible.template import Templar, trust_as_template

from ansible_collections.thinkus.ops.plugins.lookup.template import LookupModule

FILES = {
    "loop.j2": "{# a comment #}\n{% for n in names %}\n- {{ n }}\n{% endfor %}\nlast line without newline",
    "newline.j2": "value: {{ value }}\n\n",
    "backslash.j2": 'regex: "{{ pattern }}"\npath: C:\\temp\\{{ value }}\n',
    "include.j2": "before\n{% include 'part.j2' %}\nafter {{ value }}\n",
    "part.j2": "part sees {{ value }} and {{ names | length }} names\n",
    "managed.j2": "# {{ ansible_managed }}\nfile: {{ template_path }}\n",
    "vars.j2": "service: {{ service.name }} on {{ service.port }}\n",
    "nested.j2": "outer {{ lookup(lookup_name, 'part.j2') }}",
    "native.j2": "{{ names }}",
}


def render(lookup: Any, tmp_path: Path, variables: dict[str, Any], term: str, **kwargs: Any) -> Any:
    (tmp_path / "templates").mkdir(exist_ok=True)
    for name, text in FILES.items():
        (tmp_path / "templates" / name).write_text(text)
    variables.setdefault("ansible_search_path", [str(tmp_path)])
    return lookup.run([term], variables=variables, **kwargs)


def ours() -> LookupModule:
    loader = DataLoader()
    return LookupModule(loader=loader, templar=Templar(loader=loader))


def builtin() -> Any:
    loader = DataLoader()
    return lookup_loader.get("template", loader=loader, templar=Templar(loader=loader))


def base_variables(lookup_name: str = "thinkus.ops.template") -> dict[str, Any]:
    return {
        "names": ["one", "two"],
        "value": "v1",
        "pattern": "^[a-z]+\\.[0-9]$",
        "lookup_name": lookup_name,
    }


@pytest.mark.parametrize("term", sorted(set(FILES) - {"nested.j2", "vars.j2"}))
def test_the_same_text_as_the_builtin_lookup(tmp_path: Path, term: str) -> None:
    expected = render(builtin(), tmp_path, base_variables(), term)
    got = render(ours(), tmp_path, base_variables(), term)
    assert got == expected
    assert got[0]  # something was rendered


def test_a_lookup_inside_a_template(tmp_path: Path) -> None:
    # The inner lookup is the builtin one: a collection's plugins are not routed in unit tests.
    expected = render(builtin(), tmp_path, base_variables("template"), "nested.j2")
    got = render(ours(), tmp_path, base_variables("template"), "nested.j2")
    assert got == expected == ["outer part sees v1 and 2 names\n"]


def test_template_vars_are_added_for_these_templates_only(tmp_path: Path) -> None:
    service = {"name": "orchestrator", "port": 8080}
    variables = base_variables()
    expected = render(builtin(), tmp_path, base_variables(), "vars.j2", template_vars={"service": service})
    got = render(ours(), tmp_path, variables, "vars.j2", template_vars={"service": service})
    assert got == expected == ["service: orchestrator on 8080\n"]
    assert "service" not in variables


def test_the_variables_are_left_as_they_were(tmp_path: Path) -> None:
    variables = base_variables()
    names = variables["names"]
    render(ours(), tmp_path, variables, "managed.j2")
    assert set(variables) == {*base_variables(), "ansible_search_path"}  # no template_* or ansible_managed added
    assert variables["names"] is names


def test_a_users_ansible_managed_is_kept(tmp_path: Path) -> None:
    variables = {**base_variables(), "ansible_managed": "Managed by thinkus.ops"}
    expected = render(builtin(), tmp_path, dict(variables), "managed.j2")
    got = render(ours(), tmp_path, dict(variables), "managed.j2")
    assert got == expected == ["# Managed by thinkus.ops\nfile: managed.j2\n"]


def test_variables_that_are_templates_are_rendered(tmp_path: Path) -> None:
    variables = {**base_variables(), "value": trust_as_template("{{ names | join('+') }}")}
    assert render(ours(), tmp_path, variables, "newline.j2") == ["value: one+two\n\n"]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AnsibleError, match=r"the template file nope\.j2 could not be found"):
        render(ours(), tmp_path, base_variables(), "nope.j2")


def test_an_unknown_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AnsibleError, match="trim_blocks"):
        render(ours(), tmp_path, base_variables(), "newline.j2", trim_blocks=False)


def test_template_vars_must_be_a_dictionary(tmp_path: Path) -> None:
    with pytest.raises(AnsibleError, match="template_vars must be a dictionary, got list"):
        render(ours(), tmp_path, base_variables(), "newline.j2", template_vars=["service"])
