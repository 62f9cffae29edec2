"""Run bench/institution_load.py unchanged, and also record throughput and latency per second.

    .venv/bin/python bench/load_timeseries.py --db sqlite --seconds 60 [--png docs/load-test.png]

Every argument is passed to ``institution_load.py``'s own ``main()`` (same setup, server, load
generator, audit and summary figures). The only thing added is a timer around each request of
its load generator: ``institution_load.aiohttp`` is replaced by a copy of :mod:`aiohttp` whose
``ClientSession.post`` also logs (start, end, status). From that log this prints one JSON
object: ``{"result": <institution_load's own JSON>, "series": [per-second rows]}``, each row
``{"t": second, "payments": n, "errors": n, "p50_ms", "p99_ms", "mean_ms"}`` by completion
time (the last row, cut short by the end of the run, has ``partial_s`` and is not plotted).
``--png`` also draws it (see :func:`plot`, which ``run_all.py`` uses for both databases).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

HERE = Path(__file__).resolve().parent

Record = tuple[float, float, str]  # (start, end, status or exception name)


class _TimedPost:
    """Wraps aiohttp's request context manager; logs one record per request."""

    def __init__(self, inner: Any, log: list[Record]) -> None:
        self._inner, self._log = inner, log
        self._t0 = time.perf_counter()
        self._status = ""

    async def __aenter__(self) -> Any:
        try:
            response = await self._inner.__aenter__()
        except aiohttp.ClientError as exc:
            self._log.append((self._t0, time.perf_counter(), type(exc).__name__))
            raise
        self._status = str(response.status)
        return response

    async def __aexit__(self, *exc_info: Any) -> Any:
        failed = exc_info[0]
        status = self._status if failed is None else failed.__name__
        self._log.append((self._t0, time.perf_counter(), status))
        return await self._inner.__aexit__(*exc_info)


class _TimedSession:
    """Stands in for ``aiohttp.ClientSession``: a real session whose ``post`` is timed."""

    log: ClassVar[list[Record]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._session = aiohttp.ClientSession(*args, **kwargs)

    async def __aenter__(self) -> _TimedSession:
        await self._session.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._session.__aexit__(*exc_info)

    def post(self, *args: Any, **kwargs: Any) -> _TimedPost:
        """A timed ``ClientSession.post``."""
        return _TimedPost(self._session.post(*args, **kwargs), _TimedSession.log)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def load_module() -> types.ModuleType:
    """Import bench/institution_load.py as a module (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("institution_load", HERE / "institution_load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def series(log: list[Record]) -> list[dict[str, Any]]:
    """Per-second rows by completion time, from the first request's start."""
    if not log:
        return []
    origin = min(start for start, _, _ in log)
    buckets: dict[int, list[Record]] = {}
    for record in log:
        buckets.setdefault(int(record[1] - origin), []).append(record)
    rows = []
    last = max(end for _, end, _ in log) - origin
    for second in range(max(buckets) + 1):
        records = buckets.get(second, [])
        latencies = sorted((end - start) * 1000 for start, end, _ in records)
        ok = sum(status == "201" for _, _, status in records)
        row: dict[str, Any] = {"t": second, "payments": ok, "errors": len(records) - ok}
        if second + 1 > last:
            row["partial_s"] = round(last - second, 3)  # the run ended inside this second
        if len(latencies) >= 2:
            q = statistics.quantiles(latencies, n=100, method="inclusive")
            row |= {"p50_ms": q[49], "p99_ms": q[98], "mean_ms": statistics.fmean(latencies)}
        elif latencies:
            row |= {"p50_ms": latencies[0], "p99_ms": latencies[0], "mean_ms": latencies[0]}
        rows.append(row)
    return rows


def run(argv: list[str]) -> dict[str, Any]:
    """institution_load's main() with ``argv`` (``--json`` added); its result and the series."""
    module = load_module()
    shim = types.ModuleType("aiohttp")
    shim.__dict__.update(vars(aiohttp))
    shim.ClientSession = _TimedSession  # type: ignore[attr-defined]
    setattr(module, "aiohttp", shim)  # noqa: B010 (the one hook into the unchanged script)
    _TimedSession.log = []
    saved = sys.argv
    sys.argv = [str(HERE / "institution_load.py"), *argv, "--json"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            module.main()
    finally:
        sys.argv = saved
    lines = [line for line in out.getvalue().splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"institution_load.py printed no JSON: {out.getvalue()[-2000:]}")
    result = json.loads(lines[-1])
    rows = series(_TimedSession.log)
    if not rows:
        raise SystemExit("no request was timed: institution_load.py no longer uses the hook")
    return {"result": result, "series": rows, "requests_timed": len(_TimedSession.log)}


def plot(
    runs: dict[str, dict[str, Any]], path: Path, targets: dict[str, float] | None = None
) -> None:
    """Throughput (payments/s) and latency (p50, p99) per second, one colour per database."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = targets or {}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.8), dpi=110, sharex=True)
    for i, (name, data) in enumerate(runs.items()):
        rows = [r for r in data["series"] if "partial_s" not in r]
        colour = f"C{i}"
        result = data["result"]
        t = [r["t"] + 0.5 for r in rows]
        top.plot(
            t,
            [r["payments"] for r in rows],
            color=colour,
            label=f"{name}: {result['payments_per_s']:,.0f} payments/s overall",
        )
        errors = [(r["t"] + 0.5, r["errors"]) for r in rows if r["errors"]]
        if errors:
            top.scatter(
                *zip(*errors, strict=True), color=colour, marker="x", label=f"{name} errors"
            )
        if f"{name} payments/s" in targets:
            top.axhline(targets[f"{name} payments/s"], color=colour, ls=":", lw=1)
        timed = [r for r in rows if "p50_ms" in r]
        bottom.plot(
            [r["t"] + 0.5 for r in timed],
            [r["p50_ms"] for r in timed],
            color=colour,
            label=f"{name} p50",
        )
        bottom.plot(
            [r["t"] + 0.5 for r in timed],
            [r["p99_ms"] for r in timed],
            color=colour,
            ls="--",
            label=f"{name} p99",
        )
    if "p99_ms" in targets:
        bottom.axhline(targets["p99_ms"], color="C3", ls=":", lw=1, label="p99 target")
    top.set_ylabel("payments per second")
    top.set_ylim(bottom=0)
    top.grid(True, alpha=0.3)
    top.legend(fontsize=8, loc="lower right", framealpha=0.9)
    bottom.set_ylabel("latency (ms), per second")
    bottom.set_xlabel("seconds since the first request (closed loop, 16 clients)")
    bottom.set_ylim(bottom=0)
    bottom.grid(True, which="both", alpha=0.3)
    bottom.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=5)
    top.set_title(
        "Institution load test: POST /v1/payments, carrier-signed authorizations\n"
        "(dotted: targets)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    """Run, print the JSON, and draw the plot if asked."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="Other arguments go to institution_load.py."
    )
    parser.add_argument("--png", type=Path, default=None, help="also draw the series here")
    args, rest = parser.parse_known_args()
    rest = [a for a in rest if a != "--json"]
    data = run(rest)
    if args.png is not None:
        plot({data["result"]["db"]: data}, args.png)
    print(json.dumps(data))


if __name__ == "__main__":
    main()
