"""The happy path, end to end with real processes: POS order -> QR PNG -> wallet -> paid."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from safescan.client import AdminClient
from safescan.code import LineItem, qr
from safescan.merchant.client import MerchantApi, wait_for_payment
from safescan.merchant.journal import Journal
from safescan.wallet.flow import Wallet
from tests.e2e.conftest import PIN, World

ITEMS = [LineItem("Flat white", 2, 350), LineItem("Croissant", 1, 180), LineItem("Juice", 1, 420)]


def _balance(world: World, customer: str) -> int:
    with AdminClient(world.base_url, world.stack.admin_token) as admin:
        return admin.customers.balance(customer, "EUR")


def test_happy_path_pos_wallet_institution(world: World, tmp_path: Path) -> None:
    before = _balance(world, world.alice.customer_id)
    with MerchantApi(world.pos) as api, Wallet.load(world.alice.wallet_dir) as wallet:
        order = api.create_order(ITEMS, currency="EUR")
        png = tmp_path / "order.png"
        qr.save_png(order.code, png)
        seen: dict[str, Any] = {}
        stop = threading.Event()

        def pos() -> None:
            seen["event"], seen["receipt"] = wait_for_payment(api, order, stop=stop)

        listener = threading.Thread(target=pos, daemon=True)
        listener.start()

        scan = wallet.scan(png)
        assert scan.kind == "safescan" and scan.text == order.code
        with wallet.open(scan.text) as offer:
            shown = offer.describe()
            assert shown["merchant"]["name"] == "Café Lumière"
            assert shown["merchant"]["city"] == "Paris"
            assert shown["issuer"] == "institution"
            assert [(i["name"], i["quantity"]) for i in shown["items"]] == [
                ("Flat white", 2),
                ("Croissant", 1),
                ("Juice", 1),
            ]
            assert shown["total"] == 1300 and shown["total_display"] == "13.00 EUR"
            assert 0 < shown["expires_in"] <= 300
            paid = offer.pay(PIN)
        listener.join(15)
        stop.set()

        assert paid.receipt.amount == 1300 and paid.receipt.order_id == order.order_id
        assert paid.receipt.code_digest == order.digest
        assert "receipt" in seen, "the POS was not notified"
        assert seen["receipt"].payment_id == paid.receipt.payment_id
        assert seen["event"].type == "payment.succeeded"
        assert api.orders.get(order.order_id).state == "PAID"
        history = wallet.history.recent()
        assert history[0]["payment_id"] == paid.receipt.payment_id
        assert history[0]["merchant_name"] == "Café Lumière"
    assert _balance(world, world.alice.customer_id) == before - 1300
    audit = world.stack.audit()
    assert audit["ok"], audit


def _run(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=60, check=False, **kw
    )


def test_pos_cli_order_waits_then_prints_verified_receipt(world: World, tmp_path: Path) -> None:
    png = tmp_path / "cli.png"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "safescan.merchant",
            "order",
            "--config",
            str(world.pos_path),
            "--item",
            "Flat white:2:350",
            "--item",
            "Croissant:1:180",
            "--png",
            str(png),
            "--svg",
            str(tmp_path / "cli.svg"),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["event"] == "order" and first["total"] == 880
        assert (tmp_path / "cli.svg").read_text().startswith("<")
        with (
            Wallet.load(world.alice.wallet_dir) as wallet,
            wallet.open(wallet.scan(png).text) as offer,
        ):
            paid = offer.pay(PIN)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    receipt = json.loads(out.strip().splitlines()[-1])
    assert receipt["event"] == "paid"
    assert receipt["receipt"]["payment_id"] == paid.receipt.payment_id
    assert receipt["receipt"]["signature_verified"] is True

    listed = _run("safescan.merchant", "orders", "--json", "--config", str(world.pos_path))
    assert listed.returncode == 0, listed.stderr
    rows = {r["order_id"]: r for r in json.loads(listed.stdout)["orders"]}
    assert rows[first["order_id"]]["state"] == "PAID"

    refund = _run(
        "safescan.merchant",
        "refund",
        first["order_id"],
        "--amount",
        "180",
        "--json",
        "--config",
        str(world.pos_path),
    )
    assert refund.returncode == 0, refund.stderr
    made = json.loads(refund.stdout)
    assert made["order_state"] == "PARTIALLY_REFUNDED"
    # the journal keeps the order's paid amount and records the refund (the refund's amount
    # once overwrote the paid amount there)
    journal = Journal(world.pos_path.with_name(world.pos_path.stem + "-journal.sqlite3"))
    try:
        row = journal.get(first["order_id"])
        assert row is not None
        assert row["paid_amount"] == first["total"] and row["refunded"] == 180, row
        assert [
            (r["refund_id"], r["amount"], r["staff"]) for r in journal.refunds(first["order_id"])
        ] == [(made["refund_id"], 180, "pos-cli")]
    finally:
        journal.close()
    too_much = _run(
        "safescan.merchant",
        "refund",
        first["order_id"],
        "--amount",
        "5000",
        "--config",
        str(world.pos_path),
    )
    assert too_much.returncode == 2 and "exceeds" in too_much.stderr


def test_pos_cli_order_writes_no_image_unless_asked(world: World, tmp_path: Path) -> None:
    """`pos order` without --png once wrote order-<id>.png into whatever directory it ran
    in; now it writes no file at all (the code is on the terminal, or in the JSON)."""
    work = tmp_path / "cwd"
    work.mkdir()
    common = ("safescan.merchant", "order", "--config", str(world.pos_path), "--no-wait")
    made = _run(*common, "--item", "Tea:1:200", "--json", cwd=work)
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    assert doc["event"] == "order" and doc["png"] is None and doc["code"]
    shown = _run(*common, "--item", "Tea:1:210", cwd=work)
    assert shown.returncode == 0, shown.stderr
    assert "Tea" in shown.stdout and "PNG" not in shown.stdout
    assert list(work.iterdir()) == []
    asked = _run(*common, "--item", "Tea:1:220", "--json", "--png", str(work / "o.png"), cwd=work)
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["png"] == str(work / "o.png")
    assert [p.name for p in work.iterdir()] == ["o.png"]


def test_wallet_cli_scan_with_pin_file_and_history(world: World, tmp_path: Path) -> None:
    with MerchantApi(world.pos) as api:
        order = api.create_order([LineItem("Espresso", 1, 250)], currency="EUR")
    png = tmp_path / "w.png"
    qr.save_png(order.code, png)
    pin = tmp_path / "pin"
    pin.write_text(PIN + "\n")
    out = _run(
        "safescan.wallet",
        "scan",
        str(png),
        "--yes",
        "--pin-file",
        str(pin),
        "--json",
        "--wallet-dir",
        str(world.alice.wallet_dir),
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [x["result"] for x in lines] == ["offer", "paid"]
    assert lines[0]["offer"]["merchant"]["name"] == "Café Lumière"
    # the 6-digit demo PIN as a word of its own: a hex digest or timestamp in the output may
    # hold those six digits by chance (~1e-4 per run for 2 KB of hex), a leaked PIN is a word
    assert PIN not in re.findall(r"[0-9A-Za-z]+", out.stdout + out.stderr)
    hist = _run("safescan.wallet", "history", "--json", "--wallet-dir", str(world.alice.wallet_dir))
    ids = [p["payment_id"] for p in json.loads(hist.stdout)["payments"]]
    assert lines[1]["payment"]["payment_id"] in ids


EMV = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678"
    "520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京"
    "540523.7253031565502016233030412340603***0708A60086670902ME"
    "91320016A0112233449988770708123456786304A13A"
)


def test_wallet_shows_emv_and_links_but_never_pays_or_opens_them(world: World) -> None:
    emv = _run(
        "safescan.wallet", "scan", EMV, "--json", "--wallet-dir", str(world.alice.wallet_dir)
    )
    assert emv.returncode == 3
    doc = json.loads(emv.stdout)
    assert doc["result"] == "not_payable" and doc["kind"] == "emv"
    assert doc["info"]["verified"] is False and "unverified" in doc["info"]["note"]
    link = _run(
        "safescan.wallet",
        "scan",
        "https://pay.example.com/x?to=evil",
        "--wallet-dir",
        str(world.alice.wallet_dir),
    )
    assert link.returncode == 3
    assert "not a payment code" in link.stdout and "not opened" in link.stdout
