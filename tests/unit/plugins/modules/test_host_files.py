# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""thinkus.ops.host_files on a scratch directory: plan, validate, write, and a second run that changes nothing."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.thinkus.ops.plugins.modules import host_files

# a validator that refuses any file containing "bad"
VALIDATOR = f"{sys.executable} -c \"import sys; sys.exit('bad line' if 'bad' in open(sys.argv[1]).read() else 0)\" %s"


def params(root: Path, **files: str) -> dict[str, Any]:
    return {
        "directories": [{"path": str(root / "conf.d"), "mode": "0750"}],
        "files": [
            {
                "path": str(root / "conf.d" / name),
                "content": text,
                "mode": "0640",
                "validate": VALIDATOR,
                "secret": False,
            }
            for name, text in files.items()
        ],
        "owner": None,
        "group": None,
    }


def test_first_run_writes_second_changes_nothing_and_modes_are_kept(tmp_path: Path) -> None:
    p = params(tmp_path, a="one\n", b="two\n")
    planned = host_files.install(p, check_mode=True)
    assert planned["changed_paths"] == [
        str(tmp_path / "conf.d"),
        str(tmp_path / "conf.d/a"),
        str(tmp_path / "conf.d/b"),
    ]
    assert not (tmp_path / "conf.d").exists()  # check mode wrote nothing
    done = host_files.install(p, check_mode=False)
    assert done["changed_paths"] == planned["changed_paths"]
    assert (tmp_path / "conf.d" / "a").read_text() == "one\n"
    assert stat.S_IMODE(os.stat(tmp_path / "conf.d" / "a").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "conf.d").st_mode) == 0o750
    assert host_files.install(p, check_mode=False) == {"changed": False, "changed_paths": [], "diff": []}
    os.chmod(tmp_path / "conf.d" / "b", 0o600)
    again = host_files.install(p, check_mode=False)
    assert again["changed_paths"] == [str(tmp_path / "conf.d/b")] and again["diff"] == []  # mode only
    assert stat.S_IMODE(os.stat(tmp_path / "conf.d" / "b").st_mode) == 0o640


def test_a_rejected_file_writes_nothing_and_names_the_file(tmp_path: Path) -> None:
    host_files.install(params(tmp_path, a="one\n", b="two\n"), check_mode=False)
    with pytest.raises(host_files.FilesError, match=r"conf\.d/b: .* rejected it \(exit 1\): bad line"):
        host_files.install(params(tmp_path, a="changed\n", b="bad\n"), check_mode=False)
    assert (tmp_path / "conf.d" / "a").read_text() == "one\n"  # the good change was not written either
    assert (tmp_path / "conf.d" / "b").read_text() == "two\n"


def test_diff_shows_content_but_never_a_secret(tmp_path: Path) -> None:
    p = params(tmp_path, a="one\n")
    p["files"].append(
        {
            "path": str(tmp_path / "conf.d" / "key"),
            "content": "s3cret\n",
            "mode": "0600",
            "validate": None,
            "secret": True,
        }
    )
    first = host_files.install(p, check_mode=False)
    assert first["diff"][0]["after"] == "one\n"
    assert "s3cret" not in str(first["diff"])
    p["files"][1]["content"] = "n3w\n"
    second = host_files.install(p, check_mode=False)
    assert second["diff"] == [
        {
            "before_header": str(tmp_path / "conf.d/key"),
            "after_header": str(tmp_path / "conf.d/key"),
            "before": "<secret>\n",
            "after": "<secret, changed>\n",
        }
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "rw"}, r"mode must be octal like '0644', got 'rw'"),
        ({"path": "relative/x"}, r"files\[0\]\.path must be absolute, got 'relative/x'"),
        ({"validate": "true"}, r"validate must contain %s"),
    ],
)
def test_bad_input_is_named(tmp_path: Path, change: dict[str, str], message: str) -> None:
    p = params(tmp_path, a="one\n")
    p["files"][0].update(change)
    with pytest.raises(host_files.FilesError, match=message):
        host_files.install(p, check_mode=False)
    assert not (tmp_path / "conf.d").exists()


def test_an_unknown_owner_is_named(tmp_path: Path) -> None:
    p = dict(params(tmp_path, a="one\n"), owner="no-such-user-thinkus")
    with pytest.raises(host_files.FilesError, match=r"owner: no user 'no-such-user-thinkus' on this host"):
        host_files.install(p, check_mode=False)


def test_a_tree_is_copied_byte_for_byte_then_left_alone_and_a_changed_file_alone_is_rewritten(tmp_path: Path) -> None:
    src = tmp_path / "out"
    (src / "_next" / "static").mkdir(parents=True)
    (src / "index.html").write_text("<html>v1</html>\n")
    binary = bytes(range(256)) * 4
    (src / "_next" / "static" / "logo.png").write_bytes(binary)
    dest = tmp_path / "staged"
    tree = {"src": str(src), "dest": str(dest), "mode": "0644", "directory_mode": "0755"}
    wanted = {"directories": [], "files": [], "trees": [tree], "owner": None, "group": None}

    preview = host_files.install(wanted, check_mode=True)
    assert preview["changed"] is True and not dest.exists()
    first = host_files.install(wanted, check_mode=False)
    assert str(dest / "_next" / "static" / "logo.png") in first["changed_paths"]
    assert (dest / "_next" / "static" / "logo.png").read_bytes() == binary
    assert stat.S_IMODE(os.stat(dest / "index.html").st_mode) == 0o644
    assert any(d["after"].startswith("<binary, 1024 bytes, copied from ") for d in first["diff"])

    assert host_files.install(wanted, check_mode=False)["changed"] is False
    (src / "index.html").write_text("<html>v2</html>\n")
    again = host_files.install(wanted, check_mode=False)
    assert again["changed_paths"] == [str(dest / "index.html")]
    assert (dest / "index.html").read_text() == "<html>v2</html>\n"


def test_a_tree_that_is_not_a_directory_is_refused_naming_it(tmp_path: Path) -> None:
    tree = {"src": str(tmp_path / "missing"), "dest": str(tmp_path / "d"), "mode": "0644", "directory_mode": "0755"}
    with pytest.raises(host_files.FilesError, match=r"trees\[0\]\.src: .*missing is not a directory on this host"):
        host_files.install({"directories": [], "files": [], "trees": [tree], "owner": None, "group": None}, False)
