"""CPFSK modulator and non-coherent demodulator: round trips, impairments, clock recovery."""

from __future__ import annotations

import numpy as np
import pytest

from safescan.carrier.audio.channel import ChannelModel
from safescan.carrier.audio.errors import AudioLinkError, FrameCrcError
from safescan.carrier.audio.framing import Frame, FrameKind, bytes_to_bits, frame_bits
from safescan.carrier.audio.modem import (
    Demodulator,
    ModemConfig,
    Modulator,
    demodulate,
    from_pcm16,
    modulate,
    modulate_bits,
    to_pcm16,
)

from .helpers import random_frames


def test_defaults_are_the_audio_key_tones() -> None:
    cfg = ModemConfig()
    assert (cfg.space_hz, cfg.mark_hz) == (44100 / 32, 44100 / 16)
    assert cfg.baud == pytest.approx(1378.125)
    # whole cycles per bit: one for a 0, two for a 1 (orthogonal over a bit)
    assert cfg.space_hz * cfg.samples_per_bit / cfg.sample_rate == 1.0
    assert cfg.mark_hz * cfg.samples_per_bit / cfg.sample_rate == 2.0


def test_burst_length_and_level() -> None:
    frame = Frame(FrameKind.DATA, 1, bytes(range(100)))
    pcm = modulate(frame)
    assert pcm.dtype == np.int16
    assert pcm.size == frame_bits(frame).size * 32 == Modulator().burst_samples(100)
    assert 0.45 < np.abs(from_pcm16(pcm)).max() <= 0.5 + 1e-4


def test_clean_round_trip() -> None:
    frame = Frame(FrameKind.DATA, 42, b"\x00\xa4\x04\x00" + bytes(200) + b"\xff" * 50, more=True)
    assert demodulate(modulate(frame)) == [frame]


def test_several_frames_in_one_recording() -> None:
    frames = [*random_frames(3, seed=3, low=0, high=40), Frame(FrameKind.ACK, 9)]
    gap = np.zeros(300, dtype=np.int16)
    pcm = np.concatenate([part for f in frames for part in (gap, modulate(f))])
    result = Demodulator().scan(pcm)
    assert result.frames == frames
    assert result.rejected == []
    assert not result.pending


def test_tone_frequencies_in_the_burst() -> None:
    """A run of 0s is the low tone and a run of 1s the high tone (checked by spectrum peak)."""
    for bit, tone in ((0, 44100 / 32), (1, 44100 / 16)):
        x = modulate_bits(np.full(256, bit, dtype=np.uint8))[1024:-1024]
        spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
        peak = np.fft.rfftfreq(x.size, 1 / 44100)[int(np.argmax(spectrum))]
        assert abs(peak - tone) < 10


@pytest.mark.parametrize(
    "config",
    [ModemConfig(), ModemConfig(space_hz=1200.0, mark_hz=2200.0)],
    ids=["audio-key-tones", "bell202-tones-at-32-samples"],
)
def test_continuous_phase(config: ModemConfig) -> None:
    """No sample step exceeds the slope of the higher tone: phase never jumps at bit edges."""
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2, 400, dtype=np.uint8)
    x = modulate_bits(bits, config)
    bound = config.amplitude * 2 * np.pi * max(config.mark_hz, config.space_hz) / 44100
    assert np.abs(np.diff(x)).max() <= bound * (1 + 1e-9)
    # the same check does catch a phase jump: restart each bit's tone at phase 0
    spb = config.samples_per_bit
    n = np.arange(spb)
    naive = np.concatenate(
        [
            config.amplitude
            * np.sin(2 * np.pi * (config.mark_hz if b else config.space_hz) * n / 44100)
            for b in bits
        ]
    )
    if config.space_hz * spb % 44100:  # tones without whole cycles per bit
        assert np.abs(np.diff(naive)).max() > bound * 1.5


def test_through_channel_at_20_db_with_drift_and_dc() -> None:
    """100 random frames of 64-300 bytes, 20 dB SNR, +/-100 ppm, DC offset: all decode."""
    modulator, demodulator = Modulator(), Demodulator()
    for drift, seed in ((100.0, 11), (-100.0, 12)):
        channel = ChannelModel(snr_db=20, drift_ppm=drift, dc_offset=0.08, seed=seed)
        for frame in random_frames(50, seed=seed):
            rx = channel.apply(modulator.modulate(frame))
            assert abs(float(from_pcm16(rx).mean())) > 0.05  # the DC really is there
            result = demodulator.scan(rx)
            assert result.frames == [frame]


