"""Continuous-phase binary FSK modem at 44.1 kHz, 16-bit PCM.

Default tones are those of bank audio-port keys: 1378.125 Hz (44100/32) for a 0 and 2756.25 Hz
(44100/16) for a 1, at 32 samples per bit (1378.125 baud). Each bit holds exactly one or two whole
cycles, so the tones are orthogonal over one bit period (modulation index h = 1), which is what a
non-coherent detector needs; see docs/audio.md for the choice against Bell 202.

Modulator: a phase accumulator (the phase never jumps at bit boundaries, whatever the tones) and
a short raised-cosine ramp at both ends of a burst.

Demodulator (:class:`Demodulator`), vectorised with numpy/scipy:

1. DC removal: subtract the mean, then a 2nd-order Butterworth high-pass (zero phase).
2. AGC: scale to unit RMS (the decision statistic below is also a ratio, so gain-independent).
3. Non-coherent detection: for each tone, a quadrature correlator over one bit period (mix with
   ``exp(-j 2 pi f n / fs)``, moving sum of 32 samples), magnitude ``a0``, ``a1``. The soft value
   ``d = (a1 - a0) / (a1 + a0)`` lies in [-1, 1]; it peaks (a triangle) where the window lines up
   with a bit.
4. Acquisition: correlate ``d`` with the alternating preamble over 16 bits; when it passes a
   threshold, pick the sampling phase with the largest eye opening in the next two bits.
5. Bit clock: an early-late gate on ``|d|`` (probes a quarter bit either side) nudges the sampling
   instant every bit, so sample-clock drift is tracked across long frames.
6. Sync: the 32-bit sync word is searched in the decided bits with a Hamming tolerance; then the
   header (with its own CRC-16), the payload and the CRC-32 are read and checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import NDArray
from scipy import signal

from safescan.carrier.audio.errors import AudioLinkError, FrameError
from safescan.carrier.audio.framing import (
    HEADER_BYTES,
    PREAMBLE_BITS,
    SYNC_BITS,
    SYNC_WORD,
    Bits,
    Frame,
    bits_to_bytes,
    body_bits_count,
    decode_frame,
    decode_header,
    frame_bits,
    whiten,
)

FloatArray = NDArray[np.float64]
Pcm = NDArray[np.int16]

SAMPLE_RATE = 44100
FULL_SCALE = 32767.0


@dataclass(frozen=True)
class ModemConfig:
    """Physical-layer parameters. The defaults are the audio-key tones at 1378.125 baud."""

    sample_rate: int = SAMPLE_RATE
    samples_per_bit: int = 32
    space_hz: float = SAMPLE_RATE / 32
    """Tone for a 0 bit."""
    mark_hz: float = SAMPLE_RATE / 16
    """Tone for a 1 bit."""
    amplitude: float = 0.5
    """Peak amplitude as a fraction of full scale."""
    ramp_samples: int = 64
    highpass_hz: float = 200.0
    detect_bits: int = 16
    """Preamble bits the acquisition correlator integrates."""
    detect_threshold: float = 0.6
    """Acquisition threshold, as a fraction of a perfect preamble correlation."""
    sync_tolerance: int = 3
    """Bit errors accepted in the 32-bit sync word."""
    timing_gain: float = 2.0
    """Early-late gate gain, in samples per unit of timing error."""
    timing_probe: int = 8
    """Early-late probe offset, in samples."""

    def __post_init__(self) -> None:
        nyquist = self.sample_rate / 2
        if self.samples_per_bit < 4 or self.sample_rate <= 0:
            raise AudioLinkError("the modem needs a positive sample rate and >= 4 samples per bit")
        for tone in (self.space_hz, self.mark_hz):
            if not 0 < tone < nyquist:
                raise AudioLinkError(f"tone {tone} Hz is outside 0..{nyquist} Hz")
        if self.space_hz == self.mark_hz:
            raise AudioLinkError("the two FSK tones must differ")
        if not 0 < self.amplitude <= 1:
            raise AudioLinkError("amplitude must be in (0, 1]")
        if not 0 <= self.timing_probe < self.samples_per_bit // 2:
            raise AudioLinkError("the timing probe must be shorter than half a bit")

    @property
    def baud(self) -> float:
        """Bits per second."""
        return self.sample_rate / self.samples_per_bit


# --- PCM helpers -----------------------------------------------------------------------------


def to_pcm16(x: FloatArray) -> Pcm:
    """Float samples in [-1, 1] to 16-bit PCM (rounded, clipped)."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * FULL_SCALE), -32768, 32767).astype(
        np.int16
    )


