"""Issue #13.1: every identity field of a merchant-signed code is the one the institution
certified (certificate v2); the code's body only references the certificate by serial.

Each attack signs with a real, certified merchant key, so every cryptographic check passes
and only the binding to the certificate can stop it.
"""

from __future__ import annotations

import unicodedata
from dataclasses import replace

import pytest

from safescan.code import (
    Certificate,
    Issuer,
    Merchant,
    Role,
    SigningKey,
    cbor,
    envelope,
    issue_certificate,
    open_code,
    seal,
    verify_certificate,
)
from safescan.code.certs import verify_certified_merchant
from safescan.code.errors import (
    CertificateError,
    CertificateRevoked,
    MalformedCode,
    SafescanError,
    SignatureInvalid,
)
from tests.code.conftest import MERCHANT, NOW, Scheme, dynamic_code, static_code
from tests.code.test_envelope import forge

VICTIM = Merchant("m_V1ct1m", "Boulangerie Lumière", "Lyon", "FR", 5462)

#: The identity a merchant might want to show instead of its own certified one.
SWAPS = {
    "name": replace(MERCHANT, name="Boulangerie Lumière"),
    "city": replace(MERCHANT, city="Lyon"),
    "country": replace(MERCHANT, country="BE"),
    "mcc": replace(MERCHANT, mcc=6011),
    "id": replace(MERCHANT, id="m_V1ct1m"),
    "whole identity": VICTIM,
    "victim name, decomposed (NFD)": replace(
        MERCHANT, name=unicodedata.normalize("NFD", VICTIM.name)
    ),
    "victim name, fullwidth (NFKC folds it)": replace(MERCHANT, name="Ｂoulangerie Lumière"),
    "victim name, Cyrillic look-alike": replace(MERCHANT, name="Воulangerie Lumière"),
    "victim name, trailing zero-width": replace(MERCHANT, name="Boulangerie Lumière\u200b"),
}


def _cert(scheme: Scheme, **changes: object) -> Certificate:
    fields: dict[str, object] = dict(
        serial=1001,
        role=Role.MERCHANT,
        subject=MERCHANT.id,
        public_key=scheme.merchant_key.public_key,
        not_before=NOW - 10,
        not_after=NOW + 1000,
        merchant=MERCHANT,
    )
    fields.update(changes)
    return issue_certificate(scheme.institution_key, 1, **fields)  # type: ignore[arg-type]


def _signed_anyway(scheme: Scheme, unsigned: Certificate) -> bytes:
    """A certificate the institution key really signed, bypassing issue_certificate's checks."""
    return replace(unsigned, signature=scheme.institution_key.sign(unsigned.tbs())).to_bytes()


def _v1_merchant_cert(scheme: Scheme) -> bytes:
    c = _cert(scheme)
    return _signed_anyway(scheme, replace(c, merchant=None))


def _forged(scheme: Scheme, signer: bytes, body: list[object], *, kind: int = 1) -> bytes:
    """``[signer, body]`` signed with the certified merchant key and sealed: passes every
    cryptographic check."""
    return forge(scheme, envelope.signed_content(signer, body), kind=kind, key=scheme.merchant_key)


def _body(scheme: Scheme) -> list[object]:
    _, plaintext = envelope.sign_code(dynamic_code(), scheme.merchant_issuer, 1)
    body = envelope.split_signed(plaintext[64:], envelope.VERSION)[1]
    assert isinstance(body, list)
    return body


def _open(scheme: Scheme, binary: bytes) -> object:
    return open_code(binary, scheme.keyring, scheme.trust, now=NOW)


# --- the honest path ------------------------------------------------------------------------


def test_merchant_signed_code_references_its_certificate_and_shows_its_identity(
    scheme: Scheme,
) -> None:
    for code in (dynamic_code(), static_code()):
        _, plaintext = envelope.sign_code(code, scheme.merchant_issuer, 1)
        signer, body = envelope.split_signed(plaintext[64:], envelope.VERSION)
        cert = Certificate.from_bytes(signer)
        assert cert.version == 2 and cert.merchant == MERCHANT
        assert body[0] == 1001  # the certificate's serial: no name, city... in the body
        for text in (MERCHANT.name, MERCHANT.city):
            assert text.encode() not in cbor.dumps(body)
        opened = open_code(
            seal(code, scheme.merchant_issuer, scheme.scheme_key.public),
            scheme.keyring,
            scheme.trust,
            now=NOW + 1,
        )
        assert opened.code.merchant == MERCHANT
        assert opened.code == code.validated()


def test_merchant_signed_code_is_smaller_than_repeating_the_identity(scheme: Scheme) -> None:
    inline = len(cbor.dumps(MERCHANT.to_cbor()))
    _, plaintext = envelope.sign_code(dynamic_code(), scheme.merchant_issuer, 1)
    _, body = envelope.split_signed(plaintext[64:], envelope.VERSION)
    assert len(cbor.dumps(body[0])) == 3 < inline  # uint 1001


