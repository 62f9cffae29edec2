"""Fault probe of issue 12 (items 1-3): runs each fault against real servers and prints counts.

Not part of the pass/fail suite (tests/faults/ asserts the guarantees); this prints, for each
fault, how many requests were tried and how many outcomes were wrong, so the same command can
be run before and after a fix::

    .venv/bin/python bench/fault_probe.py --scenario all --backend both

It only uses the API every version of the institution has (payments, refunds, /health), so it
runs on old and new code alike.

Scenarios:

* ``idem-race``: one payment sent N times at once with the same Idempotency-Key (a wallet's
  retries racing the first attempt). Wrong = any answer other than the first success (same
  body) or ``409 request_in_progress``.
* ``wallet-stop``: the institution is SIGSTOPped while a wallet (real key carrier process)
  pays, then SIGCONTed. Wrong = the wallet said "nothing was charged" although the customer
  was charged, or kept no receipt of a payment that was made.
* ``clock-jump``: a signed merchant refund is captured; the institution's wall clock (libfaketime
  on the server process) jumps forward an hour, the maintenance sweep runs, the clock comes
  back; the captured request is replayed (as captured, and with another Idempotency-Key).
  Wrong = a replay that was applied.
* ``writer-fds``: the institution runs with RLIMIT_NOFILE 160 and a crowd of idle connections;
  writes are sent. Wrong = a write that hangs (no answer within 20 s), or ``/health`` saying
  ok while writes cannot be done.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.institution.harness import (  # noqa: E402
    ServerProcess,
    World,
    b64,
    env,
    init_db,
)
from tests.institution.pg import Cluster, start_cluster  # noqa: E402

from safescan.api import merchant_auth  # noqa: E402

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


def signed(m: Any, method: str, path: str, body: bytes, key: str | None) -> dict[str, str]:
    """Merchant headers, signing the Idempotency-Key where this version of the code can."""
    params = inspect.signature(merchant_auth.sign_request).parameters
    if key is not None and "idempotency_key" in params:
        h = merchant_auth.sign_request(
            m.key, m.merchant_id, method, path, body, idempotency_key=key
        )
    else:
        h = merchant_auth.sign_request(m.key, m.merchant_id, method, path, body)
    h["Content-Type"] = "application/json"
    if key is not None:
        h["Idempotency-Key"] = key
    return h


@contextlib.contextmanager
def database(backend: str, tmp: Path, cluster: Cluster | None) -> Iterator[str]:
    """A fresh database URL."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'institution.db'}"
    else:
        assert cluster is not None
        yield cluster.create_database()


# --- 1. concurrent retries with one Idempotency-Key -------------------------------------------


def idem_race(
    backend: str, cluster: Cluster | None, rounds: int = 20, fan: int = 8
) -> dict[str, Any]:
    """Same payment, same key, ``fan`` requests at once, ``rounds`` times."""
    with (
        tempfile.TemporaryDirectory(prefix="probe-") as d,
        database(backend, Path(d), cluster) as db,
    ):
        token = init_db(db, Path(d) / "keys")
        server = ServerProcess(db, Path(d) / "keys", extra=["--merchant-rate", "0"], tls=True)
        server.start()
        w = World(server, token)
        wrong: dict[str, int] = {}
        total = 0
        try:
            m = w.merchant()
            cid = w.customer({"EUR": 10_000_000})
            carrier = w.carrier(cid)
            clients = [server.client(timeout=30) for _ in range(fan)]
            for r in range(rounds):
                o = m.order([("Race", 1, 100 + r)])
                auth = carrier.authorize(o["code"])
                body = {"code": o["code"], "authorization": b64(auth.to_bytes())}
                barrier = threading.Barrier(fan)

                def send(
                    i: int,
                    body: dict[str, Any] = body,
                    barrier: Any = barrier,
                    key: str = f"race-{r}",
                ) -> Any:
                    barrier.wait()
                    return clients[i].post(
                        "/v1/payments", json=body, headers={"Idempotency-Key": key}
                    )

                with ThreadPoolExecutor(fan) as pool:
                    answers = list(pool.map(send, range(fan)))
                ok = [a.json() for a in answers if a.status_code == 201]
                total += fan
                for a in answers:
                    if a.status_code == 201 and a.json() == ok[0]:
                        continue
                    code = a.json().get("error", {}).get("code", "?")
                    if a.status_code == 409 and code == "request_in_progress":
                        continue
                    key = f"{a.status_code} {code}"
                    wrong[key] = wrong.get(key, 0) + 1
            for c in clients:
                c.close()
        finally:
            w.close()
            server.stop()
    return {"requests": total, "wrong": sum(wrong.values()), "wrong_answers": wrong}


