"""PostgreSQL stopped and started again under a running institution.

While the database is down every request that needs it gets a typed JSON error (503
``storage_error``) at once, and the API process stays up; when the database is back the same
process serves fully again without a restart, and nothing acknowledged before is lost.

The test runs its own PostgreSQL cluster (fsync on, synchronous commit: a database that was
told to persist something keeps it across a stop) so that stopping it does not disturb other
tests; it is skipped when no PostgreSQL server binaries are installed or when the suite uses an
external server ($SAFESCAN_TEST_PG_URL), which the test cannot stop.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.common import audit, customer_balance, order, served_on
from tests.institution.harness import World
from tests.institution.pg import PG_ENV, Cluster, find_pg_bin, start_cluster


class StoppableCluster:
    """A private cluster that can be stopped and started on the same data and port."""

    def __init__(self, cluster: Cluster, bindir: Path) -> None:
        assert cluster.tmp is not None
        self.cluster, self.bindir = cluster, bindir
        self.data = Path(cluster.tmp) / "data"
        self.port = int(cluster.base_url.rsplit(":", 1)[1].split("/")[0])

    def _pg_ctl(self, *args: str) -> None:
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=90)

    def stop(self) -> None:
        """Fast shutdown: open sessions are cut, as when the database host goes away."""
        self._pg_ctl("stop", "-m", "fast")
        if self.cluster.proc is not None:
            self.cluster.proc.wait(30)

    def start(self) -> None:
        """Start again (same data directory, port and socket directory)."""
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.cluster.tmp} -c max_connections=200"
        self._pg_ctl("start", "-l", str(Path(str(self.cluster.tmp)) / "pg.log"), "-o", opts)

    def close(self) -> None:
        """Stop for good and remove the files."""
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self._pg_ctl("stop", "-m", "immediate")
        self.cluster.stop()


@pytest.fixture
def own_cluster() -> Iterator[StoppableCluster]:
    if os.environ.get(PG_ENV):
        pytest.skip(f"{PG_ENV} points at an external server, which this test must not stop")
    bindir = find_pg_bin()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip("no PostgreSQL server binaries (initdb, postgres, pg_ctl) found")
    cluster = start_cluster(fsync=True)
    sc = StoppableCluster(cluster, bindir)
    try:
        yield sc
    finally:
        sc.close()


def _pay(w: World, code: str, auth: bytes, key: str) -> httpx.Response:
    from tests.institution.harness import b64

    return w.http.post(
        "/v1/payments",
        json={"code": code, "authorization": b64(auth)},
        headers={"Idempotency-Key": key},
    )


@pytest.mark.postgres
@pytest.mark.slow
def test_database_outage_gives_typed_503_then_full_service_and_nothing_lost(
    own_cluster: StoppableCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a request waits this long for the database to come back (a failover) before its 503
    monkeypatch.setenv("SAFESCAN_DB_FAILOVER_WAIT", "1")
    with tempfile.TemporaryDirectory(prefix="safescan-dbdown-") as d:
        db = own_cluster.cluster.create_database()
        keys = Path(d) / "keys"
        with served_on(db, keys, ["--merchant-rate", "0"]) as w:
            m = w.merchant("Outage Cafe")
            cid = w.customer({"EUR": 100_000})
            carrier = w.carrier(cid)
            before: dict[str, str] = {}
            for i in range(5):
                o = m.order([("Before", 1, 100 + i)])
                r = _pay(w, o["code"], carrier.authorize(o["code"]).to_bytes(), f"b{i}")
                assert r.status_code == 201, r.text
                before[o["order_id"]] = r.json()["payment_id"]
            pending = m.order([("During", 1, 777)])
            pending_auth = carrier.authorize(pending["code"]).to_bytes()

            own_cluster.stop()
            # every kind of caller gets a clear, typed error; the process stays up
            answers = [
                _pay(w, pending["code"], pending_auth, "during"),
                m.request(
                    "POST",
                    "/v1/merchant/orders",
                    {"items": [{"name": "X", "quantity": 1, "unit_price": 1}], "currency": "EUR"},
                ),
                m.request("GET", f"/v1/merchant/orders/{pending['order_id']}"),
                w.admin("GET", f"/v1/admin/customers/{cid}"),
                w.http.post("/v1/codes/status", json={"code": pending["code"]}),
            ]
            for r in answers:
                assert r.status_code == 503, (r.request.url, r.status_code, r.text)
                err = r.json()["error"]
                assert err["code"] == "storage_error" and err["type"] == "StorageError"
                assert "database" in err["message"]
            health = w.http.get("/health")
            assert health.status_code == 503, health.text
            assert w.server.proc is not None and w.server.proc.poll() is None

            own_cluster.start()
            deadline = time.monotonic() + 60
            while w.http.get("/health").status_code != 200:
                assert time.monotonic() < deadline, "the server did not recover"
                time.sleep(0.2)
            # full service: the refused payment goes through with the same key, new work too
            r = _pay(w, pending["code"], pending_auth, "during")
            assert r.status_code == 201, r.text
            o2 = m.order([("After", 1, 50)])
            r2 = _pay(w, o2["code"], carrier.authorize(o2["code"]).to_bytes(), "after")
            assert r2.status_code == 201, r2.text
            for order_id, pid in before.items():  # nothing acknowledged was lost
                got = order(m, order_id)
                assert got["state"] == "PAID" and got["payment_id"] == pid
            paid = sum(100 + i for i in range(5)) + 777 + 50
            assert customer_balance(w, cid) == 100_000 - paid
        report = audit(db)
        assert report["ok"] is True and report["rc"] == 0, report
