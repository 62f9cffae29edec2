"""What every cross-reference check gets: the snapshot, the journal, indexes, the trust anchors."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from safescan.api.encoding import b64e
from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError
from safescan.code.keys import VerifyKey
from safescan.institution.auditing.journal import Journal
from safescan.institution.auditing.snapshot import Snapshot

Row = dict[str, Any]
T = TypeVar("T")
SKEW = 7 * 86400  # how far in the future a stored time may be (clock corrections)


def _getter(key: str | Callable[[T], Any]) -> Callable[[T], Any]:
    if isinstance(key, str):
        return lambda r: r[key]  # type: ignore[index]
    return key


def index(rows: Iterable[T], key: str | Callable[[T], Any]) -> dict[Any, T]:
    """Rows (or entries) by ``key`` (a column name or a function); the first one wins."""
    get = _getter(key)
    out: dict[Any, T] = {}
    for r in rows:
        out.setdefault(get(r), r)
    return out


def group(rows: Iterable[T], key: str | Callable[[T], Any]) -> dict[Any, list[T]]:
    """Rows (or entries) grouped by ``key``."""
    get = _getter(key)
    out: dict[Any, list[T]] = {}
    for r in rows:
        out.setdefault(get(r), []).append(r)
    return out


def b64(raw: bytes | None) -> str | None:
    """Base64 as the audit log writes keys."""
    return None if raw is None else b64e(raw)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def differs(what: str, fields: dict[str, tuple[Any, Any]]) -> list[str]:
    """One finding per field whose stored value (first) is not the expected one (second)."""
    return [
        f"{what}: {name} is {_short(stored)}, expected {_short(expected)}"
        for name, (stored, expected) in fields.items()
        if stored != expected
    ]


@dataclass
class Context:
    """The audited database, read once."""

    snap: Snapshot
    journal: Journal
    now: int
    trust: TrustStore = field(default_factory=TrustStore)
    ix: dict[str, dict[Any, Row]] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict)

    def rows(self, table: str) -> list[Row]:
        """Well-typed rows of ``table``."""
        return self.snap.rows(table)

    def by_pk(self, table: str, key: str) -> dict[Any, Row]:
        """``table``'s rows by column ``key`` (cached)."""
        name = f"{table}.{key}"
        if name not in self.ix:
            self.ix[name] = index(self.rows(table), key)
        return self.ix[name]

    def readable(self, *tables: str) -> bool:
        """Whether every one of ``tables`` was read completely (else cross-checks that would
        only repeat "missing row" for every reference are skipped)."""
        return not any(t in self.snap.unreadable for t in tables)


def make_context(snap: Snapshot, journal: Journal, now: int) -> Context:
    """The context, with the root public keys the database holds as trust anchors."""
    keys: dict[int, VerifyKey] = {}
    for r in snap.rows("institution_keys"):
        if r["purpose"] == "root":
            try:
                keys[r["kid"]] = VerifyKey(r["public_key"])
            except SafescanError:
                continue  # reported by the key check
    return Context(snap, journal, now, TrustStore(keys))


__all__ = ["SKEW", "Context", "Row", "b64", "differs", "group", "index", "make_context"]
