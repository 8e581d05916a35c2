# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Backups proven by restore, against the local environment's PostgreSQL, Redis and S3.

Everything lives in names of its own: a scratch database ``thinkus_backup_test_<hex>``,
Redis db 13 keys under ``thinkus-backup-test:<hex>:``, and bucket prefix
``test-backup/<hex>/``; all removed in ``finally``. The playbooks run as an operator runs
them (inventories/local), at -vvv where secrets could leak.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
import redis

from ansible_collections.thinkus.ops.tests.support.ansible import REPO_ROOT, PlaybookResult, run_playbook
from tools.localenv import _secrets
from tools.localenv._proc import Context

pytestmark = [pytest.mark.localenv, pytest.mark.slow]

INVENTORY = str(REPO_ROOT / "inventories" / "local")
TARGETS = REPO_ROOT / "tests" / "integration" / "targets"
PG = {"host": "127.0.0.1", "port": 15432}
REDIS = {"host": "127.0.0.1", "port": 16379}
S3_ENDPOINT = "http://127.0.0.1:19000"
BUCKET = "thinkus-backups"
REDIS_DB = 13
REDIS_KEYS = 3000


@pytest.fixture(scope="module")
def creds() -> dict[str, str]:
    found = _secrets.load(Context())
    missing = {"postgres_user", "postgres_password", "redis_password", "s3_access_key", "s3_secret_key"} - set(found)
    assert not missing, f"local environment credentials missing ({missing}): run make local-up"
    return found


@pytest.fixture(scope="module")
def s3(creds: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=S3_ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id=creds["s3_access_key"],
        aws_secret_access_key=creds["s3_secret_key"],
    )


def pg_connect(creds: dict[str, str], dbname: str) -> Any:
    conn = psycopg2.connect(dbname=dbname, user=creds["postgres_user"], password=creds["postgres_password"], **PG)
    conn.autocommit = True
    return conn


def content_digest(creds: dict[str, str], dbname: str) -> dict[str, str]:
    """md5 of every row of every test table, in key order: equal digests = identical content."""
    conn = pg_connect(creds, dbname)
    try:
        with conn.cursor() as cur:
            out = {}
            for table, key in (("pgbench_accounts", "aid"), ("pgbench_branches", "bid"), ("backup_test_orders", "id")):
                cur.execute(f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY {key})) FROM {table} t")  # noqa: S608
                out[table] = "{}:{}".format(*cur.fetchone())
            return out
    finally:
        conn.close()


def delete_prefix(s3: Any, prefix: str) -> None:
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for o in page.get("Contents", [])
    ]
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})


def list_prefix(s3: Any, prefix: str) -> list[str]:
    return sorted(
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for o in page.get("Contents", [])
    )


@pytest.fixture(scope="module")
def world(creds: dict[str, str], s3: Any) -> Iterator[dict[str, Any]]:
    """A seeded scratch database and Redis keys, and a bucket prefix; all removed afterwards."""
    tag = secrets.token_hex(4)
    dbname = f"thinkus_backup_test_{tag}"
    prefix = f"test-backup/{tag}"
    key_prefix = f"thinkus-backup-test:{tag}:"
    admin = pg_connect(creds, "thinkus")
    rds = redis.Redis(password=creds["redis_password"], db=REDIS_DB, **REDIS)
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{dbname}"')
        env = dict(os.environ, PGPASSWORD=creds["postgres_password"])
        subprocess.run(
            [
                "pgbench",
                "-i",
                "-q",
                "-s",
                "1",
                "-h",
                PG["host"],
                "-p",
                str(PG["port"]),
                "-U",
                creds["postgres_user"],
                dbname,
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        conn = pg_connect(creds, dbname)
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE backup_test_orders (id serial PRIMARY KEY, customer text NOT NULL, "
                "amount numeric(10,2) NOT NULL, created timestamptz NOT NULL DEFAULT '2026-01-17T00:00:00Z')"
            )
            cur.execute(
                "INSERT INTO backup_test_orders (customer, amount) "
                "SELECT 'customer-' || i, (i * 1.25)::numeric(10,2) FROM generate_series(1, 1000) i"
            )
            cur.execute("CREATE INDEX backup_test_orders_customer ON backup_test_orders (customer)")
            cur.execute("CREATE VIEW backup_test_big_orders AS SELECT * FROM backup_test_orders WHERE amount > 1000")
        conn.close()
        pipe = rds.pipeline()
        for i in range(REDIS_KEYS):
            pipe.set(f"{key_prefix}s:{i}", f"value-{i}")
        pipe.hset(f"{key_prefix}h", mapping={"a": "1", "b": "2"})
        pipe.rpush(f"{key_prefix}l", "x", "y", "z")
        pipe.zadd(f"{key_prefix}z", {"m": 1.5, "n": 2.5})
        pipe.set(f"{key_prefix}ttl", "expiring", ex=3600)
        pipe.execute()
        yield {"tag": tag, "db": dbname, "prefix": prefix, "key_prefix": key_prefix, "redis": rds}
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"thinkus_backup_test_{tag}%",))
            for (name,) in cur.fetchall():
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        for keys in iter(lambda: rds.keys(key_prefix + "*")[:1000], []):
            rds.delete(*keys)
        delete_prefix(s3, prefix + "/")
        delete_prefix(s3, prefix + "-")


