"""Key-carrier benchmark: APDU round trips (TCP, serial pty) and a full payment session.

    .venv/bin/python bench/bench_carrier.py [--rounds N]

Targets (issue 3): TCP APDU round trip median <= 0.5 ms; full session (secure channel + PIN +
OPEN CODE + AUTHORIZE) over TCP median <= 10 ms. Each carrier runs as its own process.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from safescan.carrier.apdu import CommandApdu
from safescan.carrier.client import CarrierClient
from safescan.carrier.provision import personalize
from safescan.carrier.testing import CarrierProcess, LocalInstitution

PIN = "246810"


def _ms(samples: list[float]) -> str:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    median = statistics.median(samples) * 1e3
    return f"median {median:.3f} ms  p99 {p99 * 1e3:.3f} ms  (n={len(samples)})"


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


def main() -> None:
    """Run and print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=300)
    args = parser.parse_args()
    inst = LocalInstitution.create()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        with CarrierProcess(Path(tmp) / "tcp.state") as proc:
            started = time.perf_counter() - t
            with CarrierClient.connect(proc.url) as client:
                personalize(client, inst.make_bundle, PIN, 16)
                round_trips(client, 100)  # warm-up
                print(f"carrier process start-up (to READY):     {started * 1e3:.0f} ms")
                figure = _ms(round_trips(client, args.rounds))
                print(f"APDU round trip, TCP (GET INFO):          {figure}")
                full_sessions(client, inst, 10)
                print(
                    "full session, TCP (channel+PIN+OPEN CODE+AUTHORIZE): "
                    f"{_ms(full_sessions(client, inst, args.sessions))}"
                )
        serial = CarrierProcess(Path(tmp) / "serial.state", serial=True)
        with serial as proc, CarrierClient.connect(proc.url) as client:
            personalize(client, inst.make_bundle, PIN, 16)
            round_trips(client, 100)
            figure = _ms(round_trips(client, args.rounds))
            print(f"APDU round trip, serial pty (GET INFO):   {figure}")
            full_sessions(client, inst, 10)
            print(
                "full session, serial pty:                "
                f"{_ms(full_sessions(client, inst, args.sessions))}"
            )


if __name__ == "__main__":
    main()
