"""Disk full under the SQLite store: a clear typed error, no corruption, full service after.

The database lives on a 2 MiB tmpfs mounted for the test (root only; the test skips with the
reason otherwise). The test fills the file system to the last byte, then keeps creating orders
and paying them until the store refuses: every answer is a success or a typed JSON 503
``storage_error``, never a 500 or a hang; ``PRAGMA integrity_check`` stays ``ok``; a refused
payment left its order unpaid. An authenticated read records its replay nonce (a write), so
while the disk is full it is answered or refused with the same typed 503. After space is freed
the same process serves again, every acknowledged payment is there, and the audit passes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.common import audit, customer_balance, order, served_on

SIZE = "2m"


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; run the fault suite as root")
    with tempfile.TemporaryDirectory(prefix="safescan-diskfull-") as d:
        mnt = Path(d) / "mnt"
        mnt.mkdir()
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip() or out.returncode}")
        try:
            yield mnt
        finally:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system is full (to the last byte); returns it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            block = b"\0" * size
            while True:
                try:
                    if os.write(fd, block) < size:
                        break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` through a read-only connection."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def stored_state(db: Path, order_id: str) -> str:
    """An order's state as stored, through a read-only connection."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT state FROM orders WHERE order_id = ?", (order_id,)).fetchone()
    assert row is not None, order_id
    return str(row[0])


@pytest.mark.slow
def test_disk_full_gives_typed_error_no_corruption_and_recovers(small_fs: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="safescan-diskfull-keys-") as d:
        db_path = small_fs / "institution.db"
        db = f"sqlite:///{db_path}"
        keys = Path(d) / "keys"
        with served_on(db, keys, ["--merchant-rate", "0", "--maintenance-interval", "60"]) as w:
            m = w.merchant("Full Disk Deli")
            cid = w.customer({"EUR": 10_000_000})
            carrier = w.carrier(cid)
            acked: dict[str, str] = {}
            codes: dict[str, str] = {}

            def pay_one(i: int) -> tuple[httpx.Response, str | None]:
                r = m.request(
                    "POST",
                    "/v1/merchant/orders",
                    {
                        "items": [
                            {"name": f"Item {i} " + "x" * 40, "quantity": 1, "unit_price": 100 + i}
                        ],
                        "currency": "EUR",
                        "reference": "r" * 60,
                    },
                )
                if r.status_code != 201:
                    return r, None
                o = r.json()
                codes[o["order_id"]] = o["code"]
                p = w.pay(o["code"], carrier.authorize(o["code"]), idem=f"full-{i}")
                if p.status_code == 201:
                    acked[o["order_id"]] = p.json()["payment_id"]
                return p, o["order_id"]

            for i in range(5):
                assert pay_one(i)[0].status_code == 201
            filler = fill(small_fs)
            refusals: list[httpx.Response] = []
            unpaid: list[str] = []
            for i in range(5, 1500):
                r, oid = pay_one(i)
                if r.status_code != 201:
                    assert r.status_code == 503, (r.status_code, r.text)
                    err = r.json()["error"]
                    assert err["code"] == "storage_error" and err["type"] == "StorageError"
                    refusals.append(r)
                    if oid is not None:
                        unpaid.append(oid)
                    if len(refusals) >= 5:
                        break
            assert refusals, "the store never ran out of space"
            assert any("disk is full" in r.json()["error"]["message"] for r in refusals), [
                r.json()["error"]["message"] for r in refusals
            ]
            print(f"disk full after {i - 5} more payments: {refusals[0].json()['error']}")
            assert w.server.proc is not None and w.server.proc.poll() is None
            assert integrity(db_path) == "ok"
            # a refused payment left its order unpaid (read from the file itself: a signed
            # read records its nonce, a write, so while the disk is full it may be refused
            # too -- typed, like every other write)
            for oid in unpaid:
                assert stored_state(db_path, oid) == "CREATED"
                r = m.request("GET", f"/v1/merchant/orders/{oid}")
                if r.status_code == 200:
                    assert r.json()["state"] == "CREATED"
                else:
                    assert r.status_code == 503, (r.status_code, r.text)
                    assert r.json()["error"]["code"] == "storage_error", r.text

            filler.unlink()  # space freed
            deadline = time.monotonic() + 30
            while True:
                r, _ = pay_one(10_000 + int(time.monotonic() * 1000) % 1000)
                if r.status_code == 201:
                    break
                assert time.monotonic() < deadline, r.text
                time.sleep(0.2)
            for oid in unpaid:  # the refused payments can be made now
                p = w.pay(codes[oid], carrier.authorize(codes[oid]))
                assert p.status_code == 201, p.text
                acked[oid] = p.json()["payment_id"]
            paid = 0
            for oid, pid in acked.items():
                o = order(m, oid)
                assert o["state"] == "PAID" and o["payment_id"] == pid
                paid += o["paid_amount"]
            assert customer_balance(w, cid) == 10_000_000 - paid
        assert integrity(db_path) == "ok"
        report = audit(db)
        assert report["ok"] is True and report["rc"] == 0, report
