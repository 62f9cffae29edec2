"""Fuzz the key carrier's wire formats and its command dispatcher, in process.

    .venv/bin/python fuzz/fuzz_apdu.py -atheris_runs=50000
    .venv/bin/python fuzz/fuzz_apdu.py -max_total_time=300 [CORPUS_DIR ...]

One personalised card (``Card`` on ``MemoryStorage``, PIN set, certificate and scheme key
loaded) is made once and restored from its snapshot whenever an input has changed it (PIN
tries used, destroyed, ...). Input layout: ``data[0] % 9`` picks the target:

 0  CommandApdu.from_bytes (+ exact re-encoding)      5  serial FrameDecoder.feed, split in two
 1  ResponseApdu.from_bytes                          6  EEPROM image: decode / Image.from_cbor
 2  card.transmit(raw), card as it is                 7  secure-channel frame with fuzzed bytes
 3  SELECT, then card.transmit(raw)                   8  host handshake / open_response on a
 4  a command sealed inside a live secure channel        fuzzed card answer (a malicious card)
    (INS, P1, body fuzzed; optionally after a
    valid OPEN CODE so AUTHORIZE has a pending code)

The card's contract is stricter than "typed errors only": ``Card.transmit`` never raises, and
always answers a well-formed response with a known status word that contains no key material.
Any exception from it is a crash, whatever its type. The parsers may raise only
:class:`SafescanError` subclasses.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz._common import count, main
from safescan.carrier import rom
from safescan.carrier.apdu import CommandApdu, Ins, ResponseApdu, StatusWord
from safescan.carrier.channel import HostHandshake, KeyKind, Session
from safescan.carrier.client import CarrierClient
from safescan.carrier.device import Card
from safescan.carrier.eeprom import Eeprom, Image, Lifecycle, MemoryStorage
from safescan.carrier.provision import personalize
from safescan.carrier.testing import LocalInstitution, leaks, secrets_of
from safescan.carrier.transport.loopback import LoopbackTransport
from safescan.carrier.transport.serial import FrameDecoder, encode_frame
from safescan.code.errors import SafescanError

# Image.from_cbor lets cbor2 run its built-in tag decoders (tag 35 compiles a regular
# expression) before refusing the value; ``re`` warns on patterns like "[a--b]". Reported in
# docs/fuzzing.md; silenced here so the fuzzer's log stays readable.
warnings.filterwarnings("ignore", message=r"Possible (nested set|set \w+)", category=FutureWarning)

PIN = "246810"
OUTCOMES: Counter[str] = Counter()
TARGETS = 9
KNOWN_SW = {int(s) for s in StatusWord} | {0x63C0 | i for i in range(16)}
SELECT = bytes([0, Ins.SELECT, 4, 0x0C, len(rom.AID)]) + rom.AID
TOKENS = (
    SELECT,
    rom.AID,
    bytes([0x80, Ins.GET_INFO, 0, 0]),
    bytes([0x84]),
    bytes([0x80]),
    bytes([0x00, 0x00, 0x00]),
    b"\x00\x01\x00",
    b"\xa5",
    b"SSEE\x01",
    *(bytes([int(i)]) for i in Ins),
)


class _Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Fixture:
    """The personalised card (snapshotted), a host session into it and a sealed code."""

    def __init__(self) -> None:
        self.institution = LocalInstitution.create(now=1_790_000_000)
        self.clock = _Clock(self.institution.now)
        storage = MemoryStorage()
        card = Card(storage, clock=self.clock)
        card.power_on()
        client = CarrierClient(LoopbackTransport(card))
        client.power_on()
        self.institution.manufacture(client)
        personalize(client, self.institution.make_bundle, PIN, 16)
        assert storage.image is not None and storage.device_key is not None
        self.snapshot = (storage.image, storage.device_key)
        code = self.institution.dynamic_code(text=False)
        assert isinstance(code, bytes)
        self.code = code
        self.image_eeprom = Eeprom(MemoryStorage(storage.image, storage.device_key))
        self.image_eeprom.load()  # sets the device key, so decode() can run on any bytes
        self.rebuild()

    def rebuild(self) -> None:
        """A fresh card from the snapshot, and the secrets it must never reveal."""
        image, key = self.snapshot
        self.card = Card(MemoryStorage(image, key), clock=self.clock)
        self.card.power_on()
        self.secrets = secrets_of(self.card)
        self.session: Session | None = None
        self.card_session: object = None

    def healthy(self) -> None:
        """Restore the snapshot if the last input changed the card's persistent state."""
        image = self.card.image
        if (
            image is None
            or image.lifecycle is not Lifecycle.PERSONALIZED
            or image.retries_left != image.retry_limit
            or self.card.ram.wrong_pins
        ):
            self.rebuild()

    def open_session(self) -> Session:
        """A live secure channel (opened anew if the last input closed it)."""
        if (
            self.session is None
            or self.session.closed
            or self.card.ram.session is None
            or self.card.ram.session is not self.card_session  # reopened by a fuzzed command
        ):
            self.transmit(SELECT)
            host = HostHandshake.start()
            answer = ResponseApdu.from_bytes(
                self.transmit(
                    CommandApdu(0x80, Ins.OPEN_SECURE_CHANNEL, data=host.public).to_bytes()
                )
            )
            image = self.card.image
            assert answer.ok and image is not None and image.certificate is not None
            assert self.card.keys.signing is not None
            key = self.card.keys.signing.public_key().public_bytes_raw()
            self.session = host.finish(answer.data, key, KeyKind.CERTIFIED, image.certificate)
            self.card_session = self.card.ram.session
        return self.session

    def transmit(self, raw: bytes) -> bytes:
        """``card.transmit``, checked: a well-formed answer, a known status, no secrets."""
        out = self.card.transmit(raw)
        assert isinstance(out, bytes) and len(out) >= 2, out
        sw = int.from_bytes(out[-2:], "big")
        assert sw in KNOWN_SW, hex(sw)
        assert not leaks(out, self.secrets), "key material in a response"
        OUTCOMES[f"card SW {sw:04X}"] += 1
        return out

    def secure(self, ins: int, p1: int, body: bytes) -> ResponseApdu | None:
        """One command through the channel; its inner response, or None if the card refused
        the frame itself (which it may only do with 6983 / 6987 / 6988)."""
        session = self.open_session()
        header = bytes((0x84, ins, p1, 0))
        frame = session.seal_command(header, body)
        out = ResponseApdu.from_bytes(
            self.transmit(CommandApdu(0x84, ins, p1, 0, frame).to_bytes())
        )
        if out.sw != StatusWord.SUCCESS:
            assert out.sw in (0x6983, 0x6988, 0x6987), hex(out.sw)
            self.session = None
            return None
        inner = ResponseApdu.from_bytes(session.open_response(header, out.data))
        assert inner.sw in KNOWN_SW, hex(inner.sw)
        assert not leaks(inner.to_bytes(), self.secrets), "key material in a response"
        OUTCOMES[f"in channel SW {inner.sw:04X}"] += 1
        return inner


