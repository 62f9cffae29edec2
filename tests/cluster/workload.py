"""Payments against a running HA cluster while parts of it are killed, and the check afterwards.

Shared by ``bench/failover.py`` and ``tests/cluster/test_failover.py``:

- :func:`prepare` makes merchants, customers, key carriers, precreated orders and one
  carrier-signed authorization per order (before the timed window, in-process);
- :func:`run_load` pays them from closed-loop aiohttp clients through HAProxy. Every request
  carries an Idempotency-Key; a client that does not learn the outcome (connection lost,
  timeout, 502/503/504, "in progress") retries *the same request with the same key* until it
  gets an answer. Every acknowledgement (201) is appended to a log file as it arrives;
- :class:`FaultInjector` kills the primary's PostgreSQL (and an API process, an etcd member)
  while the load runs and brings the killed processes back;
- :func:`verify` reads the acknowledgement log and the ledger: each acknowledged payment is there
  exactly once, nothing unacknowledged is half-applied, and ``safescan institution audit`` passes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import ssl
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from safescan.cluster import Cluster, ClusterError
from tests.institution.harness import b64
from tests.institution.loadprep import make_payables

# how long a fault's healing may take before it counts as not healed (a bound against a hang)
HEAL_BOUND_S = 180.0
RETRY_STATUSES = frozenset({502, 503, 504})
# error codes that mean "not decided yet, ask again with the same key"
RETRY_CODES = frozenset({"request_in_progress", "idempotency_in_progress", "in_progress"})


@dataclass(frozen=True)
class Work:
    """One payment to make: the code, its signed authorization, and what it should cost whom."""

    order_id: str
    code: str
    auth: str
    amount: int
    customer_id: str
    key: str


def prepare(
    cluster: Cluster, clients: int, per_client: int, merchants: int = 4
) -> list[list[Work]]:
    """Merchants, one customer + carrier per client, orders and authorizations (in-process,
    through HAProxy)."""
    from safescan.institution.db import Database
    from safescan.institution.keystore import KeyStore
    from safescan.institution.service import Institution

    os.environ["PGPASSFILE"] = str(cluster.pgpass)
    passphrase = cluster.secrets().passphrase.encode()
    inst = Institution(Database(cluster.db_url), KeyStore(cluster.keys_dir).load(passphrase))
    try:
        payables = make_payables(inst, clients, per_client, merchants, name="Failover")
    finally:
        inst.db.dispose()
    return [
        [
            Work(
                p.order_id,
                p.code,
                b64(p.authorization.to_bytes()),
                p.amount,
                p.customer_id,
                f"failover-{p.order_id}",
            )
            for p in items
        ]
        for items in payables
    ]


@dataclass
class LoadResult:
    """What the clients saw."""

    acks: dict[str, str] = field(default_factory=dict)  # order_id -> payment_id
    ack_times: list[float] = field(default_factory=list)  # monotonic
    latencies: list[float] = field(default_factory=list)  # first attempt to acknowledgement
    refused: dict[str, str] = field(default_factory=dict)  # order_id -> "status code"
    unresolved: list[str] = field(default_factory=list)
    attempts: int = 0
    retried_payments: int = 0
    retry_kinds: dict[str, int] = field(default_factory=dict)
    conflicting_acks: int = 0
    started: float = 0.0
    ended: float = 0.0
    work_exhausted: bool = False


async def _load(
    base_url: str,
    work: list[list[Work]],
    seconds: float,
    ack_log: Path,
    resolve_s: float,
    res: LoadResult,
    max_rate: float | None,
    ssl_context: ssl.SSLContext | None,
) -> None:
    res.started = time.monotonic()
    # each client at most max_rate / clients payments per second (None: as fast as answered)
    interval = len(work) / max_rate if max_rate else 0.0
    stop_new = res.started + seconds
    give_up = stop_new + resolve_s
    log = ack_log.open("a", buffering=1)
    timeout = aiohttp.ClientTimeout(total=15)
    # HTTPS through HAProxy: verified with the cluster's CA only (never verification off)
    conn = aiohttp.TCPConnector(limit=0, ssl=ssl_context if ssl_context is not None else True)
    async with aiohttp.ClientSession(base_url=base_url, connector=conn, timeout=timeout) as s:

        async def pay(w: Work) -> None:
            body = json.dumps({"code": w.code, "authorization": w.auth}).encode()
            headers = {"Content-Type": "application/json", "Idempotency-Key": w.key}
            delay, retried, t_first = 0.05, False, time.monotonic()
            while True:
                res.attempts += 1
                kind = ""
                try:
                    async with s.post("/v1/payments", data=body, headers=headers) as r:
                        status, raw = r.status, await r.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    kind = type(exc).__name__
                else:
                    code = ""
                    try:
                        doc = json.loads(raw)
                        code = doc.get("error", {}).get("code", "") if status >= 400 else ""
                    except ValueError:
                        doc = {}
                    if status == 201:
                        pid = doc["payment_id"]
                        if w.order_id in res.acks and res.acks[w.order_id] != pid:
                            res.conflicting_acks += 1
                        res.acks[w.order_id] = pid
                        res.ack_times.append(time.monotonic())
                        res.latencies.append(res.ack_times[-1] - t_first)
                        log.write(
                            json.dumps(
                                {
                                    "order_id": w.order_id,
                                    "payment_id": pid,
                                    "amount": w.amount,
                                    "t": time.time(),
                                }
                            )
                            + "\n"
                        )
                        return
                    if status not in RETRY_STATUSES and code not in RETRY_CODES:
                        res.refused[w.order_id] = f"{status} {code}"
                        return
                    kind = f"{status} {code}".strip()
                res.retry_kinds[kind] = res.retry_kinds.get(kind, 0) + 1
                if not retried:
                    res.retried_payments, retried = res.retried_payments + 1, True
                if time.monotonic() > give_up:
                    res.unresolved.append(w.order_id)
                    return
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

        async def client(items: list[Work]) -> None:
            next_at = time.monotonic()
            for w in items:
                if time.monotonic() >= stop_new:
                    return
                await pay(w)
                next_at += interval
                if next_at > time.monotonic():
                    await asyncio.sleep(next_at - time.monotonic())
                else:
                    next_at = time.monotonic()  # no catching up after a failover
            res.work_exhausted = True

        await asyncio.gather(*(client(w) for w in work))
    log.close()
    res.ended = time.monotonic()


def run_load(
    base_url: str,
    work: list[list[Work]],
    seconds: float,
    ack_log: Path,
    resolve_s: float = 90,
    max_rate: float | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> LoadResult:
    """Closed-loop clients for ``seconds`` (paced to ``max_rate`` payments/s in all, if
    given); payments in flight at the end are retried (same key) for up to ``resolve_s`` more
    until their outcome is known."""
    res = LoadResult()
    asyncio.run(_load(base_url, work, seconds, ack_log, resolve_s, res, max_rate, ssl_context))
    return res


@dataclass
class Fault:
    """One injected fault and how long the cluster took to heal from it."""

    kind: str
    target: str
    at: float  # monotonic
    new_leader: str | None = None
    healed_s: float | None = None


class FaultInjector(threading.Thread):
    """Kills parts of the cluster on a schedule while the load runs: ``plan`` is a list of
    (seconds after start, "primary" | "api" | "etcd" | "node"). After each fault it waits until
    the cluster has a primary with a synchronous standby again and restarts killed processes."""

    def __init__(self, cluster: Cluster, plan: list[tuple[float, str]]) -> None:
        super().__init__(name="fault-injector", daemon=True)
        self.cluster, self.plan = cluster, sorted(plan)
        self.faults: list[Fault] = []
        self.errors: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        for at, kind in self.plan:
            if self.stop_event.wait(max(0.0, t0 + at - time.monotonic())):
                return
            try:
                self._inject(kind)
            except ClusterError as exc:
                self.errors.append(f"{kind}: {exc.message}")

    def _inject(self, kind: str) -> None:
        c = self.cluster
        # the waits are bounds against a hang, generous for a loaded machine: how long healing
        # took is measured (healed_s), never asserted
        if kind == "primary":
            before = c.wait_leader(HEAL_BOUND_S)
            f = Fault("primary", f"pg{c.kill_primary()}", time.monotonic())
            ok = _wait_new_leader(c, before, HEAL_BOUND_S)
            ok = ok and c.wait_for("replication", HEAL_BOUND_S)
            f.new_leader = c.wait_leader(HEAL_BOUND_S)
        elif kind == "node":  # Patroni and its PostgreSQL die together (a machine)
            before = c.wait_leader(HEAL_BOUND_S)
            if before is None:
                raise ClusterError("no primary to kill")
            i = int(before.removeprefix("pg"))
            f = Fault("node", before, time.monotonic())
            c.kill(f"patroni{i}")
            c.kill_postgres(i)
            ok = _wait_new_leader(c, before, HEAL_BOUND_S)
            f.new_leader = c.wait_leader(HEAL_BOUND_S)
            c.ensure_running()
            ok = ok and c.wait_for("replication", HEAL_BOUND_S)
        elif kind in ("api", "etcd"):
            name = "api0" if kind == "api" else "etcd1"
            f = Fault(kind, name, time.monotonic())
            c.kill(name)
            self.stop_event.wait(2.0)  # let the others run without it for a while
            c.ensure_running()
            ok = c.wait_for("api", HEAL_BOUND_S)
        else:
            raise ClusterError(f"unknown fault {kind!r}")
        f.healed_s = round(time.monotonic() - f.at, 2) if ok else None
        self.faults.append(f)


def _wait_new_leader(c: Cluster, before: str | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = c.leader()
        if leader is not None and leader != before:
            return True
        time.sleep(0.1)
    return False


def verify(cluster: Cluster, work: list[list[Work]], ack_log: Path) -> dict[str, Any]:
    """Compare the acknowledgement log with the ledger; run the audit."""
    import psycopg

    acks: dict[str, set[str]] = {}
    for line in ack_log.read_text().splitlines():
        a = json.loads(line)
        acks.setdefault(a["order_id"], set()).add(a["payment_id"])
    ours = {w.order_id: w for items in work for w in items}
    with psycopg.connect(cluster.db_url, passfile=str(cluster.pgpass), connect_timeout=10) as conn:
        orders = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT order_id, pk, state, payment_id, paid_amount FROM orders"
                " WHERE order_id = ANY(%s)",
                (list(ours),),
            )
        }
        pks = [o[0] for o in orders.values()]
        payments: dict[int, list[tuple[str, int]]] = {}
        for pk, pid, amount in conn.execute(
            "SELECT order_pk, id, amount FROM payments WHERE order_pk = ANY(%s)", (pks,)
        ):
            payments.setdefault(pk, []).append((pid, amount))
        pids = [p for lst in payments.values() for p, _ in lst]
        transfers: dict[str, int] = dict(
            conn.execute(
                "SELECT ref, count(*) FROM transfers WHERE kind = 'payment' AND ref = ANY(%s)"
                " GROUP BY ref",
                (pids,),
            ).fetchall()
        )
    lost = doubled = half = unacked_paid = 0
    for order_id, w in ours.items():
        pk, state, order_pid, paid = orders[order_id]
        pays = payments.get(pk, [])
        posted = sum(transfers.get(p, 0) for p, _ in pays)
        if len(pays) > 1 or posted > 1 or len(acks.get(order_id, ())) > 1:
            doubled += 1
        applied = state == "PAID" and len(pays) == 1 and posted == 1
        if (state == "PAID" or pays or posted) and not (
            applied and order_pid == pays[0][0] and paid == w.amount == pays[0][1]
        ):
            half += 1
        if order_id in acks:
            if not applied or order_pid not in acks[order_id]:
                lost += 1
        elif applied:
            unacked_paid += 1
    audit = subprocess.run(
        [sys.executable, "-m", "safescan.institution", "audit", "--db", cluster.db_url, "--json"],
        env=cluster.tool_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    return {
        "acknowledged": len(acks),
        "lost": lost,
        "doubled": doubled,
        "half_applied": half,
        "paid_not_acknowledged": unacked_paid,
        "audit_ok": audit.returncode == 0,
        "audit_problems": [] if audit.returncode == 0 else audit.stdout[-2000:].splitlines(),
    }


def timeline(res: LoadResult, faults: list[Fault], seconds: float) -> dict[str, Any]:
    """Availability figures from the clients' acknowledgements: the longest time without one
    (overall and around each fault) and the throughput away from faults."""
    end = res.started + seconds
    times = sorted(t for t in res.ack_times if t <= end)
    edges = [res.started, *times, min(res.ended, end)]
    gaps = list(itertools.pairwise(edges))
    buckets = [0] * max(1, int(seconds))
    for t in times:
        buckets[min(int(t - res.started), len(buckets) - 1)] += 1
    # steady: the seconds more than 20 s after any fault
    faulty = {int(f.at - res.started) + d for f in faults for d in range(20)}
    steady = [n for k, n in enumerate(buckets) if k not in faulty] or buckets
    per_fault = []
    for k, f in enumerate(faults):
        until = faults[k + 1].at if k + 1 < len(faults) else end
        around = [b - a for a, b in gaps if b >= f.at and a <= until]
        per_fault.append(round(max(around), 2) if around else None)
    lat = sorted(res.latencies)
    q = statistics.quantiles(lat, n=100) if len(lat) > 100 else [0.0] * 99
    return {
        "max_unavailable_s": round(max(b - a for a, b in gaps), 2),
        "unavailable_s_per_fault": per_fault,
        "payments_per_s_steady": round(statistics.median(steady), 1),
        "payments_per_s_overall": round(len(times) / seconds, 1),
        "latency_p50_ms": round(q[49] * 1000, 1),
        "latency_p99_ms": round(q[98] * 1000, 1),
    }
