"""One data layer for SQLite (embedded, WAL) and PostgreSQL (psycopg 3): engines, migrations,
and transactions that retry on serialization failures.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import select
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    DisconnectionError,
    OperationalError,
)
from sqlalchemy.pool import ConnectionPoolEntry

from safescan.api.errors import (
    ConfigError,
    InvalidRequest,
    OutcomeUnknown,
    RequestInProgress,
    StorageError,
)
from safescan.api.obslog import current_request_id, reset_request_id, set_request_id
from safescan.code.errors import SafescanError
from safescan.code.numbers import canonical_int, plain_seconds

if TYPE_CHECKING:
    from safescan.institution.pg_async import AsyncPool
    from safescan.institution.writer import GroupCommitter

T = TypeVar("T")
log = logging.getLogger("safescan.institution.db")
DEFAULT_WRITE_DEADLINE = 15.0  # seconds a caller waits for the SQLite writer

MIGRATIONS = Path(__file__).with_name("migrations")
RETRY_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected
DISK_FULL_SQLSTATE = "53100"
# The statement was refused, so nothing of it committed: a standby or a server starting or
# stopping answered (what a failover looks like from a client).
REFUSED_SQLSTATES = frozenset({"25006", "57P03", "08001", "08004"})
# The connection went away (or the server is stopping) while the statement or COMMIT ran:
# whether it committed is not known.
CONNECTION_LOST_SQLSTATES = frozenset({"57P01", "57P02", "08000", "08003", "08006", "08007"})
# How long a request waits for the database to come back (a failover) before answering 503:
# longer than a failover takes, shorter than the clients' timeouts (10 s).
#: how long a write or read waits out a lost or refusing database (a failover) before its
#: typed error, unless SAFESCAN_DB_FAILOVER_WAIT says (:func:`failover_wait`)
DEFAULT_FAILOVER_WAIT_S = 8.0
MAX_FAILOVER_WAIT_S = 3600.0
LOCK_TIMEOUT_SQLSTATE = "55P03"  # lock_not_available: a bounded lock wait ran out
# PostgreSQL ends a transaction left idle this long (a stopped or hung API process), releasing
# its locks and its Idempotency-Key claims
STALLED_TX_TIMEOUT_MS = 30_000
PG_OPTIONS = f"-c idle_in_transaction_session_timeout={STALLED_TX_TIMEOUT_MS}"
PG_CONNECT_TIMEOUT = 5
#: the payment threads (one per pooled PostgreSQL connection), and the connections of
#: write_one_async's pool per event loop, unless SAFESCAN_PAY_THREADS says
DEFAULT_PAY_THREADS = 4
MAX_PAY_THREADS = 256


def failover_wait() -> float:
    """``SAFESCAN_DB_FAILOVER_WAIT`` (seconds, 0 to :data:`MAX_FAILOVER_WAIT_S`, plain digits),
    else :data:`DEFAULT_FAILOVER_WAIT_S`; a :class:`ConfigError` naming the variable otherwise.
    Read when a :class:`Database` is made (before: ``float()`` at import, so ``"x"`` was a
    ``ValueError`` traceback for every command that imported this module, even ``--help``, and
    ``nan``, ``inf`` or ``-5`` were taken: never waiting, or waiting for ever)."""
    text = os.environ.get("SAFESCAN_DB_FAILOVER_WAIT")
    if text is None:
        return DEFAULT_FAILOVER_WAIT_S
    try:
        return plain_seconds(
            text, field="SAFESCAN_DB_FAILOVER_WAIT", minimum=0.0, maximum=MAX_FAILOVER_WAIT_S
        )
    except SafescanError as exc:
        raise ConfigError(f"SAFESCAN_DB_FAILOVER_WAIT: {exc.message}") from None


def pay_threads() -> int:
    """``SAFESCAN_PAY_THREADS`` (1 to :data:`MAX_PAY_THREADS`, in its one spelling), else
    :data:`DEFAULT_PAY_THREADS`; a :class:`ConfigError` naming the variable otherwise (before:
    ``int()`` read ``"1_0"``, ``" 8"``, ``"+8"`` and ``"８"``, and ``"x"`` was a
    ``ValueError`` traceback at the server's start)."""
    text = os.environ.get("SAFESCAN_PAY_THREADS")
    if text is None:
        return DEFAULT_PAY_THREADS
    try:
        return canonical_int(text, field="SAFESCAN_PAY_THREADS", minimum=1, maximum=MAX_PAY_THREADS)
    except SafescanError as exc:
        raise ConfigError(f"SAFESCAN_PAY_THREADS: {exc.message}") from None


def storage_error(exc: DBAPIError) -> StorageError:
    """The typed error for a storage failure, saying plainly when the disk is full."""
    orig = getattr(exc, "orig", None)
    if "database or disk is full" in str(orig) or getattr(orig, "sqlstate", None) == (
        DISK_FULL_SQLSTATE
    ):
        return StorageError(
            "the database's disk is full: nothing was recorded; retry once space is freed"
        )
    return StorageError("the database is unavailable; retry later")


MAX_ATTEMPTS = 12


def normalize_url(url: str) -> str:
    """``sqlite:///path`` or ``postgresql://...``; PostgreSQL always goes through psycopg 3."""
    if not isinstance(url, str) or not url:
        raise ConfigError("a database URL is required, e.g. sqlite:///institution.db")
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"not a database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError("SQLite needs a file: sqlite:///path/to/institution.db")
        return parsed.set(drivername="sqlite+pysqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ConfigError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def connection_lost(exc: DBAPIError) -> bool:
    """Whether ``exc`` is a lost or unusable connection (outcome of a statement in flight
    unknown), as opposed to an error the server answered with."""
    state = getattr(exc.orig, "sqlstate", None)
    if state in CONNECTION_LOST_SQLSTATES or exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError) and state is None


def statement_refused(exc: DBAPIError) -> bool:
    """Whether the server refused the statement because it is not (or not yet) a writable
    primary: nothing of it committed, so it may run again once a primary answers."""
    return getattr(exc.orig, "sqlstate", None) in REFUSED_SQLSTATES


def _pg_checkout(dbapi_conn: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
    """An idle pooled connection has nothing to read; if it has, the server (or HAProxy
    during a failover) closed it. Replace it before a statement is sent on it, so a dead
    connection never makes a commit's outcome look unknown. (A connection's first checkout is
    not polled: it was just made, and its replacement must not be refused in turn.)"""
    if not record.info.get("safescan_used"):
        record.info["safescan_used"] = True
        return
    try:
        poller = select.poll()
        poller.register(dbapi_conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        ready = poller.poll(0)
    except (OSError, ValueError, AttributeError) as exc:
        raise DisconnectionError(f"unusable pooled connection: {exc}") from None
    if ready:
        raise DisconnectionError("the server closed this pooled connection")


def _sqlite_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_begin)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


#: set in a pooled SQLite connection's ``info`` while the writer thread's transaction is open
#: on it (safescan.institution.writer): SQLAlchemy's own begin then sends no BEGIN
WRITER_TX = "safescan_writer_tx"


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the write lock at BEGIN: no lock upgrades, so no SQLITE_BUSY deadlocks.
    if conn.connection.info.get(WRITER_TX):
        return  # inside the writer's BEGIN IMMEDIATE already
    if conn.get_execution_options().get("safescan_read"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, *, pool_size: int = 8) -> Engine:
    """An engine for ``url`` with the safescan settings for its dialect."""
    norm = normalize_url(url)
    if norm.startswith("sqlite"):
        engine = create_engine(
            norm,
            pool_size=pool_size,
            max_overflow=8,
            connect_args={"check_same_thread": False, "timeout": 10},
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    engine = create_engine(
        norm,
        pool_size=pool_size,
        max_overflow=8,
        pool_pre_ping=False,  # _pg_checkout finds closed connections without a round trip
        pool_recycle=1800,  # below any idle timeout of a proxy in between (HAProxy: 1 h)
        isolation_level="READ COMMITTED",
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT, "options": PG_OPTIONS},
    )
    event.listen(engine, "checkout", _pg_checkout)
    return engine


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config  # imported lazily: API processes only check the revision

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (default: the newest migration)."""
    from alembic import command

    try:
        with engine.connect() as conn:
            command.upgrade(_alembic_config(conn), revision)
            conn.commit()
    except DBAPIError as exc:
        raise StorageError(f"cannot migrate the database: {exc.orig}") from None


def schema_revisions(engine: Engine) -> tuple[str | None, str]:
    """(the database's migration revision or None if it has none, the newest revision)."""
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            head = _newest_revision(conn)
    except DBAPIError as exc:
        raise StorageError(f"cannot read the database's schema revision: {exc.orig}") from None
    return current, head


_NEWEST: list[str] = []  # the newest migration this release ships, once read (it is code)


def _newest_revision(conn: Connection) -> str:
    """The newest migration revision this release ships, read from the migration scripts once
    per process: a readiness probe made while the process is out of descriptors must not
    depend on opening them again."""
    if _NEWEST:
        return _NEWEST[0]
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(conn)).get_current_head()
    if head is None:
        raise ConfigError(f"no migration scripts could be read from {MIGRATIONS}")
    _NEWEST.append(head)
    return head


def schema_is_current(engine: Engine) -> bool:
    """Whether the database is at the newest migration."""
    current, head = schema_revisions(engine)
    return current is not None and current == head


def require_current_schema(engine: Engine) -> None:
    """Raise :class:`ConfigError` unless the database is initialised and at the newest
    migration (what the API processes and the operator commands need)."""
    current, head = schema_revisions(engine)
    if current is None:
        raise ConfigError("this database is not initialised: run `safescan institution init`")
    if current != head:
        raise ConfigError(
            "the database schema is not current: run `safescan institution migrate` (or `init`"
            " for a new database)"
        )


def is_retryable(exc: BaseException) -> bool:
    """Serialization failure / deadlock (PostgreSQL) or a busy database (SQLite)."""
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        sqlstate = getattr(orig, "sqlstate", None)
        if sqlstate in RETRY_SQLSTATES:
            return True
        if isinstance(exc, OperationalError) and "database is locked" in str(orig):
            return True
    return False


def data_error() -> InvalidRequest:
    """The typed error for a value the database refuses to store."""
    return InvalidRequest("a value cannot be stored (out of range or contains invalid characters)")


class _Phase:
    """Where an attempt got to: once ``committing`` is set, a lost connection leaves the
    outcome unknown."""

    __slots__ = ("committing",)

    def __init__(self) -> None:
        self.committing = False


class _Retry:
    """One write's retry budget: what to do after each failed attempt (see
    :meth:`Database._retrying`; the same for the threaded and the event-loop path)."""

    __slots__ = ("delay", "failover_until", "failover_wait", "n")

    def __init__(self, failover_wait: float) -> None:
        self.delay = 0.002
        self.failover_until: float | None = None
        self.failover_wait = failover_wait
        self.n = 0

    def after(self, exc: DBAPIError, phase: _Phase) -> float:
        """Seconds to wait before the next attempt, or raise the error the caller gets."""
        if getattr(exc.orig, "sqlstate", None) == LOCK_TIMEOUT_SQLSTATE:
            raise RequestInProgress(
                "a request with this Idempotency-Key is still being processed; retry"
                " with the same key to get its answer"
            ) from None
        self.n += 1
        if is_retryable(exc) and self.n < MAX_ATTEMPTS:
            wait = self.delay * (0.5 + random.random())
            self.delay = min(self.delay * 2, 0.5)
            return wait
        lost = connection_lost(exc)
        if lost and phase.committing:
            raise OutcomeUnknown(
                "the connection to the database was lost while committing: the"
                " outcome is unknown; retry with the same Idempotency-Key to learn it"
            ) from exc
        if lost or statement_refused(exc):
            now = time.monotonic()
            self.failover_until = self.failover_until or now + self.failover_wait
            if now < self.failover_until:
                wait = min(self.delay, 0.25) * (0.5 + random.random())
                self.delay = min(max(self.delay * 2, 0.02), 0.25)
                return wait
            raise storage_error(exc) from exc
        if isinstance(exc, OperationalError):
            raise storage_error(exc) from exc
        raise exc


def _carrying_request_id(fn: Callable[[Connection], T], rid: str) -> Callable[[Connection], T]:
    def run(conn: Connection) -> T:
        token = set_request_id(rid)
        try:
            return fn(conn)
        finally:
            reset_request_id(token)

    return run


def _wake(waiter: asyncio.Future[None]) -> None:
    """Resolve ``waiter`` unless it already is (woken, timed out or cancelled)."""
    if not waiter.done():
        waiter.set_result(None)


class Database:
    """An engine plus the transaction discipline every write goes through."""

    def __init__(
        self, url: str, *, pool_size: int = 16, write_deadline: float = DEFAULT_WRITE_DEADLINE
    ) -> None:
        #: seconds a lost or refusing database is waited out (:func:`failover_wait`)
        self.failover_wait = failover_wait()
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name
        self.write_deadline = write_deadline
        self._write_lock = threading.Lock()
        self._committer: GroupCommitter | None = None
        self.writer_restarts = 0
        self.writer_last_crash: str | None = None
        # PostgreSQL: write_one_async's connections, one pool per event loop
        self._async_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncPool] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def is_sqlite(self) -> bool:
        """Whether this is the embedded SQLite store."""
        return self.dialect == "sqlite"

    def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction; retry with back-off on serialization failures.

        On PostgreSQL a lost connection or a refusing server (a failover) before COMMIT is
        retried too, for up to ``failover_wait``: without COMMIT nothing was committed. A
        connection lost *during* COMMIT raises :class:`OutcomeUnknown` and is never retried
        here: only the caller's idempotency key can tell whether it committed.

        On SQLite, ``fn`` runs in a savepoint of a group-committed transaction (see
        :class:`~safescan.institution.writer.GroupCommitter`); it must not call :meth:`write`
        itself. A caller waits at most :attr:`write_deadline` seconds (see :meth:`_overdue`).
        """
        if self.is_sqlite:
            fut = self.submit(fn)
            try:
                return fut.result(timeout=self.write_deadline)
            except FutureTimeout:
                raise self._overdue(fut) from None

        def attempt(phase: _Phase) -> T:
            with self.engine.connect() as conn, conn.begin():
                result = fn(conn)
                phase.committing = True  # leaving the block sends COMMIT
            return result

        return self._retrying(attempt)

    async def write_async(self, fn: Callable[[Connection], T]) -> T:
        """SQLite: :meth:`write` for an event loop (the loop is not blocked while waiting).

        The loop waits on one future of its own, woken by the writer thread's completion
        callback or by a timer at :attr:`write_deadline` (then :meth:`_overdue`). A cancelled
        caller leaves the write alone, as ``asyncio.shield`` did: it is never withdrawn by the
        cancellation (this replaced ``wait_for(shield(wrap_future()))``, three futures, a
        task-less wait and their callbacks per payment).
        """
        fut = self.submit(fn)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def done(_: Future[T]) -> None:  # in the writer thread (or here, if already done)
            if not loop.is_closed():  # a loop gone since (shut down) has no one waiting
                loop.call_soon_threadsafe(_wake, waiter)

        fut.add_done_callback(done)
        timer = loop.call_later(self.write_deadline, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
        if not fut.done():  # the deadline passed first
            raise self._overdue(fut)
        return fut.result()

    def _overdue(self, fut: Future[Any]) -> Exception:
        """A write waited past the deadline: withdrawn if it had not started (nothing was
        done), else still running (its outcome is not known yet)."""
        if fut.cancel():
            return StorageError(
                f"the database did not take the write within {self.write_deadline:g} s; it was"
                " withdrawn and nothing was recorded; retry"
            )
        return RequestInProgress(
            "the request is still being processed; its outcome is not known yet: retry with"
            " the same Idempotency-Key"
        )

    def write_one(self, fn: Callable[[Connection], T]) -> T:
        """PostgreSQL: run ``fn``, which issues exactly one statement, as its own transaction
        (autocommit: the statement and its commit are one round trip). Retries and error
        mapping as :meth:`write`; a statement that raises changes nothing, and a connection
        lost while it runs raises :class:`OutcomeUnknown` (it may have committed)."""
        if self.is_sqlite:
            raise StorageError("write_one() is for PostgreSQL; SQLite writes go through write()")

        def attempt(phase: _Phase) -> T:
            with self.engine.connect() as conn:
                autocommit = conn.execution_options(isolation_level="AUTOCOMMIT")
                phase.committing = True  # the statement is its own commit
                return fn(autocommit)

        return self._retrying(attempt)

    def _retrying(self, attempt: Callable[[_Phase], T]) -> T:
        """Run ``attempt`` until it commits: back-off on serialization failures and deadlocks,
        and while a failover makes the database unreachable (only where nothing can have
        committed); plain errors for bad values and an unavailable (or full) database."""
        retry = _Retry(self.failover_wait)
        while True:
            phase = _Phase()
            try:
                return attempt(phase)
            except DataError:
                raise data_error() from None
            except DBAPIError as exc:
                time.sleep(retry.after(exc, phase))

    async def write_one_async(self, statement: str, params: dict[str, Any]) -> list[Any]:
        """PostgreSQL: :meth:`write_one` of one plain statement (``:name`` parameters, as
        :mod:`safescan.institution.sql`), sent from the running event loop on psycopg's async
        connections (:mod:`safescan.institution.pg_async`): no worker thread, no engine
        checkout; the same retries and errors as :meth:`write_one`. Returns its rows."""
        if self.is_sqlite:
            raise StorageError("write_one_async() is for PostgreSQL")
        from safescan.institution import sql

        pool = self._async_pool()
        text = sql.pg_text(statement)
        retry = _Retry(self.failover_wait)
        while True:
            phase = _Phase()
            try:
                return list(await pool.fetch(text, params, phase))
            except DataError:
                raise data_error() from None
            except DBAPIError as exc:
                await asyncio.sleep(retry.after(exc, phase))

    async def read_one_async(self, statement: str, params: dict[str, Any]) -> list[Any]:
        """PostgreSQL: :meth:`read` of one plain statement (``:name`` parameters), sent from
        the running event loop on :meth:`write_one_async`'s connections (autocommitted: one
        statement, one snapshot, as :meth:`read`'s transaction). The same errors as
        :meth:`read`: a lost connection or a refusing server (a failover) is retried for up to
        ``failover_wait`` (reading changes nothing, so it is never "outcome unknown"). Returns
        its rows."""
        if self.is_sqlite:
            raise StorageError("read_one_async() is for PostgreSQL")
        from safescan.institution import sql

        pool = self._async_pool()
        text = sql.pg_text(statement)
        failover_until: float | None = None
        delay = 0.02
        while True:
            try:
                return list(await pool.fetch(text, params, _Phase()))
            except DataError:
                raise InvalidRequest(
                    "a value is out of range or contains invalid characters"
                ) from None
            except OperationalError as exc:
                if connection_lost(exc) or statement_refused(exc):
                    now = time.monotonic()
                    failover_until = failover_until or now + self.failover_wait
                    if now < failover_until:
                        await asyncio.sleep(delay * (0.5 + random.random()))
                        delay = min(delay * 2, 0.25)
                        continue
                raise storage_error(exc) from exc

    async def warm_async(self) -> int:
        """PostgreSQL: open :meth:`write_one_async`'s connections for the running loop before
        the first requests need them (the server's start); how many opened. Nothing to do on
        SQLite; a database unreachable now is left for the requests (they wait and report)."""
        if self.is_sqlite:
            return 0
        return await self._async_pool().warm()

    def _async_pool(self) -> AsyncPool:
        """The running event loop's pool of async connections (made on first use)."""
        from safescan.institution.pg_async import AsyncPool, conninfo

        loop = asyncio.get_running_loop()
        pool = self._async_pools.get(loop)
        if pool is None:
            kwargs = conninfo(self.engine.url, PG_OPTIONS, PG_CONNECT_TIMEOUT)
            pool = self._async_pools[loop] = AsyncPool(kwargs, pay_threads())
        return pool

    def submit(self, fn: Callable[[Connection], T]) -> Future[T]:
        """SQLite only: queue ``fn`` for the group committer; returns a future. A writer
        thread that has died is replaced (and counted: see :meth:`writer_status`)."""
        if not self.is_sqlite:
            raise StorageError("submit() is for the embedded SQLite store")
        rid = current_request_id()
        if rid is not None:  # the writer thread records the request's id (audit entries)
            fn = _carrying_request_id(fn, rid)
        return self._writer().enqueue(fn)

    def _writer(self) -> GroupCommitter:
        committer = self._committer
        if committer is not None and committer.alive:  # every write but the first: no lock
            return committer
        from safescan.institution.writer import GroupCommitter

        with self._write_lock:
            committer = self._committer
            if committer is not None and not committer.alive:
                self.writer_restarts += 1
                self.writer_last_crash = committer.crashed or "ended"
                log.error("restarting the database writer (%s)", self.writer_last_crash)
                committer = None
            if committer is None:
                committer = self._committer = GroupCommitter(self.engine)
            return committer

    def start_writer(self) -> None:
        """SQLite: start the writer thread now (a server's start) rather than on the first
        write, which otherwise paid for it (a thread and the WAL checkpointer's, ~12 ms of
        CPU measured on the first payment). Nothing on PostgreSQL."""
        if self.is_sqlite:
            self._writer()

    def writer_status(self) -> dict[str, Any]:
        """The SQLite writer for health checks: ``{"alive": ..., "queued": ...}``; on
        PostgreSQL there is none (``{"alive": True, "kind": "none"}``)."""
        if not self.is_sqlite:
            return {"alive": True, "kind": "none"}
        committer = self._committer
        if committer is None:
            doc: dict[str, Any] = {"alive": True, "started": False}
        else:
            doc = committer.status() | {"started": True}
        return doc | {"restarts": self.writer_restarts, "last_crash": self.writer_last_crash}

    def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` on a read-only snapshot (no write lock taken). A lost connection (a
        failover) is retried for up to ``failover_wait``: reading changes nothing."""
        failover_until: float | None = None
        delay = 0.02
        while True:
            try:
                with self.engine.connect() as conn:
                    conn.execution_options(safescan_read=True)
                    try:
                        return fn(conn)
                    finally:
                        conn.rollback()
            except DataError:
                raise InvalidRequest(
                    "a value is out of range or contains invalid characters"
                ) from None
            except OperationalError as exc:
                if not self.is_sqlite and (connection_lost(exc) or statement_refused(exc)):
                    now = time.monotonic()
                    failover_until = failover_until or now + self.failover_wait
                    if now < failover_until:
                        time.sleep(delay * (0.5 + random.random()))
                        delay = min(delay * 2, 0.25)
                        continue
                raise storage_error(exc) from exc

    def dispose(self) -> None:
        """Stop the writer and close all pooled connections."""
        if self._committer is not None:
            self._committer.close()
            self._committer = None
        for pool in list(self._async_pools.values()):
            pool.close()
        self._async_pools.clear()
        self.engine.dispose()
