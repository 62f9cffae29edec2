# ruff: noqa: E501  (CSS and JavaScript assets: long lines read better here)
"""CSS and JavaScript of the web POS, served from ``/static`` (no inline script or style).

``POS_JS`` drives the staff counter page (it sends the session's CSRF token with every
change); ``SHOP_JS`` the customer's checkout page, which talks only to its own
``/shop/checkout/{token}`` capability URLs. Text from data is always set with ``textContent``.
"""

from __future__ import annotations

POS_CSS = """
:root { --ink:#1d2430; --muted:#6b7380; --line:#e3e6eb; --bg:#f5f6f8; --brand:#1f6feb;
        --ok:#1a7f37; --warn:#9a6700; --bad:#cf222e; --refund:#8250df; }
* { box-sizing: border-box; }
body { margin:0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--bg); }
.bar { display:flex; align-items:baseline; gap:1rem; padding:.8rem 1.5rem; background:#0d1117;
       color:#fff; }
.logo { font-size:1.3rem; letter-spacing:.02em; } .logo b { color:#58a6ff; }
.sub { color:#8b949e; }
main { max-width: 1100px; margin: 1.5rem auto; padding: 0 1rem; }
.grid { display:grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap:1.5rem; }
.narrow { max-width: 520px; margin: 0 auto; }
.card { background:#fff; border:1px solid var(--line); border-radius:12px; padding:1.4rem;
        box-shadow: 0 1px 3px rgba(0,0,0,.04); }
h1 { font-size:1.35rem; margin:0 0 .6rem; }
.muted { color: var(--muted); } .small { font-size:.85rem; }
.hidden { display:none !important; }
table { width:100%; border-collapse: collapse; margin:.6rem 0; }
th, td { text-align:left; padding:.35rem .4rem; border-bottom:1px solid var(--line); }
td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; }
tfoot td { font-weight:700; border-bottom:none; font-size:1.1rem; }
input { font:inherit; padding:.35rem .5rem; border:1px solid #c9ced6; border-radius:6px;
        width:100%; }
input.qty { width:4.5rem; } input.price { width:7rem; }
button { font:inherit; border-radius:8px; border:1px solid transparent; padding:.55rem 1rem;
         cursor:pointer; }
button.primary { background: var(--brand); color:#fff; width:100%; font-weight:600;
                 padding:.75rem; margin-top:.6rem; }
button.secondary { background:#fff; border-color:#c9ced6; }
button.danger { background:#fff; color: var(--bad); border-color: var(--bad); }
button.link { background:none; color: var(--brand); padding:.2rem 0; }
button.remove { background:none; color: var(--muted); padding:.1rem .4rem; }
.chip { background:#eef4ff; color: var(--brand); border-color:#cfe0ff; margin:.15rem;
        padding:.35rem .8rem; border-radius:999px; }
.total-line { display:flex; justify-content:space-between; font-weight:700; margin-top:.6rem; }
.error { color: var(--bad); min-height:1.2em; }
.actions { display:flex; gap:.6rem; margin-top:1rem; flex-wrap:wrap; }
.order { text-align:center; }
.order table { text-align:left; }
.qr { display:block; margin: .8rem auto; max-width: 100%; height: auto;
      border-radius: 6px; }
.hint { color: var(--muted); font-size:.9rem; max-width: 30rem; margin: 0 auto .6rem; }
.status { display:inline-flex; align-items:center; gap:.55rem; padding:.5rem 1.1rem;
          border-radius:999px; font-weight:700; font-size:1.15rem; }
.status .dot { width:.8rem; height:.8rem; border-radius:50%; background: currentColor; }
.status.pending { background:#fff8c5; color: var(--warn); }
.status.pending .dot { animation: pulse 1.1s ease-in-out infinite; }
.status.paid { background:#dafbe1; color: var(--ok); font-size:1.4rem; }
.status.refunded { background:#fbefff; color: var(--refund); }
.status.closed { background:#eaeef2; color: var(--muted); }
@keyframes pulse { 0%,100% { opacity:.25; transform:scale(.8);} 50% { opacity:1; transform:scale(1.1);} }
.paid .qr, .refunded .qr, .closed .qr { opacity:.15; }
.receipt { text-align:left; background:#f6fff8; border:1px solid #b7e4c7; border-radius:8px;
           padding:.7rem 1rem; margin:.6rem 0; font-size:.92rem; }
.receipt dt { color: var(--muted); float:left; width: 9rem; clear:left; }
.receipt dd { margin: 0 0 .2rem 9.5rem; font-family: ui-monospace, monospace; }
.verified { color: var(--ok); font-weight:700; margin-bottom:.4rem; }
label { display:block; margin:.5rem 0; }
form.inline { display:inline; }
.refund-box { margin-top:1rem; border-top:1px solid var(--line); padding-top:.8rem; }
.refund-box h2 { font-size:1.1rem; margin:.2rem 0 .4rem; }
.confirm { background:#fff8f8; border:1px solid var(--bad); border-radius:8px; padding:.6rem .9rem;
           margin-top:.6rem; }
"""

