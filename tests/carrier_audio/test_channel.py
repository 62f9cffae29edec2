"""The channel model does what its parameters say, reproducibly."""

from __future__ import annotations

import numpy as np
import pytest

from safescan.carrier.audio.channel import ChannelModel, resample_drift
from safescan.carrier.audio.errors import AudioLinkError
from safescan.carrier.audio.modem import Pcm, from_pcm16, modulate_bits, to_pcm16


def _burst() -> Pcm:
    bits = np.random.default_rng(0).integers(0, 2, 2000, dtype=np.uint8)
    return to_pcm16(modulate_bits(bits))


def _plain(**kwargs: object) -> ChannelModel:
    base: dict[str, object] = {
        "snr_db": None,
        "attenuation_db": 0.0,
        "dc_offset": 0.0,
        "drift_ppm": 0.0,
        "lead_samples": (0, 0),
        "trail_samples": 0,
        "seed": 1,
    }
    base.update(kwargs)
    return ChannelModel(**base)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_snr_is_signal_power_over_noise_power(snr_db: float) -> None:
    burst = _burst()
    rx = _plain(snr_db=snr_db, attenuation_db=12.0).apply(burst)  # no clipping at 0 dB
    signal = from_pcm16(burst) * 10 ** (-12 / 20)
    noise = from_pcm16(rx) - signal
    measured = 10 * np.log10(np.mean(signal**2) / np.mean(noise**2))
    assert measured == pytest.approx(snr_db, abs=0.15)
    # white: the noise is uncorrelated from one sample to the next
    assert abs(np.corrcoef(noise[:-1], noise[1:])[0, 1]) < 0.02


def test_attenuation_and_dc_offset() -> None:
    burst = _burst()
    rx = from_pcm16(_plain(attenuation_db=20.0, dc_offset=-0.1).apply(burst))
    assert rx.mean() == pytest.approx(-0.1, abs=2e-3)
    assert np.std(rx) == pytest.approx(np.std(from_pcm16(burst)) / 10, rel=0.01)


def test_silence_is_put_around_the_burst() -> None:
    burst = _burst()
    rx = _plain(lead_samples=(300, 300), trail_samples=100).apply(burst)
    assert rx.size == burst.size + 400
    assert not rx[:300].any() and not rx[-100:].any()
    assert np.array_equal(rx[300:-100], burst)


def test_drift_stretches_time_by_the_ppm() -> None:
    ramp = np.arange(100_000, dtype=np.float64)
    fast = resample_drift(ramp, 100.0)
    assert fast.size == pytest.approx(100_000 * (1 + 1e-4), abs=2)
    # sample k of the receiver is the sender's time k / (1 + 1e-4)
    assert fast[50_000] == pytest.approx(50_000 / (1 + 1e-4), abs=1e-6)
    slow = resample_drift(ramp, -100.0)
    assert slow.size == pytest.approx(100_000 * (1 - 1e-4), abs=2)


def test_drift_shifts_tone_frequency() -> None:
    t = np.arange(441_000)
    tone = np.sin(2 * np.pi * 1000 * t / 44100)
    stretched = resample_drift(tone, 1000.0)
    # 1000 ppm fast receiver clock: the 1000 Hz tone is heard at 1000 / 1.001 Hz
    spectrum = np.abs(np.fft.rfft(stretched[:441_000] * np.hanning(441_000)))
    peak = np.fft.rfftfreq(441_000, 1 / 44100)[int(np.argmax(spectrum))]
    assert peak == pytest.approx(1000 / 1.001, abs=0.15)


def test_seeded_channel_is_reproducible() -> None:
    burst = _burst()
    a = ChannelModel(seed=7).apply(burst)
    b = ChannelModel(seed=7).apply(burst)
    c = ChannelModel(seed=8).apply(burst)
    assert np.array_equal(a, b)
    assert a.size != c.size or not np.array_equal(a, c)


def test_clipping_stays_in_int16() -> None:
    loud = _plain(dc_offset=0.9).apply(_burst())
    assert loud.dtype == np.int16 and loud.max() == 32767


@pytest.mark.parametrize(
    "kwargs",
    [{"attenuation_db": -1.0}, {"lead_samples": (10, 5)}, {"trail_samples": -1}],
)
def test_bad_channel_parameters(kwargs: dict[str, object]) -> None:
    with pytest.raises(AudioLinkError):
        ChannelModel(**kwargs)
