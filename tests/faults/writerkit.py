"""What the two writer suites share (test_writer_handoff, test_writer_descriptors): a migrated
SQLite database, a write that inserts one counter, and the counters the test wrote."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy import Connection, insert, select

from safescan.institution.db import Database, migrate
from safescan.institution.models import Counter

#: the counters the migrations make
MIGRATED = frozenset({"crl_sequence", "certificate_serial"})


@contextlib.contextmanager
def counters_db(path: Path, write_deadline: float) -> Iterator[Database]:
    """A migrated SQLite database at ``path``, disposed of when the block ends."""
    d = Database(f"sqlite:///{path}", write_deadline=write_deadline)
    migrate(d.engine)
    try:
        yield d
    finally:
        d.dispose()


def put(name: str) -> Callable[[Connection], str]:
    """A write inserting the counter ``name``; it returns ``name``."""

    def tx(conn: Connection) -> str:
        conn.execute(insert(Counter).values(name=name, value=1))
        return name

    return tx


def counter_names(db: Database) -> set[str]:
    """The counters the test wrote (not the ones migrations make)."""
    names = set(db.read(lambda c: c.execute(select(Counter.name)).scalars().all()))
    return names - MIGRATED
