"""The institution's app served on 127.0.0.1 in a thread of the test process (so a test can
reach into the institution it serves), started and stopped by :func:`served_in_thread`."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import TypeVar

import httpx
import uvicorn

from safescan.institution.http import create_app
from safescan.institution.service import Institution
from tests.institution.pg import free_port


class Served:
    """The app over one institution, served on 127.0.0.1 in a thread."""

    def __init__(self, inst: Institution) -> None:
        self.inst = inst
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(inst, background=False),
                host="127.0.0.1",
                port=self.port,
                log_level="critical",
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    @property
    def admin(self) -> dict[str, str]:
        """The administrator's Authorization header (tests.institution.dispatch's token)."""
        token: str = self.inst.test_admin_token  # type: ignore[attr-defined]
        return {"Authorization": f"Bearer {token}"}


S = TypeVar("S", bound=Served)


@contextlib.contextmanager
def served_in_thread(s: S, start_within: float) -> Iterator[S]:
    """``s`` started (within ``start_within`` seconds, else the test fails), then stopped."""
    s.thread.start()
    deadline = time.monotonic() + start_within
    while not s.server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield s
    finally:
        s.http.close()
        s.server.should_exit = True
        s.thread.join(30)
