"""Database content printed to an operator's terminal is made inert (redteam: the audit's
VIOLATION lines and ``manufacturer list`` echoed stored text as it was, so whoever could write a
manufacturer name, a merchant name or an item name into the database could send escape
sequences to the operator's terminal: clear the screen, hide lines, retitle the window, forge
"audit passed"). Real ``python -m safescan.institution`` processes on a SQLite file."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.institution.harness import init_db, institution_cli

# what an attacker writes: terminal control (ESC, CSI, OSC with BEL, C1 CSI), a carriage
# return that overwrites the line, bidi overrides and isolates, a zero-width joiner
HOSTILE = [
    "\x1b[2J\x1b[Haudit passed",
    "\x1b]0;owned\x07",
    "\x9b31mred",
    "ok\rVIOLATION hidden",
    "\u202egnp.exe",
    "\u2066isolate\u2069",
    "zero\u200dwidth",
]
RAW = {"\x1b", "\x07", "\x9b", "\r", "\u202e", "\u2066", "\u2069", "\u200d"}


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[str, Path]]:
    with tempfile.TemporaryDirectory(prefix="safescan-term-") as d:
        db = Path(d) / "i.db"
        init_db(f"sqlite:///{db}", Path(d) / "keys")
        yield f"sqlite:///{db}", db


def _no_raw(text: str) -> None:
    assert not RAW & set(text), repr(text)


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_manufacturer_name_in_the_database_prints_inert(
    site: tuple[str, Path], name: str
) -> None:
    """``manufacturer list`` and the audit's VIOLATION line (the name differs from its log
    entry) show every control, bidi and zero-width character as an escape."""
    url, path = site
    with sqlite3.connect(path) as conn:
        (old,) = conn.execute("SELECT name FROM manufacturer_keys WHERE kid = 77").fetchone()
        conn.execute("UPDATE manufacturer_keys SET name = ? WHERE kid = 77", (name,))
    try:
        listed = institution_cli("manufacturer", "list", "--db", url)
        assert listed.returncode == 0, listed.stderr
        _no_raw(listed.stdout + listed.stderr)
        assert "77:" in listed.stdout
        audit = institution_cli("audit", "--db", url)
        assert audit.returncode == 1, audit.stdout + audit.stderr
        _no_raw(audit.stdout + audit.stderr)
        assert "VIOLATION: manufacturer key 77" in audit.stdout
    finally:
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE manufacturer_keys SET name = ? WHERE kid = 77", (old,))
