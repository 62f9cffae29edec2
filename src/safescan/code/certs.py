"""Compact institution-signed certificates, revocation lists and the offline trust store.

A certificate binds a subject (a merchant id or a key-carrier serial) and a role to an Ed25519
public key for a validity period. It is deterministic CBOR (see docs/protocol.md)::

    v1 (carriers):  [1, serial, role, subject, public_key(32), not_before, not_after,
                     issuer_kid, sig(64)]
    v2 (merchants): [2, serial, role=1, subject (merchant id), public_key(32), not_before,
                     not_after, issuer_kid, name, city, country, mcc, sig(64)]

``sig`` is the institution's Ed25519 signature over ``"SS1-CERT" || CBOR(all fields but sig)``.
A version-2 certificate carries the whole merchant identity a customer is shown, so a
merchant-signed code shows exactly what the institution certified (docs/protocol.md section 3).
Version-1 merchant certificates still parse but no longer verify as merchant certificates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from enum import IntEnum

from safescan.code import cbor
from safescan.code.errors import (
    CertificateError,
    CertificateExpired,
    CertificateRevoked,
    KeyMaterialError,
    SafescanError,
    SignatureInvalid,
    UnknownKeyId,
)
from safescan.code.keys import Signer, VerifyKey
from safescan.code.payment import Merchant

CERT_VERSION = 1  # carrier certificates (and old merchant certificates: refused for codes)
MERCHANT_CERT_VERSION = 2  # merchant certificates: carry the certified merchant identity
CERT_CONTEXT = b"SS1-CERT"
CRL_CONTEXT = b"SS1-CRL"
MAX_CERT_BYTES = 768  # a v2 certificate with two 64-character 4-byte-UTF-8 names is ~680
MAX_SUBJECT_CHARS = 64
_U64 = 2**64


class Role(IntEnum):
    """What a certified key may do."""

    MERCHANT = 1  # signs merchant-issued payment codes
    CARRIER = 2  # signs payment authorizations; authenticates the carrier's secure channel
    ATTESTATION = 3  # a carrier chip's attestation key, certified by its manufacturer


def _uint(value: object, name: str, limit: int = _U64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
        raise CertificateError(f"certificate field {name} must be an unsigned integer")
    return value


@dataclass(frozen=True, slots=True)
class Certificate:
    """An institution-signed binding of subject + role to an Ed25519 public key.

    ``merchant`` is the certified merchant identity (id = ``subject``, name, city, country,
    category code): present in version-2 (merchant) certificates, None in version 1.
    """

    serial: int
    role: Role
    subject: str
    public_key: VerifyKey
    not_before: int
    not_after: int
    issuer_kid: int
    signature: bytes = b""
    merchant: Merchant | None = None

    @property
    def version(self) -> int:
        """2 when the certificate carries a merchant identity, else 1."""
        return MERCHANT_CERT_VERSION if self.merchant is not None else CERT_VERSION

    def tbs(self) -> bytes:
        """The bytes the institution signs."""
        return CERT_CONTEXT + cbor.dumps(self._fields())

    def _fields(self) -> list[object]:
        fields: list[object] = [
            self.version,
            self.serial,
            int(self.role),
            self.subject,
            self.public_key.raw,
            self.not_before,
            self.not_after,
            self.issuer_kid,
        ]
        if self.merchant is not None:
            m = self.merchant
            fields += [m.name, m.city, m.country, m.mcc]
        return fields

    def to_bytes(self) -> bytes:
        """The certificate's deterministic CBOR encoding."""
        return cbor.dumps([*self._fields(), self.signature])

    @classmethod
    def from_bytes(cls, data: bytes) -> Certificate:
        """Parse strictly (does not verify the signature: see :func:`verify_certificate`)."""
        if not isinstance(data, bytes) or len(data) > MAX_CERT_BYTES:
            raise CertificateError("certificate is too large")
        value = cbor.strict_loads(data, error=CertificateError)
        if not isinstance(value, list) or not value:
            raise CertificateError("a certificate is a CBOR array")
        version = value[0]
        if version == CERT_VERSION and len(value) == 9:
            version, serial, role, subject, pk, nb, na, ikid, sig = value
            identity: list[object] | None = None
        elif version == MERCHANT_CERT_VERSION and len(value) == 13:
            version, serial, role, subject, pk, nb, na, ikid, *identity, sig = value
        elif version in (CERT_VERSION, MERCHANT_CERT_VERSION):
            raise CertificateError(f"a version-{version} certificate has the wrong length")
        else:
            raise CertificateError(f"unsupported certificate version {version!r}")
        try:
            role_ = Role(_uint(role, "role"))
        except ValueError:
            raise CertificateError(f"unknown certificate role {role!r}") from None
        if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_CHARS:
            raise CertificateError("certificate subject must be 1-64 characters")
        if not (subject.isascii() and subject.isprintable()):
            raise CertificateError("certificate subject must be printable ASCII")
        if not isinstance(pk, bytes) or len(pk) != 32:
            raise CertificateError("certificate public key must be 32 bytes")
        if not isinstance(sig, bytes) or len(sig) != 64:
            raise CertificateError("certificate signature must be 64 bytes")
        nb_, na_ = _uint(nb, "not_before"), _uint(na, "not_after")
        if na_ <= nb_:
            raise CertificateError("certificate validity period is empty")
        try:
            public_key = VerifyKey(pk)
        except KeyMaterialError as exc:
            raise CertificateError(f"certificate public key: {exc.message}") from None
        return cls(
            serial=_uint(serial, "serial"),
            role=role_,
            subject=subject,
            public_key=public_key,
            not_before=nb_,
            not_after=na_,
            issuer_kid=_uint(ikid, "issuer_kid", 0x10000),
            signature=sig,
            merchant=None if identity is None else _identity(role_, subject, identity),
        )


