"""Health of one API process: ``GET /healthz`` (alive), ``GET /readyz`` (ready to serve), and
the older ``GET /health`` and ``GET /ready`` they grew from. The checks are the domain's
(:mod:`safescan.institution.domain.health`); this router only answers them.

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

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from safescan.institution.domain.health import Health, Readiness
from safescan.institution.http.query import JSONRoute


def health_router(
    health: Health,
    readiness: Readiness,
    now: Callable[[], int],
    *,
    webhooks: Callable[[], str] | None = None,
) -> APIRouter:
    """``GET /healthz``, ``/readyz`` (and the older ``/health``, ``/ready``): ``readiness`` is
    the process's set of checks (:meth:`Health.readiness` plus its own parts); ``webhooks``
    gives the webhook dispatcher's state (``"off"`` when there is none)."""
    router = APIRouter(tags=["public"], route_class=JSONRoute)

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        """Liveness: the process answers (no database query; see ``/readyz``)."""
        return JSONResponse({"alive": True, "time": now()})

    @router.get("/health")
    def alive() -> JSONResponse:
        """Liveness: the database answers, the writer thread runs and the webhook dispatcher is
        alive (503 otherwise, saying which)."""
        live = health.liveness(webhooks() if webhooks is not None else "off")
        body: dict[str, Any] = {
            "status": "ok" if live.ok else "degraded",
            "time": now(),
            "writer": live.writer.to_json(),
            "webhooks": live.webhooks,
        }
        if not live.writer.ok:
            body["error"] = {
                "type": "StorageError",
                "code": "storage_error",
                "message": "the database writer is not running or is stalled",
            }
        headers = None if live.ok else {"Retry-After": "1"}
        return JSONResponse(body, status_code=200 if live.ok else 503, headers=headers)

    def ready() -> JSONResponse:
        """Readiness: the database answers at the current schema, the keys are loaded and
        every other part this process needs runs (503 when one fails, naming it)."""
        report = readiness.report()
        checks = {name: dict(result) for name, result in report.checks.items()}
        return JSONResponse(
            {"ready": report.ready, "time": now(), "checks": checks},
            status_code=200 if report.ready else 503,
        )

    router.get("/readyz")(ready)
    router.get("/ready")(ready)
    return router


__all__ = ["health_router"]
