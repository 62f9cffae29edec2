"""Reading back a file of ``STATE/secrets`` (the supervisor wrote it itself, ``write_atomic``).

Read at most :data:`SECRET_FILE_LIMIT` bytes, never through a link (symbolic: ``O_NOFOLLOW``;
hard: more than one name, counted on the opened descriptor), a regular file only; anything else
is the typed
:class:`ClusterError`, whose message never holds the file's contents (before: an unbounded
``read_text`` that followed links, so a link to ``/dev/zero`` ran the supervisor out of memory).
``tests/cluster/test_private_files.py`` attacks it (threat-model row K14).
"""

from __future__ import annotations

import errno
from pathlib import Path

from safescan.cluster.errors import ClusterError
from safescan.code.smallfile import read_bounded

#: the most a secret file is read for (``secrets.json`` is under 1 KiB, the administrator
#: token under 100 bytes)
SECRET_FILE_LIMIT = 64 * 1024


def read_secret(path: Path, what: str) -> str:
    """The text of ``path`` (see the module docstring); ``what`` names it in errors."""
    try:
        data = read_bounded(path, SECRET_FILE_LIMIT, what, single_link=True)  # fstat: no race
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.ELOOP:
            reason = "a symbolic link, not the cluster's own file"
        elif exc.errno == errno.EMLINK:
            reason = "a hard link, not the cluster's own file"
        raise ClusterError(f"cannot read the cluster's {what} {path}: {reason}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ClusterError(f"the cluster's {what} {path} is not UTF-8 text") from None
