"""Signed webhooks from the persisted outbox (receiver down, then up) and the signed SSE stream."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from safescan.api.events import (
    WebhookVerificationError,
    sign_webhook,
    verify_event,
    verify_webhook,
)
from safescan.api.merchant_auth import sign_request
from safescan.code import SigningKey, TrustStore
from safescan.code.keys import VerifyKey
from tests.institution.harness import World
from tests.institution.pg import free_port


def trust_of(world: World) -> TrustStore:
    keys = world.http.get("/v1/keys").json()
    return TrustStore(
        {k["kid"]: VerifyKey(base64.b64decode(k["public_key"])) for k in keys["root_keys"]}
    )


class Receiver:
    """A merchant's webhook endpoint that verifies signatures and records event ids."""

    def __init__(self, port: int, trust: TrustStore) -> None:
        self.port, self.trust = port, trust
        self.deliveries: list[dict[str, Any]] = []
        self.rejected = 0
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    event = verify_webhook(body, self.headers["Safescan-Signature"], outer.trust)
                    assert event["id"] == self.headers["Safescan-Event-Id"]
                    outer.deliveries.append(event)
                    self.send_response(204)
                except WebhookVerificationError:
                    outer.rejected += 1
                    self.send_response(400)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def test_webhook_receiver_down_then_up_gets_every_event_once(world: World) -> None:
    port = free_port()
    m = world.merchant("Hooked", webhook_url=f"http://127.0.0.1:{port}/hook")
    cid = world.customer({"EUR": 100_000})
    carrier = world.carrier(cid)
    expected = set()
    for i in range(5):
        o = m.order([("Item", 1, 100 + i)])
        r = world.pay(o["code"], carrier.authorize(o["code"]))
        assert r.status_code == 201
        expected.add(("payment.succeeded", o["order_id"]))
    r = m.request("POST", f"/v1/merchant/orders/{o['order_id']}/refunds", {"amount": 50})
    assert r.status_code == 201
    expected.add(("refund.succeeded", o["order_id"]))
    time.sleep(1.5)  # deliveries fail meanwhile (connection refused) and are rescheduled
    receiver = Receiver(port, trust_of(world))
    receiver.start()
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            got = {(e["type"], e["data"]["order_id"]) for e in receiver.deliveries}
            if got >= expected:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # anything duplicated would arrive now
    finally:
        receiver.stop()
    unique = {e["id"]: e for e in receiver.deliveries}
    assert {(e["type"], e["data"]["order_id"]) for e in unique.values()} == expected
    assert len(unique) == len(expected)
    assert receiver.rejected == 0
    assert all(e["merchant_id"] == m.merchant_id for e in unique.values())


def test_webhook_verification_refuses_tampering_and_replay() -> None:
    key = SigningKey.generate()
    body = json.dumps({"id": "evt_1", "type": "payment.succeeded"}).encode()
    now = int(time.time())
    header = sign_webhook(key, 1, body, timestamp=now)
    trust = TrustStore({1: key.public_key})
    assert verify_webhook(body, header, trust)["id"] == "evt_1"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body.replace(b"evt_1", b"evt_2"), header, trust)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, sign_webhook(key, 1, body, timestamp=now - 3600), trust)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, header, TrustStore({1: SigningKey.generate().public_key}))
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, "garbage", trust)
    for odd in ("t=\u00b2,kid=1,v1=AAAA", "t=\u0661\u0662,v1=AAAA"):  # non-ASCII digits
        with pytest.raises(WebhookVerificationError):
            verify_webhook(body, odd, trust)


def test_sse_stream_delivers_signed_payment_event(world: World) -> None:
    m = world.merchant("POS shop")
    cid = world.customer({"EUR": 10_000})
    carrier = world.carrier(cid)
    o = m.order([("Latte", 1, 380)])
    events: list[dict[str, Any]] = []
    ready = threading.Event()

    def listen() -> None:
        h = sign_request(m.key, m.merchant_id, "GET", "/v1/merchant/events")
        with httpx.stream(
            "GET",
            world.server.base_url + "/v1/merchant/events",
            headers=h,
            timeout=30,
            verify=world.server.verify,
        ) as r:
            assert r.status_code == 200
            ready.set()
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(verify_event(line[6:], trust_of(world)))
                    if events[-1]["type"] == "payment.succeeded":
                        return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(10)
    time.sleep(0.3)
    assert world.pay(o["code"], carrier.authorize(o["code"])).status_code == 201
    t.join(20)
    assert events and events[-1]["data"]["order_id"] == o["order_id"]
    assert events[-1]["data"]["amount"] == 380


@pytest.mark.parametrize("last", [b"\xb2", b"\xb9\xb2", b"1\xbd", b"+1", b"1_0"])
def test_a_last_event_id_in_other_digits_opens_the_stream(world: World, last: bytes) -> None:
    """Starlette reads headers as Latin-1: "\u00b2" passed str.isdigit() and int() raised,
    a 500 for GET /v1/merchant/events; any spelling but ASCII digits is no position."""
    m = world.merchant("POS shop")
    h = sign_request(m.key, m.merchant_id, "GET", "/v1/merchant/events")
    with httpx.stream(
        "GET",
        world.server.base_url + "/v1/merchant/events",
        headers=[*[(k.encode(), v.encode()) for k, v in h.items()], (b"Last-Event-ID", last)],
        timeout=30,
        verify=world.server.verify,
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")


def test_sse_event_forgery_is_detected(world: World) -> None:
    msg = json.dumps(
        {"payload": '{"id":"evt_x"}', "signature": base64.b64encode(b"\0" * 64).decode(), "kid": 1}
    )
    with pytest.raises(WebhookVerificationError):
        verify_event(msg, trust_of(world))


@pytest.mark.slow
def test_pending_webhooks_survive_a_server_restart(
    world: World, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    from pathlib import Path

    from tests.institution.conftest import make_db
    from tests.institution.harness import ServerProcess, init_db

    backend = "sqlite" if "sqlite" in world.server.db_url else "postgresql"
    db = make_db(backend, request, Path(tmp_path))
    keys = Path(tmp_path) / "keys"
    token = init_db(db, keys)
    extra = ["--webhook-base-delay", "0.2"]
    server = ServerProcess(db, keys, extra=extra).start()
    port = free_port()
    w = World(server, token)
    try:
        m = w.merchant("Restart", webhook_url=f"http://127.0.0.1:{port}/hook")
        carrier = w.carrier(w.customer({"EUR": 10_000}))
        orders = [m.order([("X", 1, 100 + i)]) for i in range(3)]
        for o in orders:
            assert w.pay(o["code"], carrier.authorize(o["code"])).status_code == 201
        time.sleep(0.5)
    finally:
        w.close()
        server.stop()  # events are still pending: the receiver has been down all along
    receiver = Receiver(port, TrustStore({}))
    server2 = ServerProcess(db, keys, extra=extra).start()
    try:
        keys_doc = server2.get("/v1/keys").json()
        receiver.trust = TrustStore(
            {k["kid"]: VerifyKey(base64.b64decode(k["public_key"])) for k in keys_doc["root_keys"]}
        )
        receiver.start()
        deadline = time.monotonic() + 40
        want = {o["order_id"] for o in orders}
        while time.monotonic() < deadline:
            if {e["data"]["order_id"] for e in receiver.deliveries} >= want:
                break
            time.sleep(0.2)
    finally:
        receiver.stop()
        server2.stop()
    assert {e["data"]["order_id"] for e in receiver.deliveries} == want
    assert receiver.rejected == 0
