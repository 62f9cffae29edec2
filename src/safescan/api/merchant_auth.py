"""Merchant request signatures: how a merchant terminal authenticates to the institution.

The merchant holds an Ed25519 API key; the institution stores only its public key. Every
merchant request carries four headers (and, for a retry-safe request, a fifth)::

    Safescan-Merchant:  the merchant id
    Safescan-Timestamp: unix seconds (within TOLERANCE of the server clock, before or after)
    Safescan-Nonce:     16-64 characters [A-Za-z0-9_-], never reused (kept server-side)
    Safescan-Signature: base64 Ed25519 signature over the string to sign
    Idempotency-Key:    optional, 1-255 printable ASCII characters; signed

    string to sign = "SS2-REQ\\n" + merchant + "\\n" + METHOD + "\\n" + path?query + "\\n"
                     + timestamp + "\\n" + nonce + "\\n" + idempotency key (or "") + "\\n"
                     + hex(SHA-256(body))

The Idempotency-Key is signed: a captured request cannot be sent again under another key (which
would make the institution treat it as a new request), nor can a key be added or removed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import time
from collections.abc import Mapping

from safescan.api.errors import InvalidRequest, ReplayedRequest, Unauthenticated
from safescan.code.errors import SignatureInvalid
from safescan.code.keys import SigningKey, VerifyKey

TOLERANCE = 300  # seconds
SCHEME = "SS2-REQ"
H_MERCHANT = "Safescan-Merchant"
H_TIMESTAMP = "Safescan-Timestamp"
H_NONCE = "Safescan-Nonce"
H_SIGNATURE = "Safescan-Signature"
H_IDEMPOTENCY = "Idempotency-Key"
_NONCE_RE = re.compile(r"[A-Za-z0-9_\-]{16,64}")
_MERCHANT_RE = re.compile(r"[A-Za-z0-9._:\-]{1,40}")
_IDEMPOTENCY_RE = re.compile(r"[\x21-\x7e]{1,255}")


def string_to_sign(
    merchant_id: str,
    method: str,
    path: str,
    timestamp: str,
    nonce: str,
    body: bytes,
    idempotency_key: str | None = None,
) -> bytes:
    """The exact bytes a merchant signs (no Idempotency-Key signs as an empty line)."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join(
        [SCHEME, merchant_id, method.upper(), path, timestamp, nonce, idempotency_key or "", digest]
    ).encode()


def sign_request(
    key: SigningKey,
    merchant_id: str,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, str]:
    """The headers that authenticate one request (``path`` includes any query string); with
    ``idempotency_key`` the ``Idempotency-Key`` header is among them, signed."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_urlsafe(18)
    sig = key.sign(string_to_sign(merchant_id, method, path, ts, nonce, body, idempotency_key))
    headers = {
        H_MERCHANT: merchant_id,
        H_TIMESTAMP: ts,
        H_NONCE: nonce,
        H_SIGNATURE: base64.b64encode(sig).decode("ascii"),
    }
    if idempotency_key is not None:
        headers[H_IDEMPOTENCY] = idempotency_key
    return headers


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    """The request's Idempotency-Key (None when absent); a malformed one is refused."""
    key = headers.get(H_IDEMPOTENCY)
    if key is not None and not _IDEMPOTENCY_RE.fullmatch(key):
        raise InvalidRequest(
            "Idempotency-Key must be 1-255 printable ASCII characters", param=H_IDEMPOTENCY
        )
    return key


def parse_headers(headers: Mapping[str, str], *, now: int) -> tuple[str, str, str, bytes]:
    """Check presence, format and freshness; returns (merchant, timestamp, nonce, signature).

    The timestamp must be within :data:`TOLERANCE` of ``now`` on either side: a request from
    too far in the past (a replay) and one from too far in the future (signed by a clock that
    is ahead, or made to be replayed later) are both refused."""
    merchant = headers.get(H_MERCHANT)
    ts = headers.get(H_TIMESTAMP)
    nonce = headers.get(H_NONCE)
    sig = headers.get(H_SIGNATURE)
    if not merchant or not ts or not nonce or not sig:
        raise Unauthenticated(
            f"merchant requests must be signed ({H_MERCHANT}, {H_TIMESTAMP}, {H_NONCE},"
            f" {H_SIGNATURE})"
        )
    if not _MERCHANT_RE.fullmatch(merchant):
        raise Unauthenticated("malformed merchant id header", param=H_MERCHANT)
    if not ts.isascii() or not ts.isdigit() or len(ts) > 12:
        raise Unauthenticated("the timestamp must be unix seconds", param=H_TIMESTAMP)
    if int(ts) < now - TOLERANCE:
        raise ReplayedRequest(
            f"the request timestamp is more than {TOLERANCE} s behind the server clock",
            param=H_TIMESTAMP,
        )
    if int(ts) > now + TOLERANCE:
        raise ReplayedRequest(
            f"the request timestamp is more than {TOLERANCE} s ahead of the server clock",
            param=H_TIMESTAMP,
        )
    if not _NONCE_RE.fullmatch(nonce):
        raise Unauthenticated("the nonce must be 16-64 characters of [A-Za-z0-9_-]", param=H_NONCE)
    try:
        raw = base64.b64decode(sig.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeError):
        raise Unauthenticated("the signature is not base64", param=H_SIGNATURE) from None
    return merchant, ts, nonce, raw


def verify_signature(
    public_key: VerifyKey,
    merchant_id: str,
    method: str,
    path: str,
    timestamp: str,
    nonce: str,
    signature: bytes,
    body: bytes,
    idempotency_key: str | None = None,
) -> None:
    """Verify the request signature (over the Idempotency-Key too); raises
    :class:`Unauthenticated`."""
    try:
        public_key.verify(
            signature,
            string_to_sign(merchant_id, method, path, timestamp, nonce, body, idempotency_key),
            what="request signature",
        )
    except SignatureInvalid:
        raise Unauthenticated("the request signature does not verify") from None
