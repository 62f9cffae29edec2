// The wallet app's service worker: the app shell (pages, scripts, styles, icons) is cached so
// the app opens without the network and installs; the API is never cached or stored here.
const CACHE = "safescan-wallet-__ASSETS_VERSION__";
const SHELL = [
  "/",
  "/manifest.webmanifest",
  "/static/app.css",
  "/static/app.js",
  "/static/pinpad.js",
  "/static/scanner.js",
  "/static/scan-worker.js",
  "/static/icons/icon.svg",
  "/static/icons/icon-192.png",
  "/static/icons/icon-512.png",
];

self.addEventListener("install", (ev) => {
  ev.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (ev) => {
  ev.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (ev) => {
  const url = new URL(ev.request.url);
  if (ev.request.method !== "GET" || url.origin !== self.location.origin) return;
  if (url.pathname.startsWith("/api/") || url.pathname === "/health") return; // always live
  const key = url.pathname === "/" ? "/" : url.pathname;
  ev.respondWith(
    // network first (a running service has the newest files), the cached shell when offline
    fetch(ev.request).catch(() => caches.match(key).then((hit) => hit || Response.error())),
  );
});
