"""Writing a file whole or not at all, durably: the one place every caller does it.

A file is written to ``<name>.tmp`` beside it (the same directory, so the rename is atomic),
owner-only (``0600`` even if a stale temporary file was left with other modes), written whole
and fsync'd, renamed over the target, and the directory fsync'd (the rename survives a power
cut). A crash at any point leaves either the old file or the new one, never a torn one.

Every step is a plain ``os`` call (``os.open``, ``os.write``, ``os.fsync``, ``os.replace``),
looked up at call time, so tests inject a failure at any of them with ``monkeypatch``. Errors
are ``OSError``: each caller turns them into its own typed error.
"""

from __future__ import annotations

import os
from pathlib import Path

#: the suffix of the temporary file written beside the target
TMP = ".tmp"


def fsync_dir(directory: Path) -> None:
    """fsync a directory (so a file created or renamed in it survives a crash)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to ``fd`` (``os.write`` may write less than it was given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """``data`` to ``path`` (``mode``, 0600 by default) through a temporary file in the same
    directory: written whole, fsync'd, renamed over ``path``, the directory fsync'd."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


__all__ = ["TMP", "fsync_dir", "write_all", "write_atomic"]
