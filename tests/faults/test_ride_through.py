"""Clients ride through a failover: the wallet's payment and the POS's state-changing calls are
retried with the SAME Idempotency-Key on connection errors and 502/503/504 (honouring
Retry-After) for a bounded budget, then settled through the status lookup; a definite 4xx is
never retried, and a client whose budget runs out says the outcome is unknown (never "nothing
was charged") and the lookup tells later. Real institution server on 127.0.0.1 (SQLite), with a
fault proxy in front of it for the faults a failover produces; every variation checks the
ledger: exactly one payment (or refund), and the client's final answer matches it.

Variations: the institution stopped before the payment and started again while the client
retries (connection refused, then back); a lost COMMIT (forwarded, then 503 outcome_unknown
with Retry-After) several times in a row; the response lost after the commit (connection cut);
HAProxy's "no server available" 503 page (not JSON) for a while; a budget that runs out; a
definite refusal (not retried); the POS refund and order creation through the same faults.
"""

from __future__ import annotations

import contextlib
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from safescan.api.wire import PaymentRequest
from safescan.client.errors import OutcomeUnknown, RetrySettingInvalid
from safescan.client.retry import retry_budget
from safescan.client.wallet import WalletClient
from safescan.wallet.errors import PaymentNotMade, PaymentOutcomeUnknown
from safescan.wallet.pending import submit
from safescan.wallet.store import PendingPayment
from safescan.web import pki
from tests.faults.common import audit, customer_balance, order, pending_payment, pos_merchant
from tests.httpreply import send_answer
from tests.institution.harness import (
    PASSPHRASE,
    Carrier,
    MerchantClient,
    ServerProcess,
    World,
    init_db,
)
from tests.institution.pg import free_port

FUNDS = 1_000_000
NO_LIMIT = ["--merchant-rate", "0"]
# the clients' retry budgets (seconds of wall clock): the outcome never depends on them, only
# they must outlast the disturbance. A plan of a few faults needs ~10 s quiet, but each attempt
# is a request to a server that a loaded CI machine (load 20-40 on 2 cores) answers in seconds,
# so 20 s could run out; a restart is bounded by the server's CPU (ServerProcess.start), and
# took over 60 s of wall clock under such load: a 60 s budget ran out before it was up
BUDGET = 120.0
RESTART_BUDGET = 600.0  # the tests' 300 s timeout (pytest-timeout) stops a hang first

# what the proxy does with one state-changing request
PASS = "pass"
LOST_COMMIT = "forward, then 503 outcome_unknown"  # the COMMIT's answer lost (Retry-After: 1)
CUT = "forward, then cut the connection"  # the response lost after the commit
NO_BACKEND = "503 HAProxy page"  # no primary yet: not forwarded, not JSON
UNAVAILABLE = "503 outcome_unknown, not forwarded"


