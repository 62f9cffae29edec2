"""Benchmark QR rendering and decoding (safescan.code.qr); prints its figures.

Run: ``.venv/bin/python bench/bench_qr.py [--runs N]``

Measures, for a 400-character ``SS1:`` Base45 code (QR version 12, level M):
render to PNG, SVG and terminal text; decoding a clean ~1000 px image; decoding each
camera-like distortion the tests use (``tests/code/test_qr.py``); and, if ``segno`` is
installed, pure-Python segno rendering the same text as a peer.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

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


def bench_render(runs: int) -> None:
    code = qr.make_qr(PAYLOAD)
    print(
        f"Render: {len(PAYLOAD)}-char alphanumeric code -> QR version {code.version}, "
        f"{code.size} modules (+{qr.QUIET_ZONE} quiet zone), level {qr.EC_LEVEL}"
    )
    png = qr.render_png(PAYLOAD, module_size=8)
    row("make_qr (zxing-cpp encode)", f"{median_ms(lambda: qr.make_qr(PAYLOAD), runs):7.3f} ms")
    row(
        "render_png, 8 px/module (584 px)",
        f"{median_ms(lambda: qr.render_png(PAYLOAD, module_size=8), runs):7.3f} ms"
        f"   ({len(png)} bytes)",
    )
    row("render_svg", f"{median_ms(lambda: qr.render_svg(PAYLOAD), runs):7.3f} ms")
    row(
        "render_terminal (half blocks)",
        f"{median_ms(lambda: qr.render_terminal(PAYLOAD), runs):7.3f} ms",
    )
    try:
        import segno  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        row("segno (peer)", "not installed (pip install segno==1.6.6)")
        return

    def segno_png() -> bytes:
        buffer = io.BytesIO()
        segno.make_qr(PAYLOAD, error="m", boost_error=False).save(
            buffer, kind="png", scale=8, border=4
        )
        return buffer.getvalue()

    version = segno.make_qr(PAYLOAD, error="m", boost_error=False).version
    row(
        f"segno {segno.__version__} make_qr (pure Python, v{version})",
        f"{median_ms(lambda: segno.make_qr(PAYLOAD, error='m', boost_error=False), runs):7.3f} ms",
    )
    row(
        f"segno {segno.__version__} make_qr + PNG, 8 px/module",
        f"{median_ms(segno_png, runs):7.3f} ms   ({len(segno_png())} bytes)",
    )


def bench_clean_decode(runs: int) -> None:
    png = qr.render_png(PAYLOAD, module_size=14)
    with Image.open(io.BytesIO(png)) as opened:
        image = opened.convert("L")
    print(f"Decode: clean {image.width}x{image.height} px image")
    assert qr.decode_image(image) == PAYLOAD
    row("decode_image(PIL image, L)", f"{median_ms(lambda: qr.decode_image(image), runs):7.3f} ms")
    row(
        "decode_image(PNG bytes) incl. PNG decode",
        f"{median_ms(lambda: qr.decode_image(png), runs):7.3f} ms",
    )
    pixels = np.asarray(image)
    every = median_ms(lambda: zxingcpp.read_barcodes(pixels), max(5, runs // 10))
    row("(reference) zxing-cpp, every format", f"{every:7.3f} ms")
    blank = Image.new("L", image.size, 255)

    def no_code() -> None:
        try:
            qr.decode_image(blank)
        except QrError:
            return
        raise AssertionError("a blank image decoded")

    row(
        "blank image -> NoCodeFound (all passes)",
        f"{median_ms(no_code, max(5, runs // 10)):7.3f} ms",
    )


def first_pass(gray: Image.Image) -> str:
    """Name of the decoder pass that reads ``gray`` (as decode_image tries them)."""
    for attempt in qr._PASSES:
        found = attempt(gray)
        if found:
            texts = [barcode.text for barcode in found]
            return attempt.__name__.removeprefix("_pass_") + (
                "" if texts == [PAYLOAD] else " (WRONG TEXT)"
            )
    return "-"


def bench_distortions(runs: int) -> None:
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
            continue
        n = max(5, runs // 10)

        def attempt(image: Image.Image = image) -> None:
            try:
                qr.decode_image(image)
            except QrError:
                return

        size = f"{image.width}x{image.height}"
        print(
            f"  {name:<22} {size:>11} {'ok' if ok else 'WRONG':>7} "
            f"{median_ms(attempt, n):7.2f} ms  {first_pass(qr._load_gray(image))}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per figure")
    args = parser.parse_args()
    print(
        f"zxing-cpp {metadata.version('zxing-cpp')}, Pillow {metadata.version('pillow')}, "
        f"Python {sys.version.split()[0]}, runs={args.runs}"
    )
    bench_render(args.runs)
    bench_clean_decode(args.runs)
    bench_distortions(args.runs)


if __name__ == "__main__":
    main()
