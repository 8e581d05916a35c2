"""Each component of the local environment is real: these tests use it as a client would.

They need `make local-up` first (make test does it); a component that is down makes its
test fail, never skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis
import yaml

from tools.localenv import _secrets, alertmanager, images, postgres, prometheus, registry, s3, vercel
from tools.localenv._proc import Context, free_port

pytestmark = pytest.mark.localenv


@pytest.fixture(scope="module")
def ctx() -> Context:
    return Context()


@pytest.fixture(scope="module")
def creds(ctx: Context) -> dict[str, str]:
    found = _secrets.load(ctx)
    assert found, "no .local/credentials.yml: bring the local environment up first (make local-up)"
    return found


def _docker(*args: str, env: dict[str, str] | None = None, input_: str | None = None) -> str:
    res = subprocess.run(
        ["docker", *args], capture_output=True, text=True, input=input_, env={**os.environ, **(env or {})}, check=False
    )
    assert res.returncode == 0, f"docker {args[0]} failed: {res.stderr[-2000:]}"
    return res.stdout


@pytest.fixture
def docker_config(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A throwaway DOCKER_CONFIG so a registry login leaves nothing behind in ~/.docker."""
    cfg = tmp_path / "docker-config"
    cfg.mkdir(mode=0o700)
    yield {"DOCKER_CONFIG": str(cfg)}


def test_docker_runs_a_container_from_the_local_base_image() -> None:
    out = _docker("run", "--rm", "--network", "none", images.BASE, "cat", "/etc/os-release")
    assert f"VERSION_CODENAME={images.SUITE}" in out


def test_python_and_go_base_images_carry_their_toolchains() -> None:
    assert "Python 3" in _docker("run", "--rm", "--network", "none", images.DERIVED["python"], "python", "--version")
    assert "go version go1." in _docker("run", "--rm", "--network", "none", images.DERIVED["golang"], "go", "version")


def _registry_get(path: str, auth: tuple[str, str] | None = None) -> int:
    req = urllib.request.Request(f"{registry._url()}{path}")
    if auth:
        import base64

        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_registry_requires_auth_and_round_trips_an_image(creds: dict[str, str], docker_config: dict[str, str]) -> None:
    assert _registry_get("/v2/") == 401
    assert _registry_get("/v2/", ("thinkus", "wrong-password")) == 401
    user, password = creds["registry_username"], creds["registry_password"]
    assert _registry_get("/v2/", (user, password)) == 200

    repo = f"{registry.HOST}:{registry.PORT}/localenv-test/base"
    tag = uuid.uuid4().hex[:12]
    _docker("tag", images.BASE, f"{repo}:{tag}")
    push_anon = subprocess.run(
        ["docker", "push", f"{repo}:{tag}"],
        capture_output=True,
        text=True,
        env={**os.environ, **docker_config},
        check=False,
    )
    assert push_anon.returncode != 0 and "no basic auth credentials" in (push_anon.stderr + push_anon.stdout)

    _docker(
        "login",
        "--username",
        user,
        "--password-stdin",
        f"{registry.HOST}:{registry.PORT}",
        env=docker_config,
        input_=password,
    )
    _docker("push", f"{repo}:{tag}", env=docker_config)
    _docker("rmi", f"{repo}:{tag}")
    _docker("pull", f"{repo}:{tag}", env=docker_config)
    assert _registry_get(f"/v2/localenv-test/base/manifests/{tag}", (user, password)) in (200, 406)
    _docker("rmi", f"{repo}:{tag}")


def test_postgres_writes_and_reads_a_row(creds: dict[str, str]) -> None:
    conn = psycopg2.connect(
        host=postgres.HOST,
        port=postgres.PORT,
        dbname=postgres.DB,
        user=creds["postgres_user"],
        password=creds["postgres_password"],
    )
    try:
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE localenv_probe (id serial, note text)")
            cur.execute("INSERT INTO localenv_probe (note) VALUES (%s) RETURNING id", ("hello",))
            row_id = cur.fetchone()[0]
            cur.execute("SELECT note FROM localenv_probe WHERE id = %s", (row_id,))
            assert cur.fetchone() == ("hello",)
            cur.execute("SHOW server_version_num")
            assert int(cur.fetchone()[0]) >= 150000
    finally:
        conn.close()
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(
            host=postgres.HOST, port=postgres.PORT, dbname=postgres.DB, user=creds["postgres_user"], password="wrong"
        )


