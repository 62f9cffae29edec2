"""Forge merchant-signed codes the way a merchant with a certified key could (issue #13.1).

The merchant holds a genuine code-signing key and an institution-issued certificate, and the
scheme public key is published: so it can sign and seal *any* bytes. Every code made here
passes every cryptographic check (HPKE open, certificate chain, signature); only the binding of
the shown identity to the certificate can refuse it. Shared by the carrier, institution and
end-to-end attack tests.
"""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import replace

from cryptography.hazmat.primitives import hpke

from safescan.code import Certificate, Merchant, SigningKey, envelope
from safescan.code.keys import SchemePublicKey
from safescan.code.payment import DynamicCode, LineItem

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


def identity_swaps(own: Merchant, victim: Merchant) -> dict[str, Merchant]:
    """Identities a merchant certified as ``own`` would like to show instead."""
    return {
        "name swap": replace(own, name=victim.name),
        "city swap": replace(own, city=victim.city),
        "mcc swap": replace(
            own, mcc=victim.mcc if victim.mcc != own.mcc else (own.mcc + 1) % 10000
        ),
        "country swap": replace(
            own, country=victim.country if victim.country != own.country else "BE"
        ),
        "id swap": replace(own, id=victim.id),
        "whole identity": victim,
        "NFD of the victim's name": replace(own, name=unicodedata.normalize("NFD", victim.name)),
        "fullwidth first letter (NFKC)": replace(
            own, name=chr(ord(victim.name[0]) + 0xFEE0) + victim.name[1:]
        ),
        "Cyrillic look-alike": replace(own, name=victim.name.replace("o", "\u043e", 1)),
        "zero-width joiner inside": replace(own, name=victim.name[:2] + "\u200d" + victim.name[2:]),
    }


def dynamic_body(certificate: Certificate, *, total: int = 650, now: int) -> list[object]:
    """A well-formed dynamic body for ``certificate``'s merchant (merchant = serial)."""
    assert certificate.merchant is not None
    code = DynamicCode(
        merchant=certificate.merchant,
        order_id="F-" + secrets.token_hex(6),
        items=(LineItem("Soup", 1, total),),
        total=total,
        currency=978,
        issued_at=now,
        expires_at=now + 300,
        nonce=secrets.token_bytes(8),
    ).validated()
    body = code.to_cbor()
    body[0] = certificate.serial
    return body


def forge(
    signer: int | bytes,
    body: list[object],
    key: SigningKey,
    scheme: SchemePublicKey,
    *,
    kind: int = 1,
) -> bytes:
    """``[signer, *body]`` signed by ``key`` and sealed to ``scheme``: a binary code (in the
    envelope version the library writes)."""
    header = bytes([envelope.VERSION, kind, scheme.kid])
    signed = envelope.signed_content(signer, body)
    signature = key.sign(envelope.SIG_CONTEXT + header + signed)
    sealed = _SUITE.encrypt(signature + signed, scheme.x25519(), info=envelope.HPKE_INFO + header)
    return header + sealed


def inline_identity(body: list[object], shown: Merchant) -> list[object]:
    """``body`` with an identity written inline, as the version-1 format let merchants do."""
    return [shown.to_cbor(), *body[1:]]
