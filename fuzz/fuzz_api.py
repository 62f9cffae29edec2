"""Fuzz the payment institution's HTTP API: request bodies (and paths) into the real ASGI app.

    .venv/bin/python fuzz/fuzz_api.py -atheris_runs=20000
    .venv/bin/python fuzz/fuzz_api.py -max_total_time=300 [CORPUS_DIR ...]

The real application (``safescan.institution.http.create_app``) runs in process over a
temporary SQLite database initialised like ``safescan institution init`` does, and is called
through ``httpx.ASGITransport`` on one persistent event loop. Requests carry valid credentials
(the administrator token; merchant requests signed over the exact fuzzed bytes) so the fuzzer
reaches the handlers instead of stopping at 401, and the merchant rate limit is lifted.

Input layout: ``data[0] % 13`` picks the endpoint, bit 7 of ``data[0]`` drops the
``Content-Type: application/json`` header; the rest is the request body, sent as is. Endpoint
12 takes a path too: the bytes up to the first newline (printable ASCII only) are appended to
``/v1/``, POSTed with both kinds of credentials.

Pass: never a 5xx, and every 4xx answer is the JSON error object
``{"error": {"type", "code", "message"}}`` with a JSON content type. Anything else (a 500, a
non-JSON error, an exception out of the app) is a crash.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from tests.institution.harness import attest

from fuzz._common import main
from safescan.api.errors import InvalidRequest
from safescan.api.merchant_auth import sign_request
from safescan.code import Authorization, LineItem, SigningKey, decode_text
from safescan.institution import wire
from safescan.institution.db import Database, migrate
from safescan.institution.http import create_app
from safescan.institution.keystore import KeyStore
from safescan.institution.ratelimit import RateLimiter
from safescan.institution.service import Institution

OUTCOMES: Counter[str] = Counter()
PASSPHRASE = b"fuzz-passphrase-0123"
ENDPOINTS = (
    ("POST", "/v1/payments", "public"),
    ("POST", "/v1/codes/status", "public"),
    ("POST", "/v1/carriers/enroll", "public"),
    ("POST", "/v1/admin/merchants", "admin"),
    ("POST", "/v1/admin/customers", "admin"),
    ("POST", "/v1/admin/customers/{customer}/fund", "admin"),
    ("POST", "/v1/admin/customers/{customer}/enrollment-tokens", "admin"),
    ("POST", "/v1/merchant/orders", "merchant"),
    ("POST", "/v1/merchant/orders/{order}/refunds", "merchant"),
    ("POST", "/v1/merchant/static-codes", "merchant"),
    ("POST", "/v1/merchant/certificates", "merchant"),
    ("PUT", "/v1/merchant/webhook", "merchant"),
    ("POST", "/v1/", "both"),  # the path comes from the input
)
TOKENS = tuple(
    t.encode()
    for t in (
        '{"',
        '":',
        '"}',
        "[{",
        "}]",
        "null",
        "true",
        "1e309",
        "-0",
        "9223372036854775808",
        '"\\u0000"',
        '"\\ud800"',
        '"\\u202e"',
        "SS1:",
        '"EUR"',
        '"code"',
        '"authorization"',
        '"items"',
        '"currency"',
        '"amount"',
        '"unit_price"',
        '"quantity"',
        '"name"',
        '"url"',
        '"token"',
        '"public_key"',
        "' OR 1=1 --",
        "merchant/orders?limit=",
    )
)


class Api:
    """The app over a temporary SQLite database, one merchant, one customer and carrier."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="safescan-fuzz-api-")
        base = Path(self.tmp.name)
        database = Database(f"sqlite:///{base / 'fuzz.db'}")
        migrate(database.engine)
        keys = KeyStore(base / "keys").create(PASSPHRASE)
        self.inst = Institution(database, keys, merchant_rate=(1e9, 1e9))  # no merchant limit
        self.admin_token = self.inst.setup.bootstrap()
        self.merchant_key = SigningKey.from_seed(bytes([9]) * 32)
        made = self.inst.merchants.create(
            name="Fuzz Shop",
            city="Berlin",
            country="DE",
            mcc=5814,
            settlement_account="DE89370400440532013000",
            api_public_key=self.merchant_key.public_key.raw,
            webhook_url=None,
        )
        self.merchant_id: str = made.merchant.id
        self.customer_id: str = self.inst.customers.create("Fuzz customer").id
        self.inst.customers.fund(self.customer_id, "EUR", 10**9)
        token = self.inst.customers.issue_enrollment_token(self.customer_id).token
        self.carrier_key = SigningKey.generate()
        transport = X25519PrivateKey.generate().public_key().public_bytes_raw()
        enrolled = self.inst.carriers.enroll(
            token,
            self.carrier_key.public_key.raw,
            transport,
            attest(self.inst, token, self.carrier_key.public_key.raw, transport),
        )
        self.carrier_serial: int = enrolled.carrier_serial
        self.counter = 0
        app = create_app(self.inst, public_limiter=RateLimiter(1e9, 1e9), background=False)
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://fuzz.invalid"
        )
        self.order_id = ""

    def order(self) -> dict[str, Any]:
        """A fresh order of the merchant (its sealed code and id)."""
        made = self.inst.orders.precreate(
            self.merchant_id, [([LineItem("Coffee", 1, 250)], "EUR")], 3600
        )
        order: dict[str, Any] = wire.precreated(made[0])
        self.order_id = order["order_id"]
        return order

    def payment_body(self) -> bytes:
        """A valid payment body: a fresh order's code and a carrier-signed authorization."""
        order = self.order()
        self.counter += 1
        auth = Authorization(
            code_digest=hashlib.sha256(decode_text(order["code"])).digest(),
            merchant_id=self.merchant_id,
            order_id=order["order_id"],
            amount=order["total"],
            currency=order["currency"],
            counter=self.counter,
            carrier_serial=self.carrier_serial,
            created_at=int(time.time()),
        ).signed(self.carrier_key)
        raw = base64.b64encode(auth.to_bytes()).decode()
        return json.dumps({"code": order["code"], "authorization": raw}).encode()

    def send(self, method: str, path: str, auth: str, body: bytes, json_type: bool) -> None:
        """One request; checks the answer (raises AssertionError on a failed check)."""
        headers: dict[str, str] = {"Content-Type": "application/json"} if json_type else {}
        if auth in ("admin", "both"):
            headers["Authorization"] = f"Bearer {self.admin_token}"
        if auth in ("merchant", "both"):
            try:
                signed = sign_request(self.merchant_key, self.merchant_id, method, path, body)
            except InvalidRequest:
                return  # no encoded URL path: the client refuses (typed) before sending
            headers.update(signed)
        request = self.client.request(method, path, content=body, headers=headers)
        response = self.loop.run_until_complete(request)
        check(response, method, path, body)


