"""Run every benchmark of the project and rewrite docs/performance.md from its template.

    bench/run_all                 # full run: several minutes; rewrites docs/performance.md
    bench/run_all --quick         # fast pass, written to a temporary directory (printed)
    bench/run_all --only code,emv # some benchmarks (the others are shown as not run)

Each benchmark runs as its own process with ``--json`` (its human-readable output goes to a
log file in the run directory); the figures are collected, compared with the issues' targets
(met / missed and by how much) and written into ``bench/performance.template.md``, with the
machine (CPU, cores, memory, load average, Python and library versions), the date and the
command. The institution load test (bench/institution_load.py, through
bench/load_timeseries.py which adds a per-second series) runs on SQLite and, if a PostgreSQL
server can be started here, on PostgreSQL, and its throughput and latency over time are
plotted to ``docs/load-test.png``. A benchmark that fails is reported as such in the document;
the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import load_timeseries  # noqa: E402

TEMPLATE = HERE / "performance.template.md"
LIBRARIES = (
    "cryptography",
    "cbor2",
    "base45",
    "zxing-cpp",
    "pillow",
    "numpy",
    "segno",
    "cemacqr",
    "python-pkcs11",
    "sqlalchemy",
    "fastapi",
    "starlette",
    "uvicorn",
    "aiohttp",
    "psycopg",
    "matplotlib",
)

# Targets from the issues (2: code, QR, EMV; 3: carrier; 4: institution).
T_SEAL_US, T_OPEN_US, T_RATIO = 200.0, 250.0, 1.5
T_QR_DYNAMIC, T_QR_STATIC = 12, 8
T_RENDER_MS, T_DECODE_MS = 2.0, 15.0
T_EMV_PER_S = 50_000.0
T_APDU_MS, T_SESSION_MS = 0.5, 10.0
T_LOAD = {"sqlite": 1000.0, "postgresql": 700.0}
T_P99_MS, T_RSS_MB = 50.0, 300.0
T_CRYPTO_RATIO = 0.5  # issue 20: payments/s over the crypto-only bound
# issue 20: whole `safescan` processes, median wall time
T_CLI_S = {"safescan --help": 0.15, "safescan code inspect TEXT": 0.25}


@dataclass
class Bench:
    """One benchmark: its script and its arguments for a full and a quick run."""

    name: str
    script: str
    full: list[str]
    quick: list[str]
    timeout: float
    available: Callable[[], str | None] = lambda: None  # a reason it cannot run, or None


@dataclass
class Outcome:
    """What one benchmark gave: its figures, or why there are none."""

    command: str
    figures: Any = None
    error: str | None = None
    seconds: float = 0.0
    log: Path | None = None


@dataclass
class Run:
    """Everything the document is made from."""

    quick: bool
    command: str
    started: dt.datetime
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)


def _pg_missing() -> str | None:
    from tests.institution.pg import PG_ENV, find_pg_bin

    if os.environ.get(PG_ENV) or find_pg_bin() is not None:
        return None
    return "no PostgreSQL server binaries (initdb/postgres) here and no SAFESCAN_TEST_PG_URL"


def benches(load_seconds: float, quick: bool, out_dir: Path) -> list[Bench]:
    """Every benchmark of the project, in the order they run (the load tests last)."""
    fer_png = str(out_dir / "audio-fer.png") if quick else "docs/audio-fer.png"
    secs = f"{load_seconds:g}"
    return [
        Bench("code", "bench_code.py", [], ["--runs", "300"], 600),
        Bench("qr", "bench_qr.py", [], ["--runs", "20"], 900),
        Bench("emv", "bench_emv.py", [], ["--seconds", "0.5"], 600),
        Bench("carrier", "bench_carrier.py", [], ["--rounds", "300", "--sessions", "30"], 900),
        Bench(
            "transports",
            "bench_transports.py",
            [],
            ["--rounds", "200", "--audio-rounds", "5"],
            1200,
        ),
        Bench(
            "audio",
            "bench_audio.py",
            ["--png", fer_png],
            ["--frames", "10", "--snr-step", "5", "--fine", "0", "0", "--png", fer_png],
            1800,
        ),
        Bench("pkcs11", "bench_pkcs11.py", [], ["--runs", "300"], 600),
        Bench("cli", "bench_cli_startup.py", ["--runs", "9"], ["--runs", "3"], 600),
        Bench(
            "load_sqlite",
            "load_timeseries.py",
            ["--db", "sqlite", "--seconds", secs],
            ["--db", "sqlite", "--seconds", secs],
            1800,
        ),
        Bench(
            "load_postgresql",
            "load_timeseries.py",
            ["--db", "postgresql", "--seconds", secs],
            ["--db", "postgresql", "--seconds", secs],
            1800,
            _pg_missing,
        ),
    ]


def run_bench(bench: Bench, quick: bool, logs: Path) -> Outcome:
    """Run one benchmark with --json; its figures, or the reason it failed."""
    args = [*(bench.quick if quick else bench.full), "--json"]
    shown = shlex.join([".venv/bin/python", f"bench/{bench.script}", *args])
    reason = bench.available()
    if reason is not None:
        return Outcome(shown, error=f"not run: {reason}")
    log = logs / f"{bench.name}.log"
    start = time.perf_counter()
    print(f"== {bench.name}: {shown}", flush=True)
    try:
        with log.open("w") as err:
            proc = subprocess.run(
                [sys.executable, str(HERE / bench.script), *args],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                timeout=bench.timeout,
            )
    except subprocess.TimeoutExpired:
        return Outcome(shown, error=f"timed out after {bench.timeout:.0f} s", log=log)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        message = f"exit status {proc.returncode}: " + " / ".join(tail)
        return Outcome(shown, error=message, seconds=seconds, log=log)
    try:
        figures = json.loads(proc.stdout)
    except json.JSONDecodeError:
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if not lines:
            return Outcome(shown, error="printed no JSON", seconds=seconds, log=log)
        figures = json.loads(lines[-1])
    print(f"   done in {seconds:.0f} s", flush=True)
    return Outcome(shown, figures=figures, seconds=seconds, log=log)


# --- the machine -------------------------------------------------------------------------------


def _first(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _tool_version(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout or out.stderr).strip().splitlines()[0] if out.returncode == 0 else None


def machine() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and the versions of every library the figures depend on."""
    from tests.institution.pg import find_pg_bin

    mem = _first("/proc/meminfo", "MemTotal")
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    pg_bin = find_pg_bin()
    return {
        "cpu": _first("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem.split()[0]) / 2**20, 1) if mem else None,
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": platform.python_version(),
        "libraries": versions,
        "softhsm2": _tool_version(["softhsm2-util", "--version"]),
        "postgresql": _tool_version([str(pg_bin / "postgres"), "--version"]) if pg_bin else None,
        "loadavg_start": os.getloadavg(),
    }


# --- formatting ----------------------------------------------------------------------------------


def lower(measured: float, target: float) -> str:
    """Verdict for a lower-is-better figure."""
    if measured <= target:
        return f"met, {target / measured:.2f}x under" if measured > 0 else "met"
    return f"**missed** by {(measured / target - 1) * 100:.0f} %"


def higher(measured: float, target: float) -> str:
    """Verdict for a higher-is-better figure."""
    if measured >= target:
        return f"met, {measured / target:.2f}x over"
    return f"**missed** by {(1 - measured / target) * 100:.0f} %"


def table(head: list[str], rows: list[list[str]], align: str = "") -> str:
    """A Markdown table; ``align`` has one letter per column: l or r (default l)."""
    marks = ["---:" if (align[i : i + 1] == "r") else "---" for i in range(len(head))]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def us(value: float) -> str:
    """Microseconds, 1 decimal."""
    return f"{value:.1f} us"


def ms(value: float, digits: int = 2) -> str:
    """Milliseconds."""
    return f"{value:.{digits}f} ms"


def rate(value: float) -> str:
    """Payloads per second with the time per call."""
    return f"{value:,.0f}/s ({1e6 / value:.1f} us)"


def cmd(outcome: Outcome) -> str:
    """The exact command, in backticks."""
    return f"`{outcome.command}`"


def not_measured(outcome: Outcome | None) -> str:
    """What the document says instead of a table."""
    if outcome is None:
        return "_Not run in this pass (`--only`)._"
    return f"_Not measured: {outcome.error}._"


# --- sections -------------------------------------------------------------------------------------

Summary = list[list[str]]


def code_section(o: Outcome | None, summary: Summary) -> dict[str, str]:
    """Payment code timings, parts of open_code, sizes and byte budget."""
    keys = ("code_table", "code_parts", "size_table", "budget_table")
    if o is None or o.figures is None:
        return dict.fromkeys(keys, not_measured(o)) | {"code_runs": "N", "cmd_code": "-"}
    t = o.figures["timings_us"]
    rows = [
        ["raw Ed25519 sign", us(t["ed25519_sign"]), "", "reference"],
        ["raw Ed25519 verify", us(t["ed25519_verify"]), "", "reference"],
        ["raw HPKE seal (X25519, HKDF-SHA256, AES-128-GCM)", us(t["hpke_seal"]), "", "reference"],
        ["raw HPKE open", us(t["hpke_open"]), "", "reference"],
        [
            "`seal()`: validate + sign + seal a dynamic code (3 items)",
            us(t["seal"]),
            f"<= {T_SEAL_US:.0f} us",
            lower(t["seal"], T_SEAL_US),
        ],
        [
            "`open_code()` from binary: open + verify + strict parse",
            us(t["open_code"]),
            f"<= {T_OPEN_US:.0f} us",
            lower(t["open_code"], T_OPEN_US),
        ],
        ["`open_code()` from the Base45 text", us(t["open_code_text"]), "", ""],
        ["`seal()` merchant-signed", us(t["seal_merchant"]), "", ""],
        [
            "`open_code()` merchant-signed (+ certificate check)",
            us(t["open_code_merchant"]),
            "",
            "",
        ],
        [
            "ratio seal / (sign + HPKE seal)",
            f"{t['seal_ratio']:.2f}x",
            f"<= {T_RATIO}x",
            lower(t["seal_ratio"], T_RATIO),
        ],
        [
            "ratio open / (verify + HPKE open)",
            f"{t['open_ratio']:.2f}x",
            f"<= {T_RATIO}x",
            lower(t["open_ratio"], T_RATIO),
        ],
    ]
    for row in rows:
        if row[2]:
            summary.append(["payment code", *row])
    parts = (
        f"Where the rest of `open_code` goes: strict CBOR {us(t['part_cbor_strict_loads'])}, body "
        f"validation {us(t['part_body_parse_validate'])} (each name is checked once: NFC, "
        f"forbidden characters), look-alike detection {us(t['part_lookalike_warnings'])} (only "
        f"for non-ASCII names), Base45 decode {us(t['part_base45_decode'])} (text input only)."
    )
    sizes = o.figures["sizes"]
    size_rows = []
    for name, info in sizes.items():
        version = int(info["qr_version_m"])
        if name.startswith("dynamic (institution"):
            target = f"<= {T_QR_DYNAMIC}: " + _version_verdict(version, T_QR_DYNAMIC)
            summary.append(
                [
                    "payment code",
                    f"QR version, {name}",
                    str(version),
                    f"<= {T_QR_DYNAMIC}",
                    _version_verdict(version, T_QR_DYNAMIC),
                ]
            )
        elif name.startswith("static"):
            target = f"<= {T_QR_STATIC}: " + _version_verdict(version, T_QR_STATIC)
            summary.append(
                [
                    "payment code",
                    f"QR version, {name}",
                    str(version),
                    f"<= {T_QR_STATIC}",
                    _version_verdict(version, T_QR_STATIC),
                ]
            )
        else:
            target = "report"
        size_rows.append(
            [name, str(info["total"]), f"{info['base45_chars']} chars", str(version), target]
        )
    names = list(sizes)
    budget_rows = [
        [part, *(str(sizes[n]["parts"][part]) for n in names)] for part in sizes[names[0]]["parts"]
    ]
    budget_rows.append(["**total**", *(f"**{sizes[n]['total']}**" for n in names)])
    return {
        "cmd_code": cmd(o),
        "code_runs": f"{o.figures['runs']:,}",
        "code_table": table(["operation", "measured", "target", ""], rows, "lrrl"),
        "code_parts": parts,
        "size_table": table(
            ["code", "bytes", "QR text", "QR version (level M)", "target"], size_rows, "lrrrl"
        ),
        "budget_table": "Bytes per field, this run:\n\n"
        + table(["field", *names], budget_rows, "l" + "r" * len(names)),
    }


def _version_verdict(version: int, target: int) -> str:
    if version <= target:
        return "met" if version == target else f"met, {target - version} under"
    return f"**missed** by {version - target} version{'s' if version - target > 1 else ''}"


def qr_section(o: Outcome | None, summary: Summary) -> dict[str, str]:
    """QR render and decode, segno peer, distortions."""
    if o is None or o.figures is None:
        text = not_measured(o)
        return {
            "qr_table": text,
            "distortion_table": text,
            "cmd_qr": "-",
            "qr_runs": "N",
            "qr_chars": "400",
            "qr_version": "12",
            "distortion_size": "438",
        }
    r, d = o.figures["render"], o.figures["decode"]
    rows = [
        ["zxing-cpp encode", ms(r["make_qr_ms"]), "", ""],
        [
            "render to PNG, 8 px/module",
            ms(r["render_png_ms"]),
            f"<= {T_RENDER_MS:g} ms",
            lower(r["render_png_ms"], T_RENDER_MS),
        ],
        ["render to SVG", ms(r["render_svg_ms"]), "", ""],
        ["render to terminal text", ms(r["render_terminal_ms"]), "", ""],
    ]
    peer = r.get("segno")
    if peer:
        rows += [
            [f"peer: segno {peer['version']} (pure Python) encode", ms(peer["make_qr_ms"]), "", ""],
            [
                f"peer: segno {peer['version']} encode + PNG",
                ms(peer["png_ms"]),
                "",
                f"ours {peer['png_ms'] / r['render_png_ms']:.1f}x faster",
            ],
        ]
    else:
        rows.append(["peer: segno", "not installed", "", ""])
    rows += [
        [
            f"decode a clean {d['image_px']} px image (QR only)",
            ms(d["decode_ms"]),
            f"<= {T_DECODE_MS:g} ms",
            lower(d["decode_ms"], T_DECODE_MS),
        ],
        ["decode from PNG bytes (incl. PNG decode)", ms(d["decode_png_ms"]), "", ""],
        ["reference: zxing-cpp trying every format", ms(d["every_format_ms"]), "", ""],
        ["blank image -> `NoCodeFound` (all fallback passes)", ms(d["blank_ms"]), "", ""],
    ]
    for row in rows:
        if row[2]:
            summary.append(["QR", *row])
    dist_rows = []
    for item in o.figures["distortions"]:
        if not item["ok"]:
            dist_rows.append([item["name"], "-", "**not decoded**", item.get("error", "")])
            continue
        dist_rows.append([item["name"], item["size"], ms(item["ms"]), item["pass"]])
    return {
        "cmd_qr": cmd(o),
        "qr_runs": str(o.figures["runs"]),
        "qr_chars": str(r["chars"]),
        "qr_version": str(r["version"]),
        "distortion_size": str(o.figures.get("distortion_base_px", 438)),
        "qr_table": table(["operation", "measured", "target", ""], rows, "lrrl"),
        "distortion_table": table(
            ["distortion", "image", "median", "decoder pass that read it"], dist_rows, "lrrl"
        ),
    }


def emv_section(o: Outcome | None, summary: Summary) -> dict[str, str]:
    """EMV parse / build rates and the cemacqr peer."""
    if o is None or o.figures is None:
        return {"emv_table": not_measured(o), "cmd_emv": "-", "emv_seconds": "2"}
    f = o.figures
    emvco, pix = "EMVCo sample", "PIX static sample"
    ours = f["parse_emv"][emvco]
    rows = [
        [
            f"`parse_emv`, EMVCo specification sample ({f['samples'][emvco]} chars)",
            rate(ours),
            f">= {T_EMV_PER_S:,.0f}/s",
            higher(ours, T_EMV_PER_S),
        ],
        [
            f"`parse_emv`, PIX static sample ({f['samples'][pix]} chars)",
            rate(f["parse_emv"][pix]),
            "",
            "",
        ],
        [
            "`build_emv`, EMVCo sample (includes a checking parse)",
            rate(f["build_emv"][emvco]),
            "",
            "",
        ],
        [
            f"CRC-16/CCITT-FALSE over {f['crc16']['bytes']} bytes",
            us(1e6 / f["crc16"]["per_s"]),
            "",
            "",
        ],
    ]
    summary.append(["EMV", *rows[0]])
    peer = f.get("cemacqr")
    if peer:
        for name in (emvco, pix):
            full = peer["parse_validate"].get(name)
            split = peer["parse_payload"].get(name)
            if full is None or split is None:
                rows.append([f"peer: cemacqr on the {name}", "does not accept it", "", ""])
                continue
            rows.append(
                [
                    f"peer: `cemacqr` {peer['version']} `parse_payload` + `validate`, {name}",
                    rate(full),
                    "",
                    f"ours {f['parse_emv'][name] / full:.1f}x faster",
                ]
            )
            rows.append(
                [
                    f"peer: `cemacqr` `parse_payload` alone (TLV split, no checks), {name}",
                    rate(split),
                    "",
                    "",
                ]
            )
    else:
        rows.append(["peer: cemacqr", "not installed", "", ""])
    return {
        "cmd_emv": cmd(o),
        "emv_seconds": f"{f['seconds'] / 5:g}",
        "emv_table": table(["operation", "measured", "target", ""], rows, "lrrl"),
    }


def carrier_section(o: Outcome | None, summary: Summary) -> dict[str, str]:
    """APDU round trips and sessions, TCP and serial."""
    if o is None or o.figures is None:
        return {"carrier_table": not_measured(o), "cmd_carrier": "-"}
    f = o.figures

    def stat(key: str) -> tuple[str, str]:
        return ms(f[key]["median_ms"], 3), ms(f[key]["p99_ms"], 3)

    rows = [
        ["carrier process start-up (to READY)", ms(f["startup_ms"], 0), "", "", ""],
        [
            f"APDU round trip, TCP (n={f['tcp_apdu']['n']:,})",
            *stat("tcp_apdu"),
            f"<= {T_APDU_MS} ms",
            lower(f["tcp_apdu"]["median_ms"], T_APDU_MS),
        ],
        [
            f"full session, TCP (n={f['tcp_session']['n']:,})",
            *stat("tcp_session"),
            f"<= {T_SESSION_MS:g} ms",
            lower(f["tcp_session"]["median_ms"], T_SESSION_MS),
        ],
        [
            f"APDU round trip, serial pty (n={f['serial_apdu']['n']:,})",
            *stat("serial_apdu"),
            "report",
            "",
        ],
        [
            f"full session, serial pty (n={f['serial_session']['n']:,})",
            *stat("serial_session"),
            "report",
            "",
        ],
    ]
    for row in rows[1:3]:
        summary.append(["key carrier", f"{row[0]} median", row[1], row[3], row[4]])
    return {
        "cmd_carrier": cmd(o),
        "carrier_table": table(["operation", "median", "p99", "target", ""], rows, "lrrrl"),
    }


def transports_section(o: Outcome | None) -> dict[str, str]:
    """Every transport's APDU round trip and payment session."""
    if o is None or o.figures is None:
        return {
            "transports_table": not_measured(o),
            "key_update_table": not_measured(o),
            "cmd_transports": "-",
        }
    rows = []
    updates = []
    for row in o.figures["rows"]:
        if "skipped" not in row and "ku1_median" in row:
            for keys in (1, 8):
                air = row[f"ku{keys}_air"]
                updates.append(
                    [
                        row["transport"],
                        str(keys),
                        f"{row[f'ku{keys}_bytes']:.0f}",
                        ms(row[f"ku{keys}_median"], 3),
                        ms(row[f"ku{keys}_p99"], 3),
                        f"{air:.0f} ms" if air else "-",
                    ]
                )
        if "skipped" in row:
            rows.append([row["transport"], "-", "-", "-", "-", f"skipped: {row['skipped']}"])
            continue
        air = f"{row['air']:.0f} ms" if row["air"] else "-"
        rows.append(
            [
                row["transport"],
                f"{row['n']:.0f}",
                ms(row["median"], 3),
                ms(row["p99"], 3),
                air,
                ms(row["pay"], 1),
            ]
        )
    return {
        "cmd_transports": cmd(o),
        "transports_table": table(
            ["transport", "APDUs", "median", "p99", "air per APDU", "payment (median)"],
            rows,
            "lrrrrr",
        ),
        "key_update_table": table(
            ["transport", "new epochs", "bytes", "median", "p99", "air"], updates, "lrrrrr"
        ),
    }


def audio_section(o: Outcome | None, quick: bool) -> dict[str, str]:
    """Modem rates, CPU, ARQ goodput and the FER curve's key points."""
    if o is None or o.figures is None:
        return {"audio_table": not_measured(o), "audio_fer": "", "cmd_audio": "-"}
    f = o.figures
    m, c = f["modem"], f["cpu"]
    rows = [
        ["tones / baud", f"{m['space_hz']:.0f} / {m['mark_hz']:.0f} Hz, {m['baud']:.0f} baud"],
        ["raw bit rate", f"{m['raw_bytes_per_s']:.1f} bytes/s"],
        [
            f"one {f['payload']}-byte frame on air",
            f"{m['frame_ms']:.0f} ms ({m['on_air_bytes_per_s']:.1f} bytes/s of payload)",
        ],
        ["modulator CPU per second of audio", f"{c['modulator_rtf'] * 1000:.2f} ms"],
        ["demodulator CPU per second of audio", f"{c['demodulator_rtf'] * 1000:.1f} ms"],
    ]
    for g in f["goodput"]:
        rows.append(
            [
                f"ARQ request of {g['bytes']} bytes at 20 dB (goodput, both directions counted)",
                f"{g['bytes_per_s']:.1f} bytes/s ({g['frames']} frames, "
                f"{g['retransmissions']} retransmissions)",
            ]
        )
    fer = f["fer"]
    clean = [p["snr_db"] for p in fer if p["fer"] == 0]
    lossless = min(
        (s for s in clean if all(p["fer"] == 0 for p in fer if p["snr_db"] >= s)), default=None
    )
    rows.append(
        [
            "lowest SNR from which no frame was lost",
            f"{lossless:g} dB ({f['frames']} frames per point)" if lossless is not None else "none",
        ]
    )
    rows.append(["frames with wrong bytes accepted (must be 0)", str(f["wrong_frames"])])
    picked = [p for p in fer if p["snr_db"] in (-6.0, -3.0, -2.0, 0.0, 2.0, 6.0, 20.0)]
    fer_rows = [
        [
            f"{p['snr_db']:g}",
            f"{p['fer']:.3f}",
            f"{p['theory']:.3f}",
            str(p["good"]),
            str(p["crc_rejected"]),
            str(p["missed"]),
        ]
        for p in picked
    ]
    png = (
        "the FER curve (written to a temporary directory in a quick pass)"
        if quick
        else ("![frame error rate against SNR](audio-fer.png)")
    )
    fer_text = (
        "Frame error rate at selected SNRs (the whole sweep is plotted):\n\n"
        + table(
            ["SNR dB", "FER", "ideal BFSK", "good", "CRC rejected", "missed"], fer_rows, "rrrrrr"
        )
        + f"\n\n{png}"
    )
    return {
        "cmd_audio": cmd(o),
        "audio_table": table(["figure", "measured"], rows, "lr"),
        "audio_fer": fer_text,
    }


def pkcs11_section(o: Outcome | None) -> dict[str, str]:
    """PKCS#11 (SoftHSM2) against cryptography."""
    if o is None or o.figures is None:
        return {"pkcs11_table": not_measured(o), "cmd_pkcs11": "-"}
    f = o.figures
    if "skipped" in f:
        return {"pkcs11_table": f"_Not measured: {f['skipped']}._", "cmd_pkcs11": cmd(o)}
    rows = [
        [f"Ed25519 sign, `cryptography` {f['cryptography']}", us(f["cryptography_sign_us"]), ""],
        [
            f"Ed25519 sign, PKCS#11 (SoftHSM2 {f['softhsm2']}, python-pkcs11 {f['python_pkcs11']})",
            us(f["pkcs11_sign_us"]),
            f"{f['sign_ratio']:.1f}x ours",
        ],
        ["Ed25519 verify, `cryptography`", us(f["cryptography_verify_us"]), ""],
        [
            "Ed25519 verify, PKCS#11 (SoftHSM2)",
            us(f["pkcs11_verify_us"]),
            f"{f['pkcs11_verify_us'] / f['cryptography_verify_us']:.1f}x ours",
        ],
    ]
    return {
        "cmd_pkcs11": cmd(o) + f" (median of {f['runs']:,} calls, 200-byte message)",
        "pkcs11_table": table(["operation", "median", ""], rows, "lrl"),
    }


def load_section(
    outcomes: dict[str, Outcome | None], summary: Summary, png: Path | None, doc_dir: Path
) -> dict[str, str]:
    """The load test on each database, against the targets, and the plot."""
    commands = []
    columns: dict[str, dict[str, Any]] = {}
    missing = []
    for db in ("sqlite", "postgresql"):
        o = outcomes.get(db)
        if o is None:
            missing.append(f"{db}: not run in this pass")
            continue
        commands.append(f"- {db}: `{o.command}`")
        if o.figures is None:
            missing.append(f"{db}: {o.error}")
        else:
            columns[db] = o.figures
    head = (
        "Command (bench/load_timeseries.py runs `bench/institution_load.py` with the same "
        "arguments, unchanged, and also times each request to get the per-second series):\n\n"
        + "\n".join(commands)
    )
    if not columns:
        text = "_Not measured: " + "; ".join(missing) + "._"
        return {"load_commands": head, "load_table": text, "load_plot": ""}
    names = list(columns)
    res = {db: columns[db]["result"] for db in names}

    def each(fn: Callable[[dict[str, Any]], str]) -> list[str]:
        return [fn(res[db]) for db in names]

    rows = [
        ["duration", *each(lambda r: f"{r['elapsed_s']:g} s"), ""],
        ["server processes / clients", *each(lambda r: f"{r['workers']} / {r['concurrency']}"), ""],
        [
            "payments/s",
            *each(lambda r: f"{r['payments_per_s']:,.1f}"),
            " / ".join(f"{db} >= {T_LOAD[db]:,.0f}" for db in names),
        ],
        ["latency p50", *each(lambda r: ms(r["p50_ms"])), ""],
        ["latency p99", *each(lambda r: ms(r["p99_ms"])), f"<= {T_P99_MS:g} ms"],
        [
            "latency p99, worst one-second window",
            *each(lambda r: ms(r["p99_worst_second_ms"]) if "p99_worst_second_ms" in r else "-"),
            f"<= {T_P99_MS:g} ms",
        ],
        ["errors", *each(lambda r: f"{r['errors']} {r['error_kinds'] or ''}".strip()), "0"],
        ["server RSS", *each(lambda r: f"{r['server_rss_mb']:.0f} MB"), f"<= {T_RSS_MB:g} MB"],
        ["server CPU per payment", *each(lambda r: ms(r["server_cpu_ms_per_payment"], 3)), ""],
        [
            "load generator CPU per payment",
            *each(lambda r: ms(r["generator_cpu_ms_per_payment"], 3)),
            "",
        ],
        ["crypto bound (one core)", *each(lambda r: f"{r['crypto_bound_per_s']:,.0f}/s"), ""],
        [
            "ratio to the crypto bound",
            *each(lambda r: f"{r['ratio_to_crypto_bound']:.2f}"),
            f">= {T_CRYPTO_RATIO:g}",
        ],
        [
            "audit after the run",
            *each(lambda r: "passed" if r["audit_ok"] else "**FAILED**"),
            "passes",
        ],
    ]
    if any("postgres_cpu_ms_per_payment" in r for r in res.values()):
        rows.insert(
            9,
            [
                "PostgreSQL CPU per payment",
                *each(
                    lambda r: (
                        ms(r["postgres_cpu_ms_per_payment"], 3)
                        if "postgres_cpu_ms_per_payment" in r
                        else "-"
                    )
                ),
                "",
            ],
        )
    for db in names:
        r = res[db]
        summary.append(
            [
                f"institution ({db})",
                "payments/s",
                f"{r['payments_per_s']:,.1f}",
                f">= {T_LOAD[db]:,.0f}",
                higher(r["payments_per_s"], T_LOAD[db]),
            ]
        )
        summary.append(
            [
                f"institution ({db})",
                "latency p99",
                ms(r["p99_ms"]),
                f"<= {T_P99_MS:g} ms",
                lower(r["p99_ms"], T_P99_MS),
            ]
        )
        if "p99_worst_second_ms" in r:
            summary.append(
                [
                    f"institution ({db})",
                    "latency p99, worst one-second window",
                    ms(r["p99_worst_second_ms"]),
                    f"<= {T_P99_MS:g} ms",
                    lower(r["p99_worst_second_ms"], T_P99_MS),
                ]
            )
        errors = int(r["errors"])
        summary.append(
            [
                f"institution ({db})",
                "errors",
                str(errors),
                "0",
                "met" if errors == 0 else f"**missed** ({errors})",
            ]
        )
        summary.append(
            [
                f"institution ({db})",
                "server RSS",
                f"{r['server_rss_mb']:.0f} MB",
                f"<= {T_RSS_MB:g} MB",
                lower(r["server_rss_mb"], T_RSS_MB),
            ]
        )
    text = table(["", *names, "target"], rows, "l" + "r" * len(names) + "l")
    if missing:
        text += "\n\nNot measured: " + "; ".join(missing) + "."
    plot = ""
    if png is not None:
        targets = {f"{db} payments/s": T_LOAD[db] for db in names} | {"p99_ms": T_P99_MS}
        load_timeseries.plot(columns, png, targets)
        rel = os.path.relpath(png, doc_dir)
        plot = (
            f"![load test: payments per second and latency over time]({rel})\n\n"
            "Throughput (completed payments per second) and p50 / p99 latency of the requests "
            "completed in each second, for each database; dotted lines are the targets."
        )
    return {"load_commands": head, "load_table": text, "load_plot": plot}


def machine_section(run: Run) -> str:
    """The machine and software table."""
    m = run.machine
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items())
    start, end = m["loadavg_start"], m.get("loadavg_end", (0.0, 0.0, 0.0))
    rows = [
        ["date (UTC)", run.started.strftime("%Y-%m-%d %H:%M")],
        ["command", f"`{run.command}`"],
        ["CPU", f"{m['cpu']}, {m['cores']} cores visible"],
        ["memory", f"{m['memory_gib']} GiB"],
        ["OS", m["os"]],
        ["Python", m["python"]],
        ["libraries", libs],
        ["SoftHSM2", m["softhsm2"] or "not installed"],
        ["PostgreSQL", m["postgresql"] or "not installed"],
        [
            "load average (1/5/15 min) at start / end",
            " ".join(f"{x:.2f}" for x in start) + " / " + " ".join(f"{x:.2f}" for x in end),
        ],
        ["wall time of the whole run", f"{m.get('wall_s', 0) / 60:.1f} min"],
    ]
    return table(["", ""], rows)


