"""Fail when a role's defaults/main.yml and meta/argument_specs.yml disagree.

Every public variable a role takes lives in defaults/main.yml (the role's API, with its
default) and is described in meta/argument_specs.yml (types, choices, required). A key in
one and not the other means documentation and behaviour have drifted.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def role_problems(role: Path) -> list[str]:
    defaults_file = role / "defaults" / "main.yml"
    specs_file = role / "meta" / "argument_specs.yml"
    if not specs_file.is_file():
        return [f"{role.name}: meta/argument_specs.yml is missing"]
    defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.is_file() else {}
    defaults = defaults or {}
    specs = yaml.safe_load(specs_file.read_text()) or {}
    entry = (specs.get("argument_specs") or {}).get("main")
    if entry is None:
        return [f"{role.name}: argument_specs has no 'main' entry point"]
    options = entry.get("options") or {}
    problems = []
    for key in sorted(set(defaults) - set(options)):
        problems.append(f"{role.name}: {key} is in defaults/main.yml but not in meta/argument_specs.yml")
    for key in sorted(set(options) - set(defaults)):
        if not options[key].get("required"):
            problems.append(f"{role.name}: {key} is in meta/argument_specs.yml but has no default in defaults/main.yml")
    for key, opt in sorted(options.items()):
        if not key.startswith(f"{role.name}_"):
            problems.append(f"{role.name}: option {key} does not carry the role prefix '{role.name}_'")
        if "description" not in opt:
            problems.append(f"{role.name}: option {key} has no description")
    return problems


def main(argv: list[str]) -> int:
    roles_dir = Path(argv[1]) if len(argv) > 1 else ROOT / "roles"
    roles = sorted(p for p in roles_dir.iterdir() if p.is_dir()) if roles_dir.is_dir() else []
    problems = [p for role in roles for p in role_problems(role)]
    for p in problems:
        print(p, file=sys.stderr)
    print(f"argument specs: {len(roles)} role(s) checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
