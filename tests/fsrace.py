"""What an attacker plants in the file system, for the tests of safe file reading: a race
won every time (:func:`hard_link_at_open`), a FIFO, a device or a huge file where a program
expects its own small file (:func:`plant`, bounded by :data:`may_hang`)."""

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


#: a test planting a FIFO: a reader that opens it waits for a writer for ever, so such a
#: test is bounded (before a fix it hung; after, it finishes at once: no timing is asserted)
may_hang = pytest.mark.timeout(60)


def plant(path: Path, what: str) -> None:
    """Put ``what`` at ``path``: ``"fifo"`` (a named pipe), a path from ``/`` (a symbolic link
    to it: ``"/dev/zero"``), or ``"N KiB"`` (a regular file of N KiB)."""
    if what == "fifo":
        os.mkfifo(path)
    elif what.startswith("/"):
        path.symlink_to(what)
    elif what.endswith(" KiB"):
        path.write_bytes(b"p" * 1024 * int(what.removesuffix(" KiB")))
    else:
        raise ValueError(f"nothing to plant called {what!r}")
