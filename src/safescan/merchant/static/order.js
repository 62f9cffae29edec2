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

  // The code's expiry countdown in #expiry, from the server's `expires_in` (seconds left when
  // it answered: the browser's clock may be wrong); hidden once the order is not waiting.
  let ticking = null;
  function countdown(doc) {
    const box = $("expiry");
    if (!box) return;
    if (ticking) { clearInterval(ticking); ticking = null; }
    if (doc.state !== "CREATED" || typeof doc.expires_in !== "number") {
      box.classList.add("hidden");
      return;
    }
    const deadline = Date.now() + doc.expires_in * 1000;
    function tick() {
      const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      box.dataset.left = String(left);
      box.textContent = left > 0
        ? "Code expires in " + Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0")
        : "The code has expired";
      if (left === 0 && ticking) { clearInterval(ticking); ticking = null; }
    }
    box.classList.remove("hidden");
    tick();
    ticking = setInterval(tick, 1000);
  }

  // Follow an order's live status at `url` (server-sent events); every message is the whole
  // order, so a reconnect replays the current state. #live says when the connection is lost
  // and when it is back; the browser retries, and so do we if it gives up.
  function watch(url, onDoc) {
    const banner = $("live");
    let es = null, retry = null, lost = false, stopped = false;
    function say(text, state) {
      if (!banner) return;
      banner.textContent = text;
      banner.dataset.state = state;
      banner.classList.toggle("hidden", !text);
      banner.classList.toggle("bad", state === "lost");
    }
    function open() {
      if (stopped) return;
      es = new EventSource(url);
      es.addEventListener("open", () => {
        if (lost) {
          lost = false;
          say("Live connection restored.", "up");
          setTimeout(() => { if (!lost) say("", "up"); }, 4000);
        } else {
          say("", "up");
        }
      });
      es.addEventListener("order", (ev) => onDoc(JSON.parse(ev.data)));
      es.addEventListener("error", () => {
        lost = true;
        say("Live connection lost: reconnecting…", "lost");
        if (es.readyState === EventSource.CLOSED) {
          es.close();
          retry = setTimeout(open, 2000);
        }
      });
    }
    open();
    return {
      close() { stopped = true; clearTimeout(retry); if (es) es.close(); say("", "closed"); },
    };
  }

  // Whether a page showing `shown` takes `doc`: another order, or the same one not older. The
  // POS raises an order's `version` at every change it publishes; the answer to the page's own
  // request (a refund, a cancel) can arrive after a newer server-sent message and must not put
  // the page back.
  function newer(shown, doc) {
    if (!shown || !doc || shown.order_id !== doc.order_id) return true;
    return !(Number.isInteger(doc.version) && Number.isInteger(shown.version) &&
             doc.version < shown.version);
  }

  return {$: $, el: el, showState: showState, showReceipt: showReceipt, countdown: countdown,
          watch: watch, newer: newer};
})();
