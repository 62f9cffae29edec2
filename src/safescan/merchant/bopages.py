# ruff: noqa: E501  (HTML: long lines read better here)
"""HTML of the back office (staff pages): the order list with its filters, an order's detail
with partial refunds (amount, reason, then a confirmation page), a day's settlement with its
charts and exports, and the printable shop-front codes. Forms work without script; every value
is escaped with :func:`safescan.code.display.html_text`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from safescan.code.currency import currency as lookup_currency
from safescan.code.display import html_text

STATES = ("CREATED", "PAID", "PARTIALLY_REFUNDED", "REFUNDED", "CLOSED", "EXPIRED")
LABELS = {
    "CREATED": "Waiting",
    "PAID": "Paid",
    "PARTIALLY_REFUNDED": "Partially refunded",
    "REFUNDED": "Refunded",
    "CLOSED": "Cancelled",
    "EXPIRED": "Expired",
}


def _e(value: object) -> str:
    return html_text(value)


def when(ts: object) -> str:
    """A Unix time as ``2026-11-30 10:31 UTC`` (empty for none)."""
    if not isinstance(ts, int) or ts <= 0:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def money(amount: object, currency: object) -> str:
    """``12.50 EUR``."""
    if not isinstance(amount, int) or not isinstance(currency, int) or not currency:
        return ""
    return lookup_currency(currency).format(amount)


def _items(items: list[Any]) -> str:
    return ", ".join(f"{i[1]} × {i[0]}" for i in items if isinstance(i, list) and len(i) == 3)


def _field(label: str, name: str, value: str, *, kind: str = "text", extra: str = "") -> str:
    return (
        f'<label class="field">{_e(label)} <input type="{kind}" name="{name}" id="f-{name}"'
        f' value="{_e(value)}"{extra}></label>'
    )


def orders_body(
    rows: list[dict[str, Any]],
    form: dict[str, str],
    *,
    error: str = "",
    notice: str = "",
    next_after: str | None = None,
) -> str:
    """The order list with its search form (state, dates, amounts, text), a page at a time:
    ``next_after``, the last order id when older orders follow (the "Older orders" link)."""
    search = {k: v for k, v in form.items() if v and k != "starting_after"}
    pages = ""
    if form.get("starting_after"):
        pages += f'<a href="/orders?{_e(urlencode(search))}" id="first-page">Newest orders</a> '
    if next_after is not None:
        older = urlencode(search | {"starting_after": next_after})
        pages += f'<a href="/orders?{_e(older)}" id="next-page" rel="next">Older orders</a>'
    if pages:
        pages = f'<p class="pages">{pages}</p>'

    options = "".join(
        f'<option value="{s}"{" selected" if form.get("state") == s else ""}>{_e(LABELS[s])}</option>'
        for s in STATES
    )
    body = "".join(
        f'<tr><td><a href="/orders/{quote(str(r["order_id"]))}">{_e(r["order_id"])}</a></td>'
        f"<td>{_e(when(r['created_at']))}</td>"
        f'<td><span class="pill s-{_e(str(r["state"]).lower())}">{_e(LABELS.get(str(r["state"]), r["state"]))}</span></td>'
        f"<td class=num>{_e(money(r['total'], r['currency']))}</td>"
        f"<td class=num>{_e(money(r['refunded'], r['currency']) if r['refunded'] else '')}</td>"
        f"<td>{_e(_items(r['items']))}</td>"
        f"<td>{_e(r.get('reference') or '')}{' · other terminal' if r.get('origin') == 'institution' else ''}</td></tr>"
        for r in rows
    )
    return f"""
<section class="card wide">
  <h1>Orders</h1>
  <form method="get" action="/orders" class="filters" role="search" aria-label="Search orders">
    <label class="field">State <select name="state" id="f-state"><option value="">Any</option>{options}</select></label>
    {_field("From (day)", "from", form.get("from", ""), kind="date")}
    {_field("To (day)", "to", form.get("to", ""), kind="date")}
    {_field("Amount at least", "min", form.get("min", ""), extra=' inputmode="decimal"')}
    {_field("Amount at most", "max", form.get("max", ""), extra=' inputmode="decimal"')}
    {_field("Text (order, reference, item, payment)", "q", form.get("q", ""), kind="search", extra=' maxlength="64"')}
    <button type="submit" class="secondary" id="search">Search</button>
  </form>
  <p class="error" id="filter-error" role="alert">{_e(error)}</p>
  <p class="muted small" id="notice">{_e(notice)}</p>
  <p id="count">{len(rows)} order{"" if len(rows) == 1 else "s"}</p>
  <div class="wrap-table" tabindex="0" role="region" aria-label="Orders found">
  <table class="list" id="orders">
    <thead><tr><th scope="col">Order</th><th scope="col">Created</th><th scope="col">State</th><th scope="col" class=num>Total</th><th scope="col" class=num>Refunded</th><th scope="col">Items</th><th scope="col">Reference</th></tr></thead>
    <tbody>{body}</tbody>
  </table>
  </div>
  {pages}
