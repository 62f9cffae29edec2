"""Retries that arrive while the first request is still being processed, and clients that lose
the answer: every retry with the same Idempotency-Key gets the first request's answer or a typed
"still in progress, retry", never a business refusal such as "already paid"; a status lookup
tells (and settles) what happened. SQLite and PostgreSQL, real servers.

Variations: the same payment sent 8 times at once (institution-issued codes, which PostgreSQL
pays with the one-statement function, and static codes, which take the multi-statement
transaction), through two server processes at once, refunds and order creations sent 8 times
at once, a retry after a refusal, the key held by a stopped transaction (PostgreSQL: a
connection holding the claim; SQLite: another process holding the write lock), the institution
SIGSTOPped under a client (the wallet's payment logic, the POS refund), and lookups before,
after and instead of the request.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from safescan.api.errors import IdempotencyConflict, InsufficientFunds
from safescan.api.wire import PaymentRequest
from safescan.client.wallet import WalletClient
from safescan.institution.db import normalize_url
from safescan.wallet.errors import PaymentNotMade, PaymentOutcomeUnknown
from safescan.wallet.pending import submit
from safescan.wallet.store import PendingPayment
from tests.faults.common import audit, customer_balance, order, pending_payment, pos_merchant
from tests.institution.conftest import BACKENDS, make_db
from tests.institution.harness import (
    Carrier,
    MerchantClient,
    ServerProcess,
    World,
    b64,
    init_db,
    institution_run,
)

FUNDS = 10_000_000
NO_LIMIT = ["--merchant-rate", "0"]


@dataclass
class Site:
    """A served institution with a merchant, a funded customer and a carrier."""

    w: World
    server: ServerProcess
    m: MerchantClient
    cid: str
    carrier: Carrier
    db: str
    tmp: Path


@contextlib.contextmanager
def site(
    backend: str, request: pytest.FixtureRequest, extra: list[str] | None = None
) -> Iterator[Site]:
    with tempfile.TemporaryDirectory(prefix="safescan-inflight-") as d:
        tmp = Path(d)
        db = make_db(backend, request, tmp)
        token = init_db(db, tmp / "keys")
        server = ServerProcess(db, tmp / "keys", extra=NO_LIMIT + (extra or [])).start()
        w = World(server, token)
        try:
            m = w.merchant("Retry Cafe")
            cid = w.customer({"EUR": FUNDS})
            yield Site(w, server, m, cid, w.carrier(cid), db, tmp)
        finally:
            w.close()
            assert server.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.proc.pid, signal.SIGCONT)
            server.stop()
        report = audit(db)
        assert report["ok"] is True, report


def fan_out(
    servers: list[ServerProcess], n: int, send: Callable[[httpx.Client], httpx.Response]
) -> list[httpx.Response]:
    """``send`` on ``n`` threads released at once (clients spread over ``servers``)."""
    clients = [servers[i % len(servers)].client(timeout=60) for i in range(n)]
    barrier = threading.Barrier(n)

    def one(i: int) -> httpx.Response:
        barrier.wait()
        return send(clients[i])

    try:
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, range(n)))
    finally:
        for c in clients:
            c.close()


def same_or_in_progress(answers: list[httpx.Response]) -> dict[str, Any]:
    """Every answer is the first success, or 409 request_in_progress with Retry-After."""
    ok = [a for a in answers if a.status_code in (200, 201)]
    assert ok, [(a.status_code, a.text[:200]) for a in answers]
    first = ok[0].json()
    for a in answers:
        if a.status_code in (200, 201):
            assert a.json() == first
        else:
            assert a.status_code == 409, a.text
            assert a.json()["error"]["code"] == "request_in_progress", a.text
            assert a.headers.get("retry-after") == "1"
    return dict(first)


# --- 1. the same request, several times at once ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("code_kind", ["institution", "static"])
def test_concurrent_same_key_payments_get_one_answer(
    backend: str, code_kind: str, request: pytest.FixtureRequest
) -> None:
    with site(backend, request) as s:
        static = None
        if code_kind == "static":
            r = s.m.request("POST", "/v1/merchant/static-codes", {"currency": "EUR"})
            static = r.json()["code"]
        paid = 0
        for round_ in range(8):
            if static is None:
                o = s.m.order([("Race", 1, 100 + round_)])
                code, auth = o["code"], s.carrier.authorize(o["code"])
            else:
                code = static
                auth = s.carrier.authorize(code, amount=100 + round_, currency=978, order_id="")
            body = {"code": code, "authorization": b64(auth.to_bytes())}
            answers = fan_out(
                [s.server],
                8,
                lambda c, body=body, k=f"race-{round_}": c.post(
                    "/v1/payments", json=body, headers={"Idempotency-Key": k}
                ),
            )
            first = same_or_in_progress(answers)
            paid += first["amount"]
            # a later retry gets the same answer too
            again = s.w.http.post(
                "/v1/payments", json=body, headers={"Idempotency-Key": f"race-{round_}"}
            )
            assert again.status_code == 201 and again.json() == first
        assert customer_balance(s.w, s.cid) == FUNDS - paid


@pytest.mark.slow
@pytest.mark.postgres
def test_same_key_payments_through_two_server_processes(request: pytest.FixtureRequest) -> None:
    with site("postgresql", request) as s:
        other = ServerProcess(s.db, s.tmp / "keys", extra=NO_LIMIT).start()
        try:
            paid = 0
            for round_ in range(8):
                o = s.m.order([("Two", 1, 200 + round_)])
                body = {
                    "code": o["code"],
                    "authorization": b64(s.carrier.authorize(o["code"]).to_bytes()),
                }
                answers = fan_out(
                    [s.server, other],
                    10,
                    lambda c, body=body, k=f"two-{round_}": c.post(
                        "/v1/payments", json=body, headers={"Idempotency-Key": k}
                    ),
                )
                paid += same_or_in_progress(answers)["amount"]
            assert customer_balance(s.w, s.cid) == FUNDS - paid
        finally:
            other.stop()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_same_key_refunds_and_orders_get_one_answer(
    backend: str, request: pytest.FixtureRequest
) -> None:
    with site(backend, request) as s:
        for round_ in range(4):
            o = s.m.order([("Refundable", 1, 1000)])
            assert (
                s.w.pay(o["code"], s.carrier.authorize(o["code"]), f"p{round_}").status_code == 201
            )
            path = f"/v1/merchant/orders/{o['order_id']}/refunds"
            answers = fan_out(
                [s.server],
                8,
                lambda c, path=path, k=f"ref-{round_}": c.send(
                    _signed(s.m, c, "POST", path, {"amount": 300}, k)
                ),
            )
            first = same_or_in_progress(answers)
            assert first["amount"] == 300
            assert order(s.m, o["order_id"])["refunded_amount"] == 300  # once
            # orders: one created, whatever the number of concurrent attempts
            body = {
                "items": [{"name": "Once", "quantity": 1, "unit_price": 50 + round_}],
                "currency": "EUR",
            }
            answers = fan_out(
                [s.server],
                8,
                lambda c, body=body, k=f"ord-{round_}": c.send(
                    _signed(s.m, c, "POST", "/v1/merchant/orders", body, k)
                ),
            )
            created = same_or_in_progress(answers)
            listed = s.m.request("GET", "/v1/merchant/orders?limit=100").json()["orders"]
            assert sum(1 for x in listed if x["total"] == 50 + round_) == 1
            assert any(x["order_id"] == created["order_id"] for x in listed)


def _signed(
    m: MerchantClient, c: httpx.Client, method: str, path: str, payload: Any, key: str
) -> httpx.Request:
    from safescan.api.merchant_auth import sign_request

    body = httpx.Request("POST", "/", json=payload).content
    h = sign_request(m.key, m.merchant_id, method, path, body, idempotency_key=key)
    h["Content-Type"] = "application/json"
    return c.build_request(method, path, content=body, headers=h)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refusal_is_the_keys_answer_and_another_request_under_the_key_conflicts(
    backend: str, request: pytest.FixtureRequest
) -> None:
    with site(backend, request) as s:
        poor = s.w.customer({"EUR": 100})
        carrier = s.w.carrier(poor)
        o = s.m.order([("Too dear", 1, 500)])
        auth = carrier.authorize(o["code"])
        first = s.w.pay(o["code"], auth, "poor-1")
        assert first.status_code == 402 and first.json()["error"]["code"] == "insufficient_funds"
        s.w.admin("POST", f"/v1/admin/customers/{poor}/fund", {"currency": "EUR", "amount": 1000})
        again = s.w.pay(o["code"], auth, "poor-1")  # same key: the same answer, not a payment
        assert (again.status_code, again.json()) == (402, first.json())
        assert order(s.m, o["order_id"])["state"] == "CREATED"
        # the key bound to another request: a conflict, whatever the state
        other = carrier.authorize(o["code"])
        assert s.w.pay(o["code"], other, "poor-1").json()["error"]["code"] == "idempotency_conflict"
        assert s.w.pay(o["code"], other, "poor-2").status_code == 201  # a new key pays


# --- 2. the key held by a transaction that does not finish -------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("code_kind", ["institution", "static"])
def test_a_key_held_by_a_stalled_transaction_is_in_progress_then_answered(
    code_kind: str, request: pytest.FixtureRequest
) -> None:
    """A transaction holding the key's claim (as a stopped API process would) makes every
    retry answer 409 request_in_progress (after at most about a second), changing nothing;
    when it rolls back the retry pays; when it commits, its answer is every retry's."""
    with site("postgresql", request) as s:
        engine = create_engine(normalize_url(s.db))
        for outcome in ("rollback", "commit"):
            if code_kind == "institution":
                o = s.m.order([("Held", 1, 700)])
                code, auth = o["code"], s.carrier.authorize(o["code"])
            else:
                code = s.m.request("POST", "/v1/merchant/static-codes", {"currency": "EUR"}).json()[
                    "code"
                ]
                auth = s.carrier.authorize(code, amount=700, currency=978, order_id="")
            key = f"held-{outcome}"
            scope = f"pay:{s.carrier.serial}"
            before = customer_balance(s.w, s.cid)
            with engine.connect() as holder:
                holder.execute(
                    text(
                        "INSERT INTO idempotency_keys (scope, key, request_hash, status_code,"
                        " response, created_at) VALUES (:s, :k, :h, 201, :r, 0)"
                    ),
                    {
                        "s": scope,
                        "k": key,
                        "h": _hash(code, auth.to_bytes()),
                        "r": '{"held": true}',
                    },
                )  # uncommitted: the claim of a transaction that does not finish
                for _ in range(3):
                    r = s.w.pay(code, auth, key)
                    assert r.status_code == 409, r.text
                    assert r.json()["error"]["code"] == "request_in_progress"
                    assert r.headers.get("retry-after") == "1"
                look = s.w.http.post(
                    "/v1/payments/lookup",
                    json={"code": code, "authorization": b64(auth.to_bytes())},
                    headers={"Idempotency-Key": key},
                )
                assert (
                    look.status_code == 409
                    and look.json()["error"]["code"] == "request_in_progress"
                )
                assert customer_balance(s.w, s.cid) == before
                if outcome == "rollback":
                    holder.rollback()
                else:
                    holder.commit()
            r = s.w.pay(code, auth, key)
            if outcome == "rollback":
                assert r.status_code == 201, r.text
                assert customer_balance(s.w, s.cid) == before - 700
            else:
                assert (r.status_code, r.json()) == (201, {"held": True})
                assert customer_balance(s.w, s.cid) == before
                # the committed claim was made by hand (an answer with no payment behind it):
                # the audit at the end would rightly report it, so it goes
                with engine.begin() as conn:
                    conn.execute(
                        text("DELETE FROM idempotency_keys WHERE scope = :s AND key = :k"),
                        {"s": scope, "k": key},
                    )
        engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_a_lookup_never_waits_for_ever_on_a_stalled_payment(request: pytest.FixtureRequest) -> None:
    """A transaction holds the carrier's row (a payment of that carrier stuck in a stopped API
    process): a lookup of another authorization of that carrier answers 409
    request_in_progress within about a second instead of hanging, and settles once the
    transaction is gone."""
    with site("postgresql", request) as s:
        engine = create_engine(normalize_url(s.db))
        o = s.m.order([("Stuck", 1, 650)])
        auth = s.carrier.authorize(o["code"]).to_bytes()
        body = {"code": o["code"], "authorization": b64(auth)}
        with engine.connect() as holder:
            holder.execute(
                text("UPDATE carriers SET last_counter = last_counter WHERE serial = :s"),
                {"s": s.carrier.serial},
            )
            for key in ("stuck-1", None):  # (a hang would hit the client's 30 s timeout)
                r = s.w.http.post(
                    "/v1/payments/lookup",
                    json=body,
                    headers={"Idempotency-Key": key} if key else {},
                )
                assert r.status_code == 409, r.text
                assert r.json()["error"]["code"] == "request_in_progress"
            holder.rollback()
        doc = s.w.http.post(
            "/v1/payments/lookup", json=body, headers={"Idempotency-Key": "stuck-1"}
        )
        assert doc.json()["outcome"] == "not_processed"
        assert order(s.m, o["order_id"])["state"] == "CREATED"
        engine.dispose()


