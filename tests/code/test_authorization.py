"""Payment authorizations (signed by a key carrier) and receipts (signed by the institution)."""

from __future__ import annotations

import dataclasses

import pytest

from safescan.code import Authorization, Receipt, SigningKey, TrustStore, cbor
from safescan.code.errors import (
    InvalidAmount,
    MalformedAuthorization,
    MalformedReceipt,
    SafescanError,
    SignatureInvalid,
    UnknownCurrency,
    UnknownKeyId,
)
from tests.code.conftest import NOW

CARRIER = SigningKey.from_seed(b"\x61" * 32)
INSTITUTION = SigningKey.from_seed(b"\x11" * 32)
DIGEST = bytes(range(32))


def _auth(**changes: object) -> Authorization:
    fields: dict[str, object] = dict(
        code_digest=DIGEST,
        merchant_id="m_7Qx2",
        order_id="o_20261126_0001",
        amount=1300,
        currency=978,
        counter=17,
        carrier_serial=4242,
        created_at=NOW,
    )
    fields.update(changes)
    return Authorization(**fields)  # type: ignore[arg-type]


def _receipt(**changes: object) -> Receipt:
    fields: dict[str, object] = dict(
        payment_id="pay_000123",
        order_id="o_20261126_0001",
        merchant_id="m_7Qx2",
        amount=1300,
        currency=978,
        payer_pseudonym="p_Zx81",
        paid_at=NOW + 5,
        code_digest=DIGEST,
        issuer_kid=1,
    )
    fields.update(changes)
    return Receipt(**fields)  # type: ignore[arg-type]


def _trust() -> TrustStore:
    return TrustStore({1: INSTITUTION.public_key})


# Per field: a different value of the right type, to prove every field is signed.
AUTH_TAMPER = {
    "code_digest": bytes(32),
    "merchant_id": "m_7Qx3",
    "order_id": "o_20261126_0002",
    "amount": 1301,
    "currency": 840,
    "counter": 18,
    "carrier_serial": 4243,
    "created_at": NOW + 1,
    "signature": b"\x00" * 64,
}
RECEIPT_TAMPER = {
    "payment_id": "pay_000124",
    "order_id": "",
    "merchant_id": "m_evil",
    "amount": 13000,
    "currency": 840,
    "payer_pseudonym": "p_Zx82",
    "paid_at": NOW + 6,
    "code_digest": bytes(32),
    "issuer_kid": 1,  # placeholder: the kid is covered by its own test below
    "signature": b"\x00" * 64,
}


def test_tamper_tables_cover_every_field() -> None:
    assert set(AUTH_TAMPER) == {f.name for f in dataclasses.fields(Authorization)}
    assert set(RECEIPT_TAMPER) == {f.name for f in dataclasses.fields(Receipt)}


# --- authorization --------------------------------------------------------------------------


def test_authorization_round_trip() -> None:
    auth = _auth().signed(CARRIER)
    assert len(auth.signature) == 64
    data = auth.to_bytes()
    parsed = Authorization.from_bytes(data)
    assert parsed == auth
    assert parsed.to_bytes() == data
    parsed.verify(CARRIER.public_key)


def test_authorization_for_static_code_has_empty_order_id() -> None:
    auth = _auth(order_id="").signed(CARRIER)
    parsed = Authorization.from_bytes(auth.to_bytes())
    assert parsed.order_id == ""
    parsed.verify(CARRIER.public_key)


def test_authorization_signature_is_deterministic_and_domain_separated() -> None:
    auth = _auth()
    assert auth.signed(CARRIER).signature == auth.signed(CARRIER).signature
    assert auth.tbs().startswith(b"SS1-AUTH")
    assert auth.tbs()[8:] == cbor.dumps(cbor.strict_loads(auth.tbs()[8:]))


