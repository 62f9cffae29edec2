"""APDU parsing and serialisation (ISO/IEC 7816-4 cases 1-4, short and extended)."""

from __future__ import annotations

import pytest

from safescan.carrier.apdu import (
    CommandApdu,
    Reason,
    ResponseApdu,
    StatusWord,
    is_retries_status,
    retries_status,
)
from safescan.carrier.errors import (
    ApduError,
    CarrierBlocked,
    ChannelError,
    CodeRefused,
    ConfirmationMismatch,
    InsNotSupported,
    RestartRequired,
    SecureMessagingError,
    WrongPin,
    error_for_status,
)

H = bytes.fromhex("80CA0000")


@pytest.mark.parametrize(
    ("raw", "data", "ne", "extended"),
    [
        (H, b"", None, False),  # case 1
        (H + b"\x10", b"", 16, False),  # case 2S
        (H + b"\x00", b"", 256, False),  # case 2S, Le=00 -> 256
        (H + b"\x02ab", b"ab", None, False),  # case 3S
        (H + b"\x02ab\x00", b"ab", 256, False),  # case 4S
        (H + b"\x00\x01\x00", b"", 256, True),  # case 2E
        (H + b"\x00\x00\x00", b"", 65536, True),  # case 2E, Le=0000 -> 65536
        (H + b"\x00\x00\x02ab", b"ab", None, True),  # case 3E
        (H + b"\x00\x00\x02ab\x00\x00", b"ab", 65536, True),  # case 4E
        (H + b"\x00\x01\x00" + b"x" * 256, b"x" * 256, None, True),
    ],
)
def test_parse_cases_round_trip(raw: bytes, data: bytes, ne: int | None, extended: bool) -> None:
    cmd = CommandApdu.from_bytes(raw)
    assert (cmd.cla, cmd.ins, cmd.p1, cmd.p2) == (0x80, 0xCA, 0, 0)
    assert (cmd.data, cmd.ne, cmd.extended) == (data, ne, extended)
    assert cmd.to_bytes() == raw


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x80",
        b"\x80\xca\x00",
        H + b"\x02a",  # Lc says 2, one byte follows
        H + b"\x01ab\x00\x00",  # one byte too many
        H + b"\x00\x00",  # extended marker, truncated
        H + b"\x00\x00\x00\x00",  # extended Lc = 0 is not allowed
        H + b"\x00\x00\x02a",  # extended, data short
        H + b"\x00\x00\x02abc",  # extended, one byte too many for 3E, too few for 4E
    ],
)
def test_malformed_commands_are_refused(raw: bytes) -> None:
    with pytest.raises(ApduError):
        CommandApdu.from_bytes(raw)


def test_large_data_serialises_extended() -> None:
    cmd = CommandApdu(0x84, 0x30, data=b"z" * 300, ne=65536)
    assert cmd.extended
    assert CommandApdu.from_bytes(cmd.to_bytes()) == cmd


@pytest.mark.parametrize("bad", [{"cla": 256}, {"ins": -1}, {"p1": True}, {"ne": 0}, {"ne": 65537}])
def test_field_ranges(bad: dict[str, int]) -> None:
    fields = {"cla": 0x80, "ins": 0x20, **bad}
    with pytest.raises(ApduError):
        CommandApdu(**fields)  # type: ignore[arg-type]


def test_response_parse() -> None:
    resp = ResponseApdu.from_bytes(b"\x6a\x80")
    assert resp.sw == StatusWord.WRONG_DATA and not resp.ok and resp.data == b""
    assert ResponseApdu.from_bytes(b"\x90\x00").ok
    with pytest.raises(ApduError):
        ResponseApdu.from_bytes(b"\x90")


def test_retries_status() -> None:
    assert retries_status(3) == 0x63C3
    assert is_retries_status(0x63C3) and not is_retries_status(0x6983)


def test_errors_per_status_word() -> None:
    wrong = error_for_status(0x63C2, 0, "")
    assert isinstance(wrong, WrongPin) and wrong.retries_left == 2
    assert isinstance(error_for_status(0x6983, Reason.DESTROYED, "x"), CarrierBlocked)
    assert isinstance(error_for_status(0x6985, Reason.RESTART_REQUIRED, "x"), RestartRequired)
    refused = error_for_status(0x6A80, Reason.CODE_EXPIRED, "x")
    assert isinstance(refused, CodeRefused) and refused.error_code == "code_expired"
    assert isinstance(
        error_for_status(0x6A80, Reason.CONFIRMATION_MISMATCH, "x"), ConfirmationMismatch
    )
    sm = error_for_status(0x6988, Reason.CHANNEL_FAILURE, "x")
    assert isinstance(sm, SecureMessagingError) and isinstance(sm, ChannelError)
    assert isinstance(error_for_status(0x6D00, 0, ""), InsNotSupported)
