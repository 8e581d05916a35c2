# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""thinkus.ops.vars_digest: the same inputs give the same digest, any change another, an unrenderable one no error."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ansible_collections.thinkus.ops.plugins.filter.vars_digest import vars_digest


class Lazy(Mapping[str, Any]):
    """Like Ansible's task variables: reading a value may fail (an undefined variable inside it)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def __getitem__(self, name: str) -> Any:
        value = self.values[name]
        if isinstance(value, Exception):
            raise value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


BASE = {"monitoring_mode": "host", "monitoring_services": [{"name": "go", "targets": ["10.0.0.1:8080"]}]}


def test_same_values_same_digest_whatever_the_order() -> None:
    first = vars_digest(["monitoring_mode", "monitoring_services"], BASE)
    assert first == vars_digest(["monitoring_services", "monitoring_mode"], dict(reversed(list(BASE.items()))))
    assert len(first) == 64 and int(first, 16) >= 0


def test_any_changed_value_changes_the_digest() -> None:
    names = ["monitoring_mode", "monitoring_services"]
    before = vars_digest(names, BASE)
    assert vars_digest(names, {**BASE, "monitoring_mode": "cluster"}) != before
    changed = {**BASE, "monitoring_services": [{"name": "go", "targets": ["10.0.0.2:8080"]}]}
    assert vars_digest(names, changed) != before
    assert vars_digest([*names, "monitoring_extra"], {**BASE, "monitoring_extra": 1}) != before


def test_a_value_that_cannot_be_templated_is_a_marker_not_an_error() -> None:
    names = ["monitoring_mode", "monitoring_grafana_admin_password"]
    broken = Lazy({**BASE, "monitoring_grafana_admin_password": KeyError("vault_grafana_admin_password")})
    digest = vars_digest(names, broken)
    assert digest == vars_digest(names, broken)  # the same twice in a run
    defined = Lazy({**BASE, "monitoring_grafana_admin_password": "s3cret"})
    assert vars_digest(names, defined) != digest
    assert "s3cret" not in vars_digest(names, defined)
