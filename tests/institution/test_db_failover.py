"""What the data layer does when PostgreSQL goes away under it (what a failover looks like to an
API process): retry what provably did not commit, never retry a commit whose outcome is
unknown. The connection is killed for real with ``pg_terminate_backend`` at each stage."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, text

from safescan.api.errors import OutcomeUnknown, StorageError
from safescan.institution import db as dblayer
from safescan.institution.db import Database
from tests.institution.pg import Cluster

pytestmark = pytest.mark.postgres


@pytest.fixture
def database(pg_cluster: Cluster) -> Iterator[tuple[Database, str]]:
    url = pg_cluster.create_database()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, note text)")
        # runs at COMMIT: a window in which to lose the connection while committing
        c.execute(
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF NEW.note = 'slow' THEN PERFORM pg_sleep(3); END IF; RETURN NULL; END $$"
        )
        c.execute(
            "CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED"
            " FOR EACH ROW EXECUTE FUNCTION slow_commit()"
        )
    database = Database(url, pool_size=4)
    try:
        yield database, url
    finally:
        database.dispose()


def _rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as c:
        return c.execute("SELECT id, note FROM t ORDER BY id").fetchall()


def _kill_when(url: str, query_like: str, *, once: bool = True) -> threading.Thread:
    """Terminate the backend(s) running a statement like ``query_like`` as soon as seen."""

    def run() -> None:
        deadline = time.monotonic() + 20
        with psycopg.connect(url, autocommit=True) as c:
            while time.monotonic() < deadline:
                n = c.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE query LIKE %s AND pid <> pg_backend_pid() AND state = 'active'",
                    (query_like,),
                ).fetchone()
                if n and n[0] and once:
                    return
                time.sleep(0.02)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _counting(fn: Callable[[Connection], Any]) -> tuple[Callable[[Connection], Any], list[int]]:
    calls: list[int] = []

    def wrapped(conn: Connection) -> Any:
        calls.append(1)
        return fn(conn)

    return wrapped, calls


@pytest.mark.parametrize("where", ["first statement", "second statement"])
def test_connection_lost_before_commit_is_retried_and_commits_once(
    database: tuple[Database, str], where: str
) -> None:
    db, url = database
    marker = "first" if where == "first statement" else "second"

    def tx(conn: Connection) -> str:
        if marker == "first":
            conn.execute(text("SELECT pg_sleep(0.5), 'first'"))
        conn.execute(text("INSERT INTO t VALUES (1, 'a')"))
        if marker == "second":
            conn.execute(text("SELECT pg_sleep(0.5), 'second'"))
        return "done"

    fn, calls = _counting(tx)
    killer = _kill_when(url, f"%pg_sleep(0.5), '{marker}'%")
    assert db.write(fn) == "done"
    killer.join()
    assert len(calls) == 2  # the killed attempt ran again: nothing of it had committed
    assert _rows(url) == [(1, "a")]


def test_connection_lost_during_commit_is_never_retried(database: tuple[Database, str]) -> None:
    db, url = database
    fn, calls = _counting(lambda c: c.execute(text("INSERT INTO t VALUES (2, 'slow')")))
    killer = _kill_when(url, "COMMIT%")
    with pytest.raises(OutcomeUnknown) as err:
        db.write(fn)
    killer.join()
    assert len(calls) == 1  # ambiguous: not run again
    assert err.value.status == 503 and "Idempotency-Key" in err.value.message
    assert _rows(url) == []  # (here the kill came before the commit record)


@pytest.mark.parametrize("statement", ["SELECT pg_sleep(2), 'one'", "INSERT_THEN_SLEEP"])
def test_connection_lost_in_an_autocommit_statement_is_outcome_unknown(
    database: tuple[Database, str], statement: str
) -> None:
    db, url = database
    if statement == "INSERT_THEN_SLEEP":
        sql = "WITH i AS (INSERT INTO t VALUES (3, 'x') RETURNING id) SELECT pg_sleep(2), 'two'"
        like = "%pg_sleep(2), 'two'%"
    else:
        sql, like = statement, "%pg_sleep(2), 'one'%"
    fn, calls = _counting(lambda c: c.execute(text(sql)).fetchall())
    killer = _kill_when(url, like)
    with pytest.raises(OutcomeUnknown):
        db.write_one(fn)
    killer.join()
    assert len(calls) == 1


def test_a_read_survives_a_lost_connection(database: tuple[Database, str]) -> None:
    db, url = database
    killer = _kill_when(url, "%pg_sleep(0.5), 'read'%")
    fn, calls = _counting(
        lambda c: c.execute(text("SELECT pg_sleep(0.5), 'read', 42")).fetchone()[2]
    )
    assert db.read(fn) == 42
    killer.join()
    assert len(calls) == 2


@pytest.mark.parametrize("call", ["write", "write_one", "read"])
def test_idle_pooled_connections_killed_by_the_server_are_replaced_before_use(
    database: tuple[Database, str], call: str
) -> None:
    """After a failover every idle pooled connection is dead; using one must not make a
    commit's outcome look unknown: the pool swaps it for a new one before sending anything."""
    db, url = database
    conns = [db.engine.connect() for _ in range(4)]
    for c in conns:
        c.execute(text("SELECT 1"))
    for c in conns:
        c.close()  # back to the pool, idle
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    time.sleep(0.2)  # the FIN has reached the pooled sockets
    for k in range(6):
        fn, calls = _counting(
            lambda c, k=k: c.execute(text(f"INSERT INTO t VALUES ({10 + k}, 'p')"))
        )
        if call == "write":
            db.write(fn)
        elif call == "write_one":
            db.write_one(fn)
        else:
            db.read(lambda c: c.execute(text("SELECT 1")).scalar())
            continue
        assert len(calls) == 1
    if call != "read":
        assert [r[0] for r in _rows(url)] == list(range(10, 16))