def _hash(code: str, authorization: bytes) -> str:
    from safescan.institution.domain.idempotency import request_hash

    return request_hash({"code": code, "authorization": b64(authorization)})


@pytest.mark.slow
def test_sqlite_writer_lock_held_by_a_stopped_process_withdraws_then_pays(
    request: pytest.FixtureRequest,
) -> None:
    """Another process holds SQLite's write lock (as a stopped API process would): a payment
    waits the write deadline, is withdrawn and answered 503 "nothing was recorded" (certain: it
    never runs); the retry after the lock is released pays, once."""
    with site("sqlite", request, extra=["--write-deadline", "1"]) as s:
        o = s.m.order([("Locked", 1, 900)])
        auth = s.carrier.authorize(o["code"])
        lock_path = s.db.removeprefix("sqlite:///") + ".writer-lock"
        before = customer_balance(s.w, s.cid)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            for _ in range(2):
                r = s.w.pay(o["code"], auth, "locked-1")
                assert r.status_code == 503, r.text
                assert "nothing was recorded" in r.json()["error"]["message"]
            ready = s.w.http.get("/ready").json()["checks"]["writer"]
            assert ready["alive"] is True
        finally:
            os.close(fd)
        r = s.w.pay(o["code"], auth, "locked-1")
        assert r.status_code == 201, r.text
        assert customer_balance(s.w, s.cid) == before - 900
        assert s.w.pay(o["code"], auth, "locked-1").json() == r.json()


