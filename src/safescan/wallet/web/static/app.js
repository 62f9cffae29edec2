// safescan wallet: the pages talk only to the wallet service on this origin (docs/apps.md).
// Every value from the service is put in the page with textContent, never as HTML.

import { askPin, setupPinPad } from "./pinpad.js";
import { DEFAULT_DECODER, Scanner, prewarm, timings } from "./scanner.js";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "safescan.wallet.session";
const FLOW = new Set(["checking", "offer", "pin", "paying", "refused", "other", "receipt", "failed"]);
const TITLES = {
  scan: "Scan to pay", offer: "Verified offer", refused: "Refused", pin: "PIN",
  receipt: "Paid", history: "History", balance: "Balance", carrier: "Key carrier",
  enroll: "Set up", pair: "Pair this browser",
};

let session = localStorage.getItem(SESSION_KEY);
let state = null; // the service's /api/state
let scanner = null;
let offer = null; // the open offer (from /api/scan)
let expiryTimer = null;

// --- the service ------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

async function api(path, { method = "GET", json, body, headers = {} } = {}) {
  const h = { ...headers };
  if (session) h.Authorization = `Bearer ${session}`;
  let payload = body;
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    payload = JSON.stringify(json);
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers: h, body: payload, cache: "no-store", credentials: "omit" });
  } catch {
    throw new ApiError("The wallet service does not answer. Is `safescan wallet serve` running?", "unreachable", 0);
  }
  let doc = null;
  try { doc = await resp.json(); } catch { doc = null; }
  if (!resp.ok) {
    const e = (doc && doc.error) || {};
    const err = new ApiError(e.message || `the service answered HTTP ${resp.status}`, e.code || `http_${resp.status}`, resp.status);
    if (err.code === "not_signed_in") {
      session = null;
      localStorage.removeItem(SESSION_KEY);
      show("pair");
    }
    throw err;
  }
  return doc;
}

// --- screens ----------------------------------------------------------------------------