def _identity(role: Role, subject: str, fields: list[object]) -> Merchant:
    """The merchant identity of a version-2 certificate, checked by the code's own rules."""
    if role is not Role.MERCHANT:
        raise CertificateError("only merchant certificates carry a merchant identity")
    try:
        return Merchant.from_cbor([subject, *fields])
    except SafescanError as exc:
        raise CertificateError(f"certified merchant identity: {exc.message}") from None


def issue_certificate(
    issuer: Signer,
    issuer_kid: int,
    *,
    serial: int,
    role: Role,
    subject: str,
    public_key: VerifyKey,
    not_before: int,
    not_after: int,
    merchant: Merchant | None = None,
) -> Certificate:
    """Issue a certificate signed by the institution key ``issuer`` (id ``issuer_kid``).

    A merchant certificate must name the ``merchant`` identity it certifies (version 2; its
    id is the subject); a carrier certificate names none (version 1).
    """
    if (role is Role.MERCHANT) != (merchant is not None):
        raise CertificateError("a merchant certificate (and only one) certifies an identity")
    if merchant is not None:
        try:
            merchant = merchant.validated()
        except SafescanError as exc:
            raise CertificateError(f"merchant identity: {exc.message}") from None
        if merchant.id != subject:
            raise CertificateError("a merchant certificate's subject is the merchant id")
    unsigned = Certificate(
        serial=serial,
        role=role,
        subject=subject,
        public_key=public_key,
        not_before=not_before,
        not_after=not_after,
        issuer_kid=issuer_kid,
        merchant=merchant,
    )
    cert = replace(unsigned, signature=issuer.sign(unsigned.tbs()))
    # Round-trip through the strict parser so we never issue something we would refuse.
    return Certificate.from_bytes(cert.to_bytes())


#: The most entries (revoked serials + revoked subjects) a revocation list may hold.
MAX_CRL_ENTRIES = 100_000
#: The longest a version-3 revocation list may say it stays current (next_update - issued_at).
MAX_CRL_VALIDITY = 31 * 86400
#: How long past its ``next_update`` a version-3 list is still relied on (a holder offline a
#: little longer than the institution's re-signing period): the one freshness rule the wallet
#: (:mod:`safescan.wallet.crlcache`) and the terminal's sealing cache
#: (:mod:`safescan.merchant.sealing`) both apply (docs/protocol.md).
STALE_GRACE = 12 * 3600


