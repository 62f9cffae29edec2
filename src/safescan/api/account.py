"""The customer's account statement (balance, payments, refunds), read with the key carrier.

A customer has no password: the key carrier is the credential. The wallet proves that it holds
the carrier right now, and the answer can be read only by that wallet::

    wallet:  w = fresh X25519 key pair (one per request)
    wallet -> institution  POST /v1/account/challenge {carrier_serial, wallet_key = w.pub}
    institution -> wallet  {challenge, expires_at}
             challenge = HMAC-SHA256(k_acct, "SS1-ACCT" || serial(8) || expires_at(8) || w.pub)
             k_acct    = HMAC-SHA256(server secret, "safescan account challenge v1")
    wallet -> carrier      OPEN SECURE CHANNEL with the challenge as the host key (in clear)
    carrier -> wallet      card_eph(32) || kind(1) || sig(64)
             sig = Ed25519 over the channel transcript (see safescan.carrier.channel):
                   "SS1-SC" || AID || kind || SHA-256(certificate) || challenge || card_eph
    wallet -> institution  POST /v1/account {carrier_serial, wallet_key, expires_at, response}
    institution            recomputes the challenge (stateless), checks the expiry, that the
                           carrier is active, and the signature under the carrier's registered
                           key with its certificate; then seals the statement to w.pub:
             sealed = HPKE(X25519, HKDF-SHA256, AES-128-GCM) base mode,
                      info = "safescan account statement v1" || serial(8) || expires_at(8)

So: another carrier cannot sign for this serial; a challenge cannot be forged (HMAC under the
institution's secret) or moved to another serial, wallet key or expiry; a captured response
replayed within its lifetime only returns a statement sealed to the original wallet's key.
The proof is possession of the carrier (as with a contactless card), not the PIN.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from safescan.api.errors import InvalidRequest, Unauthenticated
from safescan.code import strictjson
from safescan.code.errors import SafescanError
from safescan.code.keys import VerifyKey

CHALLENGE_TTL = 120  # seconds a challenge may be answered
CHALLENGE_CONTEXT = b"SS1-ACCT"
STATEMENT_INFO = b"safescan account statement v1"
KEY_LABEL = b"safescan account challenge v1"
# the carrier's channel transcript (safescan.carrier.channel.transcript, kind CERTIFIED = 2);
# tests/api/test_account.py checks that both stay the same
TRANSCRIPT_CONTEXT = b"SS1-SC"
CARRIER_AID = bytes.fromhex("F0") + b"SAFESCAN" + b"\x01"
KIND_CERTIFIED = 2
RESPONSE_BYTES = 32 + 1 + 64
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


class StatementUnreadable(SafescanError):
    """The sealed statement does not open with this wallet's key (altered or not ours)."""

    code = "statement_unreadable"


def challenge_key(server_secret: bytes) -> bytes:
    """The institution's key for account challenges, derived from its server secret."""
    return hmac.new(server_secret, KEY_LABEL, hashlib.sha256).digest()


def make_challenge(key: bytes, serial: int, expires_at: int, wallet_key: bytes) -> bytes:
    """The 32-byte challenge for ``serial``, valid until ``expires_at``, for ``wallet_key``."""
    if len(wallet_key) != 32:
        raise InvalidRequest("wallet_key must be a 32-byte X25519 key", param="wallet_key")
    message = (
        CHALLENGE_CONTEXT
        + serial.to_bytes(8, "big")
        + expires_at.to_bytes(8, "big", signed=True)
        + wallet_key
    )
    return hmac.new(key, message, hashlib.sha256).digest()


def presence_transcript(certificate: bytes, challenge: bytes, card_public: bytes) -> bytes:
    """What a personalised carrier signs when a host opens a channel with ``challenge``."""
    return (
        TRANSCRIPT_CONTEXT
        + CARRIER_AID
        + bytes([KIND_CERTIFIED])
        + hashlib.sha256(certificate).digest()
        + challenge
        + card_public
    )


def verify_presence(
    signing_key: VerifyKey, certificate: bytes, challenge: bytes, response: bytes
) -> None:
    """Check a carrier's handshake answer to ``challenge``; :class:`Unauthenticated` if not."""
    if len(response) != RESPONSE_BYTES:
        raise Unauthenticated(
            f"the carrier's answer must be {RESPONSE_BYTES} bytes", param="response"
        )
    card_public, kind, signature = response[:32], response[32], response[33:]
    if kind != KIND_CERTIFIED:
        raise Unauthenticated("the carrier answered with a key that is not its certified key")
    try:
        signing_key.verify(signature, presence_transcript(certificate, challenge, card_public))
    except SafescanError:
        raise Unauthenticated(
            "the carrier's signature does not verify: not this carrier, or another challenge",
            param="response",
        ) from None


def _info(serial: int, expires_at: int) -> bytes:
    return STATEMENT_INFO + serial.to_bytes(8, "big") + expires_at.to_bytes(8, "big", signed=True)


def seal_statement(doc: dict[str, Any], wallet_key: bytes, serial: int, expires_at: int) -> bytes:
    """Seal the statement (canonical JSON) to the wallet's one-time key."""
    try:
        public = X25519PublicKey.from_public_bytes(wallet_key)
    except ValueError:
        raise InvalidRequest("wallet_key is not an X25519 key", param="wallet_key") from None
    plain = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return _SUITE.encrypt(plain, public, info=_info(serial, expires_at))


def open_statement(
    sealed: bytes, wallet_private: X25519PrivateKey, serial: int, expires_at: int
) -> dict[str, Any]:
    """Open a sealed statement with the wallet's one-time private key."""
    try:
        plain = _SUITE.decrypt(sealed, wallet_private, info=_info(serial, expires_at))
        doc = strictjson.loads(plain)  # a key named twice under the seal: refused
    except (InvalidTag, ValueError):
        raise StatementUnreadable(
            "the institution's statement does not open with this wallet's key"
        ) from None
    if not isinstance(doc, dict):
        raise StatementUnreadable("the institution's statement is not a JSON object")
    return doc
