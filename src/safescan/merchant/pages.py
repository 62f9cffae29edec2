# ruff: noqa: E501  (HTML: long lines read better here)
"""HTML of the web POS (no template engine, no third-party assets; CSS and JavaScript are
files in ``static/`` (:mod:`.assets`), served from ``/static`` under a strict
Content-Security-Policy).

Everything dynamic is escaped with :func:`safescan.code.display.html_text` (HTML escaping,
quotes included, and invisible or control characters made visible) on the server, and set
with ``textContent`` in the browser.
"""

from __future__ import annotations

import json
from typing import Any

from safescan.code.display import html_text


def _e(value: object) -> str:
    return html_text(value)


NAV = (
    ("counter", "/", "Counter"),
    ("orders", "/orders", "Orders"),
    ("settlement", "/settlement", "Settlement"),
    ("codes", "/codes", "Shop-front codes"),
)


def _nav(current: str) -> str:
    if not current:
        return ""
    links = "".join(
        f'<a href="{href}"{" aria-current=page" if key == current else ""}>{_e(text)}</a>'
        for key, href, text in NAV
    )
    return f'<nav aria-label="Staff pages">{links}</nav>'


def layout(*, title: str, body: str, csrf: str, script: str, nav: str = "") -> str:
    """A full page (``nav``: the staff page it is, for the staff pages' navigation)."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf" content="{_e(csrf)}">
<title>{_e(title)}</title>
<link rel="stylesheet" href="/static/pos.css">
<script src="/static/order.js" defer></script>
<script src="{_e(script)}" defer></script>
</head>
<body>
<header class="bar"><span class="logo">safe<b>scan</b></span><span class="sub">{_e(title)}</span>{_nav(nav)}</header>
<main>
{body}
</main>
</body>
</html>
"""


def pos_body(*, merchant: str, currency: str, minor_units: int, user: str, csrf: str) -> str:
    """The counter page: build an order, then show its code and live status; refunds."""
    return f"""
<div id="live" class="live hidden" role="status" aria-live="polite" data-state="up"></div>
<section id="pos" class="grid" data-currency="{_e(currency)}" data-minor="{_e(minor_units)}">
  <div class="card" id="builder">
    <h1>New order</h1>
    <p class="muted">Merchant <code>{_e(merchant)}</code> · signed in as <b id="user">{_e(user)}</b></p>
    <form method="post" action="/logout" class="inline">
      <input type="hidden" name="csrf" value="{_e(csrf)}">
      <button type="submit" class="link" id="logout">Sign out</button>
    </form>
    <div class="quick">
      <button type="button" class="chip" data-name="Flat white" data-price="3.50">Flat white 3.50</button>
      <button type="button" class="chip" data-name="Croissant" data-price="1.80">Croissant 1.80</button>
      <button type="button" class="chip" data-name="Orange juice" data-price="4.20">Orange juice 4.20</button>
    </div>
    <table class="items" id="items">
      <thead><tr><th>Item</th><th>Qty</th><th>Unit price ({_e(currency)})</th><th><span class="sr-only">Remove</span></th></tr></thead>
      <tbody></tbody>
    </table>
    <button type="button" class="link" id="add-row">+ add a line</button>
    <div class="total-line">Total <span id="draft-total">0.00 {_e(currency)}</span></div>
    <button type="button" class="primary" id="create">Show payment code</button>
    <p class="error" id="builder-error" role="alert"></p>
  </div>
  <div class="card hidden" id="order-panel" aria-live="polite">
    <div id="order-view"></div>
    <div class="actions">
      <button type="button" class="danger hidden" id="refund">Refund…</button>
      <button type="button" class="secondary hidden" id="cancel">Cancel order</button>
      <button type="button" class="secondary" id="new-order">New order</button>
    </div>
    <div class="refund-box hidden" id="refund-box">
      <h2>Refund</h2>
      <label>Amount ({_e(currency)}) <input type="text" id="refund-amount" inputmode="decimal"></label>
      <p class="muted small">At most <span id="refund-left"></span>.</p>
      <label>Reason (optional) <input type="text" id="refund-reason" maxlength="200"></label>
      <button type="button" class="secondary" id="refund-review">Review refund</button>
      <div class="confirm hidden" id="refund-confirm" role="alertdialog">
        <p id="refund-question"></p>
        <button type="button" class="danger" id="refund-yes">Confirm refund</button>
        <button type="button" class="secondary" id="refund-no">Cancel</button>
      </div>
      <p class="error" id="refund-error" role="alert"></p>
    </div>
  </div>
</section>
"""