# --- 1. the wallet while the institution is stopped --------------------------------------------


def wallet_stop(rounds: int = 3, timeout: float = 2.0) -> dict[str, Any]:
    """SIGSTOP the institution under a real wallet payment; SIGCONT after the wallet answered."""
    from rich.console import Console  # noqa: F401 - the demo's dependency

    from safescan.client.wallet import WalletClient
    from safescan.demo import DEMO_PIN, Stack
    from safescan.merchant.client import MerchantApi
    from safescan.wallet.flow import Wallet

    tmp = Path(tempfile.mkdtemp(prefix="probe-wallet-"))
    stack = Stack(tmp)
    said_not_charged_but_charged = 0
    no_receipt_for_payment = 0
    charged_count = 0
    said: list[str] = []
    try:
        stack.begin_institution_init()
        stack.start_institution()
        pos = stack.onboard_merchant()
        _proc, carrier_url = stack.start_carrier("carrier-p")
        cid = stack.customer("Probe", fund=1_000_000)
        wallet_dir = stack.enroll_wallet(cid, carrier_url, name="wallet-p")
        inst = next(p for p in stack.processes if p.name == "institution")
        from safescan.code import LineItem

        with MerchantApi(pos) as api:
            for _ in range(rounds):
                wallet = Wallet.load(wallet_dir)
                wallet.api.close()
                wallet.api = WalletClient(stack.base_url, timeout=timeout)
                order = api.create_order([LineItem("Tea", 1, 250)], currency="EUR")
                before = stack.need_admin().customers.balance(cid, "EUR")
                offer = wallet.open(order.code)
                message = ""
                try:
                    offer.verify_pin(DEMO_PIN)
                    os.kill(inst.pid, signal.SIGSTOP)
                    try:
                        offer.pay(None)
                        message = "paid"
                    except Exception as exc:  # noqa: BLE001 - what the wallet tells the customer
                        message = getattr(exc, "message", str(exc))
                finally:
                    os.kill(inst.pid, signal.SIGCONT)
                    offer.close()
                time.sleep(1.5)
                if hasattr(wallet, "resolve_pending"):  # a wallet that finds out afterwards
                    wallet.resolve_pending()
                charged = stack.need_admin().customers.balance(cid, "EUR") != before
                receipts = len(wallet.history.recent())
                charged_count += int(charged)
                said.append(message[:160])
                if charged and "nothing was charged" in message:
                    said_not_charged_but_charged += 1
                if charged and receipts == 0:
                    no_receipt_for_payment += 1
                wallet.history.db.execute("DELETE FROM payments")
                wallet.history.db.commit()
                wallet.close()
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "payments": rounds,
        "charged": charged_count,
        "wrong": said_not_charged_but_charged,
        "said_nothing_charged_but_charged": said_not_charged_but_charged,
        "charged_without_receipt": no_receipt_for_payment,
        "wallet_said": said,
    }


# --- 2. refund replay across wall-clock jumps ---------------------------------------------------


