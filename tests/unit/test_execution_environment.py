"""ansible-builder accepts the execution environment definition and writes a build context."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tools import ee

ROOT = Path(__file__).resolve().parents[2]
EE_DIR = ROOT / "execution-environment"
DEFINITION_TEXT = (EE_DIR / "execution-environment.yml").read_text()


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
    assert "COPY _build/collections/thinkus-ops-0.1.0.tar.gz /tmp/thinkus-ops-0.1.0.tar.gz" in containerfile
    assert "ansible-galaxy collection install /tmp/thinkus-ops-0.1.0.tar.gz" in containerfile
    assert not (context / "_build" / "requirements.yml").exists(), "collections come from the pinned ansible package"
    assert "--target /output/ansible-bundle ansible==12.3.0" in containerfile
    assert "COPY --from=builder /output/ansible-bundle/ansible_collections" in containerfile
    assert "ARG EE_BASE_IMAGE" in containerfile
    assert 'ARG PKGMGR="/usr/local/sbin/apt-pkgmgr"' in containerfile
    assert (context / "_build" / "bindep.txt").is_file()


def test_execution_environment_installs_this_collection_version() -> None:
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    assert f"thinkus-ops-{version}.tar.gz" in (EE_DIR / "execution-environment.yml").read_text()


def test_pins_match_requirements_txt() -> None:
    assert ee.check() == []


def test_a_pin_that_differs_from_requirements_txt_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drifted = tmp_path / "requirements-ee.txt"
    drifted.write_text(
        (EE_DIR / "requirements-ee.txt").read_text().replace("boto3==1.44.8", "boto3==1.40.0") + "left-pad==1.0\n"
    )
    monkeypatch.setattr(ee, "EE_REQUIREMENTS", drifted)
    problems = ee.check()
    assert "requirements-ee.txt pins boto3==1.40.0, requirements.txt boto3==1.44.8" in problems
    assert any("left-pad" in p and "does not pin" in p for p in problems)


def test_an_unpinned_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_text("kubernetes>=30\n")
    with pytest.raises(ee.EEError, match="not pinned as name==version"):
        ee.read_pins(path)


def test_a_base_image_by_tag_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ee.EEError, match="pinned by digest"):
        ee._definition_for_build(tmp_path, "127.0.0.1:5000/thinkus-base/python:3.11-slim-bookworm")


def test_a_collection_version_other_than_the_bundle_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ee_dir = tmp_path / "execution-environment"
    shutil.copytree(EE_DIR, ee_dir)
    path = ee_dir / "requirements.yml"
    path.write_text(path.read_text().replace('version: "6.2.0"', 'version: "5.0.0"'))
    monkeypatch.setattr(ee, "EE_DIR", ee_dir)
    assert any("pins kubernetes.core 5.0.0, the pinned ansible package carries 6.2.0" in p for p in ee.check())


def test_the_kept_collections_are_those_of_requirements_yml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    definition = tmp_path / "execution-environment.yml"
    definition.write_text(DEFINITION_TEXT.replace(" awx.awx\n", "\n"))
    assert definition.read_text() != DEFINITION_TEXT
    monkeypatch.setattr(ee, "DEFINITION", definition)
    assert any("must keep exactly the collections of requirements.yml" in p for p in ee.check())
