"""An older backup restored under a real server: recognised, refused, reconciled.

SQLite is backed up online (the sqlite3 backup API, as `.backup` does) and restored by copying
the file back; PostgreSQL with ``pg_dump -Fc`` and ``pg_restore`` into a re-created database.
Between backup and restore the institution acknowledges a payment, enrolls two carriers (one
then revoked as stolen) and revokes a carrier that the backup holds as active. After the
restore the server must refuse to serve (readiness 503 ``rolled_back``, every request the typed
``database_rolled_back``, nothing written), the audit must fail saying why, and
``institution reconcile`` must make it safe to serve again: the lost revocation applied again,
serials, the revocation list sequence and event numbers past everything issued before, the
reconciliation in the audit log, and the audit passing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from safescan.institution.checkpoints import default_path
from safescan.institution.models import AuditEntry, Event
from tests.faults.common import customer_balance
from tests.faults.places import Place, pay, place_for, served, wait_checkpointed
from tests.institution.conftest import BACKENDS
from tests.institution.harness import Carrier, ServerProcess, World, b64, init_db, institution_cli


@pytest.fixture(params=BACKENDS)
def site(request: pytest.FixtureRequest) -> Iterator[Place]:
    with place_for(request, "safescan-restore-") as place:
        yield place


def wait_serving(w: World) -> None:
    deadline = time.monotonic() + 60
    while w.http.get("/health").status_code != 200:
        assert time.monotonic() < deadline, "the server did not serve again"
        time.sleep(0.05)


def test_restored_backup_is_refused_until_reconciled(site: Place) -> None:
    with served(site, carriers=2) as shop:  # the first carrier paid 500
        w, m, cid, (old, kept) = shop.w, shop.m, shop.cid, shop.carriers
        backup = site.backup("before.bak")
        # acknowledged after the backup: a payment, two enrollments, two revocations
        acked = pay(w, m, kept, 700)
        assert acked.status_code == 201
        lost, stolen = w.carrier(cid), w.carrier(cid)
        for serial in (stolen.serial, old.serial):
            assert w.admin("POST", f"/v1/admin/carriers/{serial}/revoke").status_code == 200
        crl_before = w.http.get("/v1/revocation-list").json()["sequence"]
        events_before = site.read(lambda c: c.execute(select(func.max(Event.seq))).scalar())
        wait_checkpointed(site)
        shop.server.stop()
        site.put_back(backup)
        shop.serve(healthy=False)

        # refused: readiness and every request, with the typed error; nothing is written
        health = w.http.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "rolled_back"
        o_blocked = {"code": "x", "authorization": b64(b"y")}
        for r in (
            w.http.post("/v1/payments", json=o_blocked),
            w.admin("GET", f"/v1/admin/customers/{cid}"),
            w.http.get("/v1/keys"),
            m.request("GET", "/v1/merchant/orders"),
        ):
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "database_rolled_back"
        # the audit says why, and exits 1
        out = institution_cli("audit", "--db", site.db_url, "--keys", str(site.keys), "--json")
        report = json.loads(out.stdout)
        assert out.returncode == 1 and not report["ok"]
        assert any("restored from an older copy" in p for p in report["problems"])
        assert any(f"[{old.serial}] was journaled" in p for p in report["problems"])
        assert "Traceback" not in out.stderr

        # reconcile: on the record, then the server serves again by itself
        out = institution_cli(
            "reconcile",
            "--db",
            site.db_url,
            "--keys",
            str(site.keys),
            "--note",
            "disk lost",
            "--json",
        )
        assert out.returncode == 0, out.stderr
        done = json.loads(out.stdout)
        assert done["reconciled"] is True and done["reapplied_revocations"] == [old.serial]
        assert {c["serial"] for c in done["lost_certificates"]} == {lost.serial, stolen.serial}
        assert done["certificate_serial"] >= stolen.serial
        assert done["crl_sequence"] > crl_before
        wait_serving(w)
        again = institution_cli(
            "reconcile", "--db", site.db_url, "--keys", str(site.keys), "--note", "twice"
        )
        assert again.returncode == 0 and "nothing to reconcile" in again.stdout

        # no serial of a lost carrier is issued again; the lost carrier is a stranger
        fresh = w.carrier(cid)
        assert fresh.serial > max(lost.serial, stolen.serial)
        r = pay(w, m, lost, 300)
        assert r.status_code == 403 and r.json()["error"]["code"] == "carrier_revoked"
        # the revocation the restore lost is back
        r = pay(w, m, old, 300)
        assert r.status_code == 403 and r.json()["error"]["code"] == "carrier_revoked"
        # wallets holding the newer revocation list accept the next one
        crl = w.http.get("/v1/revocation-list").json()
        assert crl["sequence"] > crl_before and old.serial in crl["serials"]
        # the merchants' event cursor moves past everything seen before
        balance = customer_balance(w, cid)
        assert pay(w, m, fresh, 400).status_code == 201
        assert customer_balance(w, cid) == balance - 400
        newest = site.read(lambda c: c.execute(select(func.max(Event.seq))).scalar())
        assert newest > events_before
        # on the record, and sound
        entries = site.read(
            lambda c: (
                c.execute(
                    select(AuditEntry.data).where(AuditEntry.action == "institution.reconcile")
                )
                .scalars()
                .all()
            )
        )
        assert len(entries) == 1 and json.loads(entries[0])["note"] == "disk lost"
        wait_checkpointed(site)
        out = institution_cli("audit", "--db", site.db_url, "--keys", str(site.keys), "--json")
        assert out.returncode == 0, out.stdout


def test_a_backup_of_the_newest_state_is_served_at_once(site: Place) -> None:
    """No false alarm: a restored backup that lacks nothing is served without a reconcile."""
    with served(site, funds=10_000, first=100) as shop:  # paid 100, checkpointed
        shop.server.stop()
        site.put_back(site.backup("newest.bak"))
        shop.serve()
        assert pay(shop.w, shop.m, shop.carriers[0], 100).status_code == 201


def test_audit_without_a_checkpoint_file_says_so(tmp_path: Path) -> None:
    """A database that saw its checkpoint file (its ``checkpoint_head``) and has none fails
    the audit (deleted); one that never saw one (from before the head) is only not checked."""
    url = f"sqlite:///{tmp_path / 'i.db'}"
    init_db(url, tmp_path / "keys")
    default_path(tmp_path / "keys").unlink()
    r = institution_cli("audit", "--db", url, "--keys", str(tmp_path / "keys"), "--json")
    assert r.returncode == 1, r.stdout
    assert any("is missing" in p for p in json.loads(r.stdout)["problems"])
    with sqlite3.connect(tmp_path / "i.db") as conn:
        conn.execute("DELETE FROM checkpoint_head")
    r = institution_cli("audit", "--db", url, "--keys", str(tmp_path / "keys"), "--json")
    assert r.returncode == 0, r.stdout
    assert any("rollback: not checked" in n for n in json.loads(r.stdout)["notes"])


def test_checkpointing_under_concurrent_payments_raises_no_false_alarm(site: Place) -> None:
    """Checkpoints every 20 ms while four wallets pay concurrently and the audit runs on the
    live database: every payment is served, the server never refuses, every audit passes, and
    the newest checkpoint covers the final audit log."""
    import threading

    token = init_db(site.db_url, site.keys)
    extra = [
        "--checkpoint-interval",
        "0.02",
        "--merchant-rate",
        "0",
        "--maintenance-interval",
        "60",
    ]
    server = ServerProcess(site.db_url, site.keys, extra=extra).start()
    w = World(server, token)
    try:
        m = w.merchant()
        cid = w.customer({"EUR": 10_000_000})
        carriers = [w.carrier(cid) for _ in range(4)]
        jobs = [[m.order([("Tea", 1, 100 + i)]) for i in range(25)] for _ in carriers]
        statuses: list[int] = []

        def wallet(carrier: Carrier, orders: list[dict[str, Any]]) -> None:
            with server.client(timeout=30) as http:
                for o in orders:
                    auth = carrier.authorize(o["code"])
                    r = http.post(
                        "/v1/payments",
                        json={"code": o["code"], "authorization": b64(auth.to_bytes())},
                    )
                    statuses.append(r.status_code)

        threads = [
            threading.Thread(target=wallet, args=a) for a in zip(carriers, jobs, strict=True)
        ]
        for t in threads:
            t.start()
        # the audit of the live database, checkpoints landing meanwhile: no false alarm
        audits = []
        while any(t.is_alive() for t in threads) or not audits:
            audits.append(
                institution_cli("audit", "--db", site.db_url, "--keys", str(site.keys), "--json")
            )
        for t in threads:
            t.join()
        for out in audits:
            assert out.returncode == 0, out.stdout[-3000:]
        assert statuses == [201] * 100
        wait_checkpointed(site)
        assert w.http.get("/health").status_code == 200
        assert "refusing to serve" not in server.output()
    finally:
        w.close()
        server.stop()