@dataclass
class FaultProxy:
    """An HTTPS proxy on 127.0.0.1 in front of the institution (as HAProxy is: a certificate of
    the institution's CA, which the clients pin; it verifies the institution with that CA).
    POSTs whose path starts with ``watch`` take the next action of ``plan`` (then PASS);
    everything is forwarded otherwise. ``log`` records (path, action) for every watched
    request."""

    upstream: ServerProcess
    watch: tuple[str, ...] = ("/v1/payments", "/v1/merchant/orders")
    plan: list[str] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        proxy = self
        client = self.upstream.client(timeout=30)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                send_answer(self, status, headers, body)

            def _forward(self, body: bytes) -> httpx.Response:
                skip = {"host", "content-length", "connection", "accept-encoding"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                return client.request(self.command, self.path, content=body, headers=headers)

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                action = PASS
                if self.command == "POST" and self.path.startswith(proxy.watch):
                    with proxy.lock:
                        action = proxy.plan.pop(0) if proxy.plan else PASS
                        proxy.log.append((self.path, action))
                if action == NO_BACKEND:
                    page = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
                    self._answer(503, page, {"Content-Type": "text/html"})
                    return
                if action == UNAVAILABLE:
                    self._answer(503, _outcome_unknown(), _json_retry())
                    return
                resp = self._forward(body)
                if action == CUT:
                    self.close_connection = True
                    self.connection.shutdown(2)  # the answer never arrives
                    return
                if action == LOST_COMMIT:
                    self._answer(503, _outcome_unknown(), _json_retry())
                    return
                keep = {"content-type", "retry-after"}
                h = {k: v for k, v in resp.headers.items() if k.lower() in keep}
                self._answer(resp.status_code, resp.content, h)

            do_GET = do_POST = _handle  # noqa: N815 - http.server's naming

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self._certs = tempfile.TemporaryDirectory(prefix="safescan-proxy-tls-")
        if self.upstream.tls:
            cert, key = Path(self._certs.name) / "proxy.pem", Path(self._certs.name) / "proxy.key"
            ca_dir = pki.TlsDir(self.upstream.ca.parent)
            pki.issue_server_files(ca_dir, cert, key, ["127.0.0.1"], passphrase=PASSPHRASE.encode())
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(cert, key)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            pki.pin(self.url, self.upstream.ca)  # the clients verify the proxy with the CA
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self._client = client

    @property
    def url(self) -> str:
        """https://127.0.0.1:port (http:// in front of a plain-HTTP institution)"""
        scheme = "https" if self.upstream.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
        self._client.close()
        self._certs.cleanup()

    def actions(self, prefix: str) -> list[str]:
        """The actions taken on requests to paths starting with ``prefix``."""
        with self.lock:
            return [a for p, a in self.log if p.startswith(prefix)]


def _outcome_unknown() -> bytes:
    return (
        b'{"error":{"code":"outcome_unknown","message":"the database connection was lost'
        b' while the change was committed"}}'
    )


def _json_retry() -> dict[str, str]:
    return {"Content-Type": "application/json", "Retry-After": "1"}


@dataclass
class Site:
    w: World
    server: ServerProcess
    m: MerchantClient
    cid: str
    carrier: Carrier
    db: str
    tmp: Path


@contextlib.contextmanager
def site() -> Iterator[Site]:
    with tempfile.TemporaryDirectory(prefix="safescan-ride-") as d:
        tmp = Path(d)
        db = f"sqlite:///{tmp / 'inst.db'}"
        token = init_db(db, tmp / "keys")
        server = ServerProcess(db, tmp / "keys", extra=NO_LIMIT).start()
        w = World(server, token)
        cid = w.customer({"EUR": FUNDS})
        s = Site(w, server, w.merchant("Ride Cafe"), cid, w.carrier(cid), db, tmp)
        try:
            yield s
        finally:
            w.close()
            s.server.stop()
        report = audit(db)
        assert report["ok"] is True, report


def _pending(carrier: Carrier, o: dict[str, Any]) -> PendingPayment:
    return pending_payment(carrier, o, "Ride Cafe")


def _payments_of(s: Site, order_id: str) -> int:
    """How many times the order was paid, from the ledger as its merchant sees it."""
    doc = order(s.m, order_id)
    return 1 if doc["state"] in ("PAID", "REFUNDED", "PARTIALLY_REFUNDED") else 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "plan",
    [
        [LOST_COMMIT],
        [LOST_COMMIT, LOST_COMMIT, LOST_COMMIT],
        [CUT],
        [CUT, NO_BACKEND, CUT],
        [NO_BACKEND, NO_BACKEND, NO_BACKEND, NO_BACKEND, PASS],
        [UNAVAILABLE, LOST_COMMIT, NO_BACKEND],
    ],
    ids=["lost-commit", "lost-commit-x3", "cut", "cut-503-cut", "no-backend-x4", "mixed"],
)
def test_a_payment_rides_through_lost_answers_and_503s(plan: list[str]) -> None:
    with site() as s:
        balance0 = _balance(s)
        proxy = FaultProxy(s.server, watch=("/v1/payments",), plan=list(plan))
        try:
            o = s.m.order([("Ride", 1, 700)])
            p = _pending(s.carrier, o)
            with WalletClient(proxy.url, timeout=10) as remote:
                answer = submit(remote, p, budget=BUDGET)
            assert answer.order_id == o["order_id"] and answer.amount == 700
            # every attempt carried the same key, and the last one got the answer
            assert proxy.actions("/v1/payments")[: len(plan)] == plan
        finally:
            proxy.close()
        assert balance0 - _balance(s) == 700  # exactly one payment
        assert _payments_of(s, o["order_id"]) == 1


