"""Webhook operations through a real server (SQLite and PostgreSQL) and real receivers on
127.0.0.1: Standard Webhooks deliveries checked with the ``standardwebhooks`` package's own
verifier and with the spec's Ed25519 construction (``cryptography``), attacked (tampered body,
old or future timestamp, wrong key, another endpoint's secret, stripped or swapped headers);
secret rotation with overlap; the delivery log; test deliveries; resends (idempotent, scoped to
the merchant's own events)."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as LibraryVerificationError

from safescan.api import standard_webhooks as sw
from safescan.api.events import WebhookVerificationError, verify_webhook
from safescan.code import SigningKey, TrustStore
from safescan.code.keys import VerifyKey
from safescan.institution.db import Database
from safescan.merchant.config import PosConfig
from tests.institution.harness import MerchantClient, World, env
from tests.institution.receivers import Listener, Request, answer, wait_until


def trust_of(world: World) -> TrustStore:
    keys = world.http.get("/v1/keys").json()
    return TrustStore(
        {k["kid"]: VerifyKey(base64.b64decode(k["public_key"])) for k in keys["root_keys"]}
    )


def headers_of(req: Request) -> dict[str, str]:
    out = {}
    for line in req.head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        out[k.strip().decode("latin-1")] = v.strip().decode("latin-1")
    return out


@pytest.fixture
def receiver() -> Iterator[Listener]:
    lst = Listener(answer(204))
    try:
        yield lst
    finally:
        lst.close()


def hooked(world: World, url: str, name: str = "Hooked") -> MerchantClient:
    m = world.merchant(name)
    r = m.request("PUT", "/v1/merchant/webhook", {"url": url})
    assert r.status_code == 200, r.text
    return m


def rotate(m: MerchantClient, overlap: int | None = None) -> dict[str, Any]:
    r = m.request(
        "POST",
        "/v1/merchant/webhook/secret",
        {} if overlap is None else {"overlap_seconds": overlap},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def close_one(m: MerchantClient) -> str:
    """An event for ``m`` (an order closed); returns the order id."""
    o = m.order([("Tea", 1, 300)])
    r = m.request("POST", f"/v1/merchant/orders/{o['order_id']}/close")
    assert r.status_code == 200, r.text
    return str(o["order_id"])


def delivery_for(lst: Listener, order_id: str, *, after: int = 0) -> Request:
    def found() -> Request | None:
        for req in lst.requests[after:]:
            doc = json.loads(req.body)
            if doc.get("data", {}).get("order_id") == order_id:
                return req
        return None

    assert wait_until(lambda: found() is not None, 40), "no delivery arrived"
    got = found()
    assert got is not None
    return got


def spec_v1a(public_key_text: str, h: dict[str, str], body: bytes) -> bool:
    """The spec's asymmetric check, written from the spec with ``cryptography`` only."""
    pk = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_text.removeprefix("whpk_")))
    content = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + body
    for entry in h["webhook-signature"].split(" "):
        version, _, sig = entry.partition(",")
        if version != "v1a":
            continue
        try:
            pk.verify(base64.b64decode(sig), content)
            return True
        except InvalidSignature:
            continue
    return False


def refused_everywhere(body: bytes, h: dict[str, str], secret: str, trust: TrustStore) -> None:
    with pytest.raises(LibraryVerificationError):
        Webhook(secret).verify(body, h)
    with pytest.raises(WebhookVerificationError):
        sw.verify(body, h, secret=secret)
    with pytest.raises(WebhookVerificationError):
        sw.verify(body, h, trust=trust)