def test_redis_sets_and_gets_a_key(creds: dict[str, str]) -> None:
    client = redis.Redis(host="127.0.0.1", port=16379, password=creds["redis_password"])
    key = f"localenv:{uuid.uuid4().hex}"
    client.set(key, "value", ex=60)
    assert client.get(key) == b"value"
    assert int(client.info("server")["redis_version"].split(".")[0]) >= 7
    client.delete(key)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=16379, password="wrong").ping()


def test_s3_puts_and_gets_an_object_and_rejects_a_bad_key(creds: dict[str, str]) -> None:
    client = s3.client(creds["s3_access_key"], creds["s3_secret_key"])
    key = f"localenv-test/{uuid.uuid4().hex}"
    client.put_object(Bucket=s3.BUCKET, Key=key, Body=b"payload")
    assert client.get_object(Bucket=s3.BUCKET, Key=key)["Body"].read() == b"payload"
    client.delete_object(Bucket=s3.BUCKET, Key=key)
    bad = s3.client(creds["s3_access_key"], "not-the-secret")
    with pytest.raises(Exception, match=r"SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied"):
        bad.list_objects_v2(Bucket=s3.BUCKET)


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def _post(url: str) -> int:
    req = urllib.request.Request(url, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


def test_prometheus_loads_a_rule_file_seen_through_the_api() -> None:
    rules_dir = Context().state_dir / "prometheus" / "rules"
    group = f"localenv_probe_{uuid.uuid4().hex[:8]}"
    rule_file = rules_dir / f"{group}.yml"
    rule_file.write_text(
        yaml.safe_dump({"groups": [{"name": group, "rules": [{"record": "localenv:probe:one", "expr": "vector(1)"}]}]})
    )
    try:
        subprocess.run(["promtool", "check", "rules", str(rule_file)], check=True, capture_output=True)
        assert _post(f"{prometheus.url()}/-/reload") == 200
        deadline = time.monotonic() + 20
        names: list[str] = []
        while time.monotonic() < deadline:
            names = [g["name"] for g in _get_json(f"{prometheus.url()}/api/v1/rules")["data"]["groups"]]
            if group in names:
                break
            time.sleep(0.5)
        assert group in names
    finally:
        rule_file.unlink(missing_ok=True)
        _post(f"{prometheus.url()}/-/reload")


def test_alertmanager_answers_and_lists_its_receivers() -> None:
    status = _get_json(f"{alertmanager.url()}/api/v2/status")
    assert status["cluster"]["status"] in ("ready", "disabled")
    assert "receivers" in status["config"]["original"]


def test_local_vercel_api_requires_the_generated_token(creds: dict[str, str]) -> None:
    project_url = f"{vercel.url()}/v9/projects/{vercel.PROJECT}"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(project_url, timeout=5)
    assert err.value.code in (401, 403)
    req = urllib.request.Request(project_url, headers={"Authorization": f"Bearer {creds['vercel_token']}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.load(resp)["name"] == vercel.PROJECT


def _thinkus_db(password: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(
        host=postgres.HOST, port=postgres.PORT, dbname=postgres.DB, user=postgres.USER, password=password
    )
    conn.autocommit = True
    return conn


def test_postgres_comes_up_on_a_cluster_whose_credentials_were_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A .local that lost its credentials (deleted, or a new checkout at the same path) finds
    the cluster it made still there with the old superuser password: local-up takes it over
    with the new one, and the data is kept."""
    monkeypatch.setattr(postgres, "PORT", free_port())
    own = Context(state_dir=tmp_path / ".local", cache_dir=tmp_path / "cache")
    try:
        postgres.up(own)
        first = _secrets.load(own)
        with contextlib.closing(_thinkus_db(first["postgres_password"])) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (v text)")
            cur.execute("INSERT INTO kept VALUES ('from the first .local')")
        postgres.down(own)
        (own.state_dir / "credentials.yml").unlink()
        capsys.readouterr()

        postgres.up(own)

        assert "another .local's superuser password; setting this one" in capsys.readouterr().out
        second = _secrets.load(own)
        assert second["postgres_superuser_password"] != first["postgres_superuser_password"]
        with contextlib.closing(_thinkus_db(second["postgres_password"])) as conn, conn.cursor() as cur:
            cur.execute("SELECT v FROM kept")
            assert cur.fetchall() == [("from the first .local",)]
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            postgres._connect(first["postgres_superuser_password"]).close()
    finally:
        postgres.down(own)
        link = own.state_dir / "postgres"
        if link.is_symlink():  # as root the cluster lives outside .local: remove it too
            shutil.rmtree(link.resolve().parent, ignore_errors=True)
