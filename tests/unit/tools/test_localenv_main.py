"""tools/localenv's command line: components are named by their NAME, and start in order."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tools.localenv import __main__ as localenv
from tools.localenv import k8s, metrics, node, s3, vercel
from tools.localenv._proc import LocalEnvError


def test_components_are_selected_by_their_names_in_start_order() -> None:
    names = [m.NAME for m in localenv._select([])]
    assert names[0] == "docker" and names[-1] == "acme" and len(names) == len(localenv.COMPONENT_MODULES)
    assert localenv._select(["cluster-metrics", "kubernetes", "vercel-api"]) == [vercel, k8s, metrics]


def test_a_module_name_that_is_not_a_component_name_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(LocalEnvError, match=r"unknown component\(s\): k8s \(known: docker, base-images"):
        localenv._select(["k8s"])


def test_the_go_built_components_wait_for_the_prebuild() -> None:
    # cmd_up waits for the Go build of exactly these before starting them (by module, not by name).
    assert set(localenv._built_in_go()) >= {k8s, node, metrics}
    assert s3 not in localenv._built_in_go()


def test_where_imports_no_component() -> None:
    probe = (
        "import sys, runpy; sys.argv = ['x', 'where']\n"
        "try:\n    runpy.run_module('tools.localenv', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "loaded = [m for m in sys.modules if m.startswith('tools.localenv.')]\n"
        "print(sorted(m for m in loaded if not m.endswith(('._proc', '.__main__'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    assert "boto3" not in out