def test_a_refusing_server_is_retried_then_reported_without_claiming_an_unknown_outcome(
    database: tuple[Database, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """25006 (read-only: a standby answered) is a refusal: nothing committed, so retried."""
    db, url = database
    attempts: list[int] = []

    def tx(conn: Connection) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            conn.execute(text("SET TRANSACTION READ ONLY"))
        conn.execute(text("INSERT INTO t VALUES (20, 'r')"))

    db.write(tx)
    assert len(attempts) == 2 and _rows(url) == [(20, "r")]

    monkeypatch.setattr(db, "failover_wait", 0.5)
    always, calls = _counting(
        lambda c: (
            c.execute(text("SET TRANSACTION READ ONLY")),
            c.execute(text("INSERT INTO t VALUES (21, 'r')")),
        )
    )
    with pytest.raises(StorageError) as err:
        db.write(always)
    assert not isinstance(err.value, OutcomeUnknown)
    assert len(calls) >= 2 and _rows(url) == [(20, "r")]


def test_an_unreachable_database_is_waited_for_then_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.institution.pg import free_port

    monkeypatch.setenv("SAFESCAN_DB_FAILOVER_WAIT", "0.6")
    db = Database(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    try:
        fn, calls = _counting(lambda c: c.execute(text("SELECT 1")))
        for call in (db.write, db.write_one, db.read):
            with pytest.raises(StorageError) as err:
                call(fn)
            assert not isinstance(err.value, OutcomeUnknown)
        assert calls == []  # never connected, never ran
    finally:
        db.dispose()


# --- write_one_async: the payment statement sent from the event loop (pg_async.AsyncPool) ---


def test_connection_lost_in_an_async_statement_is_outcome_unknown_and_not_reused(
    database: tuple[Database, str],
) -> None:
    """The statement is its own commit: a connection lost while it runs is never retried
    (OutcomeUnknown), and that connection is never handed to the next statement."""
    db, url = database
    stmt = "WITH i AS (INSERT INTO t VALUES (30, 'x') RETURNING id) SELECT pg_sleep(2), 'async'"

    async def run() -> list[Any]:
        killer = _kill_when(url, "%pg_sleep(2), 'async'%")
        with pytest.raises(OutcomeUnknown) as err:
            await db.write_one_async(stmt, {})
        killer.join()
        assert err.value.status == 503 and "Idempotency-Key" in err.value.message
        return await db.write_one_async("INSERT INTO t VALUES (31, 'y') RETURNING id", {})

    assert asyncio.run(run()) == [(31,)]  # a fresh connection took the next statement
    assert (31, "y") in _rows(url)


def test_idle_async_connections_killed_by_the_server_are_replaced_before_use(
    database: tuple[Database, str],
) -> None:
    db, url = database

    async def run() -> None:
        # the pool's connections opened at once (as the server's start does), idle
        assert await db.warm_async() == dblayer.pay_threads()
        assert await db.warm_async() == 0  # already open: none more
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        await asyncio.sleep(0.2)  # the FIN has reached the pooled sockets
        for k in range(6):
            rows = await db.write_one_async(
                "INSERT INTO t VALUES (:id, 'p') RETURNING id", {"id": 40 + k}
            )
            assert rows == [(40 + k,)]

    asyncio.run(run())
    assert [r[0] for r in _rows(url)] == list(range(40, 46))


def test_an_async_statement_the_server_refuses_keeps_its_typed_error_and_the_connection(
    database: tuple[Database, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A constraint violation is SQLAlchemy's IntegrityError (as on the threaded path), the
    connection stays usable; an unreachable database is waited for, then a StorageError that
    does not claim an unknown outcome."""
    from sqlalchemy.exc import IntegrityError

    db, url = database

    async def run() -> None:
        await db.write_one_async("INSERT INTO t VALUES (50, 'a')", {})
        with pytest.raises(IntegrityError):
            await db.write_one_async("INSERT INTO t VALUES (50, 'b')", {})
        await db.write_one_async("INSERT INTO t VALUES (51, 'c')", {})

    asyncio.run(run())
    assert _rows(url) == [(50, "a"), (51, "c")]

    from tests.institution.pg import free_port

    monkeypatch.setenv("SAFESCAN_DB_FAILOVER_WAIT", "0.6")
    gone = Database(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    try:
        with pytest.raises(StorageError) as err:
            asyncio.run(gone.write_one_async("SELECT 1", {}))
        assert not isinstance(err.value, OutcomeUnknown)
        assert asyncio.run(gone.warm_async()) == 0  # a start goes on: requests will report
    finally:
        gone.dispose()


def test_an_async_read_survives_a_lost_connection_and_an_unreachable_one_is_reported(
    database: tuple[Database, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_one_async (a payment's Idempotency-Key lookup from the loop) is a read: a
    connection lost while it runs is retried (never "outcome unknown", as a statement that
    writes would be), and an unreachable database is waited for, then a StorageError."""
    from safescan.institution import pg_async

    db, url = database
    calls: list[int] = []
    fetch = pg_async.AsyncPool.fetch

    async def counting(self: Any, *args: Any) -> Any:
        calls.append(1)
        return await fetch(self, *args)

    monkeypatch.setattr(pg_async.AsyncPool, "fetch", counting)

    async def run() -> list[Any]:
        killer = _kill_when(url, "%pg_sleep(0.5), 'aread'%")
        rows = await db.read_one_async("SELECT pg_sleep(0.5), 'aread', 42", {})
        killer.join()
        return rows

    assert [r[2] for r in asyncio.run(run())] == [42]
    assert len(calls) == 2  # lost once, read again

    from tests.institution.pg import free_port

    monkeypatch.setenv("SAFESCAN_DB_FAILOVER_WAIT", "0.6")
    gone = Database(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    try:
        with pytest.raises(StorageError) as err:
            asyncio.run(gone.read_one_async("SELECT 1", {}))
        assert not isinstance(err.value, OutcomeUnknown)
    finally:
        gone.dispose()
