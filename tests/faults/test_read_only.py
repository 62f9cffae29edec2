"""A read-only database under a running SQLite institution (redteam leftover 1): the
database file, its WAL and its directory are made immutable (``chattr +i``: root is refused
too, also through descriptors opened before; root only, skipped with the reason otherwise).
Every write path (a payment, a refund, an order, the administrator's API, the command line)
gets a typed error and changes nothing; the server stays up; once the files are writable
again the same process serves and the refused writes succeed; nothing is lost and the audit
passes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.common import audit, customer_balance, order, served_on
from tests.faults.test_disk_full import integrity, stored_state
from tests.institution.harness import institution_cli


def _immutable(directory: Path, on: bool) -> None:
    """``chattr +i`` (or ``-i``) on the directory and every file in it but the WAL index
    (``-shm``): no process, root included, may write them, through a descriptor opened before
    either (EPERM). The ``-shm`` file is SQLite's shared-memory wal-index, which every process
    maps and writes for reads too: a write fault on a shared mapping of an immutable file is
    SIGBUS, not an error a program can answer (the CI run of f0786f8 lost the server that way,
    exit -7, depending on which of its pages were already dirty), so it stays writable; the
    database and its WAL, where the data is, are immutable."""
    paths = [*sorted(p for p in directory.iterdir() if not p.name.endswith("-shm")), directory]
    for path in paths if on else reversed(paths):
        subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True)


@pytest.fixture
def fs() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("making files immutable (chattr +i) needs root")
    with tempfile.TemporaryDirectory(prefix="safescan-ro-") as d:
        place = Path(d) / "db"
        place.mkdir()
        probe = place / "probe"
        probe.touch()
        out = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, check=False)
        if out.returncode != 0:
            pytest.skip(f"no chattr +i on this file system: {out.stderr.decode().strip()}")
        subprocess.run(["chattr", "-i", str(probe)], check=True)
        probe.unlink()
        try:
            yield place
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                _immutable(place, False)


def _typed(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 503, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] == "storage_error" and err["type"] == "StorageError", err
    return dict(err)


@pytest.mark.slow
def test_a_read_only_database_refuses_every_write_typed_and_recovers(fs: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="safescan-ro-keys-") as d:
        db_path = fs / "institution.db"
        db = f"sqlite:///{db_path}"
        keys = Path(d) / "keys"
        with served_on(db, keys, ["--merchant-rate", "0", "--maintenance-interval", "60"]) as w:
            m = w.merchant("Read Only Deli")
            cid = w.customer({"EUR": 100_000})
            carrier = w.carrier(cid)
            paid = m.order([("Tea", 1, 250)])
            p = w.pay(paid["code"], carrier.authorize(paid["code"]), idem="ro-paid")
            assert p.status_code == 201, p.text
            waiting = m.order([("Cake", 1, 400)])
            auth = carrier.authorize(waiting["code"])

            _immutable(fs, True)
            try:
                refused = [
                    w.pay(waiting["code"], auth, idem="ro-1"),  # the payment
                    m.request(  # a refund
                        "POST",
                        f"/v1/merchant/orders/{paid['order_id']}/refunds",
                        {"amount": 100},
                        headers={"Idempotency-Key": "ro-refund"},
                    ),
                    m.request(  # an order
                        "POST",
                        "/v1/merchant/orders",
                        {
                            "items": [{"name": "Pie", "quantity": 1, "unit_price": 300}],
                            "currency": "EUR",
                        },
                    ),
                    w.admin("POST", "/v1/admin/customers", {"name": "Bob"}),  # the administrator
                    w.admin(
                        "POST", f"/v1/admin/customers/{cid}/fund", {"currency": "EUR", "amount": 5}
                    ),
                ]
                for r in refused:
                    _typed(r)
                assert w.server.proc is not None and w.server.proc.poll() is None
                cli = institution_cli("manufacturer", "revoke", "77", "--db", db, "--json")
                assert cli.returncode != 0 and "Traceback" not in cli.stderr, cli.stderr
                assert json.loads(cli.stdout)["error"]["code"] == "storage_error", cli.stdout
                assert stored_state(db_path, waiting["order_id"]) == "CREATED"
                assert integrity(db_path) == "ok"
            finally:
                _immutable(fs, False)

            deadline = time.monotonic() + 30
            while True:  # the same process serves again; the refused payment goes through
                r = w.pay(waiting["code"], auth, idem="ro-1")
                if r.status_code == 201:
                    break
                _typed(r)
                assert time.monotonic() < deadline, r.text
                time.sleep(0.3)
            refund = m.request(
                "POST",
                f"/v1/merchant/orders/{paid['order_id']}/refunds",
                {"amount": 100},
                headers={"Idempotency-Key": "ro-refund"},
            )
            assert refund.status_code == 201, refund.text
            assert order(m, waiting["order_id"])["state"] == "PAID"
            assert customer_balance(w, cid) == 100_000 - 250 - 400 + 100
        listed = institution_cli("manufacturer", "list", "--db", db, "--json")
        assert [k["status"] for k in json.loads(listed.stdout)] == ["active"], listed.stdout
        assert integrity(db_path) == "ok"
        report = audit(db)
        assert report["ok"] is True and report["rc"] == 0, report
