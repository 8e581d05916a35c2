# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of the Redis helpers: URL precedence, TLS arguments, SYNC refusal and the logical snapshot file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.thinkus.ops.plugins.module_utils import _backup_common as bc
from ansible_collections.thinkus.ops.plugins.module_utils import _redis_backup as rd


def test_the_url_wins_and_options_fill_in_what_it_lacks() -> None:
    conn = rd.params_from_module(
        {
            "redis_url": "rediss://default:p%40ss@cache.example:6380",
            "redis_host": "127.0.0.1",
            "redis_port": 6379,
            "redis_username": None,
            "redis_password": "other",
            "redis_tls": False,
            "redis_tls_ca_file": "/etc/ca.pem",
        }
    )
    assert conn == {
        "host": "cache.example",
        "port": 6380,
        "username": "default",
        "password": "p@ss",
        "tls": True,
        "tls_ca_file": "/etc/ca.pem",
    }
    partial = rd.params_from_module({"redis_url": "redis://cache", "redis_port": 7000, "redis_password": "pw"})
    assert (partial["host"], partial["port"], partial["password"], partial["tls"]) == ("cache", 7000, "pw", False)
    with pytest.raises(bc.BackupError, match="rediss://user:password@host:port"):
        rd.parse_url("http://cache")


def test_tls_reaches_redis_cli_without_the_password() -> None:
    params = {"host": "cache", "port": 6380, "password": "pw-1", "tls": True, "tls_ca_file": "/ca.pem"}
    argv = rd.snapshot_argv(params, "x.rdb")
    assert argv[argv.index("--tls") :] == ["--tls", "--sni", "cache", "--cacert", "/ca.pem", "--rdb", "x.rdb"]
    assert "pw-1" not in argv


def test_a_refused_sync_is_told_apart_from_other_failures(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(*_a: object, **_k: object) -> None:
        raise bc.BackupError("redis-cli failed (exit 1): SYNC with master failed: -ERR unknown command 'SYNC'")

    monkeypatch.setattr(rd, "run_tool", refuse)
    with pytest.raises(rd.SyncRefused, match="refuses SYNC"):
        rd.snapshot({"host": "h", "port": 1}, str(tmp_path / "x"))

    def unreachable(*_a: object, **_k: object) -> None:
        raise bc.BackupError("redis-cli failed (exit 1): Could not connect to Redis at h:1: Connection refused")

    monkeypatch.setattr(rd, "run_tool", unreachable)
    with pytest.raises(bc.BackupError, match="Connection refused") as info:
        rd.snapshot({"host": "h", "port": 1}, str(tmp_path / "x"))
    assert not isinstance(info.value, rd.SyncRefused)


def write_logical(path: Path, records: list[tuple[int, bytes, int, bytes]], count: int | None = None) -> None:
    with open(path, "wb") as fh:
        fh.write(rd._LOGICAL_HEADER.pack(rd.LOGICAL_MAGIC, 1, 0))
        for db, key, expires, payload in records:
            fh.write(rd._RECORD_DB.pack(db) + rd._LEN.pack(len(key)) + key)
            fh.write(rd._EXPIRY.pack(expires) + rd._LEN.pack(len(payload)) + payload)
        fh.write(rd._RECORD_DB.pack(rd._END_DB) + rd._COUNT.pack(len(records) if count is None else count))


RECORDS = [(0, b"a", -1, b"\x00payload"), (3, b"b\x00", 1893456000000, os.urandom(300))]


def test_logical_file_round_trip_and_highest_db(tmp_path: Path) -> None:
    write_logical(tmp_path / "s", RECORDS)
    assert list(rd.iter_logical(str(tmp_path / "s"))) == RECORDS
    assert rd.logical_databases(str(tmp_path / "s")) == 3


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d[:-3], "truncated"),
        (lambda d: d[:-10], "truncated"),
        (lambda d: b"X" + d[1:], "not a thinkus.ops/redis-logical/v1 file"),
        (lambda d: d + b"\x00", "damaged"),
    ],
)
def test_a_damaged_logical_file_is_refused(tmp_path: Path, damage, message: str) -> None:
    write_logical(tmp_path / "s", RECORDS)
    (tmp_path / "s").write_bytes(damage((tmp_path / "s").read_bytes()))
    with pytest.raises(bc.BackupError, match=message):
        list(rd.iter_logical(str(tmp_path / "s")))


def test_a_wrong_end_count_is_refused(tmp_path: Path) -> None:
    write_logical(tmp_path / "s", RECORDS, count=5)
    with pytest.raises(bc.BackupError, match="2 records, end record says 5"):
        list(rd.iter_logical(str(tmp_path / "s")))
