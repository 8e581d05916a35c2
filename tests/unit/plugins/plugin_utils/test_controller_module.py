# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""plugin_utils._controller_module: a module's code imported in the controller with a bytecode cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]

# Run in a process of its own, with Ansible's collection loader installed as ansible-playbook installs it.
SCRIPT = """
import importlib, importlib.util, json, os, sys
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
_AnsibleCollectionFinder(paths=[sys.argv[1]])._install()
from ansible_collections.thinkus.ops.plugins.plugin_utils._controller_module import bytecode_cached_imports

def described(name):
    module = sys.modules[name]
    return {
        "loader": type(module.__loader__).__name__,
        "file": module.__file__,
        "cached": os.path.exists(importlib.util.cache_from_source(module.__file__)),
    }

finders = len(sys.meta_path)
with bytecode_cached_imports():
    importlib.import_module("ansible_collections.thinkus.ops.plugins.modules.k8s_release")
after = importlib.import_module("ansible_collections.thinkus.ops.plugins.module_utils._vercel")
print(json.dumps({
    "release": described("ansible_collections.thinkus.ops.plugins.modules.k8s_release"),
    "steps": described("ansible_collections.thinkus.ops.plugins.module_utils._k8s_steps"),
    "kubeconfig": described("ansible_collections.thinkus.ops.plugins.module_utils._kubeconfig"),
    "package": type(sys.modules["ansible_collections.thinkus.ops.plugins.module_utils"].__loader__).__name__,
    "outside": described("ansible_collections.thinkus.ops.plugins.module_utils._vercel"),
    "finders_restored": len(sys.meta_path) == finders,
    "run_module": callable(sys.modules["ansible_collections.thinkus.ops.plugins.modules.k8s_release"].run_module),
}))
"""


def imported(collections: Path) -> dict:
    # As Python runs by default: writing the bytecode cache (the make targets' environment may turn it off).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(collections)],
        capture_output=True,
        text=True,
        check=False,
        cwd=collections,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_modules_code_and_its_module_utils_are_imported_with_a_bytecode_cache(tmp_path: Path) -> None:
    collection = tmp_path / "ansible_collections" / "thinkus" / "ops"
    shutil.copytree(ROOT / "plugins", collection / "plugins", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "meta", collection / "meta")
    shutil.copy(ROOT / "galaxy.yml", collection / "galaxy.yml")

    first = imported(tmp_path)
    for name in ("release", "steps", "kubeconfig"):
        assert first[name]["loader"] == "SourceFileLoader", first
        assert first[name]["file"].startswith(str(collection / "plugins")), first
        assert first[name]["cached"], first  # the compiled code was written beside the source
    assert first["run_module"]
    # The packages themselves, and whatever is imported after the block, stay with Ansible's loader.
    assert first["package"] != "SourceFileLoader"
    assert first["outside"]["loader"] != "SourceFileLoader"
    assert not first["outside"]["cached"]
    assert first["finders_restored"]

    # The next process finds the cache; a changed source is compiled again, as Python does for its own files.
    source = collection / "plugins" / "module_utils" / "_k8s_steps.py"
    source.write_text(source.read_text() + "\nMARKER = 1\n")
    second = imported(tmp_path)
    assert second["steps"]["cached"]
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util, marshal, sys; f = open(importlib.util.cache_from_source(sys.argv[1]), 'rb');"
            " f.read(16); print('MARKER' in marshal.load(f).co_names)",
            str(source),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert check.stdout.strip() == "True"