@pytest.mark.parametrize("name", sorted(AUTH_TAMPER))
def test_authorization_tampered_field_refused(name: str) -> None:
    auth = _auth().signed(CARRIER)
    tampered = dataclasses.replace(auth, **{name: AUTH_TAMPER[name]})
    assert tampered != auth
    # the tampered authorization is still well formed: only the signature catches it
    reparsed = Authorization.from_bytes(tampered.to_bytes())
    with pytest.raises(SignatureInvalid):
        reparsed.verify(CARRIER.public_key)


def test_authorization_signed_by_another_carrier_refused() -> None:
    auth = _auth().signed(SigningKey.from_seed(b"\x62" * 32))
    with pytest.raises(SignatureInvalid):
        auth.verify(CARRIER.public_key)


def test_authorization_every_flipped_byte_refused() -> None:
    data = _auth().signed(CARRIER).to_bytes()
    for position in range(len(data)):
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        with pytest.raises(SafescanError):
            Authorization.from_bytes(bytes(flipped)).verify(CARRIER.public_key)


def _auth_fields() -> list[object]:
    value = cbor.strict_loads(_auth().signed(CARRIER).to_bytes())
    assert isinstance(value, list) and len(value) == 10
    return value


@pytest.mark.parametrize("length", [0, 1, 9, 11])
def test_authorization_wrong_arity_refused(length: int) -> None:
    value = [*_auth_fields(), 0][:length]
    with pytest.raises(MalformedAuthorization, match="version-1 authorization"):
        Authorization.from_bytes(cbor.dumps(value))


@pytest.mark.parametrize(
    ("index", "bad", "error"),
    [
        (0, 2, MalformedAuthorization),  # version
        (0, "1", MalformedAuthorization),
        (1, DIGEST.hex(), MalformedAuthorization),
        (1, DIGEST[:31], MalformedAuthorization),
        (2, 42, MalformedAuthorization),
        (2, "m 7Qx2", MalformedAuthorization),
        (3, 42, MalformedAuthorization),
        (3, b"o_1", MalformedAuthorization),
        # A wrong-typed amount is InvalidAmount (a CodeError), not MalformedAuthorization.
        (4, "1300", InvalidAmount),
        (4, 0, InvalidAmount),
        (5, "978", MalformedAuthorization),
        (5, 1000, MalformedAuthorization),
        (6, -1, MalformedAuthorization),
        (6, b"\x11", MalformedAuthorization),
        (7, "4242", MalformedAuthorization),
        (8, 2**32, MalformedAuthorization),
        (8, -1, MalformedAuthorization),
        (9, b"\x00" * 63, MalformedAuthorization),
        (9, "sig", MalformedAuthorization),
    ],
)
def test_authorization_wrong_type_refused(
    index: int, bad: object, error: type[SafescanError]
) -> None:
    value = _auth_fields()
    value[index] = bad
    with pytest.raises(error):
        Authorization.from_bytes(cbor.dumps(value))


def test_authorization_map_instead_of_array_refused() -> None:
    value = dict(enumerate(_auth_fields()))
    with pytest.raises(MalformedAuthorization):
        Authorization.from_bytes(cbor.dumps(value))


def test_authorization_nested_value_refused() -> None:
    value = _auth_fields()
    value[1] = [[DIGEST]]
    with pytest.raises(MalformedAuthorization):
        Authorization.from_bytes(cbor.dumps(value))


def test_authorization_non_canonical_refused() -> None:
    data = _auth().signed(CARRIER).to_bytes()
    counter = cbor.dumps(17)  # 0x11
    long_counter = b"\x18\x11"  # 17 in the two-byte form
    index = data.index(counter + cbor.dumps(4242))
    bad = data[:index] + long_counter + data[index + 1 :]
    with pytest.raises(MalformedAuthorization, match="deterministic"):
        Authorization.from_bytes(bad)
    with pytest.raises(MalformedAuthorization):
        Authorization.from_bytes(b"\x9f" + data[1:] + b"\xff")  # indefinite length


def test_authorization_trailing_bytes_refused() -> None:
    data = _auth().signed(CARRIER).to_bytes()
    for extra in (b"\x00", b"\xf6", data):
        with pytest.raises(MalformedAuthorization):
            Authorization.from_bytes(data + extra)


