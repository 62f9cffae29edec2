"""The back office's routes (staff only): ``/orders`` (search and filters), ``/orders/{id}``
(detail; partial refunds: amount and reason, then a confirmation page, then the refund),
``/settlement`` (a day: the institution's report, charts, CSV and camt.053 exports) and
``/codes`` (printable shop-front static codes, PNG and PDF).

Pages are GET (a session needed: else the sign-in page); every POST needs the session, its
CSRF token (form field ``csrf``) and this POS's Origin (:class:`~.webparts.Guard`). Lists come
from the journal after reconciling with the institution's order list, so every terminal of
the merchant lists the same orders; refunds are checked against the institution's order.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from safescan.code.currency import currency as lookup_currency
from safescan.code.display import html_text
from safescan.code.errors import CodeError, SafescanError
from safescan.code.text import clean_text
from safescan.merchant import bopages, charts, exports, posorders, printcodes
from safescan.merchant.journal import Filters
from safescan.merchant.webparts import SECURITY_HEADERS, PosState, _form, _status_for
from safescan.merchant.websec import PosRequestRefused, Session, WebRequestRefused

FRESH_SECONDS = 10.0  # the order list reads the institution's newest orders at most this often
PAGE = 100  # orders a page of the back office's list
_ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")  # checkout orders: cs-...
_AMOUNT = re.compile(r"\d{1,12}(?:[.,]\d{1,4})?")


@dataclass
class StaffKit:
    """What the back office needs of the web POS app."""

    page: Callable[..., HTMLResponse]
    session: Callable[[Request], tuple[str, Session]]
    changing: Callable[[Request, dict[str, str]], tuple[str, Session]]
    shop_name: dict[str, str] = field(default_factory=dict)


def parse_amount(text: str, minor_units: int, *, what: str) -> int:
    """``"3.50"`` with ``minor_units`` 2 -> 350; :class:`PosRequestRefused` if not an amount."""
    text = text.strip()
    if not _AMOUNT.fullmatch(text):
        raise PosRequestRefused(f"{what}: enter an amount such as 3.50")
    try:
        value = Decimal(text.replace(",", ".")) * (Decimal(10) ** minor_units)
    except InvalidOperation:
        raise PosRequestRefused(f"{what}: enter an amount such as 3.50") from None
    if value != value.to_integral_value():
        raise PosRequestRefused(f"{what}: at most {minor_units} decimals")
    return int(value)


def parse_filters(form: dict[str, str], minor_units: int) -> Filters:
    """The order list's query (every field optional) -> :class:`Filters`."""
    state = form.get("state") or None
    if state is not None and state not in bopages.STATES:
        raise PosRequestRefused("unknown state")
    since = exports.day_bounds(form["from"])[0] if form.get("from") else None
    until = exports.day_bounds(form["to"])[1] if form.get("to") else None
    low = parse_amount(form["min"], minor_units, what="at least") if form.get("min") else None
    high = parse_amount(form["max"], minor_units, what="at most") if form.get("max") else None
    text = form.get("q") or None
    if text is not None:
        try:
            text = clean_text(text, field="search text", max_chars=64)
        except CodeError as exc:
            raise PosRequestRefused(exc.message) from None
    after = form.get("starting_after") or None
    if after is not None and not _ORDER_ID.fullmatch(after):
        raise PosRequestRefused("starting_after: not an order id")
    return Filters(state, since, until, low, high, text, PAGE, after)


def _order_id(request: Request) -> str:
    oid = str(request.path_params["order_id"])
    if not _ORDER_ID.fullmatch(oid):
        raise PosRequestRefused("no such order")
    return oid


