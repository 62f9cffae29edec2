"""How long a full garbage collection stops an API process, with and without the frozen heap.

    .venv/bin/python bench/gc_pause.py [--json]

Builds the institution's app exactly as ``institution serve`` does (``server.build_app`` on a
fresh SQLite database made by ``institution init``), but without its last step, then times
``gc.collect(2)`` (median of 5, CPU time of this process) over the start-up heap; then freezes
that heap (``gc.freeze()``, what ``server.settle_heap`` does at the end of ``build_app``) and
times it again. A full collection runs on the event loop's thread whenever the collector
decides to, and every request in flight waits for it: its length is a floor for the worst
second's p99 latency.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.institution.harness import PASSPHRASE, init_db  # noqa: E402

from safescan.institution import server  # noqa: E402
from safescan.institution.config import Tuning  # noqa: E402


def full_collection_ms() -> float:
    """Median CPU time of 5 full collections, ms."""
    times = []
    for _ in range(5):
        t = time.process_time()
        gc.collect(2)
        times.append(time.process_time() - t)
    return round(sorted(times)[2] * 1000, 2)


def main() -> None:
    """Print the figures (one JSON object with ``--json``)."""
    with tempfile.TemporaryDirectory(prefix="safescan-gc-") as d:
        url = f"sqlite:///{Path(d) / 'i.db'}"
        init_db(url, Path(d) / "keys")
        os.environ["SAFESCAN_INSTITUTION_PASSPHRASE"] = PASSPHRASE
        server.settle_heap = lambda: None  # type: ignore[assignment]  # measured both ways here
        app = server.build_app(url, Path(d) / "keys", None, Tuning())
        tracked = len(gc.get_objects())
        before = full_collection_ms()
        gc.freeze()
        after = full_collection_ms()
        out = {
            "objects_tracked_at_start": tracked,
            "full_collection_ms": before,
            "full_collection_ms_frozen": after,
            "frozen": gc.get_freeze_count(),
        }
        del app
    if "--json" in sys.argv:
        print(json.dumps(out))
        return
    print(f"start-up heap: {tracked:,} objects tracked by the collector")
    print(f"full collection: {before} ms CPU; after gc.freeze(): {after} ms CPU")


if __name__ == "__main__":
    main()
