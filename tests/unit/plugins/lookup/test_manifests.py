# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""thinkus.ops.manifests: objects rendered from template files, the variables left as they were."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleError
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from ansible_collections.thinkus.ops.plugins.lookup.manifests import LookupModule


def run(tmp_path: Path, files: dict[str, str], variables: dict[str, Any], *terms: str) -> list[dict[str, Any]]:
    (tmp_path / "templates").mkdir(exist_ok=True)
    for name, text in files.items():
        (tmp_path / "templates" / name).write_text(text)
    loader = DataLoader()
    lookup = LookupModule(loader=loader, templar=Templar(loader=loader))
    variables["ansible_search_path"] = [str(tmp_path)]
    return lookup.run(list(terms), variables=variables)


def test_objects_of_every_file_in_order_without_empty_documents(tmp_path: Path) -> None:
    files = {
        "a.yml.j2": "---\n{% for n in names %}\n---\nkind: ConfigMap\nmetadata: {name: {{ n }}}\n{% endfor %}\n---\n",
        "b.yml.j2": "kind: Secret\nmetadata: {name: s}\ndata: {key: {{ value | b64encode }}}\n",
    }
    names = ["one", "two"]
    variables: dict[str, Any] = {"names": names, "value": "v"}
    found = run(tmp_path, files, variables, "a.yml.j2", "b.yml.j2")
    assert [(o["kind"], o["metadata"]["name"]) for o in found] == [
        ("ConfigMap", "one"),
        ("ConfigMap", "two"),
        ("Secret", "s"),
    ]
    assert found[2]["data"] == {"key": "dg=="}
    # the very dict the lookup was given: nothing added to it (no template_* variables), nothing changed
    assert variables == {"names": ["one", "two"], "value": "v", "ansible_search_path": [str(tmp_path)]}
    assert variables["names"] is names


def test_variables_that_are_templates_are_rendered(tmp_path: Path) -> None:
    variables = {"instance": "thinkus", "labels": {"part-of": trust_as_template("{{ instance }}")}}
    found = run(
        tmp_path, {"c.yml.j2": "kind: ConfigMap\nmetadata:\n  labels: {{ labels | to_json }}\n"}, variables, "c.yml.j2"
    )
    assert found == [{"kind": "ConfigMap", "metadata": {"labels": {"part-of": "thinkus"}}}]


def test_a_document_that_is_not_an_object_is_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(AnsibleError, match=r"d.yml.j2: document 2 is a str, not an object"):
        run(tmp_path, {"d.yml.j2": "kind: ConfigMap\n---\njust text\n"}, {}, "d.yml.j2")


def test_invalid_yaml_is_refused_by_line_never_quoting_the_text(tmp_path: Path) -> None:
    with pytest.raises(AnsibleError) as failed:
        run(tmp_path, {"e.yml.j2": "kind: Secret\ndata:\n  key: {{ secret }}\n"}, {"secret": "s3cret: [x"}, "e.yml.j2")
    assert "e.yml.j2 did not render to valid YAML (line 3" in str(failed.value)
    assert "s3cret" not in str(failed.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AnsibleError, match=r"the template file nope\.yml\.j2 could not be found"):
        run(tmp_path, {}, {}, "nope.yml.j2")


def test_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AnsibleError, match="takes no options, got trim_blocks"):
        LookupModule(loader=DataLoader(), templar=Templar(loader=DataLoader())).run(["x"], {}, trim_blocks=False)
