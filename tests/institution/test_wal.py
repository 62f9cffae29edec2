"""SQLite WAL checkpoints off the writer's critical path (issue 20, safescan.institution.wal):
the writer's commits never checkpoint (autocheckpoint off on its connections), the checkpoint
thread does, the log stays bounded, and when the thread cannot keep up or is gone the writer
checkpoints itself. Every write committed is still there (read back through a new connection).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection

from safescan.institution import wal
from safescan.institution.db import Database

ROW = "x" * 400  # a few rows per page: the log grows quickly


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'wal.db'}")
    database.write(lambda c: c.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    try:
        yield database
    finally:
        database.dispose()


def _insert(n: int) -> object:
    def tx(conn: Connection) -> None:
        for _ in range(n):
            conn.exec_driver_sql("INSERT INTO t (v) VALUES (?)", (ROW,))

    return tx


def _count(path: Path) -> int:
    with sqlite3.connect(path) as c:
        return int(c.execute("SELECT count(*) FROM t").fetchone()[0])


def _wal_pages(path: Path) -> int:
    wal_file = Path(f"{path}-wal")
    return wal_file.stat().st_size // 4096 if wal_file.exists() else 0


def test_the_writer_does_not_checkpoint_and_the_thread_does(db: Database, tmp_path: Path) -> None:
    committer = db._writer()
    assert committer._wal is not None
    for _ in range(60):
        db.write(_insert(50))  # type: ignore[arg-type]
    autockpt = db.write(  # on the writer's own connection
        lambda c: c.exec_driver_sql("PRAGMA wal_autocheckpoint").fetchone()[0]  # type: ignore[index]
    )
    deadline = time.monotonic() + 10
    while committer._wal.checkpoints == 0:
        assert time.monotonic() < deadline, "no checkpoint was made"
        time.sleep(0.05)
    assert committer._wal.commits >= 60
    assert autockpt == 0  # SQLite's default is 1000: a commit past it checkpoints
    assert _count(tmp_path / "wal.db") == 3000


def test_the_log_restarts_after_a_checkpoint(db: Database, tmp_path: Path) -> None:
    """Under continuous writes in rounds, the log does not grow round after round."""
    path = tmp_path / "wal.db"
    sizes = []
    for _ in range(6):
        for _ in range(20):
            db.write(_insert(50))  # type: ignore[arg-type]
        time.sleep(3 * wal.INTERVAL_S)  # a checkpoint happens between rounds
        sizes.append(_wal_pages(path))
    assert max(sizes[2:]) <= max(sizes[:2]) + 100, sizes
    assert _count(path) == 6 * 20 * 50


def test_the_writer_checkpoints_itself_when_the_thread_is_gone(
    db: Database, tmp_path: Path
) -> None:
    committer = db._writer()
    assert committer._wal is not None
    committer._wal.close()  # the thread stops: the writer must keep the log bounded alone
    assert not committer._wal.alive
    before = committer._wal.checkpoints
    for _ in range(600):
        db.write(_insert(2))  # type: ignore[arg-type]
    assert committer._wal.checkpoints > before
    assert _count(tmp_path / "wal.db") == 1200


def test_a_log_past_the_limit_is_checkpointed_by_the_writer(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    committer = db._writer()
    assert committer._wal is not None
    committer._wal.close()
    monkeypatch.setattr(wal, "MAX_LOG_FRAMES", 10)
    committer._wal.due = True  # as the thread leaves it when the log is past the limit
    before = committer._wal.checkpoints
    db.write(_insert(200))  # type: ignore[arg-type]
    assert committer._wal.checkpoints == before + 1
    assert _count(tmp_path / "wal.db") == 200
