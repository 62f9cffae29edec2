"""A day's settlement for the back office: its entries (payments in, refunds out), as CSV and as
an ISO 20022 ``camt.053.001.08`` bank-to-customer statement.

Payments come from the journal after it was reconciled with the institution (every terminal's
orders), refunds from the institution's list of the day's refunds (``GET /v1/merchant/refunds``;
this POS's own if it cannot be read, plus then one entry for what the institution's settlement
report counts beyond them). The institution's own report
(``GET /v1/merchant/settlement``) stays the reference: :func:`day_entries` returns what differs.

CSV text cells that a spreadsheet would run as a formula (``= + - @``, tab, carriage return)
get a leading apostrophe (CSV injection).
"""

from __future__ import annotations

import csv
import io
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import SafescanError

CAMT_NS = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"
_IBAN = re.compile(r"[A-Z]{2}[0-9]{2}[a-zA-Z0-9]{1,30}")
CSV_COLUMNS = (
    "booked_at",
    "type",
    "order_id",
    "payment_id",
    "refund_id",
    "amount",
    "currency",
    "reference",
    "items",
    "reason",
)


class ExportError(SafescanError):
    """A settlement export cannot be made (for example, a bad date)."""

    code = "export_error"
    status = 400


@dataclass(frozen=True)
class Entry:
    """One booking of the day: a payment (credit) or a refund (debit), amount in minor units."""

    booked_at: int
    kind: str  # "payment" or "refund"
    order_id: str
    payment_id: str
    refund_id: str
    amount: int
    currency: int
    reference: str
    items: str
    reason: str

    def to_row(self) -> dict[str, Any]:
        """The CSV row (amounts as decimal text in the currency's units)."""
        cur = lookup_currency(self.currency)
        return {
            "booked_at": datetime.fromtimestamp(self.booked_at, UTC).isoformat(),
            "type": self.kind,
            "order_id": self.order_id,
            "payment_id": self.payment_id,
            "refund_id": self.refund_id,
            "amount": _decimal(self.amount, cur.minor_units),
            "currency": cur.alpha,
            "reference": self.reference,
            "items": self.items,
            "reason": self.reason,
        }


def day_bounds(day: str) -> tuple[int, int]:
    """``[start, end)`` of a UTC day given as ``YYYY-MM-DD``; :class:`ExportError` otherwise."""
    try:
        d = date.fromisoformat(day) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", day) else None
    except ValueError:
        d = None
    if d is None:
        raise ExportError(f"not a day (YYYY-MM-DD): {day[:20]!r}")
    start = int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())
    return start, start + 86400


def today() -> str:
    """The current UTC day."""
    return datetime.now(UTC).date().isoformat()


def _decimal(minor: int, units: int) -> str:
    return str((Decimal(minor) / (Decimal(10) ** units)).quantize(Decimal(1).scaleb(-units)))


def _items_text(items: list[Any]) -> str:
    return "; ".join(f"{i[1]} x {i[0]}" for i in items if isinstance(i, list) and len(i) == 3)


def day_entries(
    paid: list[dict[str, Any]], refunds: list[dict[str, Any]], elsewhere: dict[int, int]
) -> list[Entry]:
    """The day's entries: ``paid`` orders (journal rows), ``refunds`` (the institution's list),
    and per currency an amount refunded that the list lacks (``elsewhere``), oldest first."""
    entries = [
        Entry(
            int(o["paid_at"]),
            "payment",
            str(o["order_id"]),
            str(o.get("payment_id") or ""),
            "",
            int(o.get("paid_amount") or o["total"]),
            int(o["currency"]),
            str(o.get("reference") or ""),
            _items_text(o.get("items") or []),
            "",
        )
        for o in paid
    ]
    entries += [
        Entry(
            int(r["created_at"]),
            "refund",
            str(r["order_id"]),
            "",
            str(r["refund_id"]),
            int(r["amount"]),
            int(r["currency"]),
            "",
            "",
            str(r.get("reason") or ""),
        )
        for r in refunds
    ]
    last = max((e.booked_at for e in entries), default=int(time.time()))
    entries += [
        Entry(last, "refund", "", "", "", amount, cur, "", "", "refunds not itemised")
        for cur, amount in sorted(elsewhere.items())
        if amount > 0
    ]
    return sorted(entries, key=lambda e: (e.booked_at, e.kind, e.order_id))


def cell(value: object) -> object:
    """A CSV cell a spreadsheet shows as text, never runs (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r", "\n"):
        return "'" + value
    return value


def to_csv(entries: list[Entry]) -> str:
    """The entries as CSV with a header line."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for e in entries:
        writer.writerow({k: cell(v) for k, v in e.to_row().items()})
    return buf.getvalue()


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, f"{{{CAMT_NS}}}{tag}", attrs)
    if text is not None:
        el.text = text
    return el


def _text(value: str, limit: int) -> str:
    """Text for a ``MaxNText`` field: printable, at most ``limit`` characters, never empty."""
    clean = "".join(ch if ch.isprintable() else " " for ch in value).strip()
    return (clean or "-")[:limit]


