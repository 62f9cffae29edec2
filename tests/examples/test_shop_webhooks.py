"""The example shop's webhook endpoint (examples/shop) attacked over HTTP: the shop runs as its own
process on 127.0.0.1 and is sent ``checkout.session.completed`` deliveries signed as the
institution signs them (Standard Webhooks ``v1``, HMAC-SHA256 with the endpoint's secret).

What must hold: only a genuine, fresh delivery that matches the order marks it paid, once; a
replay (the same delivery again, now or later), a tampered body, another secret, an old or future
timestamp, a malformed signature, an event whose id is not the webhook id, an event for a session
the shop never made or with another amount, currency or reference changes nothing.
"""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from safescan.procs import ManagedProcess

ROOT = Path(__file__).resolve().parents[2]
SHOP_DIR = ROOT / "examples" / "shop"
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


@dataclass
class Shop:
    url: str
    db: Path
    proc: ManagedProcess

    def order(self, total: int = 2500, reference: str | None = None) -> tuple[str, str]:
        """A pending order with a checkout session id, as POST /checkout records it."""
        sid = "cs_" + "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(26))
        with sqlite3.connect(self.db) as db:
            cur = db.execute(
                "INSERT INTO orders (reference, session_id, browser, items, total, status,"
                " created_at) VALUES ('', ?, 'b', '[]', ?, 'pending', ?)",
                (sid, total, time.time()),
            )
            ref = reference or f"shop-{cur.lastrowid:05d}"
            db.execute("UPDATE orders SET reference = ? WHERE session_id = ?", (ref, sid))
        return sid, ref

    def status(self, sid: str) -> tuple[str, str | None]:
        with sqlite3.connect(self.db) as db:
            row = db.execute(
                "SELECT status, payment_id FROM orders WHERE session_id = ?", (sid,)
            ).fetchone()
        return str(row[0]), row[1]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    tmp = tmp_path_factory.mktemp("shop")
    proc = ManagedProcess(
        "shop",
        [sys.executable, "-m", "shop"],
        env={
            "PATH": "/usr/bin:/bin",
            "SHOP_INSTITUTION_URL": "http://127.0.0.1:9",  # never called by these tests
            "SHOP_API_KEY": "sk_live_" + "a" * 16 + "_" + "b" * 43,
            "SHOP_WEBHOOK_SECRET": SECRET,
            "SHOP_DB": str(tmp / "shop.db"),
            "SHOP_PORT": "0",
        },
        cwd=SHOP_DIR,
        log=tmp / "shop.log",
        capture=True,
    ).start()
    try:
        url = proc.ready_line("READY")
        yield Shop(url, tmp / "shop.db", proc)
    finally:
        proc.stop()


def event(sid: str, ref: str, total: int = 2500, **changes: Any) -> dict[str, Any]:
    data = {
        "session_id": sid,
        "status": "complete",
        "order_id": "ORDER1234567",
        "payment_id": "pay_" + secrets.token_hex(8),
        "amount_total": total,
        "currency": 978,
        "reference": ref,
        "completed_at": int(time.time()),
    }
    data.update(changes)
    return {
        "id": "evt_" + secrets.token_hex(10),
        "type": "checkout.session.completed",
        "created": int(time.time()),
        "merchant_id": "MSHOP",
        "data": data,
    }


