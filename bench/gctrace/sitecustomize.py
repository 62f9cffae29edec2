"""Garbage-collector pauses of every Python process started with this directory on PYTHONPATH
and ``SAFESCAN_BENCH_GC_LOG=DIR`` set (issue 20: what makes a second's p99 spike).

Python imports ``sitecustomize`` at start-up; this one registers a ``gc.callbacks`` hook that
appends one JSON line per collection that took at least 1 ms, or of the oldest generation, to
``DIR/gc-<pid>.jsonl``: ``{"t": unix time at its start, "gen": generation, "ms": duration,
"argv": the process's command line (first line only)}``. Without the variable it does nothing.
Used by bench/spike_timeline.py; never imported by safescan itself.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Any

_DIR = os.environ.get("SAFESCAN_BENCH_GC_LOG")


def _install(directory: str) -> None:
    path = os.path.join(directory, f"gc-{os.getpid()}.jsonl")
    started: list[float] = [0.0, 0.0]
    first = [True]

    def hook(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0], started[1] = time.time(), time.perf_counter()
            return
        ms = (time.perf_counter() - started[1]) * 1000
        gen = int(info.get("generation", 0))
        if ms < 1.0 and gen < 2:
            return
        doc: dict[str, Any] = {"t": round(started[0], 4), "gen": gen, "ms": round(ms, 3)}
        if first[0]:
            doc["argv"] = " ".join(sys.argv)[:300]
            first[0] = False
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(doc) + "\n")

    gc.callbacks.append(hook)


if _DIR:
    _install(_DIR)
