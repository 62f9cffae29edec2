"""Helpers for the wallet app's browser tests and benchmark: the service as a real process,
Debian's headless Chromium with a fake camera, and axe-core.

Chromium is /usr/bin/chromium through Playwright (never a downloaded browser); each launch has
a new empty profile (``--user-data-dir``) and plays a Y4M file as the camera.
"""

from __future__ import annotations

import json
import re
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from safescan.demo import Stack
from safescan.procs import ManagedProcess, free_port

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
BASE_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
PHONE = {"width": 390, "height": 844}
ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts"
SCREEN_TIMEOUT = 60_000
#: Conditions on the page are polled on a timer, never on animation frames (Playwright's
#: default for wait_for_function and what wait_for_selector's visibility check rides on): a
#: headless Chromium on a loaded machine, busy with the fake camera's video and the scanner,
#: renders few frames, so a condition true since the tenth scanned frame was seen 33 s later
#: and a `data-ready` body already there timed out after 30 s (the flaky sticker test).
POLL_MS = 250
#: How long a screenshot may wait for the page to render one frame (bounded, not measured).
SHOT_TIMEOUT = 120_000
#: The bound of every other Playwright call (ms): far above what any call takes on a loaded
#: machine, far below pytest's 300 s timeout, so a hung call fails naming itself. Contexts and
#: pages get it as their default (:func:`bound`); page.evaluate has no timeout of its own, so
#: it goes through :func:`evaluate`.
CALL_TIMEOUT = 90_000


@dataclass
class WalletServer:
    """``safescan wallet serve`` running as its own process."""

    proc: ManagedProcess
    url: str
    pair_url: str

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        self.proc.stop()


def start_wallet_server(
    stack: Stack,
    wallet_dir: Path,
    name: str,
    *extra: str,
    verify: Path | None = None,
    env: dict[str, str] | None = None,
) -> WalletServer:
    """Start the wallet app on a free loopback port; wait for its READY and PAIR lines and its
    /health (``verify``: the CA file to trust when it serves HTTPS; ``env``: added to the
    stack's environment)."""
    proc = ManagedProcess(
        name,
        [
            sys.executable,
            "-m",
            "safescan",
            "wallet",
            "serve",
            "--wallet-dir",
            str(wallet_dir),
            "--port",
            str(free_port()),  # reserved for this process: never a port another one holds
            *extra,
        ],
        env={**stack.env(), **(env or {})},
        log=stack.workdir / f"{name}.log",
        capture=True,
    ).start()
    stack.processes.append(proc)
    url = proc.ready_line("READY")
    pair = proc.ready_line("PAIR")
    deadline = time.monotonic() + 30
    while True:
        try:
            trust = ssl.create_default_context(cafile=str(verify)) if verify else True
            if httpx.get(url + "/health", verify=trust).is_success:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not proc.alive():
            proc.stop()
            raise AssertionError(f"{name} did not answer: {proc.tail()}")
        time.sleep(0.05)
    return WalletServer(proc, url, pair)


def api_headers(server: WalletServer) -> dict[str, str]:
    """Headers of a new session paired over HTTP (what the page does with the PAIR link)."""
    origin = {"Origin": server.url}
    secret = server.pair_url.split("#pair=", 1)[1]
    r = httpx.post(server.url + "/api/pair", json={"secret": secret}, headers=origin)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['session']}", **origin}


@contextmanager
def headless_chromium(*args: str) -> Iterator[Any]:
    """Chromium (:data:`CHROMIUM`) launched headless through Playwright with ``args``, closed at
    the end; the test is skipped where it is not installed."""
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        import pytest

        pytest.skip(f"browser tests need Chromium at {CHROMIUM}")
    from playwright import sync_api

    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=list(args), headless=True)
        try:
            yield b
        finally:
            b.close()


