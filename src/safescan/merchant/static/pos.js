"use strict";
(function () {
  const meta = document.querySelector('meta[name="csrf"]');
  const csrf = meta ? meta.content : "";
  const {$, el, showState, showReceipt, countdown, watch, newer} = window.safescanOrder;  // order.js
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

  function render(doc) {
    if (!newer(current, doc)) return;  // an older answer of the shown order
    current = doc;
    if (!showState(doc)) return;
    countdown(doc);
    if (doc.receipt) {
      const rows = [["Amount", doc.receipt.amount_display], ["Payment", doc.receipt.payment_id],
        ["Payer", doc.receipt.payer_pseudonym],
        ["Paid at", new Date(doc.receipt.paid_at * 1000).toLocaleString()]];
      if (doc.refunded) rows.push(["Refunded", doc.refunded_display]);
      showReceipt("Receipt verified: signed by the institution (key " +
        doc.receipt.issuer_kid + ")", rows);
    }
    if (doc.message) { const hint = $("hint"); if (hint) hint.textContent = doc.message; }
    const refund = $("refund"), cancel = $("cancel");
    if (refund) refund.classList.toggle("hidden",
      !(doc.state === "PAID" || doc.state === "PARTIALLY_REFUNDED"));
    if (cancel) cancel.classList.toggle("hidden", doc.state !== "CREATED");
  }

  function follow(doc) {
    if (stream) stream.close();
    stream = watch(doc.events, render);
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
    const expiry = el("p", "", "expiry hidden"); expiry.id = "expiry";
    expiry.setAttribute("aria-live", "off"); wrap.appendChild(expiry);
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
    const downloads = el("p", "Download the code: ", "downloads");
    for (const [fmt, url] of [["PNG", doc.qr_png], ["SVG", doc.qr_svg]]) {
      const d = el("a", fmt, "download"); d.href = url; d.id = "download-" + fmt.toLowerCase();
      d.setAttribute("download", "safescan-" + doc.order_id + "." + fmt.toLowerCase());
      downloads.appendChild(d); downloads.appendChild(document.createTextNode(" "));
    }
    wrap.appendChild(downloads);
    const info = el("p", "Order " + doc.order_id + " · code " + doc.code_bytes + " bytes · ", "muted small");
    const a = el("a", "customer screen"); a.href = doc.checkout_url; a.target = "_blank";
    a.rel = "noopener noreferrer"; info.appendChild(a);
    wrap.appendChild(info);
    view.appendChild(wrap);
    $("order-panel").classList.remove("hidden");
    render(doc);
    follow(doc);
    img.scrollIntoView({block: "center"});
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
