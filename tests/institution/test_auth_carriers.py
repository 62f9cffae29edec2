"""Administrator and merchant authentication, rate limit, carrier enrollment, revocation list."""

from __future__ import annotations

import base64
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safescan.api.merchant_auth import sign_request
from safescan.carrier.testing import software_attestation
from safescan.code import RevocationList, Role, SigningKey, TrustStore
from safescan.code.attestation import enrollment_challenge
from safescan.code.keys import VerifyKey
from tests.institution.conftest import make_db
from tests.institution.harness import FACTORY, MerchantClient, ServerProcess, World, b64, init_db


def test_admin_endpoints_need_the_token(world: World) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        r = world.http.post("/v1/admin/customers", json={"name": "X"}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"


def test_merchant_onboarding_with_generated_key(world: World) -> None:
    r = world.admin(
        "POST",
        "/v1/admin/merchants",
        {
            "name": "Kiosk",
            "city": "Paris",
            "country": "FR",
            "mcc": 5411,
            "settlement_account": "FR7630006000011234567890189",
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    seed = base64.b64decode(body["api_secret_key"])
    key = SigningKey.from_seed(seed)
    assert base64.b64decode(body["api_public_key"]) == key.public_key.raw
    h = sign_request(key, body["id"], "GET", "/v1/merchant")
    me = world.http.get("/v1/merchant", headers=h)
    assert me.status_code == 200 and "api_secret_key" not in me.json()


def test_merchant_onboarding_rejects_bad_fields(world: World) -> None:
    base = {"name": "K", "city": "P", "country": "FR", "mcc": 5411, "settlement_account": "X"}
    for bad in (
        {"country": "fr"},
        {"mcc": 10000},
        {"name": ""},
        {"name": "A\u200bB"},
        {"api_public_key": "short"},
        {"webhook_url": "ftp://x"},
    ):
        r = world.admin("POST", "/v1/admin/merchants", {**base, **bad})
        assert r.status_code == 400, (bad, r.text)


def test_merchant_request_signature_is_enforced(world: World) -> None:
    m = world.merchant()
    good = sign_request(m.key, m.merchant_id, "GET", "/v1/merchant")
    assert world.http.get("/v1/merchant", headers=good).status_code == 200
    # replay of the same nonce
    r = world.http.get("/v1/merchant", headers=good)
    assert r.status_code == 401 and r.json()["error"]["code"] == "replayed_request"
    # stale timestamp
    old = sign_request(
        m.key, m.merchant_id, "GET", "/v1/merchant", timestamp=int(time.time()) - 1000
    )
    assert world.http.get("/v1/merchant", headers=old).json()["error"]["code"] == "replayed_request"
    # wrong key, wrong path, altered body, missing headers
    assert (
        world.http.get(
            "/v1/merchant",
            headers=sign_request(SigningKey.generate(), m.merchant_id, "GET", "/v1/merchant"),
        ).status_code
        == 401
    )
    assert (
        world.http.get(
            "/v1/merchant", headers=sign_request(m.key, m.merchant_id, "GET", "/v1/other")
        ).status_code
        == 401
    )
    body = b'{"url": null}'
    h = sign_request(m.key, m.merchant_id, "PUT", "/v1/merchant/webhook", body)
    h["Content-Type"] = "application/json"  # a well-formed request: only its body altered
    r = world.http.put("/v1/merchant/webhook", content=b'{"url":null} ', headers=h)
    assert r.status_code == 401 and r.json()["error"]["code"] != "unsupported_media_type"
    assert world.http.get("/v1/merchant").status_code == 401
    h = sign_request(m.key, "MUNKNOWN00", "GET", "/v1/merchant")
    assert world.http.get("/v1/merchant", headers=h).status_code == 401


def test_enrollment_token_is_single_use_and_bundle_opens(world: World) -> None:
    cid = world.customer()
    carrier = world.carrier(cid)
    assert carrier.provisioned is not None
    assert carrier.provisioned.certificate.role is Role.CARRIER
    assert carrier.provisioned.certificate.subject == f"carrier:{carrier.serial}"
    assert carrier.provisioned.scheme_keys
    assert carrier.epoch_keys and carrier.epoch >= 1  # the first key update came along
    t = world.admin("POST", f"/v1/admin/customers/{cid}/enrollment-tokens", {}).json()["token"]
    signing = SigningKey.generate().public_key.raw
    transport = X25519PrivateKey.generate().public_key().public_bytes_raw()
    body = {
        "token": t,
        "signing_public_key": b64(signing),
        "transport_public_key": b64(transport),
        "attestation": b64(
            software_attestation(FACTORY, signing, transport, enrollment_challenge(t))
        ),
    }
    assert world.http.post("/v1/carriers/enroll", json=body).status_code == 201
    again = world.http.post("/v1/carriers/enroll", json=body)
    assert again.status_code == 401
    body["token"] = "enr_forged_token_xxxxxxxx"
    assert world.http.post("/v1/carriers/enroll", json=body).status_code == 401
    cust = world.admin("GET", f"/v1/admin/customers/{cid}").json()
    assert len(cust["carriers"]) == 2


def test_revocation_list_is_signed_and_grows(world: World) -> None:
    keys = world.http.get("/v1/keys").json()
    trust = TrustStore(
        {k["kid"]: VerifyKey(base64.b64decode(k["public_key"])) for k in keys["root_keys"]}
    )
    before = RevocationList.from_bytes(
        world.http.get("/v1/revocation-list?format=cbor").content, trust
    )
    carrier = world.carrier(world.customer())
    assert world.admin("POST", f"/v1/admin/carriers/{carrier.serial}/revoke").status_code == 200
    assert world.admin("POST", f"/v1/admin/carriers/{carrier.serial}/revoke").status_code == 409
    after = RevocationList.from_bytes(
        world.http.get("/v1/revocation-list?format=cbor").content, trust
    )
    assert after.sequence > before.sequence and carrier.serial in after.serials
    assert world.admin("POST", "/v1/admin/carriers/987654/revoke").status_code == 404


def test_unknown_route_and_method_are_json_errors(world: World) -> None:
    r = world.http.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = world.http.delete("/v1/payments")
    assert r.status_code == 405 and r.json()["error"]["type"] == "MethodNotAllowed"


def test_openapi_is_served(world: World) -> None:
    spec = world.http.get("/openapi.json").json()
    assert "/v1/payments" in spec["paths"] and "/v1/merchant/orders" in spec["paths"]


def test_merchant_rate_limit_is_shared_by_every_api_process(
    world: World, request: pytest.FixtureRequest
) -> None:
    """The bucket lives in the database: a merchant sending to two API processes over one
    database is held to one rate (burst 5, 0.5/s), not to one per process; a refused request
    answers 429 with Retry-After, and the bucket refills."""
    backend = "sqlite" if "sqlite" in world.server.db_url else "postgresql"
    with tempfile.TemporaryDirectory() as d:
        db = make_db(backend, request, Path(d))
        token = init_db(db, Path(d) / "keys")
        extra = ["--merchant-rate", "0.5", "--merchant-burst", "5"]
        servers = [ServerProcess(db, Path(d) / "keys", extra=extra).start() for _ in range(2)]
        worlds = [World(server, token) for server in servers]
        try:
            m = worlds[0].merchant()
            clients = [m, MerchantClient(worlds[1].http, m.merchant_id, m.key)]
            started = time.monotonic()
            codes = [clients[i % 2].request("GET", "/v1/merchant").status_code for i in range(20)]
            elapsed = time.monotonic() - started
            assert set(codes) <= {200, 429}, codes
            # one bucket for both processes: at most 5 + 0.5 x elapsed (+1); one bucket per
            # process would have let 10 through at once
            assert codes.count(200) <= 5 + 0.5 * elapsed + 1, (elapsed, codes)
            assert codes[:5] == [200] * 5, codes
            r = clients[1].request("GET", "/v1/merchant")
            if r.status_code == 429:
                assert r.headers["Retry-After"] and r.json()["error"]["code"] == "rate_limited"
            time.sleep(2.2)  # one token back
            assert clients[0].request("GET", "/v1/merchant").status_code == 200
        finally:
            for w in worlds:
                w.close()
            for server in servers:
                server.stop()