def chromium_args(video: Path | None) -> list[str]:
    """Chromium's flags, with ``video`` as the camera (or no camera at all)."""
    args = list(BASE_ARGS)
    if video is not None:
        args += [
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video}",
            "--use-fake-ui-for-media-stream",
        ]
    return args


@contextmanager
def phone(pw: Any, video: Path | None, *, viewport: dict[str, int] = PHONE) -> Iterator[Any]:
    """A Chromium context at phone size, with a fresh empty profile and ``video`` as camera."""
    profile = Path(tempfile.mkdtemp(prefix="safescan-chromium-"))
    ctx = pw.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        headless=True,
        args=chromium_args(video),
        viewport=viewport,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        permissions=["camera"],
    )
    bound(ctx)
    try:
        yield ctx
    finally:
        ctx.close()
        shutil.rmtree(profile, ignore_errors=True)


def record_screens(page: Any) -> None:
    """Keep every screen the app shows, in order, in ``window.__screens``."""
    page.add_init_script(
        """
        window.__screens = [];
        new MutationObserver(() => {
          const s = document.body && document.body.dataset.screen;
          if (s && window.__screens[window.__screens.length - 1] !== s) window.__screens.push(s);
        }).observe(document, {attributes: true, subtree: true, attributeFilter: ["data-screen"]});
        """
    )


def open_paired(ctx: Any, server: WalletServer, path: str = "") -> Any:
    """A page paired with the service (through its PAIR link), on ``path`` if given."""
    page = ctx.new_page()
    record_screens(page)
    page.goto(server.pair_url)
    wait_for(page, "document.body && document.body.dataset.ready === '1'", SCREEN_TIMEOUT)
    if path:
        page.goto(server.url + path)
        wait_for(page, "document.body && document.body.dataset.ready === '1'", SCREEN_TIMEOUT)
    return page


def bound(target: Any) -> Any:
    """Give a Playwright context or page (``target``, returned) :data:`CALL_TIMEOUT` as the
    default timeout of its actions, waits and navigations (Playwright's own is 30 s, which a
    loaded machine can reach)."""
    target.set_default_timeout(CALL_TIMEOUT)
    target.set_default_navigation_timeout(CALL_TIMEOUT)
    return target


def evaluate(page: Any, function: str, arg: Any = None, *, timeout: float = CALL_TIMEOUT) -> Any:
    """``page.evaluate(function, arg)``, bounded: an AssertionError naming the call when it has
    not returned within ``timeout`` ms (page.evaluate itself waits for ever: a renderer that
    never ran it held a test until pytest's 300 s timeout).

    ``function`` is JavaScript function text ("() => ...", "async () => ...", "(arg) => ...");
    its value must be JSON. It runs once, through Playwright's wait_for_function (a function is
    evaluated once, so a page's CSP does not matter; its timeout is kept by Playwright's driver,
    not by the page), and comes back as a JSON string, a primitive that needs no second call
    to the page."""
    text = function.strip()
    if not text.startswith(("(", "async ", "function")):
        raise ValueError(f"evaluate takes a function, not an expression: {function!r}")
    wrapped = f"async (arg) => JSON.stringify({{value: await ({text})(arg)}})"
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        handle = page.wait_for_function(wrapped, arg=arg, polling=POLL_MS, timeout=timeout)
    except PlaywrightTimeout as exc:
        short = " ".join(text.split())[:160]
        raise AssertionError(
            f"page.evaluate did not return within {timeout / 1000:g} s: {short}"
        ) from exc
    return json.loads(handle.json_value()).get("value")