def test_agc_handles_weak_and_strong_signals() -> None:
    frame = random_frames(1, seed=4)[0]
    for attenuation in (0.0, 40.0):
        channel = ChannelModel(snr_db=15, attenuation_db=attenuation, seed=2)
        assert demodulate(channel.apply(modulate(frame))) == [frame]


def test_clock_tracking_is_what_survives_large_drift() -> None:
    """At 2000 ppm a 300-byte frame slips ~1.6 bits: decoded with tracking, lost without."""
    frame = random_frames(1, seed=9, low=300, high=300)[0]
    rx = ChannelModel(snr_db=20, drift_ppm=2000, seed=1).apply(modulate(frame))
    assert Demodulator().decode(rx) == [frame]
    assert Demodulator(track_clock=False).decode(rx) == []


def test_very_low_snr_never_returns_wrong_bytes() -> None:
    """At -2 and -1 dB most frames are lost, and the checks reject every corrupted one."""
    modulator, demodulator = Modulator(), Demodulator()
    sent = random_frames(40, seed=21, low=64, high=128)
    good = rejected = 0
    for snr, seed in ((-2.0, 1), (-1.0, 2)):
        channel = ChannelModel(snr_db=snr, seed=seed)
        for frame in sent:
            result = demodulator.scan(channel.apply(modulator.modulate(frame)))
            assert all(f == frame for f in result.frames)
            good += len(result.frames)
            rejected += len(result.rejected)
    assert rejected > 20  # the CRC path was really exercised
    assert good + rejected <= 2 * len(sent)


def test_corrupted_bit_is_rejected_by_crc() -> None:
    frame = Frame(FrameKind.DATA, 5, bytes(range(80)))
    bits = frame_bits(frame).copy()
    bits[48 + 32 + 8 * 6 + 100] ^= 1  # a payload bit, after preamble, sync and header
    result = Demodulator().scan(to_pcm16(modulate_bits(bits)))
    assert result.frames == []
    assert len(result.rejected) == 1
    assert isinstance(result.rejected[0], FrameCrcError)


def test_sync_word_tolerates_a_few_bit_errors() -> None:
    frame = Frame(FrameKind.DATA, 5, b"sync")
    bits = frame_bits(frame).copy()
    bits[[50, 60, 70]] ^= 1  # three errors in the sync word
    assert demodulate(to_pcm16(modulate_bits(bits))) == [frame]
    bits[[52, 62]] ^= 1  # five: no sync, no frame
    assert demodulate(to_pcm16(modulate_bits(bits))) == []


def test_streaming_scan_keeps_partial_frames() -> None:
    """A frame split across two buffers is found once the second part arrives."""
    frame = random_frames(1, seed=8)[0]
    pcm = np.concatenate([np.zeros(500, np.int16), modulate(frame), np.zeros(500, np.int16)])
    demodulator = Demodulator()
    first = demodulator.scan(pcm[: pcm.size // 2])
    assert first.frames == [] and first.pending
    rest = np.concatenate([pcm[first.consumed : pcm.size // 2], pcm[pcm.size // 2 :]])
    second = demodulator.scan(rest)
    assert second.frames == [frame]
    assert second.consumed > rest.size - 2000


def test_noise_alone_gives_nothing() -> None:
    rng = np.random.default_rng(0)
    noise = to_pcm16(rng.normal(0, 0.1, 44100))
    result = Demodulator().scan(noise)
    assert result.frames == [] and result.rejected == []
    assert Demodulator().scan(np.zeros(10_000, np.int16)).frames == []


def test_bits_survive_modulation_exactly() -> None:
    payload = b"\x00\xff\x55\xaa" * 8
    frame = Frame(FrameKind.DATA, 0, payload)
    assert frame_bits(frame)[48 + 32 + 48 :].size == (len(payload) + 4) * 8 + 8
    assert bytes_to_bits(payload).size == 256
    assert demodulate(modulate(frame)) == [frame]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mark_hz": 30000.0},
        {"mark_hz": 44100 / 32},
        {"amplitude": 1.5},
        {"samples_per_bit": 2},
        {"timing_probe": 20},
    ],
)
def test_bad_config_is_a_typed_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(AudioLinkError):
        ModemConfig(**kwargs)