# --- 3. the institution stopped under a client -------------------------------------------------


def _pending(carrier: Carrier, o: dict[str, Any]) -> PendingPayment:
    return pending_payment(carrier, o, "Retry Cafe")


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stopped_for", [0.8, 2.5, 30.0])
def test_a_client_never_claims_nothing_was_charged_when_it_does_not_know(
    backend: str, stopped_for: float, request: pytest.FixtureRequest
) -> None:
    """The wallet's payment logic against an institution SIGSTOPped while it pays, for a
    moment (the retries get the answer), longer (the lookups get it) and longer than the
    client waits (the outcome is unknown: said so, and found out after the institution
    resumes). In every round what the client says matches the ledger."""
    with site(backend, request) as s:
        assert s.server.proc is not None
        pid = s.server.proc.pid
        told: list[str] = []
        for round_ in range(3):
            o = s.m.order([("Stopped", 1, 300 + round_)])
            p = _pending(s.carrier, o)
            before = customer_balance(s.w, s.cid)
            remote = WalletClient(s.server.base_url, timeout=0.5)
            # the TLS connection is made before the institution stops: the payment is sent on
            # it (a handshake that cannot finish sends nothing: "not charged" would be true)
            remote.keys.document()
            os.kill(pid, signal.SIGSTOP)
            resume = threading.Timer(stopped_for, os.kill, (pid, signal.SIGCONT))
            resume.start()
            try:
                answer = submit(remote, p, tries=3, lookups=3, backoff=0.3)
                told.append("paid")
            except PaymentOutcomeUnknown as exc:
                told.append("unknown")
                assert "may or may not" in exc.message and "nothing was charged" not in exc.message
            except PaymentNotMade as exc:
                told.append("not charged")
                assert "nothing was charged" in exc.message
            finally:
                resume.cancel()
                os.kill(pid, signal.SIGCONT)
                remote.close()
            time.sleep(0.5)
            doc = None
            if told[-1] == "unknown":  # find out now, as the wallet does later
                # the lookup settles it (a payment not processed by then never is), so the
                # balance is read after it: read before, a payment the resumed institution
                # processed after the read was "succeeded" with nothing charged yet
                with WalletClient(s.server.base_url, timeout=10) as later:
                    doc = later.payments.lookup(
                        PaymentRequest(p.code_text, p.authorization),
                        idempotency_key=p.idempotency_key,
                    )
                assert doc.outcome in ("succeeded", "not_processed"), doc
            charged = before - customer_balance(s.w, s.cid)
            if told[-1] == "paid":
                assert charged == o["total"] and answer.order_id == o["order_id"]
            elif told[-1] == "not charged":
                assert charged == 0  # never a false "nothing was charged"
            else:
                assert doc is not None
                assert charged == (o["total"] if doc.outcome == "succeeded" else 0)
                if doc.payment is not None:
                    assert doc.payment.order_id == o["order_id"] and doc.payment.receipt
            # and the payment can never happen later than what the client was finally told
            time.sleep(0.3)
            assert before - customer_balance(s.w, s.cid) == charged
        print(f"{backend} stopped {stopped_for}s: the client said {told}")
        if stopped_for < 1:
            assert "unknown" not in told
        if stopped_for > 10:
            assert set(told) == {"unknown"}