_FIXTURE: Fixture | None = None


def fixture() -> Fixture:
    """The shared card fixture (made on first use: personalising takes a few milliseconds)."""
    global _FIXTURE
    if _FIXTURE is None:
        _FIXTURE = Fixture()
    return _FIXTURE


def _target(target: int, payload: bytes) -> None:
    if target == 0:
        cmd = CommandApdu.from_bytes(payload)
        assert cmd.to_bytes() == payload, "an accepted APDU that does not re-encode exactly"
        return
    if target == 1:
        resp = ResponseApdu.from_bytes(payload)
        assert resp.to_bytes() == payload
        return
    if target == 5:
        cut = payload[0] if payload else 0
        decoder = FrameDecoder()
        for chunk in (payload[1 : 1 + cut], payload[1 + cut :]):
            for item in decoder.feed(chunk):
                assert item is None or (isinstance(item[0], int) and isinstance(item[1], bytes))
        return
    fx = fixture()
    if target == 6:
        if payload[:1] == b"\x00":
            fx.image_eeprom.decode(payload[1:])
        else:
            Image.from_cbor(payload[1:])
        return
    fx.healthy()
    if target == 8:
        _malicious_card(fx, payload)
        return
    if target == 2:
        fx.transmit(payload)
    elif target == 3:
        fx.transmit(SELECT)
        fx.transmit(payload)
    elif target == 4:
        if len(payload) < 3:
            return
        ins, p1, flags, body = payload[0], payload[1], payload[2], payload[3:]
        if flags & 1 and ins == Ins.AUTHORIZE_PAYMENT:
            opened = fx.secure(Ins.OPEN_CODE, 0, fx.code)  # a pending code to confirm
            assert opened is not None and opened.ok, opened
        fx.secure(ins, p1 if p1 % 3 else 0, body)
    else:  # 7: a forged secure-messaging frame must be refused, and end the session
        if len(payload) < 2:
            return
        fx.open_session()
        ins, p1 = payload[0], payload[1]
        answer = ResponseApdu.from_bytes(
            fx.transmit(CommandApdu(0x84, ins, p1, 0, payload[2:]).to_bytes())
        )
        assert answer.sw in (0x6983, 0x6987, 0x6988, 0x6700), hex(answer.sw)
        fx.session = None


