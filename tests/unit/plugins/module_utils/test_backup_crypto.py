# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of the authenticated backup encryption: round trips, tampering of every kind,
key ids and rotation, and old openssl AES-256-CBC backups still restoring."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ansible_collections.thinkus.ops.plugins.module_utils import _backup_common as bc
from ansible_collections.thinkus.ops.plugins.module_utils import _backup_crypto as crypto
from ansible_collections.thinkus.ops.plugins.module_utils._backup_ops import decrypt_objects

KEY = "correct horse battery staple"
CHUNK = 4096
SEALED = CHUNK + crypto.TAG_SIZE


@pytest.fixture(scope="module")
def encryptor() -> crypto.Encryptor:
    return crypto.Encryptor(KEY, chunk_size=CHUNK)


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17])
def test_round_trip_at_every_chunk_boundary(encryptor: crypto.Encryptor, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    src = write(tmp_path / "plain", data)
    chunks = encryptor.encrypt_file(src, str(tmp_path / "enc"))
    assert chunks == max(1, -(-size // CHUNK))  # an empty file is one empty, final chunk
    sealed = (tmp_path / "enc").read_bytes()
    assert len(sealed) == crypto.HEADER_SIZE + size + chunks * crypto.TAG_SIZE
    assert (tmp_path / "enc").stat().st_mode & 0o777 == 0o600
    out = tmp_path / "out"
    assert crypto.Decryptor(KEY).decrypt_file(str(tmp_path / "enc"), str(out)) == size
    assert out.read_bytes() == data


def test_every_object_has_its_own_salt_and_nonce_prefix(encryptor: crypto.Encryptor, tmp_path: Path) -> None:
    src = write(tmp_path / "plain", b"same content" * 100)
    encryptor.encrypt_file(src, str(tmp_path / "a"))
    encryptor.encrypt_file(src, str(tmp_path / "b"))
    a, b = crypto.read_header(str(tmp_path / "a")), crypto.read_header(str(tmp_path / "b"))
    assert a["kdf_salt"] == b["kdf_salt"]  # one scrypt per backup
    assert a["object_salt"] != b["object_salt"] and a["prefix"] != b["prefix"]
    assert (tmp_path / "a").read_bytes()[crypto.HEADER_SIZE :] != (tmp_path / "b").read_bytes()[crypto.HEADER_SIZE :]


def tampered(encryptor: crypto.Encryptor, tmp_path: Path, change) -> tuple[str, Path]:
    src = write(tmp_path / "plain", os.urandom(3 * CHUNK + 100))
    enc = tmp_path / "enc"
    encryptor.encrypt_file(src, str(enc))
    enc.write_bytes(change(enc.read_bytes()))
    return str(enc), tmp_path / "out"


def flip(data: bytes, at: int) -> bytes:
    buf = bytearray(data)
    buf[at] ^= 0x01
    return bytes(buf)


H = crypto.HEADER_SIZE
TAMPERING = {
    "one bit in a chunk": lambda d: flip(d, H + SEALED + 10),
    "one bit in a tag": lambda d: flip(d, H + SEALED - 1),
    "one bit in the object salt": lambda d: flip(d, 8 + 5 + 16 + 3),
    "last chunk dropped (truncated at a chunk boundary)": lambda d: d[: H + 3 * SEALED],
    "truncated inside a chunk": lambda d: d[:-5],
    "chunks swapped": lambda d: d[:H] + d[H + SEALED : H + 2 * SEALED] + d[H : H + SEALED] + d[H + 2 * SEALED :],
    "a chunk duplicated": lambda d: d[: H + SEALED] + d[H : H + SEALED] + d[H + SEALED :],
    "data appended after the final chunk": lambda d: d + os.urandom(SEALED),
    "everything after the header dropped": lambda d: d[:H],
}


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_tampering_fails_authentication_and_leaves_no_plaintext(
    encryptor: crypto.Encryptor, tmp_path: Path, how: str
) -> None:
    enc, out = tampered(encryptor, tmp_path, TAMPERING[how])
    with pytest.raises(bc.BackupError, match=r"dump\.enc failed authentication.*tampered with.*refusing to restore"):
        crypto.Decryptor(KEY).decrypt_file(enc, str(out), "dump.enc")
    assert not out.exists()


def test_a_header_that_is_not_ours_or_a_bad_chunk_size_is_refused(encryptor: crypto.Encryptor, tmp_path: Path) -> None:
    enc, out = tampered(encryptor, tmp_path, lambda d: b"X" + d[1:])
    with pytest.raises(bc.BackupError, match=r"not a thinkus\.ops encrypted object"):
        crypto.Decryptor(KEY).decrypt_file(enc, str(out))
    enc, out = tampered(encryptor, tmp_path, lambda d: d[: H - 4] + b"\xff\xff\xff\xff" + d[H:])
    with pytest.raises(bc.BackupError, match="invalid chunk size"):
        crypto.Decryptor(KEY).decrypt_file(enc, str(out))
    assert not out.exists()


def test_wrong_key_fails_authentication(encryptor: crypto.Encryptor, tmp_path: Path) -> None:
    enc, out = tampered(encryptor, tmp_path, lambda d: d)
    with pytest.raises(bc.BackupError, match="failed authentication at chunk 0"):
        crypto.Decryptor(KEY + "x").decrypt_file(enc, str(out))


def test_key_ids_pick_the_key_after_a_rotation(encryptor: crypto.Encryptor) -> None:
    info = encryptor.info()
    assert info["cipher"] == "aes-256-gcm" and info["format"] == crypto.FORMAT
    assert info["key_id"] == crypto.key_id(KEY) != crypto.key_id("new key")
    assert len(info["key_id"]) == 16 and KEY not in repr(info)
    assert crypto.pick_key(info, ["new key", KEY], "b1") == KEY
    with pytest.raises(bc.BackupError, match=f"key id {info['key_id']}; the keys given have ids"):
        crypto.pick_key(info, ["new key"], "b1")
    with pytest.raises(bc.BackupError, match="b1 is encrypted: give its key"):
        crypto.pick_key(info, [None], "b1")


def manifest_for(tmp_path: Path, data: bytes, info: dict, make) -> tuple[dict, dict]:
    plain = write(tmp_path / "postgres.dump", data)
    make(plain, str(tmp_path / "postgres.dump.enc"))
    os.unlink(plain)
    obj = {"name": "postgres.dump.enc", "plaintext_sha256": hashlib.sha256(data).hexdigest()}
    return {"id": "b1", "objects": [obj], "encryption": info}, {
        "postgres.dump.enc": str(tmp_path / "postgres.dump.enc")
    }


def test_decrypt_objects_gcm_with_a_previous_key(encryptor: crypto.Encryptor, tmp_path: Path) -> None:
    data = os.urandom(10 * CHUNK)
    manifest, paths = manifest_for(tmp_path, data, encryptor.info(), encryptor.encrypt_file)
    plain = decrypt_objects(manifest, paths, "the new key", [KEY])
    assert Path(plain["postgres.dump"]).read_bytes() == data


def test_old_openssl_cbc_backups_still_restore(tmp_path: Path) -> None:
    data = os.urandom(50000)
    manifest, paths = manifest_for(
        tmp_path, data, bc.encryption_info(), lambda s, d: bc.openssl_crypt(s, d, KEY, decrypt=False)
    )
    assert manifest["encryption"]["cipher"] == "aes-256-cbc"
    plain = decrypt_objects(manifest, paths, KEY)
    assert Path(plain["postgres.dump"]).read_bytes() == data


def test_a_consistent_forgery_of_a_cbc_backup_is_caught_by_the_plaintext_checksum(tmp_path: Path) -> None:
    data = os.urandom(50000)
    manifest, paths = manifest_for(
        tmp_path, data, bc.encryption_info(), lambda s, d: bc.openssl_crypt(s, d, KEY, decrypt=False)
    )
    enc = Path(paths["postgres.dump.enc"])
    enc.write_bytes(flip(enc.read_bytes(), 20000))  # CBC decrypts this without complaint
    with pytest.raises(bc.BackupError, match="does not match the manifest: it was tampered with"):
        decrypt_objects(manifest, paths, KEY)
    assert not (tmp_path / "postgres.dump").exists()
