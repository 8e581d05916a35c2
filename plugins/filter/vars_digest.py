# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A sha256 of the values of some variables, for "these inputs were already checked in this run"."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

# Stands for a variable that cannot be templated (it names an undefined variable, for example):
# the role's checks say so when the variable matters; a digest only has to be the same twice.
UNRENDERABLE = "<cannot be templated>"


def vars_digest(names: Iterable[str], variables: Mapping[str, Any]) -> str:
    """sha256 of ``{name: value}`` (JSON, sorted keys), each value read from ``variables`` on its own."""
    values: dict[str, str] = {}
    for name in sorted(set(names)):
        try:
            # Reading a lazily templated value renders it, and so does serialising what it contains.
            values[name] = json.dumps(variables[name], sort_keys=True, default=str)
        except Exception:  # any templating error: the value is left out, its name kept
            values[name] = UNRENDERABLE
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"vars_digest": vars_digest}
