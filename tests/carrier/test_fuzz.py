"""Property-based fuzzing (hypothesis), in process: 21,000 cases across this file on every run,
``SAFESCAN_FUZZ_SCALE`` times that for a longer campaign (tests/budget.py; =5 runs 105,000).

Parser, dispatcher (in clear and inside a live secure channel), serial framing and the EEPROM
image decoder must never raise anything but their typed errors, and the card must always
answer a well-formed response with a known status word, never containing key material.
"""

from __future__ import annotations

import contextlib
from typing import ClassVar

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from safescan.carrier import rom
from safescan.carrier.apdu import CommandApdu, Ins, ResponseApdu, StatusWord
from safescan.carrier.channel import HostHandshake, KeyKind, Session
from safescan.carrier.device import Card
from safescan.carrier.eeprom import Eeprom, Image, Lifecycle, MemoryStorage
from safescan.carrier.errors import ApduError, ImageError
from safescan.carrier.provision import personalize
from safescan.carrier.testing import LocalInstitution, leaks, secrets_of
from safescan.carrier.transport.serial import FrameDecoder
from tests.budget import examples

from .conftest import PIN, Clock, connect

FAST = settings(
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)
KNOWN_SW = {int(s) for s in StatusWord} | {0x63C0 | i for i in range(16)}
INS_VALUES = [int(i) for i in Ins]


class Fixture:
    """One personalised card (snapshotted) and a host session into it."""

    shared: ClassVar[Fixture | None] = None

    def __init__(self) -> None:
        self.institution = LocalInstitution.create()
        self.clock = Clock(self.institution.now)
        storage = MemoryStorage()
        card = Card(storage, clock=self.clock)
        card.power_on()
        client = connect(card)
        self.institution.manufacture(client)
        personalize(client, self.institution.make_bundle, PIN, 16)
        self.snapshot = (storage.image, storage.device_key)
        self.code = self.institution.dynamic_code(text=False)
        self.rebuild()

    @classmethod
    def get(cls) -> Fixture:
        if cls.shared is None:
            cls.shared = cls()
        return cls.shared

    def rebuild(self) -> None:
        image, key = self.snapshot
        self.card = Card(MemoryStorage(image, key), clock=self.clock)
        self.card.power_on()
        self.secrets = secrets_of(self.card)
        self.session: Session | None = None

    def healthy(self) -> None:
        image = self.card.image
        if (
            image is None
            or image.lifecycle is not Lifecycle.PERSONALIZED
            or image.retries_left != image.retry_limit
            or self.card.ram.wrong_pins
        ):
            self.rebuild()

    def open_session(self) -> Session:
        if self.session is None or self.session.closed or self.card.ram.session is None:
            self.card.transmit(bytes([0, 0xA4, 4, 0x0C, len(rom.AID)]) + rom.AID)
            host = HostHandshake.start()
            answer = ResponseApdu.from_bytes(
                self.card.transmit(
                    CommandApdu(0x80, Ins.OPEN_SECURE_CHANNEL, data=host.public).to_bytes()
                )
            )
            image = self.card.image
            assert answer.ok and image is not None and image.certificate is not None
            assert self.card.keys.signing is not None
            key = self.card.keys.signing.public_key().public_bytes_raw()
            self.session = host.finish(answer.data, key, KeyKind.CERTIFIED, image.certificate)
        return self.session


@settings(FAST, max_examples=examples(8_000))
@given(st.binary(max_size=300))
def test_parser_total_and_exact(raw: bytes) -> None:
    try:
        cmd = CommandApdu.from_bytes(raw)
    except ApduError:
        return
    assert cmd.to_bytes() == raw


@settings(FAST, max_examples=examples(2_000))
@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=600),
    st.one_of(st.none(), st.integers(1, 65536)),
    st.booleans(),
)
def test_serialise_parse_round_trip(
    cla: int, ins: int, p1: int, p2: int, data: bytes, ne: int | None, extended: bool
) -> None:
    cmd = CommandApdu(cla, ins, p1, p2, data, ne, extended)
    again = CommandApdu.from_bytes(cmd.to_bytes())
    assert (again.cla, again.ins, again.p1, again.p2, again.data, again.ne) == (
        cla,
        ins,
        p1,
        p2,
        data,
        ne,
    )


