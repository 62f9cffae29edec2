"""The carrier's CBOR messages, declared once (safescan.carrier.messages): the card and the host
use the same dataclasses, the bytes on the wire are the layout docs/carrier.md gives (checked
against a hand-written encoder of that layout, on real in-process cards), and every message
that is not exactly its schema is refused with a typed error, whichever field is wrong."""

from __future__ import annotations

import dataclasses
from typing import Any

import cbor2
import pytest

from safescan.carrier import messages, rom
from safescan.carrier.apdu import Ins
from safescan.carrier.client import CarrierClient, CarrierInfo, CodeContents, LastError
from safescan.carrier.device import Card
from safescan.carrier.errors import CodeRefused, WrongData
from safescan.carrier.messages import (
    MESSAGES,
    Authorize,
    CardInfo,
    CborMessage,
    KeysUpdated,
    MalformedMessage,
    OpenedCode,
    Personalize,
    RevocationsTaken,
)
from safescan.carrier.testing import LocalInstitution
from safescan.code.errors import SafescanError
from safescan.code.payment import LineItem

from .conftest import connect

SAMPLES: list[CborMessage] = [
    CardInfo(
        version=(2, 1),
        lifecycle=2,
        device_id=b"\x01" * 8,
        attestation_key=b"\x02" * 32,
        carrier_serial=1001,
        certificate=b"cert",
        retries_left=5,
        retry_limit=5,
        signature_counter=7,
        signing_key=b"\x03" * 32,
        transport_key=b"\x04" * 32,
        pin_tries_this_power_cycle=3,
        algorithms=("Ed25519", "X25519"),
        crl_sequence=4,
        model=2,
        attestation_certificate=b"att",
        key_epoch=3,
    ),
    CardInfo(  # a blank chip: the optional keys left out
        version=(2, 1),
        lifecycle=0,
        device_id=b"\x01" * 8,
        signature_counter=0,
        pin_tries_this_power_cycle=3,
        algorithms=(),
        model=1,
    ),
    messages.LastError(sw=0x6A80, ins=0x30, reason=8, message="the code has expired"),
    OpenedCode(
        kind=2,
        merchant=("m-1", "Café", "Lyon", "FR", 5462),
        issuer="institution",
        issuer_kid=1,
        order_id="o-1",
        items=(LineItem("Croissant", 2, 120), LineItem("Baguette", 1, 95)),
        total=335,
        currency=978,
        issued_at=1_700_000_000,
        expires_at=1_700_000_600,
        warnings=("lookalike",),
        digest=b"\x05" * 32,
        scheme_kid=7,
    ),
    OpenedCode(  # a static merchant-signed code: no order, no items, no total
        kind=1,
        merchant=("m-1", "Café", "Lyon", "FR", 5462),
        issuer="merchant",
        certificate_serial=12,
        issued_at=1,
        expires_at=2,
        warnings=(),
        digest=b"\x05" * 32,
        scheme_kid=7,
        certificate=b"merchant cert",
    ),
    RevocationsTaken(sequence=3, entries=2),
    KeysUpdated(epoch=2, epochs=(1, 2)),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: CborMessage) -> None:
    wire = message.to_cbor()
    assert type(message).from_cbor(wire) == message
    assert cbor2.dumps(cbor2.loads(wire), canonical=True) == wire  # deterministic


def test_a_fields_position_is_its_key() -> None:
    info = SAMPLES[0]
    doc = cbor2.loads(info.to_cbor())
    assert doc[1] == [2, 1] and doc[3] == b"\x01" * 8 and doc[9] == 7 and doc[17] == 3
    for cls in MESSAGES:
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        assert [f.key for f in cls.schema()] == list(range(1, len(names) + 1))
        assert [f.name for f in cls.schema()] == names


# --- the bytes on the wire are unchanged ----------------------------------------------------------


def legacy_info(card: Card) -> bytes:
    """GET INFO as firmware 2.x wrote it by hand before the messages were declared."""
    from safescan.carrier.eeprom import Lifecycle

    image = card.image
    assert image is not None
    doc: dict[int, Any] = {
        1: list(rom.VERSION),
        2: int(image.lifecycle),
        3: image.device_id,
        9: image.signature_counter,
        12: rom.WRONG_PINS_PER_POWER_CYCLE - card.ram.wrong_pins,
        13: list(rom.ALGORITHMS),
        15: image.model,
    }
    if image.attestation_certificate is not None:
        doc[16] = image.attestation_certificate
    if card.keys.attestation is not None:
        doc[4] = card.keys.attestation.public_key().public_bytes_raw()
    if image.lifecycle is Lifecycle.PERSONALIZED:
        doc[5] = image.carrier_serial
        doc[6] = image.certificate
        doc[7] = image.retries_left
        doc[8] = image.retry_limit
        doc[14] = image.crl_sequence
        doc[17] = image.key_epoch
    if card.keys.signing is not None:
        doc[10] = card.keys.signing.public_key().public_bytes_raw()
    if card.keys.transport is not None:
        doc[11] = card.keys.transport.public_key().public_bytes_raw()
    return cbor2.dumps(doc, canonical=True)


