"""uvicorn servers that stop cleanly on SIGTERM and SIGINT, and then exit 0.

uvicorn (0.29 and later) catches SIGINT and SIGTERM, shuts down gracefully (stops accepting,
lets the requests in flight finish within ``timeout_graceful_shutdown``, runs the lifespan
shutdown: the institution's database closed, its background work stopped) and then raises the
same signal again with the default handler back in place. For SIGTERM that ends the process
at once, exit status -15: nothing after ``Server.run()`` ran (no ``finally``, no ``atexit``),
so the deferred access-log lines were never drained and a service manager saw a killed server
where it had asked for a stop. :class:`GracefulServer` catches the same signals (a second
Ctrl-C still forces the exit) but does not raise them again: ``run()`` returns, the caller's
clean-up runs and the process exits 0 (docs/operations.md, "Stopping").

With ``--workers N`` uvicorn's supervisor (``uvicorn.supervisors.multiprocess``) runs each worker
as a plain ``uvicorn.Server``: after a clean shutdown each worker died of its re-raised SIGTERM
(the parent exiting 0). uvicorn takes no server class for its workers; its supervisor names its
``Process`` class when it starts one, so :func:`graceful_workers` has it start
:class:`GracefulProcess` workers (a :class:`GracefulServer` each): they exit 0 too.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Generator, Iterator

import uvicorn
from uvicorn.supervisors import multiprocess

#: the signals that stop a server gracefully
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulServer(uvicorn.Server):
    """A uvicorn server whose SIGTERM/SIGINT end ``run()`` normally (see the module)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Stop gracefully on :data:`STOP_SIGNALS`; restore the previous handlers after, and
        do not raise the signal again."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signals can only be handled in the main thread
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class GracefulProcess(multiprocess.Process):
    """A worker of uvicorn's supervisor whose server is a :class:`GracefulServer`: stopped by
    the supervisor's SIGTERM, it shuts down and exits 0."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = GracefulServer(config=self.config)
        return self._server


@contextlib.contextmanager
def graceful_workers() -> Iterator[None]:
    """Within: ``uvicorn.run(..., workers=N)`` starts :class:`GracefulProcess` workers."""
    plain = multiprocess.Process
    multiprocess.Process = GracefulProcess  # type: ignore[misc]
    try:
        yield
    finally:
        multiprocess.Process = plain  # type: ignore[misc]


__all__ = ["STOP_SIGNALS", "GracefulProcess", "GracefulServer", "graceful_workers"]
