"""Load benchmark of the payment institution: real server, real carrier-signed authorizations.

    python bench/institution_load.py --db sqlite --seconds 60 [--json]
    python bench/institution_load.py --db postgresql --seconds 60 [--pg-url URL] [--json]
    python bench/institution_load.py --keys-backend pkcs11 ...   # root key in a SoftHSM2 token
    python bench/institution_load.py --no-tls ...   # plain HTTP on loopback (default: HTTPS)

Starts everything it needs on 127.0.0.1 (a throwaway PostgreSQL cluster unless --pg-url is
given), precreates orders and precomputes one carrier-signed authorization per order (outside
the timed window), then runs a closed-loop aiohttp load generator for N seconds: each of
--concurrency clients pays one code at a time with its own key carrier (counters strictly
increasing), over HTTPS verified with the CA ``institution init`` made (``--no-tls``: plain
HTTP, to see what TLS costs; bench/bare_path.py takes the same flag). Prints payments/s,
p50/p99 latency, the worst one-second window's p99
(``p99_worst_second_ms``; ``p99_per_second_ms`` lists every whole second's), errors, server
RSS, and the crypto-only bound (exactly the cryptography one payment does, on one core: see
:func:`crypto_bound`) and the ratio. Stops
everything at the end and runs the audit over the result.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import ssl
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
from cryptography.hazmat.primitives import hpke  # noqa: E402
from tests.institution.harness import PASSPHRASE, ServerProcess, b64, env, init_db  # noqa: E402
from tests.institution.loadprep import make_payables  # noqa: E402
from tests.institution.pg import start_cluster  # noqa: E402

from safescan.code import (  # noqa: E402
    Authorization,
    Receipt,
    VerifyKey,
    decode_text,
    envelope,
    open_code,
)
from safescan.institution import audit  # noqa: E402
from safescan.institution.db import Database  # noqa: E402
from safescan.institution.keystore import KeyStore  # noqa: E402
from safescan.institution.service import Institution  # noqa: E402
from safescan.institution.util import canonical_json  # noqa: E402

# the code envelope's HPKE suite (safescan.code.envelope), for the crypto bound
HPKE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


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


def crypto_bound(
    inst: Institution, code: str, auth: Authorization, carrier_key: VerifyKey, customer_id: str
) -> float:
    """Payments/s one core could do if a payment were only its cryptography.

    Exactly the primitives ``POST /v1/payments`` runs for an institution-signed dynamic code
    (Payments.pay): HPKE open of the code (X25519, HKDF-SHA256, AES-128-GCM), Ed25519
    verification of the code's signature, SHA-256 of the binary code (its digest), Ed25519
    verification of the carrier's authorization, HMAC-SHA256 payer pseudonym, Ed25519 signature
    of the receipt and SHA-256 of the payment's audit entry. Each is called the way the payment
    calls it (the library's key objects), on inputs of the real size; nothing else is timed
    (no Base45, CBOR, validation or JSON). Payment events are not signed on the payment path
    (webhook deliveries are signed later, by the dispatcher), so no event signature is counted.
    The idempotency request hash is bookkeeping, not counted either.
    """
    now = int(time.time())
    opened = open_code(code, inst.scheme_keys, inst.trust, now=now)  # once: the real inputs
    binary = decode_text(code)
    header, sealed = binary[: envelope.HEADER_BYTES], binary[envelope.HEADER_BYTES :]
    scheme_key = inst.scheme_keys.for_opening(header[2], now).private_key()
    info = envelope.HPKE_INFO + header
    plaintext = HPKE.decrypt(sealed, scheme_key, info=info)
    signature = plaintext[: envelope.SIGNATURE_BYTES]
    message = envelope.SIG_CONTEXT + header + plaintext[envelope.SIGNATURE_BYTES :]
    assert opened.issuer_kid is not None
    code_key = inst.trust.institution_key(opened.issuer_kid)
    auth_tbs = auth.tbs()
    mid = opened.code.merchant.id
    receipt_tbs = Receipt(
        payment_id="pay_XXXXXXXXXXXXXXXX",
        order_id=auth.order_id,
        merchant_id=mid,
        amount=auth.amount,
        currency=auth.currency,
        payer_pseudonym=inst.keys.pseudonym(mid, customer_id),
        paid_at=now,
        code_digest=opened.digest,
        issuer_kid=inst.keys.root_kid,
    ).tbs()
    entity = f"order:{mid}:{auth.order_id}"
    data = canonical_json({"payment_id": "pay_XXXXXXXXXXXXXXXX", "amount": auth.amount})
    audit_doc = (
        f"[{json.dumps('0' * 64)},0,1,"
        + audit.entry_tail(now, f"carrier:{auth.carrier_serial}", "payment.create", entity, data)
    ).encode()
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        HPKE.decrypt(sealed, scheme_key, info=info)  # HPKE open
        code_key.verify(signature, message)  # Ed25519 verify: the code's signature
        hashlib.sha256(binary).digest()  # the code's digest
        carrier_key.verify(auth.signature, auth_tbs)  # Ed25519 verify: the authorization
        inst.keys.pseudonym(mid, customer_id)  # HMAC-SHA256
        inst.keys.root.sign(receipt_tbs)  # Ed25519 sign: the receipt
        hashlib.sha256(audit_doc).hexdigest()  # the audit entry's hash
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
    bound = crypto_bound(
        inst, first.code, first.authorization, first.carrier_key, first.customer_id
    )
    if not inst.db.is_sqlite:
        # PostgreSQL: the set-up's tens of thousands of new orders would have autovacuum
        # vacuum and analyze them at its next nap, inside the timed run on the same cores
        # (docs/performance.md, twelfth sitting): done now, so the run measures the steady
        # state, for the institution and the yardstick alike
        with inst.db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM (ANALYZE)")
    inst.db.dispose()
    return work, bound


def window_p99_ms(done_at: list[float], latencies: list[float], elapsed: float) -> list[float]:
    """The p99 latency (ms) of the requests that finished in each whole second of the run.

    Only complete one-second windows count (the last, partial one is left out); a window's p99
    is the inclusive 99th percentile of its latencies (its maximum when it has fewer than 100).
    """
    windows: list[list[float]] = [[] for _ in range(int(elapsed))]
    for at, latency in zip(done_at, latencies, strict=True):
        if int(at) < len(windows):
            windows[int(at)].append(latency)
    out = []
    for window in windows:
        if len(window) >= 2:
            p99 = statistics.quantiles(window, n=100, method="inclusive")[98]
        else:
            p99 = window[0] if window else 0.0
        out.append(p99 * 1000)
    return out


async def load(
    base_url: str,
    work: list[list[tuple[str, str]]],
    seconds: float,
    ssl_context: ssl.SSLContext | None = None,
    *,
    connect_first: bool = True,
) -> dict[str, Any]:
    """Closed loop: each client sends its next payment as soon as the previous one answered
    (over HTTPS verified with ``ssl_context``, the pinned CA, for an ``https://`` server).

    ``connect_first`` (the default, as load tools do): before the clock starts, every client
    opens its keep-alive connection (TCP and the TLS handshake) with one ``GET /health``, all at
    once; that phase is timed on its own and reported as ``connect_phase_ms`` (with its worst
    request), never counted in the payments' latencies or rate. ``connect_first=False`` (the
    benches before the ninth sitting): the 16 handshakes happen inside the first timed second,
    and the first payment of each client waits for its connection's handshake."""
    latencies: list[float] = []
    done_at: list[float] = []  # seconds since the start when each answered request finished
    errors: dict[str, int] = {}
    ok = 0
    exhausted = False
    conn = aiohttp.TCPConnector(
        limit=0, force_close=False, ssl=ssl_context if ssl_context is not None else True
    )
    connect_phase: dict[str, Any] = {}
    async with aiohttp.ClientSession(base_url=base_url, connector=conn) as session:
        if connect_first:

            async def opened() -> float:
                t = time.perf_counter()
                async with session.get("/health") as r:
                    await r.read()
                return time.perf_counter() - t

            c0 = time.perf_counter()
            each = await asyncio.gather(*(opened() for _ in work))
            connect_phase = {
                "connect_phase_ms": round((time.perf_counter() - c0) * 1000, 2),
                "connect_phase_worst_ms": round(max(each, default=0.0) * 1000, 2),
                "connections": len(work),
            }
        deadline = time.perf_counter() + seconds

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
                t1 = time.perf_counter()
                latencies.append(t1 - t0)
                done_at.append(t1 - t_start)
                if status == 201:
                    ok += 1
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1
            exhausted = True

        t_start, started_unix = time.perf_counter(), time.time()
        await asyncio.gather(*(client(w) for w in work))
        elapsed = time.perf_counter() - t_start
    per_second = window_p99_ms(done_at, latencies, elapsed)
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 100 else [0.0] * 99
    return {
        "payments": ok,
        "elapsed_s": round(elapsed, 2),
        "payments_per_s": round(ok / elapsed, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "p99_worst_second_ms": round(max(per_second, default=0.0), 2),
        "p99_per_second_ms": [round(v, 2) for v in per_second],
        "started_unix": round(started_unix, 3),  # second i of p99_per_second_ms starts here + i
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "work_exhausted": exhausted,
        "connect_first": connect_first,
        **connect_phase,
    }


def _problems(stdout: str) -> list[str]:
    """The audit's problems from its --json output (the raw tail when it is not JSON)."""
    try:
        return [str(p) for p in json.loads(stdout.strip().splitlines()[-1])["problems"]]
    except (ValueError, IndexError, KeyError, TypeError):
        return [stdout[-300:]] if stdout.strip() else []


def add_start_option(ap: argparse.ArgumentParser) -> None:
    """``--cold-start`` (shared with bench/bare_path.py): see :func:`load`'s ``connect_first``."""
    ap.add_argument(
        "--cold-start",
        action="store_true",
        help="open the clients' connections (TLS handshakes) inside the timed run, as the"
        " benches did before the ninth sitting; by default they are opened first and their"
        " phase is reported apart (connect_phase_ms)",
    )


def add_tls_option(ap: argparse.ArgumentParser) -> None:
    """``--tls/--no-tls`` (shared with bench/bare_path.py, whose yardstick then speaks the same
    transport as the institution it is compared with)."""
    ap.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="HTTPS verified with the institution's pinned CA, as deployed (default);"
        " --no-tls: plain HTTP on loopback (what TLS costs is the difference)",
    )


def pinned(server: Any) -> ssl.SSLContext | None:
    """The pinned CA's context for ``load`` of an HTTPS server (None: plain HTTP)."""
    verify = server.verify
    return verify if isinstance(verify, ssl.SSLContext) else None


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
    add_start_option(ap)
    ap.add_argument(
        "--keys-backend",
        choices=["file", "pkcs11"],
        default="file",
        help="root signing key in the key directory or in a throwaway SoftHSM2 token",
    )
    ap.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="one more argument for `institution serve` (repeatable), e.g. --no-access-log",
    )
    add_tls_option(ap)
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
            if args.keys_backend == "pkcs11":
                from tests.institution import softhsm

                reason = softhsm.missing()
                if reason is not None:
                    raise SystemExit(f"--keys-backend pkcs11: {reason}")
                os.environ.update(softhsm.make(tmp / "softhsm").env())  # every process started
            keys = tmp / "keys"
            init_db(db_url, keys)
            per_client = int(args.max_rate * args.seconds / args.concurrency) + 1
            t0 = time.perf_counter()
            work, bound = prepare(db_url, keys, args.concurrency, per_client, args.merchants)
            setup_s = time.perf_counter() - t0
            server = ServerProcess(
                db_url,
                keys,
                extra=[
                    "--workers",
                    str(workers),
                    "--no-webhooks",
                    "--merchant-rate",
                    "0",
                    *args.server_arg,
                ],
                tls=args.tls,  # HTTPS by default, as deployed: the figures include TLS
            ).start()
            assert server.proc is not None
            pg_pid = cluster.proc.pid if cluster is not None and cluster.proc else None
            db0 = cpu_seconds(pg_pid) if pg_pid else 0.0
            cpu0, own0 = cpu_seconds(server.proc.pid), time.process_time()
            result = asyncio.run(
                load(
                    server.base_url,
                    work,
                    args.seconds,
                    pinned(server),
                    connect_first=not args.cold_start,
                )
            )
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
            audit_t0 = time.monotonic()
            audit = subprocess.run(
                [sys.executable, "-m", "safescan.institution", "audit", "--db", db_url, "--json"],
                env=env(),
                capture_output=True,
                text=True,
            )
            audit_s = time.monotonic() - audit_t0
            result.update(
                db=args.db,
                seconds=args.seconds,
                concurrency=args.concurrency,
                workers=workers,
                crypto_bound_per_s=round(bound, 1),
                ratio_to_crypto_bound=round(result["payments_per_s"] / bound, 3),
                audit_ok=audit.returncode == 0,
                audit_s=round(audit_s, 1),
                audit_problems=_problems(audit.stdout)[:5],
                setup_s=round(setup_s, 1),
                pg_fsync=args.pg_fsync if args.db == "postgresql" else None,
                keys_backend=args.keys_backend,
                tls=args.tls,
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
        f" {workers} server process(es), root key: {args.keys_backend},"
        f" {'HTTPS (pinned CA)' if args.tls else 'plain HTTP'}"
    )
    print(f"  payments/s        {result['payments_per_s']}")
    print(f"  latency p50 / p99 {result['p50_ms']} ms / {result['p99_ms']} ms")
    print(f"  worst second p99  {result['p99_worst_second_ms']} ms")
    if "connect_phase_ms" in result:
        print(
            f"  connections first {result['connections']} opened (TLS) before the clock:"
            f" {result['connect_phase_ms']} ms, worst {result['connect_phase_worst_ms']} ms"
            " (not in the figures above; --cold-start: inside the first second)"
        )
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
    verdict = "passed" if result["audit_ok"] else "FAILED"
    print(f"  audit after run   {verdict} ({result['audit_s']} s)")


if __name__ == "__main__":
    main()