def check(response: httpx.Response, method: str, path: str, body: bytes) -> None:
    """No 5xx; every error is the JSON error object."""
    where = f"{method} {path} body={body[:200]!r}"
    assert response.status_code < 500, f"{response.status_code} on {where}: {response.text[:500]}"
    OUTCOMES[str(response.status_code)] += 1
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith("application/json"), f"{content_type!r} error on {where}"
    error = response.json().get("error")
    assert isinstance(error, dict), f"no error object on {where}: {response.text[:300]}"
    for key in ("type", "code", "message"):
        assert isinstance(error.get(key), str), f"error without {key} on {where}: {error}"
    OUTCOMES[f"{response.status_code} {error['code']}"] += 1


_API: Api | None = None


def api() -> Api:
    """The shared application fixture (made on first use: about a second)."""
    global _API
    if _API is None:
        _API = Api()
    return _API


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the atheris / libFuzzer name)
    """One fuzz input; raises only on a crash (a 5xx, a malformed error, an app exception)."""
    if not data:
        return
    fx = api()
    method, path, auth = ENDPOINTS[data[0] % len(ENDPOINTS)]
    body = data[1:]
    path = path.format(customer=fx.customer_id, order=fx.order_id or "o_missing")
    if auth == "both":
        head, _, body = body.partition(b"\n")
        path += "".join(chr(b) for b in head if 0x21 <= b < 0x7F and b not in b"#")
    fx.send(method, path, auth, body, json_type=not data[0] & 0x80)


def seeds() -> list[bytes]:
    """A valid body for every endpoint (and a few paths), in the harness layout."""
    fx = api()
    fx.order()
    key = base64.b64encode(SigningKey.from_seed(bytes([3]) * 32).public_key.raw).decode()
    x25519 = base64.b64encode(X25519PrivateKey.generate().public_key().public_bytes_raw())
    order = fx.order()
    bodies: list[tuple[int, Any]] = [
        (1, {"code": order["code"]}),
        (
            2,
            {"token": "A" * 22, "signing_public_key": key, "transport_public_key": x25519.decode()},
        ),
        (
            3,
            {
                "name": "Bäckerei Groß",
                "city": "Köln",
                "country": "DE",
                "mcc": 5462,
                "settlement_account": "DE89370400440532013000",
                "api_public_key": key,
                "webhook_url": "https://shop.example/hook",
            },
        ),
        (4, {"name": "Ada Lovelace"}),
        (5, {"currency": "EUR", "amount": 1000}),
        (6, {"ttl_seconds": 3600}),
        (
            7,
            {
                "items": [{"name": "Flat white", "quantity": 2, "unit_price": 350}],
                "currency": "EUR",
                "expires_in": 900,
                "reference": "till-4",
            },
        ),
        (8, {"amount": 100, "reason": "broken cup"}),
        (9, {"currency": "EUR", "valid_days": 30}),
        (10, {"public_key": key, "valid_days": 365}),
        (11, {"url": "https://shop.example/hook"}),
    ]
    out = [bytes([0]) + fx.payment_body(), bytes([0]) + fx.payment_body()]
    out += [bytes([i]) + json.dumps(b, ensure_ascii=False).encode() for i, b in bodies]
    for path in ("merchant/orders?limit=5", "admin/merchants", "payments", "codes/status"):
        out.append(bytes([12]) + path.encode() + b"\n" + b'{"code": "SS1:"}')
    return out


if __name__ == "__main__":
    main(TestOneInput, seeds(), TOKENS, OUTCOMES)
