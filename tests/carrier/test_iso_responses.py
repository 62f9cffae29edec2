"""ISO/IEC 7816-4 answers: an error status carries no data; GET DATA "last error" says why.

Swept over every INS, several classes and P1P2, four card states, in clear and inside the
secure channel (where the inner answer obeys the same rule). The last-error object is only
readable at the level it was answered at (a reason given inside the channel never leaves it
in clear), belongs to the last command, and reading it changes nothing.
"""

from __future__ import annotations

import os

import cbor2
import pytest

from safescan.carrier import rom
from safescan.carrier.apdu import CommandApdu, Ins, Reason, ResponseApdu, StatusWord
from safescan.carrier.client import CarrierClient
from safescan.carrier.device import Card
from safescan.carrier.errors import CodeRefused, WrongPin
from safescan.carrier.testing import LocalInstitution

from .conftest import PIN
from .test_secrets import STATES, ensure_session, prepare

LAST_ERROR = divmod(rom.DO_LAST_ERROR, 256)


@pytest.mark.parametrize("state", STATES)
def test_no_error_answer_carries_data(state: str, institution: LocalInstitution) -> None:
    card, client = prepare(state, institution)
    errors = 0
    for ins in range(256):
        for payload in (b"", os.urandom(20), os.urandom(300)):
            for cla, p1, p2 in ((0x00, 4, 0), (0x80, 0, 0), (0x80, 1, 1), (0xB0, 0, 0)):
                if ins == Ins.SELECT:
                    client.select()
                resp = ResponseApdu.from_bytes(
                    card.transmit(CommandApdu(cla, ins, p1, p2, payload, ne=256).to_bytes())
                )
                if not resp.ok:
                    errors += 1
                    assert resp.data == b"", (hex(cla), hex(ins), hex(resp.sw))
            ensure_session(client, card, institution)
            session = client._session
            assert session is not None
            header = bytes((0x84, ins, 0, 0))
            raw = card.transmit(
                CommandApdu(0x84, ins, 0, 0, session.seal_command(header, payload)).to_bytes()
            )
            outer = ResponseApdu.from_bytes(raw)
            if not outer.ok:
                assert outer.data == b"", hex(ins)
                client.close_session()
                continue
            inner = ResponseApdu.from_bytes(session.open_response(header, outer.data))
            if not inner.ok:
                errors += 1
                assert inner.data == b"", (hex(ins), hex(inner.sw))
    assert errors > 1000
    # malformed APDUs and a wrong class are errors without data too
    for raw in (b"\x80", b"\x80\xca\x00", b"\x80\xca\x00\x00\x05\x01", b"\xff\xca\x00\x00"):
        resp = ResponseApdu.from_bytes(card.transmit(raw))
        assert not resp.ok and resp.data == b""


def _get_last(card: Card) -> ResponseApdu:
    p1, p2 = LAST_ERROR
    return ResponseApdu.from_bytes(
        card.transmit(CommandApdu(0x80, Ins.GET_DATA, p1, p2).to_bytes())
    )


def test_last_error_object_in_clear(card: Card, blank: CarrierClient) -> None:
    # no error yet: referenced data not found
    assert _get_last(card).sw == StatusWord.REFERENCED_DATA_NOT_FOUND
    # an unselected GET INFO: 6985, and the object says why (readable without SELECT)
    assert card.transmit(bytes.fromhex("80CA0000")) == bytes.fromhex("6985")
    resp = _get_last(card)
    assert resp.ok
    doc = cbor2.loads(resp.data)
    assert doc == {1: 0x6985, 2: Ins.GET_DATA, 3: Reason.NOT_SELECTED, 4: "select the applet"}
    # reading it does not consume or replace it
    assert _get_last(card).data == resp.data
    # malformed and unknown commands are recorded too
    card.transmit(b"\x80\x99")
    assert cbor2.loads(_get_last(card).data)[3] == Reason.BAD_LENGTH
    card.transmit(bytes.fromhex("80990000"))
    assert cbor2.loads(_get_last(card).data) == {
        1: 0x6D00,
        2: 0x99,
        3: Reason.UNKNOWN_INS,
        4: "unknown command",
    }
    # a successful command clears it
    blank.select()
    assert _get_last(card).sw == StatusWord.REFERENCED_DATA_NOT_FOUND
    # a power cycle clears it (RAM)
    card.transmit(bytes.fromhex("80990000"))
    blank.power_cycle()
    assert _get_last(card).sw == StatusWord.REFERENCED_DATA_NOT_FOUND
    # the object itself takes no data and has no other P1P2 neighbours
    p1, p2 = LAST_ERROR
    bad = CommandApdu(0x80, Ins.GET_DATA, p1, p2, b"\x00").to_bytes()
    assert card.transmit(bad) == bytes.fromhex("6700")
    resp = ResponseApdu.from_bytes(card.transmit(CommandApdu(0x80, Ins.GET_DATA, 1, 2).to_bytes()))
    assert resp.sw == StatusWord.REFERENCED_DATA_NOT_FOUND and resp.data == b""


def test_a_reason_given_inside_the_channel_stays_inside(
    carrier: CarrierClient, card: Card, institution: LocalInstitution
) -> None:
    expired = institution.dynamic_code(issued_at=institution.now - 7200, lifetime=60)
    with pytest.raises(CodeRefused) as exc:
        carrier.open_code(expired)
    assert exc.value.error_code == "code_expired" and "expired" in exc.value.message
    # inside the session: readable again (and again)
    last = carrier.last_error()
    assert last is not None and last.reason == Reason.CODE_EXPIRED and last.ins == Ins.OPEN_CODE
    assert last.sw == StatusWord.WRONG_DATA and last.reason_name == "code_expired"
    # in clear, on the same power cycle: nothing (the watcher of the link learns nothing)
    assert _get_last(card).sw == StatusWord.REFERENCED_DATA_NOT_FOUND
    assert carrier.last_error(secure=False) is None
    # a new session does not see the old session's error either
    carrier.open_session(institution.trust)
    assert carrier.last_error() is None


def test_wrong_pin_and_destroyed_need_no_last_error(
    carrier: CarrierClient, card: Card, institution: LocalInstitution
) -> None:
    """63Cx and 6983 say everything: the host asks nothing more (a destroyed card could not
    answer anyway)."""
    calls: list[bytes] = []
    real = card.transmit

    def spy(raw: bytes) -> bytes:
        calls.append(raw)
        return real(raw)

    card.transmit = spy  # type: ignore[method-assign]
    with pytest.raises(WrongPin) as exc:
        carrier.verify_pin("000000")
    assert exc.value.retries_left == 4 and len(calls) == 1
    calls.clear()
    with pytest.raises(CodeRefused):
        carrier.open_code(institution.dynamic_code(lifetime=1, issued_at=institution.now - 10))
    assert len(calls) == 2  # the command, then GET DATA "last error" inside the channel
    assert calls[1][1] == Ins.GET_DATA and calls[1][0] == 0x84
    carrier.verify_pin(PIN)
