"""Benchmark QR rendering and decoding (safescan.code.qr); prints its figures.

Run: ``.venv/bin/python bench/bench_qr.py [--runs N] [--json]``

Measures, for a 400-character ``SS1:`` Base45 code (QR version 12, level M):
render to PNG, SVG and terminal text; decoding a clean ~1000 px image; decoding each
camera-like distortion the tests use (``tests/code/test_qr.py``); and, if ``segno`` is
installed, pure-Python segno rendering the same text as a peer.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "src"):  # the package (if not installed) and the test helpers
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import numpy as np  # noqa: E402
import zxingcpp  # noqa: E402
from PIL import Image  # noqa: E402
from tests.code.test_qr import DISTORTIONS, PAYLOAD, rendered  # noqa: E402

from safescan.code import qr  # noqa: E402
from safescan.code.errors import QrError  # noqa: E402


def median_ms(func: Callable[[], object], runs: int, warmup: int = 3) -> float:
    """Median wall time of ``func()`` in milliseconds."""
    for _ in range(warmup):
        func()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def row(label: str, value: str) -> None:
    print(f"  {label:<46} {value}")


def bench_render(runs: int) -> dict[str, Any]:
    """Render timings (ms) of ours and, if installed, segno's."""
    out: dict[str, Any] = {}
    code = qr.make_qr(PAYLOAD)
    out |= {"chars": len(PAYLOAD), "version": code.version, "modules": code.size}
    print(
        f"Render: {len(PAYLOAD)}-char alphanumeric code -> QR version {code.version}, "
        f"{code.size} modules (+{qr.QUIET_ZONE} quiet zone), level {qr.EC_LEVEL}"
    )
    png = qr.render_png(PAYLOAD, module_size=8)
    out["make_qr_ms"] = median_ms(lambda: qr.make_qr(PAYLOAD), runs)
    row("make_qr (zxing-cpp encode)", f"{out['make_qr_ms']:7.3f} ms")
    out["render_png_ms"] = median_ms(lambda: qr.render_png(PAYLOAD, module_size=8), runs)
    out["png_bytes"] = len(png)
    row(
        "render_png, 8 px/module (584 px)",
        f"{out['render_png_ms']:7.3f} ms   ({len(png)} bytes)",
    )
    out["render_svg_ms"] = median_ms(lambda: qr.render_svg(PAYLOAD), runs)
    row("render_svg", f"{out['render_svg_ms']:7.3f} ms")
    out["render_terminal_ms"] = median_ms(lambda: qr.render_terminal(PAYLOAD), runs)
    row("render_terminal (half blocks)", f"{out['render_terminal_ms']:7.3f} ms")
    try:
        import segno  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        row("segno (peer)", "not installed (pip install segno==1.6.6)")
        out["segno"] = None
        return out

    def segno_png() -> bytes:
        buffer = io.BytesIO()
        segno.make_qr(PAYLOAD, error="m", boost_error=False).save(
            buffer, kind="png", scale=8, border=4
        )
        return buffer.getvalue()

    version = segno.make_qr(PAYLOAD, error="m", boost_error=False).version
    peer = {
        "version": segno.__version__,
        "qr_version": version,
        "make_qr_ms": median_ms(lambda: segno.make_qr(PAYLOAD, error="m", boost_error=False), runs),
        "png_ms": median_ms(segno_png, runs),
        "png_bytes": len(segno_png()),
    }
    out["segno"] = peer
    row(
        f"segno {segno.__version__} make_qr (pure Python, v{version})",
        f"{peer['make_qr_ms']:7.3f} ms",
    )
    row(
        f"segno {segno.__version__} make_qr + PNG, 8 px/module",
        f"{peer['png_ms']:7.3f} ms   ({peer['png_bytes']} bytes)",
    )
    return out


