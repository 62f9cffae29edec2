"""OPEN CODE on the card: a merchant-signed code shows exactly its certified identity (#13.1).

The card opens the code itself (``open_code`` runs on the card), so a modified wallet cannot
skip the check; the card returns the certificate too, for the wallet to re-check.
"""

from __future__ import annotations

import pytest

from safescan.carrier.client import CarrierClient
from safescan.carrier.errors import CodeRefused, ConditionsNotSatisfied
from safescan.carrier.testing import DEFAULT_MERCHANT, LocalInstitution
from safescan.code import Certificate, Merchant, SigningKey
from tests.forgery import dynamic_body, forge, identity_swaps, inline_identity

from .conftest import PIN

VICTIM = Merchant("m-2002", "Boulangerie Moreau", "Paris", "BE", 5814)


def _refused(carrier: CarrierClient, code: bytes) -> str:
    with pytest.raises(CodeRefused) as info:
        carrier.open_code(code)
    carrier.verify_pin(PIN)
    with pytest.raises(ConditionsNotSatisfied):  # nothing is pending: nothing can be signed
        carrier.authorize(merchant_id=DEFAULT_MERCHANT.id, amount=650, currency=978)
    return info.value.error_code


def test_open_code_shows_and_returns_the_certified_identity(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    issuer = institution.merchant_issuer()
    assert issuer.certificate is not None
    contents = carrier.open_code(institution.dynamic_code(issuer=issuer))
    assert contents.issuer == "merchant" and contents.merchant == DEFAULT_MERCHANT
    assert contents.certificate == issuer.certificate.to_bytes()
    assert Certificate.from_bytes(contents.certificate).merchant == contents.merchant
    institution_signed = carrier.open_code(institution.dynamic_code())
    assert institution_signed.certificate is None


@pytest.mark.parametrize("swap", list(identity_swaps(DEFAULT_MERCHANT, VICTIM)))
def test_card_refuses_an_identity_the_certificate_does_not_name(
    carrier: CarrierClient, institution: LocalInstitution, swap: str
) -> None:
    issuer = institution.merchant_issuer()
    assert issuer.certificate is not None
    body = inline_identity(
        dynamic_body(issuer.certificate, now=institution.now),
        identity_swaps(DEFAULT_MERCHANT, VICTIM)[swap],
    )
    code = forge(issuer.certificate.to_bytes(), body, issuer.key, institution.scheme.public)
    assert _refused(carrier, code) == "malformed_code"


def test_card_refuses_a_reference_to_another_certificate(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    mine, victims = institution.merchant_issuer(), institution.merchant_issuer(VICTIM)
    assert mine.certificate is not None and victims.certificate is not None
    body = dynamic_body(mine.certificate, now=institution.now)
    body[0] = victims.certificate.serial
    code = forge(mine.certificate.to_bytes(), body, mine.key, institution.scheme.public)
    assert _refused(carrier, code) == "signature_invalid"


def test_card_refuses_the_certificate_of_a_with_a_code_signed_by_b(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    a = institution.merchant_issuer(VICTIM)
    b_key = SigningKey.generate()
    assert a.certificate is not None
    body = dynamic_body(a.certificate, now=institution.now)
    code = forge(a.certificate.to_bytes(), body, b_key, institution.scheme.public)
    assert _refused(carrier, code) == "signature_invalid"


def test_card_refuses_a_revoked_merchant_certificate(
    carrier: CarrierClient, institution: LocalInstitution
) -> None:
    issuer = institution.merchant_issuer()
    assert issuer.certificate is not None
    code = institution.dynamic_code(issuer=issuer, text=False)
    assert isinstance(code, bytes)
    assert carrier.open_code(code).merchant == DEFAULT_MERCHANT
    carrier.update_revocations(institution.revocation_list({issuer.certificate.serial}, sequence=1))
    assert _refused(carrier, code) == "certificate_revoked"