def test_a_real_delivery_verifies_with_the_standard_library_and_attacks_do_not(
    world: World, receiver: Listener
) -> None:
    m = hooked(world, receiver.url)
    secret = rotate(m)["secret"]
    assert secret.startswith("whsec_")
    info = m.request("GET", "/v1/merchant/webhook").json()
    trust = trust_of(world)
    oid = close_one(m)
    req = delivery_for(receiver, oid)
    h, body = headers_of(req), req.body
    # the standardwebhooks package's own verifier (v1, HMAC-SHA256 with the endpoint secret)
    event = Webhook(secret).verify(body, h)
    assert event["type"] == "order.closed" and event["id"] == h["webhook-id"]
    # v1a (Ed25519, the institution's key) by the spec's construction, and the POS verifier
    assert spec_v1a(info["public_key"], h, body)
    assert sw.verify(body, h, trust=trust)["id"] == event["id"]
    assert sw.verify(body, h, secret=secret)["id"] == event["id"]
    assert verify_webhook(body, h["Safescan-Signature"], trust)["id"] == event["id"]  # legacy

    # tampered body, several ways
    for bad in (
        body.replace(b"order.closed", b"order.opened"),
        body + b" ",
        body[:-1],
        body.replace(oid.encode(), b"X" * len(oid)),
    ):
        refused_everywhere(bad, h, secret, trust)
        assert not spec_v1a(info["public_key"], h, bad)
    # replayed: the same delivery later than the tolerance, or dated in the future
    ts = int(h["webhook-timestamp"])
    for now in (ts + sw.TOLERANCE + 1, ts + 3600, ts - sw.TOLERANCE - 1):
        with pytest.raises(WebhookVerificationError, match="timestamp"):
            sw.verify(body, h, secret=secret, trust=trust, now=now)
    # a timestamp moved to now (to defeat the replay check) breaks every signature (a second
    # on at least: within the delivery's own second "now" was the same timestamp, not checked)
    moved = dict(h, **{"webhook-timestamp": str(max(int(time.time()), ts + 1))})
    refused_everywhere(body, moved, secret, trust)
    # wrong key: another Ed25519 key, another secret, another endpoint's real secret
    other_key = SigningKey.generate()
    with pytest.raises(WebhookVerificationError):
        sw.verify(body, h, trust=TrustStore({1: other_key.public_key}))
    assert not spec_v1a(sw.public_key_text(other_key.public_key), h, body)
    other = hooked(world, receiver.url, "Other")
    other_secret = rotate(other)["secret"]
    for wrong in (other_secret, sw.new_secret()):
        with pytest.raises(LibraryVerificationError):
            Webhook(wrong).verify(body, h)
        with pytest.raises(WebhookVerificationError):
            sw.verify(body, h, secret=wrong)
    # a signature made by the attacker with its own key, next to the real header
    forged = sw.headers(other_key, h["webhook-id"], body + b"x", timestamp=ts)
    with pytest.raises(WebhookVerificationError):
        sw.verify(body + b"x", forged, trust=trust, now=ts)
    # headers stripped or swapped
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        stripped = {k: v for k, v in h.items() if k.lower() != name}
        refused_everywhere(body, stripped, secret, trust)
    swapped = dict(h, **{"webhook-id": "evt_" + "A" * 20})
    refused_everywhere(body, swapped, secret, trust)
    only_unknown = dict(h, **{"webhook-signature": h["webhook-signature"].replace("v1", "v2")})
    refused_everywhere(body, only_unknown, secret, trust)


def test_without_a_secret_deliveries_carry_v1a_only(world: World, receiver: Listener) -> None:
    m = hooked(world, receiver.url)
    assert m.request("GET", "/v1/merchant/webhook").json()["secret"] is None
    req = delivery_for(receiver, close_one(m))
    h = headers_of(req)
    assert [e.partition(",")[0] for e in h["webhook-signature"].split(" ")] == ["v1a"]
    assert sw.verify(req.body, h, trust=trust_of(world))["type"] == "order.closed"
    with pytest.raises(LibraryVerificationError):
        Webhook(sw.new_secret()).verify(req.body, h)


def _db(world: World) -> Database:
    return Database(world.db_url)  # type: ignore[attr-defined]


