"""Key-carrier attestation: proof that keys were generated inside a genuine carrier.

At manufacture the carrier generates an Ed25519 **attestation key** on the chip; the
manufacturer certifies it (a :class:`~safescan.code.certs.Certificate` with role
``ATTESTATION``, subject ``device:<device id hex>:<model>``, issued under a manufacturer key).
When the carrier later generates its customer keys (GENERATE KEYS), it signs an
**attestation statement** over them with the attestation key::

    statement = CBOR [1, device_id(8), model, challenge(32), signing_pub(32),
                      transport_pub(32), signature(64), attestation_certificate(bstr)]
    signature = Ed25519(attestation key, "SS1-KEYGEN" || device_id || model(1) || challenge
                        || signing_pub || transport_pub)

The institution enrolls a carrier only if the statement verifies: the certificate chains to a
trusted (not revoked) manufacturer key, names this device and model, and signed these keys over
the challenge bound to this enrollment (:func:`enrollment_challenge`), so a statement made for
one enrollment cannot be replayed for another. Like FIDO and PIV attestation, this proves the
keys live in a chip that holds a certified attestation key; it cannot tell a chip whose
attestation key was physically extracted (docs/threat-model.md).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import IntEnum

from safescan.code import cbor
from safescan.code.certs import Certificate, Role, TrustStore, issue_certificate, verify_certificate
from safescan.code.errors import CertificateError, SafescanError
from safescan.code.keys import SigningKey, VerifyKey

KEYGEN_CONTEXT = b"SS1-KEYGEN"
CHALLENGE_CONTEXT = b"safescan enrollment challenge v1"
STATEMENT_VERSION = 1
CHALLENGE_BYTES = 32
DEVICE_ID_BYTES = 8
MAX_STATEMENT_BYTES = 1024


class AttestationError(SafescanError):
    """An attestation statement is malformed or does not prove what it claims."""

    code = "attestation_invalid"


class CarrierModel(IntEnum):
    """What kind of carrier a device is (its hardware; certified by the manufacturer)."""

    PLAIN = 1  # the seed's token: no screen; the phone shows what the carrier decrypted
    DISPLAY = 2  # own screen and confirm button: signs only what it showed and you confirmed


def device_subject(device_id: bytes, model: CarrierModel) -> str:
    """The attestation certificate's subject: ``device:<16 hex digits>:<model>``."""
    return f"device:{device_id.hex()}:{model.name.lower()}"


def enrollment_challenge(token: str) -> bytes:
    """The challenge a carrier signs for the enrollment with ``token`` (single use): binding
    the statement to one enrollment is what makes a replayed statement worthless."""
    return hashlib.sha256(CHALLENGE_CONTEXT + b"\0" + token.encode("utf-8")).digest()


def issue_attestation_certificate(
    manufacturer: SigningKey,
    manufacturer_kid: int,
    *,
    serial: int,
    device_id: bytes,
    model: CarrierModel,
    attestation_key: VerifyKey,
    not_before: int,
    not_after: int,
) -> Certificate:
    """The factory's certificate for one chip's attestation key."""
    return issue_certificate(
        manufacturer,
        manufacturer_kid,
        serial=serial,
        role=Role.ATTESTATION,
        subject=device_subject(device_id, model),
        public_key=attestation_key,
        not_before=not_before,
        not_after=not_after,
    )


def statement_message(
    device_id: bytes,
    model: CarrierModel,
    challenge: bytes,
    signing_public: bytes,
    transport_public: bytes,
) -> bytes:
    """The bytes the attestation key signs at GENERATE KEYS."""
    return (
        KEYGEN_CONTEXT
        + device_id
        + bytes([int(model)])
        + challenge
        + signing_public
        + transport_public
    )


@dataclass(frozen=True)
class AttestationStatement:
    """A carrier's signed statement that it generated these two keys, for this challenge."""

    device_id: bytes
    model: CarrierModel
    challenge: bytes
    signing_public: VerifyKey
    transport_public: bytes
    signature: bytes
    certificate: Certificate

    def message(self) -> bytes:
        """The signed bytes."""
        return statement_message(
            self.device_id,
            self.model,
            self.challenge,
            self.signing_public.raw,
            self.transport_public,
        )

    def to_bytes(self) -> bytes:
        """Deterministic CBOR."""
        return cbor.dumps(
            [
                STATEMENT_VERSION,
                self.device_id,
                int(self.model),
                self.challenge,
                self.signing_public.raw,
                self.transport_public,
                self.signature,
                self.certificate.to_bytes(),
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> AttestationStatement:
        """Parse strictly (verifies nothing: see :meth:`verify`)."""
        if not isinstance(data, bytes) or len(data) > MAX_STATEMENT_BYTES:
            raise AttestationError("the attestation statement is too large")
        value = cbor.strict_loads(data, error=AttestationError, max_depth=2)
        if not isinstance(value, list) or len(value) != 8 or value[0] != STATEMENT_VERSION:
            raise AttestationError("not a version-1 attestation statement")
        _, device_id, model, challenge, signing, transport, signature, cert = value
        if not isinstance(device_id, bytes) or len(device_id) != DEVICE_ID_BYTES:
            raise AttestationError("the device id must be 8 bytes")
        if isinstance(model, bool) or not isinstance(model, int):
            raise AttestationError("the carrier model must be an integer")
        try:
            model_ = CarrierModel(model)
        except ValueError:
            raise AttestationError(f"unknown carrier model {model}") from None
        for name, raw, size in (
            ("challenge", challenge, CHALLENGE_BYTES),
            ("signing key", signing, 32),
            ("transport key", transport, 32),
            ("signature", signature, 64),
        ):
            if not isinstance(raw, bytes) or len(raw) != size:
                raise AttestationError(f"the statement's {name} must be {size} bytes")
        if not isinstance(cert, bytes):
            raise AttestationError("the attestation certificate must be a byte string")
        try:
            certificate = Certificate.from_bytes(cert)
        except CertificateError as exc:
            raise AttestationError(f"attestation certificate: {exc.message}") from None
        return cls(
            device_id, model_, challenge, VerifyKey(signing), transport, signature, certificate
        )

    def verify(self, manufacturers: TrustStore, *, challenge: bytes, now: int) -> None:
        """Check the whole chain; raises a typed :class:`SafescanError` naming what failed.

        ``manufacturers`` holds the trusted manufacturer keys (a revoked manufacturer key is
        simply not in it) and revoked attestation certificate serials.
        """
        cert = self.certificate
        verify_certificate(cert, manufacturers, role=Role.ATTESTATION, now=now)
        if cert.subject != device_subject(self.device_id, self.model):
            raise AttestationError(
                f"the attestation certificate is for another device or model ({cert.subject!r})"
            )
        cert.public_key.verify(self.signature, self.message(), what="attestation signature")
        if not hmac.compare_digest(self.challenge, challenge):
            raise AttestationError(
                "the attestation was made for another enrollment (challenge mismatch)"
            )
