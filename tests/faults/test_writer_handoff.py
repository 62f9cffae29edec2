"""The event loop's hand-off to the SQLite writer (``Database.write_async``).

Attacked: every caller gets its own result or its own error and nothing else, a failing
write leaves nothing and the rest of its group commits, a write is never lost or answered
before its commit (writes queued while the writer is busy, asleep, or from several loops at
once), the deadline still withdraws or says "in progress", a cancelled caller leaves its write
running, and a dead writer is a typed error, not a hang.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, insert

from safescan.api.errors import RequestInProgress, StorageError
from safescan.institution.db import Database
from safescan.institution.models import Counter
from tests.faults.writerkit import counter_names, counters_db, put


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with counters_db(tmp_path / "h.db", write_deadline=10) as d:
        yield d


def _fail_after_insert(name: str, exc: BaseException) -> Callable[[Connection], str]:
    def tx(conn: Connection) -> str:
        conn.execute(insert(Counter).values(name=name, value=1))
        raise exc

    return tx


def _asleep(db: Database) -> None:
    """Wait until the writer sleeps (it has finished what it was given)."""
    committer = db._writer()
    for _ in range(1000):
        if committer._sleeping and not committer._pending:
            return
        time.sleep(0.01)
    raise AssertionError("the writer never went to sleep")


@pytest.mark.parametrize("n", [1, 2, 17, 200])
def test_writes_queued_at_once_from_a_loop_each_get_their_own_answer(db: Database, n: int) -> None:
    db.write(put("warm"))
    _asleep(db)
    before = db._writer().batches

    async def main() -> list[str]:
        return await asyncio.gather(*(db.write_async(put(f"g{i}")) for i in range(n)))

    assert asyncio.run(main()) == [f"g{i}" for i in range(n)]  # each its own result, in order
    assert counter_names(db) == {"warm", *(f"g{i}" for i in range(n))}
    # grouped: never more groups than writes, and at least one per 128
    assert -(-n // 128) <= db._writer().batches - before <= n


@pytest.mark.parametrize(
    "exc", [ValueError("refused"), KeyError("gone"), StorageError("typed")], ids=type
)
@pytest.mark.parametrize("where", [0, 3, 7])
def test_a_failing_write_gets_its_own_error_and_the_rest_of_its_group_commit(
    db: Database, exc: BaseException, where: int
) -> None:
    async def main() -> list[Any]:
        calls = [
            db.write_async(_fail_after_insert(f"bad{i}", exc) if i == where else put(f"ok{i}"))
            for i in range(8)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    out = asyncio.run(main())
    assert out[where] is exc  # the very exception, to its own caller only
    others = [i for i in range(8) if i != where]
    assert [out[i] for i in others] == [f"ok{i}" for i in others]
    assert counter_names(db) == {f"ok{i}" for i in others}  # nothing of the failed one


def test_writes_from_a_loop_while_the_writer_is_busy_are_never_lost(db: Database) -> None:
    """Writes queued while a group runs (the writer is not asleep, nobody needs to wake it)
    and writes queued after it fell asleep again: all commit, none waits for the deadline."""
    db.write_deadline = 30
    release = threading.Event()

    def slow(conn: Connection) -> str:
        conn.execute(insert(Counter).values(name="slow", value=1))
        release.wait(30)
        return "slow"

    async def main() -> list[str]:
        first = asyncio.ensure_future(db.write_async(slow))
        await asyncio.sleep(0.1)  # the writer is inside the slow group now
        during = [asyncio.ensure_future(db.write_async(put(f"d{i}"))) for i in range(5)]
        await asyncio.sleep(0.1)
        release.set()
        done = await asyncio.wait_for(asyncio.gather(first, *during), 10)
        later = []
        for r in range(20):  # the writer sleeps between these: each turn wakes it once
            later += await asyncio.wait_for(
                asyncio.gather(*(db.write_async(put(f"l{r}-{i}")) for i in range(r % 4 + 1))),
                10,
            )
        return [*done, *later]

    out = asyncio.run(main())
    assert out[:6] == ["slow", *(f"d{i}" for i in range(5))]
    assert len(out) == 6 + sum(r % 4 + 1 for r in range(20))
    assert counter_names(db) == set(out)


def test_several_loops_in_several_threads_each_get_their_answers(db: Database) -> None:
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def run(t: int) -> None:
        async def main() -> list[str]:
            out: list[str] = []
            for r in range(15):
                out += await asyncio.wait_for(
                    asyncio.gather(*(db.write_async(put(f"t{t}-{r}-{i}")) for i in range(3))),
                    10,
                )
            return out

        try:
            results[t] = asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    for t in range(4):
        assert results[t] == [f"t{t}-{r}-{i}" for r in range(15) for i in range(3)]
    assert len(counter_names(db)) == 4 * 15 * 3


def test_the_deadline_still_withdraws_a_queued_write_or_says_in_progress(db: Database) -> None:
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
    release = threading.Event()

    def slow(conn: Connection) -> str:
        conn.execute(insert(Counter).values(name="slow", value=1))
        release.wait(30)
        return "slow"

    async def main() -> None:
        first = db.submit(put("queued-first"))  # its batch waits for the lock
        assert await asyncio.to_thread(entered.wait, 10)
        with pytest.raises(StorageError) as info:  # queued behind it: withdrawn
            await db.write_async(put("withdrawn"))
        assert "withdrawn" in info.value.message and "nothing was recorded" in info.value.message
        committer._lock = real_lock  # type: ignore[method-assign]
        hold.set()
        assert await asyncio.wrap_future(first) == "queued-first"
        with pytest.raises(RequestInProgress) as progress:  # its batch runs: never "nothing"
            await db.write_async(slow)
        assert "not known yet" in progress.value.message
        release.set()

    try:
        asyncio.run(main())
    finally:
        committer._lock = real_lock  # type: ignore[method-assign]
        hold.set()
        release.set()
    db.write_deadline = 10
    db.write(put("after"))
    # the withdrawn write never ran; the one "in progress" did complete
    assert counter_names(db) == {"warm", "queued-first", "slow", "after"}


def test_a_cancelled_caller_leaves_its_write_running(db: Database) -> None:
    release = threading.Event()

    def slow(conn: Connection) -> str:
        conn.execute(insert(Counter).values(name="kept", value=1))
        release.wait(30)
        return "kept"

    async def main() -> None:
        task = asyncio.ensure_future(db.write_async(slow))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        # the next write of this loop still goes through (the hand-off is not stuck)
        assert await asyncio.wait_for(db.write_async(put("next")), 10) == "next"

    asyncio.run(main())
    assert counter_names(db) == {"kept", "next"}


@pytest.mark.parametrize("kill", [SystemExit, KeyboardInterrupt])
def test_a_writer_that_dies_mid_group_fails_its_callers_with_a_typed_error(
    db: Database, kill: type[BaseException]
) -> None:
    db.write(put("warm"))
    _asleep(db)
    # a write queued while the dying thread fails the others is answered at the deadline
    db.write_deadline = 2
    committer = db._writer()
    real = committer._run_batch

    def dying(batch: Any) -> None:
        committer._run_batch = real  # type: ignore[method-assign]
        raise kill()

    committer._run_batch = dying  # type: ignore[method-assign]

    async def main() -> list[Any]:
        return await asyncio.wait_for(
            asyncio.gather(*(db.write_async(put(f"x{i}")) for i in range(4)),
                           return_exceptions=True),
            30,
        )  # fmt: skip

    out = asyncio.run(main())
    assert all(isinstance(o, StorageError) for o in out), out
    assert counter_names(db) == {"warm"}
    assert asyncio.run(main()) == [f"x{i}" for i in range(4)]  # a new writer takes over
