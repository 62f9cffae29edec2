"""Settlement reports: per merchant, per day (UTC), per currency: payments, refunds, net.

Computed from the ledger's immutable transfers (``payment`` transfers credit the merchant,
``refund`` transfers debit it), so the report always agrees with the ledger.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import aliased

from safescan.api.errors import InvalidRequest
from safescan.code.currency import currency as lookup_currency
from safescan.institution.ledger import MERCHANT
from safescan.institution.models import Account, MerchantRow, Transfer

COLUMNS = [
    "date",
    "merchant_id",
    "merchant_name",
    "settlement_account",
    "currency",
    "payments",
    "gross",
    "refunds",
    "refunded",
    "net",
]


def day_bounds(day: str) -> tuple[int, int]:
    """Unix seconds [start, end) of a UTC day given as YYYY-MM-DD."""
    try:
        d = dt.date.fromisoformat(day)
    except (TypeError, ValueError):
        raise InvalidRequest("date must be YYYY-MM-DD", param="date") from None
    start = int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp())
    return start, start + 86400


def report(conn: Connection, day: str, merchant_id: str | None = None) -> list[dict[str, Any]]:
    """The settlement rows for ``day`` (one per merchant and currency with activity)."""
    start, end = day_bounds(day)
    acct = aliased(Account)
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for kind, side in (
        ("payment", Transfer.credit_account_id),
        ("refund", Transfer.debit_account_id),
    ):
        q = (
            select(acct.owner_id, Transfer.currency, func.count(), func.sum(Transfer.amount))
            .join(acct, acct.id == side)
            .where(
                Transfer.kind == kind,
                acct.kind == MERCHANT,
                Transfer.created_at >= start,
                Transfer.created_at < end,
            )
            .group_by(acct.owner_id, Transfer.currency)
        )
        if merchant_id is not None:
            q = q.where(acct.owner_id == merchant_id)
        for owner, cur, count, total in conn.execute(q):
            row = rows.setdefault(
                (owner, cur),
                {"payments": 0, "gross": 0, "refunds": 0, "refunded": 0},
            )
            if kind == "payment":
                row["payments"], row["gross"] = int(count), int(total)
            else:
                row["refunds"], row["refunded"] = int(count), int(total)
    names = {
        r.id: r
        for r in conn.execute(
            select(MerchantRow.id, MerchantRow.name, MerchantRow.settlement_account).where(
                MerchantRow.id.in_({k[0] for k in rows})
            )
        )
    }
    out = []
    for (owner, cur), r in sorted(rows.items()):
        m = names.get(owner)
        out.append(
            {
                "date": day,
                "merchant_id": owner,
                "merchant_name": m.name if m else "",
                "settlement_account": m.settlement_account if m else "",
                "currency": lookup_currency(cur).alpha,
                **r,
                "net": r["gross"] - r["refunded"],
            }
        )
    return out


def _cell(value: Any) -> Any:
    """Neutralise spreadsheet formulas in text cells (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The report as CSV with a header line."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _cell(r[k]) for k in COLUMNS})
    return buf.getvalue()