</section>
"""


def order_body(
    row: dict[str, Any],
    refunds: list[dict[str, Any]],
    *,
    csrf: str,
    error: str = "",
    done: str = "",
) -> str:
    """One order: lines, payment, refunds made, and the refund form when money is left."""
    cur = int(row["currency"])
    minor = lookup_currency(cur).minor_units if cur else 2
    paid = int(row.get("paid_amount") or (row["total"] if row.get("payment_id") else 0))
    left = max(0, paid - int(row.get("refunded") or 0))
    lines = "".join(
        f"<tr><td>{_e(i[0])}</td><td class=num>{_e(i[1])}</td><td class=num>{_e(money(i[2], cur))}</td>"
        f"<td class=num>{_e(money(i[1] * i[2], cur))}</td></tr>"
        for i in row["items"]
        if isinstance(i, list) and len(i) == 3
    )
    facts = [
        ("State", LABELS.get(str(row["state"]), str(row["state"]))),
        ("Created", when(row["created_at"])),
        ("Total", money(row["total"], cur)),
        ("Paid", money(paid, cur) if paid else ""),
        ("Paid at", when(row.get("paid_at"))),
        ("Payment", row.get("payment_id") or ""),
        ("Payer (pseudonym)", row.get("payer") or ""),
        ("Refunded", money(row.get("refunded") or 0, cur) if row.get("refunded") else ""),
        ("Reference", row.get("reference") or ""),
        ("Made at", "another terminal" if row.get("origin") == "institution" else "this terminal"),
    ]
    receipt = row.get("receipt")
    if isinstance(receipt, dict):
        facts.append(
            (
                "Receipt",
                f"verified, signed by the institution (key {receipt.get('issuer_kid', '')})",
            )
        )
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts if v)
    made = "".join(
        f"<tr><td>{_e(when(r['created_at']))}</td><td class=num>{_e(money(r['amount'], r['currency']))}</td>"
        f"<td>{_e(r.get('reason') or '')}</td><td>{_e(r.get('staff') or '')}</td></tr>"
        for r in refunds
    )
    refund_form = ""
    if row["state"] in ("PAID", "PARTIALLY_REFUNDED") and left > 0:
        refund_form = f"""
  <form method="post" action="/orders/{quote(str(row["order_id"]))}/refund" class="refund-box" id="refund-form">
    <h2>Refund</h2>
    <input type="hidden" name="csrf" value="{_e(csrf)}">
    <p>At most <b id="refund-left">{_e(money(left, cur))}</b> can be refunded.</p>
    {_field(f"Amount ({lookup_currency(cur).alpha})", "amount", f"{left / 10**minor:.{minor}f}", extra=' inputmode="decimal" required')}
    {_field("Reason (optional)", "reason", "", extra=' maxlength="200"')}
    <button type="submit" class="secondary" id="refund-review">Review refund</button>
  </form>"""
    return f"""
<section class="card wide" id="order" data-state="{_e(row["state"])}">
  <p><a href="/orders">← All orders</a></p>
  <h1>Order <code>{_e(row["order_id"])}</code></h1>
  <p class="ok" id="done" role="status">{_e(done)}</p>
  <p class="error" id="refund-error" role="alert">{_e(error)}</p>
  <dl class="facts">{dl}</dl>
  <div class="wrap-table" tabindex="0" role="region" aria-label="Items">
  <table class="summary"><caption>Items</caption>
    <thead><tr><th scope="col">Item</th><th scope="col" class=num>Qty</th><th scope="col" class=num>Unit</th><th scope="col" class=num>Amount</th></tr></thead>
    <tbody>{lines}</tbody></table>
  </div>
  <div class="wrap-table" tabindex="0" role="region" aria-label="Refunds">
  <table class="summary" id="refunds"><caption>Refunds</caption>
    <thead><tr><th scope="col">When</th><th scope="col" class=num>Amount</th><th scope="col">Reason</th><th scope="col">By</th></tr></thead>
    <tbody>{made or '<tr><td colspan="4">None</td></tr>'}</tbody></table>
  </div>
  {refund_form}
</section>
"""


def refund_confirm_body(offer: dict[str, Any], csrf: str) -> str:
    """The confirmation step of a refund: what will happen, then confirm or go back."""
    oid = str(offer["order_id"])
    reason = f" Reason: {offer['reason']}." if offer.get("reason") else ""
    return f"""
