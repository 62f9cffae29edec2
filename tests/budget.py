"""How many examples the suite's long hypothesis campaigns run: ``SAFESCAN_FUZZ_SCALE``.

A test declares the count the suite runs on every CI run (``examples(8_000)``);
``SAFESCAN_FUZZ_SCALE=N`` (a whole number, 1 to 1000) multiplies every such count for a longer
campaign, e.g. ``SAFESCAN_FUZZ_SCALE=5 .venv/bin/pytest tests/carrier/test_fuzz.py`` runs the
105,000 cases the file ran on every CI run before (docs/operations.md, "Test suite wall time").
The campaigns are derandomized (the same inputs every run), so a larger count on every CI run
repeats the same inputs: the long campaign is where new inputs come from.
"""

from __future__ import annotations

import os

VARIABLE = "SAFESCAN_FUZZ_SCALE"


def scale(value: str | None = None) -> int:
    """The factor from ``SAFESCAN_FUZZ_SCALE`` (1 when unset); a clear ValueError otherwise."""
    raw = os.environ.get(VARIABLE) if value is None else value
    if raw is None or raw.strip() == "":
        return 1
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 1000:
        raise ValueError(f"{VARIABLE} must be a whole number from 1 to 1000, not {raw!r}")
    return int(text)


def examples(ci: int) -> int:
    """``ci`` examples (the count every CI run uses) times :func:`scale`."""
    return ci * scale()
