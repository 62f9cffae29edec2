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
``Process`` class where it starts one, so :class:`GracefulMultiprocess` (run by
:func:`run_workers`) is that supervisor starting :class:`GracefulProcess` workers (a
:class:`GracefulServer` each): they exit 0 too. Nothing of uvicorn's is changed in place.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Generator

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

logger = logging.getLogger("uvicorn.error")  # the supervisor's own logger, as in uvicorn

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


class GracefulMultiprocess(multiprocess.Multiprocess):
    """uvicorn's supervisor (``--workers N``) whose workers are :class:`GracefulProcess` ones.

    uvicorn names its worker class in the four methods that start a worker; they stand here as
    uvicorn 0.54.0 wrote them, but for :meth:`new_process` (tests/web/test_graceful_workers.py
    fails when uvicorn's differ, or when another of its methods starts a worker)."""

    def new_process(self) -> multiprocess.Process:
        """A worker, not started yet."""
        return GracefulProcess(self.config, self.sockets)

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            process = self.new_process()
            process.start()
            self.processes.append(process)

    def restart_all(self) -> None:
        """Replaces each worker, bringing its replacement into service before retiring the old worker."""  # noqa: E501
        for idx, old_process in enumerate(self.processes):
            if self.should_exit.is_set():
                return

            new_process = self.new_process()
            new_process.start()

            if not new_process.wait_until_ready(
                self.config.timeout_worker_healthcheck, self.should_exit
            ):
                new_process.kill()
                new_process.join()
                if not self.should_exit.is_set():
                    logger.error(
                        f"New child process [{new_process.pid}] was not ready in time; "
                        f"keeping worker [{old_process.pid}] and aborting the restart."
                    )
                return

            old_process.terminate()
            old_process.join()
            self.processes[idx] = new_process

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return  # parent process is exiting, no need to keep subprocess alive

        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue

            process.kill()  # process is hung, kill it
            process.join()

            if process.exitcode == STARTUP_FAILURE:
                # The worker failed before it started serving, so the app, TLS or socket
                # bind is broken and would fail the same way on every restart.
                # See https://github.com/encode/uvicorn/discussions/2440.
                logger.error(
                    f"Child process [{process.pid}] failed to start, stopping the parent process."
                )
                self.should_exit.set()
                return

            if self.should_exit.is_set():
                return  # pragma: full coverage

            logger.info(f"Child process [{process.pid}] died")
            process = self.new_process()
            process.start()
            self.processes[idx] = process

    def handle_ttin(self) -> None:  # pragma: py-win32
        logger.info("Received SIGTTIN, increasing the number of processes.")
        self.processes_num += 1
        process = self.new_process()
        process.start()
        self.processes.append(process)


def run_workers(config: uvicorn.Config) -> None:
    """What ``uvicorn.run(...)`` does with ``workers=N`` (N > 1), its supervisor a
    :class:`GracefulMultiprocess`: each worker, stopped, exits 0 as the parent does."""
    sock = config.bind_socket()
    try:
        GracefulMultiprocess(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


__all__ = [
    "STOP_SIGNALS",
    "GracefulMultiprocess",
    "GracefulProcess",
    "GracefulServer",
    "run_workers",
]
