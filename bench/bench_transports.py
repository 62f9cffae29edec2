"""APDU round trips over every carrier transport, side by side.

    .venv/bin/python bench/bench_transports.py [--rounds N] [--audio-rounds M] [--json]

Each transport talks to its own carrier process. The APDU is a clear GET INFO (a 4-byte command
with extended Le, ~150-byte answer), as in bench_carrier.py; "payment" is one whole session
(open_session + OPEN CODE + VERIFY PIN + AUTHORIZE). PC/SC runs only where a private pcscd can
(root, pcscd, vsmartcard-vpcd, pyscard: scripts/pcsc-setup.sh); otherwise its row says why.

Audio: both ends are software, so PCM is not paced in real time; "air" is the audio time the
same exchange occupies on a real headset jack (samples sent + received / 44.1 kHz).

KEY UPDATE (scheme-key epochs) is measured the way the wallet delivers it, inside the secure
session, with 1 new epoch (the daily update) and 8 (a carrier catching up); it includes the
card's EEPROM write.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from safescan.carrier.apdu import CommandApdu
from safescan.carrier.client import CarrierClient
from safescan.carrier.provision import personalize
from safescan.carrier.testing import CarrierProcess, LocalInstitution
from safescan.carrier.transport.audio import AudioTransport, air_time

PIN = "246810"
CHANNEL = "snr=20&drift_ppm=100&dc=0.05&seed=1"
CARD_CHANNEL = "snr=20&drift_ppm=-100&dc=-0.05&seed=2"


def _stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1e3, p99 * 1e3


def measure(
    client: CarrierClient, inst: LocalInstitution, rounds: int, sessions: int
) -> dict[str, float]:
    """APDU round trips and whole payment sessions on a connected client."""
    inst.manufacture(client)
    personalize(client, inst.make_bundle, PIN, 5)
    client.select()
    get_info = CommandApdu(0x80, 0xCA, ne=65536)
    transport = client.transport
    audio = transport if isinstance(transport, AudioTransport) else None
    before = air_time(audio.link.stats) if audio else 0.0
    rtts = []
    for _ in range(rounds):
        t = time.perf_counter()
        assert client.transmit(get_info).ok
        rtts.append(time.perf_counter() - t)
    air_apdu = (air_time(audio.link.stats) - before) / rounds if audio else 0.0
    pays = []
    for i in range(sessions):
        code = inst.dynamic_code(order_id=f"bench-{i}")
        t = time.perf_counter()
        client.open_session(inst.trust)
        contents = client.open_code(code)
        client.verify_pin(PIN)
        client.authorize(merchant_id=contents.merchant.id, amount=335, currency=978)
        pays.append(time.perf_counter() - t)
    median, p99 = _stats(rtts)
    row = {
        "n": rounds,
        "median": median,
        "p99": p99,
        "air": air_apdu * 1e3,
        "pay": statistics.median(pays) * 1e3,
    }
    updates = max(3, rounds // 10)
    for keys in (1, 8):
        stats = key_updates(client, inst, updates, keys)
        row.update({f"ku{keys}_{name}": value for name, value in stats.items()})
    return row


def key_updates(
    client: CarrierClient, inst: LocalInstitution, count: int, keys: int
) -> dict[str, float]:
    """KEY UPDATE inside the secure session, as the wallet delivers it: ``keys`` new epochs per
    update (1: the daily update; 8: a carrier catching up after 8 epochs offline). The time
    includes the card's EEPROM write (fsync) of the new epoch keys."""
    client.open_session(inst.trust)
    info = client.get_info()
    assert info.carrier_serial is not None
    epoch = info.key_epoch
    if inst.epochs and inst.epochs[-1].epoch > epoch:  # catch up first (not measured)
        epoch = client.key_update(inst.key_update(info.carrier_serial, epoch))
    transport = client.transport
    audio = transport if isinstance(transport, AudioTransport) else None
    times, sizes, air = [], [], 0.0
    for _ in range(count):
        for _ in range(keys):
            inst.rotate()
        update = inst.key_update(info.carrier_serial, epoch)
        before = air_time(audio.link.stats) if audio else 0.0
        t = time.perf_counter()
        epoch = client.key_update(update)
        times.append(time.perf_counter() - t)
        air += (air_time(audio.link.stats) - before) if audio else 0.0
        sizes.append(len(update))
    median, p99 = _stats(times)
    return {"median": median, "p99": p99, "bytes": max(sizes), "air": air / count * 1e3}


