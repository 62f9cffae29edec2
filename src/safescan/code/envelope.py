"""The payment smart code envelope: sign (Ed25519), seal (HPKE), and Base45 text for QR codes.

Byte layout (version 2; see docs/protocol.md for the full description and byte budget)::

    binary   = header(3) || enc(32) || ciphertext(len(plaintext) + 16)
    header   = version(1)=0x02 || kind(1) || scheme key id(1)
    plaintext= signature(64) || signed
    signed   = CBOR [ signer: uint (institution key id) / bstr (merchant certificate),
                      body fields... ]               (version 1: CBOR [ signer, [ body ] ])
               (a merchant-signed body names its merchant by the certificate's serial: the
               identity shown is the one the institution certified, never the merchant's text)
    signature= Ed25519 over "SS1-SIG" || header || signed
    HPKE     = RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM,
               info = "safescan code v1" || header   (binds the clear header)
    text     = "SS1:" || Base45(binary)               (QR alphanumeric mode)

Codes are written in version 2 and read in versions 1 and 2 (a printed static code lives for
years). The version byte is bound by the HPKE ``info`` and the signature, so a code cannot be
re-labelled as the other version.

Opening checks, in this order: size, prefix, Base45, header (version, kind, key id), key not
retired, HPKE open (any alteration fails here), CBOR strictness, issuer (institution key, or a
merchant certificate chained to the institution, unrevoked, for this merchant), signature,
body strictness and validation, then validity period. The clear parts (text, header) are in
:mod:`safescan.code.header` (no cryptography: reading a header stays cheap), re-exported here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke

from safescan.code import cbor
from safescan.code.certs import Certificate, Role, TrustStore, verify_certificate
from safescan.code.errors import (
    CertificateError,
    CodeExpired,
    CodeNotYetValid,
    DecryptionFailed,
    MalformedCode,
    OversizeCode,
    SignatureInvalid,
    UnsupportedVersion,
)
from safescan.code.header import ENC_BYTES as ENC_BYTES
from safescan.code.header import HEADER_BYTES as HEADER_BYTES
from safescan.code.header import MAX_BINARY_BYTES as MAX_BINARY_BYTES
from safescan.code.header import MAX_TEXT_CHARS as MAX_TEXT_CHARS
from safescan.code.header import PREFIX as PREFIX
from safescan.code.header import TAG_BYTES as TAG_BYTES
from safescan.code.header import VERSION as VERSION
from safescan.code.header import VERSIONS as VERSIONS
from safescan.code.header import Header as Header
from safescan.code.header import decode_text as decode_text
from safescan.code.header import encode_text as encode_text
from safescan.code.header import looks_like_safescan as looks_like_safescan
from safescan.code.header import read_header as read_header
from safescan.code.header import to_binary as _to_binary
from safescan.code.keys import SchemeKeyring, SchemePublicKey, Signer, VerifyKey
from safescan.code.payment import CodeKind, DynamicCode, PaymentCode, StaticCode

SIGNATURE_BYTES = 64
SIG_CONTEXT = b"SS1-SIG"
HPKE_INFO = b"safescan code v1"
DEFAULT_CLOCK_SKEW = 60  # seconds of tolerance for "not yet valid"

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


@dataclass(frozen=True, slots=True)
class Issuer:
    """Who signs a code: the institution (by key id) or a certified merchant."""

    key: Signer
    institution_kid: int | None = None
    certificate: Certificate | None = None

    @classmethod
    def institution(cls, key: Signer, kid: int) -> Issuer:
        """The institution signs with its key ``kid``."""
        return cls(key=key, institution_kid=kid)

    @classmethod
    def merchant(cls, key: Signer, certificate: Certificate) -> Issuer:
        """A merchant signs, carrying its institution-issued certificate."""
        return cls(key=key, certificate=certificate)

    def signer_field(self) -> int | bytes:
        """The ``signer`` value written into the code."""
        if self.certificate is not None:
            return self.certificate.to_bytes()
        if self.institution_kid is None:
            raise MalformedCode("an issuer needs an institution key id or a certificate")
        return self.institution_kid


@dataclass(frozen=True, slots=True)
class OpenedCode:
    """A code that was opened and fully verified."""

    header: Header
    code: PaymentCode
    digest: bytes  # SHA-256 of the binary code: what an authorization refers to
    issuer: str  # "institution" or "merchant"
    issuer_kid: int | None
    certificate: Certificate | None

    @property
    def warnings(self) -> tuple[str, ...]:
        """Look-alike warnings an app shows before asking to pay (computed when asked: a
        verifier that shows nothing, such as the institution, does not pay for them)."""
        return tuple(self.code.warnings())


def code_digest(binary: bytes) -> bytes:
    """SHA-256 of the binary code."""
    return hashlib.sha256(binary).digest()


def signed_content(signer: int | bytes, body: list[object], version: int = VERSION) -> bytes:
    """The CBOR ``signed`` part: ``[signer, *body]`` (version 2) or ``[signer, body]`` (1)."""
    return cbor.dumps([signer, body] if version == 1 else [signer, *body])


def split_signed(signed: bytes, version: int) -> tuple[object, list[object]]:
    """``(signer, body fields)`` of a ``signed`` part, strictly (inverse of
    :func:`signed_content`); raises :class:`MalformedCode`."""
    outer = cbor.strict_loads(signed)
    if version == 1:
        if not isinstance(outer, list) or len(outer) != 2:
            raise MalformedCode("the signed contents must be a 2-element array")
        signer, body = outer
        if not isinstance(body, list) or not body:
            raise MalformedCode("the code's body must be a non-empty array")
        return signer, body
    if not isinstance(outer, list) or len(outer) < 2:
        raise MalformedCode("the signed contents must be an array: the signer, then the body")
    return outer[0], outer[1:]


def sign_code(
    code: PaymentCode, issuer: Issuer, kid: int, *, version: int = VERSION
) -> tuple[bytes, bytes]:
    """Validate and sign ``code`` for scheme key ``kid``; returns ``(header, plaintext)``.

    Deterministic (Ed25519 is): fixed inputs give fixed bytes, which the test vectors use.
    ``version`` 1 writes the older layout (for the tests that check it is still read).
    """
    if version not in VERSIONS:
        raise UnsupportedVersion(f"payment code version {version} is not supported")
    code = code.validated()
    body = code.to_cbor(version) if isinstance(code, DynamicCode) else code.to_cbor()
    cert = issuer.certificate
    if cert is not None:
        if cert.merchant is None:
            raise CertificateError(
                "a version-1 merchant certificate certifies no identity: get a version-2 one"
            )
        if code.merchant != cert.merchant:
            raise SignatureInvalid(
                "a merchant may only sign codes for the identity its certificate names"
                " (id, name, city, country and category code)"
            )
        body[0] = cert.serial  # the identity is the certificate's: referenced, not repeated
    header = Header(version, code.kind, kid).to_bytes()
    signed = signed_content(issuer.signer_field(), body, version)
    signature = issuer.key.sign(SIG_CONTEXT + header + signed)
    return header, signature + signed


def seal(
    code: PaymentCode, issuer: Issuer, scheme_key: SchemePublicKey, *, version: int = VERSION
) -> bytes:
    """Validate, sign and seal ``code``; returns the binary code (see :func:`encode_text`)."""
    header, plaintext = sign_code(code, issuer, scheme_key.kid, version=version)
    sealed = _SUITE.encrypt(plaintext, scheme_key.x25519(), info=HPKE_INFO + header)
    binary = header + sealed
    if len(binary) > MAX_BINARY_BYTES:
        raise OversizeCode(
            f"the code would be {len(binary)} bytes; the limit is {MAX_BINARY_BYTES}"
        )
    return binary


def open_code(
    data: str | bytes,
    keyring: SchemeKeyring,
    trust: TrustStore,
    *,
    now: int,
    clock_skew: int = DEFAULT_CLOCK_SKEW,
) -> OpenedCode:
    """Open and fully verify a code (text or binary). Raises a typed :class:`CodeError`."""
    binary = _to_binary(data)
    header = Header.parse(binary)
    header_bytes = binary[:HEADER_BYTES]
    key = keyring.for_opening(header.kid, now)
    try:
        plaintext = _SUITE.decrypt(
            binary[HEADER_BYTES:], key.private_key(), info=HPKE_INFO + header_bytes
        )
    except (InvalidTag, ValueError):
        raise DecryptionFailed(
            "the sealed payment code could not be opened: it was altered, or sealed to another key"
        ) from None
    signature, signed = plaintext[:SIGNATURE_BYTES], plaintext[SIGNATURE_BYTES:]
    signer, body_value = split_signed(signed, header.version)
    verify_key, certificate, issuer_kid = _issuer_key(signer, trust, now)
    verify_key.verify(signature, SIG_CONTEXT + header_bytes + signed, what="code signature")
    if certificate is not None:
        body_value = certified_body(body_value, certificate)
    code: PaymentCode
    if header.kind is CodeKind.DYNAMIC:
        code = DynamicCode.from_cbor(body_value, header.version)
    else:
        code = StaticCode.from_cbor(body_value)
    if now + clock_skew < code.issued_at:
        raise CodeNotYetValid("the payment code is not valid yet (check the device clock)")
    if now >= code.expires_at:
        raise CodeExpired("the payment code has expired; ask the merchant for a new one")
    return OpenedCode(
        header=header,
        code=code,
        digest=code_digest(binary),
        issuer="merchant" if certificate is not None else "institution",
        issuer_kid=issuer_kid,
        certificate=certificate,
    )


def certified_body(body: list[object], certificate: Certificate) -> list[object]:
    """A merchant-signed body with its merchant reference replaced by the certified identity.

    The body's first field must be the signer certificate's serial (an inline identity, which
    the merchant could write freely, is refused): every identity field the customer is shown
    is then the one the institution certified.
    """
    ref = body[0]
    if isinstance(ref, bool) or not isinstance(ref, int) or ref < 0:
        raise MalformedCode(
            "a merchant-signed code names its merchant by its certificate serial, not inline"
        )
    if ref != certificate.serial or certificate.merchant is None:
        raise SignatureInvalid(
            f"the code refers to certificate {ref} but carries certificate {certificate.serial}"
        )
    return [certificate.merchant.to_cbor(), *body[1:]]


def _issuer_key(
    signer: object, trust: TrustStore, now: int
) -> tuple[VerifyKey, Certificate | None, int | None]:
    if isinstance(signer, int) and not isinstance(signer, bool):
        return trust.institution_key(signer), None, signer
    if isinstance(signer, bytes):
        cert = Certificate.from_bytes(signer)
        verify_certificate(cert, trust, role=Role.MERCHANT, now=now)
        return cert.public_key, cert, cert.issuer_kid
    raise MalformedCode("the code's signer field has the wrong type")
