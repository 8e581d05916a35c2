"""S3-compatible object store standing in for Cloudflare R2: moto's server from PyPI.

Authentication is enforced (requests must be signed with the generated key pair) after
the bootstrap calls that create the IAM user and its key. moto keeps objects in memory:
they live as long as the process, which suits a test environment.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import urllib.request
from pathlib import Path

import boto3
import botocore.exceptions

from . import _secrets
from ._proc import Context, LocalEnvError, spawn, stop, tracked_pid, wait_for

NAME = "s3"
HOST = "127.0.0.1"
PORT = 19000
REGION = "auto"
BUCKET = "thinkus-backups"
_BOOTSTRAP_CALLS = 3  # create_user, put_user_policy, create_access_key


def endpoint() -> str:
    return f"http://{HOST}:{PORT}"


@functools.lru_cache(maxsize=4)
def client(access_key: str, secret_key: str):
    """An S3 client of the store; one per key pair and process (a client costs about 0.1 s to make)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint(),
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
    )


def _moto_server() -> str:
    candidate = Path(sys.executable).with_name("moto_server")
    found = str(candidate) if candidate.exists() else shutil.which("moto_server")
    if not found:
        raise LocalEnvError("s3: moto_server not found; run `make setup` (moto[server] is in requirements.txt)")
    return found


def _bootstrap(ctx: Context) -> None:
    anon = {"endpoint_url": endpoint(), "region_name": "us-east-1"}
    iam = boto3.client("iam", aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap", **anon)  # noqa: S106
    iam.create_user(UserName="thinkus")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="thinkus", PolicyName="thinkus-all", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="thinkus")["AccessKey"]
    _secrets.put(ctx, "s3_access_key", key["AccessKeyId"])
    _secrets.put(ctx, "s3_secret_key", key["SecretAccessKey"])


def _buckets(ctx: Context) -> set[str] | None:
    """The buckets our key pair lists; None when the store refuses it (or there is none yet)."""
    creds = _secrets.load(ctx)
    try:
        listed = client(creds["s3_access_key"], creds["s3_secret_key"]).list_buckets()
    except (KeyError, botocore.exceptions.ClientError):
        return None
    return {b["Name"] for b in listed.get("Buckets", [])}


def up(ctx: Context) -> dict[str, str]:
    fresh = not tracked_pid(ctx, NAME)
    spawn(
        ctx,
        NAME,
        [_moto_server(), "-H", HOST, "-p", str(PORT)],
        env={"INITIAL_NO_AUTH_ACTION_COUNT": str(_BOOTSTRAP_CALLS)},
        ports=[PORT],
    )
    wait_for(ctx, NAME, _ping, timeout=30)
    existing = None if fresh else _buckets(ctx)
    if existing is None:
        _bootstrap(ctx)
        existing = _buckets(ctx)
        if existing is None:
            raise LocalEnvError(f"s3: the key pair made at {endpoint()} is refused; see {ctx.log_path(NAME)}")
    if BUCKET not in existing:
        creds = _secrets.load(ctx)
        client(creds["s3_access_key"], creds["s3_secret_key"]).create_bucket(Bucket=BUCKET)
    return {"s3_endpoint": endpoint(), "s3_bucket": BUCKET, "s3_region": REGION}


def _ping() -> bool:
    with urllib.request.urlopen(f"{endpoint()}/moto-api/", timeout=3) as resp:
        return resp.status == 200


def status(ctx: Context) -> tuple[bool, str]:
    try:
        ok = _buckets(ctx) is not None
    except Exception:
        ok = False
    return ok, f"{endpoint()} bucket {BUCKET}"


def down(ctx: Context) -> None:
    stop(ctx, NAME)