def test_rotation_overlap_then_the_old_secret_stops_verifying(
    world: World, receiver: Listener
) -> None:
    m = hooked(world, receiver.url)
    first = rotate(m)
    assert first["version"] == 1 and first["previous_valid_until"] is None
    second = rotate(m, overlap=600)
    assert second["version"] == 2 and second["previous_valid_until"] is not None
    assert second["secret"] != first["secret"]
    # during the overlap: one v1 entry per live secret, both verify with the library
    req = delivery_for(receiver, close_one(m))
    h = headers_of(req)
    versions = [e.partition(",")[0] for e in h["webhook-signature"].split(" ")]
    assert sorted(versions) == ["v1", "v1", "v1a"]
    for s in (first["secret"], second["secret"]):
        assert Webhook(s).verify(req.body, h)["type"] == "order.closed"
    # a short overlap: after it, the previous secret no longer verifies, the new one does
    third = rotate(m, overlap=1)
    time.sleep(2.2)
    n = len(receiver.requests)
    req = delivery_for(receiver, close_one(m), after=n)
    h = headers_of(req)
    assert Webhook(third["secret"]).verify(req.body, h)["type"] == "order.closed"
    for old in (first["secret"], second["secret"]):
        with pytest.raises(LibraryVerificationError):
            Webhook(old).verify(req.body, h)
    # overlap 0 ends the old secret at once
    fourth = rotate(m, overlap=0)
    assert fourth["previous_valid_until"] is None
    n = len(receiver.requests)
    req = delivery_for(receiver, close_one(m), after=n)
    h = headers_of(req)
    Webhook(fourth["secret"]).verify(req.body, h)
    with pytest.raises(LibraryVerificationError):
        Webhook(third["secret"]).verify(req.body, h)
    # bad overlaps change nothing
    for bad in (-1, 8 * 24 * 3600, "60", 1.5):
        r = m.request("POST", "/v1/merchant/webhook/secret", {"overlap_seconds": bad})
        assert r.status_code == 400, r.text
    assert m.request("GET", "/v1/merchant/webhook").json()["secret"]["version"] == 4

    # shown once: never in another answer, the audit log, the stored row or the server's log
    shown = [first["secret"], second["secret"], third["secret"], fourth["secret"]]
    answers = [
        m.request("GET", "/v1/merchant/webhook").text,
        m.request("GET", "/v1/merchant/webhook/deliveries").text,
        m.request("GET", "/v1/merchant").text,
    ]
    db = _db(world)
    try:
        dump = db.read(
            lambda c: (
                repr(c.exec_driver_sql("SELECT * FROM audit_log").all())
                + repr(c.exec_driver_sql("SELECT * FROM webhook_endpoints").all())
            )
        )
    finally:
        db.dispose()
    assert "merchant.webhook_secret" in dump
    for s in shown:
        raw = s.removeprefix("whsec_")
        for text in (*answers, dump, world.server.output()):
            assert raw not in text
        assert repr(base64.b64decode(raw))[2:-1] not in dump


