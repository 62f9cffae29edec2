"use strict";
// An order's live status and verified receipt, shown the same way on the staff counter page
// (pos.js) and on the customer's checkout page (shop.js); loaded before either of them.
// Text from data is always set with textContent.
window.safescanOrder = (function () {
  const $ = (id) => document.getElementById(id);

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

  // The order's state in #status / #status-text and as a class of its .order box; false when
  // the page shows no order.
  function showState(doc) {
    const status = $("status");
    if (!status) return false;
    const [cls, text] = LABELS[doc.state] || ["closed", doc.state];
    status.className = "status " + cls;
    status.dataset.state = doc.state;
    $("status-text").textContent = text;
    const order = status.closest(".order");
    order.classList.remove("pending", "paid", "refunded", "closed");
    order.classList.add(cls);
    return true;
  }

  // A verified receipt in #receipt: a title line, then [label, value] rows.
  function showReceipt(title, rows) {
    const receipt = $("receipt");
    receipt.replaceChildren();
    receipt.appendChild(el("div", title, "verified"));
    const dl = el("dl");
    for (const [k, v] of rows) { dl.appendChild(el("dt", k)); dl.appendChild(el("dd", v)); }
    receipt.appendChild(dl);
    receipt.classList.remove("hidden");
    const hint = $("hint"); if (hint) hint.textContent = "Thank you!";
  }

  return {$: $, el: el, showState: showState, showReceipt: showReceipt};
})();
