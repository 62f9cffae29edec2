"""A merchant's webhook receiver that fails (500), times out, and answers slowly.

The institution's dispatcher (5 s deadline per attempt, first retry after 0.2 s here) keeps trying;
every event still arrives with a valid signature, and the merchant's de-duplication on the
event id sees each event exactly once, although deliveries are repeated (a timed-out delivery
the receiver did process is delivered again: at least once).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from safescan.api.events import WebhookVerificationError, verify_webhook
from safescan.code import TrustStore
from tests.institution.harness import World, world_in
from tests.institution.pg import free_port
from tests.institution.test_webhooks_sse import trust_of

TIMEOUT_HANG = 6.5  # longer than the dispatcher's 5 s deadline per attempt
SLOW = 1.5  # slow, but within it


class FlakyReceiver:
    """Per event id: 1st delivery -> 500; 2nd -> hang past the timeout (first event only)
    or answer slowly; later deliveries -> 204. Every delivery it *processes* (2xx, or the
    hung one, which it handles before its late answer) is recorded."""

    def __init__(self, trust: TrustStore) -> None:
        self.trust = trust
        self.port = free_port()
        self.attempts: Counter[str] = Counter()
        self.processed: list[dict[str, Any]] = []
        self.bodies: dict[str, bytes] = {}
        self.rejected = 0
        self.first: str | None = None
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    # the request's headers: the Standard Webhooks v1a signature is checked
                    headers = {k: str(v) for k, v in self.headers.items()}
                    event = verify_webhook(body, headers, outer.trust)
                    assert event["id"] == headers["webhook-id"]
                except WebhookVerificationError:
                    outer.rejected += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                eid = str(event["id"])
                with outer.lock:
                    outer.attempts[eid] += 1
                    n = outer.attempts[eid]
                    if outer.first is None:
                        outer.first = eid
                    assert outer.bodies.setdefault(eid, body) == body  # same event, same bytes
                if n == 1:
                    self.send_response(500)
                    self.end_headers()
                    return
                if n == 2:
                    with outer.lock:
                        outer.processed.append(event)
                    time.sleep(TIMEOUT_HANG if eid == outer.first else SLOW)
                else:
                    with outer.lock:
                        outer.processed.append(event)
                try:
                    self.send_response(204)
                    self.end_headers()
                except OSError:
                    pass  # the dispatcher gave up waiting (the timeout case)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def world() -> Iterator[World]:
    with tempfile.TemporaryDirectory(prefix="safescan-hooks-") as d:
        db = f"sqlite:///{Path(d) / 'institution.db'}"
        extra = [
            *("--webhook-base-delay", "0.2", "--maintenance-interval", "60"),
            *("--webhook-deadline", "5"),
        ]
        with world_in(Path(d), db, extra=extra) as w:
            yield w


@pytest.mark.slow
def test_failing_hanging_and_slow_receiver_still_gets_every_event_once(world: World) -> None:
    receiver = FlakyReceiver(trust_of(world))
    try:
        m = world.merchant("Flaky Hooks", webhook_url=f"http://127.0.0.1:{receiver.port}/hook")
        cid = world.customer({"EUR": 100_000})
        carrier = world.carrier(cid)
        expected: set[tuple[str, str]] = set()
        for i in range(4):
            o = m.order([("Item", 1, 200 + i)])
            assert world.pay(o["code"], carrier.authorize(o["code"])).status_code == 201
            expected.add(("payment.succeeded", o["order_id"]))
        r = m.request("POST", f"/v1/merchant/orders/{o['order_id']}/refunds", {"amount": 50})
        assert r.status_code == 201, r.text
        expected.add(("refund.succeeded", o["order_id"]))

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with receiver.lock:
                got = {(e["type"], e["data"]["order_id"]) for e in receiver.processed}
                first = receiver.first
                again = receiver.attempts[first] if first else 0
            if got >= expected and again >= 3:  # the timed-out one was delivered again
                break
            time.sleep(0.2)
        time.sleep(1.0)  # anything else in flight lands now
    finally:
        receiver.close()
    unique: dict[str, dict[str, Any]] = {}
    for e in receiver.processed:
        unique.setdefault(str(e["id"]), e)  # the merchant's de-duplication
    assert {(e["type"], e["data"]["order_id"]) for e in unique.values()} == expected
    assert len(unique) == len(expected)
    assert receiver.rejected == 0
    assert all(n >= 2 for n in receiver.attempts.values())  # every event failed once first
    assert receiver.first is not None and receiver.attempts[receiver.first] >= 3
    assert len(receiver.processed) > len(unique)  # duplicates did arrive, and were dropped
