"""ansible-builder accepts the execution environment definition and writes a build context."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
EE_DIR = ROOT / "execution-environment"


def test_ansible_builder_create_writes_a_containerfile(tmp_path: Path) -> None:
    # ansible-builder resolves additional_build_files relative to the definition; give it the
    # collection tarball it expects (an empty stand-in: `create` copies, it does not install).
    work = tmp_path / "repo"
    shutil.copytree(EE_DIR, work / "execution-environment")
    (work / ".build").mkdir()
    (work / ".build" / "thinkus-ops-0.1.0.tar.gz").write_bytes(b"")
    context = tmp_path / "context"
    builder = Path(sys.executable).with_name("ansible-builder")
    res = subprocess.run(
        [
            str(builder),
            "create",
            "-f",
            str(work / "execution-environment" / "execution-environment.yml"),
            "-c",
            str(context),
            "--output-filename",
            "Containerfile",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    containerfile = (context / "Containerfile").read_text()
    assert "ansible-galaxy collection install /build/collections/thinkus-ops-0.1.0.tar.gz" in containerfile
    assert (context / "_build" / "requirements.yml").is_file()
    assert "kubernetes==37.0.1" in (context / "_build" / "requirements.txt").read_text()
    assert (context / "_build" / "bindep.txt").is_file()


def test_execution_environment_installs_this_collection_version() -> None:
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    assert f"thinkus-ops-{version}.tar.gz" in (EE_DIR / "execution-environment.yml").read_text()
