"""Regenerate the payment-code known-answer vectors in ``tests/vectors/code_v1.json``.

Run: ``.venv/bin/python tests/vectors/make_vectors.py [--check] [--out PATH]``

Everything is derived from FIXED inputs: Ed25519 seeds (the secret keys of RFC 8032 section 7.1,
tests 1-3), the X25519 private key of RFC 7748 section 6.1 (Alice) as the scheme code key,
a fixed clock, nonce and order. Signing is deterministic (Ed25519), so headers, signed
plaintexts, certificates, authorizations and receipts are exact byte vectors. HPKE sealing is
randomized (fresh ephemeral key), so each ``sealed`` vector is a *decryption* known answer: it
must open, with the fixed scheme key at the fixed time, to exactly the expected plaintext and
contents. Regenerating keeps every sealed code whose signed plaintext did not change (unless
``--reseal``), so only a format change moves the ``sealed`` / ``text`` / ``digest`` values (and
the authorization and receipt, which refer to the dynamic code's digest).

``codes`` are in the envelope version the library writes (2); ``codes_v1`` are the same codes in
the version-1 layout, which the library still reads (printed static codes live for years): their
sealed bytes are the ones the version-1 implementation made.

Certificates: ``merchant`` is a version-2 merchant certificate (it carries the merchant
identity; merchant-signed codes reference it by serial), ``carrier`` a version-1 carrier
certificate, and ``merchant_v1`` a version-1 merchant certificate as issued before: still
readable, refused as a merchant certificate (it certifies no identity).

``--check`` regenerates the deterministic parts and compares them with the stored file
(exit status 1 on any difference) without writing anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from safescan.code import (
    Authorization,
    DynamicCode,
    Issuer,
    LineItem,
    Merchant,
    Receipt,
    Role,
    SchemeKey,
    SigningKey,
    StaticCode,
    carrier_subject,
    code_digest,
    encode_text,
    envelope,
    issue_certificate,
    seal,
)
from safescan.code.keys import SchemePublicKey
from safescan.code.schemelist import PublishedSchemeKey, SchemeKeyList

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "code_v1.json"

KEYS = {
    # RFC 8032 section 7.1, TEST 1 / TEST 2 / TEST 3 secret keys
    "institution_seed": "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    "merchant_seed": "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    "carrier_seed": "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
    # RFC 7748 section 6.1, Alice's private key
    "scheme_private": "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    "institution_kid": 1,
    "scheme_kid": 1,
}
NOW = 1_790_000_000  # 2026-09-21T10:13:20Z

MERCHANT = {"id": "m_7Qx2", "name": "Café Lumière", "city": "Paris", "country": "FR", "mcc": 5814}
DYNAMIC = {
    "merchant": MERCHANT,
    "order_id": "o_20261126_0001",
    "items": [["Flat white", 2, 350], ["Croissant", 1, 180], ["Orange juice", 1, 420]],
    "total": 1300,
    "currency": 978,
    "issued_at": NOW,
    "expires_at": NOW + 300,
    "nonce": "0001020304050607",
}
STATIC = {"merchant": MERCHANT, "currency": 978, "issued_at": NOW, "expires_at": NOW + 31_622_400}
MERCHANT_CERT = {
    "serial": 1001,
    "role": int(Role.MERCHANT),
    "subject": "m_7Qx2",
    "not_before": NOW - 86_400,
    "not_after": NOW + 31_536_000,
}
CARRIER_CERT = {
    "serial": 1002,
    "role": int(Role.CARRIER),
    "subject": carrier_subject(4242),
    "not_before": NOW - 86_400,
    "not_after": NOW + 5 * 31_536_000,
}
CODES: list[dict[str, Any]] = [
    {"name": "dynamic-institution", "issuer": "institution", "body": DYNAMIC},
    {"name": "static-institution", "issuer": "institution", "body": STATIC},
    {"name": "dynamic-merchant", "issuer": "merchant", "body": DYNAMIC},
    {"name": "static-merchant", "issuer": "merchant", "body": STATIC},
]
#: The published scheme key list: the fixed scheme key (current) and an older one retiring.
SCHEME_LIST = {
    "issued_at": NOW,
    "current_kid": 1,
    # RFC 7748 section 6.1, Bob's public key, as an older key retiring in a day
    "keys": [[0, "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f", NOW + 86_400]],
}


# --- building objects from the JSON inputs (the test uses the same functions) ---------------


def signing_key(keys: dict[str, Any], name: str) -> SigningKey:
    """The fixed Ed25519 key ``name`` (institution, merchant, carrier)."""
    return SigningKey.from_seed(bytes.fromhex(keys[f"{name}_seed"]))


def scheme_key(keys: dict[str, Any]) -> SchemeKey:
    """The fixed X25519 scheme code key."""
    return SchemeKey.from_seed(keys["scheme_kid"], bytes.fromhex(keys["scheme_private"]))


def merchant_from(doc: dict[str, Any]) -> Merchant:
    """A :class:`Merchant` from its JSON description."""
    return Merchant(doc["id"], doc["name"], doc["city"], doc["country"], doc["mcc"])


def code_from(doc: dict[str, Any]) -> DynamicCode | StaticCode:
    """A dynamic code (has ``items``) or a static code from its JSON description."""
    if "items" in doc:
        return DynamicCode(
            merchant=merchant_from(doc["merchant"]),
            order_id=doc["order_id"],
            items=tuple(LineItem(n, q, p) for n, q, p in doc["items"]),
            total=doc["total"],
            currency=doc["currency"],
            issued_at=doc["issued_at"],
            expires_at=doc["expires_at"],
            nonce=bytes.fromhex(doc["nonce"]),
        )
    return StaticCode(
        merchant=merchant_from(doc["merchant"]),
        currency=doc["currency"],
        issued_at=doc["issued_at"],
        expires_at=doc["expires_at"],
    )


def certificate_from(
    keys: dict[str, Any], doc: dict[str, Any], subject_key: str, *, version: int | None = None
) -> Any:
    """Issue the certificate described by ``doc`` for the fixed key ``subject_key`` (a merchant
    certificate certifies the ``MERCHANT`` identity; ``version=1`` makes the old, identity-less
    merchant certificate, which :func:`issue_certificate` no longer issues)."""
    role = Role(doc["role"])
    cert = issue_certificate(
        signing_key(keys, "institution"),
        keys["institution_kid"],
        serial=doc["serial"],
        role=role,
        subject=doc["subject"],
        public_key=signing_key(keys, subject_key).public_key,
        not_before=doc["not_before"],
        not_after=doc["not_after"],
        merchant=merchant_from(MERCHANT) if role is Role.MERCHANT else None,
    )
    if version == 1 and cert.merchant is not None:
        old = replace(cert, merchant=None, signature=b"")
        cert = replace(old, signature=signing_key(keys, "institution").sign(old.tbs()))
    return cert


def scheme_list_from(keys: dict[str, Any], doc: dict[str, Any]) -> SchemeKeyList:
    """The signed scheme key list described by ``doc`` (plus the fixed scheme key)."""
    entries = [PublishedSchemeKey(scheme_key(keys).public, None)] + [
        PublishedSchemeKey(SchemePublicKey(kid, bytes.fromhex(raw)), retire)
        for kid, raw, retire in doc["keys"]
    ]
    return SchemeKeyList.issue(
        signing_key(keys, "institution"),
        keys["institution_kid"],
        issued_at=doc["issued_at"],
        current_kid=doc["current_kid"],
        keys=entries,
    )


def issuer_from(keys: dict[str, Any], kind: str, merchant_cert: dict[str, Any]) -> Issuer:
    """The institution issuer, or the merchant issuer with its certificate."""
    if kind == "institution":
        return Issuer.institution(signing_key(keys, "institution"), keys["institution_kid"])
    cert = certificate_from(keys, merchant_cert, "merchant")
    return Issuer.merchant(signing_key(keys, "merchant"), cert)


def authorization_from(doc: dict[str, Any]) -> Authorization:
    """An unsigned :class:`Authorization` from its JSON description."""
    return Authorization(**{**doc, "code_digest": bytes.fromhex(doc["code_digest"])})


def receipt_from(doc: dict[str, Any]) -> Receipt:
    """An unsigned :class:`Receipt` from its JSON description."""
    return Receipt(**{**doc, "code_digest": bytes.fromhex(doc["code_digest"])})


# --- generation -----------------------------------------------------------------------------


def build(previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """All vectors. With ``previous``, keep its (randomized) sealed codes whose signed plaintext
    did not change instead of resealing them."""
    keys = dict(KEYS)
    sk = scheme_key(keys)
    keys["institution_public"] = signing_key(keys, "institution").public_key.hex()
    keys["merchant_public"] = signing_key(keys, "merchant").public_key.hex()
    keys["carrier_public"] = signing_key(keys, "carrier").public_key.hex()
    keys["scheme_public"] = sk.public.raw.hex()
    before = [*(previous or {}).get("codes", []), *(previous or {}).get("codes_v1", [])]
    old_codes = {c["plaintext"]: c for c in before}  # a sealed code, by what it opens to

    def sealed_codes(version: int) -> list[dict[str, Any]]:
        out = []
        for spec in CODES:
            code = code_from(spec["body"])
            issuer = issuer_from(keys, spec["issuer"], MERCHANT_CERT)
            header, plaintext = envelope.sign_code(code, issuer, sk.kid, version=version)
            old = old_codes.get(plaintext.hex())
            if old is not None and old["header"] == header.hex():  # unchanged: keep its seal
                sealed = bytes.fromhex(old["sealed"])
            else:
                sealed = seal(code, issuer, sk.public, version=version)
            out.append(
                {
                    "name": spec["name"],
                    "issuer": spec["issuer"],
                    "version": version,
                    "input": spec["body"],
                    "header": header.hex(),
                    "signature": plaintext[: envelope.SIGNATURE_BYTES].hex(),
                    "signed": plaintext[envelope.SIGNATURE_BYTES :].hex(),
                    "plaintext": plaintext.hex(),
                    "sealed": sealed.hex(),
                    "text": encode_text(sealed),
                    "digest": code_digest(sealed).hex(),
                }
            )
        return out

    codes = sealed_codes(envelope.VERSION)
    codes_v1 = sealed_codes(1)

    digest = codes[0]["digest"]
    auth_in = {
        "code_digest": digest,
        "merchant_id": "m_7Qx2",
        "order_id": "o_20261126_0001",
        "amount": 1300,
        "currency": 978,
        "counter": 17,
        "carrier_serial": 4242,
        "created_at": NOW + 20,
    }
    auth = authorization_from(auth_in).signed(signing_key(keys, "carrier"))
    receipt_in = {
        "payment_id": "pay_000123",
        "order_id": "o_20261126_0001",
        "merchant_id": "m_7Qx2",
        "amount": 1300,
        "currency": 978,
        "payer_pseudonym": "p_Zx81",
        "paid_at": NOW + 21,
        "code_digest": digest,
        "issuer_kid": 1,
    }
    receipt = receipt_from(receipt_in).signed(signing_key(keys, "institution"))
    return {
        "description": (
            "safescan protocol 1 (SS1) known-answer vectors: payment codes in envelope version"
            " 2 (codes, what is written) and 1 (codes_v1, still read); regenerate with "
            "tests/vectors/make_vectors.py. Sealed codes are decryption vectors (HPKE is "
            "randomized); everything else is exact bytes."
        ),
        "now": NOW,
        "keys": keys,
        "certificates": {
            "merchant": {
                "input": MERCHANT_CERT,
                "subject_key": "merchant",
                "bytes": certificate_from(keys, MERCHANT_CERT, "merchant").to_bytes().hex(),
            },
            "carrier": {
                "input": CARRIER_CERT,
                "subject_key": "carrier",
                "bytes": certificate_from(keys, CARRIER_CERT, "carrier").to_bytes().hex(),
            },
            "merchant_v1": {
                "input": MERCHANT_CERT,
                "subject_key": "merchant",
                "bytes": certificate_from(keys, MERCHANT_CERT, "merchant", version=1)
                .to_bytes()
                .hex(),
            },
        },
        "scheme_key_list": {
            "input": SCHEME_LIST,
            "bytes": scheme_list_from(keys, SCHEME_LIST).to_bytes().hex(),
        },
        "codes": codes,
        "codes_v1": codes_v1,
        "authorization": {
            "input": auth_in,
            "tbs": auth.tbs().hex(),
            "bytes": auth.to_bytes().hex(),
        },
        "receipt": {
            "input": receipt_in,
            "tbs": receipt.tbs().hex(),
            "bytes": receipt.to_bytes().hex(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` verify) the vector file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument(
        "--reseal", action="store_true", help="make fresh sealed codes instead of keeping them"
    )
    args = parser.parse_args(argv)
    previous = None
    if args.out.exists() and not args.reseal:
        previous = json.loads(args.out.read_text(encoding="utf-8"))
    vectors = build(previous)
    text = json.dumps(vectors, indent=2, ensure_ascii=False) + "\n"
    if args.check:
        if previous != vectors:
            print(f"{args.out} differs from the regenerated vectors", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
