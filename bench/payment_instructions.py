"""Instructions per whole payment: the institution's served app against the yardstick (issue 20).

    .venv/bin/python bench/payment_instructions.py [TREE] [--n 200] [--concurrency 1] [--json]
        [--annotate DIR] [--top 40]

A load-independent institution / yardstick figure. Throughput ratios on this shared 2-core
machine move by 0.6-1.1 from one round to the next; an instruction count does not move with
the load. Both servers are driven **in-process, without a load generator, without HTTP and
without TLS**: one process under ``valgrind --tool=callgrind`` builds the ASGI app and calls
it with the request scope, body and ``send`` an HTTP server would give it, on a uvloop loop:

* ``institution``: what ``institution serve --workers 1 --no-webhooks --merchant-rate 0``
  serves (bench/bare_path.py's and bench/institution_load.py's institution):
  ``server.build_app`` with its lifespan, every layer (request ids, the access line, formatted
  to a null stream instead of stderr, the metrics, the rollback guard, the body limit, the hot
  route), the SQLite writer thread and its group commit;
* ``bare``: bench/bare_path.py's ``BareApp`` (the yardstick), its own writer thread.

Both get the same requests (``POST /v1/payments``, no Idempotency-Key, the headers
bench/institution_load.py's aiohttp client sends) on the same SQLite store: one database made
by ``institution init`` and bench/institution_load.py's ``prepare`` (merchants, customers,
one carrier per client, orders and authorizations), copied afresh (with its keys and
checkpoint file) for each run. Each server makes ``--concurrency`` warm-up payments (one per
carrier: the carrier's key looked up and cached, first-call caches) and then ``--n`` payments,
``--concurrency`` requests in flight at a time; every answer must be 201. The same script runs
again with no payment after the warm-up (the interpreter's start, the imports, the app's
build and lifespan, the warm-up are the same in both), and the difference divided by ``--n``
is printed for each server, with the ratio yardstick / institution (what the throughput
target institution / yardstick >= 0.9 approximates when CPU is the bound).

Time-driven work is left out of both: the rollback guard's check (``checkpoint_interval``)
and the maintenance loop run every second or five in a served institution, but under valgrind
a second holds ~100 times fewer payments, so their intervals are set to an hour here; the
metrics endpoint's once-a-second tick is kept (it is on the request path).
``PYTHONHASHSEED=0``. ``--concurrency`` above 1 lets groups form in both writers; the group
sizes then depend on how valgrind schedules the threads (it runs one at a time), so the
figures move by a little from one run to the next; with 1 (the default) every group holds
one payment in both.

``--annotate DIR`` keeps the four callgrind files there and prints, from
``callgrind_annotate`` (self and ``--inclusive=yes``), per payment, the shared objects and the
C functions whose instructions differ most between the institution and the yardstick (what
one spends and the other does not). ``--only KIND`` counts one server. Python functions are
not seen by callgrind (they run inside ``_PyEval_EvalFrameDefault``); the lists name the C
code under them (the interpreter itself, SQLite, OpenSSL, cbor2, the allocator).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
ap.add_argument("tree", nargs="?", default=None)
ap.add_argument("--n", type=int, default=200, help="payments counted per server")
ap.add_argument("--concurrency", type=int, default=1, help="requests in flight (carriers)")
ap.add_argument("--merchants", type=int, default=8)
ap.add_argument("--json", action="store_true")
ap.add_argument("--annotate", metavar="DIR", default=None, help="keep callgrind files; diff")
ap.add_argument("--top", type=int, default=40, help="with --annotate: functions listed")
ap.add_argument("--only", choices=["institution", "bare"], default=None)
ap.add_argument("--run", nargs=2, default=None, help=argparse.SUPPRESS)  # KIND DIR (in valgrind)
ARGS = ap.parse_args()
HERE = Path(__file__).resolve().parent
TREE = Path(ARGS.tree).resolve() if ARGS.tree else HERE.parent
if not (TREE / "src" / "safescan").is_dir():
    ap.error(f"{ARGS.tree!r} is not a checkout (no src/safescan in it)")
KINDS = ("institution", "bare")
HOUR = 3600.0


def headers(body: bytes) -> list[tuple[bytes, bytes]]:
    """What bench/institution_load.py's aiohttp client sends with a payment."""
    return [
        (b"host", b"127.0.0.1:8443"),
        (b"accept", b"*/*"),
        (b"accept-encoding", b"gzip, deflate"),
        (b"user-agent", b"Python/3.11 aiohttp/3.14.5"),
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
    ]


