"""What happens in the seconds whose p99 spikes (issue 20): a per-second timeline of one load run.

    .venv/bin/python bench/spike_timeline.py [--db sqlite|postgresql] [--seconds 20] [--json]

Runs bench/institution_load.py (unchanged, with its arguments) with bench/gctrace on
``PYTHONPATH`` and ``SAFESCAN_BENCH_GC_LOG`` set, so every Python process of the run (the
institution server and the load generator) logs its garbage-collector pauses
(bench/gctrace/sitecustomize.py: collections of 1 ms or more, and every full one). Meanwhile it
samples, once per second, the machine's CPU use (``/proc/stat``: the share of both cores busy)
and its load average. It then prints, for every whole second of the load: the p99 of the
payments that finished in it, the server's and the generator's GC pauses in it (total ms, the
longest, how many full collections; set-up and start-up are left out) and the machine's CPU
use, and a summary: in how many of
the spike seconds (p99 above twice the median second's) the server paused for GC, and the
machine's load then.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _cpu_busy() -> tuple[float, float]:
    with open("/proc/stat", encoding="ascii") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields), idle


def _sampler(out: list[dict[str, float]], stop: threading.Event) -> None:
    total0, idle0 = _cpu_busy()
    while not stop.wait(1.0):
        total1, idle1 = _cpu_busy()
        busy = 1 - (idle1 - idle0) / max(total1 - total0, 1e-9)
        out.append({"t": time.time(), "busy": round(busy, 3), "load1": os.getloadavg()[0]})
        total0, idle0 = total1, idle1


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--json", action="store_true")
    args, rest = ap.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="safescan-gclog-") as logdir:
        env = dict(os.environ)
        env["SAFESCAN_BENCH_GC_LOG"] = logdir
        env["PYTHONPATH"] = os.pathsep.join(
            [str(HERE / "gctrace"), *filter(None, [env.get("PYTHONPATH")])]
        )
        samples: list[dict[str, float]] = []
        stop = threading.Event()
        sampler = threading.Thread(target=_sampler, args=(samples, stop), daemon=True)
        sampler.start()
        cmd = [sys.executable, str(HERE / "institution_load.py"), "--db", args.db]
        cmd += ["--seconds", str(args.seconds), "--json", *rest]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        stop.set()
        if proc.returncode != 0:
            raise SystemExit(f"institution_load.py failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        pauses: list[dict[str, Any]] = []
        for path in Path(logdir).glob("gc-*.jsonl"):
            lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            argv = next((x.get("argv", "") for x in lines if "argv" in x), "")
            role = (
                "server" if "serve" in argv else "generator" if "institution_load" in argv else ""
            )
            pauses += [x | {"role": role} for x in lines if role]
    start = float(result["started_unix"])
    per_second = result["p99_per_second_ms"]
    rows = []
    for i, p99 in enumerate(per_second):
        lo, hi = start + i, start + i + 1
        row: dict[str, Any] = {"second": i, "p99_ms": p99}
        for role in ("server", "generator"):
            mine = [x for x in pauses if x["role"] == role and lo <= x["t"] < hi]
            row[f"{role}_gc_ms"] = round(sum(x["ms"] for x in mine), 1)
            row[f"{role}_gc_max_ms"] = round(max((x["ms"] for x in mine), default=0.0), 1)
            row[f"{role}_full_gcs"] = sum(1 for x in mine if x["gen"] == 2)
        cpu = [s for s in samples if lo <= s["t"] - 0.5 < hi]
        row["cpu_busy"] = cpu[0]["busy"] if cpu else None
        row["load1"] = cpu[0]["load1"] if cpu else None
        rows.append(row)
    end = start + len(per_second)
    pauses = [x for x in pauses if start <= x["t"] < end]  # during the load only
    median = statistics.median(per_second) if per_second else 0.0
    spikes = [r for r in rows if r["p99_ms"] > 2 * median]
    summary = {
        "payments_per_s": result["payments_per_s"],
        "p99_ms": result["p99_ms"],
        "p99_worst_second_ms": result["p99_worst_second_ms"],
        "median_second_p99_ms": round(median, 1),
        "spike_seconds": len(spikes),
        "spike_seconds_with_server_gc_over_5ms": sum(
            1 for r in spikes if r["server_gc_max_ms"] > 5
        ),
        "server_full_gcs": sum(1 for x in pauses if x["role"] == "server" and x["gen"] == 2),
        "server_gc_max_ms": round(
            max((x["ms"] for x in pauses if x["role"] == "server"), default=0.0), 1
        ),
        "generator_gc_max_ms": round(
            max((x["ms"] for x in pauses if x["role"] == "generator"), default=0.0), 1
        ),
        "cpu_busy_median": statistics.median([s["busy"] for s in samples]) if samples else None,
        "load1_range": [
            round(min(s["load1"] for s in samples), 1),
            round(max(s["load1"] for s in samples), 1),
        ]
        if samples
        else None,
        "errors": result["errors"],
        "audit_ok": result["audit_ok"],
    }
    if args.json:
        print(json.dumps({"summary": summary, "seconds": rows}))
        return
    print("second  p99 ms  server GC ms (max, full)  generator GC ms (max)  CPU busy  load")
    for r in rows:
        server = f"{r['server_gc_ms']:7.1f} ({r['server_gc_max_ms']:5.1f}, {r['server_full_gcs']})"
        generator = f"{r['generator_gc_ms']:7.1f} ({r['generator_gc_max_ms']:5.1f})"
        print(
            f"{r['second']:6d} {r['p99_ms']:7.1f}  {server}        {generator}"
            f"       {r['cpu_busy']}  {r['load1']}"
        )
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