def clock_jump(backend: str, cluster: Cluster | None, rounds: int = 3) -> dict[str, Any]:
    """Capture signed refunds; jump the server clock +1 h, sweep, jump back, replay them."""
    if not Path(FAKETIME_LIB).exists():
        return {"skipped": "libfaketime is not installed (apt-get install faketime)"}
    with (
        tempfile.TemporaryDirectory(prefix="probe-") as d,
        database(backend, Path(d), cluster) as db,
    ):
        tmp = Path(d)
        token = init_db(db, tmp / "keys")
        clock = tmp / "faketime"
        clock.write_text("+0\n")
        extra_env = {
            "LD_PRELOAD": FAKETIME_LIB,
            "FAKETIME_TIMESTAMP_FILE": str(clock),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }
        server = ServerProcess(
            db, tmp / "keys", extra=["--merchant-rate", "0", "--maintenance-interval", "0.5"]
        )
        old = dict(os.environ)
        os.environ.update(extra_env)
        try:
            server.start()
        finally:
            os.environ.clear()
            os.environ.update(old)
        w = World(server, token)
        applied = 0
        replays = 0
        by_variant: dict[str, int] = {}
        try:
            m = w.merchant()
            cid = w.customer({"EUR": 10_000_000})
            carrier = w.carrier(cid)
            for r in range(rounds):
                o = m.order([("Jump", 1, 10_000)])
                p = w.pay(o["code"], carrier.authorize(o["code"]), f"jump-pay-{r}")
                assert p.status_code == 201, p.text
                path = f"/v1/merchant/orders/{o['order_id']}/refunds"
                captured = []
                for variant, key in (("no-key", None), ("key", f"jump-ref-{r}")):
                    body = json.dumps({"amount": 100, "reason": variant}).encode()
                    h = signed(m, "POST", path, body, key)
                    first = w.http.post(path, content=body, headers=h)
                    assert first.status_code == 201, first.text
                    captured.append((body, h))
                clock.write_text("+3600\n")  # the server's clock jumps forward an hour
                time.sleep(2.0)  # maintenance sweeps run on the jumped clock
                clock.write_text("+0\n")  # and the clock is corrected
                time.sleep(0.5)
                for body, h in captured:
                    tries = [("no-key", h)]
                    if "Idempotency-Key" in h:  # as captured, and with the key changed
                        tries = [
                            ("key-changed", {**h, "Idempotency-Key": h["Idempotency-Key"] + "-x"}),
                            ("key-as-captured", h),
                        ]
                    for variant, hh in tries:
                        replays += 1
                        opath = f"/v1/merchant/orders/{o['order_id']}"
                        before = w.http.get(
                            opath, headers=signed(m, "GET", opath, b"", None)
                        ).json()["refunded_amount"]
                        w.http.post(path, content=body, headers=hh)
                        after = w.http.get(
                            opath, headers=signed(m, "GET", opath, b"", None)
                        ).json()["refunded_amount"]
                        if after != before:
                            applied += 1
                            by_variant[variant] = by_variant.get(variant, 0) + 1
        finally:
            w.close()
            server.stop()
    return {"replays": replays, "wrong": applied, "applied_by_variant": by_variant}


# --- 3. descriptor exhaustion and the SQLite writer --------------------------------------------