def _balance(s: Site) -> int:
    return customer_balance(s.w, s.cid)


@pytest.mark.slow
@pytest.mark.parametrize("down_for", [1.0, 4.0])
def test_a_payment_rides_through_the_institution_stopped_and_started_again(
    down_for: float,
) -> None:
    """The institution stopped (connection refused), started again on the same port while the
    wallet's payment logic is retrying: paid exactly once."""
    with site() as s:
        balance0 = _balance(s)
        o = s.m.order([("Restart", 1, 900)])
        p = _pending(s.carrier, o)
        port = s.server.port
        s.server.stop()
        result: dict[str, Any] = {}

        def pay() -> None:
            with WalletClient(s.server.base_url, timeout=10) as remote:  # the CA pinned
                try:
                    result["answer"] = submit(remote, p, budget=RESTART_BUDGET)
                except Exception as exc:  # noqa: BLE001 - reported below
                    result["error"] = exc

        t = threading.Thread(target=pay)
        t.start()
        time.sleep(down_for)
        s.server = ServerProcess(s.db, s.tmp / "keys", port=port, extra=NO_LIMIT).start()
        t.join(120)
        assert not t.is_alive()
        assert "error" not in result, result
        assert result["answer"].order_id == o["order_id"]
        assert balance0 - _balance(s) == 900
        assert _payments_of(s, o["order_id"]) == 1