def _check_subjects(values: object) -> frozenset[str]:
    if not isinstance(values, list) or not all(
        isinstance(x, str) and 0 < len(x) <= MAX_SUBJECT_CHARS and x.isascii() and x.isprintable()
        for x in values
    ):
        raise CertificateError("revocation list subjects must be 1-64 printable ASCII characters")
    if values != sorted(set(values)):
        raise CertificateError("revocation list subjects must be sorted and unique")
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class RevocationList:
    """An institution-signed list of revoked certificate serials and revoked *subjects*.

    A revoked subject (a merchant id, a carrier's subject) revokes every certificate issued to
    it, past or future: one entry, however many certificates. Version 2 (with subjects)::

        [2, sequence, issued_at, serials, subjects, issuer_kid, sig]

    Version 1 lists (``[1, sequence, issued_at, serials, issuer_kid, sig]``) still parse.
    ``sequence`` only ever grows: a holder refuses a list older than the one it has.

    Version 3 adds ``next_update`` (signed, after ``issued_at`` and at most
    :data:`MAX_CRL_VALIDITY` later): the time by which the institution will have signed a
    newer one, past which a holder must not rely on it (the wallet's offline rule,
    :mod:`safescan.wallet.crlcache`)::

        [3, sequence, issued_at, next_update, serials, subjects, issuer_kid, sig]

    The institution re-signs the same ``sequence`` with a later ``issued_at`` to keep it fresh;
    a holder orders lists by ``(sequence, issued_at)`` (:attr:`freshness`).
    """

    sequence: int
    issued_at: int
    serials: frozenset[int]
    issuer_kid: int
    signature: bytes = b""
    subjects: frozenset[str] = frozenset()
    next_update: int | None = None

    @property
    def freshness(self) -> tuple[int, int]:
        """The order in which a holder prefers lists: a higher sequence, then (the same list
        re-signed) a later ``issued_at``."""
        return (self.sequence, self.issued_at)

    def is_stale(self, now: int) -> bool:
        """Whether a holder must no longer rely on this list at ``now`` (Unix seconds): a
        version-3 list past its ``next_update`` + :data:`STALE_GRACE`. Version-1/2 lists carry
        no ``next_update`` and are never stale by this rule (their holders order by sequence
        only)."""
        return self.next_update is not None and now > self.next_update + STALE_GRACE

    @property
    def entries(self) -> int:
        """How many entries a holder must keep: serials plus subjects."""
        return len(self.serials) + len(self.subjects)

    def tbs(self) -> bytes:
        """The bytes the institution signs."""
        return CRL_CONTEXT + cbor.dumps(self._fields())

    def _fields(self) -> list[object]:
        if self.next_update is not None:
            return [
                3,
                self.sequence,
                self.issued_at,
                self.next_update,
                sorted(self.serials),
                sorted(self.subjects),
                self.issuer_kid,
            ]
        if not self.subjects:
            return [1, self.sequence, self.issued_at, sorted(self.serials), self.issuer_kid]
        return [
            2,
            self.sequence,
            self.issued_at,
            sorted(self.serials),
            sorted(self.subjects),
            self.issuer_kid,
        ]

    def to_bytes(self) -> bytes:
        """Deterministic CBOR encoding."""
        return cbor.dumps([*self._fields(), self.signature])

    @classmethod
    def issue(
        cls,
        issuer: Signer,
        issuer_kid: int,
        *,
        sequence: int,
        issued_at: int,
        serials: frozenset[int] | set[int],
        subjects: frozenset[str] | set[str] = frozenset(),
        next_update: int | None = None,
    ) -> RevocationList:
        """Sign a new list (version 3 when ``next_update`` is given)."""
        unsigned = cls(
            sequence,
            issued_at,
            frozenset(serials),
            issuer_kid,
            b"",
            frozenset(subjects),
            next_update,
        )
        return replace(unsigned, signature=issuer.sign(unsigned.tbs()))

    @classmethod
    def from_bytes(cls, data: bytes, trust: TrustStore) -> RevocationList:
        """Parse strictly and verify the institution's signature."""
        if not isinstance(data, bytes) or len(data) > 1 << 22:
            raise CertificateError("revocation list is too large")
        value = cbor.strict_loads(data, error=CertificateError, max_depth=3)
        next_update: int | None = None
        if isinstance(value, list) and len(value) == 6 and value[0] == 1:
            _, seq, issued_at, serials, ikid, sig = value
            subjects: frozenset[str] = frozenset()
        elif isinstance(value, list) and len(value) == 8 and value[0] == 3:
            _, seq, issued_at, raw_next, serials, raw_subjects, ikid, sig = value
            subjects = _check_subjects(raw_subjects)
            next_update = _uint(raw_next, "next_update")
            if not 0 < next_update - _uint(issued_at, "issued_at") <= MAX_CRL_VALIDITY:
                raise CertificateError(
                    "a version-3 revocation list's next_update is after its issued_at and at"
                    f" most {MAX_CRL_VALIDITY // 86400} days later"
                )
        elif isinstance(value, list) and len(value) == 7 and value[0] == 2:
            _, seq, issued_at, serials, raw_subjects, ikid, sig = value
            subjects = _check_subjects(raw_subjects)
            if not subjects:
                raise CertificateError("a version-2 revocation list names at least one subject")
        else:
            raise CertificateError("not a version-1, -2 or -3 revocation list")
        if not isinstance(serials, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in serials
        ):
            raise CertificateError("revocation list serials must be unsigned integers")
        if serials != sorted(set(serials)):
            raise CertificateError("revocation list serials must be sorted and unique")
        if len(serials) + len(subjects) > MAX_CRL_ENTRIES:
            raise CertificateError("revocation list has too many entries")
        crl = cls(
            _uint(seq, "sequence"),
            _uint(issued_at, "issued_at"),
            frozenset(_uint(s, "serial") for s in serials),
            _uint(ikid, "issuer_kid", 0x10000),
            sig if isinstance(sig, bytes) else b"",
            subjects,
            next_update,
        )
        trust.institution_key(crl.issuer_kid).verify(
            crl.signature, crl.tbs(), what="revocation list signature"
        )
        return crl


