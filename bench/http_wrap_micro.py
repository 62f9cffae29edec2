"""The cost of the HTTP wrapping around the payment fast route, in-process (issue 20, part B).

    .venv/bin/python bench/http_wrap_micro.py [TREE]

Builds the ASGI layers ``institution serve`` puts around ``POST /v1/payments`` one by one
(the body limit, the rollback guard, the metrics endpoint, the request log without and with its
access line, rendered to a null stream by the configured JSON renderer) around a fast route that
answers a fixed 201 at once, then the same layers with the hot route served through them in one
call (``safescan.institution.http.hot.HotRoutes``, twelfth sitting; not in an older TREE), and
prints the CPU microseconds per request of each stack (the least of 5 rounds of 4,000
requests, after 500 warm-up requests). The payment itself, uvicorn and TLS are not in it:
bench/asgi_micro.py runs the whole app, bench/bare_path.py the server.
"""

from __future__ import annotations

import gc
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TREE = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TREE / "src"))

import uvloop  # noqa: E402

from safescan.api import obslog  # noqa: E402
from safescan.institution import metrics  # noqa: E402
from safescan.institution.access_log import observed  # noqa: E402
from safescan.institution.http.asgi import BodyLimit  # noqa: E402
from safescan.institution.rollback import GuardedApp  # noqa: E402


class _Null(io.TextIOBase):
    def write(self, s: str) -> int:
        return len(s)


ANSWER = json.dumps({"payment_id": "pay_0123456789abcdef", "receipt": "A" * 300}).encode()
BODY = json.dumps({"code": "SC1:" + "A" * 240, "authorization": "B" * 300}).encode()


async def fast(scope: Any, body: bytes, send: Any) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


async def routed(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the fast route answers")


class _Guard:
    def error(self) -> None:
        return None


class _Access:
    mode = "loopback"


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/payments",
        "query_string": b"",
        "client": ("127.0.0.1", 40000),
        "headers": [
            (b"host", b"127.0.0.1:8443"),
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(BODY)),
        ],
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": BODY, "more_body": False}


async def _send(message: Any) -> None:
    return None


def body() -> Any:
    return BodyLimit(routed, fast_routes={("POST", "/v1/payments"): fast})


def guarded() -> Any:
    return GuardedApp(body(), _Guard())  # type: ignore[arg-type]


def metered() -> Any:
    return metrics.MetricsEndpoint(guarded(), None, _Access())  # type: ignore[arg-type]


def one_layer(access_log: bool = True) -> Any:
    """The same layers with the hot routes served through them in one call (a tree with
    ``safescan.institution.http.hot``; None in an older one)."""
    try:
        from safescan.institution.http.hot import HotRoutes
    except ImportError:
        return None
    limit, guard = body(), _Guard()
    meter = metrics.MetricsEndpoint(GuardedApp(limit, guard), None, _Access())  # type: ignore[arg-type]
    log = observed(meter, access_log=access_log)
    return HotRoutes(log, log=log, meter=meter, guard=guard, body=limit)  # type: ignore[arg-type]


STACKS: dict[str, Callable[[], Any]] = {
    "fast route alone": lambda: lambda s, r, se: fast(s, BODY, se),
    "+ body limit": body,
    "+ rollback guard": guarded,
    "+ metrics endpoint": metered,
    "+ request log, no access line": lambda: observed(metered(), access_log=False),
    "+ access line (the whole stack)": lambda: observed(metered()),
    "one layer, no access line": lambda: one_layer(access_log=False),
    "one layer (HotRoutes, the whole stack)": one_layer,
}


async def main() -> None:
    gc.collect()
    gc.freeze()
    for name, make in STACKS.items():
        app = make()
        if app is None:
            continue
        for _ in range(500):
            await app(_scope(), _receive, _send)
        best = float("inf")
        for _ in range(5):
            t = time.thread_time()
            for _ in range(4000):
                await app(_scope(), _receive, _send)
            best = min(best, (time.thread_time() - t) / 4000)
        print(f"{name:40} {best * 1e6:6.1f} us")


if __name__ == "__main__":
    obslog.configure("info", "json", stream=_Null(), stdlib=False)
    uvloop.run(main())