def bench_clean_decode(runs: int) -> dict[str, Any]:
    """Decode timings (ms) of a clean image, zxing-cpp's every-format scan, a blank image."""
    out: dict[str, Any] = {}
    png = qr.render_png(PAYLOAD, module_size=14)
    with Image.open(io.BytesIO(png)) as opened:
        image = opened.convert("L")
    print(f"Decode: clean {image.width}x{image.height} px image")
    assert qr.decode_image(image) == PAYLOAD
    out["image_px"] = image.width
    out["decode_ms"] = median_ms(lambda: qr.decode_image(image), runs)
    row("decode_image(PIL image, L)", f"{out['decode_ms']:7.3f} ms")
    out["decode_png_ms"] = median_ms(lambda: qr.decode_image(png), runs)
    row("decode_image(PNG bytes) incl. PNG decode", f"{out['decode_png_ms']:7.3f} ms")
    pixels = np.asarray(image)
    every = median_ms(lambda: zxingcpp.read_barcodes(pixels), max(5, runs // 10))
    out["every_format_ms"] = every
    row("(reference) zxing-cpp, every format", f"{every:7.3f} ms")
    blank = Image.new("L", image.size, 255)

    def no_code() -> None:
        try:
            qr.decode_image(blank)
        except QrError:
            return
        raise AssertionError("a blank image decoded")

    out["blank_ms"] = median_ms(no_code, max(5, runs // 10))
    row("blank image -> NoCodeFound (all passes)", f"{out['blank_ms']:7.3f} ms")
    return out


def first_pass(gray: Image.Image) -> str:
    """Name of the decoder pass that reads ``gray`` (as decode_image tries them)."""
    for attempt in qr._PASSES:
        found = attempt(gray)
        if found:
            texts = [barcode.text for barcode in found]
            return str(attempt.__name__).removeprefix("_pass_") + (
                "" if texts == [PAYLOAD] else " (WRONG TEXT)"
            )
    return "-"


def bench_distortions(runs: int) -> list[dict[str, Any]]:
    """Per distortion: size, decoded right or not, median ms, first decoder pass that reads it."""
    out: list[dict[str, Any]] = []
    base = rendered()
    print(f"Decode: distortions of a {base.width} px rendering (6 px/module), as in the tests")
    print(
        f"  {'distortion':<22} {'size':>11} {'result':>7} {'median':>10}  first pass that reads it"
    )
    for name, distort in DISTORTIONS.items():
        image = distort(base)
        try:
            ok = qr.decode_image(image) == PAYLOAD
        except QrError as exc:
            ok = False
            print(f"  {name:<22} failed: {exc.type}: {exc}")
            out.append({"name": name, "ok": False, "error": exc.type})
            continue
        n = max(5, runs // 10)

        def attempt(image: Image.Image = image) -> None:
            try:
                qr.decode_image(image)
            except QrError:
                return

        size = f"{image.width}x{image.height}"
        ms = median_ms(attempt, n)
        passed = first_pass(qr._load_gray(image))
        out.append({"name": name, "size": size, "ok": ok, "ms": ms, "pass": passed})
        print(f"  {name:<22} {size:>11} {'ok' if ok else 'WRONG':>7} {ms:7.2f} ms  {passed}")
    return out


def measure(runs: int) -> dict[str, Any]:
    """Every figure, printed as it is measured."""
    print(
        f"zxing-cpp {metadata.version('zxing-cpp')}, Pillow {metadata.version('pillow')}, "
        f"Python {sys.version.split()[0]}, runs={runs}"
    )
    return {
        "runs": runs,
        "zxing_cpp": metadata.version("zxing-cpp"),
        "render": bench_render(runs),
        "decode": bench_clean_decode(runs),
        "distortion_base_px": rendered().width,
        "distortions": bench_distortions(runs),
    }


def main() -> None:
    """Measure and print (with --json: the text goes to stderr, one JSON object to stdout)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per figure")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not args.json:
        measure(args.runs)
        return
    with contextlib.redirect_stdout(sys.stderr):
        figures = measure(args.runs)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