<section class="card narrow" id="refund-confirm">
  <h1>Confirm the refund</h1>
  <p id="refund-question">Refund <b>{_e(offer["amount_display"])}</b> of the {_e(offer["paid_display"])} paid for order <code>{_e(oid)}</code>?{_e(reason)}</p>
  <p class="muted small">This cannot be undone. The confirmation lasts two minutes.</p>
  <form method="post" action="/orders/{quote(oid)}/refund/confirm">
    <input type="hidden" name="csrf" value="{_e(csrf)}">
    <input type="hidden" name="confirmation" value="{_e(offer["confirmation"])}">
    <button type="submit" class="danger" id="refund-yes">Confirm refund</button>
    <a class="button secondary" href="/orders/{quote(oid)}" id="refund-no">Cancel</a>
  </form>
</section>
"""


def settlement_body(
    day: str,
    institution: list[dict[str, Any]],
    charts: str,
    *,
    local: dict[str, tuple[int, int]],
    error: str = "",
) -> str:
    """A day's settlement: the institution's figures, this journal's cross-check, charts, exports."""
    rows = "".join(
        f"<tr><td>{_e(r.get('currency'))}</td><td class=num>{_e(r.get('payments'))}</td>"
        f"<td class=num>{_e(_fmt(r.get('gross'), r.get('currency')))}</td><td class=num>{_e(r.get('refunds'))}</td>"
        f"<td class=num>{_e(_fmt(r.get('refunded'), r.get('currency')))}</td><td class=num><b>{_e(_fmt(r.get('net'), r.get('currency')))}</b></td></tr>"
        for r in institution
    )
    checks = []
    for r in institution:
        alpha = str(r.get("currency"))
        count, gross = local.get(alpha, (0, 0))
        if (count, gross) != (r.get("payments"), r.get("gross")):
            checks.append(
                f"{alpha}: the journal lists {count} payments for {_fmt(gross, alpha)}; the institution counts {r.get('payments')} for {_fmt(r.get('gross'), alpha)}."
            )
    check = (
        " ".join(checks)
        if checks
        else ("The journal's payments match the institution's." if institution else "")
    )
    q = quote(day)
    return f"""
<section class="card wide">
  <h1>Settlement of {_e(day)} (UTC)</h1>
  <form method="get" action="/settlement" class="filters">
    {_field("Day", "date", day, kind="date")}
    <button type="submit" class="secondary" id="show-day">Show</button>
  </form>
  <p class="error" role="alert" id="settlement-error">{_e(error)}</p>
  <div class="wrap-table" tabindex="0" role="region" aria-label="Settlement report">
  <table class="summary" id="settlement"><caption>The institution's settlement report</caption>
    <thead><tr><th scope="col">Currency</th><th scope="col" class=num>Payments</th><th scope="col" class=num>Gross</th><th scope="col" class=num>Refunds</th><th scope="col" class=num>Refunded</th><th scope="col" class=num>Net</th></tr></thead>
    <tbody>{rows or '<tr><td colspan="6">No payment or refund that day</td></tr>'}</tbody></table>
  </div>
  <p class="muted small" id="cross-check">{_e(check)}</p>
  <p class="downloads">Export:
    <a class="download" id="export-csv" href="/settlement.csv?date={q}" download>CSV</a>
    <a class="download" id="export-camt" href="/settlement.camt053.xml?date={q}" download>ISO 20022 camt.053</a></p>
  <div class="charts">{charts}</div>
</section>
"""


def _fmt(amount: object, alpha: object) -> str:
    if not isinstance(amount, int) or not isinstance(alpha, str):
        return ""
    return lookup_currency(alpha).format(amount)


def codes_body(codes: list[dict[str, Any]], *, csrf: str, shop: str, error: str = "") -> str:
    """The printable shop-front codes, and a form to make one."""
    items = "".join(
        f"<li><b>{_e(c['label'] or shop)}</b> · valid until {_e(when(c['expires_at']))} · "
        f'<a href="/codes/{quote(str(c["code_id"]))}.png" download>PNG</a> '
        f'<a href="/codes/{quote(str(c["code_id"]))}.pdf" download>PDF</a> '
        f'<a href="/codes/{quote(str(c["code_id"]))}.png">show</a></li>'
        for c in codes
    )
    return f"""
<section class="card wide">
  <h1>Shop-front codes</h1>
  <p>A printed code for the counter, a table or the door: customers scan it with their safescan
     wallet and enter the amount themselves, with a tip if they like. It shows <b>{_e(shop)}</b>.</p>
  <form method="post" action="/codes" class="filters" id="code-form">
    <input type="hidden" name="csrf" value="{_e(csrf)}">
    {_field("Label (optional, for example Table 4)", "label", "", extra=' maxlength="40"')}
    {_field("Valid for (days)", "days", "365", kind="number", extra=' min="1" max="3650" required')}
    <button type="submit" class="primary" id="make-code">Make a printable code</button>
  </form>
  <p class="error" role="alert" id="code-error">{_e(error)}</p>
  <ul class="codes" id="codes">{items or "<li>None yet</li>"}</ul>
</section>
"""
