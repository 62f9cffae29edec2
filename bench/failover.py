"""Failover benchmark: payments through the HA cluster while its primary is SIGKILLed.

    python bench/failover.py --json [--seconds 90] [--faults primary,api,primary,etcd,primary]
    python bench/failover.py --json --seconds 60 --faults none --single-node   # throughput only

Starts a cluster (``safescan.cluster``: 3 etcd, 3 PostgreSQL under Patroni with synchronous
replication, HAProxy, 2 API processes) in a temporary state directory on free loopback ports,
precreates orders and carrier-signed authorizations, then runs closed-loop clients through
HAProxy for N seconds while the faults are injected at even intervals:

- ``primary``: SIGKILL the primary's PostgreSQL (postmaster and backends); its Patroni hands the
  leader key to the synchronous standby, HAProxy's ``/primary`` check follows;
- ``node``: SIGKILL the primary's Patroni and PostgreSQL together (failover after the leader
  key's TTL);
- ``api``: SIGKILL API process 0 (HAProxy sends the retries to the other one);
- ``etcd``: SIGKILL etcd member 1 (the other two keep the quorum).

Killed processes are restarted after each fault. Every client request carries an
Idempotency-Key and is retried with the same key until its outcome is known. Afterwards every
acknowledgement the clients logged is looked up in the ledger (lost, doubled, half-applied) and
``safescan institution audit`` runs. Prints one JSON object (``--json``) or a summary.
With ``--single-node`` it also runs ``bench/institution_load.py --db postgresql`` (one PostgreSQL,
no replication) with the same clients and duration, for the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.cluster.workload import (  # noqa: E402
    FaultInjector,
    prepare,
    run_load,
    timeline,
    verify,
)

from safescan.cluster import Cluster, ClusterSpec  # noqa: E402
from safescan.cluster.procs import children_of  # noqa: E402
from safescan.cluster.spec import free_base_port, load_or_create  # noqa: E402

DEFAULT_FAULTS = "primary,api,primary,etcd,primary"


def cpu_by_part(cluster: Cluster) -> dict[str, float]:
    """CPU seconds used so far by each part: PostgreSQL (all nodes), Patroni, etcd, HAProxy,
    the API processes (meaningful for runs without faults: killed processes lose theirs)."""
    parts: dict[str, float] = {}
    n = cluster.spec.nodes
    names = {
        "patroni": [f"patroni{i}" for i in range(n)],
        "etcd": [f"etcd{i}" for i in range(n)],
        "haproxy": ["haproxy"],
        "api": [f"api{i}" for i in range(cluster.spec.api_processes)],
    }
    for part, procs in names.items():
        pids = [p for name in procs if (p := cluster.procs.pid(name))]
        parts[part] = sum(cpu_seconds(p, tree=part == "api") for p in pids)
    pms = [p for i in range(n) if (p := cluster.postmaster_pid(i))]
    parts["postgresql"] = sum(cpu_seconds(p, tree=True) for p in pms)
    return parts


def cpu_seconds(pid: int, *, tree: bool) -> float:
    """User + system CPU of a process (and, with ``tree``, its children), in seconds."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        if tree:
            todo += children_of(p)
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def run(
    seconds: float,
    faults: list[str],
    concurrency: int,
    max_rate: float,
    state: Path,
    keep: bool = False,
) -> dict[str, Any]:
    """One full failover run in ``state``; returns the figures."""
    spec = ClusterSpec(
        state_dir=state,
        base_port=free_base_port(),
        api_args=("--no-webhooks", "--merchant-rate", "0"),
    )
    cluster = Cluster(load_or_create(state, spec))
    t0 = time.monotonic()
    cluster.up()
    up_s = time.monotonic() - t0
    try:
        per_client = int(max_rate * seconds / concurrency) + 1
        t0 = time.monotonic()
        work = prepare(cluster, concurrency, per_client)
        setup_s = time.monotonic() - t0
        plan = [(seconds * (k + 1) / (len(faults) + 1), f) for k, f in enumerate(faults)]
        injector = FaultInjector(cluster, plan)
        ack_log = state / "acknowledged.jsonl"
        cpu0 = cpu_by_part(cluster)
        injector.start()
        res = run_load(
            cluster.api_url, work, seconds, ack_log, ssl_context=cluster.client_context()
        )
        cpu1 = cpu_by_part(cluster)
        injector.stop_event.set()
        injector.join(120)
        cluster.ensure_running()
        cluster.wait_for("replication", 60)
        checked = verify(cluster, work, ack_log)
        figures = timeline(res, injector.faults, seconds)
        kills = [f for f in injector.faults if f.kind in ("primary", "node")]
        result: dict[str, Any] = {
            "acknowledged": checked["acknowledged"],
            "lost": checked["lost"],
            "doubled": checked["doubled"],
            "half_applied": checked["half_applied"],
            "paid_not_acknowledged": checked["paid_not_acknowledged"],
            "unresolved": len(res.unresolved),
            "refused": len(res.refused),
            "refusals": sorted(set(res.refused.values())),
            "conflicting_acks": res.conflicting_acks,
            "failovers": sum(
                1 for f in kills if f.new_leader is not None and f.new_leader != f.target
            ),
            **figures,
            "audit_ok": checked["audit_ok"],
            "audit_problems": checked["audit_problems"][:10],
            "faults": [
                {
                    "kind": f.kind,
                    "target": f.target,
                    "at_s": round(f.at - res.started, 1),
                    "new_leader": f.new_leader,
                    "healed_s": f.healed_s,
                }
                for f in injector.faults
            ],
            "fault_errors": injector.errors,
            "retried_payments": res.retried_payments,
            "retry_kinds": res.retry_kinds,
            "attempts": res.attempts,
            "work_exhausted": res.work_exhausted,
            "seconds": seconds,
            "concurrency": concurrency,
            "api_processes": spec.api_processes,
            "synchronous_node_count": spec.tuning.synchronous_node_count,
            "synchronous_mode_strict": spec.tuning.synchronous_mode_strict,
            "patroni": {
                "ttl": spec.tuning.ttl,
                "loop_wait": spec.tuning.loop_wait,
                "retry_timeout": spec.tuning.retry_timeout,
                "primary_start_timeout": spec.tuning.primary_start_timeout,
            },
            "cpu_ms_per_payment": {
                part: round((cpu1[part] - cpu0.get(part, 0.0)) * 1000 / max(len(res.acks), 1), 3)
                for part in cpu1
            },
            "cluster_up_s": round(up_s, 1),
            "setup_s": round(setup_s, 1),
        }
        return result
    finally:
        if not keep:
            cluster.down(wipe=True)


