"""Helpers of the fault suite: running the audit, reading the ledger as clients see it."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.institution.harness import MerchantClient, World, env


def audit(db_url: str) -> dict[str, Any]:
    """``safescan institution audit --json``; the parsed report (``ok`` and ``problems``)."""
    out = subprocess.run(
        [sys.executable, "-m", "safescan.institution", "audit", "--db", db_url, "--json"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
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
