"""Probe an institution's webhook delivery with hostile receivers and SSRF targets; print counts.

Run: ``.venv/bin/python bench/webhook_probe.py [--src CHECKOUT/src] [--json]``

``--src`` picks the safescan sources the *server* runs (default: this checkout), so the same
probe measures a build before and after a change (``git worktree add /tmp/old <commit>``). The
probe's own clients and receivers come from this checkout. Each scenario starts a fresh server
(SQLite) on 127.0.0.1 and real receivers on 127.0.0.1; every sender is capped (256 MiB).

Scenarios and what is counted:

1. endless body: a receiver answers 200 and streams a body for ever (3 events). Bytes the
   receiver got rid of, the server's RSS growth, /health.
2. invalid URL in the database (``http://[::1``, written directly, as the old API accepted it):
   then a healthy merchant's 5 events. How many arrive within 20 s; /health.
3. slow receiver: a receiver drips its headers (never finishes); once it holds a connection, a
   healthy merchant's 5 events. How many arrive within 10 s.
4. SSRF: 24 internal targets through ``PUT /v1/merchant/webhook``. How many were accepted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

import httpx  # noqa: E402
from tests.institution.harness import (  # noqa: E402
    PASSPHRASE,
    MerchantClient,
    ServerProcess,
    World,
)
from tests.institution.pg import free_port  # noqa: E402
from tests.institution.receivers import (  # noqa: E402
    Listener,
    answer,
    drip_headers,
    endless_body,
    wait_until,
)
from tests.institution.test_webhook_ssrf import API_ATTACKS  # noqa: E402


class Server:
    """``safescan institution serve`` from ``src`` on 127.0.0.1, over a fresh SQLite file."""

    def __init__(self, src: Path, tmp: Path) -> None:
        self.env = dict(os.environ, PYTHONPATH=str(src), SAFESCAN_INSTITUTION_PASSPHRASE=PASSPHRASE)
        self.db_path = tmp / "i.db"
        db = f"sqlite:///{self.db_path}"
        py = sys.executable
        out = subprocess.run(
            [py, "-m", "safescan.institution", "init", "--db", db, "--keys", str(tmp / "k")],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        self.token = out.stdout.strip().splitlines()[-1]
        helptext = subprocess.run(
            [py, "-m", "safescan.institution", "serve", "--help"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        self.port = free_port()
        extra = ["--webhook-base-delay", "0.5", "--maintenance-interval", "60"]
        if "--plain-http" in helptext:  # newer versions serve HTTPS unless told otherwise
            extra.append("--plain-http")
        if "--webhook-allow" in helptext:  # the test receivers listen on 127.0.0.1 over http
            extra += ["--webhook-allow", "127.0.0.1", "--webhook-http"]
        self.log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                py,
                "-m",
                "safescan.institution",
                "serve",
                "--db",
                db,
                "--keys",
                str(tmp / "k"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *extra,
            ],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        assert wait_until(self._up, 60), (tmp / "server.log").read_text()[-2000:]
        server = cast(ServerProcess, SimpleNamespace(base_url=self.base))
        self.world = World(server, self.token)

    def _up(self) -> bool:
        try:
            return httpx.get(self.base + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def health(self) -> str:
        try:
            r = httpx.get(self.base + "/health", timeout=5)
            return f"{r.status_code} {r.json().get('webhooks', 'ok')}"
        except httpx.HTTPError as exc:
            return type(exc).__name__

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def store_url(self, mid: str, url: str) -> None:
        with sqlite3.connect(self.db_path, timeout=30) as conn:
            conn.execute("UPDATE merchants SET webhook_url = ? WHERE id = ?", (url, mid))

    def stop(self) -> None:
        self.world.close()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@contextlib.contextmanager
def server(src: Path) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="safescan-webhook-probe-") as d:
        s = Server(src, Path(d))
        try:
            yield s
        finally:
            s.stop()


def events(m: MerchantClient, n: int) -> None:
    for i in range(n):
        o = m.order([("Probe", 1, 100 + i)])
        m.request("POST", f"/v1/merchant/orders/{o['order_id']}/close")


def endless(src: Path) -> dict[str, Any]:
    rx = Listener(endless_body)
    with server(src) as s:
        try:
            m = s.world.merchant("Endless", webhook_url=rx.url)
            before = s.rss_mib()
            events(m, 3)
            time.sleep(15)
            return {
                "receiver sent (MiB)": round(rx.bytes_sent / 2**20, 1),
                "server RSS growth (MiB)": round(s.rss_mib() - before, 1),
                "health": s.health(),
            }
        finally:
            rx.close()


def invalid_url(src: Path) -> dict[str, Any]:
    good = Listener(answer(204))
    with server(src) as s:
        try:
            bad = s.world.merchant("Bad URL")
            s.store_url(bad.merchant_id, "http://[::1")  # httpx: InvalidURL, not an HTTPError
            events(bad, 2)
            time.sleep(2)
            m = s.world.merchant("Healthy", webhook_url=good.url)
            events(m, 5)
            wait_until(lambda: len(good.requests) >= 5, 20)
            return {"healthy delivered of 5 (20 s)": len(good.requests), "health": s.health()}
        finally:
            good.close()


def slow(src: Path) -> dict[str, Any]:
    drip, good = Listener(drip_headers), Listener(answer(204))
    with server(src) as s:
        try:
            events(s.world.merchant("Dripper", webhook_url=drip.url), 2)
            wait_until(lambda: drip.open >= 1, 20)
            events(s.world.merchant("Healthy", webhook_url=good.url), 5)
            wait_until(lambda: len(good.requests) >= 5, 10)
            return {"healthy delivered of 5 (10 s)": len(good.requests), "health": s.health()}
        finally:
            drip.close()
            good.close()


def ssrf(src: Path) -> dict[str, Any]:
    with server(src) as s:
        m = s.world.merchant("Attacker")
        accepted = sum(
            1
            for url in API_ATTACKS
            if m.request("PUT", "/v1/merchant/webhook", {"url": url}).status_code == 200
        )
        return {f"internal targets accepted of {len(API_ATTACKS)}": accepted}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", type=Path, default=ROOT / "src", help="sources the server runs")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", help="run one scenario (endless, invalid, slow, ssrf)")
    args = ap.parse_args()
    src = args.src.resolve()
    out = {}
    for name, fn in (
        ("endless body", endless),
        ("invalid URL", invalid_url),
        ("slow receiver", slow),
        ("SSRF", ssrf),
    ):
        if args.only and not name.lower().startswith(args.only.lower()):
            continue
        out[name] = fn(src)
        if not args.json:
            print(f"{name:15s} {out[name]}", flush=True)
    if args.json:
        print(json.dumps({"src": str(src), "results": out}))


if __name__ == "__main__":
    main()
