"""The defaults/argument_specs check must catch drift in both directions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("check_argument_specs", ROOT / "tools" / "check_argument_specs.py")
assert _spec and _spec.loader
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def _role(tmp_path: Path, name: str, defaults: str, specs: str | None) -> Path:
    role = tmp_path / name
    (role / "defaults").mkdir(parents=True)
    (role / "defaults" / "main.yml").write_text(defaults)
    if specs is not None:
        (role / "meta").mkdir()
        (role / "meta" / "argument_specs.yml").write_text(specs)
    return role


SPEC_OK = """---
argument_specs:
  main:
    options:
      demo_port:
        type: int
        description: Port.
      demo_token:
        type: str
        required: true
        description: Token, from the vault.
"""


def test_matching_role_has_no_problems(tmp_path: Path) -> None:
    role = _role(tmp_path, "demo", "---\ndemo_port: 80\n", SPEC_OK)
    assert check.role_problems(role) == []


def test_default_without_spec_is_reported(tmp_path: Path) -> None:
    role = _role(tmp_path, "demo", "---\ndemo_port: 80\ndemo_extra: 1\n", SPEC_OK)
    assert check.role_problems(role) == ["demo: demo_extra is in defaults/main.yml but not in meta/argument_specs.yml"]


def test_optional_spec_without_default_is_reported(tmp_path: Path) -> None:
    role = _role(tmp_path, "demo", "---\n{}\n", SPEC_OK)
    assert check.role_problems(role) == [
        "demo: demo_port is in meta/argument_specs.yml but has no default in defaults/main.yml"
    ]


def test_missing_specs_and_unprefixed_options_are_reported(tmp_path: Path) -> None:
    assert check.role_problems(_role(tmp_path, "a", "---\na_x: 1\n", None)) == ["a: meta/argument_specs.yml is missing"]
    spec = "---\nargument_specs:\n  main:\n    options:\n      port:\n        description: x\n"
    problems = check.role_problems(_role(tmp_path, "b", "---\nport: 1\n", spec))
    assert problems == ["b: option port does not carry the role prefix 'b_'"]


@pytest.mark.parametrize("exit_code,defaults", [(0, "---\ndemo_port: 80\n"), (1, "---\ndemo_other: 1\n")])
def test_main_exit_code(tmp_path: Path, exit_code: int, defaults: str) -> None:
    _role(tmp_path, "demo", defaults, SPEC_OK)
    assert check.main(["check", str(tmp_path)]) == exit_code
