// The hosted checkout page (safescan.institution.http.checkout): shows the session read from
// /checkout/{id}/session, follows its status over server-sent events (reconnecting when the
// connection drops, and saying so), and sends the browser to the merchant's success_url once
// paid. Everything shown is set with textContent; the only URLs navigated to are the ones the
// institution checked when the session was made (https, or http on loopback).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const match = /^\/checkout\/(cs_[A-Z2-9]{26})$/.exec(location.pathname);
  const sid = match ? match[1] : null;
  let session = null;
  let skew = 0; // server clock minus this browser's, seconds
  let source = null;
  let retry = null;
  let ticker = null;
  let leaving = false;

  function show(el, on) { el.classList.toggle("hidden", !on); }

  function safeUrl(text) {
    try {
      const u = new URL(text);
      return u.protocol === "https:" || u.protocol === "http:" ? u.href : null;
    } catch (e) {
      return null;
    }
  }

  function say(text) { $("state").textContent = text; }

  function connection(text) {
    $("connection").textContent = text || "";
    show($("connection"), Boolean(text));
  }

  function render(s) {
    session = s;
    skew = s.now - Date.now() / 1000;
    document.title = "Pay " + s.merchant.name;
    $("merchant").textContent = "Pay " + s.merchant.name;
    $("city").textContent = s.merchant.city;
    const body = $("items");
    body.textContent = "";
    for (const it of s.items) {
      const tr = document.createElement("tr");
      for (const [text, cls] of [[it.name, ""], [String(it.quantity), "num"], [it.display, "num"]]) {
        const td = document.createElement("td");
        td.textContent = text;
        if (cls) td.className = cls;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    $("total").textContent = s.total_display;
    $("qr-total").textContent = s.total_display;
    $("qr").alt = "Payment code for " + s.total_display + " to " + s.merchant.name;
    const cancel = safeUrl(s.cancel_url);
    if (cancel) { $("cancel").href = cancel; $("continue").href = cancel; }
    show($("basket"), true);
    status(s.status);
    document.body.dataset.ready = "1";
  }

  function status(st) {
    document.body.dataset.status = st;
    const open = st === "open";
    show($("code"), open);
    show($("countdown"), open);
    show($("cancel"), open);
    show($("continue"), st === "expired" || st === "canceled");
    if (open) {
      if (!$("qr").getAttribute("src")) $("qr").src = "/checkout/" + sid + "/qr.svg";
      say("Waiting for your payment…");
      tick();
      if (!ticker) ticker = setInterval(tick, 1000);
      return;
    }
    clearInterval(ticker);
    ticker = null;
    $("qr").removeAttribute("src");
    if (source) { source.close(); source = null; }
    clearTimeout(retry);
    connection("");
    if (st === "complete") {
      say("Paid. Thank you! Returning to the shop…");
      const next = safeUrl(session.success_url);
      if (next && !leaving) {
        leaving = true;
        location.assign(next);
      }
    } else if (st === "expired") {
      say("This checkout has expired. Nothing was paid.");
    } else if (st === "canceled") {
      say("This checkout was canceled. Nothing was paid.");
    }
  }

  function tick() {
    if (!session) return;
    const left = Math.max(0, Math.round(session.expires_at - (Date.now() / 1000 + skew)));
    const m = Math.floor(left / 60);
    const s = String(left % 60).padStart(2, "0");
    $("countdown").textContent = left > 0 ? "Code expires in " + m + ":" + s : "The code has expired.";
    if (left === 0) load(); // the server says what happened (paid at the last second?)
  }

  function listen() {
    if (source) source.close();
    source = new EventSource("/checkout/" + sid + "/events");
    source.onopen = () => connection("");
    source.addEventListener("status", (ev) => {
      connection("");
      let st = null;
      try { st = JSON.parse(ev.data).status; } catch (e) { return; }
      if (st && session && st !== document.body.dataset.status) status(st);
    });
    source.onerror = () => {
      if (document.body.dataset.status !== "open") return;
      connection("Live connection lost. Reconnecting…");
      if (source && source.readyState === EventSource.CLOSED) {
        // the browser gave up (an error answer): try again, and catch up on what was missed
        clearTimeout(retry);
        retry = setTimeout(() => { load().then(() => { if (document.body.dataset.status === "open") listen(); }); }, 2000);
      }
    };
  }

  async function load() {
    try {
      const r = await fetch("/checkout/" + sid + "/session", {cache: "no-store"});
      if (!r.ok) {
        if (r.status === 404) {
          $("merchant").textContent = "Checkout not found";
          say("This checkout does not exist.");
          document.body.dataset.status = "unknown";
          document.body.dataset.ready = "1";
        }
        return;
      }
      const s = await r.json();
      if (!session) render(s);
      else if (s.status !== document.body.dataset.status) { session = s; status(s.status); }
    } catch (e) {
      connection("Live connection lost. Reconnecting…");
    }
  }

  if (!sid) {
    say("This checkout link is not valid.");
    return;
  }
  load().then(() => { if (document.body.dataset.status === "open") listen(); });
})();