def base_vars(world: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"backup_s3_prefix": world["prefix"], "backup_postgres_database": world["db"], **extra}


def failure_excerpt(output: str) -> str:
    sections = output.split("\nTASK [")
    failed = [s for s in sections if ("fatal: [" in s or "FAILED!" in s) and "...ignoring" not in s]
    return "\n---\n".join("TASK [" + s[:6000] for s in failed) or output[-8000:]


def assert_passed(result: PlaybookResult) -> None:
    assert result.rc == 0, failure_excerpt(result.output)


def assert_no_secret(text: str, creds: dict[str, str]) -> None:
    for name in ("postgres_password", "redis_password", "s3_secret_key"):
        assert creds[name] not in text, f"{name} leaked"


class CmdlineWatcher:
    """Samples /proc/*/cmdline while a run goes on, remembering any command line holding a secret."""

    def __init__(self, secrets_: list[str]) -> None:
        self.secrets = [s.encode() for s in secrets_]
        self.seen: set[str] = set()
        self.leaks: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                argv0 = cmdline.split(b"\0", 1)[0].decode(errors="replace")
                self.seen.add(os.path.basename(argv0.split(" ", 1)[0]))  # redis-server retitles itself
                if any(s in cmdline for s in self.secrets):
                    self.leaks.append(argv0)
            self._stop.wait(0.02)

    def __enter__(self) -> CmdlineWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def test_backup_drop_restore_and_verify(world: dict[str, Any], creds: dict[str, str], s3: Any, tmp_path: Path) -> None:
    """The drill: seed -> backup -> drop/flush -> restore -> identical content -> restore_verify passes."""
    before = content_digest(creds, world["db"])
    rds = world["redis"]
    redis_before = {k: rds.dump(k) for k in rds.scan_iter(world["key_prefix"] + "*", count=1000)}
    assert len(redis_before) == REDIS_KEYS + 4

    secrets_ = [creds["postgres_password"], creds["redis_password"], creds["s3_secret_key"]]
    with CmdlineWatcher(secrets_) as watcher:
        result = run_playbook(
            "playbooks/backup.yml",
            inventory=INVENTORY,
            verbosity=3,
            extra_vars=base_vars(world, backup_kinds=["full", "redis"]),
        )
    assert_passed(result)
    world["backed_up"] = True
    assert_no_secret(result.output, creds)
    assert watcher.leaks == [], f"secret on the command line of {watcher.leaks}"
    # the tools the secrets go to were seen running (so the check above could have failed)
    assert {"pg_dump", "redis-cli"} <= watcher.seen

    keys = list_prefix(s3, world["prefix"] + "/")
    manifests = [k for k in keys if k.endswith("/manifest.json")]
    assert {k.split("/")[2] for k in manifests} == {"full", "redis"}
    for key in manifests:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
        assert_no_secret(body, creds)
        manifest = json.loads(body)
        assert manifest["objects"] and all(len(o["sha256"]) == 64 for o in manifest["objects"])
        if manifest["kind"] == "full":
            tables = manifest["fingerprint"]["postgres"]["tables"]
            assert tables["public.backup_test_orders"] == 1000
            assert tables["public.pgbench_accounts"] == 100000
            assert manifest["source"] == {
                "engine": "postgres",
                "host": "127.0.0.1",
                "port": 15432,
                "database": world["db"],
                "user": creds["postgres_user"],
            }
        else:
            assert manifest["fingerprint"]["redis"]["databases"][str(REDIS_DB)]["persistent"] >= REDIS_KEYS + 3

    # Disaster: the database is dropped and the keys flushed.
    admin = pg_connect(creds, "thinkus")
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE "{world["db"]}" WITH (FORCE)')
    admin.close()
    rds.delete(*redis_before)

    result = run_playbook(
        "playbooks/restore.yml",
        inventory=INVENTORY,
        verbosity=3,
        extra_vars=base_vars(
            world,
            backup_restore_kind="full",
            backup_restore_postgres_database=world["db"],
            backup_restore_over_source=True,
        ),
    )
    assert_passed(result)
    assert_no_secret(result.output, creds)
    result = run_playbook(
        "playbooks/restore.yml",
        inventory=INVENTORY,
        verbosity=3,
        extra_vars=base_vars(
            world,
            backup_restore_kind="redis",
            backup_restore_over_source=True,
            backup_restore_redis_databases=[REDIS_DB],
            backup_restore_redis_key_pattern=world["key_prefix"] + "*",
        ),
    )
    assert_passed(result)
    assert_no_secret(result.output, creds)

    assert content_digest(creds, world["db"]) == before
    redis_after = {k: rds.dump(k) for k in rds.scan_iter(world["key_prefix"] + "*", count=1000)}
    assert redis_after == redis_before
    assert 3500 < rds.ttl(world["key_prefix"] + "ttl") <= 3600, "the TTL came back with the key"

    # The drill playbook proves both latest backups.
    result = run_playbook(
        "playbooks/restore_drill.yml",
        inventory=INVENTORY,
        verbosity=3,
        extra_vars=base_vars(world, backup_drill_scratch_prefix=f"thinkus_backup_test_{world['tag']}_d"),
    )
    assert_passed(result)
    assert_no_secret(result.output, creds)
    assert "full backup" in result.output and "OK, RTO" in result.output