def scope_of(body: bytes) -> dict[str, Any]:
    """The scope uvicorn (httptools) gives the app for ``POST /v1/payments``."""
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "server": ("127.0.0.1", 8443), "client": ("127.0.0.1", 40000),
        "scheme": "http", "method": "POST", "root_path": "", "path": "/v1/payments",
        "raw_path": b"/v1/payments", "query_string": b"", "headers": headers(body), "state": {},
    }  # fmt: skip


def build(kind: str, d: Path) -> Any:
    """The app of ``kind`` over the store in ``d`` (imports from TREE)."""
    db_url, keys = f"sqlite:///{d / 'bench.db'}", d / "keys"
    if kind == "bare":
        sys.path[:0] = [str(HERE)]
        import bare_path  # the yardstick, from this checkout's bench/

        return bare_path.BareApp(db_url, keys)
    import io

    from safescan.api import obslog
    from safescan.institution import server
    from safescan.institution.config import Tuning

    class Null(io.TextIOBase):
        def write(self, s: str) -> int:
            return len(s)

    obslog.configure("info", "json", stream=Null())
    tuning = Tuning(webhooks=False, merchant_rate=0, maintenance_interval=HOUR)
    return server.build_app(db_url, keys, None, tuning, checkpoint_interval=HOUR)


