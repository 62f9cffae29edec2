"""A whole payment over the audio port: a carrier process, FSK tones through a channel model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from safescan.carrier import rom
from safescan.carrier.audio import ChannelPcmPort
from safescan.carrier.client import CarrierClient
from safescan.carrier.eeprom import Lifecycle
from safescan.carrier.errors import (
    CarrierDisconnected,
    CarrierUnavailable,
    ChannelError,
    SecurityStatusNotSatisfied,
    TransportError,
)
from safescan.carrier.provision import personalize
from safescan.carrier.testing import CarrierProcess, LocalInstitution
from safescan.carrier.transport.audio import AudioTransport, air_time, parse_audio_url
from safescan.procs import free_port

PIN = "246810"
# both directions impaired: 20 dB SNR, 6 dB attenuation, +/-100 ppm clock drift, DC offset
HOST_CHANNEL = "snr=20&drift_ppm=100&dc=0.05&seed=1"
CARD_CHANNEL = "snr=20&drift_ppm=-100&dc=-0.05&seed=2"


@pytest.fixture
def audio_card(tmp_path: Path) -> Iterator[CarrierProcess]:
    """``safescan.carrier.server --audio tcp://127.0.0.1:0?...`` (the card's headset jack)."""
    proc = CarrierProcess(
        tmp_path / "carrier.state", where=["--audio", f"tcp://127.0.0.1:0?{CARD_CHANNEL}"]
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_whole_payment_over_audio_at_20_db(audio_card: CarrierProcess) -> None:
    assert audio_card.url.startswith("audio://127.0.0.1:")
    institution = LocalInstitution.create()
    with CarrierClient.connect(f"{audio_card.url}?{HOST_CHANNEL}", timeout=10) as client:
        transport = client.transport
        assert isinstance(transport, AudioTransport)
        assert isinstance(transport.link.port, ChannelPcmPort)
        assert transport.link.port.channel.snr_db == 20
        assert client.atr == rom.ATR
        institution.manufacture(client)
        personalize(client, institution.make_bundle, PIN, 5)
        info = client.open_session(institution.trust)  # secure channel over tones
        assert info.lifecycle is Lifecycle.PERSONALIZED and info.certificate is not None
        contents = client.open_code(institution.dynamic_code(order_id="audio-1"))
        assert contents.merchant.id == "m-1001" and contents.total == 335
        client.verify_pin(PIN)
        assert contents.total is not None and contents.currency is not None
        auth = client.authorize(
            merchant_id=contents.merchant.id, amount=contents.total, currency=contents.currency
        )
        stats = transport.link.stats
    auth.verify(info.certificate.public_key)
    assert (auth.order_id, auth.amount, auth.currency, auth.counter) == ("audio-1", 335, 978, 1)
    assert auth.code_digest == contents.digest
    # it really went through the modem: many frames, many seconds of audio
    assert stats.frames_received > 20 and air_time(stats) > 10


def test_power_cycle_over_audio_loses_the_session(audio_card: CarrierProcess) -> None:
    institution = LocalInstitution.create()
    with CarrierClient.connect(audio_card.url, timeout=10) as client:  # clean line
        institution.manufacture(client)
        personalize(client, institution.make_bundle, PIN, 5)
        client.open_session(institution.trust)
        client.verify_pin(PIN)
        old_session = client._session
        assert client.power_cycle() == rom.ATR  # control bytes 00, 01, 04 over the link
        client._session = old_session
        with pytest.raises(ChannelError):
            client.verify_pin(PIN)  # the card's RAM is gone (6987)
        client.open_session(institution.trust)
        assert not client.pin_verified()
        with pytest.raises(SecurityStatusNotSatisfied):
            client.authorize(merchant_id="m-1001", amount=335, currency=978)
    # hanging up is a power-off too; the card takes the next host
    with CarrierClient.connect(audio_card.url, timeout=10) as client:
        client.open_session(institution.trust)
        assert not client.pin_verified()


def test_carrier_gone_and_absent(audio_card: CarrierProcess) -> None:
    client = CarrierClient.connect(audio_card.url, timeout=3)
    try:
        client.get_info()
        audio_card.kill()
        with pytest.raises(CarrierDisconnected):
            client.get_info()
    finally:
        client.close()
    port = free_port()  # nothing listens there, and no other test process will start to
    with pytest.raises(CarrierUnavailable):
        CarrierClient.connect(f"audio://127.0.0.1:{port}", timeout=1)


def test_audio_url_parameters() -> None:
    host, port, channel = parse_audio_url("audio://127.0.0.1:5000")
    assert (host, port, channel) == ("127.0.0.1", 5000, None)
    _, _, channel = parse_audio_url("audio://127.0.0.1:5000?snr=20&drift_ppm=100&dc=0.05&seed=1")
    assert channel is not None
    assert (channel.snr_db, channel.drift_ppm, channel.dc_offset, channel.seed) == (
        20.0,
        100.0,
        0.05,
        1,
    )
    assert channel.attenuation_db == 6.0  # unnamed parameters keep the model's defaults
    _, _, channel = parse_audio_url("audio://h:1?snr=none")
    assert channel is not None and channel.snr_db is None
    _, _, channel = parse_audio_url("tcp://127.0.0.1:1?channel=1", scheme="tcp")
    assert channel is not None and channel.snr_db == 20.0
    assert parse_audio_url("audio://h:1?channel=0")[2] is None
    for bad in (
        "audio://h:1?volume=3",
        "audio://h:1?snr=loud",
        "audio://h:1?snr=nan",
        "audio://h:1?atten=-3",
        "audio://h:1?seed=1.5",
        "audio://h",
        "tcp://h:1",
        "audio://h:1/path",
    ):
        with pytest.raises(TransportError):
            parse_audio_url(bad)