def test_authorization_oversize_refused() -> None:
    with pytest.raises(MalformedAuthorization, match="too large"):
        Authorization.from_bytes(b"\x80" * 1025)


def test_authorization_text_input_refused() -> None:
    with pytest.raises(MalformedAuthorization):
        Authorization.from_bytes(_auth().signed(CARRIER).to_bytes().hex())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "bad", "error"),
    [
        ("amount", 0, InvalidAmount),
        ("amount", -1, InvalidAmount),
        ("amount", 10**12, InvalidAmount),
        ("amount", True, InvalidAmount),
        ("amount", 12.5, InvalidAmount),
        ("merchant_id", "", MalformedAuthorization),
        ("merchant_id", "m" * 41, MalformedAuthorization),
        ("merchant_id", "Café", MalformedAuthorization),
        ("order_id", "o 1", MalformedAuthorization),
        ("order_id", None, MalformedAuthorization),
        ("code_digest", DIGEST[:31], MalformedAuthorization),
        ("currency", 1000, MalformedAuthorization),
        ("currency", -1, MalformedAuthorization),
        ("currency", 999, UnknownCurrency),
        ("counter", -1, MalformedAuthorization),
        ("counter", 2**63, MalformedAuthorization),
        ("counter", False, MalformedAuthorization),
        ("carrier_serial", -1, MalformedAuthorization),
        ("created_at", 2**32, MalformedAuthorization),
    ],
)
def test_invalid_authorization_fields_refused(
    name: str, bad: object, error: type[SafescanError]
) -> None:
    auth = _auth(**{name: bad})
    with pytest.raises(error):
        auth.validated()
    with pytest.raises(error):
        auth.signed(CARRIER)  # never signed either


# --- receipt --------------------------------------------------------------------------------


def test_receipt_round_trip() -> None:
    receipt = _receipt().signed(INSTITUTION)
    data = receipt.to_bytes()
    parsed = Receipt.from_bytes(data)
    assert parsed == receipt
    assert parsed.to_bytes() == data
    parsed.verify(_trust())
    assert receipt.tbs().startswith(b"SS1-RCPT")


@pytest.mark.parametrize("name", sorted(set(RECEIPT_TAMPER) - {"issuer_kid"}))
def test_receipt_tampered_field_refused(name: str) -> None:
    receipt = _receipt().signed(INSTITUTION)
    tampered = dataclasses.replace(receipt, **{name: RECEIPT_TAMPER[name]})
    assert tampered != receipt
    reparsed = Receipt.from_bytes(tampered.to_bytes())
    with pytest.raises(SignatureInvalid):
        reparsed.verify(_trust())


def test_receipt_tampered_issuer_kid_refused() -> None:
    receipt = _receipt().signed(INSTITUTION)
    trust = TrustStore({1: INSTITUTION.public_key, 2: INSTITUTION.public_key})
    moved = Receipt.from_bytes(dataclasses.replace(receipt, issuer_kid=2).to_bytes())
    with pytest.raises(SignatureInvalid):  # same key under another id: still refused
        moved.verify(trust)
    with pytest.raises(UnknownKeyId):
        dataclasses.replace(receipt, issuer_kid=3).verify(trust)


def test_receipt_signed_by_untrusted_key_refused() -> None:
    forged = _receipt().signed(SigningKey.from_seed(b"\x99" * 32))
    with pytest.raises(SignatureInvalid):
        Receipt.from_bytes(forged.to_bytes()).verify(_trust())


def test_receipt_from_unknown_institution_key_refused() -> None:
    receipt = _receipt(issuer_kid=7).signed(INSTITUTION)
    with pytest.raises(UnknownKeyId):
        receipt.verify(_trust())


def test_authorization_signature_does_not_verify_as_receipt() -> None:
    auth = _auth().signed(INSTITUTION)  # same key signs both kinds: contexts keep them apart
    receipt = dataclasses.replace(_receipt(), signature=auth.signature)
    with pytest.raises(SignatureInvalid):
        receipt.verify(_trust())


