"""Several API processes on one PostgreSQL racing to pay one code; crash (SIGKILL) under load."""

from __future__ import annotations

import json
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.institution.harness import ServerProcess, World, b64, init_db, institution_cli
from tests.institution.pg import Cluster

NO_LIMIT = ["--merchant-rate", "0"]


@pytest.mark.postgres
@pytest.mark.slow
def test_two_server_processes_race_to_pay_one_code(pg_cluster: Cluster) -> None:
    with tempfile.TemporaryDirectory() as d:
        db = pg_cluster.create_database()
        keys = Path(d) / "keys"
        token = init_db(db, keys)
        servers = [ServerProcess(db, keys).start() for _ in range(2)]
        try:
            w = World(servers[0], token)
            m = w.merchant()
            cid = w.customer({"EUR": 1_000_000})
            carriers = [w.carrier(cid) for _ in range(2)]
            for round_ in range(5):
                o = m.order([("Race", 1, 1000 + round_)])
                auths = [carriers[i % 2].authorize(o["code"]) for i in range(40)]
                clients = [s.client(timeout=30) for s in servers]
                barrier = threading.Barrier(40)

                def attempt(
                    i: int,
                    o: dict[str, Any] = o,
                    auths: list[Any] = auths,
                    clients: list[httpx.Client] = clients,
                    barrier: threading.Barrier = barrier,
                ) -> int:
                    body = {"code": o["code"], "authorization": b64(auths[i].to_bytes())}
                    barrier.wait()
                    return clients[i % 2].post("/v1/payments", json=body).status_code

                with ThreadPoolExecutor(40) as pool:
                    statuses = list(pool.map(attempt, range(40)))
                for c in clients:
                    c.close()
                assert statuses.count(201) == 1, statuses
                assert set(statuses) <= {201, 409}, statuses
            c = w.admin("GET", f"/v1/admin/customers/{cid}").json()
            assert c["balances"] == [
                {"currency": "EUR", "amount": 1_000_000 - sum(1000 + r for r in range(5))}
            ]
            w.close()
        finally:
            for s in servers:
                s.stop()
        out = institution_cli("audit", "--db", db, "--json")
        assert out.returncode == 0, out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_crash_under_load_loses_and_doubles_nothing(
    backend: str, request: pytest.FixtureRequest
) -> None:
    from tests.institution.conftest import make_db

    with tempfile.TemporaryDirectory() as d:
        db = make_db(backend, request, Path(d))
        keys = Path(d) / "keys"
        token = init_db(db, keys)
        server = ServerProcess(db, keys, extra=NO_LIMIT).start()
        w = World(server, token)
        m = w.merchant()
        cid = w.customer({"EUR": 10_000_000})
        carriers = [w.carrier(cid) for _ in range(8)]
        orders = [m.order([("Load", 1, 100 + i)]) for i in range(240)]
        work = [(o, carriers[i % 8].authorize(o["code"])) for i, o in enumerate(orders)]
        acked: dict[str, Any] = {}
        lock = threading.Lock()
        stop = threading.Event()

        def worker(k: int) -> None:
            with server.client(timeout=10) as client:
                for i in range(k, len(work), 8):
                    if stop.is_set():
                        return
                    o, auth = work[i]
                    try:
                        r = client.post(
                            "/v1/payments",
                            json={"code": o["code"], "authorization": b64(auth.to_bytes())},
                            headers={"Idempotency-Key": f"crash-{i}"},
                        )
                    except httpx.HTTPError:
                        return  # the server died under us: this payment was not acknowledged
                    if r.status_code == 201:
                        with lock:
                            acked[o["order_id"]] = r.json()

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        while len(acked) < 60:
            threading.Event().wait(0.01)
        server.kill()  # SIGKILL in the middle of the load
        stop.set()
        for t in threads:
            t.join(30)
        server.stop()  # already dead: only removes its log
        assert 60 <= len(acked) < len(work)
        server2 = ServerProcess(db, keys, extra=NO_LIMIT).start()
        try:
            w2 = World(server2, token)
            # every acknowledged payment is there, exactly as acknowledged
            mc = type(m)(w2.http, m.merchant_id, m.key)
            for order_id, body in acked.items():
                o = mc.request("GET", f"/v1/merchant/orders/{order_id}").json()
                assert o["state"] == "PAID" and o["payment_id"] == body["payment_id"]
            # retrying with the idempotency key returns the same answer, never a second debit
            for i, (o, auth) in enumerate(work[:120]):
                r = w2.http.post(
                    "/v1/payments",
                    json={"code": o["code"], "authorization": b64(auth.to_bytes())},
                    headers={"Idempotency-Key": f"crash-{i}"},
                )
                if o["order_id"] in acked:
                    assert r.status_code == 201 and r.json() == acked[o["order_id"]]
            paid_total = sum(
                mc.request("GET", f"/v1/merchant/orders/{o['order_id']}").json()["paid_amount"]
                for o, _ in work
            )
            c = w2.admin("GET", f"/v1/admin/customers/{cid}").json()
            assert c["balances"][0]["amount"] == 10_000_000 - paid_total
            w2.close()
        finally:
            server2.stop()
            w.close()
        out = institution_cli("audit", "--db", db, "--json")
        assert out.returncode == 0, out.stdout
        assert json.loads(out.stdout)["ok"] is True