POS_JS = r"""
"use strict";
(function () {
  const meta = document.querySelector('meta[name="csrf"]');
  const csrf = meta ? meta.content : "";
  const $ = (id) => document.getElementById(id);
  let stream = null;
  let current = null;

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(body || {}),
    }).then(async (r) => {
      const doc = await r.json();
      if (!r.ok) { throw new Error((doc.error && doc.error.message) || ("HTTP " + r.status)); }
      return doc;
    });
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  const LABELS = {
    CREATED: ["pending", "Waiting for payment…"],
    PAID: ["paid", "✓ Paid"],
    PARTIALLY_REFUNDED: ["refunded", "Partially refunded"],
    REFUNDED: ["refunded", "Refunded"],
    CLOSED: ["closed", "Cancelled"],
    EXPIRED: ["closed", "Expired"],
  };

  function render(doc) {
    current = doc;
    const status = $("status");
    if (!status) return;
    const [cls, text] = LABELS[doc.state] || ["closed", doc.state];
    status.className = "status " + cls;
    status.dataset.state = doc.state;
    $("status-text").textContent = text;
    const order = status.closest(".order");
    order.classList.remove("pending", "paid", "refunded", "closed");
    order.classList.add(cls);
    const receipt = $("receipt");
    if (doc.receipt) {
      receipt.replaceChildren();
      receipt.appendChild(el("div", "Receipt verified: signed by the institution (key " +
        doc.receipt.issuer_kid + ")", "verified"));
      const dl = el("dl");
      const rows = [["Amount", doc.receipt.amount_display], ["Payment", doc.receipt.payment_id],
        ["Payer", doc.receipt.payer_pseudonym],
        ["Paid at", new Date(doc.receipt.paid_at * 1000).toLocaleString()]];
      if (doc.refunded) rows.push(["Refunded", doc.refunded_display]);
      for (const [k, v] of rows) { dl.appendChild(el("dt", k)); dl.appendChild(el("dd", v)); }
      receipt.appendChild(dl);
      receipt.classList.remove("hidden");
      const hint = $("hint"); if (hint) hint.textContent = "Thank you!";
    }
    if (doc.message) { const hint = $("hint"); if (hint) hint.textContent = doc.message; }
    const refund = $("refund"), cancel = $("cancel");
    if (refund) refund.classList.toggle("hidden",
      !(doc.state === "PAID" || doc.state === "PARTIALLY_REFUNDED"));
    if (cancel) cancel.classList.toggle("hidden", doc.state !== "CREATED");
  }

  function follow(doc) {
    if (stream) stream.close();
    stream = new EventSource(doc.events);
    stream.addEventListener("order", (ev) => render(JSON.parse(ev.data)));
  }

  // --- counter page ---
  const pos = $("pos");
  if (!pos) return;
  const minor = parseInt(pos.dataset.minor, 10);
  const currency = pos.dataset.currency;
  const tbody = document.querySelector("#items tbody");

  function toMinor(text) {
    const v = Number(String(text).replace(",", "."));
    if (!isFinite(v) || v <= 0) return null;
    return Math.round(v * Math.pow(10, minor));
  }
  function fmt(m) { return (m / Math.pow(10, minor)).toFixed(minor) + " " + currency; }

  function addRow(name, qty, price) {
    const tr = document.createElement("tr");
    const cells = [
      ["text", "name", name || "", "Item name"],
      ["number", "qty", qty || 1, "Quantity"],
      ["text", "price", price || "", "Unit price"],
    ];
    for (const [type, cls, value, label] of cells) {
      const td = document.createElement("td");
      const input = document.createElement("input");
      input.type = type; input.className = cls; input.value = value;
      input.setAttribute("aria-label", label);
      if (type === "number") input.min = "1";
      input.addEventListener("input", updateTotal);
      td.appendChild(input); tr.appendChild(td);
    }
    const td = document.createElement("td");
    const rm = el("button", "✕", "remove"); rm.type = "button"; rm.title = "Remove";
    rm.addEventListener("click", () => { tr.remove(); updateTotal(); });
    td.appendChild(rm); tr.appendChild(td);
    tbody.appendChild(tr);
    updateTotal();
  }

  function readItems() {
    const items = [];
    for (const tr of tbody.querySelectorAll("tr")) {
      const name = tr.querySelector(".name").value.trim();
      const qty = parseInt(tr.querySelector(".qty").value, 10);
      const price = toMinor(tr.querySelector(".price").value);
      if (!name && !price) continue;
      if (!name || !(qty > 0) || price === null) throw new Error("Check the line \"" + (name || "?") + "\"");
      items.push({name: name, quantity: qty, unit_price: price});
    }
    if (!items.length) throw new Error("Add at least one item");
    return items;
  }

  function updateTotal() {
    let total = 0;
    for (const tr of tbody.querySelectorAll("tr")) {
      const qty = parseInt(tr.querySelector(".qty").value, 10) || 0;
      const price = toMinor(tr.querySelector(".price").value) || 0;
      total += qty * price;
    }
    $("draft-total").textContent = fmt(total);
  }

  for (const chip of document.querySelectorAll(".chip")) {
    chip.addEventListener("click", () => {
      for (const tr of tbody.querySelectorAll("tr")) {
        if (tr.querySelector(".name").value === chip.dataset.name) {
          const q = tr.querySelector(".qty"); q.value = (parseInt(q.value, 10) || 0) + 1;
          updateTotal(); return;
        }
      }
      const empty = [...tbody.querySelectorAll("tr")].find(
        (tr) => !tr.querySelector(".name").value && !tr.querySelector(".price").value);
      if (empty) empty.remove();
      addRow(chip.dataset.name, 1, chip.dataset.price);
    });
  }
  $("add-row").addEventListener("click", () => addRow());

  $("create").addEventListener("click", async () => {
    $("builder-error").textContent = "";
    let items;
    try { items = readItems(); } catch (e) { $("builder-error").textContent = e.message; return; }
    $("create").disabled = true;
    try {
      const doc = await post("/api/orders", {items: items});
      showOrder(doc);
    } catch (e) {
      $("builder-error").textContent = e.message;
    } finally {
      $("create").disabled = false;
    }
  });

  function showOrder(doc) {
    const view = $("order-view");
    view.replaceChildren();
    const wrap = el("div", undefined, "order");
    wrap.dataset.orderId = doc.order_id;
    const status = el("div", undefined, "status pending"); status.id = "status";
    status.appendChild(el("span", undefined, "dot"));
    const st = el("span", "Waiting for payment…"); st.id = "status-text"; status.appendChild(st);
    wrap.appendChild(status);
    const img = document.createElement("img");
    img.className = "qr"; img.id = "qr"; img.width = doc.qr_px; img.height = doc.qr_px;
    img.alt = "payment code for order " + doc.order_id; img.src = doc.qr_svg;
    wrap.appendChild(img);
    const hint = el("p", "Scan with your safescan wallet. Your key carrier shows who is paid and for what before you approve.", "hint");
    hint.id = "hint"; wrap.appendChild(hint);
    const table = el("table", undefined, "summary"); const body = el("tbody");
    for (const i of doc.items) {
      const tr = el("tr"); tr.appendChild(el("td", i.name));
      tr.appendChild(el("td", String(i.quantity), "num")); tr.appendChild(el("td", i.display, "num"));
      body.appendChild(tr);
    }
    const foot = el("tfoot"); const tr = el("tr");
    tr.appendChild(el("td", "Total")); tr.appendChild(el("td"));
    const tot = el("td", doc.total_display, "num"); tot.id = "total"; tr.appendChild(tot);
    foot.appendChild(tr); table.appendChild(body); table.appendChild(foot); wrap.appendChild(table);
    const receipt = el("div", undefined, "receipt hidden"); receipt.id = "receipt";
    wrap.appendChild(receipt);
    const info = el("p", "Order " + doc.order_id + " · code " + doc.code_bytes + " bytes · ", "muted small");
    const a = el("a", "customer screen"); a.href = doc.checkout_url; a.target = "_blank";
    a.rel = "noopener noreferrer"; info.appendChild(a);
    wrap.appendChild(info);
    view.appendChild(wrap);
    $("order-panel").classList.remove("hidden");
    render(doc);
    follow(doc);
  }

  // --- refunds: amount and reason, review, then confirm (two requests, single-use token) ---
  let offer = null;
  function resetRefund() {
    offer = null;
    $("refund-confirm").classList.add("hidden");
    $("refund-error").textContent = "";
  }
  $("refund").addEventListener("click", () => {
    if (!current) return;
    resetRefund();
    $("refund-amount").value = (current.refundable / Math.pow(10, minor)).toFixed(minor);
    $("refund-left").textContent = current.refundable_display;
    $("refund-box").classList.remove("hidden");
  });
  $("refund-review").addEventListener("click", async () => {
    if (!current) return;
    resetRefund();
    const amount = toMinor($("refund-amount").value);
    if (amount === null) { $("refund-error").textContent = "Enter an amount such as 1.50"; return; }
    const reason = $("refund-reason").value.trim();
    try {
      offer = await post("/api/orders/" + current.order_id + "/refunds/preview",
                         reason ? {amount: amount, reason: reason} : {amount: amount});
      $("refund-question").textContent = "Refund " + offer.amount_display + " of the " +
        offer.paid_display + " paid for order " + offer.order_id + "?" +
        (offer.reason ? " Reason: " + offer.reason : "");
      $("refund-confirm").classList.remove("hidden");
    } catch (e) { $("refund-error").textContent = e.message; }
  });
  $("refund-yes").addEventListener("click", async () => {
    if (!current || !offer) return;
    $("refund-yes").disabled = true;
    try {
      render(await post("/api/orders/" + current.order_id + "/refunds", {confirmation: offer.confirmation}));
      $("refund-box").classList.add("hidden");
    } catch (e) { $("refund-error").textContent = "Refund failed: " + e.message; }
    finally { $("refund-yes").disabled = false; resetRefund(); }
  });
  $("refund-no").addEventListener("click", () => { resetRefund(); $("refund-box").classList.add("hidden"); });
  $("cancel").addEventListener("click", async () => {
    if (!current) return;
    try { render(await post("/api/orders/" + current.order_id + "/close", {})); }
    catch (e) { $("hint").textContent = "Cancel failed: " + e.message; }
  });
  $("new-order").addEventListener("click", () => {
    if (stream) { stream.close(); stream = null; }
    current = null;
    $("order-panel").classList.add("hidden");
    $("refund-box").classList.add("hidden");
    tbody.replaceChildren(); addRow();
  });
  addRow();
})();
"""

