"""A server that stops drops its idle TLS connections at once (safescan.web.netguard).

A graceful TLS close waits for the client's close_notify, which an idle keep-alive client (an
httpx pool, a browser) never sends: every stop of an institution, POS or wallet server that
such a client had used waited out uvicorn's whole graceful timeout (5 s). The connection's
``shutdown`` (what uvicorn calls on each one when it stops) is driven here with a stand-in
transport: an idle one with nothing left to send is aborted; one with bytes still to send, or
a request being answered, is closed gracefully as uvicorn does.
"""

from __future__ import annotations

import ssl
from types import SimpleNamespace
from typing import Any

from safescan.web.netguard import GuardedHttpToolsProtocol


class Transport:
    """What ``shutdown`` may do to a connection: abort it or close it."""

    def __init__(self, *, tls: bool, buffered: int = 0) -> None:
        self.tls, self.buffered = tls, buffered
        self.done: list[str] = []

    def get_extra_info(self, name: str) -> Any:
        return ssl.create_default_context() if name == "sslcontext" and self.tls else None

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def abort(self) -> None:
        self.done.append("abort")

    def close(self) -> None:
        self.done.append("close")


def _shutdown(transport: Transport, cycle: Any = None) -> list[str]:
    conn = object.__new__(GuardedHttpToolsProtocol)  # a connection, without a server around it
    conn.transport, conn.cycle = transport, cycle  # type: ignore[assignment]
    conn.shutdown()
    return transport.done


def test_an_idle_tls_connection_is_aborted_when_the_server_stops() -> None:
    assert _shutdown(Transport(tls=True)) == ["abort"]
    answered = SimpleNamespace(response_complete=True, keep_alive=True)
    assert _shutdown(Transport(tls=True), answered) == ["abort"]
    assert _shutdown(Transport(tls=False)) == ["close"]  # plain HTTP closes at once anyway


def test_a_connection_with_something_left_to_send_is_closed_gracefully() -> None:
    assert _shutdown(Transport(tls=True, buffered=512)) == ["close"]  # its bytes go out first
    busy = SimpleNamespace(response_complete=False, keep_alive=True)
    assert _shutdown(Transport(tls=True), busy) == []  # answered, then closed (no keep-alive)
    assert busy.keep_alive is False
