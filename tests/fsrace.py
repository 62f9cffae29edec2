"""A file-system race won by the attacker every time, for the tests of safe file reading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def hard_link_at_open(monkeypatch: pytest.MonkeyPatch, target: Path, planted: Path) -> None:
    """Make safescan.code.smallfile's ``os.open`` first hard-link ``target`` at ``planted``
    (once), then open: the link a check-then-open reader misses, made between its look at the
    file and its open."""
    import safescan.code.smallfile as smallfile

    real_open = os.open

    def racing_open(name: object, flags: int, *args: int) -> int:
        if not planted.exists():
            os.link(target, planted)
        return real_open(name, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(smallfile.os, "open", racing_open)
