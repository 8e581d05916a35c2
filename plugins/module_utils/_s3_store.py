# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private S3 client of the thinkus.ops backup modules (R2, AWS S3 or any compatible store).

Uploads are verified: every part carries its MD5, and the ETag the store returns must be
the one computed locally (``md5`` for one request, ``md5(part md5s)-N`` for a multipart
upload) before the object counts as uploaded. The SHA-256 of each object goes in the
manifest and is checked again on every download.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ansible.module_utils.basic import env_fallback

from ansible_collections.thinkus.ops.plugins.module_utils._backup_common import (
    BackupError,
    BackupRef,
    group_backups,
)

try:
    import boto3
    import botocore.config
    import botocore.exceptions

    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = exc

PART_SIZE = 32 * 1024 * 1024
UPLOAD_THREADS = 4


def s3_argument_spec() -> dict[str, Any]:
    """Options every backup module shares to reach the bucket."""
    return dict(
        bucket=dict(type="str", required=True),
        prefix=dict(type="str", default=""),
        endpoint_url=dict(type="str", fallback=(env_fallback, ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])),
        region=dict(type="str", default="auto", fallback=(env_fallback, ["AWS_REGION"])),
        access_key=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_ACCESS_KEY_ID"])),
        secret_key=dict(type="str", no_log=True, fallback=(env_fallback, ["AWS_SECRET_ACCESS_KEY"])),
    )