apdu_like = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda cla, ins, p1, p2, data, ne: CommandApdu(cla, ins, p1, p2, data, ne).to_bytes(),
        st.sampled_from([0x00, 0x80, 0x84, 0x0C, 0xFF]) | st.integers(0, 255),
        st.sampled_from(INS_VALUES) | st.integers(0, 255),
        st.sampled_from([0, 4]) | st.integers(0, 255),
        st.sampled_from([0, 0x0C]) | st.integers(0, 255),
        st.binary(max_size=300) | st.just(rom.AID),
        st.none() | st.integers(1, 65536),
    ),
)


@settings(FAST, max_examples=examples(5_000))
@given(st.booleans(), apdu_like)
def test_dispatcher_in_clear(select_first: bool, raw: bytes) -> None:
    fx = Fixture.get()
    fx.healthy()
    card = fx.card
    if select_first:
        card.transmit(bytes([0, 0xA4, 4, 0x0C, len(rom.AID)]) + rom.AID)
    out = card.transmit(raw)
    assert len(out) >= 2
    sw = int.from_bytes(out[-2:], "big")
    assert sw in KNOWN_SW, hex(sw)
    assert not leaks(out, fx.secrets)
    if card.lifecycle is Lifecycle.DESTROYED:
        assert raw[:2] in (b"\x80\x7a", b"\x84\x7a") or sw == 0x6983


inner_body = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"", b"1234" + b"\xff" * 12, b"\x83\x40\x00\x05"]),
    st.builds(
        lambda s: s.encode() + b"\xff" * (16 - len(s)),
        st.from_regex(r"[0-9]{4,16}", fullmatch=True),
    ),
)


@settings(FAST, max_examples=examples(2_000))
@given(
    st.sampled_from(INS_VALUES) | st.integers(0, 255),
    st.integers(0, 255),
    inner_body,
    st.booleans(),
)
def test_dispatcher_inside_channel(ins: int, p1: int, body: bytes, with_code: bool) -> None:
    fx = Fixture.get()
    fx.healthy()
    session = fx.open_session()
    if with_code and ins == Ins.AUTHORIZE_PAYMENT:
        opened = secure(fx, session, Ins.OPEN_CODE, 0, fx.code)  # a pending code to confirm
        assert opened is not None and opened.ok
    inner = secure(fx, session, ins, p1 if p1 % 3 else 0, body)
    if inner is not None:
        assert inner.sw in KNOWN_SW, hex(inner.sw)
        assert not leaks(inner.to_bytes(), fx.secrets)


def secure(fx: Fixture, session: Session, ins: int, p1: int, body: bytes) -> ResponseApdu | None:
    """Send one command through the channel; the inner response (None if the card refused
    the frame itself, which it may only do with 6983/6987/6988)."""
    header = bytes((0x84, ins, p1, 0))
    frame = session.seal_command(header, body)
    out = ResponseApdu.from_bytes(fx.card.transmit(CommandApdu(0x84, ins, p1, 0, frame).to_bytes()))
    assert not leaks(out.to_bytes(), fx.secrets)
    if out.sw != StatusWord.SUCCESS:
        assert out.sw in (0x6983, 0x6988, 0x6987), hex(out.sw)
        fx.session = None
        return None
    return ResponseApdu.from_bytes(session.open_response(header, out.data))


@settings(FAST, max_examples=examples(2_000))
@given(st.binary(max_size=200), st.integers(0, 200))
def test_serial_decoder_never_raises(stream: bytes, cut: int) -> None:
    decoder = FrameDecoder()
    for chunk in (stream[:cut], stream[cut:]):
        for item in decoder.feed(chunk):
            assert item is None or (isinstance(item[0], int) and isinstance(item[1], bytes))


IMAGE_EEPROM = Eeprom(MemoryStorage(b"x", bytes(32)))
with contextlib.suppress(ImageError):  # a 1-byte image is refused; the device key is now set
    IMAGE_EEPROM.load()


@settings(FAST, max_examples=examples(2_000))
@given(st.binary(max_size=400), st.booleans())
def test_image_decoder_only_raises_image_error(data: bytes, as_file: bool) -> None:
    eeprom = IMAGE_EEPROM
    try:
        if as_file:
            eeprom.decode(b"SSEE\x01" + data)
        else:
            Image.from_cbor(data)
    except ImageError:
        pass
