"""No secret reaches the institution's logs: attacked with secrets in every part of a request.

A real `safescan institution serve` (SQLite and PostgreSQL; once more at ``--log-level debug``)
gets requests carrying secrets in headers (bearer tokens, the real admin token, API keys,
cookies, merchant request signatures, Idempotency-Keys), bodies (PINs, passwords, enrollment
tokens, carrier authorizations, payment codes, malformed JSON), query strings and paths, and
answers that hold secrets (an API secret key, an enrollment token). Afterwards none of those
values appears anywhere in what the server wrote, while the access lines of those requests are
there (the log was on and saw them).
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.common import served_on
from tests.institution.harness import ServerProcess, World, b64


def _secret(tag: str) -> str:
    return f"{tag}-{secrets.token_hex(12)}"


def attack(w: World) -> tuple[list[str], list[str]]:
    """Send the secret-carrying requests; (the secrets, the request ids sent with them)."""
    planted: list[str] = []
    rids: list[str] = []

    def send(method: str, path: str, **kw: object) -> httpx.Response:
        rid = "attack-" + secrets.token_hex(6)
        rids.append(rid)
        headers = dict(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
        headers["X-Request-Id"] = rid
        return w.http.request(method, path, headers=headers, **kw)  # type: ignore[arg-type]

    # headers
    for name, value in (
        ("Authorization", "Bearer " + _secret("bearer")),
        ("Authorization", "Basic " + _secret("basic")),
        ("X-Api-Key", _secret("apikey")),
        ("Cookie", "session=" + _secret("cookie")),
        ("Proxy-Authorization", "Bearer " + _secret("proxyauth")),
        ("Idempotency-Key", _secret("idem")),
        ("X-Safescan-Signature", _secret("sig")),
    ):
        planted.append(value.split(" ", 1)[-1].split("=", 1)[-1])
        for path in ("/v1/admin/customers", "/v1/merchant", "/v1/keys", "/v1/payments"):
            send("GET" if path != "/v1/payments" else "POST", path, headers={name: value})
    # the real admin token, on a request that succeeds and on one that fails
    planted.append(w.admin_token)
    send(
        "GET", "/v1/admin/webhooks/dispatcher", headers={"Authorization": f"Bearer {w.admin_token}"}
    )
    send("GET", "/v1/admin/customers/cus_x", headers={"Authorization": f"Bearer {w.admin_token}"})
    # bodies: JSON with secrets in fields the API does not know, and malformed JSON
    for body in (
        {"pin": (pin := _secret("pin"))},
        {"password": (pw := _secret("password")), "name": "x"},
        {"code": (code := _secret("code")), "authorization": (auth := _secret("auth"))},
    ):
        for path in (
            "/v1/payments",
            "/v1/codes/status",
            "/v1/admin/customers",
            "/v1/carriers/enroll",
        ):
            send("POST", path, json=body)
    planted += [pin, pw, code, auth]
    broken = '{"pin": "' + (broken_pin := _secret("brokenpin")) + '", '
    planted.append(broken_pin)
    send("POST", "/v1/payments", content=broken, headers={"Content-Type": "application/json"})
    send(
        "POST", "/v1/admin/customers", content=broken, headers={"Content-Type": "application/json"}
    )
    # query strings and paths
    for tag in ("query", "path"):
        s = _secret(tag)
        planted.append(s)
        if tag == "query":
            send("GET", f"/v1/keys?token={s}")
            send("GET", f"/v1/revocation-list?format={s}")
            send("GET", f"/healthz?api_key={s}")
        else:
            send(
                "GET",
                f"/v1/admin/customers/{s}",
                headers={"Authorization": f"Bearer {w.admin_token}"},
            )
            send("GET", f"/{s}")
            send("GET", f"/v1/merchant/orders/{s}")
    # answers that hold secrets: an API secret key, an enrollment token; then real use of both
    r = w.admin(
        "POST",
        "/v1/admin/merchants",
        {
            "name": "Secret Cafe",
            "city": "Berlin",
            "country": "DE",
            "mcc": 5814,
            "settlement_account": "DE89370400440532013000",
        },
    )
    assert r.status_code == 201, r.text
    planted.append(r.json()["api_secret_key"])
    cid = w.customer({"EUR": 10_000})
    t = w.admin("POST", f"/v1/admin/customers/{cid}/enrollment-tokens", {})
    planted.append(t.json()["token"])
    # a real merchant's signed requests and a real payment: signatures, codes, authorizations
    m = w.merchant("Signed Cafe")
    carrier = w.carrier(cid)
    order = m.order([("Tea", 1, 200)])
    auth_blob = b64(carrier.authorize(order["code"]).to_bytes())
    planted += [order["code"], auth_blob]
    paid = send("POST", "/v1/payments", json={"code": order["code"], "authorization": auth_blob})
    assert paid.status_code == 201, paid.text
    # wrong authorizations for a real code (a brute-force-shaped run)
    for _ in range(5):
        wrong = b64(secrets.token_bytes(120))
        planted.append(wrong)
        send("POST", "/v1/payments", json={"code": order["code"], "authorization": wrong})
    return planted, rids


def check(server: ServerProcess, planted: list[str], rids: list[str]) -> None:
    # an access line is written after its answer is sent: give the last ones time to arrive
    deadline = time.monotonic() + 15
    out = server.output()
    while not all(r in out for r in rids) and time.monotonic() < deadline:
        time.sleep(0.1)
        out = server.output()
    leaked = [s for s in planted if s and s in out]
    assert not leaked, f"secrets in the log: {leaked[:5]}"
    # the log was on and saw the attack: one JSON access line per attacking request
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    seen = {d.get("request_id") for d in lines if d.get("event") == "request"}
    missing = [r for r in rids if r not in seen]
    assert not missing, missing[:5]


def test_no_secret_reaches_the_log(world: World) -> None:
    planted, rids = attack(world)
    check(world.server, planted, rids)


@pytest.fixture
def debug_world() -> Iterator[World]:
    with tempfile.TemporaryDirectory(prefix="safescan-secrecy-") as d:
        db = f"sqlite:///{Path(d) / 'i.db'}"
        with served_on(db, Path(d) / "keys", ["--log-level", "debug"]) as w:
            yield w


def test_no_secret_reaches_the_log_at_debug_level(debug_world: World) -> None:
    planted, rids = attack(debug_world)
    check(debug_world.server, planted, rids)
