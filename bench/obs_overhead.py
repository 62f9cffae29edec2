"""Per-request cost of the institution's instrumentation, without the network or the database.

    python bench/obs_overhead.py [--requests 20000] [--rounds 7] [--json]

Calls a trivial ASGI app (answers ``201 {}`` like a payment) directly, ``--requests`` times per
round, bare and wrapped the way ``institution serve`` wraps the API (request id, JSON access
line written to /dev/null, metrics observation), alternating the variants round by round so
all see the same machine load; prints the best round's CPU microseconds per request of each
(thread CPU time: other processes on a shared machine count far less than in wall time) and
the difference (what one request pays for logs, request id and metrics). The payment route is
the case measured (``POST /v1/payments``, with its ``safescan_payments_total`` increment).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from safescan.api import obslog  # noqa: E402
from safescan.institution.access_log import observed  # noqa: E402

BODY = b"{}"


async def app(_scope: Any, _receive: Any, send: Any) -> None:
    """A payment-shaped answer and nothing else."""
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


async def rounds(target: Any, n: int) -> float:
    """Seconds for ``n`` requests through ``target``."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: Any) -> None:
        return None

    headers = [(b"content-type", b"application/json"), (b"x-request-id", b"bench-request-0001")]
    t0 = time.thread_time()  # CPU time: the other processes on the machine do not count
    for i in range(n):
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/payments",
            "headers": headers if i % 2 else headers[:1],  # half with a client id, half without
            "client": ("127.0.0.1", 50000),
        }
        await target(scope, receive, send)
    return time.thread_time() - t0


def main() -> None:
    """Run and print."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with Path(os.devnull).open("w") as sink:
        obslog.configure("info", "json", stream=sink, stdlib=False)
        wrapped = observed(app)
        quiet = observed(app, access_log=False)
        best = {"bare": float("inf"), "instrumented": float("inf"), "no_access_log": float("inf")}
        for _ in range(args.rounds):
            for name, target in (
                ("bare", app),
                ("instrumented", wrapped),
                ("no_access_log", quiet),
            ):
                seconds = asyncio.run(rounds(target, args.requests))
                best[name] = min(best[name], seconds / args.requests * 1e6)
    result = {k: round(v, 2) for k, v in best.items()}
    result["overhead_us"] = round(best["instrumented"] - best["bare"], 2)
    result["overhead_without_access_log_us"] = round(best["no_access_log"] - best["bare"], 2)
    result["requests_per_round"] = args.requests
    result["rounds"] = args.rounds
    if args.json:
        print(json.dumps(result))
        return
    print(f"bare app            {result['bare']:8.2f} us/request")
    print(f"instrumented        {result['instrumented']:8.2f} us/request")
    print(f"  without access log {result['no_access_log']:7.2f} us/request")
    print(f"overhead            {result['overhead_us']:8.2f} us/request")


if __name__ == "__main__":
    main()
