"""docs/merchant-api.md's curl examples, run exactly as written (bash, curl, openssl) against a
real institution on 127.0.0.1 over HTTPS with its pinned CA (``curl --cacert``), in the order
of the document; each answer is checked. Every merchant route of the server's OpenAPI document
must have an example (a new route without one fails here)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from safescan.api.api_keys import SCOPES
from safescan.code.keys import SigningKey
from tests.institution.harness import MerchantClient, World
from tests.institution.receivers import Listener, answer, wait_until
from tests.institution.test_api_keys import make_key

DOC = Path(__file__).resolve().parents[2] / "docs" / "merchant-api.md"
BLOCK = re.compile(r"```bash\n# example: ([a-z\-]+)\n(.*?)```", re.S)


def examples() -> list[tuple[str, str]]:
    """(name, the block's text) in document order."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(DOC.read_text())]


def routes_of(script: str) -> set[tuple[str, str]]:
    """(METHOD, path template) each example calls."""
    found = set()
    for line in script.replace("\\\n", " ").splitlines():
        line = re.sub(r"^[A-Z_]+=\S+ ", "", line)  # IDEMPOTENCY_KEY=... signed_curl ...
        if line.startswith("signed_curl "):
            method, target = line.split()[1:3]
            found.add((method, target.strip('"').split("?")[0]))
        elif line.startswith("curl "):
            m = re.search(r'"\$SAFESCAN_URL(/[^"?]*)', line)
            if m is None:
                continue
            method = re.search(r"-X (\w+)", line)
            verb = method.group(1) if method else ("POST" if " -d " in line else "GET")
            found.add((verb, m.group(1)))
    return {(m, re.sub(r"\$[A-Z_]+", "{x}", p)) for m, p in found}


@pytest.fixture
def receiver() -> Iterator[Listener]:
    lst = Listener(answer(204))
    try:
        yield lst
    finally:
        lst.close()


class Runner:
    """Runs the examples in one directory with the variables the test has learnt."""

    def __init__(self, world: World, tmp: Path, env: dict[str, str]) -> None:
        self.world, self.tmp, self.env = world, tmp, env
        self.blocks = dict(examples())
        self.ran: list[str] = []

    def run(self, name: str, *, ok: bool = True) -> tuple[int, str]:
        script = self.blocks["setup"] + "\n" + self.blocks[name]
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=self.tmp,
            env={**self.env, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.ran.append(name)
        if ok:
            assert out.returncode == 0, (name, out.returncode, out.stdout, out.stderr)
        return out.returncode, out.stdout

    def json(self, name: str) -> Any:
        return json.loads(self.run(name)[1])

    def refused(self, name: str, status_code: str) -> dict[str, Any]:
        rc, text = self.run(name, ok=False)
        assert rc == 22, (name, rc, text)  # --fail-with-body: HTTP error
        err = json.loads(text)["error"]
        assert err["code"] == status_code, (name, err)
        return dict(err)


def test_every_curl_example_runs_against_a_real_server(
    world: World, receiver: Listener, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params.get("world") != "sqlite":
        pytest.skip("the examples speak HTTP only: one backend")
    for tool in ("curl", "openssl", "base64"):
        assert shutil.which(tool), f"{tool} missing (scripts/ensure-system-deps.sh installs it)"
    # the merchant, its signing key as a PEM file, an API key with every scope
    seed = secrets.token_bytes(32)
    made = world.admin_api.merchants.create(
        name="Curl Corner",
        city="Berlin",
        country="DE",
        mcc=5814,
        settlement_account="DE89370400440532013000",
        api_public_key=SigningKey.from_seed(seed).public_key,
        webhook_url=None,
    )
    (tmp_path / "merchant-key.pem").write_bytes(
        Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    m = MerchantClient(world.http, made.id, SigningKey.from_seed(seed))
    sk = make_key(m, *SCOPES)["key"]
    env = {
        "SAFESCAN_URL": world.server.base_url,
        "CA": str(world.server.ca),
        "SK": sk,
        "MERCHANT_ID": made.id,
        "WEBHOOK_URL": receiver.url,
        "READ_ONLY_SK": make_key(m, "orders:read")["key"],
    }
    r = Runner(world, tmp_path, env)

    assert r.json("profile")["id"] == made.id
    order = r.json("create-order")
    assert order["total"] == 700 and order["code"]
    looked = r.json("lookup-order")
    assert looked["outcome"] == "succeeded", looked  # never a second order
    env["ORDER_ID"] = order["order_id"]
    # a customer pays it (the wallet's part, not the merchant's)
    cid = world.customer({"EUR": 10_000})
    carrier = world.carrier(cid)
    paid = world.pay(order["code"], carrier.authorize(order["code"]))
    assert paid.status_code == 201, paid.text
    assert order["order_id"] in [o["order_id"] for o in r.json("list-orders")["orders"]]
    got = r.json("get-order")
    assert got["state"] == "PAID"
    older = r.json("list-orders-older")  # the page after the order: it is not on it
    assert order["order_id"] not in [o["order_id"] for o in older["orders"]]
    assert older["has_more"] is False
    env["PAYMENT_ID"] = got["payment_id"]
    assert r.json("get-payment")["receipt"]
    env["OPEN_ORDER_ID"] = m.order([("Muffin", 1, 300)])["order_id"]
    assert r.json("close-order")["state"] == "CLOSED"
    assert r.json("static-code")["code"]
    refund = r.json("refund")
    assert refund["amount"] == 100
    assert [x["amount"] for x in r.json("list-refunds")["refunds"]] == [100]
    looked = r.json("lookup-refund")
    assert looked["outcome"] == "succeeded", looked
    csv_text = r.run("settlement")[1]
    assert "Curl Corner" in csv_text and "700" in csv_text
    rc, stream = r.run("events", ok=False)
    assert rc == 28 and "data:" in stream, (rc, stream[:300])  # ended by --max-time
    streamed = re.findall(r"(evt_[A-Za-z0-9]+)", stream)
    assert streamed, stream[:500]  # the order's events, as signed events
    assert r.json("set-webhook")["webhook_url"] == receiver.url
    assert r.json("get-webhook")["url"] == receiver.url
    assert r.json("webhook-secret")["secret"].startswith("whsec_")
    tested = r.json("test-webhook")
    assert wait_until(lambda: any(q for q in receiver.requests), 20)
    deliveries = r.json("deliveries")["deliveries"]
    assert any(d["event_id"] == tested["event_id"] for d in deliveries)
    env["EVENT_ID"] = streamed[0]
    assert r.json("resend-event")
    assert r.json("certificate")["certificate"]
    session = r.json("create-checkout")
    assert session["status"] == "open" and session["url"]
    looked = r.json("lookup-checkout")
    assert looked["outcome"] == "succeeded" and looked["checkout_session"] == session, looked
    env["SESSION_ID"] = session["id"]
    assert r.json("get-checkout")["id"] == session["id"]
    assert r.json("cancel-checkout")["status"] != "open"
    assert set(r.json("key-scopes")["scopes"]) == set(SCOPES)
    key = r.json("create-key")
    assert key["key"].startswith("sk_live_") and key["scopes"] == ["checkout:write", "orders:read"]
    env["KEY_ID"], env["OLD_KEY"] = key["id"], key["key"]
    looked = r.json("lookup-key")  # made: named, its secret not kept
    assert looked["error"]["code"] == "api_key_already_created" and key["id"] in str(looked)
    assert key["key"] not in str(looked)
    assert key["id"] in [k["id"] for k in r.json("list-keys")["api_keys"]]
    rotated = r.json("rotate-key")
    assert rotated["previous"]["id"] == key["id"]
    looked = r.json("lookup-rotation")
    assert looked["outcome"] == "refused" and rotated["id"] in str(looked), looked
    assert r.json("revoke-key")["state"] == "revoked"
    r.refused("refused-scope", "insufficient_scope")
    r.refused("refused-key-in-url", "api_key_in_url")
    r.refused("refused-revoked", "invalid_api_key")

    # every example ran, and every merchant route has one
    names = [n for n, _ in examples()]
    assert sorted(r.ran) == sorted(n for n in names if n != "setup"), set(names) ^ set(r.ran)
    spec = world.http.get("/openapi.json").json()
    served = {
        (method.upper(), re.sub(r"\{[a-z_]+\}", "{x}", path))
        for path, ops in spec["paths"].items()
        if path.startswith(("/v1/merchant", "/v1/checkout"))
        for method in ops
    }
    documented = set().union(*(routes_of(text) for _, text in examples()))
    assert served <= documented, sorted(served - documented)
    assert len(names) - 1 >= len(served) + 3
    # nothing the examples left behind holds a key (the signature base is public data)
    assert all(sk not in p.read_text() for p in tmp_path.iterdir() if p.suffix == ".txt")
    assert os.path.exists(tmp_path / "signature-base.txt")
