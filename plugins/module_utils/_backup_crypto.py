# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Authenticated, streaming encryption of backup objects (AES-256-GCM through ``cryptography``).

Not a public API. An encrypted object is a header followed by chunks::

    header  magic "TKOPSENC" | version (1) | kdf id (1) | scrypt log2(n), r, p (3 x 1)
            | kdf salt (16) | object salt (16) | nonce prefix (4) | chunk size (4, big endian)
    chunk   AES-256-GCM(plaintext of up to ``chunk size`` bytes) | tag (16)

- The backup key is a passphrase (any string; generate it with ``openssl rand -base64 32``).
  scrypt turns it and the random kdf salt into a master key; HKDF-SHA256 turns that and the
  object's random salt into the object's own AES-256 key, so no two objects share a key.
- Chunk ``i`` is sealed with the nonce ``nonce prefix | i`` (8 bytes, big endian) and the
  associated data ``header | i | final flag``: a changed header, a changed, dropped,
  duplicated or reordered chunk, a truncation (the last chunk left must carry the final
  flag) and data appended after the final chunk all fail authentication.
- Decryption writes plaintext to a file that is deleted unless EVERY chunk authenticated,
  so nothing damaged or forged is ever restored.
- One chunk (plus one of look-ahead) is held in memory at a time, so a multi-GB dump is
  encrypted and decrypted in constant memory.

The key id recorded in the manifest (``key_id``) is derived from the passphrase with scrypt
and a fixed salt: it tells which key a backup needs (key rotation) without making the key
any cheaper to guess than the objects themselves.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.thinkus.ops.plugins.module_utils._backup_common import BackupError

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = exc

FORMAT = "thinkus.ops/backup-encryption/v1"
CIPHER = "aes-256-gcm"
MAGIC = b"TKOPSENC"
VERSION = 1
KDF_SCRYPT = 1
SCRYPT_LOG2_N = 15  # n = 32768, r = 8: 32 MiB of memory and about 0.1 s per derivation
SCRYPT_R = 8
SCRYPT_P = 1
CHUNK_SIZE = 1024 * 1024
TAG_SIZE = 16
_HEADER = struct.Struct(">8sBBBBB16s16s4sI")
HEADER_SIZE = _HEADER.size
_KEY_ID_SALT = b"thinkus.ops/backup-key-id/v1"
_HKDF_INFO = b"thinkus.ops/backup-object-key/v1"


def _require() -> None:
    if not HAS_CRYPTOGRAPHY:
        raise BackupError(
            f"the cryptography Python library is required for encrypted backups: {CRYPTOGRAPHY_IMPORT_ERROR}"
        )


def _scrypt(passphrase: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    if not passphrase:
        raise BackupError("the encryption key is empty")
    if not 10 <= log2_n <= 22 or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise BackupError(f"unsupported scrypt parameters in the object header (log2 n={log2_n}, r={r}, p={p})")
    return Scrypt(salt=salt, length=32, n=1 << log2_n, r=r, p=p).derive(passphrase.encode())


def key_id(passphrase: str) -> str:
    """A short, stable id of a key: which key a backup was made with, without revealing it."""
    _require()
    return _scrypt(passphrase, _KEY_ID_SALT, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)[:8].hex()


def _object_key(master: bytes, object_salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=object_salt, info=_HKDF_INFO).derive(master)


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack(">QB", index, 1 if final else 0)


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">Q", index)