def routes(state: PosState, kit: StaffKit) -> list[Route]:
    """The back office's routes over the web POS's ``state``."""
    cur = lookup_currency(state.config.currency)

    async def fresh() -> str:
        """Read the institution's newest orders unless done lately; a notice if it failed."""
        if time.time() - state.reconciled_at < FRESH_SECONDS:
            return ""
        try:
            await posorders.reconcile(state, pages=1)
        except SafescanError as exc:
            return f"The institution could not be asked ({exc.message}): the journal's view."
        return ""

    def staff_page(
        handler: Callable[[Request, str, Session], Awaitable[Response]], *, post: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                if post:
                    form = await _form(request)
                    request.state.form = form
                    sid, session = kit.changing(request, form)
                else:
                    sid, session = kit.session(request)
            except WebRequestRefused as exc:
                if not post and exc.code == "not_signed_in":
                    return RedirectResponse("/login", status_code=303, headers=SECURITY_HEADERS)
                return kit.page(
                    f'<p class="error" role="alert">{html_text(exc.message)}</p>',
                    "Refused",
                    "/static/pos.js",
                    status=_status_for(exc),
                )
            return await handler(request, sid, session)

        return run

    # --- orders --------------------------------------------------------------------------------

    async def orders(request: Request, _sid: str, session: Session) -> Response:
        keys = ("state", "from", "to", "min", "max", "q", "starting_after")
        form = {k: request.query_params.get(k, "")[:80] for k in keys}
        error, status, more = "", 200, False
        rows: list[dict[str, Any]] = []
        notice = await fresh()
        try:
            filters = parse_filters(form, cur.minor_units)
            rows, more = await asyncio.to_thread(state.journal.page, filters)
        except SafescanError as exc:
            error, status = exc.message, 400
        next_after = str(rows[-1]["order_id"]) if more and rows else None
        body = bopages.orders_body(rows, form, error=error, notice=notice, next_after=next_after)
        return kit.page(body, "Orders", "/static/pos.js", session.csrf, "orders", status)

    async def load(oid: str) -> dict[str, Any]:
        row = await asyncio.to_thread(state.journal.get, oid)
        if row is None:  # another terminal's order not listed yet: ask the institution
            await posorders.apply(state, await asyncio.to_thread(state.api.orders.get, oid))
            row = await asyncio.to_thread(state.journal.get, oid)
        if row is None:
            raise PosRequestRefused("no such order")
        return row

    async def all_refunds(
        *, order_id: str | None = None, day: str | None = None
    ) -> list[dict[str, Any]]:
        """Every terminal's refunds from the institution, with who made them here; the
        journal's own (this terminal's) if the institution cannot be asked."""
        start, end = exports.day_bounds(day) if day else (0, 2**62)
        here = await asyncio.to_thread(state.journal.refunds, order_id, start=start, end=end)
        try:
            remote = await asyncio.to_thread(state.api.refund_list, day=day, order_id=order_id)
        except SafescanError:
            return here
        by_id = {r["refund_id"]: r for r in here}
        return [
            {**r.to_json(), "staff": by_id.get(r.refund_id, {}).get("staff") or "another terminal"}
            for r in remote
        ]

    async def detail_page(
        oid: str, session: Session, *, error: str = "", done: str = "", status: int = 200
    ) -> Response:
        try:
            row = await load(oid)
        except SafescanError as exc:
            return kit.page(
                f'<p class="error" role="alert">{html_text(exc.message)}</p>'
                '<p><a href="/orders">All orders</a></p>',
                "Order",
                "/static/pos.js",
                session.csrf,
                "orders",
                _status_for(exc) if status == 200 else status,
            )
        refunds = await all_refunds(order_id=oid)
        body = bopages.order_body(row, refunds, csrf=session.csrf, error=error, done=done)
        return kit.page(body, f"Order {oid}", "/static/pos.js", session.csrf, "orders", status)

    async def order(request: Request, _sid: str, session: Session) -> Response:
        try:
            oid = _order_id(request)
        except SafescanError as exc:
            return await detail_page("-", session, error=exc.message, status=400)
        done = "The refund was made." if request.query_params.get("done") == "refund" else ""
        return await detail_page(oid, session, done=done)

    async def refund_review(request: Request, sid: str, session: Session) -> Response:
        form: dict[str, str] = request.state.form
        try:
            oid = _order_id(request)
            row = await load(oid)
            units = lookup_currency(int(row["currency"])).minor_units
            amount = parse_amount(form.get("amount", ""), units, what="amount")
            reason = form.get("reason", "").strip() or None
            offer = await posorders.preview_refund(
                state, oid, {"amount": amount, "reason": reason}, sid, session.user
            )
        except SafescanError as exc:
            oid = str(request.path_params["order_id"])[:40]
            return await detail_page(oid, session, error=exc.message, status=_status_for(exc))
        body = bopages.refund_confirm_body(offer, session.csrf)
        return kit.page(body, "Confirm the refund", "/static/pos.js", session.csrf, "orders")

    async def refund_confirm(request: Request, sid: str, session: Session) -> Response:
        form: dict[str, str] = request.state.form
        try:
            oid = _order_id(request)
            await posorders.confirm_refund(state, oid, form.get("confirmation"), sid)
        except SafescanError as exc:
            oid = str(request.path_params["order_id"])[:40]
            return await detail_page(oid, session, error=exc.message, status=_status_for(exc))
        return RedirectResponse(f"/orders/{oid}?done=refund", 303, headers=SECURITY_HEADERS)

    # --- settlement ----------------------------------------------------------------------------

    async def day_data(
        day: str,
    ) -> tuple[list[dict[str, Any]], list[exports.Entry], list[dict[str, Any]], str]:
        start, end = exports.day_bounds(day)
        error = await fresh()
        try:
            rows = await asyncio.to_thread(state.api.settlement, day)
        except SafescanError as exc:
            rows, error = (), f"The institution's report could not be read: {exc.message}"
        paid = await asyncio.to_thread(state.journal.paid_between, start, end)
        refunds = await all_refunds(day=day)
        listed: dict[int, int] = defaultdict(int)
        for r in refunds:
            listed[int(r["currency"])] += int(r["amount"])
        elsewhere = {}  # refunded per the report but not listed (the list could not be read)
        for row in rows:
            num = lookup_currency(row.currency).numeric
            elsewhere[num] = row.refunded - listed.get(num, 0)
        inst = [row.to_json() for row in rows]
        return inst, exports.day_entries(paid, refunds, elsewhere), paid, error

    async def settlement(request: Request, _sid: str, session: Session) -> Response:
        day = request.query_params.get("date") or exports.today()
        try:
            inst, entries, paid, error = await day_data(day)
            status = 200
        except SafescanError as exc:
            day, inst, entries, paid, error, status = exports.today(), [], [], [], exc.message, 400
        local: dict[str, tuple[int, int]] = {}
        for e in entries:
            if e.kind == "payment":
                alpha = lookup_currency(e.currency).alpha
                count, gross = local.get(alpha, (0, 0))
                local[alpha] = (count + 1, gross + e.amount)
        shown = day_charts(entries, paid)
        body = bopages.settlement_body(day, inst, shown, local=local, error=error)
        return kit.page(body, "Settlement", "/static/pos.js", session.csrf, "settlement", status)

    def day_charts(entries: list[exports.Entry], paid: list[dict[str, Any]]) -> str:
        mine = [e for e in entries if e.currency == cur.numeric]
        sales, refunds = [0] * 24, [0] * 24
        by_item: dict[str, int] = defaultdict(int)
        for e in mine:
            hour = time.gmtime(e.booked_at).tm_hour
            if e.kind == "payment":
                sales[hour] += e.amount
            else:
                refunds[hour] += e.amount
        for row in paid:
            if int(row["currency"]) != cur.numeric:
                continue
            for item in row["items"]:
                if isinstance(item, list) and len(item) == 3:
                    by_item[str(item[0])] += int(item[1]) * int(item[2])
        top = sorted(by_item.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        hours = [f"{h:02d}h" for h in range(24)]
        return "".join(
            (
                charts.bar_chart(
                    "chart-sales",
                    f"Sales per hour ({cur.alpha})",
                    hours,
                    sales,
                    cur.format,
                    column="Hour (UTC)",
                    every=3,
                ),
                charts.bar_chart(
                    "chart-refunds",
                    f"Refunds per hour ({cur.alpha})",
                    hours,
                    refunds,
                    cur.format,
                    column="Hour (UTC)",
                    colour="#8250df",
                    every=3,
                ),
                charts.bar_chart(
                    "chart-items",
                    f"Sales by item ({cur.alpha})",
                    [k for k, _ in top],
                    [v for _, v in top],
                    cur.format,
                    column="Item",
                    colour="#1a7f37",
                ),
            )
        )

    async def export(request: Request, _sid: str, _session: Session) -> Response:
        day = request.query_params.get("date") or exports.today()
        try:
            inst, entries, _paid, error = await day_data(day)
            if error:
                raise PosRequestRefused(error)
        except SafescanError as exc:
            return Response(exc.message, status_code=_status_for(exc), headers=SECURITY_HEADERS)
        fmt = "csv" if request.url.path.endswith(".csv") else "camt053"
        name = f"safescan-{state.config.merchant_id}-{day}"
        if fmt == "csv":
            data, media = exports.to_csv(entries).encode(), "text/csv; charset=utf-8"
        else:
            account = str(inst[0].get("settlement_account") or "") if inst else ""
            merchant = str(inst[0].get("merchant_name") or "") if inst else ""
            data = exports.to_camt053(
                entries,
                day=day,
                merchant_id=state.config.merchant_id,
                merchant_name=merchant,
                account=account,
                currency=cur.numeric,
            )
            media = "application/xml"
        ext = "csv" if fmt == "csv" else "camt053.xml"
        headers = {
            **SECURITY_HEADERS,
            "Content-Disposition": f'attachment; filename="{name}.{ext}"',
        }
        return Response(data, media_type=media, headers=headers)

    # --- printable shop-front codes ------------------------------------------------------------

    async def shop() -> str:
        if "name" not in kit.shop_name:
            profile = await asyncio.to_thread(state.api.profile)
            kit.shop_name["name"] = profile.name or state.config.merchant_id
        return kit.shop_name["name"]

    async def codes_page(session: Session, error: str = "", status: int = 200) -> Response:
        try:
            name = await shop()
        except SafescanError as exc:
            name, error = state.config.merchant_id, error or exc.message
        made = await asyncio.to_thread(state.journal.static_codes)
        body = bopages.codes_body(made, csrf=session.csrf, shop=name, error=error)
        return kit.page(body, "Shop-front codes", "/static/pos.js", session.csrf, "codes", status)

    async def codes(_request: Request, _sid: str, session: Session) -> Response:
        return await codes_page(session)

    async def make_code(request: Request, _sid: str, session: Session) -> Response:
        form: dict[str, str] = request.state.form
        try:
            label = form.get("label", "").strip()
            if label:
                try:
                    label = clean_text(label, field="label", max_chars=40)
                except CodeError as exc:
                    raise PosRequestRefused(exc.message) from None
            days_text = form.get("days", "").strip()
            if not re.fullmatch(r"\d{1,4}", days_text) or not 1 <= int(days_text) <= 3650:
                raise PosRequestRefused("valid for 1 to 3650 days")
            issued = await asyncio.to_thread(
                state.api.static_code, currency=cur.alpha, valid_days=int(days_text)
            )
            code_id = "sc_" + secrets.token_hex(8)
            await asyncio.to_thread(state.journal.add_static_code, code_id, issued, label)
        except SafescanError as exc:
            return await codes_page(session, exc.message, _status_for(exc))
        return RedirectResponse("/codes", status_code=303, headers=SECURITY_HEADERS)

    async def code_file(request: Request, _sid: str, _session: Session) -> Response:
        code_id, fmt = str(request.path_params["code_id"]), request.path_params["fmt"]
        found = [
            c
            for c in await asyncio.to_thread(state.journal.static_codes)
            if c["code_id"] == code_id
        ]
        if not found or fmt not in ("png", "pdf"):
            return Response("no such code", status_code=404, headers=SECURITY_HEADERS)
        c = found[0]
        name = await shop()
        make = printcodes.poster_png if fmt == "png" else printcodes.poster_pdf
        data = await asyncio.to_thread(make, str(c["code"]), name, str(c["label"]), cur.alpha)
        media = "image/png" if fmt == "png" else "application/pdf"
        headers = {**SECURITY_HEADERS}
        if fmt == "pdf":
            headers["Content-Disposition"] = f'attachment; filename="{code_id}.pdf"'
        return Response(data, media_type=media, headers=headers)

    one = "/orders/{order_id}"
    return [
        Route("/orders", staff_page(orders), methods=["GET"]),
        Route(one, staff_page(order), methods=["GET"]),
        Route(one + "/refund", staff_page(refund_review, post=True), methods=["POST"]),
        Route(one + "/refund/confirm", staff_page(refund_confirm, post=True), methods=["POST"]),
        Route("/settlement", staff_page(settlement), methods=["GET"]),
        Route("/settlement.csv", staff_page(export), methods=["GET"]),
        Route("/settlement.camt053.xml", staff_page(export), methods=["GET"]),
        Route("/codes", staff_page(codes), methods=["GET"]),
        Route("/codes", staff_page(make_code, post=True), methods=["POST"]),
        Route("/codes/{code_id}.{fmt}", staff_page(code_file), methods=["GET"]),
    ]