def login_body(nonce: str, error: str = "") -> str:
    """The staff sign-in form (no script needed)."""
    return f"""
<section class="narrow">
  <div class="card">
    <h1>Staff sign-in</h1>
    <form method="post" action="/login" id="login">
      <input type="hidden" name="nonce" value="{_e(nonce)}">
      <label>Name <input type="text" name="name" id="name" autocomplete="username" required></label>
      <label>Password <input type="password" name="password" id="password"
             autocomplete="current-password" required></label>
      <button type="submit" class="primary" id="sign-in">Sign in</button>
    </form>
    <p class="error" id="login-error" role="alert">{_e(error)}</p>
  </div>
</section>
"""


def _order_view(doc: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{_e(i['name'])}</td><td class=num>{_e(i['quantity'])}</td>"
        f"<td class=num>{_e(i['display'])}</td></tr>"
        for i in doc["items"]
    )
    return f"""
<div class="order">
  <div class="status pending" id="status" data-state="{_e(doc["state"])}">
    <span class="dot"></span><span id="status-text">Waiting for payment…</span>
  </div>
  <img class="qr" id="qr" alt="payment code"
       src="{_e(doc["qr_svg"])}" width="{_e(doc["qr_px"])}" height="{_e(doc["qr_px"])}">
  <p class="expiry hidden" id="expiry" aria-live="off"></p>
  <p class="hint" id="hint">Scan with your safescan wallet. Your key carrier shows who is paid
     and for what before you approve.</p>
  <table class="summary"><tbody>{rows}</tbody>
    <tfoot><tr><td>Total</td><td></td><td class="num" id="total">{_e(doc["total_display"])}</td></tr></tfoot>
  </table>
  <div class="receipt hidden" id="receipt"></div>
  <p class="downloads">Download the code:
     <a class="download" id="download-png" href="{_e(doc["qr_png"])}" download="safescan-code.png">PNG</a>
     <a class="download" id="download-svg" href="{_e(doc["qr_svg"])}" download="safescan-code.svg">SVG</a></p>
</div>
"""


def checkout_body(doc: dict[str, Any]) -> str:
    """The online-store checkout: order summary, the code, live status (customer view)."""
    return f"""
<div id="live" class="live hidden" role="status" aria-live="polite" data-state="up"></div>
<section id="checkout" class="narrow" data-order='{_e(json.dumps(doc))}'>
  <div class="card">
    <h1>Pay with safescan</h1>
    <div id="order-view">{_order_view(doc)}</div>
  </div>
</section>
"""


def shop_body(rows: list[tuple[str, int, str, str]], total: str) -> str:
    """A tiny online store's basket, with a checkout button (no staff token anywhere)."""
    lines = "".join(
        f"<tr><td>{_e(n)}</td><td class=num>{_e(q)}</td><td class=num>{_e(u)}</td>"
        f"<td class=num>{_e(a)}</td></tr>"
        for n, q, u, a in rows
    )
    return f"""
<section class="narrow">
  <div class="card">
    <h1>Your basket</h1>
    <table class="summary">
      <thead><tr><th>Item</th><th>Qty</th><th>Unit</th><th>Amount</th></tr></thead>
      <tbody>{lines}</tbody>
      <tfoot><tr><td>Total</td><td></td><td></td><td class="num">{_e(total)}</td></tr></tfoot>
    </table>
    <form method="post" action="/shop/checkout">
      <button type="submit" class="primary" id="checkout-button">Checkout with safescan</button>
    </form>
  </div>
</section>
"""


def error_page(message: str) -> str:
    """A minimal error page."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Error</title>"
        "<link rel=stylesheet href=/static/pos.css></head><body><main><div class=card>"
        f"<h1>Something went wrong</h1><p class=error>{_e(message)}</p>"
        "<p><a href=/>Back</a></p></div></main></body></html>"
    )