@dataclass
class TrustStore:
    """What a verifier trusts, offline: institution public keys by id, and revoked serials."""

    institution_keys: dict[int, VerifyKey] = field(default_factory=dict)
    revoked_serials: frozenset[int] = frozenset()
    crl_sequence: int = -1
    revoked_subjects: frozenset[str] = frozenset()

    def institution_key(self, kid: int) -> VerifyKey:
        """The institution key with id ``kid``."""
        if isinstance(kid, bool) or not isinstance(kid, int):
            raise UnknownKeyId(f"institution key id {kid!r} is not an integer")
        key = self.institution_keys.get(kid)
        if key is None:
            raise UnknownKeyId(f"institution signing key {kid} is not trusted here")
        return key

    def apply_revocations(self, crl: RevocationList) -> None:
        """Adopt a newer, already verified revocation list (older ones are refused)."""
        if crl.sequence <= self.crl_sequence:
            raise CertificateError(
                f"revocation list {crl.sequence} is not newer than {self.crl_sequence}"
            )
        self.revoked_serials = crl.serials
        self.revoked_subjects = crl.subjects
        self.crl_sequence = crl.sequence


# Signatures already verified: SHA-256 of (issuer public key, signature, signed bytes). Ed25519
# verification is deterministic, so a hit means these exact bytes verified under this exact
# key; anything else (another key, a changed byte, another signature) misses and is verified.
# Only the signature is remembered: role, validity period and revocation are checked every time.
_VERIFIED: dict[bytes, None] = {}
_VERIFIED_MAX = 4096  # entries (~130 KB); emptied when full


def _verify_signature(key: VerifyKey, cert: Certificate) -> None:
    tbs = cert.tbs()
    digest = hashlib.sha256(key.raw + cert.signature + tbs).digest()
    if digest in _VERIFIED:
        return
    key.verify(cert.signature, tbs, what="certificate signature")
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[digest] = None


def verify_certificate(cert: Certificate, trust: TrustStore, *, role: Role, now: int) -> None:
    """Check a certificate offline: issuer, signature, role, validity period, revocation.

    A signature that verified once under the same issuer key is not verified again
    (remembered by a digest of key, signature and signed bytes); every other check runs on
    every call."""
    key = trust.institution_key(cert.issuer_kid)
    try:
        _verify_signature(key, cert)
    except SignatureInvalid as exc:
        raise CertificateError(f"certificate {cert.serial}: {exc.message}") from None
    if cert.role != role:
        raise CertificateError(
            f"certificate {cert.serial} is for a {cert.role.name.lower()},"
            f" not a {role.name.lower()}"
        )
    if role is Role.MERCHANT and cert.merchant is None:
        raise CertificateError(
            f"certificate {cert.serial} is version 1: it certifies no merchant name, city,"
            " country or category; merchant-signed codes need a version-2 certificate"
        )
    if not cert.not_before <= now < cert.not_after:
        raise CertificateExpired(f"certificate {cert.serial} is not valid at this time")
    if cert.serial in trust.revoked_serials:
        raise CertificateRevoked(f"certificate {cert.serial} ({cert.subject}) has been revoked")
    if cert.subject in trust.revoked_subjects:
        raise CertificateRevoked(
            f"certificate {cert.serial}: every certificate of {cert.subject} has been revoked"
        )


def verify_certified_merchant(
    data: bytes, merchant: Merchant, trust: TrustStore, *, now: int
) -> Certificate:
    """For a verifier that did not open the code itself (the wallet, given what the key
    carrier decrypted): the merchant certificate verifies offline under ``trust`` and certifies
    exactly the identity ``merchant`` the customer is about to be shown."""
    cert = Certificate.from_bytes(data)
    verify_certificate(cert, trust, role=Role.MERCHANT, now=now)
    if cert.merchant != merchant:
        raise SignatureInvalid(
            f"the merchant shown is not the identity certificate {cert.serial} certifies"
        )
    return cert
