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
from pathlib import Path

#: the most a secret file may hold (a passphrase, a PIN, a token, a password is far shorter)
LIMIT = 4096


def read_small_text(path: Path, limit: int = LIMIT) -> str:
    """The UTF-8 text of ``path`` (at most ``limit`` bytes); ``OSError`` when it cannot be
    read, is larger (``EFBIG``) or is not UTF-8 text (``EINVAL``)."""
    with Path(path).open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes: not a secret file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise OSError(errno.EINVAL, "not UTF-8 text") from None