def cli_section(o: Outcome | None, summary: Summary) -> dict[str, str]:
    """Start-up of the command line: whole processes, wall and CPU time (issue 20)."""
    if o is None or o.figures is None:
        return {"cli_table": not_measured(o), "cmd_cli": "-", "cli_runs": "N"}
    f = o.figures
    label = [k for k in f["figures"] if k != "floor"][-1]  # "this tree" (or "after")
    rows = []
    for name, fig in [*f["figures"][label].items(), *f["figures"]["floor"].items()]:
        target = T_CLI_S.get(name)
        row = [
            f"`{name}`",
            ms(fig["wall_s"] * 1000, 0),
            ms(fig["cpu_s"] * 1000, 0),
            f"<= {target * 1000:.0f} ms" if target else "",
            lower(fig["wall_s"], target) if target else "",
        ]
        rows.append(row)
        if target:
            summary.append(["command line", row[0] + " (wall)", *row[1:2], *row[3:]])
    return {
        "cli_table": table(["process", "wall", "CPU", "target", "verdict"], rows, "lrrrl"),
        "cmd_cli": cmd(o),
        "cli_runs": str(f["runs"]),
    }


def render(run: Run, png: Path | None, doc_dir: Path) -> str:
    """The document: the template with every placeholder filled."""
    o = run.outcomes
    summary: Summary = []
    values: dict[str, str] = {
        "command": run.command,
        "date": run.started.strftime("%Y-%m-%d"),
        "mode_note": (
            "**This is a quick pass** (fewer repetitions, shorter load test): figures are "
            "noisier than the full run's."
            if run.quick
            else ""
        ),
        "machine": machine_section(run),
    }
    values |= code_section(o.get("code"), summary)
    values |= qr_section(o.get("qr"), summary)
    values |= emv_section(o.get("emv"), summary)
    values |= carrier_section(o.get("carrier"), summary)
    values |= transports_section(o.get("transports"))
    values |= audio_section(o.get("audio"), run.quick)
    values |= pkcs11_section(o.get("pkcs11"))
    values |= cli_section(o.get("cli"), summary)
    values |= load_section(
        {"sqlite": o.get("load_sqlite"), "postgresql": o.get("load_postgresql")},
        summary,
        png,
        doc_dir,
    )
    missed = sum("missed" in row[-1] for row in summary)
    values["summary"] = (
        table(["area", "figure", "measured", "target", "verdict"], summary, "llrrl")
        + f"\n\n{len(summary) - missed} of {len(summary)} targets met in this run."
    )
    failed = [f"`{name}` ({out.error})" for name, out in o.items() if out.error]
    if failed:
        values["summary"] += " Benchmarks that did not give figures: " + "; ".join(failed) + "."
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    leftover = [part.split("}}")[0] for part in text.split("{{")[1:]]
    if leftover:
        raise SystemExit(f"template placeholders without a value: {leftover}")
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", text) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, then write the document and the plot."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fast pass, fewer repetitions")
    parser.add_argument("--only", default="", help="comma-separated benchmark names to run")
    parser.add_argument("--out", type=Path, default=None, help="the document to write")
    parser.add_argument("--png", type=Path, default=None, help="the load-test plot to write")
    parser.add_argument("--load-seconds", type=float, default=None, help="load test duration")
    parser.add_argument("--raw", type=Path, default=None, help="also save every figure as JSON")
    parser.add_argument(
        "--from-raw",
        type=Path,
        default=None,
        help="run nothing: rewrite the document (and plot) from a --raw file of an earlier run",
    )
    args = parser.parse_args(argv)
    if args.from_raw is not None:
        return rerender(args.from_raw, args.out, args.png)
    started = dt.datetime.now(dt.UTC)
    work = Path(tempfile.mkdtemp(prefix="safescan-run-all-"))
    if args.quick:
        out = args.out or work / "performance.md"
        png = args.png or out.parent / "load-test.png"
    else:
        out = args.out or ROOT / "docs" / "performance.md"
        png = args.png or ROOT / "docs" / "load-test.png"
    load_seconds = args.load_seconds or (10.0 if args.quick else 60.0)
    shown = ["bench/run_all", *(argv if argv is not None else sys.argv[1:])]
    run = Run(quick=args.quick, command=shlex.join(shown), started=started)
    run.machine = machine()
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    all_benches = benches(load_seconds, args.quick, out.parent)
    unknown = wanted - {b.name for b in all_benches}
    if unknown:
        parser.error(
            f"unknown benchmark(s): {sorted(unknown)}; known: {[b.name for b in all_benches]}"
        )
    t0 = time.perf_counter()
    for bench in all_benches:
        if wanted and bench.name not in wanted:
            continue
        run.outcomes[bench.name] = run_bench(bench, args.quick, work)
        if run.outcomes[bench.name].error:
            print(f"   {bench.name}: {run.outcomes[bench.name].error}", flush=True)
    run.machine["loadavg_end"] = os.getloadavg()
    run.machine["wall_s"] = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    has_load = any(
        run.outcomes.get(n) and run.outcomes[n].figures for n in ("load_sqlite", "load_postgresql")
    )
    out.write_text(render(run, png if has_load else None, out.parent))
    if args.raw is not None:
        args.raw.write_text(
            json.dumps(
                {
                    "machine": run.machine,
                    "command": run.command,
                    "quick": run.quick,
                    "started": started.isoformat(),
                    "outcomes": {
                        n: {
                            "command": o.command,
                            "figures": o.figures,
                            "error": o.error,
                            "seconds": o.seconds,
                        }
                        for n, o in run.outcomes.items()
                    },
                },
                indent=1,
            )
        )
    print(f"wrote {out}" + (f" and {png}" if has_load else "") + f" (logs in {work})")
    failed = [n for n, o in run.outcomes.items() if o.error and not o.error.startswith("not run")]
    return 1 if failed else 0


def rerender(raw: Path, out: Path | None, png: Path | None) -> int:
    """The document and plot again from saved figures (e.g. after editing the template)."""
    data = json.loads(raw.read_text())
    run = Run(
        quick=data.get("quick", False),
        command=data["command"],
        started=dt.datetime.fromisoformat(data["started"]),
        machine=data["machine"],
    )
    for name, o in data["outcomes"].items():
        run.outcomes[name] = Outcome(o["command"], o["figures"], o["error"], o["seconds"])
    out = out or ROOT / "docs" / "performance.md"
    png = png or out.parent / "load-test.png"
    has_load = any(
        run.outcomes.get(n) and run.outcomes[n].figures for n in ("load_sqlite", "load_postgresql")
    )
    out.write_text(render(run, png if has_load else None, out.parent))
    print(f"wrote {out}" + (f" and {png}" if has_load else "") + f" from {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
