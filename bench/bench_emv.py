"""Benchmark safescan.code.emv: parse rate of two published payloads, and build time.

Run: ``.venv/bin/python bench/bench_emv.py [--seconds S] [--json]``

Prints payloads/s (best of 5 rounds, one process, one core). If the optional ``cemacqr``
package (a published EMV QRCPS parser on PyPI) is installed, its rate is printed alongside:
``parse_payload`` alone (a TLV split; CRC and rules are checked later, lazily) and
``parse_payload`` + ``validate`` (CRC and EMVCo rules, what ``parse_emv`` always does).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

try:
    from safescan.code import emv
except ModuleNotFoundError:  # not installed into the venv: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from safescan.code import emv

# EMVCo QRCPS Merchant-Presented Mode, worked example (CRC A13A).
EMVCO_SAMPLE = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678"
    "520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京"
    "540523.7253031565502016233030412340603***0708A60086670902ME"
    "91320016A0112233449988770708123456786304A13A"
)
# Banco Central do Brasil, Pix BR Code static example (CRC 1D3D).
PIX_SAMPLE = (
    "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-426655440000"
    "5204000053039865802BR5913Fulano de Tal6008BRASILIA62070503***63041D3D"
)


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn``: best of 5 rounds of about ``seconds / 5`` each."""
    n = 1
    while True:  # calibrate a batch that takes >= 20 ms
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= 0.02:
            break
        n *= 2
    batch = max(n, int(n * (seconds / 5) / dt))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        best = min(best, time.perf_counter() - t0)
    return batch / best


def measure(secs: float) -> dict[str, Any]:
    """Run the benchmark, printing one line per figure; returns the figures."""
    samples = {"EMVCo sample": EMVCO_SAMPLE, "PIX static sample": PIX_SAMPLE}
    out: dict[str, Any] = {"seconds": secs, "samples": {}, "parse_emv": {}, "build_emv": {}}
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.system()}")
    for name, text in samples.items():
        print(f"{len(text)} chars  {name}")
        out["samples"][name] = len(text)

    print("\nsafescan.code.emv")
    for name, text in samples.items():
        r = rate(partial(emv.parse_emv, text), secs)
        out["parse_emv"][name] = r
        print(f"  parse_emv  {name:<18} {r:>10,.0f} payloads/s  ({1e6 / r:6.2f} us)")
    for name, text in samples.items():
        fields = emv.parse_emv(text).fields
        r = rate(partial(emv.build_emv, fields), secs)
        out["build_emv"][name] = r
        print(f"  build_emv  {name:<18} {r:>10,.0f} payloads/s  ({1e6 / r:6.2f} us)")
    data = EMVCO_SAMPLE[:-4].encode()
    r = rate(lambda: emv.crc16_ccitt_false(data), secs)
    out["crc16"] = {"bytes": len(data), "per_s": r}
    print(f"  crc16_ccitt_false over {len(data)} bytes {r:>10,.0f} /s  ({1e6 / r:6.2f} us)")

    try:
        import cemacqr  # type: ignore[import-not-found, unused-ignore]
        from cemacqr.validate import validate  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        print("\ncemacqr not installed: comparison skipped (pip install cemacqr==0.1.2)")
        out["cemacqr"] = None
        return out
    version = importlib.metadata.version("cemacqr")
    peer: dict[str, Any] = {"version": version, "parse_payload": {}, "parse_validate": {}}
    out["cemacqr"] = peer
    print(f"\ncemacqr {version} (optional comparison)")
    for name, text in samples.items():
        if not validate(cemacqr.parse_payload(text)).ok:
            print(f"  {name}: cemacqr does not accept it; skipped")
            continue
        r = rate(partial(cemacqr.parse_payload, text), secs)
        peer["parse_payload"][name] = r
        print(f"  parse_payload            {name:<18} {r:>10,.0f} payloads/s  ({1e6 / r:6.2f} us)")
        r = rate(partial(lambda t: validate(cemacqr.parse_payload(t)), text), secs)
        peer["parse_validate"][name] = r
        print(f"  parse_payload + validate {name:<18} {r:>10,.0f} payloads/s  ({1e6 / r:6.2f} us)")
    return out


def main() -> None:
    """Run the benchmark and print one line per figure (or, with --json, one JSON object)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per figure (default 2)")
    ap.add_argument("--json", action="store_true", help="print one JSON object (text to stderr)")
    args = ap.parse_args()
    if not args.json:
        measure(args.seconds)
        return
    with contextlib.redirect_stdout(sys.stderr):
        figures = measure(args.seconds)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
