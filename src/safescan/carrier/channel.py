"""The secure channel between host and card (both ends use this module).

Handshake (OPEN SECURE CHANNEL, in clear)::

    host -> card : host_eph(32)                       (X25519, fresh per session)
    card -> host : card_eph(32) || kind(1) || sig(64)
    transcript   = "SS1-SC" || AID || kind || SHA-256(identity) || host_eph || card_eph
    sig          = Ed25519(transcript) by the card's certified key (kind 2, identity = the
                   carrier certificate) or, while BLANK, its attestation key (kind 1,
                   identity = the attestation public key)
    k_cmd||k_rsp = HKDF-SHA256(X25519(eph, eph'), salt=SHA-256(transcript),
                               info="safescan carrier channel v1", 64 bytes)

Every later APDU body travels as ``seq(8) || AES-256-GCM(k, nonce, body, aad)`` with
``nonce = 0^4 || seq`` and ``aad = "CMD"|"RSP" || CLA INS P1 P2 || seq``: one key and one
counter per direction, the command header bound to both the command and its response. A frame
whose sequence number is not exactly the next one, or whose tag fails, closes the session.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from safescan.carrier import rom
from safescan.carrier.errors import CarrierAuthenticationError, ChannelError
from safescan.code.errors import KeyMaterialError
from safescan.code.pubkeys import check_ed25519_public, check_x25519_public

TRANSCRIPT_CONTEXT = b"SS1-SC"
CHANNEL_INFO = b"safescan carrier channel v1"
PUBLIC_BYTES = 32
SIGNATURE_BYTES = 64
HANDSHAKE_RESPONSE_BYTES = PUBLIC_BYTES + 1 + SIGNATURE_BYTES
SEQ_BYTES = 8
TAG_BYTES = 16
OVERHEAD = SEQ_BYTES + TAG_BYTES
_MAX_SEQ = 2**64 - 1


class KeyKind(IntEnum):
    """Which card key authenticates the channel."""

    ATTESTATION = 1  # BLANK card: the key made at manufacture
    CERTIFIED = 2  # personalised card: the key the institution certified


def transcript(kind: KeyKind, identity: bytes, host_public: bytes, card_public: bytes) -> bytes:
    """The bytes the card signs in the handshake."""
    return (
        TRANSCRIPT_CONTEXT
        + rom.AID
        + bytes([int(kind)])
        + hashlib.sha256(identity).digest()
        + host_public
        + card_public
    )


def _derive(shared: bytes, transcript_bytes: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=64,
        salt=hashlib.sha256(transcript_bytes).digest(),
        info=CHANNEL_INFO,
    ).derive(shared)
    return okm[:32], okm[32:]


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


class Session:
    """One established channel: an AEAD key and a sequence counter per direction."""

    def __init__(self, command_key: bytes, response_key: bytes, *, card: bool) -> None:
        self._cmd = AESGCM(command_key)
        self._rsp = AESGCM(response_key)
        self._card = card
        self._cmd_seq = 0
        self._rsp_seq = 0
        self.closed = False

    def close(self) -> None:
        """Forget the keys; every later use fails."""
        self.closed = True
        self._cmd = self._rsp = AESGCM(bytes(32))  # drop references to the session keys

    def _seal(self, aead: AESGCM, label: bytes, header: bytes, seq: int, body: bytes) -> bytes:
        if self.closed:
            raise ChannelError("the secure channel is closed")
        if seq >= _MAX_SEQ:
            self.close()
            raise ChannelError("the secure channel's sequence numbers are exhausted")
        s = seq.to_bytes(SEQ_BYTES, "big")
        return s + aead.encrypt(bytes(4) + s, body, label + header + s)

    def _open(self, aead: AESGCM, label: bytes, header: bytes, seq: int, frame: bytes) -> bytes:
        if self.closed:
            raise ChannelError("the secure channel is closed")
        if len(frame) < OVERHEAD:
            self.close()
            raise ChannelError("secure-channel frame is truncated")
        got = int.from_bytes(frame[:SEQ_BYTES], "big")
        if got != seq:
            self.close()
            what = "replayed or reordered" if got < seq else "out of order (a frame was dropped)"
            raise ChannelError(f"secure-channel frame {got} is {what}; expected {seq}")
        try:
            return aead.decrypt(
                bytes(4) + frame[:SEQ_BYTES], frame[SEQ_BYTES:], label + header + frame[:SEQ_BYTES]
            )
        except InvalidTag:
            self.close()
            raise ChannelError("secure-channel frame was altered") from None

    # host side
    def seal_command(self, header: bytes, body: bytes) -> bytes:
        """Host: protect a command body."""
        frame = self._seal(self._cmd, b"CMD", header, self._cmd_seq, body)
        self._cmd_seq += 1
        return frame

    def open_response(self, header: bytes, frame: bytes) -> bytes:
        """Host: check and decrypt the response to the command with ``header``."""
        body = self._open(self._rsp, b"RSP", header, self._rsp_seq, frame)
        self._rsp_seq += 1
        return body

    # card side
    def open_command(self, header: bytes, frame: bytes) -> bytes:
        """Card: check and decrypt a command body."""
        body = self._open(self._cmd, b"CMD", header, self._cmd_seq, frame)
        self._cmd_seq += 1
        return body

    def seal_response(self, header: bytes, body: bytes) -> bytes:
        """Card: protect the response to the command with ``header``."""
        frame = self._seal(self._rsp, b"RSP", header, self._rsp_seq, body)
        self._rsp_seq += 1
        return frame


def card_handshake(
    host_public: bytes, signing_key: Ed25519PrivateKey, kind: KeyKind, identity: bytes
) -> tuple[bytes, Session]:
    """Card: answer a host's ephemeral key; returns the response data and the session."""
    if len(host_public) != PUBLIC_BYTES:
        raise ChannelError("the host's ephemeral key must be 32 bytes")
    try:
        check_x25519_public(host_public, what="the host's ephemeral key", canonical=False)
    except KeyMaterialError as exc:
        raise ChannelError(exc.message) from None
    eph = X25519PrivateKey.generate()
    card_public = _raw_public(eph)
    try:
        shared = eph.exchange(X25519PublicKey.from_public_bytes(host_public))
    except ValueError:
        raise ChannelError("the host's ephemeral key is not a usable X25519 key") from None
    t = transcript(kind, identity, host_public, card_public)
    signature = signing_key.sign(t)
    k_cmd, k_rsp = _derive(shared, t)
    return card_public + bytes([int(kind)]) + signature, Session(k_cmd, k_rsp, card=True)