def test_same_name_in_another_normal_form_is_the_same_identity(scheme: Scheme) -> None:
    same = replace(MERCHANT, name=unicodedata.normalize("NFD", MERCHANT.name))
    binary = seal(dynamic_code(merchant=same), scheme.merchant_issuer, scheme.scheme_key.public)
    assert open_code(binary, scheme.keyring, scheme.trust, now=NOW).code.merchant == MERCHANT


# --- the merchant's own terminal refuses to sign another identity ----------------------------


@pytest.mark.parametrize("swap", list(SWAPS), ids=list(SWAPS))
def test_signing_another_identity_is_refused(scheme: Scheme, swap: str) -> None:
    with pytest.raises((SignatureInvalid, SafescanError)) as info:
        seal(dynamic_code(merchant=SWAPS[swap]), scheme.merchant_issuer, scheme.scheme_key.public)
    assert info.value.code in ("signature_invalid", "unsafe_text")


# --- a modified terminal signs whatever it likes: the opener refuses it ----------------------


@pytest.mark.parametrize("swap", list(SWAPS), ids=list(SWAPS))
def test_inline_identity_in_a_merchant_signed_code_is_refused(scheme: Scheme, swap: str) -> None:
    body = _body(scheme)
    body[0] = SWAPS[swap].to_cbor()  # what the v1 format allowed: the merchant's own text
    binary = _forged(scheme, scheme.merchant_issuer.signer_field(), body)  # type: ignore[arg-type]
    with pytest.raises(MalformedCode):
        _open(scheme, binary)


def test_inline_own_identity_is_refused_too(scheme: Scheme) -> None:
    body = _body(scheme)
    body[0] = MERCHANT.to_cbor()
    binary = _forged(scheme, scheme.merchant_issuer.signer_field(), body)  # type: ignore[arg-type]
    with pytest.raises(MalformedCode, match="certificate serial"):
        _open(scheme, binary)


@pytest.mark.parametrize("ref", [1000, 1002, 0, 2**63])
def test_reference_to_another_certificate_is_refused(scheme: Scheme, ref: int) -> None:
    body = _body(scheme)
    body[0] = ref
    binary = _forged(scheme, scheme.merchant_issuer.signer_field(), body)  # type: ignore[arg-type]
    with pytest.raises(SignatureInvalid, match="refers to certificate"):
        _open(scheme, binary)


@pytest.mark.parametrize("ref", [True, -1001, "1001", b"\x03\xe9", [1001], {1: 1001}])
def test_reference_of_the_wrong_type_is_refused(scheme: Scheme, ref: object) -> None:
    body = _body(scheme)
    body[0] = ref
    binary = _forged(scheme, scheme.merchant_issuer.signer_field(), body)  # type: ignore[arg-type]
    with pytest.raises(MalformedCode):
        _open(scheme, binary)


def test_institution_signed_code_cannot_reference_a_certificate(scheme: Scheme) -> None:
    body = _body(scheme)  # body[0] is a serial
    binary = forge(scheme, envelope.signed_content(1, body))  # signed by the institution key id 1
    with pytest.raises(MalformedCode):
        _open(scheme, binary)


def test_static_code_binding(scheme: Scheme) -> None:
    _, plaintext = envelope.sign_code(static_code(), scheme.merchant_issuer, 1)
    body = envelope.split_signed(plaintext[64:], envelope.VERSION)[1]
    body[0] = VICTIM.to_cbor()
    signer = scheme.merchant_issuer.signer_field()
    with pytest.raises(MalformedCode):
        _open(scheme, _forged(scheme, signer, body, kind=2))  # type: ignore[arg-type]
    body[0] = 7
    with pytest.raises(SignatureInvalid):
        _open(scheme, _forged(scheme, signer, body, kind=2))  # type: ignore[arg-type]


def test_certificate_of_merchant_a_with_a_code_signed_by_merchant_b(scheme: Scheme) -> None:
    a_cert = scheme.merchant_issuer.signer_field()  # public: it is inside every code of A
    b_key = SigningKey.from_seed(b"\x42" * 32)
    body = _body(scheme)
    binary = forge(scheme, envelope.signed_content(a_cert, body), key=b_key)
    with pytest.raises(SignatureInvalid):
        _open(scheme, binary)
    # B's own certificate with A's serial referenced: the serial does not match B's
    b_cert = _cert(scheme, serial=1002, subject=VICTIM.id, merchant=VICTIM)
    b_cert = replace(b_cert, public_key=b_key.public_key)
    b_bytes = _signed_anyway(scheme, b_cert)
    binary = forge(scheme, envelope.signed_content(b_bytes, body), key=b_key)
    with pytest.raises(SignatureInvalid, match="refers to certificate 1001"):
        _open(scheme, binary)


