"""Small text files a person points a command at: a passphrase, a PIN, a token, a password.

``Path.read_text()`` reads a file of any size (``--admin-token-file /dev/zero`` or a log file
given by mistake ran the process out of memory: a ``MemoryError`` traceback) and raises
``UnicodeDecodeError``, which callers catching ``OSError`` did not expect (a traceback for a
file that is not UTF-8). :func:`read_small_text` reads at most :data:`LIMIT` bytes and reports
both problems as ``OSError`` with a ``strerror`` naming them, so every caller's existing
``except OSError`` turns them into its typed error.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

#: the most a secret file may hold (a passphrase, a PIN, a token, a password is far shorter)
LIMIT = 4096


#: the most a configuration, state or certificate file a person points a command at may hold
FILE_LIMIT = 1 << 20


def read_bounded(
    path: Path,
    limit: int = FILE_LIMIT,
    what: str = "a configuration file",
    *,
    own: bool = False,
    single_link: bool = False,
    regular: bool = False,
    offset: int = 0,
) -> bytes:
    """The bytes of ``path``, at most ``limit`` of them; ``OSError`` (``EISDIR``, ``EFBIG``)
    when it is a directory or larger. A pipe (``<(...)``) is read as it comes; ``/dev/zero``,
    a log file or a disk image given by mistake is refused after ``limit + 1`` bytes, not read
    whole (before: ``--config /dev/zero`` ran the process out of memory). ``own``: a file the
    program keeps itself (a cache): a symbolic link is refused (``ELOOP``) and only a regular
    file is read (``EINVAL`` for a pipe, a device, a directory). ``single_link`` (implies
    ``own``): a file the program wrote itself and keeps secret (a key, a token, a password): a
    file with more than one name, a hard link that may be someone else's file, is refused
    (``EMLINK``). Both rules are checked on the opened descriptor (``fstat``), so the file
    cannot be swapped or linked between a check and the open (review: the cluster's secret
    reader checked the link count with ``lstat`` before it opened the file). ``regular``: a
    regular file only (``EINVAL`` for a pipe or a device), links followed: a file the program
    keeps that an operator may place through a link (the checkpoint file). ``offset``: read
    from there on (``limit`` counts the bytes after it)."""
    own = own or single_link
    regular = regular or own
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO opens at once
    fd = os.open(path, flags | os.O_NOFOLLOW if own else flags)
    try:
        st = os.fstat(fd)
        mode = st.st_mode
        if regular and not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if single_link and st.st_nlink != 1:
            raise OSError(errno.EMLINK, "a hard link (more than one name), not the own file")
        if stat.S_ISDIR(mode):
            raise OSError(errno.EISDIR, "a directory, not a file")
        os.set_blocking(fd, True)  # a pipe's writer may not have written yet
        if offset:
            os.lseek(fd, offset, os.SEEK_SET)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes: not {what}")
    return b"".join(chunks)


def read_small_text(path: Path, limit: int = LIMIT) -> str:
    """The UTF-8 text of ``path`` (at most ``limit`` bytes); ``OSError`` when it cannot be
    read, is larger (``EFBIG``) or is not UTF-8 text (``EINVAL``)."""
    data = read_bounded(path, limit, "a secret file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise OSError(errno.EINVAL, "not UTF-8 text") from None
