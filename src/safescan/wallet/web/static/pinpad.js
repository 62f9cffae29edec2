// The PIN pad: digits stay in this closure until OK, then go to the caller once and are dropped.
// Nothing is written to storage, the address bar, the console or the DOM (only dots are shown).

const $ = (id) => document.getElementById(id);

let active = null; // {resolve, digits, min, max}

function render() {
  const n = active ? active.digits.length : 0;
  const dots = $("pin-dots");
  dots.textContent = "●".repeat(n);
  dots.setAttribute("aria-label", n === 1 ? "1 digit entered" : `${n} digits entered`);
  dots.dataset.count = String(n);
  $("pin-ok").disabled = !active || n < active.min;
}

function press(digit) {
  if (!active || active.digits.length >= active.max) return;
  active.digits += digit;
  render();
}

function erase() {
  if (!active) return;
  active.digits = active.digits.slice(0, -1);
  render();
}

function finish(value) {
  if (!active) return;
  const { resolve } = active;
  active.digits = "";
  active = null;
  render();
  resolve(value);
}

export function setupPinPad() {
  for (const b of document.querySelectorAll(".pinpad [data-digit]")) {
    b.addEventListener("click", () => press(b.dataset.digit));
  }
  $("pin-delete").addEventListener("click", erase);
  $("pin-ok").addEventListener("click", () => active && finish(active.digits));
  $("pin-cancel").addEventListener("click", () => finish(null));
  document.addEventListener("keydown", (ev) => {
    if (!active || $("screen-pin").hidden) return;
    if (/^[0-9]$/.test(ev.key)) { press(ev.key); ev.preventDefault(); }
    else if (ev.key === "Backspace") { erase(); ev.preventDefault(); }
    else if (ev.key === "Enter" && active.digits.length >= active.min) {
      finish(active.digits); ev.preventDefault();
    } else if (ev.key === "Escape") { finish(null); ev.preventDefault(); }
  });
  render();
}

// Show the pad; resolves with the digits, or null when cancelled.
// `show` switches to the PIN screen (the app's screen switcher).
export function askPin(show, { title, what = "", error = "", min = 4, max = 12 }) {
  if (active) finish(null);
  $("pin-title").textContent = title;
  $("pin-what").textContent = what;
  $("pin-error").textContent = error;
  return new Promise((resolve) => {
    active = { resolve, digits: "", min, max };
    render();
    show("pin");
  });
}