def serve(kind: str, d: Path, n: int) -> None:
    """Inside valgrind: the lifespan, the warm-up, ``n`` payments, the shutdown."""
    import asyncio

    import uvloop

    sys.path[:0] = [str(TREE / "src"), str(TREE)]
    work: list[list[list[str]]] = json.loads((d / "work.json").read_text())
    bodies = [
        [json.dumps({"code": c, "authorization": a}).encode() for c, a in items] for items in work
    ]
    app = build(kind, d)

    async def request(body: bytes) -> int:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope_of(body), receive, send)
        return int(sent[0]["status"])

    async def main() -> None:
        started, stop = asyncio.Event(), asyncio.Event()
        queue = [{"type": "lifespan.startup"}]

        async def receive() -> dict[str, Any]:
            if queue:
                return queue.pop()
            await stop.wait()
            return {"type": "lifespan.shutdown"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                started.set()
            elif message["type"] == "lifespan.startup.failed":
                raise SystemExit(f"lifespan failed: {message}")

        life = asyncio.ensure_future(app({"type": "lifespan"}, receive, send))
        await started.wait()
        clients = len(bodies)
        rounds = [[b[0] for b in bodies]]  # the warm-up: one payment per carrier
        for i in range(n // clients):
            rounds.append([b[i + 1] for b in bodies])
        for batch in rounds:
            statuses = await asyncio.gather(*(request(b) for b in batch))
            if set(statuses) != {201}:
                raise SystemExit(f"{kind}: a payment was not made: {statuses}")
        stop.set()
        await life

    uvloop.run(main())


def made(n: int, clients: int) -> Path:
    """A store for the runs: ``institution init``, then ``prepare`` (outside valgrind)."""
    sys.path[:0] = [str(HERE), str(TREE), str(TREE / "src")]
    from tests.institution.harness import init_db

    import institution_load

    d = Path(tempfile.mkdtemp(prefix="safescan-payins-"))
    db_url, keys = f"sqlite:///{d / 'bench.db'}", d / "keys"
    init_db(db_url, keys)
    work, _bound = institution_load.prepare(db_url, keys, clients, n // clients + 1, ARGS.merchants)
    (d / "work.json").write_text(json.dumps(work))
    import sqlite3

    with sqlite3.connect(d / "bench.db") as c:  # one file to copy
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return d


def counted(kind: str, template: Path, n: int, out: Path | None) -> int:
    """Instructions of one run serving ``n`` payments (after the warm-up) on a copy of the
    store."""
    with tempfile.TemporaryDirectory(prefix=f"safescan-payins-{kind}-") as t:
        d = Path(t) / "store"
        shutil.copytree(template, d)
        sys.path[:0] = [str(TREE)]
        from tests.institution.harness import env

        out_file = str(out) if out is not None else "/dev/null"
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out_file}",
                sys.executable,
                __file__,
                str(TREE),
                "--run",
                kind,
                str(d),
                "--n",
                str(n),
            ],
            env={**env(), "PYTHONHASHSEED": "0", "PYTHONPATH": f"{TREE / 'src'}"},
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        raise SystemExit(f"{kind} (n={n}) failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    for text in done.stderr.splitlines():
        if "Collected :" in text:
            return int(text.split()[-1])
    raise SystemExit(f"no instruction count from valgrind:\n{done.stderr[-2000:]}")


def annotated(path: Path, inclusive: bool) -> tuple[dict[str, int], dict[str, int]]:
    """Instructions per function and, for self costs, per shared object, of one callgrind
    file (``callgrind_annotate``). A function's name is kept without its source file (the
    same function is listed once per file of its inlined parts); a recursion level (``'2``) is
    added to its function's self cost, and left out of inclusive costs (which would count the
    recursion again)."""
    text = subprocess.run(
        ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}",
         "--threshold=100", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    functions: dict[str, int] = {}
    objects: dict[str, int] = {}
    for line in text.splitlines():
        found = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line)
        if found is None or "PROGRAM TOTALS" in found.group(2):
            continue
        value, rest = int(found.group(1).replace(",", "")), found.group(2)
        name, _, obj = rest.rpartition(" [") if " [" in rest else (rest, "", "?]")
        name = name.split(":", 1)[-1] if ":" in name else name
        if "'" in name:  # a recursion level: its inclusive cost counts the recursion again
            if inclusive:
                continue
            name = name.split("'", 1)[0]
        functions[name] = functions.get(name, 0) + value
        obj = obj.rstrip("]").rsplit("/", 1)[-1]
        objects[obj] = objects.get(obj, 0) + value
    return functions, objects


def gaps(files: dict[str, tuple[Path, Path]], n: int, inclusive: bool) -> dict[str, Any]:
    """Per payment, institution less yardstick, by function (and by object for self costs),
    the largest first."""
    per: dict[str, list[dict[str, float]]] = {}
    for kind, (a, b) in files.items():
        (fa, oa), (fb, ob) = annotated(a, inclusive), annotated(b, inclusive)
        per[kind] = [
            {f: (fa.get(f, 0) - fb.get(f, 0)) / n for f in fa.keys() | fb.keys()},
            {f: (oa.get(f, 0) - ob.get(f, 0)) / n for f in oa.keys() | ob.keys()},
        ]
    out: dict[str, Any] = {}
    for i, what in enumerate(("functions", "objects")):
        if what == "objects" and inclusive:
            continue
        inst, bare = per["institution"][i], per["bare"][i]
        gap = {f: inst.get(f, 0) - bare.get(f, 0) for f in inst.keys() | bare.keys()}
        top = sorted(gap, key=lambda f: -abs(gap[f]))[: ARGS.top]
        out[what] = [
            {"name": f, "institution": round(inst.get(f, 0)), "bare": round(bare.get(f, 0)),
             "gap": round(gap[f])}
            for f in top
        ]  # fmt: skip
    return out


def main() -> None:
    """Inside valgrind: serve. Outside: make the store, count, print."""
    if ARGS.run:
        kind, d = ARGS.run
        serve(kind, Path(d), ARGS.n)
        return
    n = ARGS.n - ARGS.n % ARGS.concurrency
    template = made(n, ARGS.concurrency)
    keep = Path(ARGS.annotate) if ARGS.annotate else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    per: dict[str, float] = {}
    files: dict[str, tuple[Path, Path]] = {}
    try:
        for kind in [ARGS.only] if ARGS.only else KINDS:
            a = b = None
            if keep is not None:
                a, b = keep / f"{kind}.n{n}.out", keep / f"{kind}.n0.out"
                files[kind] = (a, b)
            full, zero = counted(kind, template, n, a), counted(kind, template, 0, b)
            per[kind] = (full - zero) / n
    finally:
        shutil.rmtree(template, ignore_errors=True)
    out: dict[str, Any] = {"tree": str(TREE), "n": n, "concurrency": ARGS.concurrency}
    out["instructions_per_payment"] = {k: round(v) for k, v in per.items()}
    if len(per) == 2:
        out["ratio_bare_over_institution"] = round(per["bare"] / per["institution"], 3)
    if len(files) == 2:
        out["self_gap"] = gaps(files, n, inclusive=False)
        out["inclusive_gap"] = gaps(files, n, inclusive=True)["functions"]
    if ARGS.json:
        print(json.dumps(out))
        return
    for kind, value in out["instructions_per_payment"].items():
        print(f"{kind:12} {value:12,d} instructions per payment")
    if "ratio_bare_over_institution" in out:
        print(f"yardstick / institution: {out['ratio_bare_over_institution']}")
    tables = [
        ("self, by shared object", out.get("self_gap", {}).get("objects", [])),
        ("self, by function", out.get("self_gap", {}).get("functions", [])),
        ("inclusive, by function", out.get("inclusive_gap", [])),
    ]
    for title, rows in tables:
        if rows:
            print(f"\nper payment, {title}: institution - yardstick, institution, yardstick")
        for row in rows:
            figures = f"{row['gap']:>12,d} {row['institution']:>12,d} {row['bare']:>12,d}"
            print(f"{figures}  {row['name']}")


if __name__ == "__main__":
    main()
