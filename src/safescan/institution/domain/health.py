"""Whether the institution can serve: its database answers, its schema is the one this release
knows, its keys are loaded, the SQLite writer runs. Each check returns a frozen result; the
HTTP layer (:mod:`safescan.institution.http.health`) only routes and formats them (``/health``,
``/ready``, ``/healthz``, ``/readyz``).

A check may raise (a database that does not answer): the readiness report counts that as a
failed check, ``/health`` answers it with the error's status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sqlalchemy import select

from safescan.code.errors import SafescanError
from safescan.institution.db import schema_revisions
from safescan.institution.domain.core import Core
from safescan.institution.models import InstitutionKey

log = logging.getLogger("safescan.institution.health")

_PROBE = b"safescan readiness probe"

#: a readiness check: a JSON-ready dict with at least ``"ok"`` (it may raise: then it failed)
Check = Callable[[], Mapping[str, Any]]


@dataclass
class Heartbeat:
    """A background loop's sign of life: it calls :meth:`beat` once per round."""

    interval: float
    last: float = field(default_factory=time.monotonic)
    rounds: int = 0
    stopped: str | None = None  # why the loop ended, when it ended on its own

    def beat(self) -> None:
        """One round done."""
        self.last = time.monotonic()
        self.rounds += 1

    def check(self) -> dict[str, Any]:
        """Ok while the loop runs and its last round is recent (4 rounds, at least 30 s)."""
        age = time.monotonic() - self.last
        ok = self.stopped is None and age <= max(30.0, 4 * self.interval)
        doc: dict[str, Any] = {"ok": ok, "last_round_age_s": round(age, 1), "rounds": self.rounds}
        if self.stopped is not None:
            doc["stopped"] = self.stopped
        return doc


@dataclass(frozen=True)
class ReadinessReport:
    """Every named check's result; ``ready`` when all are ok."""

    ready: bool
    checks: Mapping[str, Mapping[str, Any]]


class Readiness:
    """Named checks, one per part the process needs (see :meth:`Health.readiness`)."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        """Register (or replace) the check ``name``."""
        self._checks[name] = check

    def report(self) -> ReadinessReport:
        """Run every check; one that raises failed (with the error's message or type)."""
        out: dict[str, Mapping[str, Any]] = {}
        for name, check in self._checks.items():
            try:
                result = dict(check())
            except SafescanError as exc:
                result = {"ok": False, "error": exc.message}
            except Exception as exc:  # noqa: BLE001 - a failing check is a failed check
                log.warning("readiness check %s failed: %s", name, type(exc).__name__)
                result = {"ok": False, "error": type(exc).__name__}
            result["ok"] = bool(result.get("ok"))
            out[name] = MappingProxyType(result)
        return ReadinessReport(
            ready=all(r["ok"] for r in out.values()), checks=MappingProxyType(out)
        )


@dataclass(frozen=True)
class DatabaseCheck:
    """The database answered a query."""

    ok: bool
    dialect: str

    def to_json(self) -> dict[str, Any]:
        """``{"ok", "dialect"}``."""
        return {"ok": self.ok, "dialect": self.dialect}


@dataclass(frozen=True)
class WriterCheck:
    """The SQLite writer thread (PostgreSQL has none: always ok): alive, and no write has
    waited past twice the write deadline (``stalled``). ``state`` is what the writer reports
    (queued writes, restarts, last crash...)."""

    ok: bool
    stalled: bool
    state: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The writer's state with ``"ok"`` (and ``"stalled": true`` when it is)."""
        doc = dict(self.state) | {"ok": self.ok}
        if self.stalled:
            doc["stalled"] = True
        return doc


@dataclass(frozen=True)
class SchemaCheck:
    """The database's migration revision against the head this release knows."""

    revision: str | None
    expected: str

    @property
    def ok(self) -> bool:
        """The schema is current."""
        return self.revision == self.expected

    def to_json(self) -> dict[str, Any]:
        """``{"ok", "revision"}`` (and ``"expected"`` when they differ)."""
        doc: dict[str, Any] = {"ok": self.ok, "revision": self.revision}
        if not self.ok:
            doc["expected"] = self.expected
        return doc


@dataclass(frozen=True)
class KeysCheck:
    """The root key is loaded: it signs, and its public key is the one the database holds
    for its key id."""

    ok: bool
    root_kid: int

    def to_json(self) -> dict[str, Any]:
        """``{"ok", "root_kid"}`` (and ``"error"`` when it fails)."""
        doc: dict[str, Any] = {"ok": self.ok, "root_kid": self.root_kid}
        if not self.ok:
            doc["error"] = "the loaded root key is not the one the database knows"
        return doc


@dataclass(frozen=True)
class Liveness:
    """``/health``: the database answered, the writer runs, the webhook dispatcher's state
    (``"off"`` when there is none) is ``"running"``."""

    writer: WriterCheck
    webhooks: str

    @property
    def ok(self) -> bool:
        """Writer ok and the dispatcher off or running."""
        return self.writer.ok and self.webhooks in ("off", "running")


class Health:
    """The checks of one process's institution around the :class:`Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._head: str | None = None

    def database(self) -> DatabaseCheck:
        """The database answers a query (raises the storage error when it does not)."""
        self.core.db.read(lambda c: c.exec_driver_sql("SELECT 1").scalar())
        return DatabaseCheck(ok=True, dialect=self.core.db.dialect)

    def writer(self) -> WriterCheck:
        """The SQLite writer thread runs and no write waits past twice the deadline."""
        db = self.core.db
        state = db.writer_status()
        stalled = float(state.get("oldest_wait_s", 0.0)) > 2 * db.write_deadline
        ok = bool(state.get("alive")) and not stalled
        return WriterCheck(ok=ok, stalled=stalled, state=MappingProxyType(dict(state)))

    def schema(self) -> SchemaCheck:
        """The database's schema revision against this release's head (the head is looked
        up once, the revision at every call)."""
        if self._head is None:
            self._head = schema_revisions(self.core.db.engine)[1]
        current = self.core.db.read(
            lambda c: c.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        )
        return SchemaCheck(revision=current, expected=self._head)

    def keys(self) -> KeysCheck:
        """The root key signs and matches the public key the database holds for it."""
        keys = self.core.keys
        keys.root.public_key.verify(keys.root.sign(_PROBE), _PROBE)
        stored = self.core.db.read(
            lambda c: c.execute(
                select(InstitutionKey.public_key).where(
                    InstitutionKey.purpose == "root", InstitutionKey.kid == keys.root_kid
                )
            ).scalar()
        )
        ok = stored is not None and bytes(stored) == keys.root.public_key.raw
        return KeysCheck(ok=ok, root_kid=keys.root_kid)

    def liveness(self, webhooks: str = "off") -> Liveness:
        """The database answers (raises when not), the writer's state; ``webhooks``: the
        dispatcher's state."""
        self.database()
        return Liveness(writer=self.writer(), webhooks=webhooks)

    def readiness(self) -> Readiness:
        """A readiness set with the institution's own checks: ``database``, ``writer``,
        ``schema``, ``keys``; the process adds its parts (maintenance, webhooks...)."""
        ready = Readiness()
        ready.add("database", lambda: self.database().to_json())
        ready.add("writer", lambda: self.writer().to_json())
        ready.add("schema", lambda: self.schema().to_json())
        ready.add("keys", lambda: self.keys().to_json())
        return ready


__all__ = [
    "Check",
    "DatabaseCheck",
    "Health",
    "Heartbeat",
    "KeysCheck",
    "Liveness",
    "Readiness",
    "ReadinessReport",
    "SchemaCheck",
    "WriterCheck",
]