def run_target(name: str, tmp_path: Path, **extra: Any) -> PlaybookResult:
    playbook = tmp_path / f"{name}.yml"
    playbook.write_text(
        "---\n"
        f"- name: Integration target {name}\n"
        "  hosts: localhost\n"
        "  gather_facts: false\n"
        "  roles:\n"
        f"    - role: {TARGETS / name}\n"
    )
    return run_playbook(playbook, extra_vars=extra, inventory=INVENTORY, verbosity=3)


def test_restore_verify_target(world: dict[str, Any], creds: dict[str, str], tmp_path: Path) -> None:
    """check mode -> real -> check -> real, RPO failure, missing backup (tests/integration/targets/restore_verify)."""
    ensure_backups(world)
    result = run_target(
        "restore_verify",
        tmp_path,
        rv_prefix=world["prefix"],
        rv_database=world["db"],
        rv_scratch_prefix=f"thinkus_backup_test_{world['tag']}_rv",
        rv_redis_db=REDIS_DB,
        rv_redis_keys=REDIS_KEYS,
    )
    assert_passed(result)
    assert "failed=0" in result.output
    assert_no_secret(result.output, creds)


def ensure_backups(world: dict[str, Any]) -> None:
    if not world.get("backed_up"):
        result = run_playbook(
            "playbooks/backup.yml", inventory=INVENTORY, extra_vars=base_vars(world, backup_kinds=["full", "redis"])
        )
        assert_passed(result)
        world["backed_up"] = True


VERIFY_PLAYBOOK = """---
- name: Verify one backup
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Restore verify
      thinkus.ops.restore_verify:
        key: "{{ rv_key | default(omit) }}"
        kind: "{{ omit if rv_key is defined else 'full' }}"
        compare_to: "{{ rv_compare_to | default('manifest') }}"
        bucket: "{{ backup_s3_bucket }}"
        prefix: "{{ backup_s3_prefix }}"
        endpoint_url: "{{ backup_s3_endpoint_url }}"
        access_key: "{{ backup_s3_access_key }}"
        secret_key: "{{ backup_s3_secret_key }}"
        postgres_host: "{{ backup_postgres_host }}"
        postgres_port: "{{ backup_postgres_port }}"
        postgres_user: "{{ backup_postgres_user }}"
        postgres_password: "{{ backup_postgres_password }}"
        postgres_database: "{{ backup_postgres_database }}"
        scratch_prefix: "{{ rv_scratch_prefix }}"
"""


