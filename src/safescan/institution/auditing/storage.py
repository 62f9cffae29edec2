"""The database's own integrity: what the storage engine can tell about its pages.

SQLite: ``PRAGMA integrity_check`` (every b-tree page, every record header, every index entry
against its row, NOT NULL and CHECK constraints) or the cheaper ``quick_check`` (no index
cross-check), then ``PRAGMA foreign_key_check``. PostgreSQL: page checksums must be on (``initdb
--data-checksums``; a note otherwise), the server's own count of checksum failures, and, where
the ``amcheck`` extension is installed, ``verify_heapam`` on every table and ``bt_index_check``
(with ``heapallindexed``) on every index.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from sqlalchemy.engine import make_url

from safescan.api.errors import ConfigError, StorageError
from safescan.institution.auditing.snapshot import schema_tables

MAX_MESSAGES = 100


@dataclass
class StorageReport:
    """Findings (corruption) and notes (checks that could not run, weaker settings)."""

    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_sqlite(path: str, *, quick: bool = False) -> StorageReport:
    """``integrity_check`` (or ``quick_check``) and ``foreign_key_check`` on a SQLite file."""
    report = StorageReport()
    conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, isolation_level=None)
    conn.text_factory = lambda b: b.decode("utf-8", "replace")
    pragma = "quick_check" if quick else "integrity_check"
    try:
        try:
            rows = conn.execute(f"PRAGMA {pragma}({MAX_MESSAGES})").fetchall()
        except sqlite3.DatabaseError as exc:
            report.findings.append(f"SQLite {pragma} cannot run: {exc}")
            return report
        messages = [str(r[0]) for r in rows]
        if messages != ["ok"]:
            report.findings += [f"SQLite {pragma}: {m}" for m in messages]
        try:
            for table, rowid, parent, _fk in conn.execute("PRAGMA foreign_key_check"):
                report.findings.append(
                    f"SQLite foreign_key_check: {table} row {rowid} names a missing {parent} row"
                )
        except sqlite3.DatabaseError as exc:
            report.findings.append(f"SQLite foreign_key_check cannot run: {exc}")
    finally:
        conn.close()
    if quick:
        report.notes.append("quick_check only: index entries were not compared with their rows")
    return report


def check_postgresql(url: str) -> StorageReport:
    """Checksums setting and failures, and amcheck's heap and index checks where available."""
    import psycopg

    report = StorageReport()
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
        checksums = conn.execute("SHOW data_checksums").fetchone()
        if not checksums or checksums[0] != "on":
            report.notes.append(
                "PostgreSQL data checksums are off: damaged pages are not recognised as such"
                " (initdb --data-checksums, or pg_checksums --enable on a stopped cluster)"
            )
        failures = conn.execute(
            "SELECT checksum_failures FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        if failures and failures[0]:
            report.findings.append(
                f"PostgreSQL counted {failures[0]} page checksum failure(s) in this database"
            )
        has_amcheck = conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'amcheck'"
        ).fetchone()
        if not has_amcheck:
            report.notes.append(
                "amcheck is not installed in this database: heap and index pages were not"
                " verified (CREATE EXTENSION amcheck, as a superuser)"
            )
            return report
        _amcheck(conn, report)
    return report


def _amcheck(conn: object, report: StorageReport) -> None:
    import psycopg

    assert isinstance(conn, psycopg.Connection)
    names = [t.name for t in schema_tables()]
    for table in names:
        try:
            rows = conn.execute(
                "SELECT blkno, offnum, msg FROM verify_heapam(%s::regclass, check_toast => true)",
                (table,),
            ).fetchall()
        except psycopg.Error as exc:
            report.findings.append(f"amcheck verify_heapam({table}) failed: {_line(exc)}")
            continue
        for blkno, offnum, msg in rows[:MAX_MESSAGES]:
            report.findings.append(f"amcheck: {table} block {blkno} item {offnum}: {msg}")
    indexes = conn.execute(
        "SELECT i.indexrelid::regclass::text FROM pg_index i"
        " JOIN pg_class t ON t.oid = i.indrelid JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_am a ON a.oid = c.relam"
        " WHERE t.relname = ANY(%s) AND a.amname = 'btree'",
        (names,),
    ).fetchall()
    for (index,) in indexes:
        try:
            conn.execute("SELECT bt_index_check(%s::regclass, true)", (index,))
        except psycopg.Error as exc:
            report.findings.append(f"amcheck bt_index_check({index}): {_line(exc)}")


def _line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def require_reachable(url: str) -> None:
    """Refuse, with a typed error, a database that is not there to audit (a missing SQLite
    file, an unreachable server): that is a usage error, not a finding about the data."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:":
            raise ConfigError("the audit needs a SQLite database file, not an in-memory one")
        if not Path(path).is_file():
            raise ConfigError(f"there is no SQLite database file at {path}")
        return
    import psycopg

    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        psycopg.connect(dsn, connect_timeout=10).close()
    except psycopg.OperationalError as exc:
        raise StorageError(f"cannot connect to the database: {_line(exc)}") from None


def check(url: str, *, quick: bool = False) -> StorageReport:
    """The storage engine's checks for the database at ``url``."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return check_sqlite(str(parsed.database), quick=quick)
    return check_postgresql(url)


__all__ = ["StorageReport", "check", "require_reachable"]