def test_receipt_every_flipped_byte_refused() -> None:
    data = _receipt().signed(INSTITUTION).to_bytes()
    for position in range(len(data)):
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        with pytest.raises(SafescanError):
            Receipt.from_bytes(bytes(flipped)).verify(_trust())


def _receipt_fields() -> list[object]:
    value = cbor.strict_loads(_receipt().signed(INSTITUTION).to_bytes())
    assert isinstance(value, list) and len(value) == 11
    return value


@pytest.mark.parametrize("length", [0, 10, 12])
def test_receipt_wrong_arity_refused(length: int) -> None:
    value = [*_receipt_fields(), 0][:length]
    with pytest.raises(MalformedReceipt, match="version-1 receipt"):
        Receipt.from_bytes(cbor.dumps(value))


@pytest.mark.parametrize(
    ("index", "bad", "error"),
    [
        (0, 0, MalformedReceipt),
        (1, 123, MalformedReceipt),  # payment id
        (2, 5, MalformedReceipt),  # order id
        (3, b"m_7Qx2", MalformedReceipt),
        (4, "1300", InvalidAmount),  # see the note in test_authorization_wrong_type_refused
        (4, -1300, InvalidAmount),
        (5, "EUR", MalformedReceipt),
        (6, ["p"], MalformedReceipt),
        (7, "now", MalformedReceipt),
        (8, b"\x00" * 33, MalformedReceipt),
        (9, 0x10000, MalformedReceipt),
        (10, b"", MalformedReceipt),
    ],
)
def test_receipt_wrong_type_refused(index: int, bad: object, error: type[SafescanError]) -> None:
    value = _receipt_fields()
    value[index] = bad
    with pytest.raises(error):
        Receipt.from_bytes(cbor.dumps(value))


def test_receipt_non_canonical_and_trailing_refused() -> None:
    data = _receipt().signed(INSTITUTION).to_bytes()
    with pytest.raises(MalformedReceipt):
        Receipt.from_bytes(data + b"\x00")
    with pytest.raises(MalformedReceipt):
        Receipt.from_bytes(b"\x9f" + data[1:] + b"\xff")
    assert data[0] == 0x8B  # an 11-element array, one byte
    with pytest.raises(MalformedReceipt, match="deterministic"):
        Receipt.from_bytes(b"\x98\x0b" + data[1:])  # the same length in two bytes


def test_receipt_oversize_refused() -> None:
    with pytest.raises(MalformedReceipt, match="too large"):
        Receipt.from_bytes(b"\x00" * 1025)


def test_receipt_is_not_an_authorization() -> None:
    with pytest.raises(MalformedAuthorization):
        Authorization.from_bytes(_receipt().signed(INSTITUTION).to_bytes())
    with pytest.raises(MalformedReceipt):
        Receipt.from_bytes(_auth().signed(CARRIER).to_bytes())


@pytest.mark.parametrize(
    ("name", "bad", "error"),
    [
        ("payment_id", "", MalformedReceipt),
        ("payment_id", "pay 1", MalformedReceipt),
        ("payer_pseudonym", "p/1", MalformedReceipt),
        ("merchant_id", "x" * 41, MalformedReceipt),
        ("order_id", "o\u200b1", MalformedReceipt),
        ("amount", 0, InvalidAmount),
        ("amount", 10**12, InvalidAmount),
        ("currency", 1000, MalformedReceipt),
        ("paid_at", -1, MalformedReceipt),
        ("code_digest", b"", MalformedReceipt),
        ("issuer_kid", 0x10000, MalformedReceipt),
        ("issuer_kid", -1, MalformedReceipt),
    ],
)
def test_invalid_receipt_fields_refused(name: str, bad: object, error: type[SafescanError]) -> None:
    receipt = _receipt(**{name: bad})
    with pytest.raises(error):
        receipt.validated()
    with pytest.raises(error):
        receipt.signed(INSTITUTION)
