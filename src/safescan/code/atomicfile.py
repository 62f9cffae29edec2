"""Writing a file whole or not at all, durably: the one place every caller does it.

A file is written to ``<name>.tmp`` beside it (the same directory, so the rename is atomic),
owner-only, written whole and fsync'd, renamed over the target, and the directory fsync'd (the
rename survives a power cut). A crash at any point leaves either the old file or the new one,
never a torn one. Whatever stands at ``<name>.tmp`` beforehand (a file a crash left, or a
symbolic or hard link someone planted to make a key be written elsewhere) is unlinked, and the
temporary file is created new (``O_EXCL | O_NOFOLLOW``): nothing is written through a link.

Every step is a plain ``os`` call (``os.open``, ``os.write``, ``os.fsync``, ``os.replace``),
looked up at call time, so tests inject a failure at any of them with ``monkeypatch``. Errors
are ``OSError``: each caller turns them into its own typed error.
"""

from __future__ import annotations

import contextlib
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
    directory, created new (whatever stood at its name unlinked first): written whole, fsync'd,
    renamed over ``path``, the directory fsync'd. On failure the temporary file is removed and
    ``path`` is as it was."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a stale file, or a link planted there: never written through
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # no half-written copy is left beside the file
        raise
    fsync_dir(path.parent)


__all__ = ["TMP", "fsync_dir", "write_all", "write_atomic"]