def _malicious_card(fx: Fixture, payload: bytes) -> None:
    """What a host does with a card's answers must survive any bytes a card could send."""
    image = fx.card.image
    assert image is not None and image.certificate is not None and fx.card.keys.signing
    key = fx.card.keys.signing.public_key().public_bytes_raw()
    if payload[:1] == b"\x00":
        HostHandshake.start().finish(payload[1:], key, KeyKind.CERTIFIED, image.certificate)
    else:
        session = fx.open_session()
        fx.session = None  # the host side now holds a fuzzed sequence state
        session.open_response(bytes((0x84, Ins.GET_INFO, 0, 0)), payload[1:])


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the atheris / libFuzzer name)
    """One fuzz input; raises only on a crash (an untyped exception or a broken property)."""
    if not data:
        return
    target = data[0] % TARGETS
    try:
        _target(target, data[1:])
    except SafescanError as exc:
        if target in (2, 3, 4, 7):  # through card.transmit: it must never raise
            raise AssertionError(f"the card raised {type(exc).__name__}: {exc}") from exc
        count(OUTCOMES, exc)
    else:
        count(OUTCOMES, None)


def seeds() -> list[bytes]:
    """Valid APDUs of every instruction, channel commands, a serial frame, the card's own
    EEPROM image and a real handshake answer."""
    fx = fixture()
    fx.rebuild()
    get_info = CommandApdu(0x80, Ins.GET_INFO, ne=65536).to_bytes()
    commands = [
        SELECT,
        get_info,
        CommandApdu(0x80, Ins.GET_INFO).to_bytes(),
        CommandApdu(0x80, Ins.OPEN_SECURE_CHANNEL, data=bytes(32)).to_bytes(),
        CommandApdu(0x80, Ins.VERIFY_PIN, data=PIN.encode() + b"\xff" * 10).to_bytes(),
        CommandApdu(0x80, Ins.GENERATE_KEYS).to_bytes(),
        CommandApdu(0x80, Ins.PERSONALIZE, data=bytes(100), ne=256).to_bytes(),
        CommandApdu(0x80, Ins.OPEN_CODE, data=fx.code, extended=True).to_bytes(),
        CommandApdu(0x80, Ins.GET_DATA, 1, 1).to_bytes(),  # last error
        CommandApdu(0x00, 0xB0, 0, 0, ne=256).to_bytes(),
    ]
    pin_block = PIN.encode() + b"\xff" * (16 - len(PIN))
    out = [bytes([0]) + c for c in commands]
    out += [bytes([2]) + c for c in commands] + [bytes([3]) + c for c in commands]
    out += [
        bytes([1]) + b"\x90\x00",
        bytes([1, 0x01]) + b"the code was altered" + b"\x6a\x80",
        bytes([4, Ins.OPEN_CODE, 0, 0]) + fx.code,
        bytes([4, Ins.VERIFY_PIN, 0, 0]) + pin_block,
        bytes([4, Ins.AUTHORIZE_PAYMENT, 0, 1]) + b"\x83\x40\x00\x05",
        bytes([4, Ins.CHANGE_PIN, 0, 0]) + pin_block + b"135791" + b"\xff" * 10,
        bytes([4, Ins.GET_INFO, 0, 0]),
        bytes([5, 3]) + encode_frame(1, get_info) + encode_frame(2, b"\x90\x00"),
        bytes([6, 0]) + fx.snapshot[0],
        bytes([6, 1]) + fx.image_eeprom.load().to_cbor(),
        bytes([7, Ins.GET_INFO, 0]) + bytes(40),
    ]
    host = HostHandshake.start()
    fx.transmit(SELECT)
    answer = fx.transmit(CommandApdu(0x80, Ins.OPEN_SECURE_CHANNEL, data=host.public).to_bytes())
    out.append(bytes([8, 0]) + answer[:-2])
    session = fx.open_session()
    header = bytes((0x84, Ins.GET_INFO, 0, 0))
    frame = session.seal_command(header, b"")
    response = fx.transmit(CommandApdu(0x84, Ins.GET_INFO, 0, 0, frame).to_bytes())
    out.append(bytes([8, 1]) + response[:-2])
    fx.rebuild()
    return out


if __name__ == "__main__":
    main(TestOneInput, seeds(), TOKENS, OUTCOMES)
