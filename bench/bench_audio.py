"""Benchmark the audio-port modem: throughput, CPU real-time factor, frame error rate vs SNR.

Run: ``.venv/bin/python bench/bench_audio.py [--frames N] [--payload BYTES] [--seed S] [--json]``

Prints:

- the raw bit rate and the on-air payload rate of one frame;
- the ARQ link's goodput (request payload bytes per second of audio, both directions counted,
  since stop-and-wait is half duplex) through the channel model at 20 dB;
- modulator and demodulator CPU time per second of audio (real-time factor; < 1 is faster than
  real time), one core;
- the frame error rate from -10 to 30 dB SNR in 2 dB steps, plus 0.5 dB steps over -3..3 dB
  (SNR = signal power / white-noise power over 0..22.05 kHz; Eb/N0 = SNR + 12.04 dB), N frames
  each, seeded, with +/-100 ppm clock drift and a DC offset, beside the theoretical FER of
  ideal non-coherent orthogonal BFSK.

Writes the FER curve to docs/audio-fer.png (``--png`` to change).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    from safescan.carrier import audio
except ModuleNotFoundError:  # not installed into the venv: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from safescan.carrier import audio

from safescan.carrier.audio import framing

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FerPoint:
    snr_db: float
    frames: int
    good: int
    crc_rejected: int
    missed: int
    wrong: int
    theory: float

    @property
    def fer(self) -> float:
        return 1.0 - self.good / self.frames


def theoretical_fer(snr_db: float, bits: int, samples_per_bit: int) -> float:
    """FER of ideal non-coherent orthogonal BFSK with independent bit errors."""
    ebn0 = 10 ** (snr_db / 10) * samples_per_bit / 2
    pb = 0.5 * math.exp(-ebn0 / 2)
    return 1.0 - (1.0 - pb) ** bits


def payloads(count: int, size: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for _ in range(count)]


def measure_fer(snrs: list[float], frames: int, size: int, seed: int) -> list[FerPoint]:
    modulator, demodulator = audio.Modulator(), audio.Demodulator()
    cfg = modulator.config
    sent = [
        audio.Frame(audio.FrameKind.DATA, i % 256, p)
        for i, p in enumerate(payloads(frames, size, seed))
    ]
    bits = framing.SYNC_BITS + framing.body_bits_count(size)
    points = []
    for index, snr in enumerate(snrs):
        good = crc = missed = wrong = 0
        for i, frame in enumerate(sent):
            channel = audio.ChannelModel(
                snr_db=snr,
                drift_ppm=100.0 if i % 2 else -100.0,
                dc_offset=0.05,
                seed=seed * 100_003 + index * 1009 + i,
            )
            result = demodulator.scan(channel.apply(modulator.modulate(frame)))
            good += sum(f == frame for f in result.frames)
            wrong += sum(f != frame for f in result.frames)
            crc += len(result.rejected)
            missed += not result.frames and not result.rejected
        points.append(
            FerPoint(
                snr,
                frames,
                good,
                crc,
                missed,
                wrong,
                theoretical_fer(snr, bits, cfg.samples_per_bit),
            )
        )
        print(
            f"{snr:6.1f} {snr + 10 * math.log10(cfg.samples_per_bit / 2):7.1f} "
            f"{points[-1].fer:8.3f} {points[-1].theory:8.3f} {good:5d} {crc:5d} {missed:5d} "
            f"{wrong:5d}",
            flush=True,
        )
    return points


def measure_cpu(size: int, seed: int) -> tuple[float, float, float]:
    """(audio seconds, modulator CPU s per audio s, demodulator CPU s per audio s)."""
    modulator, demodulator = audio.Modulator(), audio.Demodulator()
    frames = [
        audio.Frame(audio.FrameKind.DATA, i, p) for i, p in enumerate(payloads(20, size, seed))
    ]
    channel = audio.ChannelModel(snr_db=20, seed=seed)
    start = time.process_time()
    bursts = [modulator.modulate(f) for f in frames]
    mod_cpu = time.process_time() - start
    received = [channel.apply(b) for b in bursts]
    start = time.process_time()
    decoded = [demodulator.decode(r) for r in received]
    demod_cpu = time.process_time() - start
    assert all(d == [f] for d, f in zip(decoded, frames, strict=True))
    audio_s = sum(b.size for b in bursts) / audio.SAMPLE_RATE
    rx_s = sum(r.size for r in received) / audio.SAMPLE_RATE
    return audio_s, mod_cpu / audio_s, demod_cpu / rx_s


def measure_goodput(message_size: int, seed: int) -> tuple[float, float, audio.LinkStats]:
    """ARQ request of ``message_size`` bytes at 20 dB: (bytes/s of audio, wall s, host stats)."""
    import threading

    a, b = audio.MemoryPcmPort.pair()
    host = audio.AudioLink(
        audio.ChannelPcmPort(a, audio.ChannelModel(snr_db=20, seed=seed)), initial_seq=0
    )
    card = audio.AudioLink(
        audio.ChannelPcmPort(b, audio.ChannelModel(snr_db=20, drift_ppm=-100, seed=seed + 1)),
        initial_seq=0,
    )
    thread = threading.Thread(target=card.serve, args=(lambda m: b"\x90\x00",), daemon=True)
    thread.start()
    message = payloads(1, message_size, seed)[0]
    start = time.perf_counter()
    assert host.request(message, timeout=120) == b"\x90\x00"
    wall = time.perf_counter() - start
    host.close()
    thread.join(timeout=5)
    audio_s = (host.stats.samples_sent + card.stats.samples_sent) / audio.SAMPLE_RATE
    return message_size / audio_s, wall, host.stats


def _snr_to_ebn0(snr: Any) -> Any:
    return snr + 12.04


def _ebn0_to_snr(ebn0: Any) -> Any:
    return ebn0 - 12.04


def plot(points: list[FerPoint], path: Path, frames: int, size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snr = np.array([p.snr_db for p in points])
    fer = np.array([p.fer for p in points])
    floor = 0.5 / frames
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=120)
    fine = np.linspace(snr.min(), snr.max(), 400)
    bits = framing.SYNC_BITS + framing.body_bits_count(size)
    ax.semilogy(
        fine,
        [max(theoretical_fer(s, bits, 32), 1e-6) for s in fine],
        "--",
        color="0.5",
        label="ideal non-coherent BFSK (theory)",
    )
    seen = fer > 0
    ax.semilogy(
        snr[seen], fer[seen], "o-", ms=4, color="C0", label=f"measured ({frames} frames/point)"
    )
    ax.semilogy(
        snr[~seen],
        np.full((~seen).sum(), floor),
        "v",
        color="C2",
        label=f"no frame lost in {frames} (drawn at 0.5/{frames})",
    )
    ax.axvline(20, color="C3", lw=0.8, ls=":")
    ax.text(20.3, 0.3, "20 dB: test point", color="C3", fontsize=8)
    ax.set_ylim(floor / 2, 1.5)
    ax.set_xlim(snr.min() - 0.5, snr.max() + 0.5)
    ax.set_xlabel("SNR (dB), signal / white noise over 0-22.05 kHz")
    ax.set_ylabel("frame error rate")
    ax.set_title(
        f"Audio-port CPFSK modem, 1378/2756 Hz, 1378 baud, {size}-byte frames\n"
        "±100 ppm clock drift, DC offset, 6 dB attenuation",
        fontsize=10,
    )
    top = ax.secondary_xaxis("top", functions=(_snr_to_ebn0, _ebn0_to_snr))
    top.set_xlabel("Eb/N0 (dB)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    """Measure and print (with --json: the text goes to stderr, one JSON object to stdout)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="frames per SNR point")
    parser.add_argument("--payload", type=int, default=255, help="payload bytes per frame")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--snr-min", type=float, default=-10.0)
    parser.add_argument("--snr-max", type=float, default=30.0)
    parser.add_argument("--snr-step", type=float, default=2.0)
    parser.add_argument(
        "--fine",
        type=float,
        nargs=2,
        default=(-3.0, 3.0),
        metavar=("LO", "HI"),
        help="also sweep this SNR range in 0.5 dB steps (the waterfall)",
    )
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "audio-fer.png")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not args.json:
        figures = measure(args)
    else:
        with contextlib.redirect_stdout(sys.stderr):
            figures = measure(args)
        print(json.dumps(figures))
    if figures["wrong_frames"]:
        print("ERROR: a frame with wrong bytes was accepted", file=sys.stderr)
        sys.exit(1)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure, printed as it is measured; writes the FER plot."""
    out: dict[str, Any] = {"frames": args.frames, "payload": args.payload, "seed": args.seed}

    cfg = audio.ModemConfig()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    burst = audio.Modulator(cfg).burst_samples(args.payload)
    print(
        f"\nmodem: tones {cfg.space_hz:.3f} / {cfg.mark_hz:.3f} Hz, {cfg.baud:.3f} baud "
        f"(raw {cfg.baud / 8:.1f} bytes/s)"
    )
    print(
        f"one {args.payload}-byte frame: {burst} samples = {burst / cfg.sample_rate * 1000:.0f} ms"
        f" -> on-air payload rate {args.payload / (burst / cfg.sample_rate):.1f} bytes/s"
    )

    out["modem"] = {
        "space_hz": cfg.space_hz,
        "mark_hz": cfg.mark_hz,
        "baud": cfg.baud,
        "raw_bytes_per_s": cfg.baud / 8,
        "frame_ms": burst / cfg.sample_rate * 1000,
        "on_air_bytes_per_s": args.payload / (burst / cfg.sample_rate),
    }
    audio_s, mod_rtf, demod_rtf = measure_cpu(args.payload, args.seed)
    out["cpu"] = {"audio_s": audio_s, "modulator_rtf": mod_rtf, "demodulator_rtf": demod_rtf}
    print(
        f"CPU per second of audio ({audio_s:.1f} s measured): modulator {mod_rtf * 1000:.2f} ms, "
        f"demodulator {demod_rtf * 1000:.1f} ms (real-time factors {mod_rtf:.4f}, "
        f"{demod_rtf:.4f})"
    )

    out["goodput"] = []
    for size in (255, 4096):
        rate, wall, stats = measure_goodput(size, args.seed)
        out["goodput"].append(
            {
                "bytes": size,
                "bytes_per_s": rate,
                "wall_s": wall,
                "frames": stats.frames_sent,
                "retransmissions": stats.retransmissions,
            }
        )
        print(
            f"ARQ request of {size} bytes at 20 dB: goodput {rate:.1f} bytes/s of audio "
            f"(both directions counted), {stats.frames_sent} host frames, "
            f"{stats.retransmissions} retransmissions, {wall:.2f} s wall on memory ports"
        )

    coarse = np.arange(args.snr_min, args.snr_max + 1e-9, args.snr_step)
    fine = np.arange(args.fine[0], args.fine[1] + 1e-9, 0.5)
    snrs = sorted({round(float(s), 2) for s in (*coarse, *fine)})
    print(f"\nFER vs SNR: {args.frames} frames of {args.payload} bytes per point, seed {args.seed}")
    print(
        f"{'SNR dB':>6} {'Eb/N0':>7} {'FER':>8} {'theory':>8} {'good':>5} {'crc':>5} "
        f"{'miss':>5} {'wrong':>5}"
    )
    points = measure_fer([float(s) for s in snrs], args.frames, args.payload, args.seed)
    plot(points, args.png, args.frames, args.payload)
    print(f"\nwrote {args.png}")
    out["fer"] = [asdict(p) | {"fer": p.fer} for p in points]
    out["png"] = str(args.png)
    out["wrong_frames"] = sum(p.wrong for p in points)
    return out


if __name__ == "__main__":
    main()
