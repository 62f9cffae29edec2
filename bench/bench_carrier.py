"""Key-carrier benchmark: APDU round trips (TCP, serial pty) and a full payment session.

    .venv/bin/python bench/bench_carrier.py [--rounds N] [--sessions N] [--json]

Targets (issue 3): TCP APDU round trip median <= 0.5 ms; full session (secure channel + PIN +
OPEN CODE + AUTHORIZE) over TCP median <= 10 ms. Each carrier runs as its own process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from safescan.carrier.apdu import CommandApdu
from safescan.carrier.client import CarrierClient
from safescan.carrier.provision import personalize
from safescan.carrier.testing import CarrierProcess, LocalInstitution

PIN = "246810"


def _stats(samples: list[float]) -> dict[str, float]:
    """Median and p99 in ms, and the sample count."""
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return {"median_ms": statistics.median(samples) * 1e3, "p99_ms": p99 * 1e3, "n": len(samples)}


def _ms(stats: dict[str, float]) -> str:
    return f"median {stats['median_ms']:.3f} ms  p99 {stats['p99_ms']:.3f} ms  (n={stats['n']:.0f})"


def round_trips(client: CarrierClient, rounds: int) -> list[float]:
    """Clear GET INFO round trips (a 4-byte command, ~150-byte answer)."""
    client.select()
    get_info = CommandApdu(0x80, 0xCA, ne=65536)
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        resp = client.transmit(get_info)
        out.append(time.perf_counter() - t)
        assert resp.ok
    return out


def full_sessions(client: CarrierClient, inst: LocalInstitution, rounds: int) -> list[float]:
    """open_session (select, GET INFO, handshake) + OPEN CODE + VERIFY PIN + AUTHORIZE."""
    codes = [inst.dynamic_code(order_id=f"o-{i}") for i in range(rounds)]
    out = []
    for code in codes:
        t = time.perf_counter()
        client.open_session(inst.trust)
        contents = client.open_code(code)
        client.verify_pin(PIN)
        client.authorize(merchant_id=contents.merchant.id, amount=335, currency=978)
        out.append(time.perf_counter() - t)
    return out


def measure(rounds: int, sessions: int) -> dict[str, Any]:
    """Run every figure, printing each line; returns the figures."""
    out: dict[str, Any] = {"rounds": rounds, "sessions": sessions}
    inst = LocalInstitution.create()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        with CarrierProcess(Path(tmp) / "tcp.state") as proc:
            started = time.perf_counter() - t
            out["startup_ms"] = started * 1e3
            with CarrierClient.connect(proc.url) as client:
                inst.manufacture(client)
                personalize(client, inst.make_bundle, PIN, 16)
                round_trips(client, 100)  # warm-up
                print(f"carrier process start-up (to READY):     {started * 1e3:.0f} ms")
                out["tcp_apdu"] = _stats(round_trips(client, rounds))
                print(f"APDU round trip, TCP (GET INFO):          {_ms(out['tcp_apdu'])}")
                full_sessions(client, inst, 10)
                out["tcp_session"] = _stats(full_sessions(client, inst, sessions))
                print(
                    "full session, TCP (channel+PIN+OPEN CODE+AUTHORIZE): "
                    f"{_ms(out['tcp_session'])}"
                )
        serial = CarrierProcess(Path(tmp) / "serial.state", serial=True)
        with serial as proc, CarrierClient.connect(proc.url) as client:
            inst.manufacture(client)
            personalize(client, inst.make_bundle, PIN, 16)
            round_trips(client, 100)
            out["serial_apdu"] = _stats(round_trips(client, rounds))
            print(f"APDU round trip, serial pty (GET INFO):   {_ms(out['serial_apdu'])}")
            full_sessions(client, inst, 10)
            out["serial_session"] = _stats(full_sessions(client, inst, sessions))
            print(f"full session, serial pty:                {_ms(out['serial_session'])}")
    return out


def main() -> None:
    """Run and print the figures (with --json: text to stderr, one JSON object to stdout)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not args.json:
        measure(args.rounds, args.sessions)
        return
    with contextlib.redirect_stdout(sys.stderr):
        figures = measure(args.rounds, args.sessions)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
