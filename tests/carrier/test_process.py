"""The carrier as its own process, over TCP (vpcd framing) and a serial pseudo-terminal."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from safescan.carrier import rom
from safescan.carrier.client import CarrierClient
from safescan.carrier.eeprom import Lifecycle
from safescan.carrier.errors import (
    CarrierBlocked,
    CarrierDisconnected,
    CarrierError,
    CarrierTimeout,
    CarrierUnavailable,
    ChannelError,
    FramingError,
    SecurityStatusNotSatisfied,
    TransportError,
)
from safescan.carrier.provision import personalize
from safescan.carrier.testing import CarrierProcess, LocalInstitution
from safescan.carrier.transport import Control, open_transport
from safescan.carrier.transport.serial import T_APDU, FrameDecoder, encode_frame
from safescan.procs import free_port, release_port

from .conftest import PIN


def pay(client: CarrierClient, institution: LocalInstitution) -> int:
    client.open_session(institution.trust)
    contents = client.open_code(institution.dynamic_code())
    client.verify_pin(PIN)
    assert contents.total is not None and contents.currency is not None
    auth = client.authorize(
        merchant_id=contents.merchant.id, amount=contents.total, currency=contents.currency
    )
    return auth.counter


def test_tcp_full_flow_and_restart(process: CarrierProcess, institution: LocalInstitution) -> None:
    with CarrierClient.connect(process.url) as client:
        assert client.atr == rom.ATR
        institution.manufacture(client)
        personalize(client, institution.make_bundle, PIN, 5)
        assert pay(client, institution) == 1
    process.stop()
    process.start()  # power cycle: the EEPROM survives
    with CarrierClient.connect(process.url) as client:
        info = client.get_info()
        assert info.lifecycle is Lifecycle.PERSONALIZED and info.signature_counter == 1
        assert pay(client, institution) == 2


def test_power_cycle_mid_session(process: CarrierProcess, institution: LocalInstitution) -> None:
    with CarrierClient.connect(process.url) as client:
        institution.manufacture(client)
        personalize(client, institution.make_bundle, PIN)
        client.open_session(institution.trust)
        client.open_code(institution.dynamic_code())
        client.verify_pin(PIN)
        header_session = client._session
    process.kill()  # pull the plug mid-session
    process.start()
    with CarrierClient.connect(process.url) as client:
        client._session = header_session
        with pytest.raises(ChannelError):
            client.verify_pin(PIN)  # the card has no session any more: 6987
        client.open_session(institution.trust)
        assert not client.pin_verified()
        with pytest.raises(SecurityStatusNotSatisfied):
            client.authorize(merchant_id="m-1001", amount=335, currency=978)


def test_vpcd_power_off_and_reset_lose_ram(
    process: CarrierProcess, institution: LocalInstitution
) -> None:
    with CarrierClient.connect(process.url) as client:
        institution.manufacture(client)
        personalize(client, institution.make_bundle, PIN)
        for cycle in (client.power_cycle, lambda: client.power_on()):
            client.open_session(institution.trust)
            client.verify_pin(PIN)
            cycle()
            client.open_session(institution.trust)
            assert not client.pin_verified()


def test_disconnect_is_power_off(process: CarrierProcess, institution: LocalInstitution) -> None:
    with CarrierClient.connect(process.url) as client:
        institution.manufacture(client)
        personalize(client, institution.make_bundle, PIN)
        client.open_session(institution.trust)
        client.verify_pin(PIN)
    with CarrierClient.connect(process.url) as client:
        client.open_session(institution.trust)
        assert not client.pin_verified()


def test_absent_carrier(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there, and no other test process will start to
    with pytest.raises(CarrierUnavailable):
        CarrierClient.connect(f"tcp://127.0.0.1:{port}", timeout=1)
    with pytest.raises(CarrierUnavailable):
        CarrierClient.connect(f"serial://{tmp_path}/no-such-tty", timeout=1)
    with pytest.raises(TransportError):
        CarrierClient.connect("http://127.0.0.1:1")
    with pytest.raises(TransportError):
        CarrierClient.connect("tcp://127.0.0.1")


def test_carrier_dies_mid_command(process: CarrierProcess) -> None:
    client = CarrierClient.connect(process.url, timeout=2)
    try:
        client.get_info()
        process.kill()
        with pytest.raises(CarrierDisconnected):
            client.get_info()
        with pytest.raises(CarrierDisconnected):
            client.get_info()
    finally:
        client.close()


def test_timeout_when_carrier_hangs() -> None:
    server = socket.socket()
    port = free_port()  # (a bare bind to port 0 could take a port another test reserved)
    server.bind(("127.0.0.1", port))
    release_port(port)  # bound: the kernel holds it now
    server.listen(1)
    accepted: list[socket.socket] = []
    t = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
    t.start()
    try:
        with pytest.raises(CarrierTimeout):
            CarrierClient.connect(f"tcp://127.0.0.1:{port}", timeout=0.3)  # never answers ATR
    finally:
        t.join()
        for conn in accepted:
            conn.close()
        server.close()


def test_corrupt_state_file_destroys_at_start(
    tmp_path: Path, institution: LocalInstitution
) -> None:
    state = tmp_path / "c.state"
    with CarrierProcess(state) as proc, CarrierClient.connect(proc.url) as client:
        institution.manufacture(client)
        personalize(client, institution.make_bundle, PIN)
    data = bytearray(state.read_bytes())
    data[-5] ^= 0x10
    state.write_bytes(bytes(data))
    with (
        CarrierProcess(state) as proc,
        CarrierClient.connect(proc.url) as client,
        pytest.raises(CarrierBlocked),
    ):
        client.get_info()


def test_serial_pty(tmp_path: Path, institution: LocalInstitution) -> None:
    with CarrierProcess(tmp_path / "s.state", serial=True) as proc:
        assert proc.url.startswith("serial:///dev/")
        with CarrierClient.connect(proc.url, timeout=3) as client:
            assert client.atr == rom.ATR
            institution.manufacture(client)
            personalize(client, institution.make_bundle, PIN)
            assert pay(client, institution) == 1
            client.power_cycle()
            client.open_session(institution.trust)
            assert not client.pin_verified()


def test_serial_corrupt_frame_is_nakked(tmp_path: Path) -> None:
    with CarrierProcess(tmp_path / "s.state", serial=True) as proc:
        import serial

        port = serial.Serial(proc.url.removeprefix("serial://"), timeout=2)
        try:
            frame = bytearray(encode_frame(T_APDU, bytes.fromhex("80CA0000")))
            frame[6] ^= 0xFF  # corrupt a payload byte: CRC fails
            port.write(bytes(frame))
            decoder = FrameDecoder()
            got: list[tuple[int, bytes] | None] = []
            while not any(item is not None for item in got):
                chunk = port.read(1)
                assert chunk, "no NAK"
                got += decoder.feed(chunk)
            assert next(i for i in got if i is not None)[0] == 0xEE
        finally:
            port.close()
        # the link resynchronises: a clean command works right after
        transport = open_transport(proc.url, timeout=2)
        try:
            transport.control(Control.POWER_ON)
            assert transport.transmit(bytes.fromhex("80CA0000"))[-2:] == b"\x69\x85"
        finally:
            transport.close()


def test_serial_frame_decoder_resyncs() -> None:
    good = encode_frame(T_APDU, b"\x80\xca\x00\x00")
    decoder = FrameDecoder()
    items = decoder.feed(b"\x00\x13\xa5" + good[:5])
    items += decoder.feed(good[5:] + good)
    frames = [i for i in items if i is not None]
    assert frames == [(T_APDU, b"\x80\xca\x00\x00")] * 2
    bad = bytearray(good)
    bad[-1] ^= 1
    assert decoder.feed(bytes(bad)).count(None) >= 1
    assert not [i for i in decoder.feed(b"") if i is not None]


def test_framing_error_type() -> None:
    assert issubclass(FramingError, TransportError)


def test_factory_trust_anchor_refuses_a_rogue_institutions_bundle(tmp_path: Path) -> None:
    """A carrier manufactured with the institution's root key refuses a bundle from anyone
    else (a relay that knows its public transport key), and accepts the genuine one."""
    genuine, rogue = LocalInstitution.create(), LocalInstitution.create()
    anchor = f"{genuine.kid}:{genuine.key.public_key.hex()}"
    state = tmp_path / "anchored.state"
    proc = CarrierProcess(
        state, where=["--listen", "tcp://127.0.0.1:0", "--institution-key", anchor]
    )
    try:
        proc.start()
        with CarrierClient.connect(proc.url) as client:
            genuine.manufacture(client)  # one factory; the rogue trusts it too
            rogue.factory = genuine.factory
            with pytest.raises(CarrierError, match=r"(?i)bundle|institution key"):
                personalize(client, rogue.make_bundle, PIN)
            assert client.get_info().lifecycle is Lifecycle.BLANK
        proc.stop()
        proc.start()  # restarting with the anchor option changes nothing (already fused)
        with CarrierClient.connect(proc.url) as client:
            personalize(client, genuine.make_bundle, PIN)
            assert client.get_info().lifecycle is Lifecycle.PERSONALIZED
    finally:
        proc.stop()