@pytest.mark.slow
def test_the_wallet_says_the_outcome_is_unknown_then_keeps_the_receipt() -> None:
    """A real wallet and key carrier process; the institution stopped right after the PIN:
    the wallet says the outcome is not known (never "nothing was charged"), refuses to pay the
    same code again while it does not know, and once the institution answers, `resolve_pending`
    finds the payment and keeps its verified receipt."""
    from safescan.code import LineItem
    from safescan.demo import DEMO_PIN, Stack
    from safescan.merchant.client import MerchantApi
    from safescan.wallet.errors import CodeRefusedByWallet
    from safescan.wallet.flow import Wallet

    tmp = Path(tempfile.mkdtemp(prefix="safescan-wallet-stop-"))
    stack = Stack(tmp, run_cli=institution_run)
    try:
        stack.begin_institution_init()
        stack.start_institution()
        pos = stack.onboard_merchant()
        _proc, carrier_url = stack.start_carrier("carrier-w")
        cid = stack.customer("Wendy", fund=10_000)
        wallet_dir = stack.enroll_wallet(cid, carrier_url, name="wallet-w")
        inst = next(p for p in stack.processes if p.name == "institution")
        admin = stack.need_admin()
        with MerchantApi(pos) as api:
            for round_ in range(2):
                order_ = api.create_order([LineItem("Tea", 1, 250 + round_)], currency="EUR")
                before = admin.customers.balance(cid, "EUR")
                with Wallet.load(wallet_dir, timeout=0.5, tries=2, lookups=2) as wallet:
                    offer = wallet.open(order_.code)
                    try:
                        offer.verify_pin(DEMO_PIN)
                        os.kill(inst.pid, signal.SIGSTOP)
                        try:
                            with pytest.raises(PaymentOutcomeUnknown) as info:
                                offer.pay(None)
                            offer.close()
                            # while it does not know, the wallet will not pay this code again
                            with pytest.raises(CodeRefusedByWallet) as again:
                                wallet.open(order_.code)
                            assert again.value.reason == "outcome_unknown"
                        finally:
                            os.kill(inst.pid, signal.SIGCONT)
                    finally:
                        offer.close()
                    assert "nothing was charged" not in info.value.message
                    assert "may or may not" in info.value.message
                    assert len(wallet.history.pending()) == 1
                time.sleep(1.0)  # the institution works through what it received
                if round_ == 0:
                    with Wallet.load(wallet_dir) as wallet:
                        results = wallet.resolve_pending()
                else:  # the command line, as the customer runs it
                    out = subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "safescan.wallet",
                            "pending",
                            "--json",
                            "--wallet-dir",
                            str(wallet_dir),
                        ],
                        capture_output=True,
                        text=True,
                        timeout=120,
                        check=False,
                    )
                    assert out.returncode == 0, out.stderr
                    results = json.loads(out.stdout)["pending"]
                assert [r["outcome"] for r in results] in (["paid"], ["not_charged"])
                with Wallet.load(wallet_dir) as wallet:
                    charged = before - admin.customers.balance(cid, "EUR")
                    if results[0]["outcome"] == "paid":
                        assert charged == 250 + round_
                        assert wallet.history.paid_code(order_.digest) is not None  # receipt kept
                        with pytest.raises(CodeRefusedByWallet) as again:
                            wallet.open(order_.code)
                        assert again.value.reason == "already_paid"
                    else:
                        assert charged == 0
                    assert wallet.history.pending() == []
    finally:
        stack.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_pos_never_refunds_twice_and_says_when_it_does_not_know(
    backend: str, request: pytest.FixtureRequest
) -> None:
    from safescan.client.errors import OutcomeUnknown
    from safescan.merchant.client import MerchantApi

    with site(backend, request) as s:
        assert s.server.proc is not None
        pid = s.server.proc.pid
        m, cfg = pos_merchant(s.w, "Pos Shop", s.server.base_url)
        o = m.order([("Refund me", 1, 2000)])
        assert s.w.pay(o["code"], s.carrier.authorize(o["code"]), "pos-pay").status_code == 201
        with MerchantApi(cfg, timeout=0.5, tries=2, lookups=2) as api:
            api.keys.document()  # the TLS connection is made: the refund is sent on it
            os.kill(pid, signal.SIGSTOP)
            try:
                with pytest.raises(OutcomeUnknown) as info:
                    api.refunds.create(o["order_id"], 500, idempotency_key="pos-ref-1")
            finally:
                os.kill(pid, signal.SIGCONT)
            assert "may or may not" in info.value.message
            time.sleep(1.0)
        with MerchantApi(cfg) as api:
            doc = api.refunds.lookup(o["order_id"], "pos-ref-1", 500)
            refunded = order(m, o["order_id"])["refunded_amount"]
            assert refunded == (500 if doc.outcome == "succeeded" else 0), doc
            # the operator runs the refund again with the same key: never a second refund
            for _ in range(2):
                try:
                    again = api.refunds.create(o["order_id"], 500, idempotency_key="pos-ref-1")
                    assert doc.outcome == "succeeded" and again == doc.refund
                except Exception as exc:  # noqa: BLE001 - the withdrawn key's answer
                    assert doc.outcome == "not_processed", exc
                    assert getattr(exc, "code", "") == "request_withdrawn"
            assert order(m, o["order_id"])["refunded_amount"] == refunded