SHOP_JS = r"""
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let current = null;
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  const LABELS = {
    CREATED: ["pending", "Waiting for payment…"],
    PAID: ["paid", "✓ Paid"],
    PARTIALLY_REFUNDED: ["refunded", "Partially refunded"],
    REFUNDED: ["refunded", "Refunded"],
    CLOSED: ["closed", "Cancelled"],
    EXPIRED: ["closed", "Expired"],
  };

  function render(doc) {
    current = doc;
    const status = $("status");
    if (!status) return;
    const [cls, text] = LABELS[doc.state] || ["closed", doc.state];
    status.className = "status " + cls;
    status.dataset.state = doc.state;
    $("status-text").textContent = text;
    const order = status.closest(".order");
    order.classList.remove("pending", "paid", "refunded", "closed");
    order.classList.add(cls);
    const receipt = $("receipt");
    if (doc.paid) {
      receipt.replaceChildren();
      receipt.appendChild(el("div", "Paid: the institution's signed receipt verified", "verified"));
      const dl = el("dl");
      const rows = [["Amount", doc.paid.amount_display], ["Payment", doc.paid.payment_id]];
      for (const [k, v] of rows) { dl.appendChild(el("dt", k)); dl.appendChild(el("dd", v)); }
      receipt.appendChild(dl);
      receipt.classList.remove("hidden");
      const hint = $("hint"); if (hint) hint.textContent = "Thank you!";
    }
  }

  const checkout = $("checkout");
  if (!checkout) return;
  const first = JSON.parse(checkout.dataset.order);
  render(first);
  const stream = new EventSource(first.events);
  stream.addEventListener("order", (ev) => render(JSON.parse(ev.data)));
})();
"""
