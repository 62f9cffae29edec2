"""Load-test material made in-process (outside any timed window): merchants, funded customers
with enrolled carriers, precreated orders and one carrier-signed authorization per order.
Used by bench/institution_load.py and the HA cluster's failover workload."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safescan.code import Authorization, LineItem, SigningKey, VerifyKey, decode_text
from safescan.institution.service import Institution
from tests.institution.harness import attest


@dataclass(frozen=True)
class Payable:
    """One order ready to pay: its code and the authorization its customer's carrier signed."""

    order_id: str
    code: str
    authorization: Authorization
    amount: int
    customer_id: str
    carrier_key: VerifyKey


def make_payables(
    inst: Institution, clients: int, per_client: int, merchants: int, name: str = "Bench"
) -> list[list[Payable]]:
    """``clients`` lists of ``per_client`` payables; each list is one customer with one carrier
    (counters 1, 2, ...), orders spread over ``merchants`` merchants in batches of 2,000."""
    mids = []
    for i in range(merchants):
        m = inst.merchants.create(
            name=f"{name} Shop {i}",
            city="Berlin",
            country="DE",
            mcc=5814,
            settlement_account="DE89370400440532013000",
            api_public_key=None,
            webhook_url=None,
        )
        mids.append(m.merchant.id)
    carriers = []
    for _ in range(clients):
        cid = inst.customers.create(f"{name} customer").id
        inst.customers.fund(cid, "EUR", 10**11)
        token = inst.customers.issue_enrollment_token(cid).token
        key = SigningKey.generate()
        t = X25519PrivateKey.generate().public_key().public_bytes_raw()
        serial = inst.carriers.enroll(
            token, key.public_key.raw, t, attest(inst, token, key.public_key.raw, t)
        ).carrier_serial
        carriers.append((serial, key, cid))
    work: list[list[Payable]] = [[] for _ in range(clients)]
    total, made = clients * per_client, 0
    while made < total:
        batch = min(2000, total - made)
        mid = mids[(made // 2000) % len(mids)]
        orders = inst.orders.precreate(
            mid, [([LineItem("Coffee", 1, 100 + (i % 500))], "EUR") for i in range(batch)], 3600
        )
        for o in orders:
            k = made % clients
            serial, key, cid = carriers[k]
            auth = Authorization(
                code_digest=hashlib.sha256(decode_text(o.code)).digest(),
                merchant_id=mid,
                order_id=o.order_id,
                amount=o.total,
                currency=o.currency,
                counter=len(work[k]) + 1,
                carrier_serial=serial,
                created_at=int(time.time()),
            ).signed(key)
            work[k].append(Payable(o.order_id, o.code, auth, o.total, cid, key.public_key))
            made += 1
    return work
