"""Helpers of the fault suite: an institution served on a given database, running the audit,
reading the ledger as clients see it, a wallet's pending payment."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safescan.code import SigningKey, decode_text
from safescan.wallet.pending import idempotency_key
from safescan.wallet.store import PendingPayment
from tests.institution.harness import (
    Carrier,
    MerchantClient,
    ServerProcess,
    World,
    b64,
    init_db,
    institution_cli,
)

if TYPE_CHECKING:
    from safescan.merchant.config import PosConfig


@contextlib.contextmanager
def served_on(db_url: str, keys: Path, extra: Sequence[str] = ()) -> Iterator[World]:
    """``db_url`` initialised (keys in ``keys``) and an institution served on it with the
    ``extra`` options; its :class:`World` (``w.server`` is the process), closed and the
    server stopped when the block ends, however it ends."""
    token = init_db(db_url, keys)
    server = ServerProcess(db_url, keys, extra=list(extra)).start()
    w = World(server, token)
    try:
        yield w
    finally:
        w.close()
        server.stop()


def audit(db_url: str) -> dict[str, Any]:
    """``safescan institution audit --json``; the parsed report (``ok`` and ``problems``)."""
    out = institution_cli("audit", "--db", db_url, "--json")
    try:
        doc = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"ok": False, "problems": [out.stderr[-500:]], "rc": out.returncode}
    doc["rc"] = out.returncode
    return doc


def customer_balance(w: World, customer: str, currency: str = "EUR") -> int:
    """A customer's balance in ``currency`` (0 when it has no account there)."""
    return w.admin_api.customers.balance(customer, currency)


def order(m: MerchantClient, order_id: str) -> dict[str, Any]:
    """An order as its merchant sees it."""
    r = m.request("GET", f"/v1/merchant/orders/{order_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def pending_payment(carrier: Carrier, o: dict[str, Any], merchant_name: str) -> PendingPayment:
    """What a wallet records before it sends a payment of the order ``o`` (as its merchant
    made it), with a new authorization by ``carrier``."""
    auth = carrier.authorize(o["code"]).to_bytes()
    return PendingPayment(
        idempotency_key=idempotency_key(auth),
        created_at=int(time.time()),
        code_text=o["code"],
        authorization=auth,
        merchant_id=o["merchant_id"],
        merchant_name=merchant_name,
        merchant_city="Berlin",
        order_id=o["order_id"],
        amount=o["total"],
        currency=o["currency"],
        items=[],
        code_digest=hashlib.sha256(decode_text(o["code"])).digest(),
    )


def pos_merchant(w: World, name: str, institution_url: str) -> tuple[MerchantClient, PosConfig]:
    """A new merchant ``name`` with an API key of its own, and the configuration of a POS
    terminal of it that talks to ``institution_url`` (the server, or a fault proxy before it)
    and trusts the institution's root keys."""
    from safescan.client.trust import trust_from_json
    from safescan.merchant.config import PosConfig

    seed = os.urandom(32)
    key = SigningKey.from_seed(seed)
    r = w.admin(
        "POST",
        "/v1/admin/merchants",
        {
            "name": name,
            "city": "Berlin",
            "country": "DE",
            "mcc": 5814,
            "settlement_account": "DE89370400440532013000",
            "api_public_key": b64(key.public_key.raw),
        },
    )
    m = MerchantClient(w.http, r.json()["id"], key)
    keys = w.http.get("/v1/keys").json()["root_keys"]
    cfg = PosConfig(
        institution_url=institution_url,
        merchant_id=m.merchant_id,
        api_seed=seed,
        trust=trust_from_json(
            {str(k["kid"]): base64.b64decode(k["public_key"]).hex() for k in keys}
        ),
    )
    return m, cfg