def wait_for(page: Any, condition: str, timeout: float) -> None:
    """Wait (at most ``timeout`` ms) until the JavaScript expression ``condition`` is true,
    checking it every :data:`POLL_MS` (see there why not on animation frames)."""
    page.wait_for_function(f"() => Boolean({condition})", polling=POLL_MS, timeout=timeout)


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (WCAG 2.x A and AA, best practices)."""
    if not evaluate(page, "() => typeof window.axe !== 'undefined'"):
        evaluate(
            page,
            "(source) => { (0, eval)(source); return typeof window.axe; }",
            AXE.read_text(encoding="utf-8"),
        )
    result = evaluate(
        page,
        """async () => {
          const r = await axe.run(document, {resultTypes: ['violations']});
          return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                         nodes: v.nodes.map(n => n.target.join(' '))}));
        }""",
    )
    return list(result)


def press_pin(page: Any, pin: str) -> None:
    """Tap the PIN on the pad, then OK."""
    for digit in pin:
        page.locator(f".pinpad [data-digit='{digit}']").click()
    page.locator("#pin-ok").click()


def shot(page: Any, name: str) -> None:
    """A full-page screenshot in artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(
        path=str(ARTIFACTS / f"wallet-app-{name}.png"), full_page=True, timeout=SHOT_TIMEOUT
    )


def pause_scanner(page: Any) -> bool:
    """Stop the app's camera scanner the way the app itself does when its page is hidden
    (app.js: ``visibilitychange`` with ``document.hidden`` stops it; shown again on the scan
    screen, it starts again): ``document.hidden`` is made true for this page and the event
    sent. True when it was scanning (the scan screen); the camera is then released (the
    video has no stream), so no frame is decoded (in Chromium or posted to /api/decode) while
    a test checks or photographs the screen. Not resumed: every caller is done scanning."""
    return bool(
        evaluate(
            page,
            """() => {
              if (document.body.dataset.screen !== 'scan') return false;
              Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
              document.dispatchEvent(new Event('visibilitychange'));
              if (document.getElementById('camera').srcObject !== null)
                throw new Error('the scanner did not stop on visibilitychange');
              return true;
            }""",
        )
    )


def check_screen(page: Any, name: str) -> None:
    """No axe-core violation, nothing wider than the phone, every button thumb-sized (the
    scanner paused first on the scan screen: :func:`pause_scanner`; its screenshot shows the
    screen without the camera picture)."""
    pause_scanner(page)
    violations = axe_violations(page)
    assert violations == [], f"{name}: {violations}"
    assert evaluate(page, "() => document.documentElement.scrollWidth") <= PHONE["width"], name
    small = evaluate(
        page,
        """() => [...document.querySelectorAll('button, a, input, summary')]
             .filter(e => e.offsetParent !== null && e.type !== 'hidden')
             .map(e => [e.id || e.textContent.trim(), e.getBoundingClientRect().height])
             .filter(([, h]) => h < 48)""",
    )
    assert small == [], f"{name}: controls under 48 px: {small}"
    shot(page, name)


def watch_requests(ctx: Any, pattern: str) -> list[str]:
    """The URLs of the requests of ``ctx`` whose URL matches the regular expression
    ``pattern``, appended as they go out (each then goes on unchanged).

    Through a route, whose pattern Playwright's driver matches itself, never a
    ``ctx.on("request")`` listener: a listener has the driver send this process every request,
    with its body, and its response: with the service decoding, every scanned frame is a POST
    /api/decode of the frame (960x540 grey: ~0.5 MB, ~0.7 MB as base64 JSON), several a second
    for as long as the page scans. A loaded machine's test process fell behind that stream, and
    every answer of the driver queued behind it, a timeout's too: check_screen's calls waited
    until pytest's 300 s timeout (the [server] sticker test; the no-code clip here)."""
    seen: list[str] = []

    def record(route: Any) -> None:
        seen.append(route.request.url)
        route.continue_()

    ctx.route(re.compile(pattern), record)
    return seen


def collect_errors(page: Any) -> list[str]:
    """Script errors and console errors (an HTTP error status the app expects and shows is
    not one: Chromium logs those as "Failed to load resource")."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    return errors


def wait_screen(page: Any, name: str) -> None:
    """Wait until the app shows screen ``name``."""
    wait_for(page, f"document.body && document.body.dataset.screen === {name!r}", SCREEN_TIMEOUT)
