"""The shop's web app (Starlette): products, a cart, checkout through safescan, a webhook
endpoint, the orders page.

The secret API key stays on this server: the browser only ever sees the hosted checkout's URL.
An order is marked paid by a verified ``checkout.session.completed`` webhook, or by the success
page after it read the session from the institution with the key (whichever comes first; the
other changes nothing). Arriving at the success page proves nothing by itself.
"""

from __future__ import annotations

import base64
import contextlib
import html
import logging
import re
import secrets
import ssl
import string
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from shop.catalog import BY_ID, CURRENCY, MAX_QUANTITY, PRODUCTS, money
from shop.store import Store

log = logging.getLogger("shop")
COOKIE = "shop_session"
SESSION_RE = re.compile(r"^cs_[A-Z2-9]{26}$")
MAX_FORM = 4096
MAX_WEBHOOK = 64 * 1024
#: the checkout form's redirect goes to the institution: ``form-action`` names it (browsers
#: apply the directive to a form's redirects too)
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self' {institution};"
    " frame-ancestors 'none'; base-uri 'none'"
)


_SIGNATURE_ENTRY = re.compile(r"v[0-9]{1,3}[a-z]{0,3},([A-Za-z0-9+/]{4,4096}={0,2})")


def _signature_header_is_exact(value: str) -> bool:
    """Whether ``webhook-signature`` is 1-8 entries ``<version>,<base64>`` separated by one
    space, each base64 the one canonical spelling of its bytes (no entry twice)."""
    entries = value.split(" ")
    if not 1 <= len(entries) <= 8 or len(set(entries)) != len(entries):
        return False
    for entry in entries:
        m = _SIGNATURE_ENTRY.fullmatch(entry)
        if m is None:
            return False
        try:
            raw = base64.b64decode(m.group(1), validate=True)
        except ValueError:  # binascii.Error included
            return False
        if base64.b64encode(raw).decode("ascii") != m.group(1):
            return False
    return True


@dataclass(frozen=True)
class Config:
    """Where the institution is, the shop's credentials, where the shop lives."""

    institution: str  # https://institution.example (http:// on loopback for a test)
    api_key: str  # sk_live_... (secret: this server only)
    webhook_secret: str  # whsec_... (the endpoint's Standard Webhooks secret)
    public_url: str  # this shop's own origin, for the return URLs and the Origin check
    db: Path
    ca: Path | None = None  # the institution's CA, when it is a private one


@cache
def _template(name: str) -> string.Template:
    text = (resources.files("shop") / "templates" / name).read_text(encoding="utf-8")
    return string.Template(text)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def render(template: str, **values: str) -> str:
    """A template with ``values`` (HTML already escaped by the caller)."""
    return _template(template).substitute(values)


def _items(items: list[dict[str, Any]]) -> str:
    return ", ".join(f"{i['quantity']} x {i['name']}" for i in items)


