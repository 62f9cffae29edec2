"""Liveness (``GET /health``) and readiness (``GET /ready``) of one API process.

Readiness is a set of named checks, one per part the process needs (the database, the SQLite
writer thread, the maintenance task, and whatever else registers: the webhook dispatcher, ...).
Each check returns a JSON-ready dict with at least ``"ok"``; a check that raises counts as
failed, with the error's type. ``/ready`` answers 503 as soon as one check fails, so a load
balancer stops sending traffic to a process that cannot serve it; ``/health`` answers 503 when
the process cannot write at all (database unreachable or writer dead).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from safescan.code.errors import SafescanError
from safescan.institution.db import Database

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


def add_health_routes(
    app: FastAPI,
    db: Database,
    now: Callable[[], int],
    readiness: Readiness,
    *,
    webhooks: Callable[[], str] | None = None,
) -> None:
    """``GET /health`` (liveness) and ``GET /ready`` (readiness) on ``app``. ``webhooks``
    gives the webhook dispatcher's state (``"off"`` when there is none)."""
    writer = writer_check(db)

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

    @app.get("/ready", tags=["public"])
    def ready() -> JSONResponse:
        """Readiness: every part this process needs, checked (503 when one fails)."""
        ok, checks = readiness.report()
        return JSONResponse(
            {"ready": ok, "time": now(), "checks": checks}, status_code=200 if ok else 503
        )


__all__ = [
    "Check",
    "Heartbeat",
    "Readiness",
    "add_health_routes",
    "database_check",
    "writer_check",
]
