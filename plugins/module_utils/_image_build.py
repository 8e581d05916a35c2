# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private helpers of thinkus.ops.docker_build_image that read the build inputs and change nothing.

Dockerfile parsing (the FROM images, their replacement and pinning by digest), the files of a
build context that ``.dockerignore`` lets through, the build-input hash, image tags and the
git revision of a context. The hash depends on what the build consumes only, never on the
engine that runs it: base images enter it by registry digest, not by local image ID.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - annotations only (the module may run on an older Python)
    from collections.abc import Callable

    Runner = Callable[[list[str]], tuple[int, str, str]]

try:
    from docker.utils.build import exclude_paths

    HAS_DOCKER_SDK = True
except ImportError:  # pragma: no cover - reported by the module
    HAS_DOCKER_SDK = False

# v2: base images by registry digest (v1 hashed local image IDs)
HASH_SCHEME = "thinkus-build-v2"
INJECTED_DOCKERFILE = ".thinkus-build.Dockerfile"
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class BuildFailure(Exception):
    """A failure with a short kind (the module's ``error`` return) and optional build output."""

    def __init__(self, kind: str, message: str, log: list[str] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.log = log or []


# --------------------------------------------------------------------------- Dockerfile


def _arg_defaults(lines: list[str], build_args: dict[str, str]) -> dict[str, str]:
    """ARG values visible to FROM lines (ARGs before the first FROM)."""
    values: dict[str, str] = {}
    for line in lines:
        words = line.split()
        if not words:
            continue
        if words[0].upper() == "FROM":
            break
        if words[0].upper() == "ARG" and len(words) > 1:
            name, _sep, default = words[1].partition("=")
            values[name] = str(build_args.get(name, default.strip('"')))
    return values


def logical_lines(text: str) -> list[str]:
    """Dockerfile lines with continuations joined, blank lines and comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def from_images(dockerfile: str, build_args: dict[str, str] | None = None) -> list[str]:
    """Image references of the FROM lines, without earlier stage names and ``scratch``."""
    lines = logical_lines(dockerfile)
    args = _arg_defaults(lines, build_args or {})
    stages: set[str] = set()
    images: list[str] = []
    for line in lines:
        words = line.split()
        if not words or words[0].upper() != "FROM":
            continue
        words = [w for w in words[1:] if not w.startswith("--")]
        if not words:
            continue
        ref = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), words[0])
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
        if ref.lower() in stages or ref == "scratch" or ref in images:
            continue
        images.append(ref)
    return images


def rewrite_from(dockerfile: str, mapping: dict[str, str]) -> str:
    """Replace image references in FROM lines (and ARG defaults used by them) per ``mapping``."""
    if not mapping:
        return dockerfile

    def repl(match: re.Match[str]) -> str:
        ref = match.group(2)
        return match.group(1) + mapping.get(ref, ref)

    text = re.sub(r"(?im)^(\s*FROM\s+(?:--\S+\s+)*)(\S+)", repl, dockerfile)
    return re.sub(r"(?im)^(\s*ARG\s+\w+=)(\S+)", repl, text)


def pinned_reference(reference: str, digest: str) -> str:
    """``name[:tag][@digest]`` -> ``name@digest``: what the engine builds FROM."""
    name = reference.partition("@")[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name.rpartition(":")[0]
    return f"{name}@{digest}"


# --------------------------------------------------------------------------- inputs hash


def dockerignore_patterns(context: str) -> list[str]:
    path = os.path.join(context, ".dockerignore")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle.read().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def context_files(context: str, patterns: list[str]) -> list[str]:
    """Paths (relative, sorted) that the build context sends to the engine."""
    return sorted(exclude_paths(os.path.abspath(context), patterns, dockerfile=None))


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inputs_hash(
    context: str,
    files: list[str],
    dockerfile: str,
    settings: dict[str, Any],
    extra: dict[str, bytes],
) -> str:
    """sha256 over the context files (content, exec bit, symlink target) and the build settings.

    ``settings`` carries the base images as ``{reference: registry digest}``; nothing read
    from the engine enters the hash.
    """
    digest = hashlib.sha256(HASH_SCHEME.encode())
    for rel in files:
        full = os.path.join(context, rel)
        info = os.lstat(full)
        if stat.S_ISLNK(info.st_mode):
            entry = f"L {rel} {os.readlink(full)}"
        elif stat.S_ISDIR(info.st_mode):
            entry = f"D {rel}"
        else:
            entry = f"F {rel} {int(bool(info.st_mode & 0o111))} {_file_digest(full)}"
        digest.update(entry.encode("utf-8", "surrogateescape") + b"\0")
    digest.update(b"DOCKERFILE\0" + dockerfile.encode() + b"\0")
    for name in sorted(extra):
        digest.update(f"X {name} {hashlib.sha256(extra[name]).hexdigest()}\0".encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- tags, revision


def short_revision(revision: str) -> str:
    """``<sha7>`` for a git revision (keeping a ``-dirty`` suffix), any other revision unchanged."""
    return revision[:7] + revision[40:] if re.match(r"^[0-9a-f]{40}", revision) else revision


def expand_tags(tags: list[str], revision: str) -> list[str]:
    """Tags with ``{revision}`` and ``{short_revision}`` expanded, duplicates dropped, each checked."""
    short = short_revision(revision)
    out: list[str] = []
    for tag in tags:
        value = tag.replace("{revision}", revision).replace("{short_revision}", short)
        if not TAG_RE.match(value):
            raise BuildFailure("tags", f"tag {value!r} (from {tag!r}) is not a valid image tag")
        if value not in out:
            out.append(value)
    return out


def _subprocess_runner(argv: list[str]) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: not found"
    return proc.returncode, proc.stdout, proc.stderr


def git_revision(context: str, run: Runner | None = None) -> str:
    """Last commit touching ``context``, ``-dirty`` appended when it has uncommitted changes.

    A context with no commit yet (new files) gets the repository's HEAD, marked dirty.
    ``run`` runs one command and returns (rc, stdout, stderr); subprocess by default.
    """
    runner = run or _subprocess_runner

    def git(*args: str) -> tuple[int, str, str]:
        rc, out, err = runner(["git", "-C", context, *args])
        if rc == 127:
            raise BuildFailure("context", f"git is not installed and no revision was given for {context}")
        return rc, out, err

    rc, out, err = git("log", "-1", "--format=%H", "--", ".")
    if rc != 0:
        raise BuildFailure(
            "context", f"{context} is not in a git work tree ({err.strip()}); set the service's revision"
        )
    revision = out.strip()
    if not revision:
        rc, out, err = git("rev-parse", "HEAD")
        if rc != 0:
            raise BuildFailure("context", f"{context}: the repository has no commit yet; set the service's revision")
        return out.strip() + "-dirty"
    rc, status, _err = git("status", "--porcelain", "--", ".")
    return revision + ("-dirty" if rc == 0 and status.strip() else "")
