"""Merchant secret API keys (Bearer, scopes), attacked on a real server (SQLite and PostgreSQL).

Made with a signed request and shown once; listed without the secret; every merchant route
needs its scope (403 ``insufficient_scope``); malformed, unknown, wrong, expired and revoked keys
401 ``invalid_api_key``; a key never works for another merchant's objects, never mints, rotates
or revokes keys, never goes in a URL; rotation keeps the old key for its grace period only; the
stored hash is keyed (not the SHA-256 of the key); nothing of a key reaches the server's log.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from safescan.api.api_keys import SCOPES
from safescan.api.errors import InsufficientScope, InvalidApiKey
from safescan.client import MerchantClient as TypedMerchantClient
from safescan.client import SecretKey
from safescan.code.keys import SigningKey
from safescan.code.payment import LineItem
from safescan.merchant.config import PosConfig
from tests.institution.harness import MerchantClient, World, env, institution_cli

#: every merchant route with the scope it needs (a test checks the server has no other)
ROUTES: list[tuple[str, str, str, Any]] = [
    ("GET", "/v1/merchant", "account:read", None),
    ("GET", "/v1/merchant/orders", "orders:read", None),
    ("POST", "/v1/merchant/orders", "orders:write", {"items": [], "currency": "EUR"}),
    ("POST", "/v1/merchant/orders/lookup", "orders:write", {"items": [], "currency": "EUR"}),
    ("GET", "/v1/merchant/orders/ord_x", "orders:read", None),
    ("POST", "/v1/merchant/orders/ord_x/close", "orders:write", {}),
    ("POST", "/v1/merchant/orders/ord_x/refunds", "refunds:write", {}),
    ("POST", "/v1/merchant/orders/ord_x/refunds/lookup", "refunds:write", {}),
    ("GET", "/v1/merchant/payments/pay_x", "orders:read", None),
    ("GET", "/v1/merchant/refunds?order_id=ord_x", "orders:read", None),
    ("GET", "/v1/merchant/refunds?date=2026-01-01", "orders:read", None),
    ("POST", "/v1/merchant/static-codes", "orders:write", {}),
    ("POST", "/v1/merchant/certificates", "certificates:write", {"public_key": "x"}),
    ("GET", "/v1/merchant/settlement?date=2026-01-01", "settlement:read", None),
    ("GET", "/v1/merchant/events", "events:read", None),
    ("PUT", "/v1/merchant/webhook", "webhooks:write", {"url": None}),
    ("GET", "/v1/merchant/webhook", "webhooks:read", None),
    ("POST", "/v1/merchant/webhook/secret", "webhooks:write", {}),
    ("POST", "/v1/merchant/webhook/test", "webhooks:write", None),
    ("GET", "/v1/merchant/webhook/deliveries", "webhooks:read", None),
    ("POST", "/v1/merchant/events/evt_x/resend", "webhooks:write", None),
    ("POST", "/v1/checkout/sessions", "checkout:write", {}),
    ("POST", "/v1/checkout/sessions/lookup", "checkout:write", {}),
    ("GET", "/v1/checkout/sessions/cs_x", "checkout:read", None),
    ("POST", "/v1/checkout/sessions/cs_x/cancel", "checkout:write", None),
]
#: routes only a signed request may call
SIGNED_ONLY = [
    ("GET", "/v1/merchant/api-keys", None),
    ("GET", "/v1/merchant/api-keys/scopes", None),
    ("POST", "/v1/merchant/api-keys", {"scopes": ["orders:read"]}),
    ("POST", "/v1/merchant/api-keys/abcdefghijkmnpqr/rotate", {}),
    ("POST", "/v1/merchant/api-keys/lookup", {"scopes": ["orders:read"]}),
    ("POST", "/v1/merchant/api-keys/abcdefghijkmnpqr/rotate/lookup", {}),
    ("POST", "/v1/merchant/api-keys/abcdefghijkmnpqr/revoke", None),
]


def secret_of(key: str) -> str:
    """The 43-character secret of ``sk_live_<16-character id>_<secret>``, cut by position: the
    id and the secret are base64url and may hold ``_`` themselves (splitting on the last ``_``
    once gave the one-letter fragment ``s``, which any log contains)."""
    prefix = "sk_live_"
    assert key.startswith(prefix) and key[len(prefix) + 16] == "_", key
    secret = key[len(prefix) + 17 :]
    assert len(secret) == 43, key
    return secret


def make_key(m: MerchantClient, *scopes: str, **extra: Any) -> dict[str, Any]:
    """A new key of ``m`` (signed request); the creation answer."""
    r = m.request("POST", "/v1/merchant/api-keys", {"scopes": list(scopes), **extra})
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    return dict(r.json())


def bearer(w: World, key: str, method: str, path: str, body: Any = None) -> httpx.Response:
    """A request with ``Authorization: Bearer key``."""
    headers = {"Authorization": f"Bearer {key}"}
    if body is not None:
        return w.http.request(method, path, json=body, headers=headers)
    return w.http.request(method, path, headers=headers)


def code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


def test_key_made_once_listed_without_secret_and_works(world: World) -> None:
    m = world.merchant()
    made = make_key(m, "orders:read", "orders:write", name="web shop")
    key = made["key"]
    assert key.startswith("sk_live_" + made["id"] + "_") and len(key) == 8 + 16 + 1 + 43
    assert made["scopes"] == ["orders:read", "orders:write"] and made["state"] == "active"
    assert made["prefix"] == "sk_live_" + made["id"] and made["last_used_at"] is None
    # the typed client with the key only
    with TypedMerchantClient(
        world.server.base_url, m.merchant_id, SecretKey(key), world.admin_api.keys.root_keys()
    ) as api:
        order = api.orders.create([LineItem("Tea", 2, 250)], currency="EUR")
        assert api.orders.get(order.order_id).state == "CREATED"
        assert any(o.order_id == order.order_id for o in api.orders.list().orders)
        with pytest.raises(InsufficientScope):
            api.refunds.create(order.order_id)
    # listed: prefix, scopes, last use; never the secret or its hash
    r = m.request("GET", "/v1/merchant/api-keys")
    assert r.status_code == 200, r.text
    listed = r.json()["api_keys"]
    mine = next(k for k in listed if k["id"] == made["id"])
    assert mine["last_used_at"] is not None and mine["name"] == "web shop"
    text = json.dumps(listed)
    assert key not in text and secret_of(key) not in text and "hash" not in text
    # the database holds a keyed hash: neither the key nor its plain SHA-256
    engine = sa.create_engine(world.db_url)  # type: ignore[attr-defined]
    with engine.connect() as c:
        stored = c.execute(
            sa.text("SELECT secret_hash FROM merchant_api_keys WHERE id = :i"), {"i": made["id"]}
        ).scalar_one()
        dump = json.dumps([list(r) for r in c.execute(sa.text("SELECT * FROM merchant_api_keys"))])
    engine.dispose()
    assert stored != hashlib.sha256(key.encode()).hexdigest() and len(stored) == 64
    assert secret_of(key) not in dump


def test_every_merchant_route_is_in_the_scope_table(world: World) -> None:
    spec = world.http.get("/openapi.json").json()
    served = {
        (method.upper(), path)
        for path, ops in spec["paths"].items()
        if path.startswith(("/v1/merchant", "/v1/checkout"))
        for method in ops
    }
    listed = {(m, p.split("?")[0]) for m, p, _, _ in ROUTES} | {(m, p) for m, p, _ in SIGNED_ONLY}

    def template(path: str) -> str:
        parts = [
            "{x}" if part.startswith(("ord_", "pay_", "evt_", "cs_")) or len(part) == 16 else part
            for part in path.split("/")
        ]
        return "/".join(parts)

    assert {(m, template(p)) for m, p in listed} == {
        (
            m,
            template(
                p.replace("{order_id}", "ord_x")
                .replace("{payment_id}", "pay_x")
                .replace("{event_id}", "evt_x")
                .replace("{session_id}", "cs_x")
                .replace("{key_id}", "abcdefghijkmnpqr")
            ),
        )
        for m, p in served
    }
    assert {s for _, _, s, _ in ROUTES} <= set(SCOPES)


@pytest.mark.parametrize(("method", "path", "scope", "body"), ROUTES)
def test_a_key_without_the_scope_gets_403_and_with_it_passes_auth(
    world: World, method: str, path: str, scope: str, body: Any
) -> None:
    m = world.merchant()
    others = [s for s in SCOPES if s != scope]
    without = make_key(m, *others)["key"]
    r = bearer(world, without, method, path, body)
    assert r.status_code == 403 and code(r) == "insufficient_scope", r.text
    assert r.json()["error"]["param"] == scope
    with_it = make_key(m, scope)["key"]
    if path == "/v1/merchant/events":
        with world.http.stream("GET", path, headers={"Authorization": f"Bearer {with_it}"}) as s:
            assert s.status_code == 200
        return
    r = bearer(world, with_it, method, path, body)
    # past authentication: the route's own answer (validation, not found, or success)
    assert r.status_code not in (401, 403), r.text
    assert r.status_code != 429


@pytest.mark.parametrize(("method", "path", "body"), SIGNED_ONLY)
def test_no_api_key_manages_keys_scope_escalation(
    world: World, method: str, path: str, body: Any
) -> None:
    m = world.merchant()
    everything = make_key(m, *SCOPES)["key"]
    r = bearer(world, everything, method, path, body)
    assert r.status_code == 403 and code(r) == "insufficient_scope", r.text


def test_scope_escalation_by_creation_is_refused(world: World) -> None:
    m = world.merchant()
    for bad in (["admin"], ["orders:*"], ["*"], [], ["orders:read", "apikeys:write"]):
        r = m.request("POST", "/v1/merchant/api-keys", {"scopes": bad})
        assert r.status_code == 400, (bad, r.text)
    r = m.request("POST", "/v1/merchant/api-keys", {"scopes": ["orders:read"], "extra": 1})
    assert r.status_code == 400
    assert m.request("GET", "/v1/merchant/api-keys").json()["api_keys"] == []


def malformed_variants(key: str) -> list[str]:
    key_id, secret = key[8:24], key[25:]
    return [
        key[:-1],
        key + "A",
        "sk_test_" + key[8:],
        "pk_live_" + key[8:],
        f"sk_live_{key_id}{secret}",
        f"sk_live_{key_id}_{secret[:-2]}==",
        secret,
        "x" * 2000,
        key + ".x",
        "sk_live_" + key_id + "_" + secret.replace(secret[0], "%"),
    ]


def test_malformed_unknown_and_wrong_keys_get_401(world: World) -> None:
    m = world.merchant()
    key = make_key(m, "orders:read")["key"]
    key_id, secret = key[8:24], key[25:]
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    unknown_id = ("a" if key_id[0] != "a" else "b") + key_id[1:]
    for bad in [
        *malformed_variants(key),
        f"sk_live_{key_id}_{flipped}",
        f"sk_live_{unknown_id}_{secret}",
    ]:
        r = world.http.get("/v1/merchant/orders", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401 and code(r) in ("invalid_api_key", "unauthenticated"), bad
    for header in (f"Basic {key}", f"Token {key}", "Bearer", "Bearer x y", key, f"bearer  {key}x"):
        r = world.http.get("/v1/merchant/orders", headers={"Authorization": header})
        assert r.status_code == 401, header
    # the good key still works (these 14 failures stay under the address's burst of 20;
    # test_api_key_guessing.py goes past it)
    assert bearer(world, key, "GET", "/v1/merchant/orders").status_code == 200


def test_key_in_the_url_is_refused(world: World) -> None:
    m = world.merchant()
    key = make_key(m, "orders:read")["key"]
    for query in (
        f"api_key={key}",
        f"key={key}",
        f"access_token={key}",
        f"token={key}",
        f"limit=5&x={key}",
        "api_key=anything",
        "limit=5&secret=x",
        "x=" + key.replace("_", "%5F"),
        "x=" + key.replace("_", "%5f"),
    ):
        for headers in ({}, {"Authorization": f"Bearer {key}"}):
            r = world.http.get(f"/v1/merchant/orders?{query}", headers=headers)
            assert r.status_code == 401 and code(r) == "api_key_in_url", (query, r.text)
    # the key was not used for anything: never seen
    listed = m.request("GET", "/v1/merchant/api-keys").json()["api_keys"]
    assert listed[0]["last_used_at"] is None


def test_a_key_of_another_merchant(world: World) -> None:
    alice, mallory = world.merchant("Alice Shop"), world.merchant("Mallory Shop")
    order = alice.order([("Pen", 1, 100)])
    alice_key = make_key(alice, "orders:read")
    mallory_key = make_key(mallory, *SCOPES)["key"]
    # Mallory's key sees Mallory only
    r = bearer(world, mallory_key, "GET", f"/v1/merchant/orders/{order['order_id']}")
    assert r.status_code == 404
    r = bearer(world, mallory_key, "POST", f"/v1/merchant/orders/{order['order_id']}/close", {})
    assert r.status_code == 404
    assert bearer(world, mallory_key, "GET", "/v1/merchant").json()["id"] == mallory.merchant_id
    # Mallory's signed requests cannot see, rotate or revoke Alice's key
    for method, path in (
        ("POST", f"/v1/merchant/api-keys/{alice_key['id']}/revoke"),
        ("POST", f"/v1/merchant/api-keys/{alice_key['id']}/rotate"),
    ):
        r = mallory.request(method, path, {} if path.endswith("rotate") else None)
        assert r.status_code == 404, r.text
    ids = [k["id"] for k in mallory.request("GET", "/v1/merchant/api-keys").json()["api_keys"]]
    assert alice_key["id"] not in ids
    # Alice's key still works for Alice
    assert (
        bearer(
            world, alice_key["key"], "GET", f"/v1/merchant/orders/{order['order_id']}"
        ).status_code
        == 200
    )
    # a key and a signature together: refused (which merchant would it be?)
    h = {"Authorization": f"Bearer {alice_key['key']}", "Signature": "sig1=:AAAA:"}
    r = world.http.get("/v1/merchant", headers=h)
    assert r.status_code == 401


def test_revoke_and_rotate(world: World) -> None:
    m = world.merchant()
    first = make_key(m, "orders:read", name="till")
    assert bearer(world, first["key"], "GET", "/v1/merchant/orders").status_code == 200
    # rotate with a grace period: both work, the new one has the same scopes and label
    r = m.request("POST", f"/v1/merchant/api-keys/{first['id']}/rotate", {"grace_seconds": 3600})
    assert r.status_code == 201, r.text
    second = r.json()
    assert second["scopes"] == ["orders:read"] and second["name"] == "till"
    assert second["previous"]["id"] == first["id"] and second["previous"]["state"] == "expiring"
    assert second["previous"]["replaced_by"] == second["id"]
    for k in (first["key"], second["key"]):
        assert bearer(world, k, "GET", "/v1/merchant/orders").status_code == 200
    # a second rotation of the same key: refused (one successor)
    r = m.request("POST", f"/v1/merchant/api-keys/{first['id']}/rotate", {})
    assert r.status_code == 409
    # the old key revoked during its grace: refused at once; the new one unaffected
    r = m.request("POST", f"/v1/merchant/api-keys/{first['id']}/revoke")
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    r = bearer(world, first["key"], "GET", "/v1/merchant/orders")
    assert r.status_code == 401 and code(r) == "invalid_api_key"
    assert "revoked" in r.json()["error"]["message"]
    assert bearer(world, second["key"], "GET", "/v1/merchant/orders").status_code == 200
    # revoking again changes nothing; a revoked key cannot be rotated
    assert m.request("POST", f"/v1/merchant/api-keys/{first['id']}/revoke").status_code == 200
    assert m.request("POST", f"/v1/merchant/api-keys/{first['id']}/rotate", {}).status_code == 409
    # rotation without grace: the old key stops now
    r = m.request("POST", f"/v1/merchant/api-keys/{second['id']}/rotate", {"grace_seconds": 0})
    third = r.json()
    r = bearer(world, second["key"], "GET", "/v1/merchant/orders")
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    assert bearer(world, third["key"], "GET", "/v1/merchant/orders").status_code == 200
    # bad grace values
    for grace in (-1, 10**9, "60", 1.5):
        r = m.request(
            "POST", f"/v1/merchant/api-keys/{third['id']}/rotate", {"grace_seconds": grace}
        )
        assert r.status_code == 400, grace
    states = {
        k["id"]: k["state"] for k in m.request("GET", "/v1/merchant/api-keys").json()["api_keys"]
    }
    assert states == {first["id"]: "revoked", second["id"]: "expired", third["id"]: "active"}


def test_a_revoked_merchant_keys_stop(world: World) -> None:
    m = world.merchant("Closing Down")
    key = make_key(m, "orders:read")["key"]
    assert world.admin("POST", f"/v1/admin/merchants/{m.merchant_id}/revoke").status_code == 200
    r = bearer(world, key, "GET", "/v1/merchant/orders")
    assert r.status_code == 403 and code(r) == "forbidden"


def test_administrator_manages_a_merchants_keys(world: World) -> None:
    m = world.merchant()
    base = f"/v1/admin/merchants/{m.merchant_id}/api-keys"
    r = world.admin("POST", base, {"scopes": ["checkout:write", "orders:read"], "name": "shop"})
    assert r.status_code == 201, r.text
    made = r.json()
    assert bearer(world, made["key"], "GET", "/v1/merchant/orders").status_code == 200
    assert [k["id"] for k in world.admin("GET", base).json()["api_keys"]] == [made["id"]]
    assert world.admin("POST", f"{base}/{made['id']}/revoke").json()["state"] == "revoked"
    assert bearer(world, made["key"], "GET", "/v1/merchant/orders").status_code == 401
    # without the admin token: 401; for an unknown merchant: 404
    assert world.http.post(base, json={"scopes": ["orders:read"]}).status_code == 401
    r = world.admin("POST", "/v1/admin/merchants/MNOBODY/api-keys", {"scopes": ["orders:read"]})
    assert r.status_code == 404
    # the audit log has every change and still verifies
    db_url = world.db_url  # type: ignore[attr-defined]
    ok = institution_cli("audit", "--db", db_url, "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_typed_client_errors_for_bad_keys(world: World) -> None:
    m = world.merchant()
    made = make_key(m, "orders:read")
    assert m.request("POST", f"/v1/merchant/api-keys/{made['id']}/revoke").status_code == 200
    with (
        TypedMerchantClient(
            world.server.base_url,
            m.merchant_id,
            SecretKey(made["key"]),
            world.admin_api.keys.root_keys(),
        ) as api,
        pytest.raises(InvalidApiKey),
    ):
        api.orders.list()
    with pytest.raises(InvalidApiKey):
        SecretKey("sk_live_short")
    assert made["key"] not in repr(SecretKey(made["key"]))


def test_no_key_material_in_the_server_log(world: World) -> None:
    m = world.merchant()
    made = make_key(m, "orders:read")
    key = made["key"]
    secret = secret_of(key)
    bearer(world, key, "GET", "/v1/merchant/orders")
    bearer(world, key[:-1] + ("x" if key[-1] != "x" else "y"), "GET", "/v1/merchant/orders")
    world.http.get(f"/v1/merchant/orders?api_key={key}")
    rotated = m.request("POST", f"/v1/merchant/api-keys/{made['id']}/rotate", {}).json()
    log = world.server.output()
    assert "/v1/merchant" in log  # the access log saw the requests
    for value in (key, secret, secret[:12], rotated["key"], secret_of(rotated["key"])):
        assert value not in log
    assert "sk_live_" not in log


def _pos(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safescan", "pos", "apikey", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env(), "SAFESCAN_POS_PASSPHRASE": "pos-pass", "COLUMNS": "200"},
    )


def test_pos_apikey_commands(world: World, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """``safescan pos apikey create | list | rotate | revoke`` against the real server (the
    commands only speak HTTP: one backend)."""
    if request.node.callspec.params.get("world") != "sqlite":
        pytest.skip("the CLI speaks HTTP only; the routes are tested on every backend above")
    seed = secrets.token_bytes(32)
    key = SigningKey.from_seed(seed)
    made = world.admin_api.merchants.create(
        name="Cli Keys",
        city="Berlin",
        country="DE",
        mcc=5814,
        settlement_account="DE89370400440532013000",
        api_public_key=key.public_key,
        webhook_url=None,
    )
    config = PosConfig(
        world.server.base_url,
        made.id,
        seed,
        world.admin_api.keys.root_keys(),
        tls_ca=world.server.ca.read_text(),
    ).save(tmp_path / "pos.json", passphrase=b"pos-pass")
    out = _pos(config, "create", "--scope", "orders:read", "--scope", "checkout:write,orders:write")
    assert out.returncode == 0, out.stdout + out.stderr
    secret = re.search(r"sk_live_[a-z0-9]{16}_[A-Za-z0-9_\-]{43}", out.stdout)
    assert secret is not None and "shown once" in out.stdout
    first = secret.group(0)
    assert bearer(world, first, "GET", "/v1/merchant/orders").status_code == 200
    listed = json.loads(_pos(config, "list", "--json").stdout)["api_keys"]
    assert listed[0]["scopes"] == ["checkout:write", "orders:read", "orders:write"]
    table = _pos(config, "list")
    assert table.returncode == 0 and listed[0]["prefix"] in table.stdout
    assert secret_of(first) not in table.stdout
    rotated = json.loads(
        _pos(config, "rotate", listed[0]["prefix"], "--grace", "0", "--json").stdout
    )
    assert bearer(world, first, "GET", "/v1/merchant/orders").status_code == 401
    assert bearer(world, rotated["key"], "GET", "/v1/merchant/orders").status_code == 200
    assert _pos(config, "revoke", rotated["id"]).returncode == 0
    assert bearer(world, rotated["key"], "GET", "/v1/merchant/orders").status_code == 401
    for bad_args in (
        ("create", "--scope", "everything"),
        ("revoke", "../../x"),
        ("revoke", "a" * 16),
    ):
        refused = _pos(config, *bad_args, "--json")
        assert refused.returncode == 2, (bad_args, refused.stdout)
        assert "error" in json.loads(refused.stdout)
    listed_scopes = subprocess.run(
        [sys.executable, "-m", "safescan", "pos", "apikey", "scopes", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env(),
    )
    assert json.loads(listed_scopes.stdout)["scopes"] == SCOPES
