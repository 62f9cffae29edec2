"""With ``--workers N``, each worker of uvicorn's supervisor stopped by its SIGTERM shuts down
and exits 0 (safescan.web.graceful.GracefulProcess, which ``institution serve --workers N``
starts through GracefulMultiprocess): a plain uvicorn worker died of the SIGTERM uvicorn raises
again after its clean shutdown (exit status -15), only the parent exiting 0. One real worker
process on 127.0.0.1; the parent's side is tests/institution/test_serve_signals.py
(SIGTERM-2-workers)."""

from __future__ import annotations

import ast
import inspect
import signal
import textwrap
from typing import Any

import uvicorn
from uvicorn.supervisors import multiprocess

from safescan.web.graceful import GracefulMultiprocess, GracefulProcess
from tests.institution.pg import free_port

#: how long the worker may take to answer its supervisor's health check (a bound)
READY_BOUND = 120.0
#: what uvicorn writes where GracefulMultiprocess starts a worker
UVICORN_SPAWN = "Process(self.config, self.sockets)"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The smallest ASGI app (the worker imports it by name)."""
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _tree(method: Any, spawn: str = UVICORN_SPAWN) -> str:
    source = textwrap.dedent(inspect.getsource(method)).replace("self.new_process()", spawn)
    return ast.dump(ast.parse(source))


def test_the_supervisor_starts_graceful_workers_and_changes_nothing_of_uvicorns() -> None:
    starting = {
        name
        for name, member in vars(multiprocess.Multiprocess).items()
        if inspect.isfunction(member) and "Process" in member.__code__.co_names
    }
    assert starting == {"init_processes", "restart_all", "keep_subprocess_alive", "handle_ttin"}
    for name in starting:  # each as uvicorn wrote it, but for the class of its workers
        ours = getattr(GracefulMultiprocess, name)
        assert ours is not getattr(multiprocess.Multiprocess, name), name
        assert _tree(ours) == _tree(getattr(multiprocess.Multiprocess, name)), name
    assert multiprocess.Process is not GracefulProcess  # uvicorn's own module is untouched
    config = uvicorn.Config(f"{__name__}:app", workers=2, lifespan="off")
    handlers = {sig: signal.getsignal(sig) for sig in multiprocess.SIGNALS}
    try:  # the supervisor takes the process's signals when it is made: given back below
        supervisor = GracefulMultiprocess(config, sockets=[])
        assert type(supervisor.new_process()) is GracefulProcess
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def test_a_worker_stopped_by_its_supervisor_exits_0() -> None:
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
