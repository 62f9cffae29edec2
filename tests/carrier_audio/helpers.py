"""Shared helpers for the audio modem tests."""

from __future__ import annotations

import numpy as np

from safescan.carrier.audio.framing import Frame, FrameKind


def random_frames(count: int, seed: int, low: int = 64, high: int = 300) -> list[Frame]:
    """``count`` DATA frames with random payloads of ``low..high`` bytes (seeded)."""
    rng = np.random.default_rng(seed)
    return [
        Frame(
            FrameKind.DATA,
            i % 256,
            rng.integers(0, 256, int(rng.integers(low, high + 1)), dtype=np.uint8).tobytes(),
        )
        for i in range(count)
    ]
