"""Health of one API process: ``GET /healthz`` (alive), ``GET /readyz`` (ready to serve), and
the older ``GET /health`` and ``GET /ready`` they grew from.

* ``/healthz``: liveness only: the process and its event loop answer (200, no database query),
  so an orchestrator restarts a process that hangs, not one whose database is down.
* ``/readyz`` (``/ready`` is the same): a set of named checks, one per part the process needs:
  the database answers, its schema is at the migration head this release knows, the
  institution's keys are loaded (the root key signs and matches the public key the database
  holds), the SQLite writer thread, the maintenance task and whatever else registers (the
  webhook dispatcher, ...). Each check returns a JSON-ready dict with at least ``"ok"``; a check
  that raises counts as failed, with the error's type. It answers 503 as soon as one check
  fails, so a load balancer stops sending traffic to a process that cannot serve it.
* ``/health`` (kept: the cluster supervisor, the demo and many tests wait on it) answers 503
  when the process cannot write at all (database unreachable or writer dead) or its webhook
  dispatcher is not running.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from safescan.code.errors import SafescanError
from safescan.institution.db import Database
from safescan.institution.keystore import InstitutionKeys

log = logging.getLogger("safescan.institution.health")

Check = Callable[[], dict[str, Any]]


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


class Readiness:
    """Named checks; see the module docstring."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        """Register (or replace) the check ``name``."""
        self._checks[name] = check

    def report(self) -> tuple[bool, dict[str, Any]]:
        """Run every check: (all ok, {name: result})."""
        out: dict[str, Any] = {}
        for name, check in self._checks.items():
            try:
                result = dict(check())
            except SafescanError as exc:
                result = {"ok": False, "error": exc.message}
            except Exception as exc:  # noqa: BLE001 - a failing check is a failed check
                log.warning("readiness check %s failed: %s", name, type(exc).__name__)
                result = {"ok": False, "error": type(exc).__name__}
            result["ok"] = bool(result.get("ok"))
            out[name] = result
        return all(r["ok"] for r in out.values()), out


def database_check(db: Database) -> Check:
    """The database answers a query."""

    def check() -> dict[str, Any]:
        db.read(lambda c: c.exec_driver_sql("SELECT 1").scalar())
        return {"ok": True, "dialect": db.dialect}

    return check


def writer_check(db: Database) -> Check:
    """The SQLite writer thread is alive and no write has waited past twice the deadline."""

    def check() -> dict[str, Any]:
        status = db.writer_status()
        stalled = float(status.get("oldest_wait_s", 0.0)) > 2 * db.write_deadline
        status["ok"] = bool(status.get("alive")) and not stalled
        if stalled:
            status["stalled"] = True
        return status

    return check


def schema_check(db: Database) -> Check:
    """The database's schema is at the migration head of this release (looked up once)."""
    from safescan.institution.db import schema_revisions

    head = schema_revisions(db.engine)[1]

    def check() -> dict[str, Any]:
        current = db.read(
            lambda c: c.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        )
        doc: dict[str, Any] = {"ok": current == head, "revision": current}
        if current != head:
            doc["expected"] = head
        return doc

    return check


def keys_check(db: Database, keys: InstitutionKeys) -> Check:
    """The institution's root key is loaded: it signs, and its public key is the one the
    database holds for its key id."""
    probe = b"safescan readiness probe"

    def check() -> dict[str, Any]:
        keys.root.public_key.verify(keys.root.sign(probe), probe)
        stored = db.read(
            lambda c: c.execute(
                text("SELECT public_key FROM institution_keys WHERE purpose = 'root' AND kid = :k"),
                {"k": keys.root_kid},
            ).scalar()
        )
        ok = stored is not None and bytes(stored) == keys.root.public_key.raw
        doc: dict[str, Any] = {"ok": ok, "root_kid": keys.root_kid}
        if not ok:
            doc["error"] = "the loaded root key is not the one the database knows"
        return doc

    return check


def add_health_routes(
    app: FastAPI,
    db: Database,
    now: Callable[[], int],
    readiness: Readiness,
    *,
    webhooks: Callable[[], str] | None = None,
    keys: InstitutionKeys | None = None,
) -> None:
    """``GET /healthz``, ``/readyz`` (and the older ``/health``, ``/ready``) on ``app``;
    ``readiness`` gains the schema check and, given ``keys``, the keys check. ``webhooks``
    gives the webhook dispatcher's state (``"off"`` when there is none)."""
    writer = writer_check(db)
    readiness.add("schema", schema_check(db))
    if keys is not None:
        readiness.add("keys", keys_check(db, keys))

    @app.get("/healthz", tags=["public"])
    async def healthz() -> JSONResponse:
        """Liveness: the process answers (no database query; see ``/readyz``)."""
        return JSONResponse({"alive": True, "time": now()})

    @app.get("/health", tags=["public"])
    def health() -> JSONResponse:
        """Liveness: the database answers, the writer thread runs and the webhook dispatcher is
        alive (503 otherwise, saying which)."""
        db.read(lambda c: c.exec_driver_sql("SELECT 1").scalar())
        status = writer()
        hooks = webhooks() if webhooks is not None else "off"
        ok = bool(status["ok"]) and hooks in ("off", "running")
        body: dict[str, Any] = {
            "status": "ok" if ok else "degraded",
            "time": now(),
            "writer": status,
            "webhooks": hooks,
        }
        if not status["ok"]:
            body["error"] = {
                "type": "StorageError",
                "code": "storage_error",
                "message": "the database writer is not running or is stalled",
            }
        headers = None if ok else {"Retry-After": "1"}
        return JSONResponse(body, status_code=200 if ok else 503, headers=headers)

    def ready() -> JSONResponse:
        """Readiness: the database answers at the current schema, the keys are loaded and
        every other part this process needs runs (503 when one fails, naming it)."""
        ok, checks = readiness.report()
        return JSONResponse(
            {"ready": ok, "time": now(), "checks": checks}, status_code=200 if ok else 503
        )

    app.get("/readyz", tags=["public"])(ready)
    app.get("/ready", tags=["public"])(ready)


__all__ = [
    "Check",
    "Heartbeat",
    "Readiness",
    "add_health_routes",
    "database_check",
    "keys_check",
    "schema_check",
    "writer_check",
]
