"""Read every table of the institution's database into memory, checking each value's type.

The audit never trusts what it reads: a corrupted page, a value of the wrong storage class, text
that is not UTF-8 or a string longer than its column are findings, not exceptions. SQLite is read
through its own read-only connection (``typeof()`` beside every column, text as raw bytes), so a
single bad value cannot abort the read of a whole table; PostgreSQL is read in one
``REPEATABLE READ`` snapshot. Rows with a malformed value are reported and left out, so the
cross-reference checks that follow only ever see well-typed rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from sqlalchemy import Boolean, Integer, LargeBinary, String, Table, Text
from sqlalchemy.engine import make_url

from safescan.institution.models import Base

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
FETCH = 2000


@dataclass
class Snapshot:
    """Well-typed rows of every table, by table name (rows as dicts of column -> value)."""

    dialect: str
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    unreadable: set[str] = field(default_factory=set)
    extra_tables: list[str] = field(default_factory=list)

    def rows(self, table: str) -> list[dict[str, Any]]:
        """The table's well-typed rows (empty when it could not be read)."""
        return self.tables.get(table, [])


def schema_tables() -> list[Table]:
    """The tables the models declare, in dependency order."""
    return list(Base.metadata.sorted_tables)


def _pk(table: Table, row: dict[str, Any]) -> str:
    return ",".join(f"{c.name}={row.get(c.name)!r}" for c in table.primary_key.columns)


def _expect(col: Any) -> tuple[str, int | None, tuple[int, int]]:
    """(storage class, maximum length, integer range) of a column."""
    t = col.type
    if isinstance(t, Boolean):
        return "bool", None, (0, 1)
    if isinstance(t, Integer):
        wide = type(t).__name__ == "BigInteger"
        return "integer", None, INT64 if wide else INT32
    if isinstance(t, LargeBinary):
        return "blob", t.length, INT64
    if isinstance(t, String | Text):
        return "text", getattr(t, "length", None), INT64
    raise TypeError(f"the audit does not know column type {t!r}")  # a schema change


def check_value(col: Any, value: Any, storage: str | None) -> tuple[Any, str | None]:
    """(the value as Python, None) or (None, what is wrong with it)."""
    kind, length, (lo, hi) = _expect(col)
    if value is None:
        return (None, None) if col.nullable else (None, "is NULL")
    if storage is not None and storage not in ("null", kind if kind != "bool" else "integer"):
        return None, f"holds a {storage} value (declared {kind})"
    if kind == "bool":
        if isinstance(value, bool):
            return value, None
        if isinstance(value, int) and value in (0, 1):
            return bool(value), None
        return None, f"holds {value!r}, not a boolean"
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return None, f"holds {type(value).__name__}, not an integer"
        if not lo <= value <= hi:
            return None, f"holds {value}, out of its column's range"
        return value, None
    if kind == "blob":
        if isinstance(value, memoryview):
            value = value.tobytes()
        if not isinstance(value, bytes):
            return None, f"holds {type(value).__name__}, not bytes"
    else:
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                return None, "holds text that is not UTF-8"
        if not isinstance(value, str):
            return None, f"holds {type(value).__name__}, not text"
        if "\x00" in value:
            return None, "holds a NUL character"
    if length is not None and len(value) > length:
        return None, f"is {len(value)} long, over its column's {length}"
    return value, None


def _sqlite_rows(conn: sqlite3.Connection, table: Table) -> Iterator[list[tuple[Any, Any]]]:
    cols = [c.name for c in table.columns]
    select = ", ".join(f'typeof("{c}"), "{c}"' for c in cols)
    order = ", ".join(f'"{c.name}"' for c in table.primary_key.columns) or "rowid"
    cur = conn.execute(f'SELECT {select} FROM "{table.name}" ORDER BY {order}')  # noqa: S608
    while True:
        batch = cur.fetchmany(FETCH)
        if not batch:
            return
        for raw in batch:
            yield [(bytes(raw[2 * i]).decode(), raw[2 * i + 1]) for i in range(len(cols))]


def _add_row(snap: Snapshot, table: Table, raw: list[tuple[Any, Any]]) -> None:
    row: dict[str, Any] = {}
    bad: list[str] = []
    for col, (storage, value) in zip(table.columns, raw, strict=True):
        v, problem = check_value(col, value, storage)
        if problem is not None:
            bad.append(f"{col.name} {problem}")
        row[col.name] = v
    if bad:
        ident = _pk(table, row)
        snap.findings.append(f"table {table.name} row [{ident}]: " + "; ".join(bad))
        return
    snap.tables[table.name].append(row)


