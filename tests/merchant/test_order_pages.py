"""The POS's order lists page with a cursor (``starting_after`` the last order id shown):
``safescan pos orders`` (a real process) and the back office's list, over a journal of more
than 200 orders recorded in the same second (the cursor's tie-break), with filters; bad
cursors refused with a clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from safescan.client.merchant import Order
from safescan.code.certs import TrustStore
from safescan.code.keys import SigningKey
from safescan.code.payment import LineItem
from safescan.merchant import bopages
from safescan.merchant.backoffice import PAGE, parse_filters
from safescan.merchant.config import PosConfig
from safescan.merchant.journal import Filters, Journal, JournalError
from safescan.merchant.websec import PosRequestRefused
from safescan.web import pki

PASS = "pos passphrase 789"
COUNT = 250


@pytest.fixture
def terminal(tmp_path: Path) -> tuple[Path, list[str]]:
    """A terminal's file and its journal of COUNT closed orders (ids newest first)."""
    tls = pki.create_tls_dir(pki.TlsDir(tmp_path / "tls"))
    cfg = PosConfig(
        institution_url="https://127.0.0.1:9",  # never asked: the orders are all final
        merchant_id="M0000000042",
        api_seed=os.urandom(32),
        trust=TrustStore({1: SigningKey.generate().public_key}),
        tls_ca=tls.ca_cert.read_text(),
    )
    path = cfg.save(tmp_path / "state" / "pos.json", passphrase=PASS.encode())
    cfg.path = path
    journal = Journal(cfg.journal_path)
    ids = []
    try:
        for i in range(COUNT):
            oid = f"ORD{i:05d}"
            item = LineItem("Tea" if i % 2 else "Cake", 1, 100 + i)
            journal.add(Order(oid, "M0000000042", "code", item.amount, 978, 0, 10, (item,)))
            journal.update(oid, {"state": "CLOSED"})
            ids.append(oid)
    finally:
        journal.close()
    return path, ids[::-1]


def _pos(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAFESCAN_POS_")}
    return subprocess.run(
        [sys.executable, "-m", "safescan", "pos", *args],
        env={**clean, "SAFESCAN_POS_PASSPHRASE": PASS},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_pos_orders_pages_through_more_than_200_orders(terminal: tuple[Path, list[str]]) -> None:
    path, newest_first = terminal
    listed: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        extra = ["--starting-after", cursor] if cursor else []
        out = _pos("orders", "--json", "--limit", "100", "--config", str(path), *extra)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        listed += [r["order_id"] for r in doc["orders"]]
        pages += 1
        if not doc["has_more"]:
            assert doc["next_starting_after"] is None
            break
        cursor = doc["next_starting_after"]
        assert cursor == listed[-1]
    assert listed == newest_first and pages == 3
    # the table names the next page's command
    text = _pos("orders", "--limit", "5", "--config", str(path))
    assert f"--starting-after {newest_first[4]}" in text.stdout, text.stdout
    for bad in ("NOSUCHORDER", "../x", "x" * 41):
        out = _pos("orders", "--json", "--starting-after", bad, "--config", str(path))
        assert out.returncode == 2 and "error" in json.loads(out.stdout), (bad, out.stdout)
    assert _pos("orders", "--json", "--limit", "0", "--config", str(path)).returncode == 2


def test_the_journal_pages_with_filters(terminal: tuple[Path, list[str]]) -> None:
    path, newest_first = terminal
    journal = Journal(path.with_name(path.stem + "-journal.sqlite3"))
    try:
        seen: list[str] = []
        f = Filters(text="Tea", limit=PAGE)
        while True:
            rows, more = journal.page(f)
            seen += [r["order_id"] for r in rows]
            if not more:
                break
            f = Filters(text="Tea", limit=PAGE, starting_after=rows[-1]["order_id"])
        assert seen == [o for o in newest_first if int(o[3:]) % 2] and len(seen) == COUNT // 2
        assert journal.search(Filters()) == journal.page(Filters())[0]
        assert len(journal.search(Filters())) == 200 and journal.page(Filters())[1]
        with pytest.raises(JournalError):
            journal.page(Filters(starting_after="NOSUCHORDER"))
    finally:
        journal.close()


def test_the_back_office_list_links_its_pages() -> None:
    form = {"state": "CLOSED", "q": "Tea", "starting_after": "ORD00100"}
    f = parse_filters(form, 2)
    assert f.starting_after == "ORD00100" and f.limit == PAGE and f.text == "Tea"
    for bad in ("../orders", "a b", "<script>", "x" * 41):
        with pytest.raises(PosRequestRefused):
            parse_filters({"starting_after": bad}, 2)
    row = {
        "order_id": "ORD00099",
        "created_at": 0,
        "state": "CLOSED",
        "total": 100,
        "currency": 978,
        "refunded": 0,
        "items": [["Tea", 1, 100]],
    }
    page = bopages.orders_body([row], form, next_after="ORD00099")
    assert 'id="next-page"' in page and "starting_after=ORD00099" in page
    assert "state=CLOSED" in page and "q=Tea" in page  # the search carried over
    assert 'id="first-page"' in page and "starting_after=ORD00100" not in page
    last = bopages.orders_body([row], {"q": "Tea"})
    assert 'id="next-page"' not in last and 'id="first-page"' not in last