@pytest.mark.slow
def test_a_payment_stopped_mid_request_then_restarted_is_paid_once() -> None:
    """The institution killed while the payment is in flight (the proxy forwards it and the
    answer is cut), then started again: the retry gets the stored answer, one payment."""
    with site() as s:
        balance0 = _balance(s)
        o = s.m.order([("Crash", 1, 450)])
        p = _pending(s.carrier, o)
        port = s.server.port
        proxy = FaultProxy(s.server, watch=("/v1/payments",), plan=[CUT])
        restarted = threading.Event()

        def restart_after_first_attempt() -> None:
            while not proxy.actions("/v1/payments"):
                time.sleep(0.05)
            s.server.kill()
            time.sleep(1.5)
            s.server = ServerProcess(s.db, s.tmp / "keys", port=port, extra=NO_LIMIT).start()
            restarted.set()

        t = threading.Thread(target=restart_after_first_attempt)
        t.start()
        try:
            with WalletClient(proxy.url, timeout=10) as remote:
                answer = submit(remote, p, budget=RESTART_BUDGET)
        finally:
            t.join(120)
            proxy.close()
        assert restarted.is_set()
        assert answer.order_id == o["order_id"]
        assert balance0 - _balance(s) == 450
        assert _payments_of(s, o["order_id"]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("forwarded", [True, False])
def test_a_budget_that_runs_out_says_unknown_and_the_lookup_tells(forwarded: bool) -> None:
    """503s for longer than the budget (lookups too): the client says the outcome is unknown,
    names the command to check with, never "nothing was charged"; the lookup later tells the
    truth, and the ledger matches it."""
    with site() as s:
        balance0 = _balance(s)
        o = s.m.order([("Budget", 1, 300)])
        p = _pending(s.carrier, o)
        first = LOST_COMMIT if forwarded else UNAVAILABLE
        proxy = FaultProxy(s.server, watch=("/v1/payments",), plan=[first] + [UNAVAILABLE] * 200)
        try:
            with (
                WalletClient(proxy.url, timeout=10) as remote,
                pytest.raises(PaymentOutcomeUnknown) as info,
            ):
                submit(remote, p, budget=1.0, lookups=2, backoff=0.2)
        finally:
            proxy.close()
        msg = info.value.message
        assert "may or may not" in msg and "nothing was charged" not in msg
        assert "safescan wallet pending" in msg
        with WalletClient(s.server.base_url, timeout=10) as later:
            doc = later.payments.lookup(
                PaymentRequest(p.code_text, p.authorization), idempotency_key=p.idempotency_key
            )
        charged = balance0 - _balance(s)
        if forwarded:
            assert doc.outcome == "succeeded" and charged == 300
        else:
            assert doc.outcome == "not_processed" and charged == 0


@pytest.mark.slow
def test_a_definite_refusal_is_never_retried() -> None:
    """A 4xx answer (the order is already paid, under another key) is final: one attempt, a
    typed refusal, and 503s before it are ridden through."""
    with site() as s:
        o = s.m.order([("Once", 1, 200)])
        assert s.w.pay(o["code"], s.carrier.authorize(o["code"]), "first").status_code == 201
        balance0 = _balance(s)
        p = _pending(s.carrier, o)  # a second authorization: another key
        proxy = FaultProxy(s.server, watch=("/v1/payments",), plan=[NO_BACKEND, UNAVAILABLE])
        try:
            with (
                WalletClient(proxy.url, timeout=10) as remote,
                pytest.raises(PaymentNotMade) as info,
            ):
                submit(remote, p, budget=BUDGET)
            acts = proxy.actions("/v1/payments")
        finally:
            proxy.close()
        assert "refused" in info.value.message
        assert acts == [NO_BACKEND, UNAVAILABLE, PASS]  # never retried after the refusal
        assert balance0 == _balance(s)


@pytest.mark.slow
def test_the_pos_refund_and_order_ride_through() -> None:
    from safescan.merchant.client import MerchantApi
    from safescan.merchant.config import PosConfig

    with site() as s:
        proxy = FaultProxy(s.server, watch=("/v1/merchant/orders",))
        m, cfg = pos_merchant(s.w, "Ride Pos", proxy.url)
        try:
            from safescan.code.payment import LineItem

            with MerchantApi(cfg, retry_seconds=BUDGET) as api:
                proxy.plan[:] = [LOST_COMMIT, CUT, NO_BACKEND]
                o = api.create_order([LineItem("Ride", 1, 2000)], idempotency_key="ord-ride-1")
                assert proxy.actions("/v1/merchant/orders")[:3] == [LOST_COMMIT, CUT, NO_BACKEND]
                assert s.w.pay(o.code, s.carrier.authorize(o.code), "pos-pay").status_code == 201
                proxy.plan[:] = [CUT, LOST_COMMIT, UNAVAILABLE, CUT]
                doc = api.refunds.create(o.order_id, 500, idempotency_key="pos-ride-1")
                assert doc.amount == 500
                assert order(m, o.order_id)["refunded_amount"] == 500  # exactly one refund
                # orders: the lost ones were one order, not three
                listed = m.request("GET", "/v1/merchant/orders?limit=50").json()
                ids = {x["order_id"] for x in listed.get("orders", listed.get("data", []))}
                assert ids == {o.order_id}, listed
                # the budget runs out: unknown, with the key to check with
                proxy.plan[:] = [LOST_COMMIT] + [UNAVAILABLE] * 200
            with (
                MerchantApi(cfg, retry_seconds=1.0, lookups=2) as api,
                pytest.raises(OutcomeUnknown) as info,
            ):
                api.refunds.create(o.order_id, 300, idempotency_key="pos-ride-2")
            assert "pos-ride-2" in info.value.message and "may or may not" in info.value.message
        finally:
            proxy.close()
        with MerchantApi(
            PosConfig(
                institution_url=s.server.base_url,
                merchant_id=m.merchant_id,
                api_seed=cfg.api_seed,
                trust=cfg.trust,
            )
        ) as api:
            doc2 = api.refunds.lookup(o.order_id, "pos-ride-2", 300)
        assert doc2.outcome == "succeeded"  # the lost COMMIT had committed: once
        assert order(m, o.order_id)["refunded_amount"] == 800


def test_the_retry_budget_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFESCAN_RETRY_SECONDS", raising=False)
    assert retry_budget() == 30.0
    monkeypatch.setenv("SAFESCAN_RETRY_SECONDS", "12.5")
    assert retry_budget() == 12.5
    assert retry_budget(3) == 3.0
    for bad in ("soon", "-1", "nan", "1e9"):
        monkeypatch.setenv("SAFESCAN_RETRY_SECONDS", bad)
        with pytest.raises(RetrySettingInvalid):
            retry_budget()


class _FakeTime:
    """A clock that only moves when the client sleeps (no real waiting, no timing)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.pauses.append(s)
        self.now += s


def _busy(retry_after: int | None = None) -> Exception:
    from safescan.api.errors import OutcomeUnknown as Lost

    exc = Lost("lost")
    if retry_after is not None:
        exc.retry_after_s = retry_after
    return exc


def test_the_retry_policy_honours_retry_after_caps_back_off_and_stops_at_the_budget() -> None:
    from safescan.api.errors import InsufficientFunds
    from safescan.client.errors import InstitutionUnreachable, RemoteError
    from safescan.client.retry import send_until_known

    # Retry-After is honoured (never sooner), the answer comes on the 4th attempt
    t = _FakeTime()
    errors = [_busy(3), _busy(3), RemoteError("bad gateway", status=502)]
    calls: list[int] = []

    def attempt() -> dict[str, int]:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return {"ok": 1}

    got = send_until_known(attempt, lambda: {}, "payment", budget=30, sleep=t.sleep, clock=t.clock)
    assert got == {"ok": 1} and len(calls) == 4
    assert t.pauses[0] >= 3 and t.pauses[1] >= 3 and t.pauses[2] <= 4.0

    # a failover longer than the budget: back-off capped, attempts stop inside the budget,
    # then the lookup settles it (here: it was done)
    t = _FakeTime()
    n = {"attempts": 0}

    def down() -> Any:
        n["attempts"] += 1
        raise InstitutionUnreachable("cut", maybe_delivered=True)

    got = send_until_known(
        down,
        lambda: {"outcome": "succeeded", "payment": {"id": "p1"}},
        "payment",
        budget=30,
        sleep=t.sleep,
        clock=t.clock,
    )
    assert got == {"id": "p1"}
    assert max(t.pauses) <= 4.0 and t.now <= 30 and n["attempts"] > 5

    # connection refused for the whole budget: certain nothing was sent, no lookup needed
    t = _FakeTime()

    def refused() -> Any:
        raise InstitutionUnreachable("refused", maybe_delivered=False)

    with pytest.raises(InstitutionUnreachable):
        send_until_known(
            refused,
            lambda: pytest.fail("no lookup"),
            "payment",
            budget=5,
            sleep=t.sleep,
            clock=t.clock,
        )
    assert t.now <= 5

    # a definite 4xx: one attempt, no lookup
    t = _FakeTime()
    calls.clear()

    def poor() -> Any:
        calls.append(1)
        raise InsufficientFunds("no money")

    with pytest.raises(InsufficientFunds):
        send_until_known(
            poor, lambda: pytest.fail("no lookup"), "payment", sleep=t.sleep, clock=t.clock
        )
    assert len(calls) == 1 and t.pauses == []

    # the budget runs out and the lookup fails too: unknown, never a guess
    t = _FakeTime()
    with pytest.raises(OutcomeUnknown):
        send_until_known(
            lambda: (_ for _ in ()).throw(_busy()),
            lambda: (_ for _ in ()).throw(_busy()),
            "payment",
            budget=10,
            sleep=t.sleep,
            clock=t.clock,
        )