def read_sqlite(path: str) -> Snapshot:
    """Read a SQLite database file (read-only) into a :class:`Snapshot`."""
    snap = Snapshot("sqlite")
    conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, isolation_level=None)
    conn.text_factory = bytes
    try:
        conn.execute("BEGIN")  # one snapshot for every table
        _read_all(snap, lambda t: _sqlite_rows(conn, t), _sqlite_tables(conn, snap))
    finally:
        conn.close()
    return snap


def _sqlite_tables(conn: sqlite3.Connection, snap: Snapshot) -> set[str] | None:
    try:
        names = {
            bytes(n).decode("utf-8", "replace")
            for (n,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
        }
    except sqlite3.DatabaseError as exc:
        snap.findings.append(f"the database's schema cannot be read: {exc}")
        return None
    return names


def _read_all(
    snap: Snapshot,
    rows_of: Callable[[Table], Iterator[list[tuple[Any, Any]]]],
    present: set[str] | None,
    recover: Callable[[], None] = lambda: None,
) -> None:
    """Read every table; a table that fails is reported (``recover`` then makes the
    connection usable again) and the others are still read."""
    expected = {t.name for t in schema_tables()}
    if present is None:  # the schema itself is unreadable: so is every table
        for table in [*schema_tables(), ALEMBIC]:
            snap.tables[table.name] = []
            snap.unreadable.add(table.name)
        return
    for name in sorted(present - expected - {"alembic_version"}):
        if not name.startswith("sqlite_"):
            snap.extra_tables.append(name)
    for table in [*schema_tables(), ALEMBIC]:
        snap.tables[table.name] = []
        if table.name not in present:
            snap.findings.append(f"table {table.name} is missing")
            snap.unreadable.add(table.name)
            continue
        try:
            for raw in rows_of(table):
                _add_row(snap, table, raw)
        except (sqlite3.DatabaseError, ValueError, OverflowError) as exc:
            snap.findings.append(f"table {table.name} cannot be read to its end: {exc}")
            snap.unreadable.add(table.name)
        except Exception as exc:
            if not _is_driver_error(exc):
                raise
            snap.findings.append(f"table {table.name} cannot be read: {_first_line(exc)}")
            snap.unreadable.add(table.name)
            recover()


def _is_driver_error(exc: Exception) -> bool:
    import psycopg

    return isinstance(exc, psycopg.Error)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def read_postgresql(url: str) -> Snapshot:
    """Read a PostgreSQL database in one REPEATABLE READ, READ ONLY snapshot (each table in
    a savepoint, so that a damaged one does not end the reading of the others)."""
    import psycopg

    snap = Snapshot("postgresql")
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        present = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        }

        def rows_of(table: Table) -> Iterator[list[tuple[Any, Any]]]:
            cols = ", ".join(f'"{c.name}"' for c in table.columns)
            order = ", ".join(f'"{c.name}"' for c in table.primary_key.columns)
            conn.execute("SAVEPOINT audit_table")
            cur = conn.cursor()
            cur.execute(f'SELECT {cols} FROM "{table.name}" ORDER BY {order}')  # noqa: S608
            while True:
                batch = cur.fetchmany(FETCH)
                if not batch:
                    break
                for raw in batch:
                    yield [(None, v) for v in raw]
            conn.execute("RELEASE SAVEPOINT audit_table")

        def recover() -> None:
            conn.execute("ROLLBACK TO SAVEPOINT audit_table")

        _read_all(snap, rows_of, present, recover)
        conn.rollback()
    return snap


def _alembic_table() -> Table:
    from sqlalchemy import Column, MetaData

    return Table(
        "alembic_version",
        MetaData(),
        Column("version_num", String(32), primary_key=True, nullable=False),
    )


ALEMBIC = _alembic_table()


def read(url: str) -> Snapshot:
    """Read the database at ``url`` (``sqlite:///path`` or ``postgresql://...``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database:
            raise ValueError("a SQLite URL names a file")
        return read_sqlite(parsed.database)
    return read_postgresql(url)


__all__ = ["ALEMBIC", "Snapshot", "check_value", "read", "schema_tables"]
