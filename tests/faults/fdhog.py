"""``python -m tests.faults.fdhog ARGS``: ``python -m safescan.institution ARGS`` with a test
fault point that takes every free descriptor number of the process, so that the next descriptor
the server needs is refused with a real ``EMFILE`` (not a mocked one).

* ``SIGUSR1``: open ``/dev/null`` until the kernel refuses (``EMFILE``) and hold every
  descriptor: no number below the soft ``RLIMIT_NOFILE`` stays free (the test lowers the soft
  limit with ``prlimit`` first, so this is a few dozen descriptors);
* ``SIGUSR2``: close them all again.

Lowering the limit alone to the number of open descriptors is not enough: the kernel hands out
the lowest free number, so a descriptor closed below the limit after the limit was set (a
start-up connection closing late, a background task's file) made the next ``open`` succeed and
the payment got 201 instead of 503 (tests/faults/test_writer_descriptors.py). The test checks
through ``/proc`` that every number below the limit is taken before it sends the payment.

The server here starts cold (``Payments.warm`` is a no-op): since the ninth sitting a server
opens its SQLite writer and reads the scheme-key epochs before it takes requests, so once
started a payment needs no new descriptor and this test's payment was paid (201). Opening on
the first write is the path a writer takes when it is replaced after a crash
(``Database._writer``), and the path of every server before the warm-up; this fault point keeps
it the one the first payment takes, so that payment is the one that needs a descriptor.
"""

from __future__ import annotations

import errno
import os
import runpy
import signal
import sys
from types import FrameType

_held: list[int] = []


def _fill(signum: int, frame: FrameType | None) -> None:
    while True:
        try:
            _held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            if exc.errno == errno.EMFILE:
                return
            raise


def _release(signum: int, frame: FrameType | None) -> None:
    while _held:
        os.close(_held.pop())


def main() -> None:
    """Install the two signal handlers, then run the institution's commands."""
    signal.signal(signal.SIGUSR1, _fill)
    signal.signal(signal.SIGUSR2, _release)
    from safescan.institution.domain.payments import Payments

    async def cold(self: Payments) -> None:
        """No warm-up: the first payment opens what it needs."""

    Payments.warm = cold  # type: ignore[method-assign]
    sys.argv[0] = "safescan.institution"
    runpy.run_module("safescan.institution", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
