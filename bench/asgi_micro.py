"""The institution's whole ASGI app under a closed loop of payments, in-process (issue 20, part B).

    .venv/bin/python bench/asgi_micro.py [TREE] [--n 4000] [--clients 16] [--json]

What ``institution serve`` runs for ``POST /v1/payments`` minus uvicorn and TLS: the app
:func:`safescan.institution.server.build_app` makes (request id, access log, metrics, rollback
guard, body limit, the payment fast route, the payment itself, the SQLite writer), its lifespan
started, driven by ``--clients`` coroutines that each send their next payment as soon as the
previous one is answered (as bench/institution_load.py's clients do over HTTPS). The access log
goes to ``/dev/null`` through the same renderer. Prints the CPU per payment of the event loop's
thread (``main_cpu_us``), of the whole process (``process_cpu_us``; the rest is mostly the
writer thread) and the payments/s, for the best of 5 rounds (the machine is shared: CPU
time moves least with its load). Every payment must answer 201 and the audit must pass.

Imports safescan from TREE (default: this checkout), so an older tree exported somewhere can be
run alternately with this one (before/after under the same load). ``ASGI_MICRO_PROFILE=FILE``
writes a cProfile of the event loop's thread over the rounds; ``ASGI_MICRO_GC_OFF=1`` runs them
with the garbage collector off (to see what it costs); ``ASGI_MICRO_GC_LOG=1`` prints each
generation's collections, longest pause and total pause time (stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
ap.add_argument("tree", nargs="?", default=None)
ap.add_argument("--n", type=int, default=4000, help="payments per round (5 rounds)")
ap.add_argument("--clients", type=int, default=16)
ap.add_argument("--json", action="store_true")
ap.add_argument(
    "--bare",
    action="store_true",
    help="drive bench/bare_path.py's yardstick app instead (same driver: in-process A/B)",
)
ARGS = ap.parse_args()
TREE = Path(ARGS.tree).resolve() if ARGS.tree else Path(__file__).resolve().parent.parent
sys.path[:0] = [str(TREE / "src"), str(TREE)]
os.environ["PYTHONPATH"] = os.pathsep.join([str(TREE / "src"), str(TREE)])

import uvloop  # noqa: E402
from tests.institution.harness import PASSPHRASE, b64, env, init_db  # noqa: E402
from tests.institution.loadprep import make_payables  # noqa: E402

import safescan  # noqa: E402
from safescan.api import obslog  # noqa: E402
from safescan.institution.config import Tuning  # noqa: E402
from safescan.institution.db import Database  # noqa: E402
from safescan.institution.keystore import KeyStore  # noqa: E402
from safescan.institution.server import build_app  # noqa: E402
from safescan.institution.service import Institution  # noqa: E402

ROUNDS = 5


async def drive(app: Any, work: list[list[bytes]], per_round: int) -> list[dict[str, float]]:
    """Start the app's lifespan, then run the rounds; returns each round's figures."""
    lifespan_in: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan_out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    life = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan_in.get, lifespan_out.put)
    )
    await lifespan_in.put({"type": "lifespan.startup"})
    started = await lifespan_out.get()
    assert started["type"] == "lifespan.startup.complete", started
    queues = [iter(w) for w in work]
    failures: list[str] = []

    async def client(items: Any, count: int) -> None:
        for _ in range(count):
            body = next(items)
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "https",
                "path": "/v1/payments",
                "raw_path": b"/v1/payments",
                "query_string": b"",
                "root_path": "",
                "headers": [
                    (b"host", b"127.0.0.1:8443"),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"accept", b"*/*"),
                    (b"user-agent", b"bench"),
                ],
                "client": ("127.0.0.1", 40000),
                "server": ("127.0.0.1", 8443),
            }
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive(messages: list[dict[str, Any]] = messages) -> dict[str, Any]:
                if messages:
                    return messages.pop()
                await asyncio.Event().wait()  # never: a disconnect would end the request
                raise AssertionError

            status = 0

            async def send(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                elif status != 201 and message["type"] == "http.response.body":
                    failures.append(f"{status}: {message.get('body', b'')[:200]!r}")

            await app(scope, receive, send)

    rounds = []
    per_client = per_round // len(queues)
    for _ in range(ROUNDS + 1):  # the first round warms up
        c, m, w = time.process_time(), time.thread_time(), time.perf_counter()
        await asyncio.gather(*(client(q, per_client) for q in queues))
        n = per_client * len(queues)
        rounds.append(
            {
                "process_cpu_us": (time.process_time() - c) / n * 1e6,
                "main_cpu_us": (time.thread_time() - m) / n * 1e6,
                "payments_per_s": n / (time.perf_counter() - w),
            }
        )
        if failures:
            raise SystemExit(f"{len(failures)} payments failed, e.g. {failures[0]}")
    await lifespan_in.put({"type": "lifespan.shutdown"})
    await lifespan_out.get()
    await life
    return rounds[1:]


def main() -> None:
    """Print the figures (one JSON object with ``--json``)."""
    assert safescan.__file__ and safescan.__file__.startswith(str(TREE)), safescan.__file__
    clients = ARGS.clients
    per_round = ARGS.n - ARGS.n % clients
    with (
        tempfile.TemporaryDirectory(prefix="safescan-asgimicro-") as d,
        open(os.devnull, "w") as devnull,
    ):
        tmp = Path(d)
        db_url = f"sqlite:///{tmp / 'bench.db'}"
        keys = tmp / "keys"
        init_db(db_url, keys)
        prep = Institution(Database(db_url), KeyStore(keys).load(PASSPHRASE.encode()))
        per_client = per_round // clients * (ROUNDS + 1)
        payables = make_payables(prep, clients, per_client, 8)
        prep.db.dispose()
        work = [
            [
                json.dumps(
                    {"code": p.code, "authorization": b64(p.authorization.to_bytes())}
                ).encode()
                for p in items
            ]
            for items in payables
        ]
        passphrase = tmp / "passphrase"
        passphrase.write_text(PASSPHRASE)
        obslog.configure("info", "json", stream=devnull)
        if ARGS.bare:
            sys.path.insert(0, str(TREE / "bench"))
            from bare_path import BareApp

            app: Any = BareApp(db_url, keys)
        else:
            app = build_app(db_url, keys, passphrase, Tuning(webhooks=False, merchant_rate=0.0))
        gc.collect()
        gc.freeze()
        if os.environ.get("ASGI_MICRO_GC_OFF"):
            gc.disable()
        pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        if os.environ.get("ASGI_MICRO_GC_LOG"):
            began: list[float] = [0.0]

            def timed(phase: str, info: dict[str, int]) -> None:
                if phase == "start":
                    began[0] = time.perf_counter()
                else:
                    pauses[info["generation"]].append(time.perf_counter() - began[0])

            gc.callbacks.append(timed)
        prof = None
        if os.environ.get("ASGI_MICRO_PROFILE"):
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        rounds = uvloop.run(drive(app, work, per_round))
        if prof is not None:
            prof.disable()
            prof.dump_stats(os.environ["ASGI_MICRO_PROFILE"])
        audit = subprocess.run(
            [sys.executable, "-m", "safescan.institution", "audit", "--db", db_url],
            env=env(),
            capture_output=True,
            text=True,
        )
        if audit.returncode != 0:
            raise SystemExit(f"the audit failed:\n{audit.stdout[-2000:]}{audit.stderr[-2000:]}")
        if os.environ.get("ASGI_MICRO_GC_LOG"):  # each generation's collections and pauses
            for gen, times in pauses.items():
                ms = sorted(t * 1000 for t in times)
                print(
                    f"gc generation {gen}: {len(ms)} collections, max {max(ms, default=0):.2f}"
                    f" ms, total {sum(ms):.1f} ms, gc.get_count() {gc.get_count()}",
                    file=sys.stderr,
                )
    best = {k: min(r[k] for r in rounds) for k in ("process_cpu_us", "main_cpu_us")}
    best["payments_per_s"] = max(r["payments_per_s"] for r in rounds)
    out = {k: round(v, 1) for k, v in best.items()}
    load = os.getloadavg()[0]
    if ARGS.json:
        server = "yardstick" if ARGS.bare else "institution"
        print(json.dumps({"tree": str(TREE), "server": server, "load1": round(load, 2), **out}))
        return
    for name, value in out.items():
        print(f"{name:18} {value:9.1f}")
    print(f"load average (1 min) at the end: {load:.2f}; tree {TREE}; audit passed")


if __name__ == "__main__":
    main()
