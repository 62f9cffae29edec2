"""Settlement reports: per merchant, per day (UTC), per currency: payments, refunds, net.

Computed from the ledger's immutable transfers (``payment`` transfers credit the merchant,
``refund`` transfers debit it), so the report always agrees with the ledger. :class:`Settlement`
answers the API and the command line; each row is a frozen
:class:`~safescan.api.schema.SettlementRow` (the client reads the same one).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import aliased

from safescan.api.errors import InvalidRequest
from safescan.api.schema import SETTLEMENT_COLUMNS
from safescan.api.schema import SettlementRow as SettlementRow
from safescan.code.currency import currency as lookup_currency
from safescan.institution.db import Database
from safescan.institution.ledger import MERCHANT
from safescan.institution.models import Account, MerchantRow, Transfer


def day_bounds(day: str) -> tuple[int, int]:
    """Unix seconds [start, end) of a UTC day given as YYYY-MM-DD."""
    try:
        d = dt.date.fromisoformat(day)
    except (TypeError, ValueError):
        raise InvalidRequest("date must be YYYY-MM-DD", param="date") from None
    start = int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp())
    return start, start + 86400


class Settlement:
    """Settlement reports over one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def report(self, day: str, merchant_id: str | None = None) -> list[SettlementRow]:
        """Every merchant's rows for ``day`` (YYYY-MM-DD, UTC), or only ``merchant_id``'s."""
        return self.db.read(lambda c: report(c, day, merchant_id))


def report(conn: Connection, day: str, merchant_id: str | None = None) -> list[SettlementRow]:
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
            SettlementRow(
                date=day,
                merchant_id=owner,
                merchant_name=m.name if m else "",
                settlement_account=m.settlement_account if m else "",
                currency=lookup_currency(cur).alpha,
                **r,
                net=r["gross"] - r["refunded"],
            )
        )
    return out


def _cell(value: Any) -> Any:
    """Neutralise spreadsheet formulas in text cells (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(rows: Sequence[SettlementRow]) -> str:
    """The report as CSV with a header line."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SETTLEMENT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _cell(v) for k, v in r.to_dict().items()})
    return buf.getvalue()
