"""WAV files (16-bit mono PCM) for inspecting what the modem sends and hears."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from safescan.carrier.audio.errors import WavFormatError
from safescan.carrier.audio.modem import SAMPLE_RATE, Pcm


def write_wav(path: str | Path, samples: Pcm, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit mono PCM samples to a WAV file."""
    data = np.asarray(samples)
    if data.ndim != 1:
        raise WavFormatError("only mono (one-dimensional) sample arrays can be written")
    try:
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(sample_rate)
            out.writeframes(data.astype("<i2").tobytes())
    except (OSError, wave.Error) as exc:
        raise WavFormatError(f"cannot write WAV file {path}: {exc}") from exc


def read_wav(path: str | Path) -> tuple[Pcm, int]:
    """Read a 16-bit mono WAV file: ``(samples, sample_rate)``."""
    try:
        with wave.open(str(path), "rb") as inp:
            if inp.getnchannels() != 1 or inp.getsampwidth() != 2:
                raise WavFormatError(
                    f"{path} is {inp.getnchannels()}-channel, {8 * inp.getsampwidth()}-bit;"
                    " only 16-bit mono PCM is supported"
                )
            rate = inp.getframerate()
            raw = inp.readframes(inp.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise WavFormatError(f"cannot read WAV file {path}: {exc}") from exc
    return np.frombuffer(raw, dtype="<i2").astype(np.int16), rate