class Shop:
    """The app's state: its configuration, store and institution client."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = Store(config.db)
        # the institution's CA when the shop pins one (else the system's CAs); never off
        verify: Any = ssl.create_default_context(cafile=str(config.ca)) if config.ca else True
        self.api = httpx.Client(
            base_url=config.institution,
            headers={"Authorization": f"Bearer {config.api_key}"},
            verify=verify,
            timeout=15,
        )
        self.webhook = Webhook(config.webhook_secret)
        self.origin = "{0.scheme}://{0.netloc}".format(urlsplit(config.public_url))
        institution = "{0.scheme}://{0.netloc}".format(urlsplit(config.institution))
        self.headers = {
            "Content-Security-Policy": CSP.format(institution=institution),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        }

    # --- pages ---------------------------------------------------------------------------------

    def page(self, request: Request, page: str, title: str, body: str) -> HTMLResponse:
        sid = self.browser(request)
        count = sum(self.store.cart(sid).values()) if sid else 0
        doc = render("layout.html", title=_e(title), page=_e(page), cart_count=_e(count), body=body)
        return HTMLResponse(doc, headers=self.headers)

    @staticmethod
    def browser(request: Request) -> str | None:
        sid = request.cookies.get(COOKIE, "")
        return sid if re.fullmatch(r"[A-Za-z0-9_\-]{43}", sid) else None

    def with_browser(self, request: Request, response: Response) -> tuple[str, Response]:
        sid = self.browser(request)
        if sid is None:
            sid = secrets.token_urlsafe(32)
            response.set_cookie(
                COOKIE,
                sid,
                httponly=True,
                samesite="lax",
                secure=self.config.public_url.startswith("https:"),
                path="/",
            )
        return sid, response

    def same_origin(self, request: Request) -> bool:
        """A form post from this shop's own pages (no other site can make the browser post)."""
        return request.headers.get("origin") == self.origin

    async def form(self, request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_FORM:
            return {}
        parsed = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
        return {k: v[0] for k, v in parsed.items()}

    async def products(self, request: Request) -> Response:
        cards = "\n".join(
            render(
                "product.html",
                id=_e(p.id),
                name=_e(p.name),
                blurb=_e(p.blurb),
                price=_e(money(p.price)),
                max=_e(MAX_QUANTITY),
            )
            for p in PRODUCTS
        )
        return self.page(request, "products", "Products", render("products.html", products=cards))

    async def add(self, request: Request) -> Response:
        if not self.same_origin(request):
            return Response("cross-site form refused", status_code=403)
        form = await self.form(request)
        product = BY_ID.get(form.get("product", ""))
        qty_text = form.get("quantity", "")
        if product is None or not qty_text.isdigit() or not 1 <= int(qty_text) <= MAX_QUANTITY:
            return Response("unknown product or quantity", status_code=400)
        sid, response = self.with_browser(request, RedirectResponse("/cart", status_code=303))
        have = self.store.cart(sid).get(product.id, 0)
        self.store.set_quantity(sid, product.id, min(MAX_QUANTITY, have + int(qty_text)))
        return response

    async def clear(self, request: Request) -> Response:
        if not self.same_origin(request):
            return Response("cross-site form refused", status_code=403)
        sid = self.browser(request)
        if sid:
            self.store.clear_cart(sid)
        return RedirectResponse("/cart", status_code=303)

    def lines(self, sid: str | None) -> list[dict[str, Any]]:
        cart = self.store.cart(sid) if sid else {}
        return [
            {"name": BY_ID[pid].name, "quantity": q, "unit_price": BY_ID[pid].price}
            for pid, q in cart.items()
            if pid in BY_ID
        ]

    async def cart(self, request: Request, error: str = "") -> Response:
        lines = self.lines(self.browser(request))
        if not lines:
            content = '<p id="empty">Your cart is empty. <a href="/">Find some tea</a>.</p>'
        else:
            rows = "\n".join(
                f'<tr><td>{_e(i["name"])}</td><td class="num">{i["quantity"]}</td>'
                f'<td class="num">{_e(money(i["quantity"] * i["unit_price"]))}</td></tr>'
                for i in lines
            )
            total = sum(i["quantity"] * i["unit_price"] for i in lines)
            shown = f'<p class="error" role="alert">{_e(error)}</p>' if error else ""
            content = render("cart_items.html", rows=rows, total=_e(money(total)), error=shown)
        return self.page(request, "cart", "Cart", render("cart.html", content=content))

    async def checkout(self, request: Request) -> Response:
        """Make a checkout session with the secret key; send the browser to its page."""
        if not self.same_origin(request):
            return Response("cross-site form refused", status_code=403)
        sid = self.browser(request)
        lines = self.lines(sid)
        if sid is None or not lines:
            return RedirectResponse("/cart", status_code=303)
        total = sum(i["quantity"] * i["unit_price"] for i in lines)
        order = self.store.new_order(sid, lines, total)
        base = self.config.public_url.rstrip("/")
        try:
            r = self.api.post(
                "/v1/checkout/sessions",
                json={
                    "items": lines,
                    "currency": CURRENCY,
                    "success_url": base + "/success?session={CHECKOUT_SESSION_ID}",
                    "cancel_url": base + "/cart",
                    "expires_in": 900,
                    "reference": order.reference,
                },
            )
        except httpx.HTTPError as exc:
            log.warning("checkout session not made: %s", type(exc).__name__)
            return await self.cart(request, "The payment service cannot be reached. Try again.")
        if r.status_code != 201:
            log.warning("checkout session refused: %s", r.status_code)
            return await self.cart(request, "The payment could not be started. Try again.")
        session = r.json()
        if not SESSION_RE.match(str(session.get("id"))) or session.get("total") != total:
            return await self.cart(request, "The payment service answered oddly. Try again.")
        self.store.attach_session(order.number, session["id"])
        url = str(session["url"])
        if not url.startswith(self.config.institution.rstrip("/") + "/checkout/"):
            return await self.cart(request, "The payment service answered oddly. Try again.")
        return RedirectResponse(url, status_code=303)

    async def success(self, request: Request) -> Response:
        """Where the hosted page sends the browser: the order's state, asked of the
        institution with the key (the visit alone proves nothing)."""
        session_id = request.query_params.get("session", "")
        order = self.store.by_session(session_id) if SESSION_RE.match(session_id) else None
        if order is None:
            body = render(
                "success.html",
                heading="Order not found",
                status="unknown",
                message="We have no order for this payment.",
            )
            return self.page(request, "success", "Order not found", body)
        if order.status != "paid":
            try:
                r = self.api.get(f"/v1/checkout/sessions/{session_id}")
                s = r.json() if r.status_code == 200 else {}
            except httpx.HTTPError:
                s = {}
            if s.get("status") == "complete" and self.matches(order.total, order.reference, s):
                self.store.mark_paid(session_id, str(s["payment_id"]), "success-page")
            order = self.store.by_session(session_id) or order
        sid = self.browser(request)
        if sid and order.status == "paid":
            self.store.clear_cart(sid)
        paid = order.status == "paid"
        body = render(
            "success.html",
            heading="Thank you!" if paid else "Waiting for your payment",
            status="paid" if paid else "pending",
            message=_e(
                f"Order {order.reference} is paid: {money(order.total)}."
                if paid
                else f"Order {order.reference} is not paid yet."
            ),
        )
        return self.page(request, "success", "Order " + order.reference, body)

    async def orders(self, request: Request) -> Response:
        orders = self.store.orders()
        if not orders:
            content = '<p id="no-orders">No orders yet.</p>'
        else:
            rows = "\n".join(
                f'<tr data-reference="{_e(o.reference)}" data-status="{_e(o.status)}">'
                f"<td>{_e(o.reference)}</td>"
                f"<td>{_e(_items(o.items))}</td>"
                f'<td class="num">{_e(money(o.total))}</td>'
                f'<td class="{_e(o.status)}">{"Paid" if o.status == "paid" else "Waiting"}</td>'
                "</tr>"
                for o in orders
            )
            content = render("orders_table.html", rows=rows)
        return self.page(request, "orders", "Orders", render("orders.html", content=content))

    # --- the webhook ---------------------------------------------------------------------------

    @staticmethod
    def matches(total: int, reference: str, data: dict[str, Any]) -> bool:
        """The institution's record says what this order says (amount, currency, reference)."""
        amount = data.get("amount_total", data.get("total"))
        same = amount == total and data.get("currency") == 978
        return same and data.get("reference") == reference

    async def webhook_endpoint(self, request: Request) -> Response:
        """``checkout.session.completed``, verified with the endpoint's ``whsec_`` secret
        (Standard Webhooks: signature and a timestamp within 5 minutes); a webhook id already
        handled is acknowledged and changes nothing."""
        body = await request.body()
        if len(body) > MAX_WEBHOOK:
            return JSONResponse({"error": "too large"}, status_code=413)
        headers = {k.lower(): v for k, v in request.headers.items()}
        stamp = headers.get("webhook-timestamp", "")
        # the library reads the timestamp with float() and checks the signature over its floor:
        # "<t>.9", "0<t>", "<t>e0", "1_7..." would verify with a signature over "<t>" (the
        # header rewritten after signing). Only the signed spelling, plain digits, is taken.
        if not (stamp.isascii() and stamp.isdigit() and stamp == str(int(stamp))):
            return JSONResponse(
                {"error": "not verified: malformed webhook-timestamp"}, status_code=400
            )
        # the library splits the signature header loosely and decodes base64 without checking
        # it: characters outside the alphabet are dropped, the padding bits ignored, so junk in
        # or next to a genuine signature verified (redteam). Only the form the institution
        # writes is taken: "<version>,<canonical base64>" entries separated by one space.
        if not _signature_header_is_exact(headers.get("webhook-signature", "")):
            return JSONResponse(
                {"error": "not verified: malformed webhook-signature"}, status_code=400
            )
        try:
            event = self.webhook.verify(body, headers)
        except (WebhookVerificationError, ValueError) as exc:
            # ValueError: a malformed signature list, base64 or text the library trips over
            return JSONResponse({"error": f"not verified: {exc}"}, status_code=400)
        webhook_id = headers["webhook-id"]
        if not isinstance(event, dict) or event.get("id") != webhook_id:
            return JSONResponse({"error": "event id is not the webhook id"}, status_code=400)
        if self.store.seen(webhook_id):
            return JSONResponse({"duplicate": True})
        if event.get("type") == "checkout.session.completed":
            data = event.get("data") or {}
            order = self.store.by_session(str(data.get("session_id", "")))
            if order is None:
                return JSONResponse({"error": "no order for this session"}, status_code=404)
            if not self.matches(order.total, order.reference, data):
                return JSONResponse({"error": "does not match the order"}, status_code=409)
            self.store.mark_paid(order.session_id or "", str(data.get("payment_id")), "webhook")
        self.store.remember(webhook_id, str(event.get("type")))
        return JSONResponse({"ok": True})

    async def static(self, request: Request) -> Response:
        if request.path_params["name"] != "shop.css":
            return Response(status_code=404)
        css = (resources.files("shop") / "static" / "shop.css").read_bytes()
        return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=300"})


def create_app(config: Config) -> Starlette:
    """The shop's ASGI app."""
    shop = Shop(config)
    app = Starlette(
        routes=[
            Route("/", shop.products),
            Route("/cart", shop.cart),
            Route("/cart/add", shop.add, methods=["POST"]),
            Route("/cart/clear", shop.clear, methods=["POST"]),
            Route("/checkout", shop.checkout, methods=["POST"]),
            Route("/success", shop.success),
            Route("/orders", shop.orders),
            Route("/webhooks/safescan", shop.webhook_endpoint, methods=["POST"]),
            Route("/static/{name}", shop.static),
        ],
        lifespan=_closing(shop),
    )
    return app


def _closing(shop: Shop) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            shop.api.close()

    return lifespan