def test_version_1_merchant_certificate_no_longer_signs_codes(scheme: Scheme) -> None:
    v1 = _v1_merchant_cert(scheme)
    cert = Certificate.from_bytes(v1)  # still readable
    assert cert.version == 1 and cert.merchant is None
    with pytest.raises(CertificateError, match="version 1"):
        verify_certificate(cert, scheme.trust, role=Role.MERCHANT, now=NOW)
    body = _body(scheme)
    for first in (MERCHANT.to_cbor(), VICTIM.to_cbor(), 1001):
        body[0] = first
        with pytest.raises(CertificateError):
            _open(scheme, _forged(scheme, v1, body))
    with pytest.raises(CertificateError):
        envelope.sign_code(dynamic_code(), Issuer.merchant(scheme.merchant_key, cert), 1)


def test_carrier_certificate_cannot_sign_codes(scheme: Scheme) -> None:
    carrier = issue_certificate(
        scheme.institution_key,
        1,
        serial=1001,
        role=Role.CARRIER,
        subject="carrier:1001",
        public_key=scheme.merchant_key.public_key,
        not_before=NOW - 10,
        not_after=NOW + 1000,
    )
    body = _body(scheme)
    with pytest.raises(CertificateError):
        _open(scheme, _forged(scheme, carrier.to_bytes(), body))


# --- the certificate itself -----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        replace(MERCHANT, name="Caf\u0065\u0301 Lumière"),  # not NFC
        replace(MERCHANT, name="Café\u202eerèimuL"),  # bidi override
        replace(MERCHANT, name="Café\x00Lumière"),  # control character
        replace(MERCHANT, city=" Paris"),  # leading space
        replace(MERCHANT, name="x" * 65),  # too long
        replace(MERCHANT, country="fr"),
        replace(MERCHANT, mcc=10000),
    ],
)
def test_certificate_with_an_unsafe_identity_is_refused(scheme: Scheme, bad: Merchant) -> None:
    unsigned = replace(_cert(scheme), merchant=bad)
    with pytest.raises(CertificateError, match="identity"):
        Certificate.from_bytes(_signed_anyway(scheme, unsigned))


def test_issuing_normalises_the_identity_and_refuses_unsafe_text(scheme: Scheme) -> None:
    nfd = replace(MERCHANT, name=unicodedata.normalize("NFD", MERCHANT.name))
    assert _cert(scheme, merchant=nfd).merchant == MERCHANT
    with pytest.raises(CertificateError):
        _cert(scheme, merchant=replace(MERCHANT, name="Café\u202eerèimuL"))
    with pytest.raises(CertificateError, match="subject"):
        _cert(scheme, subject="m_other")
    with pytest.raises(CertificateError):
        _cert(scheme, merchant=None)
    with pytest.raises(CertificateError):
        _cert(scheme, role=Role.CARRIER, subject="carrier:1")


def test_version_2_certificate_shape_is_strict(scheme: Scheme) -> None:
    fields = cbor.strict_loads(_cert(scheme).to_bytes())
    variants = [
        [*fields[:-2], fields[-1]],  # one identity field missing
        [*fields[:-1], 0, fields[-1]],  # one too many
        [3, *fields[1:]],  # unknown version
        [1, *fields[1:]],  # v1 header on a v2 body
        [fields[0], fields[1], 2, *fields[3:]],  # carrier role with an identity
        [*fields[:3], "m 7Qx2", *fields[4:]],  # subject is not a merchant id
    ]
    for value in variants:
        with pytest.raises(CertificateError):
            Certificate.from_bytes(cbor.dumps(value))


def test_every_flipped_byte_of_a_v2_certificate_is_refused(scheme: Scheme) -> None:
    data = _cert(scheme).to_bytes()
    for position in range(len(data)):
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        with pytest.raises(SafescanError):
            cert = Certificate.from_bytes(bytes(flipped))
            verify_certificate(cert, scheme.trust, role=Role.MERCHANT, now=NOW)
            if cert.merchant == MERCHANT and cert.serial == 1001:
                raise AssertionError("unreachable: the signature covers every byte")


# --- what the wallet runs on the carrier's answer ------------------------------------------


@pytest.mark.parametrize("swap", list(SWAPS), ids=list(SWAPS))
def test_verifier_of_a_shown_identity_refuses_every_swap(scheme: Scheme, swap: str) -> None:
    data = _cert(scheme).to_bytes()
    assert verify_certified_merchant(data, MERCHANT, scheme.trust, now=NOW).serial == 1001
    with pytest.raises(SignatureInvalid):
        verify_certified_merchant(data, SWAPS[swap], scheme.trust, now=NOW)


def test_verifier_of_a_shown_identity_checks_the_certificate(scheme: Scheme) -> None:
    data = _cert(scheme).to_bytes()
    scheme.trust.revoked_serials = frozenset({1001})
    with pytest.raises(CertificateRevoked):
        verify_certified_merchant(data, MERCHANT, scheme.trust, now=NOW)
    scheme.trust.revoked_serials = frozenset()
    with pytest.raises(CertificateError):
        verify_certified_merchant(_v1_merchant_cert(scheme), MERCHANT, scheme.trust, now=NOW)
    rogue = replace(_cert(scheme), signature=SigningKey.generate().sign(b"x"))
    with pytest.raises(CertificateError):
        verify_certified_merchant(rogue.to_bytes(), MERCHANT, scheme.trust, now=NOW)