def expected_etag(part_md5s: list[bytes]) -> str:
    """The ETag an S3-compatible store gives an object uploaded in these parts."""
    if len(part_md5s) == 1:
        return part_md5s[0].hex()
    return hashlib.md5(b"".join(part_md5s)).hexdigest() + f"-{len(part_md5s)}"  # noqa: S324 - the S3 ETag scheme


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class S3Store:
    def __init__(self, params: Mapping[str, Any]) -> None:
        if not HAS_BOTO3:
            raise BackupError(f"boto3 is required: {BOTO3_IMPORT_ERROR}")
        self.bucket: str = params["bucket"]
        self.endpoint = params.get("endpoint_url")
        region = params.get("region") or "auto"
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint or None,
            # botocore signs with the region; "auto" is R2's, other stores accept us-east-1
            region_name="us-east-1" if region == "auto" else region,
            aws_access_key_id=params.get("access_key") or None,
            aws_secret_access_key=params.get("secret_key") or None,
            config=botocore.config.Config(
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=10,
                read_timeout=120,
                s3={"addressing_style": "path"},
            ),
        )

    # ------------------------------------------------------------------ errors

    def _explain(self, exc: Exception, action: str) -> BackupError:
        if isinstance(exc, botocore.exceptions.ClientError):
            err = exc.response.get("Error", {})
            code = err.get("Code", "?")
            hint = ""
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
                hint = " (check the access key and secret key)"
            elif code in ("NoSuchBucket",):
                hint = f" (bucket {self.bucket!r} does not exist)"
            return BackupError(f"S3 {action} failed: {code} {err.get('Message', '')}{hint}".strip())
        if isinstance(exc, botocore.exceptions.EndpointConnectionError):
            return BackupError(f"S3 {action} failed: cannot reach {self.endpoint or 'the S3 endpoint'}")
        return BackupError(f"S3 {action} failed: {exc}")

    def check_access(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise self._explain(exc, f"access to bucket {self.bucket!r}") from exc

    # ------------------------------------------------------------------ upload

    def upload_file(self, path: str, key: str, part_size: int = PART_SIZE) -> dict[str, Any]:
        """Upload one file, verified by ETag; returns its size and SHA-256 (computed while reading)."""
        size = os.path.getsize(path)
        sha = hashlib.sha256()
        try:
            if size <= part_size:
                with open(path, "rb") as fh:
                    body = fh.read()
                sha.update(body)
                md5 = hashlib.md5(body).digest()  # noqa: S324 - S3 integrity header, not security
                resp = self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentMD5=_b64(md5))
                self._check_etag(key, resp.get("ETag", ""), [md5])
            else:
                self._multipart(path, key, part_size, sha)
        except BackupError:
            raise
        except Exception as exc:
            raise self._explain(exc, f"upload of {key}") from exc
        return {"size": size, "sha256": sha.hexdigest()}

    def _multipart(self, path: str, key: str, part_size: int, sha: Any) -> None:
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        try:
            md5s: list[bytes] = []
            futures = []
            with concurrent.futures.ThreadPoolExecutor(UPLOAD_THREADS) as pool, open(path, "rb") as fh:
                number = 0
                while True:
                    body = fh.read(part_size)
                    if not body:
                        break
                    number += 1
                    sha.update(body)
                    md5 = hashlib.md5(body).digest()  # noqa: S324 - S3 integrity header
                    md5s.append(md5)
                    futures.append(pool.submit(self._upload_part, key, upload_id, number, body, md5))
                    # bound the memory held by parts waiting for a thread
                    while sum(1 for f in futures if not f.done()) > UPLOAD_THREADS * 2:
                        concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
                parts = [f.result() for f in futures]
            resp = self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            self._check_etag(key, resp.get("ETag", ""), md5s)
        except BaseException:
            with contextlib.suppress(Exception):  # the original error is the one to report
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    def _upload_part(self, key: str, upload_id: str, number: int, body: bytes, md5: bytes) -> dict[str, Any]:
        resp = self.client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body, ContentMD5=_b64(md5)
        )
        if resp.get("ETag", "").strip('"') != md5.hex():
            raise BackupError(f"S3 upload of {key}: part {number} arrived corrupted (ETag mismatch)")
        return {"ETag": resp["ETag"], "PartNumber": number}

    def _check_etag(self, key: str, etag: str, md5s: list[bytes]) -> None:
        want = expected_etag(md5s)
        if etag.strip('"') != want:
            raise BackupError(f"S3 upload of {key} could not be verified: ETag {etag.strip(chr(34))} != {want}")

    def put_json(self, key: str, document: Any, body: bytes | None = None) -> None:
        data = body if body is not None else json.dumps(document).encode()
        md5 = hashlib.md5(data).digest()  # noqa: S324 - S3 integrity header
        try:
            resp = self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentMD5=_b64(md5), ContentType="application/json"
            )
        except Exception as exc:
            raise self._explain(exc, f"upload of {key}") from exc
        self._check_etag(key, resp.get("ETag", ""), [md5])

    # ------------------------------------------------------------------ download

    def download(self, key: str, path: str, chunk: int = 4 * 1024 * 1024) -> dict[str, Any]:
        """Stream one object to ``path``; returns its size and SHA-256."""
        sha = hashlib.sha256()
        size = 0
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            with open(path, "wb") as out:
                for block in iter(lambda: body.read(chunk), b""):
                    sha.update(block)
                    size += len(block)
                    out.write(block)
        except Exception as exc:
            if isinstance(exc, botocore.exceptions.ClientError) and exc.response.get("Error", {}).get("Code") in (
                "NoSuchKey",
                "404",
            ):
                raise BackupError(f"backup object {key} does not exist in bucket {self.bucket!r}") from exc
            raise self._explain(exc, f"download of {key}") from exc
        return {"size": size, "sha256": sha.hexdigest()}

    def get_json(self, key: str) -> Any:
        try:
            data = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:
            if isinstance(exc, botocore.exceptions.ClientError) and exc.response.get("Error", {}).get("Code") in (
                "NoSuchKey",
                "404",
            ):
                raise BackupError(f"no manifest at {key} in bucket {self.bucket!r}: no such backup") from exc
            raise self._explain(exc, f"download of {key}") from exc
        try:
            return json.loads(data)
        except ValueError as exc:
            raise BackupError(f"{key} is not valid JSON") from exc

    # ------------------------------------------------------------------ listing and deletion

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
        except Exception as exc:
            raise self._explain(exc, f"listing of {prefix or '/'}") from exc
        return keys

    def list_backups(self, prefix: str) -> list[BackupRef]:
        base = prefix.strip("/")
        return group_backups(self.list_keys(base + "/" if base else ""), base)

    def delete_keys(self, keys: Iterable[str]) -> None:
        pending = list(keys)
        for start in range(0, len(pending), 1000):
            batch = pending[start : start + 1000]
            try:
                resp = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
            except Exception as exc:
                raise self._explain(exc, "deletion") from exc
            errors = resp.get("Errors") or []
            if errors:
                raise BackupError(f"S3 deletion failed for {errors[0].get('Key')}: {errors[0].get('Code')}")
