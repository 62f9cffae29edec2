"""Readiness follows the database: PostgreSQL stopped under a running institution.

While the server is stopped ``/readyz`` answers 503 naming the failed ``database`` check (and
the checks that need the database), ``/healthz`` still answers 200 (the process is alive: an
orchestrator must not restart it for a database outage) and ``/metrics`` still answers (without
the queue depth it cannot read); when the database is back ``/readyz`` is 200 again, without a
restart. A private cluster (see test_database_down.py), skipped without PostgreSQL binaries.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.faults.test_database_down import StoppableCluster, own_cluster
from tests.institution.harness import ServerProcess, init_db

__all__ = ["own_cluster"]  # the fixture, imported for this module's test


def _metric_names(text: str) -> set[str]:
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.mark.postgres
def test_readyz_fails_while_postgresql_is_down_and_recovers(
    own_cluster: StoppableCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAFESCAN_DB_FAILOVER_WAIT", "1")  # a read gives up after 1 s
    with tempfile.TemporaryDirectory(prefix="safescan-readyz-") as d:
        db = own_cluster.cluster.create_database()
        keys = Path(d) / "keys"
        init_db(db, keys)
        server = ServerProcess(db, keys).start()
        http = server.client(timeout=30)
        try:
            ready = http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert "safescan_webhook_queue_depth" in _metric_names(http.get("/metrics").text)

            own_cluster.stop()
            for _ in range(3):  # every time, not once
                r = http.get("/readyz")
                assert r.status_code == 503, r.text
                checks = r.json()["checks"]
                assert checks["database"]["ok"] is False
                assert checks["database"]["error"]  # says why (a typed storage error)
                assert checks["schema"]["ok"] is False and checks["keys"]["ok"] is False
                assert http.get("/healthz").status_code == 200
            metrics = http.get("/metrics")
            assert metrics.status_code == 200
            names = _metric_names(metrics.text)
            assert "safescan_http_requests_total" in names
            assert "safescan_webhook_queue_depth" not in names  # unreadable: left out, not 0
            assert server.proc is not None and server.proc.poll() is None

            own_cluster.start()
            deadline = time.monotonic() + 60
            while http.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "readiness did not come back"
                time.sleep(0.2)
            assert all(c["ok"] for c in http.get("/readyz").json()["checks"].values())
        finally:
            http.close()
            server.stop()
