"""Reading the log of a process that is still writing it.

A reader racing the writer can read its last line half written: a ``write()`` to a regular
file is not atomic for a reader, ``print()`` writes the text and its newline in two writes,
and a batch of lines larger than the stream's buffer goes out in pieces. A test that parses
every line (``json.loads``) then fails on a line that was whole a millisecond later, and one
that looks for a text can see half of it. :func:`written` waits a moment for a last line to
end, and returns only complete lines; every test that reads a live process's log reads it here.
"""

from __future__ import annotations

import time
from pathlib import Path

#: how long (wall clock) :func:`written` waits for an unterminated last line to end before it
#: leaves it out (a writer ends a line within microseconds, within a time slice when loaded)
LINE_WAIT = 2.0


def complete(data: bytes) -> bytes:
    """``data`` up to and including its last newline (b"" when it holds no whole line)."""
    return data[: data.rfind(b"\n") + 1]


def written(path: Path | str, *, finished: bool = False) -> str:
    """The complete lines written to ``path`` so far (UTF-8, undecodable bytes replaced). A
    last line without its newline is read again for up to :data:`LINE_WAIT` seconds, then left
    out (read next time). ``finished``: the writer has exited, so its last line is whole."""
    deadline = time.monotonic() + LINE_WAIT
    data = Path(path).read_bytes()
    while not finished and data and not data.endswith(b"\n") and time.monotonic() < deadline:
        time.sleep(0.01)
        data = Path(path).read_bytes()
    return (data if finished else complete(data)).decode("utf-8", errors="replace")
