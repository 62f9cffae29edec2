"""Load benchmark of the payment institution: real server, real carrier-signed authorizations.

    python bench/institution_load.py --db sqlite --seconds 60 [--json]
    python bench/institution_load.py --db postgresql --seconds 60 [--pg-url URL] [--json]

Starts everything it needs on 127.0.0.1 (a throwaway PostgreSQL cluster unless --pg-url is
given), precreates orders and precomputes one carrier-signed authorization per order (outside
the timed window), then runs a closed-loop aiohttp load generator for N seconds: each of
--concurrency clients pays one code at a time with its own key carrier (counters strictly
increasing). Prints payments/s, p50/p99 latency, errors, server RSS, and the crypto-only bound
(the verification and signing work one payment needs, on one core) and the ratio. Stops
everything at the end and runs the audit over the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from tests.institution.harness import PASSPHRASE, ServerProcess, b64, env, init_db  # noqa: E402
from tests.institution.loadprep import make_payables  # noqa: E402
from tests.institution.pg import start_cluster  # noqa: E402

from safescan.code import Authorization, Receipt, open_code  # noqa: E402
from safescan.institution.db import Database  # noqa: E402
from safescan.institution.keystore import KeyStore  # noqa: E402
from safescan.institution.service import Institution  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn workers), MB."""
    total = 0
    pids = [pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        pids += [int(p) for p in out.stdout.split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        kids = subprocess.run(["pgrep", "-P", str(p)], capture_output=True, text=True)
        todo += [int(k) for k in kids.stdout.split()]
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process tree (uvicorn workers, PostgreSQL backends)."""
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def crypto_bound(inst: Institution, code: str, auth: Authorization, carrier_key: Any) -> float:
    """Payments/s one core could do if a payment were only its cryptography."""
    trust = inst.trust
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        opened = open_code(code, inst.keys.scheme, trust, now=int(time.time()))  # HPKE + Ed25519
        Authorization.from_bytes(auth.to_bytes()).verify(carrier_key)  # Ed25519 verify
        Receipt(
            payment_id="pay_XXXXXXXXXXXXXXXX",
            order_id="ORDER0000001",
            merchant_id="M123456789",
            amount=100,
            currency=978,
            payer_pseudonym="p_" + "0" * 24,
            paid_at=int(time.time()),
            code_digest=opened.digest,
            issuer_kid=1,
        ).signed(inst.keys.root)  # receipt signature
        inst.keys.root.sign(b"SS1-EVENT\n" + b"x" * 200)  # event signature
    return n / (time.perf_counter() - t0)


def prepare(
    db_url: str, keys: Path, clients: int, per_client: int, merchants: int
) -> tuple[list[list[tuple[str, str]]], float]:
    """Merchants, customers, carriers, orders and authorizations, made in-process."""
    store = KeyStore(keys)
    inst = Institution(Database(db_url), store.load(PASSPHRASE.encode()))
    payables = make_payables(inst, clients, per_client, merchants)
    work = [[(p.code, b64(p.authorization.to_bytes())) for p in items] for items in payables]
    first = payables[0][0]
    bound = crypto_bound(inst, first.code, first.authorization, first.carrier_key)
    inst.db.dispose()
    return work, bound


async def load(base_url: str, work: list[list[tuple[str, str]]], seconds: float) -> dict[str, Any]:
    """Closed loop: each client sends its next payment as soon as the previous one answered."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    ok = 0
    deadline = time.perf_counter() + seconds
    exhausted = False
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(base_url=base_url, connector=conn) as session:

        async def client(items: list[tuple[str, str]]) -> None:
            nonlocal ok, exhausted
            for code, auth in items:
                if time.perf_counter() >= deadline:
                    return
                body = json.dumps({"code": code, "authorization": auth}).encode()
                t0 = time.perf_counter()
                try:
                    async with session.post(
                        "/v1/payments", data=body, headers={"Content-Type": "application/json"}
                    ) as r:
                        await r.read()
                        status = r.status
                except aiohttp.ClientError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if status == 201:
                    ok += 1
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1
            exhausted = True

        t_start = time.perf_counter()
        await asyncio.gather(*(client(w) for w in work))
        elapsed = time.perf_counter() - t_start
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 100 else [0.0] * 99
    return {
        "payments": ok,
        "elapsed_s": round(elapsed, 2),
        "payments_per_s": round(ok / elapsed, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "work_exhausted": exhausted,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--concurrency", type=int, default=16, help="closed-loop clients")
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="server processes (default: 1)",
    )
    ap.add_argument("--merchants", type=int, default=8)
    ap.add_argument(
        "--max-rate", type=float, default=2500, help="orders precreated per second of run"
    )
    ap.add_argument(
        "--pg-url", default=None, help="use this PostgreSQL server instead of a throwaway one"
    )
    ap.add_argument("--pg-fsync", choices=["on", "off"], default="on")
    args = ap.parse_args()
    # One API process is fastest here for both stores: on 2 cores shared with PostgreSQL and
    # the load generator, a second process adds contention and memory, not throughput
    # (measured: PostgreSQL 611/s p99 38 ms RSS 119 MB with 1 process, 531/s p99 64 ms
    # RSS 306 MB with 2). Several processes are for several cores or hosts.
    workers = args.workers or 1
    cluster = None
    with tempfile.TemporaryDirectory(prefix="safescan-bench-") as d:
        tmp = Path(d)
        if args.db == "sqlite":
            db_url = f"sqlite:///{tmp / 'bench.db'}"
        else:
            if args.pg_url:
                os.environ["SAFESCAN_TEST_PG_URL"] = args.pg_url
            cluster = start_cluster(fsync=args.pg_fsync == "on")
            db_url = cluster.create_database()
        server = None
        try:
            keys = tmp / "keys"
            init_db(db_url, keys)
            per_client = int(args.max_rate * args.seconds / args.concurrency) + 1
            t0 = time.perf_counter()
            work, bound = prepare(db_url, keys, args.concurrency, per_client, args.merchants)
            setup_s = time.perf_counter() - t0
            server = ServerProcess(
                db_url,
                keys,
                extra=["--workers", str(workers), "--no-webhooks", "--merchant-rate", "0"],
            ).start()
            assert server.proc is not None
            pg_pid = cluster.proc.pid if cluster is not None and cluster.proc else None
            db0 = cpu_seconds(pg_pid) if pg_pid else 0.0
            cpu0, own0 = cpu_seconds(server.proc.pid), time.process_time()
            result = asyncio.run(load(server.base_url, work, args.seconds))
            cpu1, own1 = cpu_seconds(server.proc.pid), time.process_time()
            db1 = cpu_seconds(pg_pid) if pg_pid else 0.0
            result["server_rss_mb"] = round(rss_mb(server.proc.pid), 1)
            n = max(result["payments"], 1)
            result["server_cpu_ms_per_payment"] = round((cpu1 - cpu0) * 1000 / n, 3)
            result["generator_cpu_ms_per_payment"] = round((own1 - own0) * 1000 / n, 3)
            if pg_pid:
                result["postgres_cpu_ms_per_payment"] = round((db1 - db0) * 1000 / n, 3)
            server.stop()
            server = None
            audit = subprocess.run(
                [sys.executable, "-m", "safescan.institution", "audit", "--db", db_url, "--json"],
                env=env(),
                capture_output=True,
                text=True,
            )
            result.update(
                db=args.db,
                seconds=args.seconds,
                concurrency=args.concurrency,
                workers=workers,
                crypto_bound_per_s=round(bound, 1),
                ratio_to_crypto_bound=round(result["payments_per_s"] / bound, 3),
                audit_ok=audit.returncode == 0,
                setup_s=round(setup_s, 1),
                pg_fsync=args.pg_fsync if args.db == "postgresql" else None,
            )
        finally:
            if server is not None:
                server.stop()
            if cluster is not None:
                cluster.stop()
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"institution load: {args.db}, {args.seconds:g} s, {args.concurrency} clients,"
        f" {workers} server process(es)"
    )
    print(f"  payments/s        {result['payments_per_s']}")
    print(f"  latency p50 / p99 {result['p50_ms']} ms / {result['p99_ms']} ms")
    print(f"  errors            {result['errors']} {result['error_kinds'] or ''}")
    print(f"  server RSS        {result['server_rss_mb']} MB")
    print(
        f"  CPU per payment   server {result['server_cpu_ms_per_payment']} ms,"
        f" load generator {result['generator_cpu_ms_per_payment']} ms"
    )
    print(
        f"  crypto bound      {result['crypto_bound_per_s']} payments/s on one core"
        f" (ratio {result['ratio_to_crypto_bound']})"
    )
    print(f"  audit after run   {'passed' if result['audit_ok'] else 'FAILED'}")


if __name__ == "__main__":
    main()
