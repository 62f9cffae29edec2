"""SQLite's single writer thread, with group commit, that survives any error of one batch.

SQLite has one writer at a time, and a commit costs more than a payment's statements. One
thread per process runs every write: it takes all waiting write functions, runs each in its own
SAVEPOINT inside one ``BEGIN IMMEDIATE`` transaction (a failing function rolls back only its
savepoint and gets its exception), commits once, and only then answers each caller. So nothing
is acknowledged before it is committed, and a burst of N payments costs one commit.

Failure rules (docs/reliability.md, "The SQLite writer"):

* An error of one batch fails only that batch's futures, with a typed
  :class:`~safescan.api.errors.StorageError`, and the thread goes on with the next batch, whatever
  the error is (a database error, ``OSError`` such as ``EMFILE``, anything else).
* The message says "nothing was recorded" only when the error came before the commit; an error
  *during* the commit says the outcome is not known (retry with the same Idempotency-Key).
* A queued write that has not started can be cancelled by a caller that gave up waiting (it
  then never runs); once its batch holds the write lock it runs to the end.
* :meth:`GroupCommitter.status` tells health and readiness checks whether the thread is alive,
  how long the oldest write has waited and what the last batch error was.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import logging
import os
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DataError, DBAPIError, OperationalError

from safescan.api.errors import StorageError
from safescan.institution import sql
from safescan.institution.db import (
    MAX_ATTEMPTS,
    WRITER_TX,
    data_error,
    is_retryable,
    storage_error,
)
from safescan.institution.wal import NO_AUTOCHECKPOINT, WalCheckpointer

T = TypeVar("T")
log = logging.getLogger("safescan.institution.writer")

_SAVEPOINT = "SAVEPOINT safescan_write"
_RELEASE = "RELEASE safescan_write"

Work = tuple[Callable[[Connection], Any], Future[Any], float]


def _undo(raw: sqlite3.Connection, savepoint: bool) -> None:
    """Undo one write function's statements: to its savepoint (the group's other writes stay)
    or, for a lone write (no savepoint), the whole transaction."""
    if savepoint:
        raw.execute("ROLLBACK TO safescan_write")
        raw.execute(_RELEASE)
    else:
        raw.rollback()


def batch_error(exc: BaseException, *, committing: bool) -> StorageError:
    """The typed error every caller of a failed batch gets."""
    if isinstance(exc, DBAPIError):
        err = storage_error(exc)
    elif isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        err = StorageError(
            "the institution has run out of file descriptors: nothing was recorded; retry shortly"
        )
    elif isinstance(exc, OSError):
        err = StorageError(
            f"the database writer hit an operating-system error ({exc.strerror or exc}):"
            " nothing was recorded; retry shortly"
        )
    else:
        err = StorageError(
            f"the database writer failed ({type(exc).__name__}): nothing was recorded; retry"
        )
    if committing:
        err = StorageError(
            "the database failed while committing: the outcome is not known; retry with the"
            " same Idempotency-Key to learn it"
        )
    return err


class GroupCommitter:
    """SQLite's single writer, with group commit (see the module docstring)."""

    def __init__(self, engine: Engine, max_batch: int = 128) -> None:
        self.engine, self.max_batch = engine, max_batch
        # Writers of several processes queue on an flock (woken at once on release) instead of
        # SQLite's busy handler, which sleeps in growing steps. The lock file stays open: a
        # writer must not need a new descriptor for every batch.
        database = engine.url.database
        self._lock_path = f"{database}.writer-lock" if database else None
        self._lock_fd: int | None = None
        # The hand-off (see :meth:`enqueue`): a deque (append and popleft are atomic) and a
        # wake-up queue the writer blocks on only when it has nothing to do.
        self._pending: collections.deque[Work] = collections.deque()
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._sleeping = False
        self._closed = False
        self.batches = 0
        self.failed_batches = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.crashed: str | None = None  # why the thread ended, if it ended on its own
        self._dying = threading.Lock()  # taken by the writer only while it dies (enqueue)
        # checkpoints in their own thread, not inside a commit (safescan.institution.wal)
        self._wal = WalCheckpointer(database) if database else None
        # the writer's connection, kept from one batch to the next (a pool checkout and return
        # per group cost more than a small group's statements); dropped after any batch error
        self._conn: Connection | None = None
        self._thread = threading.Thread(target=self._run, name="safescan-writer", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the writer thread runs (and is not dying: see :meth:`enqueue`)."""
        return self.crashed is None and self._thread.is_alive()

    def enqueue(self, fn: Callable[[Connection], T]) -> Future[T]:
        """Queue ``fn`` for the next group; the future resolves once the group is committed."""
        fut: Future[T] = Future()
        if self._closed:
            raise StorageError("the database is closed")
        # under the lock the writer takes only while it dies (never otherwise: no contention),
        # so a write is either queued before the dying writer fails what is queued, or refused
        # here; never left behind in the queue of a thread that is gone
        with self._dying:
            if not self.alive:
                raise StorageError("the database writer has stopped; nothing was recorded")
            self._pending.append((fn, fut, time.monotonic()))
        # Wake the writer only if it sleeps: a busy writer takes this write with its next
        # group. No lock is shared with the writer thread (a Condition here cost the event loop
        # a lock round trip with the writer per payment). The writer sets ``_sleeping`` before
        # it looks at the queue one last time, so a write appended here is either seen by that
        # look or wakes it.
        if self._sleeping:
            self._wake.put(None)
        return fut

    def status(self) -> dict[str, Any]:
        """For health and readiness: alive, queue length, oldest wait (s), last error."""
        pending = list(self._pending)  # a copy, taken at once
        oldest = min((t for _, f, t in pending if not f.done()), default=None)
        queued = len(pending)
        return {
            "alive": self.alive,
            "queued": queued,
            "oldest_wait_s": round(time.monotonic() - oldest, 3) if oldest is not None else 0.0,
            "batches": self.batches,
            "failed_batches": self.failed_batches,
            "last_error": self.last_error,
            "last_error_age_s": (
                round(time.monotonic() - self.last_error_at, 1)
                if self.last_error_at is not None
                else None
            ),
            "crashed": self.crashed,
        }

    def close(self) -> None:
        """Finish the queued work and stop the writer thread."""
        self._closed = True
        self._wake.put(None)
        self._thread.join(10)
        if self._wal is not None:
            self._wal.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _run(self) -> None:
        batch: list[Work] = []
        pending = self._pending
        try:
            while True:
                if not pending:
                    self._sleeping = True
                    while not pending and not self._closed:
                        self._wake.get()
                    self._sleeping = False
                    while not self._wake.empty():  # wake-ups for writes already seen
                        self._wake.get_nowait()
                    if not pending:  # closed, and nothing left
                        self._drop_connection()
                        return
                while pending and len(batch) < self.max_batch:
                    batch.append(pending.popleft())
                self._run_batch(batch)
                batch = []
        except BaseException as exc:  # noqa: BLE001 - recorded; health reports a dead writer
            self._drop_connection()
            log.critical("the database writer thread stopped: %s", type(exc).__name__)
            failed = batch
            with self._dying:
                self.crashed = f"{type(exc).__name__}: {exc}"[:200]
                while pending:
                    failed.append(pending.popleft())
            for _, fut, _ in failed:
                if fut.done():
                    continue
                if fut.running() or fut.set_running_or_notify_cancel():
                    fut.set_exception(StorageError("the database writer stopped; retry"))

    def _lock(self) -> int | None:
        """The cross-process write lock's descriptor (opened once), locked."""
        if self._lock_path is None:
            return None
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        return self._lock_fd

    def _run_batch(self, batch: list[Work]) -> None:
        """Run one batch; whatever goes wrong fails only this batch's futures."""
        self.batches += 1
        started = False
        committing = False
        try:
            fd = self._lock()
            try:
                # from here the batch runs: callers can no longer withdraw their writes
                batch = [w for w in batch if w[1].set_running_or_notify_cancel()]
                started = True
                if not batch:
                    return
                outcomes = self._attempts(batch)
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        except _Committing as exc:
            committing = True
            self._fail(batch, exc.cause, committing=True, started=started)
            return
        except Exception as exc:  # noqa: BLE001 - any error of one batch: typed, and go on
            self._fail(batch, exc, committing=committing, started=started)
            return
        for fut, result, error in outcomes:
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

    def _fail(
        self, batch: list[Work], exc: BaseException, *, committing: bool, started: bool
    ) -> None:
        self._drop_connection()  # the next batch starts on a fresh connection
        self.failed_batches += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:200]
        self.last_error_at = time.monotonic()
        log.error("a database write batch failed (%d writes): %s", len(batch), self.last_error)
        err = batch_error(exc, committing=committing)
        for _, fut, _ in batch:
            if not started and not fut.set_running_or_notify_cancel():
                continue  # withdrawn by its caller
            fut.set_exception(err)

    def _attempts(self, batch: list[Work]) -> list[tuple[Future[Any], Any, BaseException | None]]:
        """Run the batch, retrying it while SQLite is busy; returns each write's outcome."""
        delay = 0.002
        for attempt in range(MAX_ATTEMPTS):
            try:
                return self._once(batch)
            except DBAPIError as exc:
                if is_retryable(exc) and attempt < MAX_ATTEMPTS - 1:
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.5)
                    continue
                raise
        raise StorageError("the database stayed busy; retry later")  # pragma: no cover

    def _connection(self) -> Connection:
        """The writer's connection: the one kept from the last batch, or a new one."""
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            self._drop_connection()
            conn = self._conn = self.engine.connect()
        return conn

    def _drop_connection(self) -> None:
        """Give the kept connection back to the pool (after an error, or when stopping): the
        next batch starts on a fresh checkout, as after any failure before."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # noqa: BLE001 - a broken connection is dropped anyway
                log.error("closing the writer's connection failed: %s", type(exc).__name__)

    def _once(self, batch: list[Work]) -> list[tuple[Future[Any], Any, BaseException | None]]:
        try:
            return self._in_transaction(self._connection(), batch)
        except BaseException:
            self._drop_connection()
            raise

    def _in_transaction(
        self, conn: Connection, batch: list[Work]
    ) -> list[tuple[Future[Any], Any, BaseException | None]]:
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        record = conn.connection
        raw = record.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        wal = self._wal
        if wal is not None and not record.info.get("safescan_wal"):
            raw.execute(NO_AUTOCHECKPOINT)
            record.info["safescan_wal"] = True
        # The transaction is driven on the driver's connection (BEGIN IMMEDIATE, a
        # SAVEPOINT per write, COMMIT): SQLAlchemy's begin() and commit() cost more than a
        # payment's statements. A write function that runs a SQLAlchemy statement makes
        # SQLAlchemy begin its own (logical) transaction; db._sqlite_begin then sends
        # nothing, since WRITER_TX says this connection is inside the writer's.
        self._begin(conn)
        record.info[WRITER_TX] = True
        # A savepoint per write only when the group has several (a failing write then undoes
        # only its own statements); a lone write that fails rolls the transaction back whole.
        savepoints = len(batch) > 1
        try:
            for fn, fut, _ in batch:
                if savepoints:
                    raw.execute(_SAVEPOINT)
                try:
                    result = fn(conn)
                except DataError:
                    _undo(raw, savepoints)
                    outcomes.append((fut, None, data_error()))
                except OperationalError as exc:  # e.g. SQLite cannot open a journal file
                    _undo(raw, savepoints)
                    outcomes.append((fut, None, storage_error(exc)))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    _undo(raw, savepoints)
                    outcomes.append((fut, None, exc))
                else:
                    if savepoints:
                        raw.execute(_RELEASE)
                    outcomes.append((fut, result, None))
            if not raw.in_transaction:  # a lone write failed: nothing to commit
                return outcomes
            try:
                self._commit(conn)
            except DBAPIError:
                # a COMMIT SQLite refuses commits nothing (rolled back below): retried if
                # busy, else typed
                raise
            except Exception as exc:
                raise _Committing(exc) from exc
        finally:
            record.info.pop(WRITER_TX, None)
            if raw.in_transaction:  # an error before or in COMMIT: nothing stays
                raw.rollback()
            if conn.in_transaction():  # SQLAlchemy's own bookkeeping, no SQL is left
                conn.rollback()
        if wal is not None:
            wal.commits += 1
            if wal.due or (not wal.alive and wal.commits % 256 == 0):
                self._checkpoint(wal, conn)
        return outcomes

    @staticmethod
    def _begin(conn: Connection) -> None:
        """``BEGIN IMMEDIATE`` on the driver's connection (the write lock at once: no lock
        upgrade, so no SQLITE_BUSY deadlock); driver errors as SQLAlchemy's."""
        sql.run(conn, "BEGIN IMMEDIATE", {})

    @staticmethod
    def _commit(conn: Connection) -> None:
        """``COMMIT`` on the driver's connection; driver errors as SQLAlchemy's."""
        sql.run(conn, "COMMIT", {})

    @staticmethod
    def _checkpoint(wal: WalCheckpointer, conn: Connection) -> None:
        """The writer checkpoints itself (the log outgrew the checkpoint thread, or it
        stopped): after the commit, outside any transaction; what was committed stays."""
        try:
            wal.checkpoint(conn.connection.driver_connection)  # type: ignore[arg-type]
        except sqlite3.Error as exc:
            log.error("a WAL checkpoint failed (the commit stands): %s", exc)


class _Committing(Exception):
    """Internal: the commit itself failed (the outcome is not known)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


__all__ = ["GroupCommitter", "batch_error"]
