"""Where a first second goes: the server's CPU for its clients' connections and first payments.

    .venv/bin/python bench/cold_start.py [sqlite|postgresql]

Starts ``safescan institution serve`` (HTTPS, one worker) on a fresh database prepared as
bench/institution_load.py prepares it (16 clients, each its own key carrier), then measures the
server's CPU (the sum of its threads' ``/proc/<pid>/task/*/schedstat`` run time, in ns, not the
10 ms ticks of ``/proc/<pid>/stat``) for: 16 connections opened at once with one ``GET /health``
each (TCP and TLS handshakes), 16 more ``GET /health`` on the same connections, then 10 rounds of
16 concurrent payments (one per client). The first round against the later ones is what the
server does cold (docs/performance.md, ninth sitting); CPU, unlike latency, barely moves with
the machine's load. Prints one line (a dict) with each figure in ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import aiohttp  # noqa: E402
from tests.institution.harness import ServerProcess, init_db  # noqa: E402
from tests.institution.pg import start_cluster  # noqa: E402

import institution_load  # noqa: E402

CLIENTS, ROUNDS = 16, 10


def server_cpu_s(pid: int) -> float:
    """The process's CPU seconds: its threads' run time from schedstat (ns)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
        except OSError:
            continue  # a thread that ended meanwhile
    return total / 1e9


async def probe(server: ServerProcess, work: list[list[tuple[str, str]]]) -> dict[str, Any]:
    """The figures (see the module docstring)."""
    assert server.proc is not None
    pid, out = server.proc.pid, {}
    connector = aiohttp.TCPConnector(limit=0, ssl=institution_load.pinned(server))
    async with aiohttp.ClientSession(base_url=server.base_url, connector=connector) as s:

        async def health() -> None:
            async with s.get("/health") as r:
                await r.read()

        async def pay(code: str, auth: str) -> float:
            t = time.perf_counter()
            body = json.dumps({"code": code, "authorization": auth}).encode()
            headers = {"Content-Type": "application/json"}
            async with s.post("/v1/payments", data=body, headers=headers) as r:
                await r.read()
                if r.status != 201:
                    raise SystemExit(f"a payment was refused: {r.status}")
            return time.perf_counter() - t

        for name in ("connect16_cpu_ms", "health16_again_cpu_ms"):
            c0 = server_cpu_s(pid)
            await asyncio.gather(*(health() for _ in work))
            out[name] = round((server_cpu_s(pid) - c0) * 1000, 2)
        for rnd in range(ROUNDS):
            c0 = server_cpu_s(pid)
            lat = await asyncio.gather(*(pay(*w[rnd]) for w in work))
            out[f"payments16_round{rnd}_cpu_ms"] = round((server_cpu_s(pid) - c0) * 1000, 2)
            out[f"round{rnd}_slowest_ms"] = round(max(lat) * 1000, 1)
    return out


def main() -> None:
    """Run the probe on SQLite or PostgreSQL (a throwaway cluster) and print its figures."""
    db = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
    cluster = start_cluster(fsync=True) if db == "postgresql" else None
    try:
        with tempfile.TemporaryDirectory(prefix="safescan-cold-") as d:
            keys = Path(d) / "keys"
            db_url = cluster.create_database() if cluster else f"sqlite:///{d}/bench.db"
            init_db(db_url, keys)
            work, _ = institution_load.prepare(db_url, keys, CLIENTS, ROUNDS + 2, 8)
            extra = ["--workers", "1", "--no-webhooks", "--merchant-rate", "0"]
            server = ServerProcess(db_url, keys, extra=extra).start()
            try:
                figures = asyncio.run(probe(server, work))
            finally:
                server.stop()
            print(db, figures, "load", round(os.getloadavg()[0], 1))
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