def legacy_code(c: CodeContents) -> bytes:
    """OPEN CODE's answer as firmware 2.x wrote it by hand."""
    m = c.merchant
    doc: dict[int, Any] = {
        1: int(c.kind),
        2: [m.id, m.name, m.city, m.country, m.mcc],
        3: c.issuer,
        10: c.issued_at,
        11: c.expires_at,
        12: list(c.warnings),
        13: c.digest,
        14: c.scheme_kid,
    }
    if c.issuer_kid is not None:
        doc[4] = c.issuer_kid
    if c.certificate is not None:
        doc[5] = c.certificate_serial
        doc[15] = c.certificate
    if c.order_id is not None:
        doc[6] = c.order_id
        doc[7] = [[i.name, i.quantity, i.unit_price] for i in c.items]
        doc[8] = c.total
    if c.currency is not None:
        doc[9] = c.currency
    return cbor2.dumps(doc, canonical=True)


def test_card_info_bytes_are_the_documented_layout(
    card: Card, institution: LocalInstitution
) -> None:
    from safescan.carrier.provision import personalize

    from .conftest import PIN

    client = connect(card)
    client.select()
    blank = client._clear(Ins.GET_INFO)
    assert blank == legacy_info(card)
    personalize(client, institution.make_bundle, PIN, 5)
    client.select()
    assert client._clear(Ins.GET_INFO) == legacy_info(card)
    client.open_session(institution.trust)
    assert client._secure(Ins.GET_INFO) == legacy_info(card)


@pytest.mark.parametrize("kind", ["dynamic", "static", "merchant_signed"])
def test_open_code_bytes_are_the_documented_layout(
    carrier: CarrierClient, institution: LocalInstitution, kind: str
) -> None:
    if kind == "static":
        code = institution.static_code(text=False)
    else:
        issuer = institution.merchant_issuer() if kind == "merchant_signed" else None
        code = institution.dynamic_code(issuer=issuer, text=False)
    assert isinstance(code, bytes)
    raw = carrier._secure(Ins.OPEN_CODE, code)
    assert raw == legacy_code(CodeContents.from_cbor(raw))
    assert OpenedCode.from_cbor(raw).to_cbor() == raw


def test_last_error_bytes_are_the_documented_layout(carrier: CarrierClient) -> None:
    with pytest.raises(CodeRefused):
        carrier.open_code(b"not a code")
    last = carrier.last_error()
    assert last is not None
    again = messages.LastError(sw=last.sw, ins=last.ins, reason=last.reason, message=last.message)
    expected = {1: last.sw, 2: last.ins, 3: last.reason, 4: last.message}
    assert again.to_cbor() == cbor2.dumps(expected, canonical=True)


# --- what is not the schema is refused ------------------------------------------------------------


def _edited(message: CborMessage, edit: Any) -> bytes:
    doc = message.to_map()
    edit(doc)
    return cbor2.dumps(doc, canonical=True)


INFO, CODE = SAMPLES[0], SAMPLES[3]
BAD: list[tuple[str, CborMessage, Any, str]] = [
    ("missing required key", INFO, lambda d: d.pop(9), "signature_counter (key 9) is missing"),
    ("missing first key", CODE, lambda d: d.pop(1), "kind (key 1) is missing"),
    ("unknown key", INFO, lambda d: d.update({18: 1}), "unknown key(s) [18]"),
    ("key zero", CODE, lambda d: d.update({0: 1}), "unknown key(s) [0]"),
    ("text for an integer", INFO, lambda d: d.update({9: "7"}), "expected integer"),
    ("bytes for text", CODE, lambda d: d.update({3: b"institution"}), "expected text"),
    ("text for bytes", INFO, lambda d: d.update({3: "device"}), "expected bytes"),
    ("integer for an array", INFO, lambda d: d.update({13: 1}), "expected array"),
    ("array item of the wrong type", INFO, lambda d: d.update({1: [2, "1"]}), "version (key 1)[1]"),
    ("short merchant", CODE, lambda d: d.update({2: ["m-1", "Café"]}), "expected 5 values"),
    ("mcc as text", CODE, lambda d: d[2].__setitem__(4, "5462"), "merchant (key 2)[4]"),
    ("item too long", CODE, lambda d: d[7][0].append(1), "items (key 7)[0]: a line item must be"),
    ("item price as text", CODE, lambda d: d[7][1].__setitem__(2, "95"), "items (key 7)[1]: item"),
    ("item name not text", CODE, lambda d: d[7][0].__setitem__(0, 7), "item name must be text"),
    ("item quantity zero", CODE, lambda d: d[7][1].__setitem__(1, 0), "item quantity must be"),
    ("map for an array", CODE, lambda d: d.update({12: {1: "x"}}), "expected array"),
]