function show(name) {
  if (name !== "scan" && scanner) scanner.stop();
  if (name !== "offer" && expiryTimer) { clearInterval(expiryTimer); expiryTimer = null; }
  for (const s of document.querySelectorAll("main > .screen")) s.hidden = s.id !== `screen-${name}`;
  document.body.classList.toggle("flow", FLOW.has(name) || name === "pair" || name === "enroll" || name === "loading");
  document.body.dataset.screen = name;
  document.title = `${TITLES[name] || "safescan"} · safescan wallet`;
  const tab = name === "change-pin" || name === "pin-changed" ? "carrier" : name;
  for (const a of document.querySelectorAll(".tabs a")) {
    if (a.dataset.tab === tab) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const heading = document.querySelector(`#screen-${name} h1`);
  if (heading) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
  window.scrollTo(0, 0);
}

function say(text) {
  $("announcer").textContent = "";
  setTimeout(() => { $("announcer").textContent = text; }, 50);
}

function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function when(ts) {
  return new Date(ts * 1000).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function humanReason(reason) { return String(reason || "").replace(/_/g, " "); }

// --- routing ----------------------------------------------------------------------------

async function route() {
  if (location.hash.startsWith("#pair=")) await pairFromLink();
  if (!session) { show("pair"); return; }
  if (!state) {
    try { state = await api("/api/state"); } catch (err) {
      if (err.code !== "not_signed_in") { $("pair-error").textContent = err.message; show("pair"); }
      return;
    }
  }
  $("top-status").textContent = state.enrolled ? `carrier ${state.carrier_serial}` : "not set up";
  if (state.enrolled) prewarm(decoderChoice());
  if (!state.enrolled) { showEnroll(); return; }
  const page = (location.hash.replace(/^#\/?/, "") || "scan").split("?")[0];
  if (page === "history") await showHistory();
  else if (page === "balance") await showBalance();
  else if (page === "carrier") await showCarrier();
  else if (page === "change-pin") await changePin();
  else startScan();
}

// --- pairing and enrollment -------------------------------------------------------------

async function pairFromLink() {
  const m = location.hash.match(/^#pair=([A-Za-z0-9_-]{16,128})$/);
  if (!m) return;
  history.replaceState(null, "", "/#/scan"); // the secret leaves the address bar at once
  try {
    const doc = await api("/api/pair", { method: "POST", json: { secret: m[1] } });
    session = doc.session;
    localStorage.setItem(SESSION_KEY, session);
  } catch (err) {
    $("pair-error").textContent = err.message;
  }
}

function showEnroll() {
  const d = (state && state.defaults) || {};
  if (d.institution_url && !$("enroll-institution").value) $("enroll-institution").value = d.institution_url;
  if (d.carrier_url && !$("enroll-carrier").value) $("enroll-carrier").value = d.carrier_url;
  show("enroll");
}

async function enroll(ev) {
  ev.preventDefault();
  const form = {
    institution_url: $("enroll-institution").value.trim(),
    carrier_url: $("enroll-carrier").value.trim(),
    token: $("enroll-token").value.trim(),
    institution_keys: $("enroll-keys").value.trim(),
  };
  $("enroll-error").textContent = "";
  const missing = [["institution_url", "the institution address"], ["carrier_url", "the key carrier address"], ["token", "the enrollment token"]]
    .filter(([k]) => !form[k]).map(([, label]) => label);
  if (missing.length) { $("enroll-error").textContent = `Fill in ${missing.join(", ")}.`; return; }
  const limits = { min: state.pin_min, max: state.pin_max };
  let error = "";
  for (;;) {
    const pin = await askPin(show, { title: "Choose a PIN", what: `${limits.min} to ${limits.max} digits, set on your key carrier`, error, ...limits });
    if (pin === null) { show("enroll"); return; }
    const again = await askPin(show, { title: "Repeat the PIN", ...limits });
    if (again === null) { show("enroll"); return; }
    if (again !== pin) { error = "The two PINs differ: choose again."; continue; }
    show("paying");
    $("paying-title").textContent = "Setting up your key carrier…";
    try {
      await api("/api/enroll", { method: "POST", json: { ...form, pin } });
    } catch (err) {
      $("enroll-error").textContent = err.message;
      show("enroll");
      return;
    }
    break;
  }
  $("paying-title").textContent = "Paying…";
  state = null;
  location.hash = "#/scan";
  await route();
}

// --- scanning ---------------------------------------------------------------------------

function decoderChoice() {
  const wanted = new URLSearchParams(location.search).get("decoder");
  return wanted === "server" || wanted === "wasm" ? wanted : DEFAULT_DECODER;
}

function scanStatus(text, hint) {
  if ($("scan-status").textContent !== text) $("scan-status").textContent = text;
  if (hint !== undefined && $("scan-hint").textContent !== hint) $("scan-hint").textContent = hint;
}

function startScan() {
  show("scan");
  offer = null;
  if (!scanner) {
    scanner = new Scanner({ video: $("camera"), api, decoder: decoderChoice(), onText: checkCode, onStatus: scanStatus });
  }
  scanStatus("Starting the camera…", "");
  scanner.start();
}

async function checkCode(text) {
  show("checking");
  let doc;
  try {
    doc = await api("/api/scan", { method: "POST", json: { text } });
  } catch (err) {
    showFailed("The code could not be checked", err.message, "Nothing was paid.");
    return;
  }
  timings.answered = performance.now();
  if (doc.result === "offer") showOffer(doc.offer);
  else if (doc.result === "refused") showRefused(doc);
  else if (doc.result === "not_payable") showOther(doc, text);
  else showFailed("The code could not be checked", doc.error.message, "Nothing was paid.");
}

async function pictureChosen() {
  const file = $("scan-picture").files[0];
  if (!file) return;
  try {
    const doc = await api("/api/picture", { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
    if (doc.texts.length === 1) { scanner && scanner.stop(); await checkCode(doc.texts[0]); }
    else scanStatus("Looking for a payment code…", doc.texts.length ? "The photo holds more than one code: crop it to the one to pay." : "No code could be read in that photo.");
  } catch (err) {
    scanStatus("Looking for a payment code…", err.message);
  }
  $("scan-picture").value = "";
}

async function textEntered() {
  const text = $("scan-text").value.trim();
  if (!text) return;
  if (scanner) scanner.stop();
  $("scan-text").value = "";
  await checkCode(text);
}

// --- the verified offer -----------------------------------------------------------------

function showOffer(o) {
  offer = o;
  $("offer-merchant").textContent = o.merchant.name;
  $("offer-where").textContent = `${o.merchant.city}, ${o.merchant.country}`;
  $("offer-who").textContent = (o.certificate_serial !== null && o.certificate_serial !== undefined
    ? `Merchant certificate ${o.certificate_serial}` : `Signed by the payment institution (key ${o.issuer_kid})`)
    + ` · merchant id ${o.merchant.id} · MCC ${o.merchant.mcc}`;
  const warnings = $("offer-warnings");
  clear(warnings);
  for (const w of o.warnings) warnings.appendChild(el("p", `Warning: ${w}`));
  warnings.hidden = o.warnings.length === 0;
  const body = document.querySelector("#offer-items tbody");
  clear(body);
  for (const i of o.items) {
    const tr = document.createElement("tr");
    tr.appendChild(el("td", i.name));
    tr.appendChild(el("td", String(i.quantity), "num"));
    tr.appendChild(el("td", i.display, "num"));
    body.appendChild(tr);
  }
  const isStatic = o.kind === "static";
  $("offer-items").hidden = isStatic && o.items.length === 0;
  $("offer-total").textContent = o.total_display || "";
  $("offer-static").hidden = !isStatic;
  $("offer-currency").textContent = o.currency || "";
  $("offer-amount").value = "";
  $("offer-tip").value = "";
  $("offer-sum").textContent = "-";
  $("offer-order").textContent = o.order_id || "-";
  $("offer-error").textContent = "";
  $("offer-pay").disabled = false;
  $("offer-pay").textContent = isStatic ? "Pay" : `Pay ${o.total_display}`;
  const deadline = Date.now() + o.expires_in * 1000;
  const tick = () => {
    const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
    $("offer-expiry").textContent = `${Math.floor(left / 60)} min ${String(left % 60).padStart(2, "0")} s`;
    if (left === 0) {
      $("offer-pay").disabled = true;
      $("offer-error").textContent = "This code has expired: ask the merchant for a new one.";
    }
  };
  tick();
  show("offer");
  expiryTimer = setInterval(tick, 1000);
  timings.offerShown = performance.now();
  say(`Verified: pay ${o.total_display || ""} to ${o.merchant.name}`);
}

function minorOf(id) {
  const raw = $(id).value.trim().replace(",", ".");
  const mu = offer.minor_units || 0;
  const re = mu ? new RegExp(`^(\\d{1,12})(?:\\.(\\d{1,${mu}}))?$`) : /^(\d{1,12})$/;
  const m = raw.match(re);
  if (!m) return null;
  return Number(m[1]) * 10 ** mu + Number((m[2] || "").padEnd(mu, "0") || 0);
}

// A static code's amount plus the optional tip (minor units), or null if either is not an amount.
function staticAmount() {
  const amount = minorOf("offer-amount");
  const tip = $("offer-tip").value.trim() === "" ? 0 : minorOf("offer-tip");
  if (amount === null || tip === null || amount <= 0) return null;
  return amount + tip;
}

function showStaticSum() {
  if (!offer || offer.kind !== "static") return;
  const total = staticAmount();
  const mu = offer.minor_units || 0;
  $("offer-sum").textContent = total === null ? "-" : `${(total / 10 ** mu).toFixed(mu)} ${offer.currency}`;
}

async function pay() {
  if (!offer) return;
  const o = offer;
  let amount;
  let shown = o.total_display;
  if (o.kind === "static") {
    amount = staticAmount();
    if (amount === null) { $("offer-error").textContent = `Enter the amount (and any tip) in ${o.currency}, for example 3.50.`; return; }
    shown = `${(amount / 10 ** (o.minor_units || 0)).toFixed(o.minor_units || 0)} ${o.currency}`;
  }
  let error = "";
  for (;;) {
    const pin = await askPin(show, { title: "Enter your PIN", what: `Pay ${shown} to ${o.merchant.name}`, error, min: state.pin_min, max: state.pin_max });
    if (pin === null) { await cancelOffer(); return; }
    timings.pinSubmitted = performance.now();
    show("paying");
    let doc;
    try {
      doc = await api(`/api/offers/${encodeURIComponent(o.offer_id)}/pay`, { method: "POST", json: amount === undefined ? { pin } : { pin, amount } });
    } catch (err) {
      showFailed("The payment could not be sent", err.message, "The outcome is not known here: check your history before paying again.", true);
      return;
    }
    if (doc.result === "wrong_pin") {
      if (doc.retries_left === 0) {
        showFailed("Wrong PIN too many times", "Your key carrier has destroyed its keys: it can never pay again.", "Nothing was paid.");
        return;
      }
      error = `Wrong PIN: ${doc.retries_left} ${doc.retries_left === 1 ? "try" : "tries"} left before the key carrier wipes itself.`;
      continue;
    }
    if (doc.result === "paid") { showReceipt(doc.payment); return; }
    const unknown = doc.outcome !== "not_paid";
    showFailed(
      unknown ? "The outcome of this payment is not known yet" : "Not paid",
      doc.error.message,
      unknown ? "Do not pay again: open your history in a moment to see whether it went through." : "Nothing was paid.",
      unknown,
    );
    return;
  }
}

async function cancelOffer() {
  const o = offer;
  offer = null;
  if (o) {
    try { await api(`/api/offers/${encodeURIComponent(o.offer_id)}/cancel`, { method: "POST", json: {} }); } catch { /* closed already */ }
  }
  say("Cancelled: nothing was paid");
  location.hash = "#/scan";
  startScan();
}

function showRefused(doc) {
  $("refused-reason").textContent = humanReason(doc.reason);
  $("refused-message").textContent = doc.message;
  $("screen-refused").dataset.reason = doc.reason;
  show("refused");
  say(`Refused: ${humanReason(doc.reason)}. Nothing was paid.`);
}

function showOther(doc, text) {
  const kinds = { emv: "An EMVCo QR code: unverified", url: "A link, not a payment code", text: "Text, not a payment code" };
  $("other-title").textContent = kinds[doc.kind] || "Not a payment code";
  $("other-message").textContent = doc.kind === "emv"
    ? "Anyone can print such a code: it carries no signature. It cannot be paid here."
    : "It was not opened or followed.";
  const dl = $("other-details");
  clear(dl);
  const summary = (doc.info && doc.info.summary) || {};
  for (const [k, v] of Object.entries(summary)) {
    dl.appendChild(el("dt", humanReason(k)));
    dl.appendChild(el("dd", Array.isArray(v) ? v.join(", ") : String(v)));
  }
  $("other-text").textContent = doc.kind === "emv" ? "" : text.slice(0, 500);
  $("other-text").hidden = doc.kind === "emv";
  show("other");
}

function showReceipt(p) {
  timings.receiptShown = performance.now();
  $("receipt-amount").textContent = p.amount_display;
  $("receipt-merchant").textContent = `${p.merchant_name}, ${p.merchant_city}`;
  $("receipt-payment").textContent = p.payment_id;
  $("receipt-order").textContent = p.order_id || "-";
  $("receipt-when").textContent = when(p.paid_at);
  $("receipt-verified").textContent = `Verified: signed by the institution (key ${p.issuer_kid}), matches this code, merchant, amount and currency`;
  offer = null;
  show("receipt");
  say(`Paid ${p.amount_display} to ${p.merchant_name}`);
}

function showFailed(title, message, outcome, unknown = false) {
  $("failed-badge").textContent = unknown ? "Outcome not known" : "Not paid";
  $("failed-badge").className = unknown ? "badge warn" : "badge bad";
  $("failed-title").textContent = title;
  $("failed-message").textContent = message;
  $("failed-outcome").textContent = outcome;
  $("screen-failed").dataset.outcome = unknown ? "unknown" : "not_paid";
  offer = null;
  show("failed");
}

// --- history, balance, carrier ----------------------------------------------------------

function paymentItem(p, extra) {
  const li = document.createElement("li");
  const row = el("p", null, "row");
  row.appendChild(el("span", `${p.merchant_name}, ${p.merchant_city}`));
  row.appendChild(el("span", p.amount_display || p.display));
  li.appendChild(row);
  li.appendChild(el("p", `${when(p.paid_at)} · ${p.payment_id}`, "sub"));
  if (extra) li.appendChild(extra);
  for (const r of p.refunds || []) li.appendChild(el("p", `Refunded ${r.display} on ${when(r.created_at)}`, "refund"));
  li.dataset.paymentId = p.payment_id;
  return li;
}

async function showHistory() {
  show("history");
  const list = $("history-list");
  $("history-error").textContent = "";
  let doc;
  try { doc = await api("/api/history?limit=100"); } catch (err) { $("history-error").textContent = err.message; return; }
  clear(list);
  for (const p of doc.payments) {
    const items = (p.items || []).map(([n, q]) => `${q}× ${n}`).join(", ");
    list.appendChild(paymentItem(p, items ? el("p", items, "sub") : null));
  }
  $("history-empty").hidden = doc.payments.length > 0;
  $("history-note").hidden = doc.refunds_checked;
  $("history-note").textContent = doc.refunds_checked ? "" : `Refunds not checked: ${doc.refunds_error}`;
}

async function showBalance() {
  show("balance");
  $("balance-error").textContent = "";
  const list = $("balance-list");
  const pays = $("balance-payments");
  clear(list);
  clear(pays);
  let doc;
  try { doc = await api("/api/balance"); } catch (err) { $("balance-error").textContent = err.message; return; }
  const balances = doc.balances.length ? doc.balances : [{ display: "0 (no account yet)" }];
  for (const b of balances) list.appendChild(el("li", b.display));
  for (const p of doc.payments) pays.appendChild(paymentItem(p));
  $("balance-empty").hidden = doc.payments.length > 0;
}

async function showCarrier() {
  show("carrier");
  $("carrier-error").textContent = "";
  const dl = $("carrier-details");
  const notices = $("carrier-notices");
  clear(dl);
  clear(notices);
  $("carrier-state").textContent = "Checking…";
  $("carrier-state").className = "badge";
  let doc;
  try { doc = await api("/api/status"); } catch (err) { $("carrier-error").textContent = err.message; return; }
  const c = doc.carrier;
  const rows = [["Serial", String(doc.carrier_serial)], ["Address", doc.carrier_url], ["Institution", doc.institution_url]];
  if (c.reachable) {
    $("carrier-state").textContent = c.lifecycle === "personalized" || c.lifecycle === "locked" ? "✓ Ready" : c.lifecycle;
    $("carrier-state").className = "badge ok";
    rows.push(["State", `${c.lifecycle} (firmware ${c.version})`]);
    rows.push(["PIN tries left", `${c.pin_retries_left} of ${c.pin_retry_limit}`]);
    rows.push(["Payments signed", String(c.signature_counter)]);
    rows.push(["Revocation list", `${c.revocations_sequence} on the carrier, ${doc.revocation_list.sequence ?? "none"} here (${doc.revocation_list.source})`]);
    for (const n of c.notices) notices.appendChild(el("li", n));
  } else {
    $("carrier-state").textContent = "Not reachable";
    $("carrier-state").className = "badge bad";
    $("carrier-error").textContent = c.error;
  }
  for (const [k, v] of rows) { dl.appendChild(el("dt", k)); dl.appendChild(el("dd", v)); }
  dl.dataset.retriesLeft = c.reachable ? String(c.pin_retries_left) : "";
}

async function changePin() {
  const limits = { min: state.pin_min, max: state.pin_max };
  let error = "";
  for (;;) {
    const old = await askPin(show, { title: "Current PIN", what: "Changing the key carrier's PIN", error, ...limits });
    if (old === null) { location.hash = "#/carrier"; return; }
    const fresh = await askPin(show, { title: "New PIN", what: `${limits.min} to ${limits.max} digits`, ...limits });
    if (fresh === null) { location.hash = "#/carrier"; return; }
    const again = await askPin(show, { title: "Repeat the new PIN", ...limits });
    if (again === null) { location.hash = "#/carrier"; return; }
    if (again !== fresh) { error = "The new PINs differ: start again."; continue; }
    show("paying");
    $("paying-title").textContent = "Changing the PIN on your key carrier…";
    let doc;
    try {
      doc = await api("/api/change-pin", { method: "POST", json: { old, new: fresh } });
    } catch (err) {
      $("paying-title").textContent = "Paying…";
      showPinChanged("The PIN was not changed", err.message);
      return;
    }
    $("paying-title").textContent = "Paying…";
    if (doc.result === "wrong_pin") {
      if (doc.retries_left === 0) { showPinChanged("Wrong PIN too many times", "Your key carrier has destroyed its keys."); return; }
      error = `Wrong current PIN: ${doc.retries_left} ${doc.retries_left === 1 ? "try" : "tries"} left. The PIN was not changed.`;
      continue;
    }
    if (doc.result === "changed") showPinChanged("PIN changed", "Your key carrier now asks for the new PIN.");
    else showPinChanged("The PIN was not changed", doc.error.message);
    return;
  }
}

function showPinChanged(title, message) {
  $("pin-changed-title").textContent = title;
  $("pin-changed-message").textContent = message;
  show("pin-changed");
  say(title);
}

// --- start ------------------------------------------------------------------------------

function wire() {
  setupPinPad();
  $("enroll-form").addEventListener("submit", enroll);
  $("offer-pay").addEventListener("click", pay);
  for (const id of ["offer-amount", "offer-tip"]) $(id).addEventListener("input", showStaticSum);
  $("offer-cancel").addEventListener("click", cancelOffer);
  $("refused-again").addEventListener("click", () => { location.hash = "#/scan"; startScan(); });
  $("other-again").addEventListener("click", () => { location.hash = "#/scan"; startScan(); });
  $("receipt-done").addEventListener("click", () => { location.hash = "#/history"; });
  $("failed-again").addEventListener("click", () => { location.hash = "#/scan"; startScan(); });
  $("failed-history").addEventListener("click", () => { location.hash = "#/history"; });
  $("carrier-change-pin").addEventListener("click", () => { location.hash = "#/change-pin"; });
  $("carrier-refresh").addEventListener("click", showCarrier);
  $("pin-changed-done").addEventListener("click", () => { location.hash = "#/carrier"; });
  $("scan-picture").addEventListener("change", pictureChosen);
  $("scan-text-go").addEventListener("click", textEntered);
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => {
    if (document.hidden && scanner) scanner.stop();
    else if (!document.hidden && document.body.dataset.screen === "scan") startScan();
  });
}

async function main() {
  wire();
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => {});
  }
  await route();
  document.body.dataset.ready = "1";
}

main();
