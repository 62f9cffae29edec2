"""Wire objects are declared once: an order line's CBOR/stored array and JSON object forms
(``LineItem``), and the JSON forms of authorizations, receipts and payment requests
(``safescan.api.wire``)."""

from __future__ import annotations

import base64

import pytest

from safescan.api.encoding import b64d, b64e
from safescan.api.errors import InvalidRequest
from safescan.api.wire import (
    PaymentRequest,
    authorization_from_wire,
    authorization_to_wire,
    receipt_from_wire,
    receipt_to_wire,
)
from safescan.code.authorization import Authorization, Receipt
from safescan.code.errors import MalformedReceipt
from safescan.code.keys import SigningKey
from safescan.code.payment import LineItem


def test_a_line_item_has_one_array_and_one_object_form() -> None:
    item = LineItem("Flat white", 2, 350)
    assert item.to_cbor() == ["Flat white", 2, 350]
    assert LineItem.from_cbor(item.to_cbor()) == item
    assert item.to_json() == {"name": "Flat white", "quantity": 2, "unit_price": 350}
    assert tuple(item.to_json()) == LineItem.JSON_FIELDS
    assert LineItem(**item.to_json()) == item  # type: ignore[arg-type]
    shown = item.display_json(978)
    assert shown == {**item.to_json(), "amount": 700, "display": "7.00 EUR"}
    assert item.display_json(None)["display"] == "700"


def _auth() -> Authorization:
    return Authorization(
        code_digest=bytes(32),
        merchant_id="M1",
        order_id="o1",
        amount=250,
        currency=978,
        counter=1,
        carrier_serial=7,
        created_at=1_700_000_000,
    ).signed(SigningKey.generate())


def _receipt() -> Receipt:
    return Receipt("P1", "o1", "M1", 250, 978, "anon", 1_700_000_000, bytes(32), 1).signed(
        SigningKey.generate()
    )


def test_an_authorization_travels_as_base64_of_its_cbor() -> None:
    auth = _auth()
    text = authorization_to_wire(auth)
    assert text == authorization_to_wire(auth.to_bytes())
    assert base64.b64decode(text) == auth.to_bytes()
    assert Authorization.from_bytes(authorization_from_wire(text)) == auth
    url_safe = base64.urlsafe_b64encode(auth.to_bytes()).decode().rstrip("=")
    assert authorization_from_wire(url_safe) == auth.to_bytes()
    request = PaymentRequest("SS1:code", auth.to_bytes())
    assert request.to_json() == {"code": "SS1:code", "authorization": text}


@pytest.mark.parametrize(
    "bad", ["not base64!", "A" * 2000, base64.b64encode(bytes(1100)).decode(), 12]
)
def test_a_bad_authorization_field_is_a_typed_refusal(bad: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        authorization_from_wire(bad)  # type: ignore[arg-type]
    assert info.value.param == "authorization"


def test_a_receipt_travels_as_base64_of_its_cbor() -> None:
    receipt = _receipt()
    assert receipt_from_wire(receipt_to_wire(receipt)) == receipt
    assert receipt_to_wire(receipt) == receipt_to_wire(receipt.to_bytes())
    with pytest.raises(InvalidRequest):
        receipt_from_wire("%%%")
    with pytest.raises(MalformedReceipt):  # base64, but not a receipt
        receipt_from_wire(base64.b64encode(b"\x01\x02").decode())


# b64e writes "+/+/AQ==" for these bytes: both alphabets' characters, two padding characters
DATA = b"\xfb\xff\xbf\x01"
# the RFC 4648 forms the API has always documented (standard; URL-safe; padding optional)
CANONICAL = ("+/+/AQ==", "+/+/AQ", "-_-_AQ==", "-_-_AQ")
RESPELT = {
    "padding bits set": "+/+/AR==",  # decodes to the same bytes
    "padding bits set, url-safe unpadded": "-_-_AR",
    "extra padding": "+/+/AQ====",
    "partial padding": "+/+/AQ=",
    "a newline": "+/+/AQ==\n",
    "a space inside": "+/+/ AQ==",
    "a mixed alphabet": "+_+/AQ==",
    "a mixed alphabet, unpadded": "-/+_AQ",
    "non-ASCII": "+/+/AQ\u00a0",
}


def test_the_documented_base64_forms_are_read() -> None:
    """Standard padded (what the API writes), and, as docs/institution.md promises clients,
    the URL-safe alphabet and unpadded text, each in its canonical form."""
    assert b64e(DATA) == "+/+/AQ=="
    for text in CANONICAL:
        assert b64d(text, param="p") == DATA


@pytest.mark.parametrize("case", sorted(RESPELT))
def test_base64_respelt_is_refused(case: str) -> None:
    """(review) A text that is no canonical RFC 4648 form of its bytes is refused, naming the
    field: set padding bits, a mixed alphabet, partial or extra padding, whitespace. Before,
    set padding bits, mixed alphabets and partial padding were all accepted."""
    with pytest.raises(InvalidRequest) as info:
        b64d(RESPELT[case], param="p")
    assert info.value.param == "p"
    auth = _auth().to_bytes()
    text = b64e(auth)
    for bad in (text + "\n", " " + text, text + "===="):
        with pytest.raises(InvalidRequest):
            authorization_from_wire(bad)
