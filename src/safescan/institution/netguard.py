"""Bounded, self-cleaning client connections for the API server (uvicorn's httptools protocol).

uvicorn closes a keep-alive connection a few seconds after its last response, but a connection
that never sends a request (or sends its head a byte at a time) stays open for ever, and every
open connection is a file descriptor. Enough of them and the process cannot open its database
any more. :class:`GuardedHttpToolsProtocol` closes that hole:

* at most :attr:`Limits.max_connections` connections are open at once. At the bound a new
  connection makes room by closing the connection that has been idle longest (no request in
  progress); only when every connection is busy with a request is the new one answered ``503``
  (``Retry-After: 1``) and closed. So idle connections can never lock clients out. The bound is
  also kept below the process's descriptor limit (``RLIMIT_NOFILE``) minus a reserve for the
  database, so clients can never take the descriptors the database needs;
* a connection must deliver a complete request head within :attr:`Limits.head_timeout` seconds
  of being opened or of its previous response, else it is closed (idle and slow-loris
  connections alike); a request being answered (an event stream included) is never cut.

The limits come from the environment (:data:`ENV_LIMITS`, set by ``safescan institution
serve``) so that every worker process of ``--workers N`` applies the same.
"""

from __future__ import annotations

import asyncio
import os
import resource
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

ENV_LIMITS = "SAFESCAN_CONNECTION_LIMITS"
DB_DESCRIPTORS = 3 * (16 + 8)  # pooled database connections (a SQLite one holds db, WAL, shm)
RESERVE = 64 + DB_DESCRIPTORS  # descriptors kept for everything but client connections

_OVERLOADED = (
    b'{"error":{"type":"Overloaded","code":"too_many_connections",'
    b'"message":"the server has too many open connections; retry shortly"}}'
)
_OVERLOADED_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: "
    + str(len(_OVERLOADED)).encode()
    + b"\r\n\r\n"
    + _OVERLOADED
)


@dataclass(frozen=True)
class Limits:
    """Connection limits of one API process."""

    max_connections: int = 1000
    head_timeout: float = 10.0

    def encode(self) -> str:
        """For :data:`ENV_LIMITS`."""
        return f"{self.max_connections},{self.head_timeout}"

    @classmethod
    def from_env(cls) -> Limits:
        """The limits :func:`configure` put in the environment (defaults otherwise)."""
        text = os.environ.get(ENV_LIMITS, "")
        try:
            a, b = text.split(",")
            return cls(int(a), float(b))
        except ValueError:
            return cls()


def configure(limits: Limits) -> None:
    """Set the limits for this process and the workers it starts."""
    os.environ[ENV_LIMITS] = limits.encode()


def effective_max_connections(configured: int) -> int:
    """``configured``, lowered so that :data:`RESERVE` descriptors always stay free."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(8, min(configured, soft - RESERVE))


STATS: dict[str, int] = {"refused": 0, "evicted": 0, "timed_out": 0}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection bound and a request-head deadline."""

    _limits: Limits | None = None
    _max: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cls = type(self)
        if cls._limits is None:
            cls._limits = Limits.from_env()
            cls._max = effective_max_connections(cls._limits.max_connections)
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self.idle_since: float | None = None  # None while a request is being answered

    @classmethod
    def limits(cls) -> tuple[int, float]:
        """(the effective connection bound, the head timeout) of this process."""
        lim = cls._limits or Limits.from_env()
        return cls._max or effective_max_connections(lim.max_connections), lim.head_timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """At the bound make room (or refuse); then start the head deadline."""
        if len(self.connections) >= self._max and not self._evict_idle():
            self._refused = True
            STATS["refused"] += 1
            assert isinstance(transport, asyncio.Transport)
            transport.write(_OVERLOADED_RESPONSE)
            transport.close()
            return
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_head_timer()

    def _evict_idle(self) -> bool:
        """Close the connection idle longest; False if every connection is busy."""
        idle = [
            c
            for c in self.connections
            if isinstance(c, GuardedHttpToolsProtocol)
            and c.idle_since is not None
            and not c.transport.is_closing()
        ]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.idle_since or 0.0)
        victim.idle_since = None
        victim.transport.close()
        STATS["evicted"] += 1
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection (a refused one was never counted)."""
        self._cancel_head_timer()
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Bytes of a refused connection are dropped."""
        if self._refused:
            return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        """A whole request head arrived in time."""
        self._cancel_head_timer()
        self.idle_since = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        """After a response, the next request head must come in time too."""
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self.idle_since = self.loop.time()
        assert self._limits is not None
        self._head_timer = self.loop.call_later(self._limits.head_timeout, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if not busy and not self.transport.is_closing():
            STATS["timed_out"] += 1
            self.transport.close()


def connection_status() -> dict[str, Any]:
    """For readiness: the bound, the head timeout and what was refused or closed."""
    bound, head = GuardedHttpToolsProtocol.limits()
    return {"ok": True, "max_connections": bound, "head_timeout_s": head, **STATS}


__all__ = [
    "ENV_LIMITS",
    "GuardedHttpToolsProtocol",
    "Limits",
    "configure",
    "connection_status",
    "effective_max_connections",
]