def from_pcm16(pcm: NDArray[np.integer] | NDArray[np.floating]) -> FloatArray:
    """16-bit PCM to float samples in [-1, 1]."""
    return np.asarray(pcm, dtype=np.float64) / FULL_SCALE


# --- modulator -------------------------------------------------------------------------------


def modulate_bits(bits: Bits, config: ModemConfig | None = None) -> FloatArray:
    """Continuous-phase FSK of a bit sequence, float samples with a raised-cosine ramp."""
    cfg = config or ModemConfig()
    spb = cfg.samples_per_bit
    freq = np.where(
        np.repeat(np.asarray(bits, dtype=np.uint8), spb) != 0, cfg.mark_hz, cfg.space_hz
    )
    cycles_per_sample = freq / cfg.sample_rate
    # phase of sample n is the sum of the increments of samples 0..n-1: never jumps
    cycles = np.cumsum(cycles_per_sample) - cycles_per_sample
    wave = cfg.amplitude * np.sin(2.0 * np.pi * np.mod(cycles, 1.0))
    ramp = min(cfg.ramp_samples, wave.size // 2)
    if ramp > 0:
        env = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
        wave[:ramp] *= env
        wave[-ramp:] *= env[::-1]
    return wave


class Modulator:
    """Turns frames into 16-bit PCM bursts."""

    def __init__(self, config: ModemConfig | None = None) -> None:
        self.config = config or ModemConfig()

    def modulate(self, frame: Frame) -> Pcm:
        """One frame as a 16-bit PCM burst (preamble to tail)."""
        return to_pcm16(modulate_bits(frame_bits(frame), self.config))

    def burst_samples(self, payload_length: int) -> int:
        """Length in samples of the burst of a frame with this payload length."""
        bits = PREAMBLE_BITS + SYNC_BITS + body_bits_count(payload_length) + 8
        return bits * self.config.samples_per_bit


# --- demodulator -----------------------------------------------------------------------------


@dataclass
class ScanResult:
    """What one :meth:`Demodulator.scan` found in a buffer of samples."""

    frames: list[Frame] = field(default_factory=list)
    """Frames that passed every check, in order."""
    rejected: list[FrameError] = field(default_factory=list)
    """Frames whose sync word was found but whose header or CRC failed."""
    consumed: int = 0
    """Samples at the start of the buffer that will never be needed again."""
    pending: bool = False
    """A frame (or preamble) runs past the end of the buffer: more samples are needed."""


class _BitClock:
    """Early-late gate bit synchroniser over the soft-value sequence ``d``."""

    def __init__(self, soft: list[float], start: float, cfg: ModemConfig) -> None:
        self.soft = soft
        self.t = start
        self.spb = cfg.samples_per_bit
        self.probe = cfg.timing_probe
        self.gain = cfg.timing_gain
        self.track = True

    def _at(self, t: float) -> float:
        i = int(t)
        lo = self.soft[i]
        return lo + (self.soft[i + 1] - lo) * (t - i)

    def next_bit(self) -> int | None:
        """Decide one bit and advance a bit period; None when the samples run out."""
        t = self.t
        if t + self.probe + 2 >= len(self.soft):
            return None
        value = self._at(t)
        if self.track and t - self.probe >= 0:
            err = abs(self._at(t + self.probe)) - abs(self._at(t - self.probe))
            step = self.gain * err
            t += max(-2.0, min(2.0, step))
        self.t = t + self.spb
        return 1 if value > 0 else 0

    def read(self, count: int) -> Bits | None:
        """Decide ``count`` bits; None when the samples run out first."""
        out = np.empty(count, dtype=np.uint8)
        for i in range(count):
            bit = self.next_bit()
            if bit is None:
                return None
            out[i] = bit
        return out


class Demodulator:
    """Finds, demodulates and checks frames in a buffer of PCM samples."""

    def __init__(self, config: ModemConfig | None = None, *, track_clock: bool = True) -> None:
        self.config = config or ModemConfig()
        self.track_clock = track_clock

    @cached_property
    def _highpass(self) -> NDArray[np.float64]:
        cfg = self.config
        sos: NDArray[np.float64] = signal.butter(
            2, cfg.highpass_hz, btype="highpass", fs=cfg.sample_rate, output="sos"
        )
        return sos

    @property
    def keep_samples(self) -> int:
        """Samples at the end of a buffer kept for the next scan when nothing was found."""
        return self.config.samples_per_bit * (self.config.detect_bits + 4)

    def soft_values(self, samples: NDArray[np.int16] | FloatArray) -> FloatArray:
        """DC removal, AGC and the per-tone correlators: ``d[n]`` for a bit window starting at n."""
        cfg = self.config
        spb = cfg.samples_per_bit
        x = np.asarray(samples, dtype=np.float64)
        if x.size < 2 * spb:
            return np.zeros(0)
        x = x - x.mean()
        if x.size > 16:
            x = signal.sosfiltfilt(self._highpass, x)
        rms = float(np.sqrt(np.mean(x * x)))
        if rms == 0.0:
            return np.zeros(x.size - spb + 1)
        x = x / rms
        n = np.arange(x.size)
        amps = []
        for tone in (cfg.space_hz, cfg.mark_hz):
            mixed = x * np.exp(-2j * np.pi * (tone / cfg.sample_rate) * n)
            acc = np.concatenate(([0j], np.cumsum(mixed)))
            amps.append(np.abs(acc[spb:] - acc[:-spb]))
        a0, a1 = amps
        return np.asarray((a1 - a0) / (a1 + a0 + 1e-9), dtype=np.float64)

    def _preamble_metric(self, soft: FloatArray) -> FloatArray:
        spb = self.config.samples_per_bit
        k = self.config.detect_bits
        m = soft.size - spb * (k - 1)
        if m <= 0:
            return np.zeros(0)
        acc = np.zeros(m)
        for i in range(k):
            seg = soft[i * spb : i * spb + m]
            acc += seg if i % 2 == 0 else -seg
        return np.asarray(np.abs(acc) / k, dtype=np.float64)

    def scan(self, samples: NDArray[np.int16] | FloatArray) -> ScanResult:
        """Find every complete frame in ``samples``; say how much of the buffer is used up."""
        cfg = self.config
        spb = cfg.samples_per_bit
        result = ScanResult()
        soft = self.soft_values(samples)
        metric = self._preamble_metric(soft)
        total = int(np.asarray(samples).size)
        if metric.size == 0:
            return result
        candidates = np.flatnonzero(metric >= cfg.detect_threshold)
        soft_list: list[float] = soft.tolist()
        search_from = 0
        idx = 0
        while True:
            idx = int(np.searchsorted(candidates, search_from))
            if idx >= candidates.size:
                break
            hit = int(candidates[idx])
            window = metric[hit : hit + 2 * spb]
            start = hit + int(np.argmax(window))
            outcome = self._read_frame(soft_list, start, result)
            if outcome is None:  # ran out of samples: keep from just before this preamble
                result.pending = True
                result.consumed = max(result.consumed, hit - 4 * spb)
                return result
            search_from = outcome
        result.consumed = max(result.consumed, total - self.keep_samples, 0)
        return result

    def _read_frame(self, soft: list[float], start: int, result: ScanResult) -> int | None:
        """Sync, header and body from an acquisition point; returns where to search next."""
        cfg = self.config
        clock = _BitClock(soft, float(start), cfg)
        clock.track = self.track_clock
        register = 0
        mask = (1 << SYNC_BITS) - 1
        found = False
        for count in range(1, PREAMBLE_BITS + SYNC_BITS + 8 + 1):
            bit = clock.next_bit()
            if bit is None:
                return None
            register = ((register << 1) | bit) & mask
            if count >= SYNC_BITS and (register ^ SYNC_WORD).bit_count() <= cfg.sync_tolerance:
                found = True
                break
        if not found:
            return start + 8 * cfg.samples_per_bit
        head_bits = clock.read(8 * HEADER_BYTES)
        if head_bits is None:
            return None
        header_raw = bits_to_bytes(whiten(head_bits))
        try:
            header = decode_header(header_raw)
        except FrameError as exc:
            result.rejected.append(exc)
            result.consumed = int(clock.t)
            return int(clock.t)
        rest = clock.read(body_bits_count(header.length) - 8 * HEADER_BYTES)
        if rest is None:
            return None
        body = header_raw + bits_to_bytes(whiten(rest, offset=8 * HEADER_BYTES))
        try:
            result.frames.append(decode_frame(body))
        except FrameError as exc:
            result.rejected.append(exc)
        result.consumed = int(clock.t)
        return int(clock.t)

    def decode(self, samples: NDArray[np.int16] | FloatArray) -> list[Frame]:
        """The good frames found in a complete recording."""
        return self.scan(samples).frames


def modulate(frame: Frame, config: ModemConfig | None = None) -> Pcm:
    """One frame as a 16-bit PCM burst."""
    return Modulator(config).modulate(frame)


def demodulate(
    samples: NDArray[np.int16] | FloatArray, config: ModemConfig | None = None
) -> list[Frame]:
    """The good frames found in a recording of 16-bit PCM samples."""
    return Demodulator(config).decode(samples)