def single_node(seconds: float, concurrency: int) -> dict[str, Any]:
    """bench/institution_load.py --db postgresql (fsync on) with the same clients."""
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "institution_load.py"),
            "--db",
            "postgresql",
            "--seconds",
            str(seconds),
            "--concurrency",
            str(concurrency),
            "--workers",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=seconds * 10 + 600,
    )
    if out.returncode != 0:
        return {"error": out.stderr[-500:]}
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument(
        "--faults",
        default=DEFAULT_FAULTS,
        help=f"comma-separated primary|node|api|etcd, or none (default {DEFAULT_FAULTS})",
    )
    ap.add_argument("--concurrency", type=int, default=16, help="closed-loop clients")
    ap.add_argument("--max-rate", type=float, default=600, help="orders prepared per second")
    ap.add_argument("--single-node", action="store_true", help="also run the single-node bench")
    ap.add_argument("--state", type=Path, default=None, help="state directory (default: temp)")
    ap.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = ap.parse_args()
    faults = [] if args.faults == "none" else [f for f in args.faults.split(",") if f]
    with tempfile.TemporaryDirectory(prefix="safescan-failover-") as d:
        Path(d).chmod(0o755)  # the service user (postgres) must reach it
        state = args.state or Path(d) / "cluster"
        result = run(args.seconds, faults, args.concurrency, args.max_rate, state, args.keep)
    if args.single_node:
        one = single_node(args.seconds, args.concurrency)
        result["single_node"] = {
            k: one.get(k)
            for k in ("payments_per_s", "p50_ms", "p99_ms", "workers", "pg_fsync", "error")
            if k in one
        }
        if one.get("payments_per_s"):
            result["steady_vs_single_node"] = round(
                result["payments_per_s_steady"] / one["payments_per_s"], 2
            )
    if args.json:
        print(json.dumps(result))
        return
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
