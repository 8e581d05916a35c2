# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Redis backups against servers of the test's own, no shared environment needed.

- a redis-server with TLS only (``tls-port``, a CA made here with openssl) and SYNC / PSYNC
  disabled, as managed Redis (Upstash, Redis Cloud) is: ``auto`` falls back to a logical
  snapshot, ``rdb`` fails saying why, and the logical backup is proven by restore_verify and
  restored with backup_restore, TTLs kept;
- a plain redis-server where SYNC works: ``auto`` keeps taking the RDB file;
- an S3 store (moto, in this process) on a free loopback port.

Encrypted backups are also tampered with here: a changed object whose manifest checksum was
"fixed" by the attacker still fails restore, saying it was tampered with.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from moto.server import ThreadedMotoServer

from ansible_collections.thinkus.ops.tests.support.ansible import PlaybookResult, run_playbook

pytestmark = [pytest.mark.slow]

BUCKET = "thinkus-backups-test"
S3_KEY, S3_SECRET = "testing-access-key", "testing-secret-" + secrets.token_hex(8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET
    ).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET
    )


def make_ca(where: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 / localhost (keys stay in the test's directory)."""

    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    ossl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
    )
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost")
    (where / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ossl(
        "x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
        "-extfile", "ext", "-out", "srv.crt",
    )  # fmt: skip
    return where / "ca.crt"


class Server:
    def __init__(self, where: Path, tls: bool) -> None:
        self.dir = where
        self.tls = tls
        self.port = free_port()
        self.password = secrets.token_urlsafe(18)
        self.ca = make_ca(where) if tls else None
        lines = [
            "bind 127.0.0.1",
            f"dir {where}",
            'save ""',
            "appendonly no",
            "daemonize no",
            f"logfile {where / 'redis.log'}",
            f"requirepass {self.password}",
        ]
        if tls:
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {where / 'srv.crt'}",
                f"tls-key-file {where / 'srv.key'}",
                f"tls-ca-cert-file {self.ca}",
                "tls-auth-clients no",
                'rename-command SYNC ""',  # managed Redis: no replication for clients
                'rename-command PSYNC ""',
            ]
        else:
            lines.append(f"port {self.port}")
        conf = where / "redis.conf"
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o600)
        self.proc = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client().ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()  # leave no server behind
                    raise RuntimeError((where / "redis.log").read_text()[-2000:]) from None
                time.sleep(0.05)

    def client(self, db: int = 0) -> redis.Redis:
        extra: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(self.ca)} if self.tls else {}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, db=db, **extra)

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://default:{self.password}@127.0.0.1:{self.port}"

    def seed(self) -> None:
        for db in (0, 3):
            conn = self.client(db)
            conn.flushdb()
            pipe = conn.pipeline()
            for i in range(2500):
                pipe.set(f"s:{i}", f"value-{i}")
            pipe.hset("h", mapping={"a": "1", "b": "2"})
            pipe.rpush("l", "x", "y", "z")
            pipe.zadd("z", {"m": 1.5, "n": 2.5})
            pipe.sadd("set", "p", "q")
            pipe.set("ttl", "expiring", ex=3600)
            pipe.set(b"bin\x00\xff", b"\x00\x01\xfe")
            pipe.execute()

    def content(self) -> dict[int, dict[bytes, Any]]:
        """Every key's value per database (one connection per database: TLS handshakes are slow).

        Its DUMP payload, except for sets: a small set of strings is a hash table on this Redis,
        whose DUMP lists the members in the table's order, which a RESTORE may change.
        """
        out: dict[int, dict[bytes, Any]] = {}
        for db in (0, 3):
            conn = self.client(db)
            keys = sorted(conn.scan_iter(count=1000))
            pipe = conn.pipeline(transaction=False)
            for key in keys:
                pipe.type(key)
            types = pipe.execute()
            for key, kind in zip(keys, types, strict=True):
                if kind == b"set":
                    pipe.smembers(key)
                else:
                    pipe.dump(key)
            values = [frozenset(v) if isinstance(v, set) else v for v in pipe.execute()]
            out[db] = dict(zip(keys, values, strict=True))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "tls").mkdir()
    server = Server(tmp_path / "tls", tls=True)
    server.seed()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def plain_redis(tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "plain").mkdir()
    server = Server(tmp_path / "plain", tls=False)
    server.seed()
    try:
        yield server
    finally:
        server.stop()


TASK = """
    - name: {name}
      {module}:
{args}
      register: result
      ignore_errors: true
    - name: Show {name}
      ansible.builtin.debug:
        var: result
"""


