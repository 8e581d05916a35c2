# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The checks of thinkus.ops.tls_verify (private to thinkus.ops).

A certificate bundle's chain to a CA, the certificate a host serves for its name (SNI), the
HSTS header on HTTPS and the redirect from plain HTTP. Plain sockets, ``ssl`` and
``http.client``; ``cryptography`` parses and checks the signatures.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import Encoding

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR: str | None = None
except ImportError as error:  # reported by the module with missing_required_lib
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = str(error)

PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
MAX_CHAIN = 10
REDIRECT_STATUSES = (301, 302, 307, 308)
MAX_AGE = re.compile(r"(?:^|;)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:;|$)", re.IGNORECASE)


class ChainError(Exception):
    """The bundle does not chain to a trusted CA; the message says where the chain breaks."""


def load_certificates(pem: str | bytes) -> list[Any]:
    """Every certificate in a PEM text, in order; anything between them is ignored."""
    data = pem.encode() if isinstance(pem, str) else pem
    return [x509.load_pem_x509_certificate(block.group(0)) for block in PEM_CERTIFICATE.finditer(data)]


def load_trust_store(path: str) -> list[Any]:
    """The CA certificates of a PEM bundle file, or of every PEM file in a directory (such as
    the system's certificate directory, whose hash links name the same files again)."""
    if not os.path.isdir(path):
        with open(path, "rb") as bundle:
            return load_certificates(bundle.read())
    seen: set[bytes] = set()
    roots = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if not os.path.isfile(full):
            continue
        try:
            with open(full, "rb") as handle:
                found = load_certificates(handle.read())
        except (OSError, ValueError):  # not a certificate file: the directory may hold others
            continue
        for certificate in found:
            der = certificate.public_bytes(Encoding.DER)
            if der not in seen:
                seen.add(der)
                roots.append(certificate)
    return roots


def describe(certificate: Any) -> str:
    """A certificate's subject, as RFC 4514 text."""
    return certificate.subject.rfc4514_string() or "(empty subject)"


def issued_by(certificate: Any, issuer: Any) -> bool:
    """Whether ``issuer`` signed ``certificate``: the names match and the signature verifies."""
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def chain_to(bundle: str, roots: list[Any]) -> list[Any]:
    """The path from the bundle's first certificate (the leaf), through its other certificates
    (intermediates), to one of ``roots``; every link's signature is checked.

    Raises ChainError naming the certificate whose issuer is neither in the bundle nor trusted.
    """
    certificates = load_certificates(bundle)
    if not certificates:
        raise ChainError("holds no PEM certificate")
    intermediates = certificates[1:]
    path = [certificates[0]]
    while len(path) <= MAX_CHAIN:
        current = path[-1]
        root = next((r for r in roots if issued_by(current, r)), None)
        if root is not None:
            if root.public_bytes(Encoding.DER) != current.public_bytes(Encoding.DER):
                path.append(root)
            return path
        following = next((c for c in intermediates if c not in path and issued_by(current, c)), None)
        if following is None:
            raise ChainError(
                f"{describe(current)} is issued by {current.issuer.rfc4514_string()}, which is neither an "
                "intermediate in the bundle (signature checked) nor one of the trusted CAs"
            )
        path.append(following)
    raise ChainError(f"the chain is longer than {MAX_CHAIN} certificates")


def tls_context(ca_pem: str = "", trust_store: str = "") -> ssl.SSLContext:
    """A client context that trusts only ``ca_pem``, else the trust store (file or directory),
    else the system's roots; host names are checked."""
    if ca_pem:
        return ssl.create_default_context(cadata=ca_pem)
    if trust_store and os.path.isdir(trust_store):
        return ssl.create_default_context(capath=trust_store)
    if trust_store:
        return ssl.create_default_context(cafile=trust_store)
    return ssl.create_default_context()


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class Served:
    """What one host served over TLS: the certificate (DER), and why it failed verification."""

    host: str
    der: bytes | None = None
    error: str = ""
    hsts: str | None = None
    status: int | None = None

    def certificate(self) -> Any:
        return x509.load_der_x509_certificate(self.der) if self.der else None


def _connect(address: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((address, port), timeout)


def fetch_served(
    host: str, address: str, port: int, context: ssl.SSLContext, timeout: float, read_hsts: bool
) -> Served:
    """Connect to ``address``:``port`` with SNI ``host``, verify the certificate against
    ``context`` (chain and host name) and, with ``read_hsts``, send ``GET /`` for ``host`` on the
    same connection and keep its Strict-Transport-Security header.

    A certificate that fails verification is fetched again without verification, so that the
    caller can say what was served instead.
    """
    served = Served(host)
    try:
        with context.wrap_socket(_connect(address, port, timeout), server_hostname=host) as tls:
            served.der = tls.getpeercert(binary_form=True)
            if read_hsts:
                served.status, served.hsts = _get_root(tls, host, timeout)
        return served
    except ssl.SSLCertVerificationError as error:
        served.error = f"certificate verify failed: {error.verify_message}"
    except (OSError, http.client.HTTPException) as error:
        served.error = f"{type(error).__name__}: {error}"
        return served
    try:
        with _unverified_context().wrap_socket(_connect(address, port, timeout), server_hostname=host) as tls:
            served.der = tls.getpeercert(binary_form=True)
    except OSError:
        pass
    return served


def _get_root(sock: Any, host: str, timeout: float) -> tuple[int, str | None]:
    """``GET /`` with Host ``host`` over an open connection: the status and the HSTS header."""
    connection = http.client.HTTPConnection(host, timeout=timeout)
    connection.sock = sock
    try:
        connection.request("GET", "/", headers={"Host": host, "Connection": "close"})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Strict-Transport-Security")
    finally:
        connection.sock = None  # the TLS socket is closed by its owner


def hsts_max_age(header: str | None) -> int | None:
    """The max-age of a Strict-Transport-Security header, or None when there is none."""
    if not header:
        return None
    match = MAX_AGE.search(header)
    return int(match.group(1)) if match else None


@dataclass
class Redirect:
    """The answer to plain ``GET /`` for a host."""

    host: str
    status: int | None = None
    location: str = ""
    error: str = ""
    problems: list[str] = field(default_factory=list)


def fetch_redirect(host: str, address: str, port: int, timeout: float) -> Redirect:
    """``GET /`` over plain HTTP to ``address``:``port`` with Host ``host``, not following redirects."""
    answer = Redirect(host)
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", "/", headers={"Host": host, "Connection": "close"})
        response = connection.getresponse()
        response.read()
        answer.status = response.status
        answer.location = response.getheader("Location") or ""
    except (OSError, http.client.HTTPException) as error:
        answer.error = f"{type(error).__name__}: {error}"
    finally:
        connection.close()
    return answer


def redirects_to_https(answer: Redirect) -> bool:
    """Whether the answer redirects to ``https://<host>[:port]/``."""
    pattern = rf"https://{re.escape(answer.host)}(:[0-9]+)?/"
    return answer.status in REDIRECT_STATUSES and re.match(pattern, answer.location, re.IGNORECASE) is not None
