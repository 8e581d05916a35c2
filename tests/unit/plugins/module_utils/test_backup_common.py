# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of the backup helpers: layout, retention, checks, argv without secrets, S3 store."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from ansible_collections.thinkus.ops.plugins.module_utils import _backup_common as bc
from ansible_collections.thinkus.ops.plugins.module_utils import _pg_backup as pg
from ansible_collections.thinkus.ops.plugins.module_utils import _redis_backup as rd
from ansible_collections.thinkus.ops.plugins.module_utils import _s3_store as s3

NOW = dt.datetime(2026, 1, 17, 12, 0, tzinfo=dt.UTC)


def folder(kind: str, age: dt.timedelta, complete: bool = True, prefix: str = "p") -> list[str]:
    base = f"{prefix}/{kind}/{(NOW - age).strftime('%Y%m%dT%H%M%SZ')}-abc123/"
    return [base + "obj"] + ([base + "manifest.json"] if complete else [])


def test_group_backups_ignores_foreign_keys_and_finds_latest_complete() -> None:
    keys = folder("full", dt.timedelta(days=2)) + folder("full", dt.timedelta(days=1), complete=False)
    keys += ["p/full/not-an-id/x", "p/other/20260101T000000Z-aaaaaa/x", "q/full/20260101T000000Z-aaaaaa/x"]
    refs = bc.group_backups(keys, "p")
    assert [(r.kind, r.complete) for r in refs] == [("full", True), ("full", False)]
    latest = bc.latest_complete(refs, "full")
    assert latest is not None and latest.backup_id.startswith("20260115T120000Z")
    assert bc.latest_complete(refs, "redis") is None


def test_retention_keeps_newest_good_backup_and_young_incomplete_ones() -> None:
    keys: list[str] = []
    for day in range(40):
        keys += folder("full", dt.timedelta(days=day, hours=1))
    for day in range(10, 20):
        keys += folder("redis", dt.timedelta(days=day))
    keys += folder("redis", dt.timedelta(hours=3), complete=False)
    keys += folder("hourly", dt.timedelta(hours=30), complete=False)
    plan = bc.plan_retention(bc.group_backups(keys, "p"), {"full": 30, "hourly": 7, "redis": 7}, NOW, 24)
    kept = {(r.kind, r.complete) for r in plan.keep}
    assert sum(1 for r in plan.keep if r.kind == "full") == 30  # ages 1h .. 29d1h
    assert next(r for r in plan.keep if r.kind == "redis" and r.complete).backup_id.startswith("20260107")
    assert ("redis", False) in kept  # 3 hours old: may still be uploading
    assert [r.kind for r in plan.delete if not r.complete] == ["hourly"]
    assert "newest good backup" in next(v for v in plan.reasons.values() if "newest" in v)


def test_retention_leaves_kinds_without_a_policy_alone() -> None:
    keys = folder("redis", dt.timedelta(days=100)) + folder("redis", dt.timedelta(days=90))
    plan = bc.plan_retention(bc.group_backups(keys, "p"), {"full": 1}, NOW, 24)
    assert plan.delete == []


def test_compare_postgres_names_the_table() -> None:
    expected = {"schema_hash": "a", "tables": {"public.t": 3, "public.u": 1}}
    actual = {"schema_hash": "a", "tables": {"public.t": 2, "public.u": 1}}
    assert bc.failed_names(bc.compare_postgres(expected, actual)) == ["row_count:public.t"]
    actual = {"schema_hash": "b", "tables": {"public.t": 3}}
    assert bc.failed_names(bc.compare_postgres(expected, actual)) == ["schema_hash", "tables", "row_count:public.u"]


def test_compare_redis_tolerates_expired_volatile_keys_only() -> None:
    expected = {"databases": {"0": {"persistent": 5, "volatile": 2}}, "sample": {"digest": "d"}}
    ok = {"databases": {"0": {"persistent": 5, "volatile": 1}}, "sample": {"digest": "d"}}
    assert bc.failed_names(bc.compare_redis(expected, ok)) == []
    bad = {"databases": {"0": {"persistent": 4, "volatile": 3}}, "sample": {"digest": "e"}}
    assert bc.failed_names(bc.compare_redis(expected, bad)) == ["key_count:db0", "volatile_keys:db0", "sample_digest"]


def test_manifest_round_trip_and_validation() -> None:
    manifest = bc.build_manifest(
        backup_id="20260117T030000Z-abcdef",
        kind="full",
        source={"host": "h"},
        started_at=NOW,
        finished_at=NOW + dt.timedelta(seconds=2),
        tools={},
        objects=[{"name": "a", "size": 3, "sha256": "x"}],
        fingerprint={"postgres": {}},
        encryption=None,
    )
    assert manifest["size"] == 3 and manifest["duration_seconds"] == 2.0
    assert bc.validate_manifest(manifest, "k") is manifest
    with pytest.raises(bc.BackupError, match="not a"):
        bc.validate_manifest({"kind": "full"}, "k")


def test_postgres_url_password_never_reaches_the_command_line() -> None:
    conn = pg.PgConn.from_params({"postgres_url": "postgresql://app:s%40cret@db.example:6543/main?sslmode=require"})
    assert (conn.host, conn.port, conn.user, conn.database, conn.password) == (
        "db.example",
        6543,
        "app",
        "main",
        "s@cret",
    )
    argv = pg.dump_argv(conn, "dump.out", "custom", 1, "00000003-1", None)
    assert "s@cret" not in " ".join(argv) and "s%40cret" not in " ".join(argv)
    assert "--dbname=host=db.example port=6543 user=app dbname=main sslmode=require" in argv
    assert conn.env()["PGPASSWORD"] == "s@cret"
    assert "password" not in conn.describe()
    restore = pg.restore_argv(conn.with_database("scratch"), "dump.out", 2, True, True)
    assert "s@cret" not in " ".join(restore) and "--clean" in restore and "--jobs=2" in restore