@contextmanager
def process(
    state: Path,
    where: list[str] | None = None,
    *,
    serial: bool = False,
    prefix: tuple[str, ...] | list[str] = (),
) -> Iterator[str]:
    """A carrier process; yields its URL."""
    proc = CarrierProcess(state, where=where, serial=serial, prefix=prefix)
    proc.start()
    try:
        yield proc.url
    finally:
        proc.stop()


def run_pcsc(tmp: Path, inst: LocalInstitution, rounds: int) -> dict[str, float] | str:
    """The PC/SC row, or the reason it cannot run here."""
    from safescan.carrier.pcscd import PcscDaemon, missing_requirements

    reason = missing_requirements()
    if reason is not None:
        return str(reason)
    with PcscDaemon(tmp / "pcscd") as daemon:
        os.environ.update(daemon.env())
        with process(
            tmp / "pcsc.state", ["--vpcd", daemon.vpcd_url], prefix=daemon.netns_command()
        ):
            daemon.wait_for_card()
            with CarrierClient.connect("pcsc://" + quote(daemon.reader)) as client:
                row: dict[str, float] = measure(client, inst, rounds, 20)
                return row


def run_all(args: argparse.Namespace) -> list[tuple[str, dict[str, float] | str]]:
    """Run every transport and print the table; returns the rows (a string: skipped, why)."""
    inst = LocalInstitution.create()
    rows: list[tuple[str, dict[str, float] | str]] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)

        def run(
            label: str, url_of: Callable[[str], str], where: list[str] | None, serial: bool = False
        ) -> None:
            n = args.audio_rounds if label.startswith("audio") else args.rounds
            sessions = 5 if label.startswith("audio") else 50
            state = tmp / f"{label.split()[0]}-{len(rows)}.state"
            with (
                process(state, where, serial=serial) as url,
                CarrierClient.connect(url_of(url), timeout=10) as client,
            ):
                rows.append((label, measure(client, inst, n, sessions)))

        run("tcp (vpcd framing)", str, None)
        run("serial pty", str, None, serial=True)
        rows.append(("pcsc (pcscd + vpcd)", run_pcsc(tmp, inst, args.rounds)))
        run("audio, clean line", str, ["--audio", "tcp://127.0.0.1:0"])
        run(
            "audio, 20 dB channel",
            lambda url: f"{url}?{CHANNEL}",
            ["--audio", f"tcp://127.0.0.1:0?{CARD_CHANNEL}"],
        )
    head = f"{'transport':24} {'n':>5} {'median ms':>10} {'p99 ms':>9} {'air ms':>8}"
    print(f"{head} {'payment ms':>11}")
    for label, row in rows:
        if isinstance(row, str):
            print(f"{label:24} skipped: {row}")
            continue
        air = f"{row['air']:8.0f}" if row["air"] else f"{'-':>8}"
        print(
            f"{label:24} {row['n']:5.0f} {row['median']:10.3f} {row['p99']:9.3f} {air} "
            f"{row['pay']:11.1f}"
        )
    print("air = audio time of one APDU exchange on a real headset jack (not paced here)")
    print()
    print(f"{'KEY UPDATE (in session)':24} {'epochs':>6} {'bytes':>6} {'median ms':>10}", end="")
    print(f" {'p99 ms':>9} {'air ms':>8}")
    for label, row in rows:
        if isinstance(row, str):
            continue
        for keys in (1, 8):
            air = row[f"ku{keys}_air"]
            shown = f"{air:8.0f}" if air else f"{'-':>8}"
            print(
                f"{label:24} {keys:6d} {row[f'ku{keys}_bytes']:6.0f}"
                f" {row[f'ku{keys}_median']:10.3f} {row[f'ku{keys}_p99']:9.3f} {shown}"
            )
    return rows


def main() -> None:
    """Run every transport and print the table (with --json: one JSON object on stdout)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="APDUs per fast transport")
    parser.add_argument("--audio-rounds", type=int, default=40, help="APDUs per audio run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not args.json:
        run_all(args)
        return
    with contextlib.redirect_stdout(sys.stderr):
        rows = run_all(args)
    table = [
        {"transport": label, "skipped": row}
        if isinstance(row, str)
        else {"transport": label, **row}
        for label, row in rows
    ]
    print(json.dumps({"rounds": args.rounds, "audio_rounds": args.audio_rounds, "rows": table}))


if __name__ == "__main__":
    main()
