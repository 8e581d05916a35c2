# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of plugins/module_utils/_image_build.py: what thinkus.ops.docker_build_image reads.

Pure functions (Dockerfile parsing and pinning, tags, hashing, git revision) on files made here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.thinkus.ops.plugins.module_utils import _image_build as helper

# --------------------------------------------------------------------------- Dockerfile


def test_from_images_skips_stages_scratch_and_resolves_args() -> None:
    text = (
        "ARG BASE=golang:1.22-alpine\n"
        "FROM --platform=linux/amd64 ${BASE} AS builder\n"
        "RUN go build\n"
        "FROM builder AS test\n"
        "FROM scratch AS empty\n"
        "FROM alpine:3.19\n"
        "COPY --from=builder /x /x\n"
    )
    assert helper.from_images(text) == ["golang:1.22-alpine", "alpine:3.19"]
    assert helper.from_images(text, {"BASE": "golang:1.23"}) == ["golang:1.23", "alpine:3.19"]


def test_rewrite_from_replaces_only_mapped_images() -> None:
    text = "ARG BASE=python:3.12-slim\nFROM ${BASE}\nFROM golang:1.22-alpine AS b\nFROM debian:12\nRUN echo FROM x\n"
    out = helper.rewrite_from(text, {"python:3.12-slim": "local/python", "golang:1.22-alpine": "local/go"})
    assert out == "ARG BASE=local/python\nFROM ${BASE}\nFROM local/go AS b\nFROM debian:12\nRUN echo FROM x\n"
    assert helper.rewrite_from(text, {}) == text


def test_logical_lines_join_continuations_and_drop_comments() -> None:
    assert helper.logical_lines("# c\nFROM a \\\n  AS b\n\nRUN x\n") == ["FROM a  AS b", "RUN x"]


# --------------------------------------------------------------------------- tags, repositories


def test_expand_tags_with_git_revisions() -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    tags = ["{revision}", "{short_revision}", "local", "local"]
    assert helper.expand_tags(tags, sha) == [sha, "0123456", "local"]
    assert helper.expand_tags(tags, sha + "-dirty") == [sha + "-dirty", "0123456-dirty", "local"]
    assert helper.expand_tags(["{short_revision}"], "v1.2.3") == ["v1.2.3"]


def test_expand_tags_rejects_invalid_tags() -> None:
    with pytest.raises(helper.BuildFailure, match="not a valid image tag"):
        helper.expand_tags(["bad tag"], "x")


# --------------------------------------------------------------------------- inputs hash


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src" / "main.go").write_text("package main\n")
    (ctx / "run.sh").write_text("#!/bin/sh\n")
    (ctx / ".dockerignore").write_text("# build output\nbin/\n")
    (ctx / "bin").mkdir()
    (ctx / "bin" / "app").write_text("binary")
    return ctx


def _hash(ctx: Path, dockerfile: str = "FROM x\n", **settings: Any) -> str:
    files = helper.context_files(str(ctx), helper.dockerignore_patterns(str(ctx)))
    return helper.inputs_hash(str(ctx), files, dockerfile, settings, {})


def test_context_files_honour_dockerignore(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    files = helper.context_files(str(ctx), helper.dockerignore_patterns(str(ctx)))
    assert "src/main.go" in files and "run.sh" in files
    assert not any(f.startswith("bin") for f in files)


def test_inputs_hash_follows_what_reaches_the_build(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    base = _hash(ctx)
    assert _hash(ctx) == base
    (ctx / "bin" / "app").write_text("other binary")  # ignored by .dockerignore
    assert _hash(ctx) == base
    assert _hash(ctx, "FROM y\n") != base
    assert _hash(ctx, revision="abc") != base
    (ctx / "run.sh").chmod(0o755)
    assert _hash(ctx) != base
    exec_bit = _hash(ctx)
    (ctx / "src" / "main.go").write_text("package main // v2\n")
    assert _hash(ctx) not in (base, exec_bit)


def test_inputs_hash_includes_extra_files(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    files = helper.context_files(str(ctx), [])
    one = helper.inputs_hash(str(ctx), files, "FROM x", {}, {"ca.pem": b"one"})
    two = helper.inputs_hash(str(ctx), files, "FROM x", {}, {"ca.pem": b"two"})
    assert one != two


# --------------------------------------------------------------------------- git revision


def _git(repo: Path, *args: str) -> str:
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def test_git_revision_is_the_last_commit_touching_the_context(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "a").mkdir(parents=True)
    (repo / "b").mkdir()
    (repo / "a" / "f").write_text("1")
    (repo / "b" / "f").write_text("1")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "one")
    first = _git(repo, "rev-parse", "HEAD")
    (repo / "b" / "f").write_text("2")
    _git(repo, "commit", "-q", "-am", "two")
    assert helper.git_revision(str(repo / "a")) == first
    assert helper.git_revision(str(repo / "b")) == _git(repo, "rev-parse", "HEAD")
    (repo / "a" / "f").write_text("dirty")
    assert helper.git_revision(str(repo / "a")) == first + "-dirty"
    (repo / "c").mkdir()
    (repo / "c" / "new").write_text("untracked")
    assert helper.git_revision(str(repo / "c")) == _git(repo, "rev-parse", "HEAD") + "-dirty"


def test_git_revision_outside_git_asks_for_a_revision(tmp_path: Path) -> None:
    with pytest.raises(helper.BuildFailure, match=r"not in a git work tree.*set the service's revision"):
        helper.git_revision(str(tmp_path))


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("python:3.12-slim", "python@sha256:" + "a" * 64),
        ("127.0.0.1:5000/base/python:3.11", "127.0.0.1:5000/base/python@sha256:" + "a" * 64),
        ("127.0.0.1:5000/base/python", "127.0.0.1:5000/base/python@sha256:" + "a" * 64),
        ("python:3.12@sha256:" + "b" * 64, "python@sha256:" + "a" * 64),
    ],
)
def test_pinned_reference(reference: str, expected: str) -> None:
    assert helper.pinned_reference(reference, "sha256:" + "a" * 64) == expected


def test_inputs_hash_follows_base_digests_and_not_the_context_path(tmp_path: Path) -> None:
    one = _context(tmp_path / "host-a")
    two = _context(tmp_path / "host-b")
    bases = {"python:3.12-slim": "sha256:" + "a" * 64}
    assert _hash(one, bases=bases) == _hash(two, bases=bases)  # another checkout path, same image
    assert _hash(one, bases={"python:3.12-slim": "sha256:" + "c" * 64}) != _hash(one, bases=bases)
