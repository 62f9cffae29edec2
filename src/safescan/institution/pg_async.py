"""PostgreSQL's one-statement writes from the event loop, on psycopg's async connections.

A payment of an institution-issued order on PostgreSQL is one autocommitted statement
(``safescan_pay_order``, :data:`safescan.institution.sql.PAY_ORDER_CALL`). Run through
SQLAlchemy on a worker thread it cost more CPU than the statement itself (issue 20, ninth
sitting in docs/performance.md): the thread hand-off and its GIL traffic, the engine's
connection checkout and return, its isolation-level switch to AUTOCOMMIT and back, the
``checkout`` event. Here the statement is sent from the event loop on a small pool of raw
``psycopg.AsyncConnection``\\ s in autocommit mode, with the same rules as
:meth:`~safescan.institution.db.Database.write_one`:

* the same connection settings (``connect_timeout``, ``idle_in_transaction_session_timeout``);
* a pooled connection the server (or HAProxy during a failover) closed while it was idle is
  replaced before a statement is sent on it (its socket is readable or hung up), as
  :func:`safescan.institution.db._pg_checkout` does for the engine's pool; connections are
  recycled after ``RECYCLE_S`` (the engine's ``pool_recycle``);
* a driver error is raised as SQLAlchemy's (:class:`sqlalchemy.exc.DBAPIError`, the driver's
  error as ``orig``, parameters hidden), so that the one retry policy of
  :meth:`~safescan.institution.db.Database._retrying` decides: a serialization failure or a
  deadlock is retried, a refusing or unreachable server is waited for (nothing committed), a
  connection lost while the statement ran raises ``OutcomeUnknown`` (the statement is its own
  commit);
* a connection that raised, or whose caller was cancelled while the statement was in flight,
  is closed, never handed to another caller.

The pool belongs to the event loop it was made in (one per loop; a loop's pool is closed with
:meth:`Database.dispose`).
"""

from __future__ import annotations

import asyncio
import select
import time
from collections.abc import Sequence
from typing import Any, Protocol

import psycopg
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

_IDLE = psycopg.pq.TransactionStatus.IDLE
RECYCLE_S = 1800.0  # as the engine's pool_recycle (below any proxy's idle timeout)
WARM_CONNECT_TIMEOUT = 2  # seconds, for the connections opened at the server's start


class Phase(Protocol):
    """Where a write got to (:class:`safescan.institution.db._Phase`)."""

    committing: bool


def conninfo(url: URL, options: str, connect_timeout: int) -> dict[str, Any]:
    """psycopg's connection arguments for a SQLAlchemy URL and the engine's settings."""
    kw: dict[str, Any] = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
        "connect_timeout": connect_timeout,
        "options": options,
    }
    kw |= dict(url.query)
    return {k: v for k, v in kw.items() if v is not None}


def wrapped(statement: str, exc: psycopg.Error) -> DBAPIError:
    """The driver's error as SQLAlchemy's (parameters left out: receipts, tokens)."""
    err = DBAPIError.instance(statement, None, exc, psycopg.Error, hide_parameters=True)
    assert isinstance(err, DBAPIError)
    return err


def _closed_by_server(conn: psycopg.AsyncConnection[Any]) -> bool:
    """An idle pooled connection has nothing to read; if it has, the server closed it."""
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return True


class AsyncPool:
    """At most ``size`` autocommitted async connections of one event loop."""

    def __init__(self, kwargs: dict[str, Any], size: int) -> None:
        self._kwargs = kwargs
        self._idle: list[tuple[psycopg.AsyncConnection[Any], float]] = []
        self._slots = asyncio.Semaphore(size)
        self._size, self._busy = size, 0  # connections in use by a statement
        self._closed = False

    async def _connection(self) -> tuple[psycopg.AsyncConnection[Any], float]:
        while self._idle:
            conn, born = self._idle.pop()
            if conn.closed or conn.broken or _closed_by_server(conn):
                self._discard(conn)
                continue
            if time.monotonic() - born > RECYCLE_S:
                self._discard(conn)
                continue
            return conn, born
        return await self._connection_new()

    async def _connection_new(self, **override: Any) -> tuple[psycopg.AsyncConnection[Any], float]:
        try:
            conn = await psycopg.AsyncConnection.connect(
                autocommit=True, **(self._kwargs | override)
            )
        except psycopg.Error as exc:
            raise wrapped("connect", exc) from exc
        return conn, time.monotonic()

    @staticmethod
    def _discard(conn: psycopg.AsyncConnection[Any]) -> None:
        # closes the socket at once (no round trip, nothing awaited): a connection in an
        # unknown state, or of a loop that is gone, is never used again
        if not conn.closed:
            conn.pgconn.finish()

    async def fetch(
        self, statement: str, params: dict[str, Any], phase: Phase
    ) -> Sequence[tuple[Any, ...]]:
        """Run one statement (``%(name)s`` parameters) as its own transaction; its rows.
        ``phase.committing`` is set once a connection is in hand (from then on a lost
        connection may have committed; before, nothing was sent)."""
        if self._closed:
            raise RuntimeError("the database is closed")
        async with self._slots:
            self._busy += 1
            try:
                conn, born = await self._connection()
            except BaseException:
                self._busy -= 1
                raise
            ok = False
            phase.committing = True  # the statement is its own commit
            try:
                cur = await conn.execute(statement, params)
                rows = await cur.fetchall() if cur.description is not None else []
                ok = True
                return rows
            except psycopg.Error as exc:
                # an error the server answered with leaves an autocommitted connection idle
                # and usable (a refusal raised by safescan_pay_order); any other is closed
                ok = not conn.broken and conn.info.transaction_status == _IDLE
                raise wrapped(statement, exc) from exc
            finally:
                self._busy -= 1
                if ok and not self._closed:
                    self._idle.append((conn, born))
                else:  # an error, a cancelled caller (statement maybe in flight), or closed
                    self._discard(conn)

    async def warm(self) -> int:
        """Open the pool's connections now (at start, before the first request needs them);
        returns how many opened. One that cannot open is left for the requests, which wait
        for the database and report it as usual."""
        want = max(0, self._size - self._busy - len(self._idle))

        async def one() -> tuple[psycopg.AsyncConnection[Any], float] | None:
            try:
                # a start is not held long by an unreachable database
                return await self._connection_new(connect_timeout=WARM_CONNECT_TIMEOUT)
            except DBAPIError:
                return None

        opened = [c for c in await asyncio.gather(*(one() for _ in range(want))) if c]
        if self._closed:
            for conn, _ in opened:
                self._discard(conn)
            return 0
        self._idle.extend(opened)
        return len(opened)

    def close(self) -> None:
        """Close every idle connection (busy ones are closed when their statement ends)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            self._discard(conn)


__all__ = ["RECYCLE_S", "AsyncPool", "Phase", "conninfo", "wrapped"]