def run_module(module: str, args: dict[str, Any], env: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    """Run one module as a play would; secrets only through the environment (the modules' fallbacks)."""
    body = "\n".join(f"        {k}: {json.dumps(v)}" for k, v in args.items())
    playbook = tmp_path / f"{module.rsplit('.', 1)[-1]}-{secrets.token_hex(3)}.yml"
    playbook.write_text(
        "---\n- name: Module\n  hosts: localhost\n  connection: local\n  gather_facts: false\n"
        '  vars:\n    ansible_python_interpreter: "{{ ansible_playbook_python }}"\n  tasks:'
        + TASK.format(name="Run", module=module, args=body)
    )
    result: PlaybookResult = run_playbook(playbook, env=env, json_output=True)
    return result.task("Run")


def base_env(server: Server, key: str | None = None) -> dict[str, str]:
    env = {
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "THINKUS_BACKUP_REDIS_URL": server.url,
    }
    if key:
        env["THINKUS_BACKUP_ENCRYPTION_KEY"] = key
    return env


def common(server: Server, endpoint: str, prefix: str) -> dict[str, Any]:
    args: dict[str, Any] = {"bucket": BUCKET, "prefix": prefix, "endpoint_url": endpoint}
    if server.ca:
        args["redis_tls_ca_file"] = str(server.ca)
    return args


def manifest_of(endpoint: str, key: str) -> dict[str, Any]:
    return json.loads(s3_client(endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_tls_without_sync_takes_a_logical_snapshot_proven_and_restored(
    tls_redis: Server, s3_endpoint: str, tmp_path: Path
) -> None:
    prefix = f"tls-{secrets.token_hex(3)}"
    env = base_env(tls_redis)
    args = common(tls_redis, s3_endpoint, prefix)
    before = tls_redis.content()

    # an explicit rdb snapshot is refused by this server, and the module says what to do
    refused = run_module(
        "thinkus.ops.backup_run", {**args, "kind": "redis", "redis_snapshot_mode": "rdb"}, env, tmp_path
    )
    assert refused.get("failed"), refused
    assert "refuses SYNC" in refused["msg"] and "redis_snapshot_mode to logical" in refused["msg"]

    # auto falls back to a logical snapshot, and the manifest says so
    result = run_module("thinkus.ops.backup_run", {**args, "kind": "redis"}, env, tmp_path)
    assert not result.get("failed"), result
    taken = result["manifest"]
    assert taken["dump"]["mode"] == "logical" and taken["dump"]["requested_mode"] == "auto"
    assert "SYNC" in taken["dump"]["fallback_reason"]
    assert taken["source"] == {
        "engine": "redis",
        "host": "127.0.0.1",
        "port": tls_redis.port,
        "username": "default",
        "tls": True,
    }
    assert [o["name"] for o in taken["objects"]] == ["redis.logical"]
    dbs = taken["fingerprint"]["redis"]["databases"]
    assert dbs == {
        "0": {"keys": 2506, "persistent": 2505, "volatile": 1},
        "3": {"keys": 2506, "persistent": 2505, "volatile": 1},
    }
    assert tls_redis.password not in json.dumps(taken)

    verified = run_module("thinkus.ops.restore_verify", {**args, "kind": "redis"}, env, tmp_path)
    assert not verified.get("failed"), verified
    report = verified["report"]
    assert report["ok"] and report["failed_checks"] == []
    assert {c["name"] for c in report["checks"]} >= {
        "checksum:redis.logical",
        "key_count:db0",
        "key_count:db3",
        "sample_digest",
    }

    # disaster: everything flushed; restore with backup_restore over TLS, TTLs kept
    tls_redis.client().flushall()
    restored = run_module("thinkus.ops.backup_restore", {**args, "kind": "redis"}, env, tmp_path)
    assert not restored.get("failed"), restored
    assert restored["restored_keys"] == {"0": 2506, "3": 2506}
    after = tls_redis.content()
    differing = {
        db: [
            (key, before[db].get(key), after[db].get(key))
            for key in sorted(set(before[db]) | set(after[db]))
            if before[db].get(key) != after[db].get(key)
        ][:5]
        for db in before
    }
    assert after == before, f"keys whose DUMP differs after the restore (key, before, after): {differing}"
    assert 3500 < tls_redis.client(3).ttl("ttl") <= 3600


def test_plain_server_with_sync_keeps_the_rdb_snapshot(plain_redis: Server, s3_endpoint: str, tmp_path: Path) -> None:
    prefix = f"rdb-{secrets.token_hex(3)}"
    env = base_env(plain_redis)
    args = common(plain_redis, s3_endpoint, prefix)
    taken = run_module("thinkus.ops.backup_run", {**args, "kind": "redis"}, env, tmp_path)
    assert not taken.get("failed"), taken
    assert taken["manifest"]["dump"]["mode"] == "rdb" and "fallback_reason" not in taken["manifest"]["dump"]
    assert [o["name"] for o in taken["manifest"]["objects"]] == ["redis.rdb"]
    verified = run_module("thinkus.ops.restore_verify", {**args, "kind": "redis"}, env, tmp_path)
    assert not verified.get("failed") and verified["report"]["ok"], verified


def test_a_tampered_encrypted_backup_fails_restore_saying_so(
    tls_redis: Server, s3_endpoint: str, tmp_path: Path
) -> None:
    prefix = f"enc-{secrets.token_hex(3)}"
    key = secrets.token_urlsafe(32)
    env = base_env(tls_redis, key)
    args = common(tls_redis, s3_endpoint, prefix)
    taken = run_module(
        "thinkus.ops.backup_run", {**args, "kind": "redis", "redis_snapshot_mode": "logical"}, env, tmp_path
    )
    assert not taken.get("failed"), taken
    manifest = taken["manifest"]
    assert manifest["encryption"]["cipher"] == "aes-256-gcm" and len(manifest["encryption"]["key_id"]) == 16
    obj = manifest["objects"][0]
    assert obj["name"] == "redis.logical.enc"
    verified = run_module("thinkus.ops.restore_verify", {**args, "kind": "redis"}, env, tmp_path)
    assert not verified.get("failed") and verified["report"]["ok"], verified

    # an attacker with write access to the bucket changes one byte and "fixes" the manifest's checksum
    s3 = s3_client(s3_endpoint)
    data = bytearray(s3.get_object(Bucket=BUCKET, Key=obj["key"])["Body"].read())
    data[len(data) // 2] ^= 0x20
    s3.put_object(Bucket=BUCKET, Key=obj["key"], Body=bytes(data))
    obj["sha256"] = hashlib.sha256(data).hexdigest()
    s3.put_object(Bucket=BUCKET, Key=taken["backup"]["manifest"], Body=json.dumps(manifest).encode())

    broken = run_module("thinkus.ops.restore_verify", {**args, "kind": "redis"}, env, tmp_path)
    assert broken.get("failed"), broken
    assert "redis.logical.enc failed authentication" in broken["msg"] and "tampered with" in broken["msg"]
    assert "scratch" not in broken["report"]
    tls_redis.client().flushall()
    refused = run_module("thinkus.ops.backup_restore", {**args, "kind": "redis"}, env, tmp_path)
    assert refused.get("failed") and "tampered with" in refused["msg"], refused
    assert tls_redis.client().dbsize() == 0, "nothing was restored from the forged object"
    # the wrong key is told apart from tampering
    wrong = run_module(
        "thinkus.ops.restore_verify", {**args, "kind": "redis"}, base_env(tls_redis, "another key"), tmp_path
    )
    assert wrong.get("failed") and "was encrypted with key id" in wrong["msg"], wrong


def test_the_role_restore_shows_the_age_and_needs_the_confirmation(
    tls_redis: Server, s3_endpoint: str, tmp_path: Path
) -> None:
    """playbooks/restore.yml's flow against a managed-style Redis: refused without the flag or with a wrong
    confirmation (nothing changed), then restored after printing the backup's age."""
    prefix = f"role-{secrets.token_hex(3)}"
    env = base_env(tls_redis)
    taken = run_module(
        "thinkus.ops.backup_run", {**common(tls_redis, s3_endpoint, prefix), "kind": "redis"}, env, tmp_path
    )
    assert not taken.get("failed"), taken
    before = tls_redis.content()
    tls_redis.client(3).flushdb()
    playbook = "playbooks/restore.yml"
    role_vars: dict[str, Any] = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "backup_environment": "test",
        "backup_restore_confirmation_required": True,
        "backup_restore_kind": "redis",
        "backup_restore_redis_databases": [3],
        "backup_s3_bucket": BUCKET,
        "backup_s3_prefix": prefix,
        "backup_s3_endpoint_url": s3_endpoint,
        "backup_redis_tls_ca_file": str(tls_redis.ca),
    }
    expected = f"test/redis:127.0.0.1:{tls_redis.port}"

    refused = run_playbook(playbook, env=env, extra_vars=role_vars, verbosity=3)
    assert refused.rc != 0 and "set backup_restore_over_source=true" in refused.output
    wrong = run_playbook(
        playbook,
        env=env,
        extra_vars={**role_vars, "backup_restore_over_source": True, "backup_restore_confirm": "test"},
    )
    assert wrong.rc != 0 and f"backup_restore_confirm={expected}" in wrong.output
    assert tls_redis.client(3).dbsize() == 0, "a refusal changed nothing"

    done = run_playbook(
        playbook,
        env=env,
        extra_vars={**role_vars, "backup_restore_over_source": True, "backup_restore_confirm": expected},
        verbosity=3,
    )
    assert done.rc == 0, done.output[-4000:]
    flat = " ".join(done.output.split())  # the callback wraps long messages
    backup_id = taken["backup"]["id"]
    shown = f"redis backup {backup_id} finished {taken['manifest']['finished_at']}, 0h 0m ago; restoring it into "
    assert shown + f"redis:127.0.0.1:{tls_redis.port} (over the live source)" in flat
    assert flat.index(shown) < flat.index("TASK [thinkus.ops.backup : Restore the backup]")
    assert tls_redis.content()[3] == before[3]
    assert tls_redis.password not in done.output and S3_SECRET not in done.output
