"""A model of the analogue path between a phone's headset jack and a key carrier.

:class:`ChannelModel` takes one PCM burst as the sender's DAC produced it and returns what the
receiver's ADC records: silence around it, attenuation, a sample-clock drift, white Gaussian
noise at a given SNR, a DC offset, then 16-bit quantisation with clipping.

SNR definition: ``SNR = P_signal / P_noise`` where ``P_signal`` is the mean power of the
attenuated burst over its own samples (silence around it excluded, DC excluded) and ``P_noise``
is the variance of the added noise, which is white over the whole sampled band 0..22.05 kHz.
For a bit of ``N`` samples this gives ``Eb/N0 = SNR * N / 2`` (+12.0 dB at 32 samples/bit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import CubicSpline

from safescan.carrier.audio.errors import AudioLinkError
from safescan.carrier.audio.modem import FloatArray, Pcm, from_pcm16, to_pcm16


def resample_drift(x: FloatArray, drift_ppm: float, offset: float = 0.0) -> FloatArray:
    """Resample as a receiver whose clock is ``drift_ppm`` fast would (cubic spline).

    Output sample ``k`` is the input at time ``offset + k / (1 + drift_ppm * 1e-6)`` input
    samples, so a positive drift stretches the signal (more samples per bit).
    """
    if x.size < 4:
        return x.copy()
    ratio = 1.0 + drift_ppm * 1e-6
    count = int(np.floor((x.size - 1 - offset) * ratio)) + 1
    times = offset + np.arange(count) / ratio
    spline = CubicSpline(np.arange(x.size), x)
    return np.asarray(spline(times), dtype=np.float64)


@dataclass
class ChannelModel:
    """Attenuation, AWGN at ``snr_db``, DC offset and clock drift; seedable."""

    snr_db: float | None = 20.0
    """Signal-to-noise ratio in dB over the 0..fs/2 band; None for no noise."""
    attenuation_db: float = 6.0
    dc_offset: float = 0.05
    """DC offset as a fraction of full scale."""
    drift_ppm: float = 100.0
    """Receiver sample clock error in parts per million (sign included)."""
    lead_samples: tuple[int, int] = (200, 2000)
    """Range of silence (plus noise) put before each burst; a random length is drawn."""
    trail_samples: int = 200
    seed: int | None = None
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.attenuation_db < 0:
            raise AudioLinkError("attenuation must be >= 0 dB")
        low, high = self.lead_samples
        if not 0 <= low <= high or self.trail_samples < 0:
            raise AudioLinkError("silence lengths must be >= 0 with low <= high")
        self.rng = np.random.default_rng(self.seed)

    def apply(self, pcm: Pcm) -> Pcm:
        """What the receiver records when the sender plays ``pcm`` (16-bit in, 16-bit out)."""
        burst = from_pcm16(np.asarray(pcm, dtype=np.int16)) * 10 ** (-self.attenuation_db / 20)
        signal_power = float(np.mean(burst * burst)) if burst.size else 0.0
        low, high = self.lead_samples
        lead = int(self.rng.integers(low, high + 1))
        padded = np.concatenate([np.zeros(lead), burst, np.zeros(self.trail_samples)])
        if self.drift_ppm:
            padded = resample_drift(padded, self.drift_ppm, offset=float(self.rng.random()))
        if self.snr_db is not None and signal_power > 0:
            noise_power = signal_power / 10 ** (self.snr_db / 10)
            padded = padded + self.rng.normal(0.0, np.sqrt(noise_power), padded.size)
        return to_pcm16(padded + self.dc_offset)