def to_camt053(
    entries: list[Entry],
    *,
    day: str,
    merchant_id: str,
    merchant_name: str,
    account: str,
    currency: int,
    created: datetime | None = None,
) -> bytes:
    """The day's entries in ``currency`` as a camt.053.001.08 statement (UTF-8 XML).

    Opening balance (``OPBD``) 0 at the start of the day, closing balance (``CLBD``) the day's
    net: the statement is of the merchant's settlement for that day, not of a bank account."""
    start, end = day_bounds(day)
    cur = lookup_currency(currency)
    units = cur.minor_units
    mine = [e for e in entries if e.currency == currency]
    now = (created or datetime.now(UTC)).replace(microsecond=0)
    ET.register_namespace("", CAMT_NS)
    doc = ET.Element(f"{{{CAMT_NS}}}Document")
    stmt_root = _sub(doc, "BkToCstmrStmt")
    hdr = _sub(stmt_root, "GrpHdr")
    msg_id = _text(f"SAFESCAN-{merchant_id}-{day.replace('-', '')}-{cur.alpha}", 35)
    _sub(hdr, "MsgId", msg_id)
    _sub(hdr, "CreDtTm", now.isoformat())
    stmt = _sub(stmt_root, "Stmt")
    _sub(stmt, "Id", msg_id)
    _sub(stmt, "CreDtTm", now.isoformat())
    period = _sub(stmt, "FrToDt")
    _sub(period, "FrDtTm", datetime.fromtimestamp(start, UTC).isoformat())
    _sub(period, "ToDtTm", (datetime.fromtimestamp(end, UTC) - timedelta(seconds=1)).isoformat())
    acct = _sub(stmt, "Acct")
    acct_id = _sub(acct, "Id")
    if _IBAN.fullmatch(account or ""):
        _sub(acct_id, "IBAN", account)
    else:
        _sub(_sub(acct_id, "Othr"), "Id", _text(account or merchant_id, 34))
    _sub(acct, "Ccy", cur.alpha)
    _sub(acct, "Nm", _text(merchant_name or merchant_id, 70))
    credits = sum(e.amount for e in mine if e.kind == "payment")
    debits = sum(e.amount for e in mine if e.kind == "refund")
    net = credits - debits
    for code, amount, when in (("OPBD", 0, start), ("CLBD", net, end - 1)):
        bal = _sub(stmt, "Bal")
        _sub(_sub(_sub(bal, "Tp"), "CdOrPrtry"), "Cd", code)
        _sub(bal, "Amt", _decimal(abs(amount), units), Ccy=cur.alpha)
        _sub(bal, "CdtDbtInd", "DBIT" if amount < 0 else "CRDT")
        _sub(_sub(bal, "Dt"), "Dt", datetime.fromtimestamp(when, UTC).date().isoformat())
    summary = _sub(stmt, "TxsSummry")
    total = _sub(summary, "TtlNtries")
    _sub(total, "NbOfNtries", str(len(mine)))
    _sub(total, "Sum", _decimal(credits + debits, units))
    net_el = _sub(total, "TtlNetNtry")
    _sub(net_el, "Amt", _decimal(abs(net), units))
    _sub(net_el, "CdtDbtInd", "DBIT" if net < 0 else "CRDT")
    for kind, tag in (("payment", "TtlCdtNtries"), ("refund", "TtlDbtNtries")):
        part = _sub(summary, tag)
        _sub(part, "NbOfNtries", str(sum(1 for e in mine if e.kind == kind)))
        _sub(part, "Sum", _decimal(sum(e.amount for e in mine if e.kind == kind), units))
    for e in mine:
        _entry(stmt, e, cur.alpha, units)
    _sub(stmt, "AddtlStmtInf", "safescan settlement of one UTC day; opening balance 0")
    ET.indent(doc)
    return bytes(ET.tostring(doc, encoding="utf-8", xml_declaration=True))


def _entry(stmt: ET.Element, e: Entry, alpha: str, units: int) -> None:
    ntry = _sub(stmt, "Ntry")
    ref = e.payment_id or e.refund_id or e.order_id
    if ref:
        _sub(ntry, "NtryRef", _text(ref, 35))
    _sub(ntry, "Amt", _decimal(e.amount, units), Ccy=alpha)
    _sub(ntry, "CdtDbtInd", "CRDT" if e.kind == "payment" else "DBIT")
    _sub(_sub(ntry, "Sts"), "Cd", "BOOK")
    _sub(_sub(ntry, "BookgDt"), "DtTm", datetime.fromtimestamp(e.booked_at, UTC).isoformat())
    _sub(_sub(ntry, "ValDt"), "Dt", datetime.fromtimestamp(e.booked_at, UTC).date().isoformat())
    if ref:
        _sub(ntry, "AcctSvcrRef", _text(ref, 35))
    # ISO bank transaction codes: PMNT / MCRD (merchant card transactions) / POSD or RIMB-like
    # refunds; the proprietary code says which safescan booking it is
    code = _sub(ntry, "BkTxCd")
    domain = _sub(code, "Domn")
    _sub(domain, "Cd", "PMNT")
    family = _sub(domain, "Fmly")
    _sub(family, "Cd", "MCRD")
    _sub(family, "SubFmlyCd", "POSD" if e.kind == "payment" else "RIMB")
    prtry = _sub(code, "Prtry")
    _sub(prtry, "Cd", "SAFESCAN-PAYMENT" if e.kind == "payment" else "SAFESCAN-REFUND")
    _sub(prtry, "Issr", "safescan")
    tx = _sub(_sub(ntry, "NtryDtls"), "TxDtls")
    refs = _sub(tx, "Refs")
    if e.order_id:
        _sub(refs, "EndToEndId", _text(e.order_id, 35))
    if e.payment_id or e.refund_id:
        _sub(refs, "TxId", _text(e.payment_id or e.refund_id, 35))
    _sub(tx, "Amt", _decimal(e.amount, units), Ccy=alpha)
    _sub(tx, "CdtDbtInd", "CRDT" if e.kind == "payment" else "DBIT")
    info = " / ".join(x for x in (e.reference, e.items, e.reason) if x)
    if info:
        _sub(_sub(tx, "RmtInf"), "Ustrd", _text(info, 140))