class Encryptor:
    """Encrypts files for one backup with one passphrase (scrypt runs once per backup)."""

    def __init__(self, passphrase: str, chunk_size: int = CHUNK_SIZE) -> None:
        _require()
        if not 1024 <= chunk_size <= 64 * 1024 * 1024:
            raise BackupError("chunk_size must be between 1 KiB and 64 MiB")
        self.chunk_size = chunk_size
        self.kdf_salt = os.urandom(16)
        self.master = _scrypt(passphrase, self.kdf_salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
        self.key_id = key_id(passphrase)

    def info(self) -> dict[str, Any]:
        """What the manifest records (no secret): enough to pick the key and the decryption path."""
        return {
            "format": FORMAT,
            "cipher": CIPHER,
            "kdf": "scrypt",
            "kdf_params": {"n": 1 << SCRYPT_LOG2_N, "r": SCRYPT_R, "p": SCRYPT_P},
            "key_derivation": "hkdf-sha256 per object",
            "chunk_size": self.chunk_size,
            "key_id": self.key_id,
        }

    def encrypt_file(self, src: str, dst: str) -> int:
        """Encrypt ``src`` into a new ``dst`` (0600); returns the number of chunks written."""
        object_salt, prefix = os.urandom(16), os.urandom(4)
        header = _HEADER.pack(
            MAGIC, VERSION, KDF_SCRYPT, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P, self.kdf_salt, object_salt, prefix,
            self.chunk_size,
        )  # fmt: skip
        aead = AESGCM(_object_key(self.master, object_salt))
        index = 0
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(src, "rb") as inp, os.fdopen(fd, "wb") as out:
            out.write(header)
            block = inp.read(self.chunk_size)
            while True:
                following = inp.read(self.chunk_size) if len(block) == self.chunk_size else b""
                final = not following
                out.write(aead.encrypt(_nonce(prefix, index), block, _aad(header, index, final)))
                index += 1
                if final:
                    return index
                block = following


def read_header(path: str) -> dict[str, Any]:
    with open(path, "rb") as fh:
        raw = fh.read(HEADER_SIZE)
    return _parse_header(raw, os.path.basename(path))


def _parse_header(raw: bytes, name: str) -> dict[str, Any]:
    if len(raw) < HEADER_SIZE or not raw.startswith(MAGIC):
        raise BackupError(f"{name} is not a thinkus.ops encrypted object (bad header): it was replaced or damaged")
    _magic, version, kdf, log2_n, r, p, kdf_salt, object_salt, prefix, chunk_size = _HEADER.unpack(raw[:HEADER_SIZE])
    if version != VERSION or kdf != KDF_SCRYPT:
        raise BackupError(f"{name}: unsupported encryption format version {version} / kdf {kdf}")
    if not 1024 <= chunk_size <= 64 * 1024 * 1024:
        raise BackupError(f"{name}: invalid chunk size {chunk_size} in its header: it was tampered with or damaged")
    return {
        "raw": raw[:HEADER_SIZE],
        "log2_n": log2_n,
        "r": r,
        "p": p,
        "kdf_salt": kdf_salt,
        "object_salt": object_salt,
        "prefix": prefix,
        "chunk_size": chunk_size,
    }


class Decryptor:
    """Decrypts objects made by ``Encryptor``; master keys are cached per kdf salt."""

    def __init__(self, passphrase: str) -> None:
        _require()
        self.passphrase = passphrase
        self._masters: dict[tuple[bytes, int, int, int], bytes] = {}

    def decrypt_file(self, src: str, dst: str, name: str | None = None) -> int:
        """Decrypt and authenticate ``src`` into ``dst``; returns the plaintext size.

        Raises BackupError naming the object when anything fails to authenticate; ``dst`` is
        then removed, so nothing unauthenticated is left to restore.
        """
        name = name or os.path.basename(src)
        try:
            return self._decrypt(src, dst, name)
        except BaseException:
            if os.path.exists(dst):
                os.unlink(dst)
            raise

    def _decrypt(self, src: str, dst: str, name: str) -> int:
        with open(src, "rb") as inp:
            head = _parse_header(inp.read(HEADER_SIZE), name)
            cache = (head["kdf_salt"], head["log2_n"], head["r"], head["p"])
            if cache not in self._masters:
                self._masters[cache] = _scrypt(self.passphrase, *cache)
            aead = AESGCM(_object_key(self._masters[cache], head["object_salt"]))
            sealed_size = head["chunk_size"] + TAG_SIZE
            size = index = 0
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                sealed = inp.read(sealed_size)
                while True:
                    following = inp.read(sealed_size) if len(sealed) == sealed_size else b""
                    final = not following
                    try:
                        block = aead.decrypt(_nonce(head["prefix"], index), sealed, _aad(head["raw"], index, final))
                    except (InvalidTag, ValueError) as exc:
                        raise BackupError(
                            f"{name} failed authentication at chunk {index}: the object was tampered with, "
                            "truncated or damaged after it was encrypted (or the key is not the one it was made "
                            "with); refusing to restore it"
                        ) from exc
                    out.write(block)
                    size += len(block)
                    index += 1
                    if final:
                        return size
                    sealed = following


def pick_key(info: Mapping[str, Any], keys: Sequence[str | None], backup_id: str) -> str:
    """The key (of the current and previous ones given) whose id the manifest names."""
    given = [k for k in keys if k]
    if not given:
        raise BackupError(
            f"backup {backup_id} is encrypted: give its key (encryption_key, or encryption_previous_keys "
            "after a rotation)"
        )
    wanted = info.get("key_id")
    if not wanted:
        return given[0]
    ids = []
    for key in given:
        kid = key_id(key)
        if hmac.compare_digest(kid, wanted):
            return key
        ids.append(kid)
    raise BackupError(
        f"backup {backup_id} was encrypted with key id {wanted}; the keys given have ids {', '.join(ids)}: "
        "set encryption_key (or encryption_previous_keys) to the key it was made with"
    )


def is_legacy(info: Mapping[str, Any] | None) -> bool:
    """Backups from before authenticated encryption: ``openssl enc`` AES-256-CBC, restored through openssl."""
    return bool(info) and info.get("cipher") == "aes-256-cbc"
