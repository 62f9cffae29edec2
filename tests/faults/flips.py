"""Byte flips in a SQLite database file: in the pages of a chosen table, and what they changed.

Shared by tests/faults/test_corruption.py and bench/audit_campaign.py.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

Cells = dict[str, dict[int, tuple[Any, ...]]]


def table_pages(db: Path) -> dict[str, list[int]]:
    """Page numbers of each table's b-tree and of its indexes, by table name."""
    conn = sqlite3.connect(db)
    try:
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_schema").fetchall())
        pages: dict[str, list[int]] = {}
        for name, pageno in conn.execute("SELECT name, pageno FROM dbstat"):
            table = owner.get(name, name)
            if not table.startswith("sqlite_"):
                pages.setdefault(table, []).append(int(pageno))
        return pages
    finally:
        conn.close()


def page_size(db: Path) -> int:
    """The database's page size (the file must be checkpointed: no WAL)."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


def used_ranges(page: bytes, pageno: int) -> list[range]:
    """The used bytes of a b-tree page: header and cell pointers, and the cell content area."""
    base = 100 if pageno == 1 else 0
    header = 12 if page[base] in (2, 5) else 8
    ncells = int.from_bytes(page[base + 3 : base + 5], "big")
    content = int.from_bytes(page[base + 5 : base + 7], "big") or 65536
    # a flip made before may have changed the header (the cell count): never past the page
    ranges = [
        range(base, min(base + header + 2 * ncells, len(page))),
        range(min(content, len(page)), len(page)),
    ]
    return [r for r in ranges if len(r)]


def flip(db: Path, pages: list[int], rng: random.Random, size: int) -> tuple[int, int]:
    """XOR one used byte of one of ``pages`` with a random non-zero mask; (page, offset)."""
    pageno = rng.choice(pages)
    with db.open("r+b") as f:
        f.seek((pageno - 1) * size)
        page = f.read(size)
        offset = rng.choice(rng.choice(used_ranges(page, pageno)))
        f.seek((pageno - 1) * size + offset)
        f.write(bytes([page[offset] ^ rng.randrange(1, 256)]))
    return pageno, offset


def cells(db: Path) -> Cells | None:
    """Every row of every table by rowid (None when the database cannot be read)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        conn.text_factory = bytes
        try:
            out: Cells = {}
            tables = conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'").fetchall()
            for (name,) in tables:
                name = name.decode()
                rows = conn.execute(f'SELECT rowid, * FROM "{name}"').fetchall()
                out[name] = {r[0]: tuple(r[1:]) for r in rows}
            return out
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None


def columns(db: Path, table: str) -> list[str]:
    """A table's column names."""
    conn = sqlite3.connect(db)
    try:
        return [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
    finally:
        conn.close()


def changed(
    clean: Cells, after: Cells | None, names: dict[str, list[str]]
) -> set[tuple[str, str]] | None:
    """The (table, column) cells a flip changed; None if it made the database unreadable."""
    if after is None:
        return None
    out: set[tuple[str, str]] = set()
    for table in set(clean) | set(after):
        a, b = clean.get(table, {}), after.get(table, {})
        for rowid in set(a) | set(b):
            if a.get(rowid) == b.get(rowid):
                continue
            if rowid not in a or rowid not in b:
                out.add((table, "*row*"))
                continue
            for col, x, y in zip(names.get(table, []), a[rowid], b[rowid], strict=False):
                if x != y:
                    out.add((table, col))
    return out


def refusals_only(clean: Cells, after: Cells | None, names: dict[str, list[str]]) -> bool:
    """Whether every ``idempotency_keys`` row a flip changed is a stored refusal (status not
    201): its time and message are compared with nothing (``UNDETECTABLE_IN_REFUSALS``)."""
    a, b = clean.get("idempotency_keys", {}), (after or {}).get("idempotency_keys", {})
    status = names.get("idempotency_keys", []).index("status_code")
    moved = [r for r in set(a) | set(b) if a.get(r) != b.get(r)]
    return all(r in a and r in b and a[r][status] != 201 for r in moved)


def integrity_ok(db: Path) -> bool:
    """Whether SQLite's own integrity_check passes."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False


__all__ = [
    "cells",
    "changed",
    "columns",
    "flip",
    "integrity_ok",
    "page_size",
    "refusals_only",
    "table_pages",
]
