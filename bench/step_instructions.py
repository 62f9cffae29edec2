"""Instructions per call of payment-path steps, counted by valgrind (issue 20, part B).

    .venv/bin/python bench/step_instructions.py [TREE] [--n 2000] [--json] [STEP ...]

On this shared 2-core machine CPU time moves by 20-30 % from one run to the next with the
other helpers' load, far more than a change of a few microseconds; an instruction count does
not move with the load. Each step is run under ``valgrind --tool=callgrind`` twice, once with
``--n`` calls and once with none (the interpreter's start, the imports and the set-up are the
same in both: ``PYTHONHASHSEED=0``, fixed keys, no database), and the difference divided by
``--n`` is printed. Imports safescan from TREE (default: this checkout), so an older tree
exported somewhere gives its own figures. The steps (what differs between trees is taken
with ``hasattr``, so an older tree runs the same work its own way):

* ``auth_parse_tbs``: an authorization parsed strictly and its signed part made (``tbs()``
  encoded again, or cut from the bytes by ``from_bytes_signed``);
* ``auth_parse_verify``: the same and the carrier's Ed25519 signature verified;
* ``receipt_signed_bytes``: a receipt validated, signed and encoded (``signed_bytes``);
* ``dynamic_from_cbor``: a dynamic code's body parsed with every rule (``DynamicCode.from_cbor``);
* ``access_line``: the request log's line for a payment (``request_line``, else
  ``access_line``);
* ``payment_records``: the payment's outbox event and audit entry with their canonical JSON
  (``pay_records.payment_records``, else ``event_params`` and ``audit.prepare_entry`` as
  ``Payments._plan_payment`` called them), in a request's context (its request id);
* ``http_layers``: one ``POST /v1/payments`` through every layer ``institution serve`` puts
  around the app (request log and access line to a null stream, metrics, rollback guard, body
  limit) to a fast route that answers a fixed 201 at once, on a uvloop loop
  (``server.layers``, else the layers composed one by one as ``build_app`` composed them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
ap.add_argument("tree", nargs="?", default=None)
ap.add_argument("steps", nargs="*")
ap.add_argument("--n", type=int, default=2000)
ap.add_argument("--json", action="store_true")
ap.add_argument("--run", default=None, help=argparse.SUPPRESS)  # inside valgrind: STEP
ARGS = ap.parse_args()
TREE = Path(ARGS.tree).resolve() if ARGS.tree else Path(__file__).resolve().parent.parent
if not (TREE / "src" / "safescan").is_dir():  # a step name given first, or a typo: say so
    ap.error(f"{ARGS.tree!r} is not a checkout (no src/safescan in it); give a tree first,"
             " e.g. `.` for this one, then the steps")  # fmt: skip
STEPS = ("auth_parse_tbs", "auth_parse_verify", "receipt_signed_bytes", "dynamic_from_cbor",
         "access_line", "payment_records", "http_layers")  # fmt: skip


def http_layers() -> Callable[[], object]:
    """One payment request through the served layers to a fast route that answers at once."""
    import io

    import uvloop

    from safescan.api import obslog
    from safescan.institution import metrics, server
    from safescan.institution.access_log import observed
    from safescan.institution.http.asgi import BodyLimit
    from safescan.institution.rollback import GuardedApp

    class Null(io.TextIOBase):
        def write(self, s: str) -> int:
            return len(s)

    obslog.configure("info", "json", stream=Null(), stdlib=False)
    answer = b'{"payment_id": "pay_0123456789abcdef", "receipt": "' + b"A" * 300 + b'"}'
    body = b'{"code": "SC1:' + b"A" * 240 + b'", "authorization": "' + b"B" * 300 + b'"}'
    head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]

    async def fast(scope: Any, _body: bytes, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": list(head)})
        await send({"type": "http.response.body", "body": answer})

    async def routed(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the fast route answers")

    class Guard:
        def error(self) -> None:
            return None

    class Access:
        mode = "loopback"

    limit = BodyLimit(routed, fast_routes={("POST", "/v1/payments"): fast})
    guard, access = Guard(), Access()
    if hasattr(server, "layers"):
        app = server.layers(limit, guard, None, access)  # type: ignore[arg-type]
    else:
        app = observed(metrics.MetricsEndpoint(GuardedApp(limit, guard), None, access))  # type: ignore[arg-type]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        return None

    def scope() -> dict[str, Any]:
        return {
            "type": "http", "method": "POST", "path": "/v1/payments", "query_string": b"",
            "client": ("127.0.0.1", 40000),
            "headers": [(b"host", b"127.0.0.1:8443"), (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(body))],
        }  # fmt: skip

    loop = uvloop.new_event_loop()
    return lambda: loop.run_until_complete(app(scope(), receive, send))


def step(name: str) -> Callable[[], object]:
    """The step's call (imports from TREE)."""
    sys.path[:0] = [str(TREE / "src")]
    if name == "http_layers":
        return http_layers()
    from safescan.api import obslog
    from safescan.api.obslog import set_request_id
    from safescan.code import payment
    from safescan.code.authorization import Authorization, Receipt
    from safescan.code.keys import SigningKey

    key = SigningKey.from_seed(bytes([3]) * 32)
    auth = Authorization(
        code_digest=bytes(range(32)), merchant_id="M8KJ3ABCD", order_id="ORD123456789ABCDEFGH",
        amount=250, currency=978, counter=17, carrier_serial=1234, created_at=1764590000,
    ).signed(key)  # fmt: skip
    data, public = auth.to_bytes(), key.public_key
    cut = hasattr(Authorization, "from_bytes_signed")

    def parse_tbs() -> object:
        if cut:
            return Authorization.from_bytes_signed(data)  # type: ignore[attr-defined]
        return Authorization.from_bytes(data).tbs()

    def parse_verify() -> None:
        if cut:
            parsed, signed = Authorization.from_bytes_signed(data)  # type: ignore[attr-defined]
            parsed.verify(public, signed)  # type: ignore[call-arg]
        else:
            Authorization.from_bytes(data).verify(public)

    receipt = Receipt(
        payment_id="pay_ABCDEFGHJKLMNPQR", order_id="ORD123456789ABCDEFGH",
        merchant_id="M8KJ3ABCD", amount=250, currency=978,
        payer_pseudonym="p_0123456789abcdef01234567", paid_at=1764590000,
        code_digest=bytes(range(32)), issuer_kid=1,
    )  # fmt: skip
    body = [["M8KJ3ABCD", "Bench Shop 0", "Berlin", "DE", 5814], "ORD123456789ABCDEFGH",
            ["Coffee", 1, 250], 978, 1764590000, 900, b"12345678"]  # fmt: skip
    render = getattr(obslog, "request_line", None)
    logger, rid = "safescan.institution.access", "req_abcdef0123456789abcdef"

    def line() -> object:
        if render is not None:
            return render(logger, "POST", "/v1/payments", 201, 1.23, "wallet", "127.0.0.1",
                          None, rid)  # fmt: skip
        fields = {"method": "POST", "route": "/v1/payments", "status": 201, "duration_ms": 1.23}
        fields |= {"caller": "wallet", "client": "127.0.0.1", "error": None}
        return obslog.access_line(logger, fields, rid)

    set_request_id(rid)  # a payment's records are stamped with its request's id
    try:
        from safescan.institution import pay_records  # type: ignore[attr-defined]
    except ImportError:
        pay_records = None
    from safescan.api.states import EventType
    from safescan.institution import audit
    from safescan.institution.webhooks import event_params

    mid, oid, pid = "M8KJ3ABCD", "ORD123456789ABCDEFGH", "pay_ABCDEFGHJKLMNPQR"
    pseudonym, cid = "p_0123456789abcdef01234567", "cus_ABCDEFGHJKLMNPQR"
    entity = f"order:{mid}:{oid}"

    def records() -> object:
        if pay_records is not None:
            return pay_records.payment_records(
                event_id="evt_ABCDEFGHJKLMNPQRSTUV", mid=mid, order_id=oid, payment_id=pid,
                amount=250, currency=978, pseudonym=pseudonym, now=1764590000,
                customer_id=cid, counter=17, serial=1234, entity=entity, webhook=True,
            )  # fmt: skip
        data = {"payment_id": pid, "order_id": oid, "amount": 250, "currency": 978,
                "payer_pseudonym": pseudonym, "paid_at": 1764590000}  # fmt: skip
        event = event_params("evt_ABCDEFGHJKLMNPQRSTUV", mid, EventType.PAYMENT_SUCCEEDED, data,
                             1764590000, True)  # fmt: skip
        data_ = data | {"customer_id": cid, "counter": 17}
        entry = audit.prepare_entry(at=1764590000, actor="carrier:1234",
                                    action="payment.create", entity=entity, data=data_)  # fmt: skip
        return event, entry

    return {
        "auth_parse_tbs": parse_tbs,
        "auth_parse_verify": parse_verify,
        "receipt_signed_bytes": lambda: receipt.signed_bytes(key),
        "dynamic_from_cbor": lambda: payment.DynamicCode.from_cbor(body, 2),
        "access_line": line,
        "payment_records": records,
    }[name]


def counted(name: str, n: int) -> int:
    """Instructions of one run of this script doing ``n`` calls of step ``name``."""
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            str(TREE),
            "--run",
            name,
            "--n",
            str(n),
        ],
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    for text in out.stderr.splitlines():
        if "Collected :" in text:
            return int(text.split()[-1])
    raise SystemExit(f"no instruction count from valgrind:\n{out.stderr[-2000:]}")


def main() -> None:
    """Inside valgrind: run the step. Outside: count each step and print the figures."""
    if ARGS.run:
        fn = step(ARGS.run)
        fn()  # its first call (lazy imports, caches) is in both runs
        for _ in range(ARGS.n):
            fn()
        return
    figures = {}
    for name in ARGS.steps or STEPS:
        figures[name] = (counted(name, ARGS.n) - counted(name, 0)) // ARGS.n
    if ARGS.json:
        print(json.dumps({"tree": str(TREE), "instructions_per_call": figures}))
        return
    for name, value in figures.items():
        print(f"{name:22} {value:10,d} instructions per call")


if __name__ == "__main__":
    main()
