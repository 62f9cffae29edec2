"""The SQLite writer thread under faults, and descriptor exhaustion of a real server.

* Injected exceptions of every kind in one batch (``OSError`` EMFILE, a plain ``RuntimeError``,
  a database error, a failing commit) fail only that batch's writes, with a typed
  ``StorageError``, and the next batch commits; a writer thread that dies anyway is reported
  by ``/health`` and replaced at the next write.
* A write that waits past the deadline is withdrawn if it has not started (it then never runs)
  or answered "still in progress" if it has.
* A real server with ``RLIMIT_NOFILE`` 160 and hundreds of idle connections keeps serving
  writes (idle connections are evicted and timed out; the number of connections stays
  bounded); a server whose descriptor limit is lowered under it (``prlimit``) answers writes
  with a typed 503 at once, keeps its writer, and serves again when descriptors are back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, insert
from sqlalchemy.exc import OperationalError

from safescan.api.errors import RequestInProgress, StorageError
from safescan.institution import sql
from safescan.institution.config import ENV_CHECKPOINT_INTERVAL
from safescan.institution.db import Database
from safescan.institution.models import Counter
from safescan.institution.writer import GroupCommitter
from tests.faults.common import audit
from tests.faults.writerkit import counter_names, counters_db, put
from tests.institution.harness import ServerProcess, World, b64, init_db

# --- in-process: injected exceptions ----------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with counters_db(tmp_path / "w.db", write_deadline=5) as d:
        yield d


class _Once:
    """Make ``target.attr`` raise ``exc`` on its next call only."""

    def __init__(self, target: Any, attr: str, exc: BaseException) -> None:
        self.target, self.attr, self.exc = target, attr, exc
        self.real = getattr(target, attr)

    def __enter__(self) -> _Once:
        def failing(*a: Any, **k: Any) -> Any:
            setattr(self.target, self.attr, self.real)
            raise self.exc

        setattr(self.target, self.attr, failing)
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(self.target, self.attr, self.real)


INJECTED = [
    pytest.param(OSError(errno.EMFILE, "Too many open files"), "file descriptors", id="EMFILE"),
    pytest.param(OSError(errno.ENFILE, "File table overflow"), "file descriptors", id="ENFILE"),
    pytest.param(OSError(errno.EIO, "Input/output error"), "operating-system", id="EIO"),
    pytest.param(RuntimeError("a bug"), "RuntimeError", id="RuntimeError"),
    pytest.param(MemoryError(), "MemoryError", id="MemoryError"),
    pytest.param(
        OperationalError("BEGIN", {}, Exception("unable to open database file")),
        "database",
        id="database-error",
    ),
]


@pytest.mark.parametrize(("exc", "says"), INJECTED)
@pytest.mark.parametrize("where", ["lock", "connection", "connect"])
def test_any_error_of_one_batch_fails_only_that_batch(
    db: Database, exc: BaseException, says: str, where: str
) -> None:
    assert db.write(put("warm")) == "warm"  # the writer runs
    committer = db._writer()
    if where == "connect":
        # the writer keeps its connection between batches: a failed batch drops it, so the
        # next batch checks a new one out of the pool (engine.connect), which fails here
        with (
            _Once(committer, "_lock", RuntimeError("drop the kept connection")),
            pytest.raises(StorageError),
        ):
            db.write(put("dropped"))
        committer.failed_batches -= 1  # that one was only the set-up of this case
    targets = {
        "lock": (committer, "_lock"),
        "connection": (committer, "_connection"),
        "connect": (db.engine, "connect"),
    }
    target, attr = targets[where]
    with _Once(target, attr, exc):
        futures = [db.submit(put(f"lost{i}")) for i in range(3)]
        for fut in futures:
            with pytest.raises(StorageError) as info:
                fut.result(10)
            assert says in info.value.message
            assert "nothing was recorded" in info.value.message or says == "database"
    # the same thread goes on: the next batch commits
    assert db.write(put("after")) == "after"
    assert committer.alive and db._writer() is committer
    assert counter_names(db) == {"warm", "after"}
    status = db.writer_status()
    assert status["failed_batches"] == 1 and status["restarts"] == 0
    assert status["last_error"] and type(exc).__name__ in status["last_error"]


def test_a_failing_commit_says_the_outcome_is_unknown(db: Database) -> None:
    db.write(put("warm"))

    class Boom(Exception):
        pass

    committer = db._writer()
    real_commit = committer._commit

    def commit(conn: Connection) -> None:
        real_commit(conn)  # it did commit: the caller must not be told "nothing"
        raise Boom("after the commit")

    committer._commit = commit  # type: ignore[method-assign]
    try:
        with pytest.raises(StorageError) as info:
            db.write(put("maybe"))
    finally:
        del committer._commit
    assert "not known" in info.value.message and "nothing was recorded" not in info.value.message
    assert "maybe" in counter_names(db)  # indeed it was recorded
    assert db.write(put("next")) == "next"


@pytest.mark.parametrize("writes", [1, 3])
def test_a_commit_sqlite_refuses_records_nothing_and_the_writer_goes_on(
    db: Database, writes: int
) -> None:
    """COMMIT refused by SQLite (the disk filled up as it wrote the log): nothing of the batch
    stays, every caller gets the typed error, and the writer's connection is left outside any
    transaction (the next batch, on the same connection, commits)."""
    db.write(put("warm"))
    committer = db._writer()

    def refused(conn: Connection) -> None:
        raise sql._wrapped(conn, "COMMIT", sqlite3.OperationalError("database or disk is full"))

    committer._commit = refused  # type: ignore[method-assign]
    try:
        futures = [db.submit(put(f"refused{i}")) for i in range(writes)]
        for fut in futures:
            with pytest.raises(StorageError) as info:
                fut.result(10)
            assert "disk is full: nothing was recorded" in info.value.message
    finally:
        del committer._commit
    assert counter_names(db) == {"warm"}
    assert db.write(put("next")) == "next"
    assert counter_names(db) == {"warm", "next"}
    assert committer.alive and db.writer_status()["restarts"] == 0


def test_a_write_error_is_handed_to_its_caller_and_the_rest_commit(db: Database) -> None:
    def bad(conn: Connection) -> None:
        conn.execute(insert(Counter).values(name="half", value=1))
        raise KeyError("only this write")

    futs = [db.submit(put("a")), db.submit(bad), db.submit(put("b"))]
    assert futs[0].result(10) == "a" and futs[2].result(10) == "b"
    with pytest.raises(KeyError):
        futs[1].result(10)
    assert counter_names(db) == {"a", "b"}
    assert db.writer_status()["failed_batches"] == 0


@pytest.mark.parametrize(
    "fail",
    [
        pytest.param(lambda: KeyError("a refusal"), id="exception"),
        pytest.param(
            lambda: OperationalError("INSERT", {}, Exception("unable to open a journal file")),
            id="database-error",
        ),
    ],
)
def test_a_lone_write_that_fails_half_way_leaves_nothing(
    db: Database, fail: Callable[[], BaseException]
) -> None:
    """A group of one write runs without a savepoint: when it fails after some of its
    statements, the whole transaction is rolled back (nothing of it stays), its caller gets its
    error, and the writer goes on (the next write commits on the same kept connection)."""
    db.write(put("warm"))
    committer = db._writer()
    kept = committer._conn

    def half(conn: Connection) -> None:
        conn.execute(insert(Counter).values(name="half", value=1))
        sql.run(conn, "INSERT INTO counters (name, value) VALUES ('raw-half', 1)", {})
        raise fail()

    with pytest.raises((KeyError, StorageError)):
        db.write(half)
    assert counter_names(db) == {"warm"}
    assert db.write(put("next")) == "next"
    assert counter_names(db) == {"warm", "next"}
    assert committer._conn is kept and committer.failed_batches == 0


def test_the_writer_keeps_its_connection_between_batches_and_drops_it_after_an_error(
    db: Database,
) -> None:
    db.write(put("a"))
    committer = db._writer()
    kept = committer._conn
    assert kept is not None and not kept.closed
    for i in range(3):
        db.write(put(f"b{i}"))
    assert committer._conn is kept  # no pool checkout per group
    with (
        _Once(committer, "_commit", RuntimeError("after the statements")),
        pytest.raises(StorageError),
    ):
        db.write(put("lost"))
    assert kept.closed  # given back to the pool, not reused after a failed batch
    assert db.write(put("c")) == "c"
    assert committer._conn is not None and committer._conn is not kept
    assert counter_names(db) == {"a", "b0", "b1", "b2", "c"}
    db.dispose()
    assert committer._conn is None  # the writer gave it back when it stopped


@pytest.mark.parametrize("kill", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_a_dead_writer_is_reported_and_replaced(db: Database, kill: type[BaseException]) -> None:
    db.write(put("before"))
    committer = db._writer()
    with _Once(committer, "_run_batch", kill()):
        fut = db.submit(put("lost"))
        with pytest.raises(StorageError):
            fut.result(10)
        committer._thread.join(10)
    assert not committer.alive
    status = db.writer_status()
    assert status["alive"] is False and status["crashed"].startswith(kill.__name__)
    # the next write gets a new writer, and the restart is counted
    assert db.write(put("after")) == "after"
    status = db.writer_status()
    assert status["alive"] is True and status["restarts"] == 1
    assert status["last_crash"].startswith(kill.__name__)
    assert counter_names(db) == {"before", "after"}


def test_a_write_waiting_past_the_deadline_is_withdrawn_or_in_progress(db: Database) -> None:
    db.write(put("warm"))
    db.write_deadline = 0.3
    committer = db._writer()
    hold, entered = threading.Event(), threading.Event()
    real_lock = committer._lock

    def stuck_lock() -> Any:  # another process holds the write lock
        entered.set()
        hold.wait(30)
        return real_lock()

    committer._lock = stuck_lock  # type: ignore[method-assign]
    try:
        first = db.submit(put("queued-first"))  # its batch waits for the lock
        assert entered.wait(10)
        with pytest.raises(StorageError) as info:
            db.write(put("withdrawn"))  # queued behind: withdrawn at the deadline
        assert "withdrawn" in info.value.message and "nothing was recorded" in info.value.message
    finally:
        committer._lock = real_lock  # type: ignore[method-assign]
        hold.set()
    assert first.result(10) == "queued-first"
    # a write whose batch already runs is "in progress", never "nothing was done"
    release = threading.Event()

    def slow(conn: Connection) -> str:
        conn.execute(insert(Counter).values(name="slow", value=1))
        release.wait(30)
        return "slow"

    out: list[BaseException] = []

    def caller() -> None:
        try:
            db.write(slow)  # its batch runs past the deadline
        except RequestInProgress as exc:
            out.append(exc)

    t = threading.Thread(target=caller)
    t.start()
    t.join(10)
    release.set()
    assert out and "not known yet" in out[0].message  # never "nothing was done"
    deadline = time.monotonic() + 10
    while "slow" not in counter_names(db):  # and it does complete
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "withdrawn" not in counter_names(db) and "queued-first" in counter_names(db)


def test_withdrawn_writes_never_run(db: Database) -> None:
    db.write(put("warm"))
    committer = db._writer()
    hold = threading.Event()
    real_lock = committer._lock
    committer._lock = lambda: (hold.wait(30), real_lock())[1]  # type: ignore[method-assign]
    try:
        futs = [db.submit(put(f"w{i}")) for i in range(5)]
        time.sleep(0.1)
        cancelled = [f.cancel() for f in futs[1:]]
    finally:
        committer._lock = real_lock  # type: ignore[method-assign]
        hold.set()
    assert all(cancelled)
    assert futs[0].result(10) == "w0"
    for f in futs[1:]:
        with pytest.raises(CancelledError):
            f.result(1)
    assert counter_names(db) == {"warm", "w0"}


def test_the_lock_file_is_opened_once(db: Database) -> None:
    for i in range(5):
        db.write(put(f"x{i}"))
    committer: GroupCommitter = db._writer()
    fd = committer._lock_fd
    assert fd is not None
    for i in range(5):
        db.write(put(f"y{i}"))
    assert committer._lock_fd == fd


# --- real servers: descriptor exhaustion ------------------------------------------------------

LIMIT = 160


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _open_sockets(pid: int) -> int:
    """The process's socket descriptors (client connections among them; database files and the
    pool's growth are not sockets with SQLite)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def _connect(server: ServerProcess, timeout: float) -> socket.socket:
    """A raw connection to ``server``, over TLS verified with the pinned CA (the handshake
    done: what follows is the request bytes the test writes by hand)."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    ctx = server.verify
    if isinstance(ctx, bool):  # a plain-HTTP server
        return raw
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def _serve_with_limit(db: str, keys: Path, limit: int, extra: list[str]) -> ServerProcess:
    """A server whose RLIMIT_NOFILE (soft and hard) is ``limit`` from its start (set in the
    new process before it runs the command: forked from the zygote with the imports done, or
    a subprocess's preexec_fn)."""
    return ServerProcess(db, keys, extra=extra, nofile=limit).start()


@contextlib.contextmanager
def _limited_server(orders: int) -> Iterator[tuple[ServerProcess, Any, list[dict[str, Any]], str]]:
    """A server with RLIMIT_NOFILE :data:`LIMIT` and a 2 s head timeout, a funded carrier and
    ``orders`` orders; yields (server, carrier, orders, database URL); audits at the end."""
    with tempfile.TemporaryDirectory(prefix="safescan-fd-") as d:
        db = f"sqlite:///{Path(d) / 'inst.db'}"
        token = init_db(db, Path(d) / "keys")
        server = _serve_with_limit(db, Path(d) / "keys", LIMIT, ["--head-timeout", "2"])
        w = World(server, token)
        try:
            _m, carrier, made = _setup(w, orders)
            yield server, carrier, made, db
        finally:
            w.close()
            server.stop()
        assert audit(db)["ok"]


def _setup(w: World, n: int) -> tuple[Any, Any, list[dict[str, Any]]]:
    m = w.merchant("Fd Cafe")
    cid = w.customer({"EUR": 1_000_000})
    carrier = w.carrier(cid)
    return m, carrier, [m.order([("Fd", 1, 100 + i)]) for i in range(n)]


def _pay(server: ServerProcess, carrier: Any, o: dict[str, Any], key: str) -> httpx.Response:
    auth = carrier.authorize(o["code"])
    with server.client(timeout=20) as c:
        return c.post(
            "/v1/payments",
            json={"code": o["code"], "authorization": b64(auth.to_bytes())},
            headers={"Idempotency-Key": key},
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "crowd", ["idle", "slowloris", "after-a-request", "no-handshake", "half-hello"]
)
def test_idle_connections_cannot_starve_a_server_of_descriptors(crowd: str) -> None:
    """300 connections against a server with 160 descriptors: TLS done and then idle, a head
    never finished, keep-alive left open; and over TCP only, never starting the TLS handshake
    or stopping inside the client's hello (the handshake is under the connection bound and the
    head timeout too: left to the event loop such connections took every descriptor)."""
    socks: list[socket.socket] = []
    with _limited_server(8) as (server, carrier, orders, _db):
        try:
            assert server.proc is not None
            pid = server.proc.pid
            baseline = _open_sockets(pid)
            for i in range(300):  # far more connections than descriptors
                if crowd in ("no-handshake", "half-hello"):
                    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                    if crowd == "half-hello":  # a handshake record announcing 512 bytes: 1 sent
                        s.sendall(b"\x16\x03\x01\x02\x00\x01")
                else:
                    s = _connect(server, timeout=5)
                if crowd == "slowloris":
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
                elif crowd == "after-a-request":  # keep-alive connections left open
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                socks.append(s)
                if i % 50 == 0:
                    assert _open_fds(pid) < LIMIT - 16, "connections ate the reserve"
            ready = server.get("/ready").json()
            bound = ready["checks"]["connections"]["max_connections"]
            assert bound <= LIMIT - 100, ready
            assert _open_fds(pid) < LIMIT - 16
            # writes go through while the crowd is there
            for i, o in enumerate(orders[:4]):
                r = _pay(server, carrier, o, f"crowd-{crowd}-{i}")
                assert r.status_code == 201, r.text
            # idle connections are closed by the server after the head timeout
            deadline = time.monotonic() + 20
            while _open_sockets(pid) > baseline + 4:
                assert time.monotonic() < deadline, (_open_sockets(pid), baseline)
                time.sleep(0.2)
            for i, o in enumerate(orders[4:]):
                assert _pay(server, carrier, o, f"after-{crowd}-{i}").status_code == 201
            health = server.get("/health")
            assert health.status_code == 200 and health.json()["writer"]["failed_batches"] == 0
            stats = server.get("/ready").json()["checks"]
            assert stats["connections"]["evicted"] + stats["connections"]["timed_out"] >= 100
            # every connection the guard counted (per address) is forgotten once it is gone
            assert stats["connections"]["open"] <= 4, stats["connections"]
        finally:
            for s in socks:
                s.close()


#: Requests sent while the server has no descriptor left (besides the payments): public reads,
#: requests the validation refuses, an unknown path (and a payment lookup, built in the test).
EXHAUSTED_REQUESTS: list[tuple[str, str, Any]] = [
    ("GET", "/v1/keys", None),
    ("GET", "/v1/revocation-list", None),
    ("POST", "/v1/codes/status", {"code": "x"}),
    ("POST", "/v1/payments", {"code": 1}),
    ("GET", "/v1/nothing-here", None),
    ("GET", "/ready", None),
]


def _client_connections(pid: int, port: int) -> int:
    """The server's descriptors of accepted client connections to ``port`` (the kernel's
    TCP tables say which sockets those are: local port ``port``, not listening)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] != "0A":  # 0A: LISTEN
                    inodes.add(f"socket:[{f[9]}]")
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
    return count


def _wait_until(what: Callable[[], bool], why: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


def _fd_numbers(pid: int) -> set[int]:
    return {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}


@contextlib.contextmanager
def _no_free_descriptor(server: ServerProcess) -> Iterator[None]:
    """Inside: the server process has no free descriptor number at all, whatever closed
    before (tests.faults.fdhog holds every free number below a lowered soft limit), so the
    next descriptor it needs gets a real ``EMFILE``. Nothing in the server closes one inside
    (this test's connection is its only client, its background tasks are idle), and the test
    checks through ``/proc`` that every number below the limit is taken."""
    assert server.proc is not None
    pid = server.proc.pid
    # the start-up probe's connections are gone (one closing late would free a number)
    _wait_until(lambda: _client_connections(pid, server.port) <= 1, "a probe stays connected")
    before = len(_fd_numbers(pid))
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    limit = max(_fd_numbers(pid)) + 17  # a few dozen numbers to take, not the default 1024
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))
    try:
        os.kill(pid, signal.SIGUSR1)
        _wait_until(lambda: _fd_numbers(pid) >= set(range(limit)), "numbers stayed free")
        yield
        assert _fd_numbers(pid) >= set(range(limit)), "a descriptor was freed inside"
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        os.kill(pid, signal.SIGUSR2)
        _wait_until(lambda: len(_fd_numbers(pid)) <= before + 4, "the held ones stay open")


@pytest.mark.slow
@pytest.mark.parametrize("writes", [1, 5])
def test_descriptor_exhaustion_gives_typed_errors_and_the_writer_survives(
    writes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A payment that needs a descriptor when the process has none (every number taken:
    tests.faults.fdhog) is a typed 503 and records nothing; every other request is answered
    typed; the writer survives, and once descriptors are back the same payment, retried with
    its Idempotency-Key, is paid."""
    with tempfile.TemporaryDirectory(prefix="safescan-fd-") as d:
        db = f"sqlite:///{Path(d) / 'inst.db'}"
        keys = Path(d) / "keys"
        token = init_db(db, keys)
        setup = ServerProcess(db, keys, extra=["--merchant-rate", "0"]).start()
        w = World(setup, token)
        try:
            _m, carrier, orders = _setup(w, 2 * writes + 1)
        finally:
            w.close()
            setup.stop()
        # a fresh process: its writer has not opened anything yet; its background tasks (the
        # rollback guard's checkpoints, maintenance) stay idle, so none closes a descriptor
        monkeypatch.setenv(ENV_CHECKPOINT_INTERVAL, "3600")
        server = ServerProcess(
            db,
            keys,
            extra=["--merchant-rate", "0", "--maintenance-interval", "3600"],
            module="tests.faults.fdhog",
        ).start()
        assert server.proc is not None
        try:
            with server.client(timeout=20) as http:
                assert http.get("/health").status_code == 200  # a pooled connection, kept alive
                with _no_free_descriptor(server):
                    for i in range(writes):
                        o = orders[i]
                        auth = carrier.authorize(o["code"])
                        r = http.post(
                            "/v1/payments",
                            json={"code": o["code"], "authorization": b64(auth.to_bytes())},
                            headers={"Idempotency-Key": f"emfile-{i}"},
                        )
                        assert r.status_code == 503, r.text
                        err = r.json()["error"]
                        # at the writer ("nothing was recorded"), or before it ("not known")
                        assert err["code"] in ("storage_error", "outcome_unknown"), err
                        assert r.headers.get("retry-after") == "1"
                    # every other request is answered, typed: never a 500 or a hang
                    last = orders[-1]["code"]
                    signed = b64(carrier.authorize(last).to_bytes())
                    lookup = {"code": last, "authorization": signed}
                    for method, path, body in [
                        *EXHAUSTED_REQUESTS,
                        ("POST", "/v1/payments/lookup", lookup),
                    ]:
                        r = http.request(method, path, json=body)
                        assert r.status_code != 500, (path, r.text)
                        if r.status_code >= 500 and path == "/ready":
                            # not ready (a check needed a descriptor): the document names it
                            doc = r.json()
                            assert r.status_code == 503 and doc["ready"] is False, doc
                            failed = [c for c in doc["checks"].values() if not c["ok"]]
                            assert failed and all(c.get("error") for c in failed), doc
                        elif r.status_code >= 500:
                            err = r.json()["error"]
                            assert err["code"] in ("storage_error", "outcome_unknown"), err
                            assert r.headers.get("retry-after") == "1", path
                    health = http.get("/health")  # the writer is alive, it says what happened
                    assert health.status_code == 200, health.text
                    writer = health.json()["writer"]
                    assert writer["alive"] and writer["restarts"] == 0, writer
                # descriptors are back: the same writer serves again; the refused payments,
                # retried with their Idempotency-Keys, are paid now (nothing was recorded)
                for i in range(writes):
                    o = orders[i]
                    auth = carrier.authorize(o["code"])
                    r = http.post(
                        "/v1/payments",
                        json={"code": o["code"], "authorization": b64(auth.to_bytes())},
                        headers={"Idempotency-Key": f"emfile-{i}"},
                    )
                    assert r.status_code == 201, r.text
                for i in range(writes, 2 * writes + 1):
                    o = orders[i]
                    auth = carrier.authorize(o["code"])
                    r = http.post(
                        "/v1/payments",
                        json={"code": o["code"], "authorization": b64(auth.to_bytes())},
                    )
                    assert r.status_code == 201, r.text
                ready = http.get("/ready").json()
                assert ready["ready"] is True, ready
                assert ready["checks"]["writer"]["restarts"] == 0
        finally:
            server.stop()
        assert audit(db)["ok"]


@pytest.mark.slow
@pytest.mark.parametrize("sent", [0, 10, 999])
def test_a_stalled_body_is_cut_at_the_deadline(sent: int) -> None:
    """A client that stops half-way through its body holds its connection only until the
    deadline: then a typed 408 and the connection closes; the server serves on."""
    socks: list[socket.socket] = []
    with _limited_server(2) as (server, carrier, orders, _db):
        try:
            for _ in range(10):
                s = _connect(server, timeout=10)
                s.sendall(
                    b"POST /v1/payments HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + b"{" * sent
                )
                socks.append(s)
            for s in socks:  # each is answered 408 within the deadline, then closed
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
                assert b'"code":"request_timeout"' in answer
            for i, o in enumerate(orders):
                assert _pay(server, carrier, o, f"stall-{sent}-{i}").status_code == 201
        finally:
            for s in socks:
                s.close()


def test_health_and_ready_report_a_dead_writer_over_http(tmp_path: Path) -> None:
    """The API (uvicorn on 127.0.0.1, in a thread) while its writer thread is dead: /health and
    /ready answer 503 naming the writer; the next write starts a new one; both are 200 again."""
    import uvicorn

    from safescan.institution.http import create_app
    from safescan.institution.keystore import KeyStore
    from safescan.institution.service import Institution
    from safescan.web import pki
    from tests.institution.harness import PASSPHRASE
    from tests.institution.pg import free_port

    url = f"sqlite:///{tmp_path / 'h.db'}"
    init_db(url, tmp_path / "keys")
    inst = Institution(Database(url), KeyStore(tmp_path / "keys").load(PASSPHRASE.encode()))
    port = free_port()
    tls = pki.TlsDir(tmp_path / "keys.tls")  # the certificate `init` made; clients pin its CA
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(inst, background=False),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            ssl_certfile=str(tls.server_cert),
            ssl_keyfile=str(tls.server_key),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        base = f"https://127.0.0.1:{port}"
        with httpx.Client(
            base_url=base, verify=pki.client_context(tls.ca_cert), timeout=10
        ) as http:
            inst.customers.create("Before")  # the writer runs
            assert http.get("/health").status_code == 200
            committer = inst.db._writer()
            with _Once(committer, "_run_batch", SystemExit()):
                with pytest.raises(StorageError):
                    inst.db.submit(put("lost")).result(10)
                committer._thread.join(10)
            health = http.get("/health")
            assert health.status_code == 503, health.text
            doc = health.json()
            assert doc["status"] == "degraded" and doc["writer"]["alive"] is False
            assert doc["writer"]["crashed"].startswith("SystemExit")
            assert doc["error"]["code"] == "storage_error"
            ready = http.get("/ready")
            assert ready.status_code == 503 and ready.json()["checks"]["writer"]["ok"] is False
            inst.customers.create("After")  # a new writer
            assert http.get("/health").status_code == 200
            checks = http.get("/ready").json()["checks"]
            assert checks["writer"]["ok"] and checks["writer"]["restarts"] == 1
    finally:
        server.should_exit = True
        thread.join(30)
        inst.db.dispose()
