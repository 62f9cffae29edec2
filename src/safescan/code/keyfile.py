"""Private key files: PKCS#8 sealed under a passphrase with scrypt and AES-256-GCM.

``cryptography``'s ``BestAvailableEncryption`` for PKCS#8 derives its key with PBKDF2 at 2,048
iterations (a fixed figure it does not let the caller raise), which a stolen key file's
passphrase does not survive long. Key files are therefore written as::

    -----BEGIN SAFESCAN ENCRYPTED PRIVATE KEY-----
    base64( header || AES-256-GCM(key, nonce, PKCS#8 DER, aad = header) )
    -----END SAFESCAN ENCRYPTED PRIVATE KEY-----

    header = "SSK1" | log2(N) (1 byte) | r (1) | p (1) | salt (16) | nonce (12)
    key    = scrypt(passphrase, salt, N, r, p), 32 bytes

Both primitives are the library's (``Scrypt``, ``AESGCM``); the header is authenticated, so a
changed cost, salt or nonce fails like a wrong passphrase. Files written before this format
(standard ``ENCRYPTED PRIVATE KEY`` PEM) still load; saving a key again writes the new form,
and :func:`reseal` (``safescan institution rekey``) rewrites them without waiting for that.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from safescan.code.errors import KeyFileError

LABEL = b"SAFESCAN ENCRYPTED PRIVATE KEY"
MAGIC = b"SSK1"
LOG2_N = 15  # scrypt N = 2^15, r = 8, p = 1: 32 MiB and tens of ms per guess
R, P = 8, 1
MIN_LOG2_N, MAX_LOG2_N = 15, 18  # a file asking less is refused; more: a memory bomb (256 MiB)
_HEADER = struct.Struct(">4sBBB16s12s")
_BEGIN = b"-----BEGIN " + LABEL + b"-----"
_END = b"-----END " + LABEL + b"-----"
_LEGACY = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
_MAX_FILE = 4096  # an Ed25519/X25519 key file is ~300 bytes


def _derive(passphrase: bytes, salt: bytes, log2_n: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=1 << log2_n, r=R, p=P).derive(passphrase)


def seal(key: Ed25519PrivateKey | X25519PrivateKey, passphrase: bytes) -> bytes:
    """The key as a sealed PEM file under ``passphrase`` (which must not be empty)."""
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return seal_der(der, passphrase)


def seal_der(der: bytes, passphrase: bytes) -> bytes:
    """Any private key's PKCS#8 DER as a sealed PEM file under ``passphrase`` (the TLS CA's
    ECDSA key uses this directly)."""
    if not passphrase:
        raise KeyFileError("a passphrase is required: private keys are never stored in clear")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = _HEADER.pack(MAGIC, LOG2_N, R, P, salt, nonce)
    body = header + AESGCM(_derive(passphrase, salt, LOG2_N)).encrypt(nonce, der, header)
    b64 = base64.b64encode(body)
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return b"\n".join([_BEGIN, *lines, _END]) + b"\n"


def is_sealed(data: bytes) -> bool:
    """Whether ``data`` is a file written by :func:`seal` / :func:`seal_der`."""
    return data.lstrip().startswith(_BEGIN)


def _body(data: bytes) -> bytes:
    text = data.strip()
    if not (text.startswith(_BEGIN) and text.endswith(_END)):
        raise KeyFileError("not a safescan key file (no SAFESCAN ENCRYPTED PRIVATE KEY block)")
    inner = text[len(_BEGIN) : -len(_END)]
    try:
        return base64.b64decode(b"".join(inner.split()), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError("corrupt key file: the key block is not base64") from None


def unseal(data: bytes, passphrase: bytes) -> Ed25519PrivateKey | X25519PrivateKey:
    """The private key in a file written by :func:`seal` (or a legacy encrypted PKCS#8 PEM);
    :class:`KeyFileError` for a wrong passphrase, a damaged file or a cost out of bounds."""
    if len(data) > _MAX_FILE:
        raise KeyFileError(f"not a key file: {len(data)} bytes (a key file is under {_MAX_FILE})")
    if is_legacy(data):
        return _legacy(data, passphrase)
    der = unseal_der(data, passphrase)
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError("corrupt key file: the sealed key is not PKCS#8") from exc
    if not isinstance(key, (Ed25519PrivateKey, X25519PrivateKey)):
        raise KeyFileError("the key file holds neither an Ed25519 nor an X25519 key")
    return key


def unseal_der(data: bytes, passphrase: bytes) -> bytes:
    """The PKCS#8 DER sealed by :func:`seal_der` (its key type is the caller's to check);
    :class:`KeyFileError` for a wrong passphrase, a damaged file or a cost out of bounds."""
    if len(data) > _MAX_FILE:
        raise KeyFileError(f"not a key file: {len(data)} bytes (a key file is under {_MAX_FILE})")
    body = _body(data)
    if len(body) < _HEADER.size + 16:
        raise KeyFileError("corrupt key file: too short")
    magic, log2_n, r, p, salt, nonce = _HEADER.unpack_from(body)
    if magic != MAGIC:
        raise KeyFileError("corrupt key file: unknown format version")
    if not MIN_LOG2_N <= log2_n <= MAX_LOG2_N or (r, p) != (R, P):
        raise KeyFileError(
            f"key file cost out of bounds (scrypt N=2^{log2_n}, r={r}, p={p}; this release"
            f" reads N=2^{MIN_LOG2_N}..2^{MAX_LOG2_N}, r={R}, p={P})"
        )
    header, sealed = body[: _HEADER.size], body[_HEADER.size :]
    if not passphrase:
        raise KeyFileError("cannot read the private key: a passphrase is required")
    try:
        return AESGCM(_derive(passphrase, salt, log2_n)).decrypt(nonce, sealed, header)
    except InvalidTag:
        raise KeyFileError(
            "cannot read the private key: wrong passphrase or corrupt key file"
        ) from None


def _legacy(data: bytes, passphrase: bytes) -> Ed25519PrivateKey | X25519PrivateKey:
    """A key file from before the sealed format: standard encrypted PKCS#8 PEM."""
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(
            "cannot read the private key: wrong passphrase or corrupt key file"
        ) from exc
    if not isinstance(key, (Ed25519PrivateKey, X25519PrivateKey)):
        raise KeyFileError("the key file holds neither an Ed25519 nor an X25519 key")
    return key


def reseal(data: bytes, passphrase: bytes) -> bytes | None:
    """``data`` sealed again in this format if it is a legacy file (None when it already is
    current); either way it must open under ``passphrase`` (:class:`KeyFileError` otherwise), so
    a wrong passphrase is refused even when there is nothing to rewrite."""
    key = unseal(data, passphrase)
    if not is_legacy(data):
        return None
    return seal(key, passphrase)


def is_legacy(data: bytes) -> bool:
    """Whether ``data`` is a key file in the old PBKDF2 (2,048 iterations) PKCS#8 form."""
    return data.lstrip().startswith(_LEGACY)


__all__ = [
    "LABEL",
    "LOG2_N",
    "is_legacy",
    "is_sealed",
    "reseal",
    "seal",
    "seal_der",
    "unseal",
    "unseal_der",
]
