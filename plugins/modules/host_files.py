#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: host_files
short_description: Install a set of configuration files and their directories in one step, validated first
version_added: 0.1.0
description:
  - Makes each of O(directories) exist with its mode, then writes each of O(files) whose content, mode, owner or
    group differs, atomically (a temporary file in the same directory, renamed over the old one).
  - Every file that would change is validated first (O(files[].validate), on a temporary copy). When one is
    rejected, nothing is written, and the failure names the file and quotes the validator.
  - One task for what would otherwise be one M(ansible.builtin.template) or M(ansible.builtin.file) task per
    file; the roles render the contents with the C(ansible.builtin.template) lookup.
author:
  - Thinkus platform team (@thinkus-ai)
extends_documentation_fragment:
  - thinkus.ops.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reports what would change, and runs the validators on temporary copies; writes nothing.
  diff_mode:
    support: full
    details:
      - One before/after entry per file that changes (hidden for files with O(files[].secret)).
  idempotent:
    support: full
options:
  directories:
    description: Directories to create (parents too) or bring to their mode, owner and group.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      mode:
        description: Octal mode as a string, for example C("0755").
        type: str
        default: "0755"
  files:
    description: Files to install.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      content:
        description: The whole content of the file.
        type: str
        required: true
      mode:
        description: Octal mode as a string, for example C("0644").
        type: str
        default: "0644"
      validate:
        description:
          - A command run on a temporary copy before the file is written; C(%s) is the copy's path. Split like a
            shell would split it, but run without a shell.
        type: str
      secret:
        description: The content is a secret; it is never shown in a diff.
        type: bool
        default: false
  trees:
    description:
      - Directory trees to copy on the host itself, as C(ansible.builtin.copy) copies C(src/) (the files under
        O(trees[].src) into O(trees[].dest), byte for byte, binary files included), in the same single step.
      - A file is written only when its bytes or mode differ; files in O(trees[].dest) that are not in the source
        are left alone.
    type: list
    elements: dict
    default: []
    suboptions:
      src:
        description: Absolute path of the directory to copy, on the host the module runs on.
        type: path
        required: true
      dest:
        description: Absolute path of the directory to copy into; created (parents too) with O(trees[].directory_mode).
        type: path
        required: true
      mode:
        description: Octal mode of every file copied.
        type: str
        default: "0644"
      directory_mode:
        description: Octal mode of O(trees[].dest) and every directory under it that the source has.
        type: str
        default: "0755"
  owner:
    description: Owner (name) of every directory and file; unset keeps the current one (a new one gets the caller's).
    type: str
  group:
    description: Group (name) of every directory and file; unset keeps the current one.
    type: str
"""

EXAMPLES = r"""
- name: Install prometheus.yml and the rule files
  thinkus.ops.host_files:
    directories:
      - path: /etc/prometheus/rules.d
    files:
      - path: /etc/prometheus/prometheus.yml
        content: "{{ lookup('ansible.builtin.template', 'prometheus.yml.j2') }}"
        validate: promtool check config %s
      - path: /etc/prometheus/rules.d/alerts.yml
        content: "{{ lookup('ansible.builtin.template', 'alert_rules.yml.j2') }}"
        validate: promtool check rules %s
    owner: prometheus
    group: prometheus
  notify: reload prometheus
"""

RETURN = r"""
changed_paths:
  description: The directories and files created or changed (in check mode, those that would be).
  returned: always
  type: list
  elements: str
"""

import contextlib
import grp
import os
import pwd
import shlex
import subprocess
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

VALIDATE_TIMEOUT = 120


class FilesError(Exception):
    """A value or a validator refused; nothing was written."""


def _mode(text: str, where: str) -> int:
    try:
        value = int(str(text), 8)
    except ValueError:
        raise FilesError(f"{where}: mode must be octal like '0644', got {text!r}") from None
    if not 0 <= value <= 0o7777:
        raise FilesError(f"{where}: mode must be between 0000 and 7777, got {text!r}")
    return value


def _ids(owner: str | None, group: str | None) -> tuple[int, int]:
    try:
        uid = pwd.getpwnam(owner).pw_uid if owner else -1
    except KeyError:
        raise FilesError(f"owner: no user {owner!r} on this host") from None
    try:
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError:
        raise FilesError(f"group: no group {group!r} on this host") from None
    return uid, gid


def _differs(path: str, mode: int, uid: int, gid: int) -> bool:
    st = os.stat(path)
    return (st.st_mode & 0o7777) != mode or (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _validate(command: str, path: str, content: bytes) -> None:
    """Run the validator on a private temporary copy; raise naming the file when it refuses."""
    if "%s" not in command:
        raise FilesError(f"{path}: validate must contain %s (the file to check), got {command!r}")
    directory = tempfile.mkdtemp(prefix="thinkus-validate-")
    try:
        copy = os.path.join(directory, os.path.basename(path))
        with open(copy, "wb") as handle:
            handle.write(content)
        argv = [arg.replace("%s", copy) for arg in shlex.split(command)]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=VALIDATE_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FilesError(f"{path}: validator {argv[0]} could not run: {exc}") from None
        if done.returncode != 0:
            said = (done.stdout + done.stderr).decode(errors="replace").strip().replace(copy, path)
            raise FilesError(f"{path}: {argv[0]} rejected it (exit {done.returncode}): {said[-1500:]}")
    finally:
        for name in os.listdir(directory):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


def _write(path: str, content: bytes, mode: int, uid: int, gid: int) -> None:
    directory = os.path.dirname(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        if uid != -1 or gid != -1:
            os.chown(temporary, uid, gid)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def expand_trees(trees: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The directories and files of O(trees), as entries of O(directories) and O(files) (content as bytes)."""
    directories: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    for index, tree in enumerate(trees):
        src, dest = tree["src"], tree["dest"]
        for name, value in (("src", src), ("dest", dest)):
            if not os.path.isabs(value):
                raise FilesError(f"trees[{index}].{name} must be absolute, got {value!r}")
        if not os.path.isdir(src):
            raise FilesError(f"trees[{index}].src: {src} is not a directory on this host")
        for root, subdirs, names in os.walk(src):
            subdirs.sort()
            target = os.path.normpath(os.path.join(dest, os.path.relpath(root, src)))
            directories.append({"path": target, "mode": tree["directory_mode"]})
            for name in sorted(names):
                with open(os.path.join(root, name), "rb") as handle:
                    content = handle.read()
                copied = os.path.join(root, name)
                files.append({"path": os.path.join(target, name), "content": content, "mode": tree["mode"],
                              "validate": None, "secret": False, "source": copied})  # fmt: skip
    return directories, files


def _shown(content: bytes, entry: dict[str, Any]) -> str:
    """A file's content as a diff shows it: the text, or a line naming a binary copy."""
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return f"<binary, {len(content)} bytes{', copied from ' + entry['source'] if entry.get('source') else ''}>\n"


def install(params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """Plan, validate, then write; returns the result (changed_paths, diff)."""
    uid, gid = _ids(params["owner"], params["group"])
    tree_directories, tree_files = expand_trees(params.get("trees") or [])
    changed: list[str] = []
    diffs: list[dict[str, str]] = []
    directories = []
    seen: set[str] = set()
    for index, entry in enumerate(params["directories"] + tree_directories):
        path = entry["path"]
        if not os.path.isabs(path):
            raise FilesError(f"directories[{index}].path must be absolute, got {path!r}")
        if path in seen:  # listed twice (a tree's directory among directories): once is enough
            continue
        seen.add(path)
        mode = _mode(entry["mode"], f"directories[{index}] ({path})")
        if os.path.exists(path) and not os.path.isdir(path):
            raise FilesError(f"directories[{index}]: {path} exists and is not a directory")
        if not os.path.isdir(path) or _differs(path, mode, uid, gid):
            directories.append((path, mode))
            changed.append(path)
    planned = []
    for index, entry in enumerate(params["files"] + tree_files):
        path = entry["path"]
        if not os.path.isabs(path):
            raise FilesError(f"files[{index}].path must be absolute, got {path!r}")
        mode = _mode(entry["mode"], f"files[{index}] ({path})")
        content = entry["content"] if isinstance(entry["content"], bytes) else entry["content"].encode("utf-8")
        before = _read(path)
        if before == content and not _differs(path, mode, uid, gid):
            continue
        if entry["validate"] and before != content:
            _validate(entry["validate"], path, content)
        planned.append((path, content, mode))
        changed.append(path)
        if before != content:
            secret = entry["secret"]
            diffs.append(
                {
                    "before_header": path if before is not None else f"{path} (absent)",
                    "after_header": path,
                    "before": "<secret>\n" if secret and before is not None else _shown(before or b"", {}),
                    "after": "<secret, changed>\n" if secret else _shown(content, entry),
                }
            )
    if not check_mode:
        for path, mode in directories:
            os.makedirs(path, mode=mode, exist_ok=True)
            os.chmod(path, mode)
            if uid != -1 or gid != -1:
                os.chown(path, uid, gid)
        for path, content, mode in planned:
            if not os.path.isdir(os.path.dirname(path)):
                raise FilesError(f"{path}: its directory does not exist (list it in directories)")
            _write(path, content, mode, uid, gid)
    return {"changed": bool(changed), "changed_paths": changed, "diff": diffs}


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    return dict(
        argument_spec=dict(
            directories=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(path=dict(type="path", required=True), mode=dict(type="str", default="0755")),
            ),
            files=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    path=dict(type="path", required=True),
                    content=dict(type="str", required=True),
                    mode=dict(type="str", default="0644"),
                    validate=dict(type="str"),
                    secret=dict(type="bool", default=False),
                ),
            ),
            trees=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    src=dict(type="path", required=True),
                    dest=dict(type="path", required=True),
                    mode=dict(type="str", default="0644"),
                    directory_mode=dict(type="str", default="0755"),
                ),
            ),
            owner=dict(type="str"),
            group=dict(type="str"),
        ),
        supports_check_mode=True,
    )


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    try:
        result = install(module.params, module.check_mode)
    except FilesError as exc:
        module.fail_json(msg=f"{exc}. Nothing was written.", changed_paths=[])
    except OSError as exc:
        module.fail_json(msg=f"cannot write {exc.filename}: {exc.strerror}", changed_paths=[])
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