@dataclass
class HostHandshake:
    """Host: one handshake attempt."""

    _eph: X25519PrivateKey

    @classmethod
    def start(cls) -> HostHandshake:
        """A fresh ephemeral key."""
        return cls(X25519PrivateKey.generate())

    @property
    def public(self) -> bytes:
        """The host's ephemeral public key, sent to the card."""
        return _raw_public(self._eph)

    def finish(self, response: bytes, card_key: bytes, kind: KeyKind, identity: bytes) -> Session:
        """Verify the card's answer under ``card_key`` and derive the session keys."""
        if len(response) != HANDSHAKE_RESPONSE_BYTES:
            raise CarrierAuthenticationError("the carrier's handshake answer has the wrong size")
        card_public = response[:PUBLIC_BYTES]
        if response[PUBLIC_BYTES] != kind:
            raise CarrierAuthenticationError(
                "the carrier authenticated with a different key than expected"
            )
        signature = response[PUBLIC_BYTES + 1 :]
        t = transcript(kind, identity, self.public, card_public)
        try:
            check_ed25519_public(card_key, what="the carrier's certified key")
            check_x25519_public(card_public, what="the carrier's ephemeral key")
        except KeyMaterialError as exc:
            raise CarrierAuthenticationError(exc.message) from None
        try:
            Ed25519PublicKey.from_public_bytes(card_key).verify(signature, t)
            shared = self._eph.exchange(X25519PublicKey.from_public_bytes(card_public))
        except InvalidSignature:
            raise CarrierAuthenticationError(
                "the carrier's channel signature does not verify: not the expected carrier"
            ) from None
        except ValueError:
            raise CarrierAuthenticationError("the carrier's handshake keys are invalid") from None
        k_cmd, k_rsp = _derive(shared, t)
        return Session(k_cmd, k_rsp, card=False)