def test_explicit_options_fill_in_only_what_the_url_lacks_and_odd_values_are_quoted() -> None:
    conn = pg.PgConn.from_params({"postgres_url": "postgres://u:p@h", "postgres_database": "it's db"})
    assert conn.conninfo() == "host=h user=u dbname='it\\'s db'"
    with pytest.raises(bc.BackupError, match="postgresql://"):
        pg.PgConn.from_url("mysql://x")


def test_the_url_wins_over_the_role_defaults_and_keeps_its_query_parameters() -> None:
    """Issue 18: the role always passes port, user and database; they must not override the URL."""
    url = "postgresql://app_user:pw@db.example:6543/postgres?sslmode=require&sslrootcert=/etc/ca.pem&options=-c%20x%3D1"
    params = {
        "postgres_url": url,
        "postgres_host": "localhost",
        "postgres_port": 5432,
        "postgres_user": "thinkus",
        "postgres_password": "other",
        "postgres_database": "thinkus",
        "postgres_sslmode": "disable",
    }
    conn = pg.PgConn.from_params(params)
    assert (conn.host, conn.port, conn.user, conn.database, conn.password) == (
        "db.example",
        6543,
        "app_user",
        "postgres",
        "pw",
    )
    assert conn.options == {"sslmode": "require", "sslrootcert": "/etc/ca.pem", "options": "-c x=1"}
    assert conn.conninfo() == (
        "host=db.example port=6543 user=app_user dbname=postgres sslmode=require sslrootcert=/etc/ca.pem "
        "options='-c x=1'"
    )
    assert "pw" not in conn.conninfo().split("=")


def test_explicit_options_complete_a_partial_url() -> None:
    conn = pg.PgConn.from_params(
        {
            "postgres_url": "postgresql://db.example/app",
            "postgres_port": 5433,
            "postgres_user": "backup",
            "postgres_password": "pw",
            "postgres_database": "ignored",
            "postgres_sslmode": "verify-full",
        }
    )
    assert (conn.host, conn.port, conn.user, conn.database, conn.password) == (
        "db.example",
        5433,
        "backup",
        "app",
        "pw",
    )
    assert conn.options == {"sslmode": "verify-full"}
    bare = pg.PgConn.from_params({"postgres_host": "h", "postgres_port": 1, "postgres_database": "d"})
    assert bare.conninfo() == "host=h port=1 dbname=d"


def test_redis_snapshot_argv_has_no_password_and_run_tool_refuses_one() -> None:
    argv = rd.snapshot_argv({"host": "r", "port": 6379, "username": "backup", "password": "pw-123"}, "x.rdb")
    assert "pw-123" not in argv and argv[-2:] == ["--rdb", "x.rdb"]
    with pytest.raises(bc.BackupError, match="secret would be visible"):
        bc.run_tool(["echo", "pw-123"], secrets_=["pw-123"])


def test_rdb_file_check(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rdb"
    bad.write_bytes(b"not an rdb file at all")
    with pytest.raises(bc.BackupError, match="not an RDB file"):
        rd.check_rdb_file(str(bad))
    good = tmp_path / "good.rdb"
    good.write_bytes(b"REDIS0010" + b"\xff" + b"\0" * 8)
    rd.check_rdb_file(str(good))


def test_openssl_round_trip_keeps_the_key_off_the_command_line(tmp_path: Path) -> None:
    plain = tmp_path / "p"
    plain.write_bytes(os.urandom(1000))
    bc.openssl_crypt(str(plain), str(tmp_path / "e"), "k3y-material", decrypt=False)
    assert (tmp_path / "e").read_bytes() != plain.read_bytes()
    bc.openssl_crypt(str(tmp_path / "e"), str(tmp_path / "d"), "k3y-material", decrypt=True)
    assert (tmp_path / "d").read_bytes() == plain.read_bytes()
    with pytest.raises(bc.BackupError):
        bc.openssl_crypt(str(tmp_path / "e"), str(tmp_path / "x"), "wrong", decrypt=True)


def test_expected_etag_matches_the_s3_scheme() -> None:
    a, b = hashlib.md5(b"a").digest(), hashlib.md5(b"b").digest()  # noqa: S324
    assert s3.expected_etag([a]) == a.hex()
    assert s3.expected_etag([a, b]) == hashlib.md5(a + b).hexdigest() + "-2"  # noqa: S324


@mock_aws
def test_s3_store_verified_upload_download_and_listing(tmp_path: Path) -> None:
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="bkp")
    store = s3.S3Store({"bucket": "bkp", "region": "us-east-1", "access_key": "x", "secret_key": "y"})
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"hello")
    big.write_bytes(os.urandom(11 * 1024 * 1024))
    for path in (small, big):
        got = store.upload_file(str(path), f"p/full/20260117T030000Z-abcdef/{path.name}", part_size=5 * 1024 * 1024)
        assert got == {"size": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    down = store.download("p/full/20260117T030000Z-abcdef/big", str(tmp_path / "down"))
    assert down["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
    refs = store.list_backups("p")
    assert len(refs) == 1 and not refs[0].complete
    with pytest.raises(bc.BackupError, match="no such backup"):
        store.get_json("p/full/20260117T030000Z-abcdef/manifest.json")
    store.delete_keys(refs[0].keys)
    assert store.list_backups("p") == []