def test_the_delivery_log_records_each_attempt_and_only_for_its_merchant(world: World) -> None:
    answers = iter([500, 503])

    def flaky(lst: Listener, conn: Any, req: Request) -> None:
        answer(next(answers, 204))(lst, conn, req)

    lst = Listener(flaky)
    try:
        m = hooked(world, lst.url)
        oid = close_one(m)
        assert wait_until(lambda: len(lst.requests) >= 3, 40)
        event_id = json.loads(lst.requests[0].body)["id"]

        def log() -> list[dict[str, Any]]:
            r = m.request("GET", f"/v1/merchant/webhook/deliveries?event_id={event_id}")
            assert r.status_code == 200, r.text
            return list(reversed(r.json()["deliveries"]))

        assert wait_until(lambda: any(d["state"] == "delivered" for d in log()), 20)
        rows = log()
        assert [(d["attempt"], d["status"], d["state"]) for d in rows][:3] == [
            (1, 500, "retrying"),
            (2, 503, "retrying"),
            (3, 204, "delivered"),
        ]
        assert rows[0]["error_kind"] == "http_status" and rows[0]["next_retry_ms"] > 0
        assert rows[2]["next_retry_ms"] is None and rows[2]["error"] is None
        assert all(d["latency_ms"] >= 0 and d["url"] == lst.url for d in rows)
        assert all(d["event_id"] == event_id and d["kind"] == "event" for d in rows)
        assert json.loads(lst.requests[0].body)["data"]["order_id"] == oid
        # another merchant sees none of it, even when asking for the event id
        other = world.merchant("Nosy")
        r = other.request("GET", f"/v1/merchant/webhook/deliveries?event_id={event_id}")
        assert r.status_code == 200 and r.json()["deliveries"] == []
        assert all(
            d["event_id"] != event_id
            for d in other.request("GET", "/v1/merchant/webhook/deliveries").json()["deliveries"]
        )
        # bad queries are refused
        for q in ("limit=0", "limit=201", "before=0", "event_id=nope", "event_id=evt_%27"):
            assert m.request("GET", f"/v1/merchant/webhook/deliveries?{q}").status_code == 400
    finally:
        lst.close()


def test_a_transport_failure_is_logged_with_its_class(world: World) -> None:
    gone = Listener(answer(204))
    url = gone.url
    gone.close()  # nothing listens there now
    m = hooked(world, url)
    close_one(m)

    def rows() -> list[dict[str, Any]]:
        return list(m.request("GET", "/v1/merchant/webhook/deliveries").json()["deliveries"])

    assert wait_until(lambda: len(rows()) >= 1, 30)
    first = rows()[-1]
    assert first["status"] is None and first["error_kind"] == "connect"
    assert first["state"] == "retrying" and first["next_retry_ms"] > first["at_ms"]
    m.request("PUT", "/v1/merchant/webhook", {"url": None})  # stop the retries


def test_webhook_test_sends_a_signed_test_event_and_reports(
    world: World, receiver: Listener
) -> None:
    m = hooked(world, receiver.url)
    secret = rotate(m)["secret"]
    r = m.request("POST", "/v1/merchant/webhook/test")
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["state"] == "delivered" and result["status"] == 204
    req = next(q for q in receiver.requests if headers_of(q)["webhook-id"] == result["event_id"])
    event = Webhook(secret).verify(req.body, headers_of(req))
    assert event["type"] == "webhook.test" and event["merchant_id"] == m.merchant_id
    assert sw.verify(req.body, headers_of(req), trust=trust_of(world))["id"] == result["event_id"]
    log = m.request("GET", "/v1/merchant/webhook/deliveries").json()["deliveries"]
    assert log[0]["event_id"] == result["event_id"] and log[0]["kind"] == "test"
    # a failing receiver: reported, logged, not retried
    bad = Listener(answer(500))
    try:
        assert m.request("PUT", "/v1/merchant/webhook", {"url": bad.url}).status_code == 200
        result = m.request("POST", "/v1/merchant/webhook/test").json()
        assert (result["state"], result["status"], result["error_kind"]) == (
            "failed",
            500,
            "http_status",
        )
        time.sleep(1.0)
        assert len(bad.requests) == 1
    finally:
        bad.close()
    # no URL: a clear refusal
    m.request("PUT", "/v1/merchant/webhook", {"url": None})
    r = m.request("POST", "/v1/merchant/webhook/test")
    assert r.status_code == 409 and "webhook set" in r.json()["error"]["message"]