def writer_fds(limit: int = 160, idle: int = 400, writes: int = 6) -> dict[str, Any]:
    """RLIMIT_NOFILE ``limit`` on the server; idle connections until it has no descriptor left;
    then each write gets the one descriptor an idle connection frees."""
    with tempfile.TemporaryDirectory(prefix="probe-") as d:
        tmp = Path(d)
        db = f"sqlite:///{tmp / 'institution.db'}"
        token = init_db(db, tmp / "keys")

        def lower() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        server = ServerProcess(db, tmp / "keys", extra=["--merchant-rate", "0"])
        real_popen = subprocess.Popen

        def popen(*a: Any, **k: Any) -> Any:
            k["preexec_fn"] = lower
            return real_popen(*a, **k)

        subprocess.Popen = popen  # type: ignore[misc]
        try:
            server.start()
        finally:
            subprocess.Popen = real_popen  # type: ignore[misc]
        w = World(server, token)
        socks: list[socket.socket] = []
        hung = typed = ok = 0
        health: list[str] = []
        try:
            m = w.merchant()
            cid = w.customer({"EUR": 1_000_000})
            carrier = w.carrier(cid)
            orders = [m.order([("Fd", 1, 100 + i)]) for i in range(2 * writes)]
            pid = server.proc.pid if server.proc else 0

            def fds() -> int:
                return len(os.listdir(f"/proc/{pid}/fd"))

            def crowd() -> None:
                deadline = time.monotonic() + 30
                while fds() < limit and len(socks) < idle and time.monotonic() < deadline:
                    s = socket.socket()
                    s.connect(("127.0.0.1", server.port))
                    socks.append(s)
                    time.sleep(0.01)
                time.sleep(0.3)

            def write(o: dict[str, Any]) -> str:
                auth = carrier.authorize(o["code"])
                try:
                    with httpx.Client(base_url=server.base_url, timeout=20) as c:
                        r = c.post(
                            "/v1/payments",
                            json={"code": o["code"], "authorization": b64(auth.to_bytes())},
                        )
                except httpx.TimeoutException:
                    return "hung"
                except httpx.HTTPError as exc:
                    return f"connection-{type(exc).__name__}"
                return "ok" if r.status_code == 201 else f"typed-{r.status_code}"

            def write_when_crowded(o: dict[str, Any]) -> str:
                crowd()
                out: list[str] = []
                t = threading.Thread(target=lambda: out.append(write(o)))
                t.start()
                time.sleep(0.3)  # its connection waits in the listen backlog
                if socks:
                    socks.pop().close()  # one descriptor frees: the write takes it
                t.join()
                return out[0]

            phase1 = [write_when_crowded(o) for o in orders[:writes]]
            for s in socks:
                s.close()
            socks.clear()
            time.sleep(1.0)
            with contextlib.suppress(httpx.HTTPError):
                hr = httpx.get(server.base_url + "/health", timeout=10)
                health.append(f"{hr.status_code} {hr.text[:200]}")
            phase2 = [write(o) for o in orders[writes:]]
            for outcome in phase1 + phase2:
                if outcome == "hung":
                    hung += 1
                elif outcome == "ok":
                    ok += 1
                else:
                    typed += 1
        finally:
            for s in socks:
                s.close()
            w.close()
            server.stop()
    health_lied = int(hung > 0 and any(h.startswith("200") and '"ok"' in h for h in health))
    return {
        "writes": 2 * writes,
        "wrong": hung + health_lied,
        "hung": hung,
        "typed_errors": typed,
        "ok": ok,
        "during_then_after": {"phase1": phase1, "phase2": phase2},
        "health": health,
    }


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "idem-race": idem_race,
    "wallet-stop": wallet_stop,
    "clock-jump": clock_jump,
    "writer-fds": writer_fds,
}


def main() -> None:
    """Run the chosen scenarios; one JSON line per scenario and backend."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenario", default="all", choices=["all", *SCENARIOS])
    ap.add_argument("--backend", default="both", choices=["sqlite", "postgresql", "both"])
    args = ap.parse_args()
    os.environ.update({k: v for k, v in env().items() if k.startswith("SAFESCAN_")})
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    cluster = start_cluster() if "postgresql" in backends else None
    try:
        for name in names:
            fn = SCENARIOS[name]
            single = name in ("wallet-stop", "writer-fds")  # SQLite deployments only
            for backend in ["sqlite"] if single else backends:
                started = time.monotonic()
                pg = cluster if backend == "postgresql" else None
                out = fn() if single else fn(backend, pg)
                out = {"scenario": name, "backend": backend, **out}
                out["seconds"] = round(time.monotonic() - started, 1)
                print(json.dumps(out), flush=True)
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
