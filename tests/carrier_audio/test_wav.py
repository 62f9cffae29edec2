"""WAV files for inspection: round trip, decoding from a file, bad files."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from safescan.carrier.audio import (
    ChannelModel,
    Frame,
    FrameKind,
    WavFormatError,
    demodulate,
    modulate,
    read_wav,
    write_wav,
)


def test_wav_round_trip(tmp_path: Path) -> None:
    samples = np.array([0, 1, -1, 32767, -32768, 1234], dtype=np.int16)
    path = tmp_path / "x.wav"
    write_wav(path, samples)
    back, rate = read_wav(path)
    assert rate == 44100
    assert back.dtype == np.int16
    assert np.array_equal(back, samples)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 44100)


def test_frame_decodes_from_a_wav_recording(tmp_path: Path) -> None:
    frame = Frame(FrameKind.DATA, 3, b"\x80\xca\x9f\x7f\x00")
    path = tmp_path / "burst.wav"
    write_wav(path, ChannelModel(snr_db=20, seed=3).apply(modulate(frame)))
    samples, _ = read_wav(path)
    assert demodulate(samples) == [frame]


def test_unreadable_and_stereo_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....not a wave file")
    with pytest.raises(WavFormatError, match="cannot read"):
        read_wav(junk)
    with pytest.raises(WavFormatError):
        read_wav(tmp_path / "missing.wav")
    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(bytes(8))
    with pytest.raises(WavFormatError, match="16-bit mono"):
        read_wav(stereo)
    with pytest.raises(WavFormatError, match="mono"):
        write_wav(tmp_path / "2d.wav", np.zeros((2, 2), dtype=np.int16))