def test_resend_is_idempotent_and_only_for_the_merchants_own_events(
    world: World, receiver: Listener
) -> None:
    m = hooked(world, receiver.url)
    oid = close_one(m)
    first = delivery_for(receiver, oid)
    event_id = headers_of(first)["webhook-id"]

    def deliveries_of(eid: str) -> list[Request]:
        return [q for q in receiver.requests if headers_of(q)["webhook-id"] == eid]

    def state() -> list[dict[str, Any]]:
        r = m.request("GET", f"/v1/merchant/webhook/deliveries?event_id={event_id}")
        return list(r.json()["deliveries"])

    assert wait_until(lambda: any(d["state"] == "delivered" for d in state()), 20)
    # attack: another merchant resends this merchant's event (and made-up ids): 404, nothing
    thief = hooked(world, receiver.url, "Thief")
    for eid in (event_id, "evt_" + "Z" * 20, event_id[:-1]):
        r = thief.request("POST", f"/v1/merchant/events/{eid}/resend")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
    for eid in ("nope", "evt_a-b", "evt_" + "a" * 60):
        assert thief.request("POST", f"/v1/merchant/events/{eid}/resend").status_code in (400, 404)
    time.sleep(1.0)
    assert len(deliveries_of(event_id)) == 1
    # the owner resends while its receiver is down: the event is pending (attempts fail and
    # are retried); resending again queues nothing more
    gone = Listener(answer(204))
    gone.close()
    assert m.request("PUT", "/v1/merchant/webhook", {"url": gone.url}).status_code == 200
    answers = [m.request("POST", f"/v1/merchant/events/{event_id}/resend") for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert [r.json()["requeued"] for r in answers] == [True, False, False]
    assert all(r.json()["state"] == "pending" for r in answers)
    assert wait_until(lambda: any(d["status"] is None for d in state()), 20)  # tried, refused
    assert m.request("POST", f"/v1/merchant/events/{event_id}/resend").json()["requeued"] is False
    assert m.request("PUT", "/v1/merchant/webhook", {"url": receiver.url}).status_code == 200
    assert wait_until(lambda: len(deliveries_of(event_id)) >= 2, 30)
    time.sleep(1.5)  # a second pending copy would arrive now
    assert len(deliveries_of(event_id)) == 2
    again = deliveries_of(event_id)[1]
    assert headers_of(again)["webhook-id"] == event_id  # receivers de-duplicate on it
    assert json.loads(again.body) == json.loads(first.body)
    assert wait_until(lambda: state()[0]["state"] == "delivered", 20)
    assert [d["attempt"] for d in state()] == sorted((d["attempt"] for d in state()), reverse=True)


def test_standard_webhook_signing_units() -> None:
    """The module's own round trip against the library, and its input checks."""
    key = SigningKey.generate()
    secret = sw.new_secret()
    body = json.dumps({"id": "evt_abc", "type": "t"}).encode()
    now = int(time.time())
    h = sw.headers(key, "evt_abc", body, timestamp=now, secrets=(secret,))
    assert Webhook(secret).verify(body, h)["id"] == "evt_abc"
    assert sw.verify(body, h, trust=key.public_key, now=now)["id"] == "evt_abc"
    # the merchant's existing verifier takes the headers and checks the new format
    assert verify_webhook(body, h, key.public_key, now=now)["id"] == "evt_abc"
    for bad_body in (body + b" ", body.replace(b"abc", b"abd")):
        with pytest.raises(WebhookVerificationError):
            verify_webhook(bad_body, h, key.public_key, now=now)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, h, SigningKey.generate().public_key, now=now)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, h, key.public_key, now=now + 301)
    with pytest.raises(ValueError):
        sw.headers(key, "SS1-CERT", body, timestamp=now)  # never another context's bytes
    with pytest.raises(ValueError):
        sw.verify(body, h)  # nothing to verify with
    for bad in ("whsec_", "whsec_!!!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(WebhookVerificationError):
            sw.verify(body, h, secret=bad, now=now)
    many = dict(h, **{"webhook-signature": " ".join([h["webhook-signature"]] * 9)})
    with pytest.raises(WebhookVerificationError):
        sw.verify(body, many, trust=key.public_key, now=now)
    for junk in ("v1a", "v1a,", "v1a,@@@", ",", " ", "v1a," + "A" * 86):
        with pytest.raises(WebhookVerificationError):
            sw.verify(body, dict(h, **{"webhook-signature": junk}), trust=key.public_key, now=now)
    with pytest.raises(WebhookVerificationError):
        sw.verify(b"\xff" + body, h, trust=key.public_key, now=now)
    # the timestamp header rewritten to another spelling of the signed number (a re-timestamped
    # delivery whose signature still covers "<now>"): only the signed spelling is accepted
    spellings = (f"0{now}", f"00{now}", f"{now}.0", f"+{now}", f" {now}", f"{now} ", f"{now}e0")
    for spelling in spellings:
        again = dict(h, **{"webhook-timestamp": spelling})
        with pytest.raises(WebhookVerificationError):
            sw.verify(body, again, trust=key.public_key, secret=secret, now=now)


def _pos(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safescan", "pos", "webhook", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env(), "SAFESCAN_POS_PASSPHRASE": "pos-pass", "COLUMNS": "200"},
    )


def test_pos_webhook_commands(
    world: World, receiver: Listener, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``safescan pos webhook set | show | test | deliveries | resend | rotate`` against the
    real server: the secret printed once, a verified test event, the log as a table and JSON,
    resends scoped, rotation. (The commands only speak HTTP: run on one backend.)"""
    if request.node.callspec.params.get("world") != "sqlite":
        pytest.skip("the CLI speaks HTTP only; the routes are tested on every backend above")
    seed = secrets.token_bytes(32)
    key = SigningKey.from_seed(seed)
    r = world.admin(
        "POST",
        "/v1/admin/merchants",
        {
            "name": "Cli Shop",
            "city": "Berlin",
            "country": "DE",
            "mcc": 5814,
            "settlement_account": "DE89370400440532013000",
            "api_public_key": base64.b64encode(key.public_key.raw).decode(),
        },
    )
    assert r.status_code == 201, r.text
    m = MerchantClient(world.http, r.json()["id"], key)
    config = PosConfig(
        world.server.base_url,
        m.merchant_id,
        seed,
        trust_of(world),
        tls_ca=world.server.ca.read_text(),  # the CA pinned at onboarding (HTTPS institution)
    ).save(tmp_path / "pos.json", passphrase=b"pos-pass")
    out = _pos(config, "set", receiver.url, "--json")
    assert out.returncode == 0, out.stderr
    secret = json.loads(out.stdout)["secret"]["secret"]
    assert secret.startswith("whsec_")
    shown = _pos(config, "show", "--json")
    assert shown.returncode == 0 and secret.removeprefix("whsec_") not in shown.stdout
    assert json.loads(shown.stdout)["secret"]["version"] == 1
    again = _pos(config, "set", receiver.url)  # keeps the secret: none printed
    assert again.returncode == 0 and "whsec_" not in again.stdout, again.stdout

    tested = _pos(config, "test", "--json")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    result = json.loads(tested.stdout)
    req = next(q for q in receiver.requests if headers_of(q)["webhook-id"] == result["event_id"])
    assert Webhook(secret).verify(req.body, headers_of(req))["type"] == "webhook.test"

    oid = close_one(m)
    event_id = headers_of(delivery_for(receiver, oid))["webhook-id"]
    table = _pos(config, "deliveries")
    assert table.returncode == 0 and event_id in table.stdout and "(test)" in table.stdout
    assert "HTTP 204" in table.stdout and "kept: the last 1000 attempts" in table.stdout
    page = json.loads(_pos(config, "deliveries", "--json", "--event", event_id).stdout)
    assert {d["event_id"] for d in page["deliveries"]} == {event_id}

    queued = _pos(config, "resend", event_id)
    assert queued.returncode == 0 and "queued" in queued.stdout
    for bad, code in (("evt_" + "Q" * 20, "not_found"), ("../v1/keys", "invalid_request")):
        refused = _pos(config, "resend", bad, "--json")
        assert refused.returncode == 2, refused.stdout
        assert json.loads(refused.stdout)["error"]["code"] == code, refused.stdout

    rotated = _pos(config, "rotate", "--overlap", "0", "--json")
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)["secret"]
    result = json.loads(_pos(config, "test", "--json").stdout)
    req = next(q for q in receiver.requests if headers_of(q)["webhook-id"] == result["event_id"])
    Webhook(new).verify(req.body, headers_of(req))
    with pytest.raises(LibraryVerificationError):
        Webhook(secret).verify(req.body, headers_of(req))
    assert _pos(config, "rotate", "--overlap", "-5").returncode == 2

    bad = Listener(answer(502))
    try:
        assert _pos(config, "set", bad.url).returncode == 0
        failed = _pos(config, "test")
        assert failed.returncode == 1 and "not delivered" in failed.stdout
    finally:
        bad.close()


def test_a_resend_has_its_own_request_id_linked_to_the_original(
    world: World, receiver: Listener
) -> None:
    """The request that caused an event is the id of its first deliveries; a resend gets a new
    id (its own request's, or a fresh one when it sent none or an unusable one), sent as
    ``X-Request-Id`` with the deliveries after it, recorded in the delivery log next to the
    original, in the resend's answer and in the server's log. Another merchant's resend
    changes none of it."""
    m = hooked(world, receiver.url, "Resent")
    original = "req-original-" + secrets.token_hex(6)
    o = m.order([("Tea", 1, 300)])
    r = m.request(
        "POST", f"/v1/merchant/orders/{o['order_id']}/close", headers={"X-Request-Id": original}
    )
    assert r.status_code == 200 and r.headers["X-Request-Id"] == original, r.text
    first = delivery_for(receiver, str(o["order_id"]))
    event_id = headers_of(first)["webhook-id"]
    assert headers_of(first)["X-Request-Id"] == original

    def rows() -> list[dict[str, Any]]:
        got = m.request("GET", f"/v1/merchant/webhook/deliveries?event_id={event_id}")
        return list(got.json()["deliveries"])

    assert wait_until(lambda: any(d["state"] == "delivered" for d in rows()), 20)
    assert [(d["request_id"], d["original_request_id"]) for d in rows()] == [(original, original)]

    thief = hooked(world, receiver.url, "Resend thief")
    stolen = thief.request(
        "POST", f"/v1/merchant/events/{event_id}/resend", headers={"X-Request-Id": "req-thief-01"}
    )
    assert stolen.status_code == 404

    seen = [original]
    # its own id; none; an id a log must not take (spaces, quotes, too long): a fresh one each
    for sent in ("req-resend-" + secrets.token_hex(6), None, 'x" y', "r" * 200):
        before = len(receiver.requests)
        resent = m.request(
            "POST",
            f"/v1/merchant/events/{event_id}/resend",
            headers={} if sent is None else {"X-Request-Id": sent},
        )
        assert resent.status_code == 200, resent.text
        doc = resent.json()
        rid = doc["request_id"]
        assert rid == resent.headers["X-Request-Id"] and doc["original_request_id"] == original
        if sent is not None and sent.startswith("req-resend-"):
            assert rid == sent
        else:
            assert rid != sent and rid.startswith("req_"), rid
        assert rid not in seen, rid
        seen.append(rid)
        again = delivery_for(receiver, str(o["order_id"]), after=before)
        assert headers_of(again)["X-Request-Id"] == rid  # the receiver's logs join on it
        assert headers_of(again)["webhook-id"] == event_id
        assert wait_until(lambda rid=rid: rows()[0]["request_id"] == rid, 20)
        newest = rows()[0]
        assert newest["original_request_id"] == original and newest["state"] == "delivered"
    assert len(set(seen)) == len(seen)
    assert "req-thief-01" not in {d["request_id"] for d in rows()}
    # the server's log: the resend line, under the resend's id, naming the original
    lines = [json.loads(x) for x in world.server.output().splitlines() if x.startswith("{")]
    for rid in seen[1:]:
        assert any(
            line.get("request_id") == rid
            and "resend" in str(line.get("event", ""))
            and original in str(line.get("event", ""))
            for line in lines
        ), rid