def verify(world: dict[str, Any], tmp_path: Path, **extra: Any) -> dict[str, Any]:
    playbook = tmp_path / "verify.yml"
    playbook.write_text(VERIFY_PLAYBOOK)
    result = run_playbook(
        playbook,
        inventory=INVENTORY,
        json_output=True,
        extra_vars=base_vars(world, rv_scratch_prefix=f"thinkus_backup_test_{world['tag']}_v", **extra),
    )
    return result.task("Restore verify")


def test_corrupted_dump_fails_the_checksum_check(world: dict[str, Any], s3: Any, tmp_path: Path) -> None:
    ensure_backups(world)
    manifest_key = [k for k in list_prefix(s3, world["prefix"] + "/full/") if k.endswith("manifest.json")][-1]
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())
    # A copy of the backup whose dump has one byte flipped; the original stays intact.
    copy = manifest_key.replace(world["prefix"] + "/", world["prefix"] + "-corrupt/")
    folder = copy.rsplit("/", 1)[0] + "/"
    dump = bytearray(s3.get_object(Bucket=BUCKET, Key=manifest["objects"][0]["key"])["Body"].read())
    dump[len(dump) // 2] ^= 0xFF
    s3.put_object(Bucket=BUCKET, Key=folder + "postgres.dump", Body=bytes(dump))
    manifest["objects"][0]["key"] = folder + "postgres.dump"
    s3.put_object(Bucket=BUCKET, Key=copy, Body=json.dumps(manifest).encode())

    task = verify(world, tmp_path, rv_key=copy)
    assert task.get("failed"), task
    assert task["report"]["failed_checks"] == ["checksum:postgres.dump"]
    assert "checksum:postgres.dump" in task["msg"]
    # a damaged dump is never restored: no scratch database was made
    assert "scratch" not in task["report"]


def test_rows_deleted_after_backup_fail_the_row_count_check(
    world: dict[str, Any], creds: dict[str, str], tmp_path: Path
) -> None:
    ensure_backups(world)
    conn = pg_connect(creds, world["db"])
    with conn.cursor() as cur:
        cur.execute("DELETE FROM backup_test_orders WHERE id > 990")
    conn.close()
    task = verify(world, tmp_path, rv_compare_to="live")
    assert task.get("failed"), task
    assert task["report"]["failed_checks"] == ["row_count:public.backup_test_orders"]
    check = next(c for c in task["report"]["checks"] if c["name"] == "row_count:public.backup_test_orders")
    assert (check["expected"], check["actual"]) == (990, 1000)
    assert "row_count:public.backup_test_orders" in task["msg"]
    assert task["report"]["scratch"]["removed"]


def test_bad_input_fails_clearly_and_leaves_no_good_backup(
    world: dict[str, Any], creds: dict[str, str], s3: Any, tmp_path: Path
) -> None:
    prefix = world["prefix"] + "-bad"
    # wrong S3 secret
    result = run_playbook(
        "playbooks/backup.yml",
        inventory=INVENTORY,
        json_output=True,
        extra_vars=base_vars(
            world, backup_s3_prefix=prefix, backup_kinds=["full"], backup_s3_secret_key="wrong-" + secrets.token_hex(8)
        ),
    )
    assert result.rc != 0
    assert "check the access key and secret key" in json.dumps(result.tasks)
    # unreachable database
    result = run_playbook(
        "playbooks/backup.yml",
        inventory=INVENTORY,
        json_output=True,
        extra_vars=base_vars(world, backup_s3_prefix=prefix, backup_kinds=["full"], backup_postgres_port=1),
    )
    assert result.rc != 0
    assert "cannot connect to PostgreSQL at 127.0.0.1:1" in json.dumps(result.tasks)
    assert list_prefix(s3, prefix + "/") == [], "nothing was uploaded"
    # bad schedule: preflight names the variable before anything changes
    result = run_playbook(
        "playbooks/backup.yml",
        inventory=INVENTORY,
        extra_vars=base_vars(
            world, backup_s3_prefix=prefix, backup_kinds=["full"], backup_schedules={"full": "every day"}
        ),
    )
    assert result.rc != 0 and "backup_schedules.full must be a cron expression" in result.output
    # a non-empty target without force: refused, nothing touched
    ensure_backups(world)
    before = content_digest(creds, world["db"])
    over_source = {"backup_restore_postgres_database": world["db"], "backup_restore_over_source": True}
    result = run_playbook(
        "playbooks/restore.yml",
        inventory=INVENTORY,
        json_output=True,
        extra_vars=base_vars(world, backup_restore_kind="full", **over_source),
    )
    assert result.rc != 0
    assert "is not empty" in json.dumps(result.tasks) and "without force=true" in json.dumps(result.tasks)
    assert "backup_restore_force" in json.dumps(result.tasks)
    assert content_digest(creds, world["db"]) == before
    # confirmation required (as in production inventories)
    result = run_playbook(
        "playbooks/restore.yml",
        inventory=INVENTORY,
        extra_vars=base_vars(
            world,
            backup_restore_kind="full",
            backup_restore_confirmation_required=True,
            backup_restore_force=True,
            **over_source,
        ),
    )
    assert result.rc != 0 and f"confirm with backup_restore_confirm=local/{world['db']}" in result.output
    assert content_digest(creds, world["db"]) == before


def test_retention_over_forty_days(world: dict[str, Any], s3: Any, tmp_path: Path) -> None:
    """Backups dated across 40 days: pruning leaves exactly what the policy says."""
    prefix = world["prefix"] + "-retention"
    now = dt.datetime.now(dt.UTC)
    expected_kept: set[str] = set()
    all_folders: set[str] = set()

    def put(kind: str, age: dt.timedelta, complete: bool = True) -> str:
        moment = now - age
        folder = f"{prefix}/{kind}/{moment.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}/"
        s3.put_object(Bucket=BUCKET, Key=folder + ("redis.rdb" if kind == "redis" else "postgres.dump"), Body=b"x")
        if complete:
            s3.put_object(Bucket=BUCKET, Key=folder + "manifest.json", Body=b"{}")
        all_folders.add(folder)
        return folder

    for day in range(40):  # daily full backups at 03:00-ish, 0.5 .. 39.5 days old
        folder = put("full", dt.timedelta(days=day, hours=12))
        if day + 0.5 <= 30:
            expected_kept.add(folder)
    for slot in range(40 * 4):  # "hourly" every 6 hours for 40 days (4 a day keeps the test quick)
        folder = put("hourly", dt.timedelta(hours=6 * slot + 1))
        if 6 * slot + 1 <= 7 * 24:
            expected_kept.add(folder)
    redis_folders = [put("redis", dt.timedelta(days=10 + d)) for d in range(30)]  # all older than 7 days
    expected_kept.add(redis_folders[0])  # ... but the newest good one is kept
    expected_kept.add(put("full", dt.timedelta(hours=2), complete=False))  # still uploading: kept
    put("full", dt.timedelta(hours=30), complete=False)  # failed upload past the grace: deleted
    newer_failed = put("redis", dt.timedelta(hours=20), complete=False)  # incomplete is never "newest good"

    extra = base_vars(world, backup_s3_prefix=prefix)
    check = run_prune(tmp_path, extra, check=True)
    assert check["changed"] is True
    assert {d["folder"] for d in check["deleted"]} == all_folders - expected_kept - {newer_failed}
    assert len(list_prefix(s3, prefix + "/")) > 0 and len(folders(s3, prefix)) == len(all_folders), "check mode deleted"

    real = run_prune(tmp_path, extra)
    assert real["changed"] is True
    assert folders(s3, prefix) == expected_kept | {newer_failed}
    assert real["kept"] == {"full": 31, "hourly": 28, "redis": 2}

    again = run_prune(tmp_path, extra)
    assert again["changed"] is False and again["deleted"] == []


def folders(s3: Any, prefix: str) -> set[str]:
    return {k.rsplit("/", 1)[0] + "/" for k in list_prefix(s3, prefix + "/")}


PRUNE_PLAYBOOK = """---
- name: Prune
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Prune backups
      thinkus.ops.backup_prune:
        bucket: "{{ backup_s3_bucket }}"
        prefix: "{{ backup_s3_prefix }}"
        endpoint_url: "{{ backup_s3_endpoint_url }}"
        access_key: "{{ backup_s3_access_key }}"
        secret_key: "{{ backup_s3_secret_key }}"
        retention_days: {full: 30, hourly: 7, redis: 7}
"""


def run_prune(tmp_path: Path, extra: dict[str, Any], check: bool = False) -> dict[str, Any]:
    playbook = tmp_path / "prune.yml"
    playbook.write_text(PRUNE_PLAYBOOK)
    result = run_playbook(playbook, inventory=INVENTORY, json_output=True, check=check, diff=True, extra_vars=extra)
    assert result.rc == 0, result.output[-4000:]
    return result.task("Prune backups")
