"""With ``--workers N``, each worker of uvicorn's supervisor stopped by its SIGTERM shuts down
and exits 0 (safescan.web.graceful.GracefulProcess, which ``institution serve --workers N``
starts): a plain uvicorn worker died of the SIGTERM uvicorn raises again after its clean
shutdown (exit status -15), only the parent exiting 0. One real worker process on 127.0.0.1;
the parent's side is tests/institution/test_serve_signals.py (SIGTERM-2-workers)."""

from __future__ import annotations

from typing import Any

import uvicorn
from uvicorn.supervisors import multiprocess

from safescan.web.graceful import GracefulProcess, graceful_workers
from tests.institution.pg import free_port

#: how long the worker may take to answer its supervisor's health check (a bound)
READY_BOUND = 120.0


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The smallest ASGI app (the worker imports it by name)."""
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_a_worker_stopped_by_its_supervisor_exits_0() -> None:
    with graceful_workers():
        assert multiprocess.Process is GracefulProcess  # what the supervisor starts
    assert multiprocess.Process is not GracefulProcess  # and only within
    config = uvicorn.Config(
        f"{__name__}:app", host="127.0.0.1", port=free_port(), lifespan="off", log_level="critical"
    )
    sock = config.bind_socket()
    worker = GracefulProcess(config, [sock])
    try:
        worker.start()
        assert worker.wait_until_ready(READY_BOUND), "the worker did not start"
        worker.terminate()  # the supervisor's stop: SIGTERM
        worker.join()
        assert worker.exitcode == 0
    finally:
        if worker.exitcode is None:
            worker.kill()
            worker.join()
        sock.close()