# --- 4. lookups ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_lookups_tell_and_settle(backend: str, request: pytest.FixtureRequest) -> None:
    with site(backend, request) as s:

        def look(code: str, auth: bytes, key: str | None) -> httpx.Response:
            return s.w.http.post(
                "/v1/payments/lookup",
                json={"code": code, "authorization": b64(auth)},
                headers={"Idempotency-Key": key} if key else {},
            )

        # after a payment: succeeded, with the very answer the payment got (key or not)
        o = s.m.order([("Looked up", 1, 400)])
        auth = s.carrier.authorize(o["code"]).to_bytes()
        paid = s.w.http.post(
            "/v1/payments",
            json={"code": o["code"], "authorization": b64(auth)},
            headers={"Idempotency-Key": "lk-1"},
        ).json()
        for key in ("lk-1", None, "lk-other"):
            doc = look(o["code"], auth, key).json()
            assert doc["outcome"] == "succeeded" and doc["payment"] == paid, (key, doc)
        # before the request arrives: not processed, and the late request does nothing
        o2 = s.m.order([("Never", 1, 450)])
        auth2 = s.carrier.authorize(o2["code"]).to_bytes()
        before = customer_balance(s.w, s.cid)
        assert look(o2["code"], auth2, "lk-2").json()["outcome"] == "not_processed"
        late = s.w.http.post(
            "/v1/payments",
            json={"code": o2["code"], "authorization": b64(auth2)},
            headers={"Idempotency-Key": "lk-2"},
        )
        assert late.status_code == 409 and late.json()["error"]["code"] == "request_withdrawn"
        for key in ("lk-2b", None):  # under another key, or none: the counter is fenced
            r = s.w.http.post(
                "/v1/payments",
                json={"code": o2["code"], "authorization": b64(auth2)},
                headers={"Idempotency-Key": key} if key else {},
            )
            assert r.status_code == 409 and r.json()["error"]["code"] == "counter_replay", r.text
        assert look(o2["code"], auth2, "lk-2").json()["outcome"] == "not_processed"
        assert customer_balance(s.w, s.cid) == before
        assert order(s.m, o2["order_id"])["state"] == "CREATED"  # a new authorization pays
        assert s.w.pay(o2["code"], s.carrier.authorize(o2["code"]), "lk-3").status_code == 201
        # a refused request: refused, with its error
        poor = s.w.customer({"EUR": 1})
        pc = s.w.carrier(poor)
        o3 = s.m.order([("Dear", 1, 999)])
        a3 = pc.authorize(o3["code"]).to_bytes()
        r3 = s.w.http.post(
            "/v1/payments",
            json={"code": o3["code"], "authorization": b64(a3)},
            headers={"Idempotency-Key": "lk-4"},
        )
        doc = look(o3["code"], a3, "lk-4").json()
        assert doc["outcome"] == "refused" and doc["error"] == r3.json()["error"]
        # authenticated by the carrier: a forged or altered authorization learns nothing
        forged = bytearray(auth)
        forged[-5] ^= 1
        assert look(o["code"], bytes(forged), "lk-1").status_code in (400, 401, 403, 422)
        # a revoked carrier can still learn what its payments did
        s.w.admin("POST", f"/v1/admin/carriers/{s.carrier.serial}/revoke")
        assert look(o["code"], auth, "lk-1").json()["outcome"] == "succeeded"
        # merchant lookups: refunds and orders
        path = f"/v1/merchant/orders/{o['order_id']}/refunds"
        r = s.m.request(
            "POST", path + "/lookup", {"amount": 100}, headers={"Idempotency-Key": "rf-1"}
        )
        assert r.json()["outcome"] == "not_processed"
        r = s.m.request("POST", path, {"amount": 100}, headers={"Idempotency-Key": "rf-1"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "request_withdrawn"
        assert order(s.m, o["order_id"])["refunded_amount"] == 0
        r = s.m.request("POST", path, {"amount": 100}, headers={"Idempotency-Key": "rf-2"})
        assert r.status_code == 201
        look2 = s.m.request(
            "POST", path + "/lookup", {"amount": 100}, headers={"Idempotency-Key": "rf-2"}
        )
        assert look2.json() == {"outcome": "succeeded", "status": 201, "refund": r.json()}
        conflict = s.m.request(
            "POST", path + "/lookup", {"amount": 99}, headers={"Idempotency-Key": "rf-2"}
        )
        assert (
            conflict.status_code == 409
            and conflict.json()["error"]["code"] == "idempotency_conflict"
        )
        body = {"items": [{"name": "L", "quantity": 1, "unit_price": 5}], "currency": "EUR"}
        made = s.m.request("POST", "/v1/merchant/orders", body, headers={"Idempotency-Key": "or-1"})
        got = s.m.request(
            "POST", "/v1/merchant/orders/lookup", body, headers={"Idempotency-Key": "or-1"}
        )
        assert got.json()["outcome"] == "succeeded" and got.json()["order"] == made.json()
        none = s.m.request("POST", "/v1/merchant/orders/lookup", body)
        assert none.status_code == 400  # a lookup needs the key


def test_the_typed_errors_of_a_stored_refusal_survive_the_round_trip() -> None:
    from safescan.api.errors import error_from_dict
    from safescan.institution.domain.idempotency import Stored, refusal, replay

    for exc in (
        InsufficientFunds("too low"),
        IdempotencyConflict("other", param="Idempotency-Key"),
    ):
        stored = refusal(exc)
        with pytest.raises(type(exc)) as info:
            replay(Stored(stored.status, stored.body))
        assert info.value.to_dict() == exc.to_dict()
    odd = error_from_dict({"code": "from_the_future", "message": "m"}, 418)
    assert (odd.code, odd.status) == ("from_the_future", 418)
