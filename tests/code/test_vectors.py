"""Known-answer tests of the SS1 byte layouts (vectors in tests/vectors/code_v1.json): payment
codes in envelope version 2 (what is written) and version 1 (still read; the sealed version-1
vectors are the bytes the version-1 implementation made), version-2 merchant certificates,
version-1 carrier certificates and the scheme key list.

Fixed keys (RFC 8032 / RFC 7748 test keys), a fixed clock, nonce and order give fixed bytes:
any change to the format (header, CBOR layout, signature input, certificate, authorization or
receipt encoding) fails here. HPKE sealing is randomized, so the sealed vectors are decryption
known answers: they must open to exactly the expected plaintext and contents.
The CRC-16 known answers are in test_emv.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hpke

from safescan.code import (
    Authorization,
    Certificate,
    DynamicCode,
    Issuer,
    LineItem,
    Merchant,
    Receipt,
    Role,
    SchemeKey,
    SchemeKeyring,
    SigningKey,
    StaticCode,
    TrustStore,
    cbor,
    decode_text,
    encode_text,
    envelope,
    issue_certificate,
    open_code,
    read_header,
    verify_certificate,
)
from safescan.code.errors import CertificateError, DecryptionFailed, SafescanError
from safescan.code.keys import SchemePublicKey
from safescan.code.schemelist import PublishedSchemeKey, SchemeKeyList

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "code_v1.json").read_text(encoding="utf-8")
)
KEYS = VECTORS["keys"]
NOW: int = VECTORS["now"]
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
#: (vector set, code name): every code in the version written (2) and the version still read (1)
CASES = [(group, c["name"]) for group in ("codes", "codes_v1") for c in VECTORS[group]]
CASE_IDS = [f"{name}-v{2 if group == 'codes' else 1}" for group, name in CASES]


def _key(name: str) -> SigningKey:
    return SigningKey.from_seed(bytes.fromhex(KEYS[f"{name}_seed"]))


def _scheme_key() -> SchemeKey:
    return SchemeKey.from_seed(KEYS["scheme_kid"], bytes.fromhex(KEYS["scheme_private"]))


def _trust() -> TrustStore:
    return TrustStore({KEYS["institution_kid"]: _key("institution").public_key})


def _keyring() -> SchemeKeyring:
    ring = SchemeKeyring()
    ring.add(_scheme_key())
    return ring


def _vector(name: str, group: str = "codes") -> dict[str, Any]:
    return next(c for c in VECTORS[group] if c["name"] == name)


def _code(doc: dict[str, Any]) -> DynamicCode | StaticCode:
    m = doc["merchant"]
    merchant = Merchant(m["id"], m["name"], m["city"], m["country"], m["mcc"])
    if "items" in doc:
        return DynamicCode(
            merchant=merchant,
            order_id=doc["order_id"],
            items=tuple(LineItem(*item) for item in doc["items"]),
            total=doc["total"],
            currency=doc["currency"],
            issued_at=doc["issued_at"],
            expires_at=doc["expires_at"],
            nonce=bytes.fromhex(doc["nonce"]),
        )
    return StaticCode(merchant, doc["currency"], doc["issued_at"], doc["expires_at"])


def _certificate(which: str) -> Certificate:
    doc = VECTORS["certificates"][which]
    spec = doc["input"]
    role = Role(spec["role"])
    merchant = _code(_vector("dynamic-merchant")["input"]).merchant
    return issue_certificate(
        _key("institution"),
        KEYS["institution_kid"],
        serial=spec["serial"],
        role=role,
        subject=spec["subject"],
        public_key=_key(doc["subject_key"]).public_key,
        not_before=spec["not_before"],
        not_after=spec["not_after"],
        merchant=merchant if role is Role.MERCHANT else None,
    )


def _issuer(kind: str) -> Issuer:
    if kind == "institution":
        return Issuer.institution(_key("institution"), KEYS["institution_kid"])
    return Issuer.merchant(_key("merchant"), _certificate("merchant"))


# --- keys -----------------------------------------------------------------------------------


def test_fixed_keys_match_their_rfc_public_keys() -> None:
    # RFC 8032 section 7.1 TEST 1-3 public keys; RFC 7748 section 6.1 Alice's public key.
    assert _key("institution").public_key.hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )
    assert _key("merchant").public_key.hex() == (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
    )
    assert _key("carrier").public_key.hex() == (
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025"
    )
    assert _scheme_key().public.raw.hex() == (
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    )
    for name in ("institution", "merchant", "carrier"):
        assert _key(name).public_key.hex() == KEYS[f"{name}_public"]


@pytest.mark.parametrize("group", ["codes", "codes_v1"])
def test_vectors_cover_every_kind_of_code(group: str) -> None:
    kinds = {(c["issuer"], "items" in c["input"]) for c in VECTORS[group]}
    assert kinds == {
        ("institution", True),
        ("institution", False),
        ("merchant", True),
        ("merchant", False),
    }
    assert {c["version"] for c in VECTORS[group]} == {2 if group == "codes" else 1}


# --- deterministic signed plaintext ---------------------------------------------------------


@pytest.mark.parametrize(("group", "name"), CASES, ids=CASE_IDS)
def test_header_and_signed_plaintext_are_exact(group: str, name: str) -> None:
    vector = _vector(name, group)
    code = _code(vector["input"])
    header, plaintext = envelope.sign_code(
        code, _issuer(vector["issuer"]), KEYS["scheme_kid"], version=vector["version"]
    )
    assert header.hex() == vector["header"]
    assert plaintext.hex() == vector["plaintext"]
    assert vector["plaintext"] == vector["signature"] + vector["signed"]


@pytest.mark.parametrize(("group", "name"), CASES, ids=CASE_IDS)
def test_header_layout(group: str, name: str) -> None:
    vector = _vector(name, group)
    kind = 1 if "items" in vector["input"] else 2
    version = 2 if group == "codes" else 1
    assert bytes.fromhex(vector["header"]) == bytes([version, kind, KEYS["scheme_kid"]])


@pytest.mark.parametrize(("group", "name"), CASES, ids=CASE_IDS)
def test_signed_layout(group: str, name: str) -> None:
    """The signed CBOR is [signer, *body] (version 2) or [signer, body] (version 1), with the
    documented positional body."""
    vector = _vector(name, group)
    signed = bytes.fromhex(vector["signed"])
    outer = cbor.strict_loads(signed)
    if group == "codes":
        signer, body = outer[0], outer[1:]
    else:
        assert len(outer) == 2
        signer, body = outer
    if vector["issuer"] == "institution":
        assert signer == KEYS["institution_kid"]
    else:
        assert signer.hex() == VECTORS["certificates"]["merchant"]["bytes"]
    doc = vector["input"]
    m = doc["merchant"]
    if vector["issuer"] == "institution":
        assert body[0] == [m["id"], m["name"], m["city"], m["country"], m["mcc"]]
    else:  # the certified identity, referenced by the certificate's serial
        assert body[0] == VECTORS["certificates"]["merchant"]["input"]["serial"]
        identity = cbor.strict_loads(signer)[8:12]
        assert [m["id"], *identity] == [m["id"], m["name"], m["city"], m["country"], m["mcc"]]
    if "items" in doc and group == "codes":  # no total; the items as one flat array
        assert body[1:] == [
            doc["order_id"],
            [field for item in doc["items"] for field in item],
            doc["currency"],
            doc["issued_at"],
            doc["expires_at"] - doc["issued_at"],
            bytes.fromhex(doc["nonce"]),
        ]
        assert sum(q * p for _, q, p in doc["items"]) == doc["total"]
    elif "items" in doc:
        assert body[1:] == [
            doc["order_id"],
            doc["items"],
            doc["total"],
            doc["currency"],
            doc["issued_at"],
            doc["expires_at"] - doc["issued_at"],
            bytes.fromhex(doc["nonce"]),
        ]
    else:
        assert body[1:] == [doc["issued_at"], doc["expires_at"] - doc["issued_at"], doc["currency"]]
    signature = bytes.fromhex(vector["signature"])
    key = _key(vector["issuer"])
    key.public_key.verify(signature, b"SS1-SIG" + bytes.fromhex(vector["header"]) + signed)


# --- sealed codes: decryption known answers -------------------------------------------------


@pytest.mark.parametrize(("group", "name"), CASES, ids=CASE_IDS)
def test_sealed_vector_decrypts_to_the_plaintext(group: str, name: str) -> None:
    vector = _vector(name, group)
    sealed = bytes.fromhex(vector["sealed"])
    header = bytes.fromhex(vector["header"])
    plaintext = bytes.fromhex(vector["plaintext"])
    assert sealed[:3] == header
    assert len(sealed) == 3 + 32 + len(plaintext) + 16
    opened = _SUITE.decrypt(
        sealed[3:], _scheme_key().private_key(), info=b"safescan code v1" + header
    )
    assert opened == plaintext


@pytest.mark.parametrize(("group", "name"), CASES, ids=CASE_IDS)
def test_sealed_vector_opens_to_the_expected_contents(group: str, name: str) -> None:
    vector = _vector(name, group)
    sealed = bytes.fromhex(vector["sealed"])
    expected = _code(vector["input"]).validated()
    for data in (sealed, vector["text"]):
        opened = open_code(data, _keyring(), _trust(), now=NOW)
        assert opened.code == expected
        assert opened.header.version == vector["version"]
        assert opened.issuer == vector["issuer"]
        assert opened.digest.hex() == vector["digest"]
        assert opened.warnings == ()
    assert hashlib.sha256(sealed).hexdigest() == vector["digest"]


@pytest.mark.parametrize(("group", "name"), CASES, ids=CASE_IDS)
def test_text_is_prefix_and_base45_of_the_binary(group: str, name: str) -> None:
    vector = _vector(name, group)
    sealed = bytes.fromhex(vector["sealed"])
    assert vector["text"].startswith("SS1:")
    assert encode_text(sealed) == vector["text"]
    assert decode_text(vector["text"]) == sealed
    assert read_header(vector["text"]).to_bytes().hex() == vector["header"]


def test_sealed_vector_needs_the_scheme_key() -> None:
    other = SchemeKeyring()
    other.add(SchemeKey.from_seed(KEYS["scheme_kid"], bytes(31) + b"\x01"))
    with pytest.raises(DecryptionFailed):
        open_code(_vector("dynamic-institution")["text"], other, _trust(), now=NOW)


def test_sizes_of_the_vectors() -> None:
    sizes = {c["name"]: (len(c["sealed"]) // 2, len(c["text"])) for c in VECTORS["codes"]}
    assert sizes == {  # docs/protocol.md section 8
        "dynamic-institution": (234, 355),  # QR version 11 at level M holds 366 characters
        "static-institution": (165, 252),
        "dynamic-merchant": (354, 535),  # v2 certificate (151) + serial reference (3)
        "static-merchant": (285, 432),
    }
    old = {c["name"]: (len(c["sealed"]) // 2, len(c["text"])) for c in VECTORS["codes_v1"]}
    assert old == {
        "dynamic-institution": (241, 366),
        "static-institution": (166, 253),
        "dynamic-merchant": (361, 546),
        "static-merchant": (286, 433),
    }


# --- certificate, authorization, receipt ----------------------------------------------------


@pytest.mark.parametrize("which", ["merchant", "carrier"])
def test_certificate_bytes_are_exact(which: str) -> None:
    doc = VECTORS["certificates"][which]
    cert = _certificate(which)
    assert cert.to_bytes().hex() == doc["bytes"]
    parsed = Certificate.from_bytes(bytes.fromhex(doc["bytes"]))
    assert parsed == cert
    verify_certificate(parsed, _trust(), role=Role(doc["input"]["role"]), now=NOW)


def test_version_1_merchant_certificate_is_readable_but_refused() -> None:
    doc = VECTORS["certificates"]["merchant_v1"]
    cert = Certificate.from_bytes(bytes.fromhex(doc["bytes"]))
    assert cert.version == 1 and cert.merchant is None
    assert cert.to_bytes().hex() == doc["bytes"]
    spec = doc["input"]
    assert (cert.serial, cert.subject, cert.not_before) == (
        spec["serial"],
        spec["subject"],
        spec["not_before"],
    )
    _key("institution").public_key.verify(cert.signature, cert.tbs())  # genuinely signed
    with pytest.raises(CertificateError, match="version 1"):
        verify_certificate(cert, _trust(), role=Role.MERCHANT, now=NOW)


def test_version_2_merchant_certificate_layout() -> None:
    data = bytes.fromhex(VECTORS["certificates"]["merchant"]["bytes"])
    fields = cbor.strict_loads(data)
    spec = VECTORS["certificates"]["merchant"]["input"]
    m = _vector("dynamic-merchant")["input"]["merchant"]
    assert fields[:4] == [2, spec["serial"], spec["role"], spec["subject"]]
    assert fields[4] == _key("merchant").public_key.raw
    assert fields[5:8] == [spec["not_before"], spec["not_after"], KEYS["institution_kid"]]
    assert fields[8:12] == [m["name"], m["city"], m["country"], m["mcc"]]
    _key("institution").public_key.verify(fields[12], b"SS1-CERT" + cbor.dumps(fields[:12]))


def test_scheme_key_list_bytes_are_exact() -> None:
    doc = VECTORS["scheme_key_list"]
    spec = doc["input"]
    entries = [PublishedSchemeKey(_scheme_key().public, None)] + [
        PublishedSchemeKey(SchemePublicKey(kid, bytes.fromhex(raw)), retire)
        for kid, raw, retire in spec["keys"]
    ]
    listed = SchemeKeyList.issue(
        _key("institution"),
        KEYS["institution_kid"],
        issued_at=spec["issued_at"],
        current_kid=spec["current_kid"],
        keys=entries,
    )
    assert listed.to_bytes().hex() == doc["bytes"]
    parsed = SchemeKeyList.from_bytes(bytes.fromhex(doc["bytes"]), _trust())
    assert parsed == listed
    assert parsed.for_sealing(NOW, NOW + 300) == _scheme_key().public
    value = cbor.strict_loads(bytes.fromhex(doc["bytes"]))
    assert value[:3] == [1, spec["issued_at"], spec["current_kid"]]
    _key("institution").public_key.verify(value[5], b"SS1-SKEYS" + cbor.dumps(value[:5]))


def test_authorization_bytes_are_exact() -> None:
    doc = VECTORS["authorization"]
    assert doc["input"]["code_digest"] == _vector("dynamic-institution")["digest"]
    auth = Authorization(
        **{**doc["input"], "code_digest": bytes.fromhex(doc["input"]["code_digest"])}
    )
    signed = auth.signed(_key("carrier"))
    assert auth.tbs().hex() == doc["tbs"]
    assert signed.to_bytes().hex() == doc["bytes"]
    parsed = Authorization.from_bytes(bytes.fromhex(doc["bytes"]))
    assert parsed == signed
    parsed.verify(_key("carrier").public_key)


def test_receipt_bytes_are_exact() -> None:
    doc = VECTORS["receipt"]
    receipt = Receipt(**{**doc["input"], "code_digest": bytes.fromhex(doc["input"]["code_digest"])})
    signed = receipt.signed(_key("institution"))
    assert receipt.tbs().hex() == doc["tbs"]
    assert signed.to_bytes().hex() == doc["bytes"]
    parsed = Receipt.from_bytes(bytes.fromhex(doc["bytes"]))
    assert parsed == signed
    parsed.verify(_trust())


@pytest.mark.parametrize("which", ["authorization", "receipt"])
def test_signed_objects_refuse_any_flipped_byte(which: str) -> None:
    data = bytes.fromhex(VECTORS[which]["bytes"])
    for position in range(len(data)):
        flipped = bytearray(data)
        flipped[position] ^= 0x04
        with pytest.raises(SafescanError):
            if which == "authorization":
                Authorization.from_bytes(bytes(flipped)).verify(_key("carrier").public_key)
            else:
                Receipt.from_bytes(bytes(flipped)).verify(_trust())