@pytest.mark.parametrize(("what", "message", "edit", "says"), BAD, ids=[b[0] for b in BAD])
def test_a_message_off_its_schema_is_refused(
    what: str, message: CborMessage, edit: Any, says: str
) -> None:
    with pytest.raises(MalformedMessage) as info:
        type(message).from_cbor(_edited(message, edit))
    assert says in info.value.message
    assert isinstance(info.value, WrongData) and isinstance(info.value, SafescanError)
    assert info.value.code == "malformed_message"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        cbor2.dumps([1, 2, 3]),  # not a map
        cbor2.dumps({1: None}),  # null
        cbor2.dumps({1: True}),  # boolean
        cbor2.dumps({"1": 1}),  # text key
        cbor2.dumps({2: 1, 1: 1}),  # not canonical (key order)
        cbor2.dumps({1: 1}, canonical=True) + b"\x00",  # trailing byte
        cbor2.dumps({1: cbor2.CBORTag(24, b"x")}),  # a tag
    ],
)
@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.__name__)
def test_bytes_that_are_no_message_are_refused(cls: type[CborMessage], data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        cls.from_cbor(data)


def test_the_host_parsers_refuse_through_the_schema() -> None:
    """What the host makes of the messages (CarrierInfo, LastError, CodeContents) refuses a
    hostile card's answer with the same typed error, also when the schema holds but a value
    means nothing (an unknown lifecycle, a key of the wrong size)."""
    with pytest.raises(MalformedMessage):
        CarrierInfo.from_cbor(_edited(INFO, lambda d: d.update({18: 0})))
    with pytest.raises(MalformedMessage):
        CarrierInfo.from_cbor(_edited(INFO, lambda d: d.update({2: 99})))  # no such lifecycle
    with pytest.raises(MalformedMessage):
        CarrierInfo.from_cbor(_edited(INFO, lambda d: d.update({10: b"short"})))
    with pytest.raises(MalformedMessage):
        LastError.from_cbor(cbor2.dumps({1: 0x6A80, 2: 0x30, 3: 8}, canonical=True))
    with pytest.raises(MalformedMessage):
        CodeContents.from_cbor(_edited(CODE, lambda d: d.update({1: 9})))  # no such code kind


def test_building_a_message_without_a_required_field_fails() -> None:
    broken = dataclasses.replace(SAMPLES[5], sequence=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sequence"):
        broken.to_cbor()


# --- the requests (host -> card) ------------------------------------------------------------------


def test_requests_are_the_arrays_the_card_always_took() -> None:
    p = Personalize(bundle=b"sealed", pin_block=b"\x24\x68\x10\xff", retry_limit=5)
    assert p.to_cbor() == cbor2.dumps([b"sealed", b"\x24\x68\x10\xff", 5], canonical=True)
    assert Personalize.from_value(cbor2.loads(p.to_cbor())) == p
    a = Authorize(merchant_id="m-1", amount=650, currency=978)
    assert a.to_cbor() == cbor2.dumps(["m-1", 650, 978], canonical=True)
    assert Authorize.from_value(cbor2.loads(a.to_cbor())) == a


@pytest.mark.parametrize(
    "value",
    [
        {1: b"x"},
        [b"b", b"p"],
        [b"b", b"p", 5, 6],
        ["b", b"p", 5],
        [b"b", "p", 5],
        [b"b", b"p", "5"],
        [b"b", b"p", True],
        [b"b", b"p", None],
    ],
)
def test_a_personalize_request_off_its_schema_is_refused(value: Any) -> None:
    with pytest.raises(MalformedMessage):
        Personalize.from_value(value)


def test_the_card_refuses_requests_off_their_schema(
    card: Card, institution: LocalInstitution
) -> None:
    """Sent to a real card: a PERSONALIZE body of the wrong shape is BAD_DATA and leaves the
    card blank; an AUTHORIZE body of three values of the wrong types confirms nothing
    (CONFIRMATION_MISMATCH) and signs nothing."""
    from safescan.carrier.codes import Reason
    from safescan.carrier.eeprom import Lifecycle
    from safescan.carrier.errors import ConfirmationMismatch

    from .conftest import PIN

    client = connect(card)
    client.open_session()
    bundle = institution.make_bundle(client.generate_keys())
    for body in ([bundle, b"\x24", "5"], [bundle, 5], ["x", b"\x24", 5], {0: bundle}):
        with pytest.raises(WrongData) as info:
            client._secure(Ins.PERSONALIZE, cbor2.dumps(body))
        assert info.value.reason == Reason.BAD_DATA
        assert client.get_info().lifecycle is Lifecycle.BLANK
        client.open_session()  # a refusal inside the channel closes it
    client.personalize(bundle, PIN, 5)
    client.open_session(institution.trust)
    for body in (["m-1001", "335", 978], [1001, 335, 978], ["m-1001", 335, True]):
        client.verify_pin(PIN)
        client.open_code(institution.dynamic_code())
        counter = client.get_info().signature_counter
        with pytest.raises(ConfirmationMismatch):
            client._secure(Ins.AUTHORIZE_PAYMENT, cbor2.dumps(body))
        client.open_session(institution.trust)
        assert client.get_info().signature_counter == counter
    client.verify_pin(PIN)  # and the well-formed request still signs
    client.open_code(institution.dynamic_code())
    auth = client.authorize(merchant_id="m-1001", amount=335, currency=978)
    assert auth.amount == 335