def signed(
    doc: dict[str, Any], *, secret: str = SECRET, at: float | None = None, msg_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(doc, separators=(",", ":")).encode()
    msg_id = msg_id or doc["id"]
    when = datetime.fromtimestamp(at if at is not None else time.time(), tz=UTC)
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return body, headers


def post(shop: Shop, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(shop.url + "/webhooks/safescan", content=body, headers=headers, timeout=10)


def test_a_genuine_delivery_marks_the_order_paid_once_and_replays_change_nothing(
    shop: Shop,
) -> None:
    sid, ref = shop.order()
    doc = event(sid, ref)
    body, headers = signed(doc)
    r = post(shop, body, headers)
    assert r.status_code == 200 and r.json() == {"ok": True}, r.text
    assert shop.status(sid) == ("paid", doc["data"]["payment_id"])
    # the very same delivery again (an attacker replays it, or the institution retries)
    for _ in range(3):
        again = post(shop, body, headers)
        assert again.status_code == 200 and again.json() == {"duplicate": True}
    # re-signed with a fresh timestamp but the same webhook id (a retry of the same event)
    body2, headers2 = signed(doc)
    assert post(shop, body2, headers2).json() == {"duplicate": True}
    assert shop.status(sid) == ("paid", doc["data"]["payment_id"])


def test_concurrent_and_reordered_duplicates_are_acted_on_once(shop: Shop) -> None:
    """The same event delivered 12 times at once (the very delivery, and re-signed at other
    moments within the tolerance, older ones arriving last: an at-least-once sender's retries
    racing, or an attacker replaying): one is handled, every other is a duplicate; then the
    same session's completion under another event id (a second event for it) changes
    nothing: the order keeps the first payment."""
    from concurrent.futures import ThreadPoolExecutor

    sid, ref = shop.order()
    doc = event(sid, ref)
    now = time.time()
    deliveries = [signed(doc, at=now - age) for age in (0, 0, 0, 30, 60, 120, 240, 280)]
    deliveries += [signed(doc, at=now + ahead) for ahead in (10, 60, 120, 240)]
    with ThreadPoolExecutor(len(deliveries)) as pool:
        answers = list(pool.map(lambda d: post(shop, *d), deliveries))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    bodies = [a.json() for a in answers]
    assert bodies.count({"ok": True}) == 1, bodies
    assert bodies.count({"duplicate": True}) == len(deliveries) - 1, bodies
    assert shop.status(sid) == ("paid", doc["data"]["payment_id"])
    second = event(sid, ref)  # another event id, another payment id, the same session
    r = post(shop, *signed(second))
    assert r.status_code == 200, r.text
    assert shop.status(sid) == ("paid", doc["data"]["payment_id"])


def test_a_timestamp_header_respelt_after_signing_is_refused(shop: Shop) -> None:
    """The ``standardwebhooks`` library reads ``webhook-timestamp`` with ``float()`` and checks
    the signature over its floor: a delivery whose header was rewritten after signing
    ("<t>.9", "0<t>", "<t>e0", "+<t>", "1_7...") verified (redteam). Only the signed spelling
    is taken; the genuine delivery still is."""
    sid, ref = shop.order()
    body, headers = signed(event(sid, ref))
    t = headers["webhook-timestamp"]
    for spelling in (f"{t}.9", f"{t}.0", f"0{t}", f"{t}e0", f"+{t}", f"{t[0]}_{t[1:]}"):
        r = post(shop, body, {**headers, "webhook-timestamp": spelling})
        assert r.status_code == 400, (spelling, r.text)
    assert shop.status(sid) == ("pending", None)
    assert post(shop, body, headers).json() == {"ok": True}


def _respelt(b64: str) -> str:
    """The same bytes, another spelling: the last character's unused low bits set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    pad = len(b64) - len(b64.rstrip("="))
    i = len(b64) - pad - 1
    other = alphabet[alphabet.index(b64[i]) ^ {1: 0b11, 2: 0b1111}[pad]]
    return b64[:i] + other + b64[i + 1 :]


def test_junk_in_or_next_to_a_genuine_signature_is_refused(shop: Shop) -> None:
    """The ``standardwebhooks`` library decodes base64 without checking it and splits the
    header loosely: a genuine signature respelt (padding bits), with a character outside the
    alphabet inside it, or with junk entries or separators around it verified (redteam, tenth
    sitting). Each is refused and changes nothing; the genuine delivery still verifies."""
    sid, ref = shop.order()
    body, headers = signed(event(sid, ref))
    sig = headers["webhook-signature"]
    b64 = sig.partition(",")[2]
    for junk in (
        "v1," + _respelt(b64),
        "v1," + b64[:10] + "!" + b64[10:],
        "v1," + b64[:10] + "\t" + b64[10:],
        f"{sig} junk",
        f"{sig}  {sig}",
        f"{sig} {sig}",
        f"{sig}=",
    ):
        r = post(shop, body, {**headers, "webhook-signature": junk})
        assert r.status_code == 400, (junk, r.text)
    assert shop.status(sid) == ("pending", None)
    assert post(shop, body, headers).json() == {"ok": True}


def test_a_delivery_replayed_after_the_tolerance_is_refused(shop: Shop) -> None:
    sid, ref = shop.order()
    body, headers = signed(event(sid, ref), at=time.time() - 6 * 60)
    r = post(shop, body, headers)
    assert r.status_code == 400 and "too old" in r.text
    body, headers = signed(event(sid, ref), at=time.time() + 6 * 60)
    r = post(shop, body, headers)
    assert r.status_code == 400 and "too new" in r.text
    assert shop.status(sid) == ("pending", None)


def test_forged_and_tampered_deliveries_are_refused(shop: Shop) -> None:
    sid, ref = shop.order()
    doc = event(sid, ref)
    body, headers = signed(doc)
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    cases: list[tuple[bytes, dict[str, str]]] = [
        (body.replace(b'"amount_total":2500', b'"amount_total":1'), headers),  # body edited
        (body + b" ", headers),
        signed(doc, secret=other),  # another secret
        (body, {**headers, "webhook-id": "evt_other"}),  # id swapped after signing
        (body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}),
        (body, {k: v for k, v in headers.items() if k != "webhook-signature"}),
        (body, {k: v for k, v in headers.items() if k != "webhook-timestamp"}),
        (body, {**headers, "webhook-signature": "v1a," + headers["webhook-signature"][3:]}),
        (body, {**headers, "webhook-signature": "garbage"}),
        (body, {**headers, "webhook-signature": "v1,@@@not-base64@@@"}),
        (body, {**headers, "webhook-timestamp": "soon"}),
        (b"\xff\xfe" + body, headers),
    ]
    for i, (b, h) in enumerate(cases):
        r = post(shop, b, h)
        assert r.status_code == 400, (i, r.status_code, r.text)
    assert shop.status(sid) == ("pending", None)
    # the genuine one still works afterwards (nothing above was remembered as handled)
    assert post(shop, body, headers).json() == {"ok": True}
    assert shop.status(sid)[0] == "paid"


def test_a_signed_event_that_does_not_match_the_order_changes_nothing(shop: Shop) -> None:
    sid, ref = shop.order(total=4500)
    for changes in (
        {"amount_total": 1},
        {"amount_total": 4499},
        {"currency": 840},
        {"reference": "shop-99999"},
    ):
        body, headers = signed(event(sid, ref, total=4500, **changes))
        r = post(shop, body, headers)
        assert r.status_code == 409, (changes, r.text)
    # a session this shop never made
    body, headers = signed(event("cs_" + "Z" * 26, ref, total=4500))
    assert post(shop, body, headers).status_code == 404
    # an event whose id is not the webhook id it was signed under
    doc = event(sid, ref, total=4500)
    body, headers = signed(doc, msg_id="evt_" + "0" * 20)
    assert post(shop, body, headers).status_code == 400
    assert shop.status(sid) == ("pending", None)


def test_the_success_page_does_not_take_the_visit_as_payment(shop: Shop) -> None:
    """Arriving at the success page with a session id proves nothing: the shop asks the
    institution (unreachable here), and the order stays pending."""
    sid, _ = shop.order()
    r = httpx.get(shop.url + "/success", params={"session": sid}, timeout=30)
    assert r.status_code == 200 and 'data-status="pending"' in r.text
    assert shop.status(sid) == ("pending", None)
    r = httpx.get(shop.url + "/success", params={"session": "<script>alert(1)</script>"})
    assert "<script>" not in r.text and 'data-status="unknown"' in r.text


def test_cart_forms_from_another_site_are_refused(shop: Shop) -> None:
    for path in ("/cart/add", "/checkout", "/cart/clear"):
        for origin in ({}, {"Origin": "https://evil.example"}, {"Origin": "null"}):
            r = httpx.post(
                shop.url + path,
                content=b"product=teapot&quantity=1",
                headers={"Content-Type": "application/x-www-form-urlencoded", **origin},
            )
            assert r.status_code == 403, (path, origin, r.status_code)
