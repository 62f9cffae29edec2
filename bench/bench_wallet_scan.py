"""Benchmark the wallet app's camera scan and payment in headless Chromium; prints its figures.

Run: ``.venv/bin/python bench/bench_wallet_scan.py [--runs N] [--json]``

Starts a real deployment on loopback (institution, merchant, customer, key carrier process,
``safescan wallet serve``) and, for each decoder the app has - ``wasm`` (zxing-wasm in a worker
in the page) and ``server`` (frames sent to the service, decoded with zxing-cpp) - plays fake
camera videos to Debian's Chromium (tests/e2e/walletapp/fakecam.py) and reads the app's own
``performance.now()`` marks:

* first camera frame -> code decoded -> verified offer on screen (the key carrier opened and
  checked it, the institution was asked about it), for two clips: ``hand`` (the code comes in
  from the side in a hand, motion-blurred, then the focus settles: what a customer does) and
  ``held`` (the code is already in view and in focus: the pipeline's own latency); each with
  the app opened straight on the scan screen in a new browser profile (``cold``: the decoder
  starts with the camera) and, for ``held``, opened on History and switched to Scan 3 s later
  (``warm``: the decoder is loaded when the camera starts);
* the mean time to decode one frame (frames without a code included);
* PIN pressed -> verified receipt on screen (PIN check and signature on the carrier, payment
  at the institution, receipt verified by the wallet).

Figures are medians over ``--runs`` payments per decoder and clip.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "src"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from playwright.sync_api import sync_playwright  # noqa: E402
from tests.e2e.conftest import PIN, new_party  # noqa: E402
from tests.e2e.walletapp import fakecam  # noqa: E402
from tests.e2e.walletapp.browser import (  # noqa: E402
    evaluate,
    open_paired,
    phone,
    press_pin,
    start_wallet_server,
    wait_screen,
)

from safescan.code import LineItem  # noqa: E402
from safescan.demo import Stack  # noqa: E402
from safescan.merchant.client import MerchantApi  # noqa: E402

VARIANTS = [("hand", "cold"), ("held", "cold"), ("held", "warm")]
CLIPS = {
    "hand": fakecam.Scene(),
    "held": fakecam.Scene(hand_frames=0, settle_frames=40, focus_start=0.8),
}
ITEMS = [LineItem("Flat white", 2, 350), LineItem("Croissant", 1, 180), LineItem("Juice", 1, 420)]


def one_payment(
    pw: Any, server: Any, pos: Any, decoder: str, clip: str, start: str, tmp: Path
) -> dict[str, Any]:
    """Scan and pay one fresh order; the app's timing marks (ms)."""
    with MerchantApi(pos) as api:
        order = api.create_order(ITEMS, currency="EUR")
    video = fakecam.write_video(tmp / f"{decoder}-{clip}.y4m", order.code, CLIPS[clip])
    with phone(pw, video) as ctx:
        if start == "warm":
            page = open_paired(ctx, server, f"/?decoder={decoder}#/history")
            wait_screen(page, "history")
            page.wait_for_timeout(3000)
            page.locator(".tabs a[data-tab='scan']").click()
        else:
            page = open_paired(ctx, server, f"/?decoder={decoder}#/scan")
        wait_screen(page, "offer")
        page.locator("#offer-pay").click()
        wait_screen(page, "pin")
        press_pin(page, PIN)
        wait_screen(page, "receipt")
        # bounded (90 s), as every Playwright call of the tests: page.evaluate waits for ever
        t = evaluate(page, "() => window.safescanTimings")
    return {
        "frame_to_decoded": t["decoded"] - t["firstFrame"],
        "decoded_to_offer": t["offerShown"] - t["decoded"],
        "frame_to_offer": t["offerShown"] - t["firstFrame"],
        "frames": t["frames"],
        "decode_per_frame": t["decodeMs"] / max(1, t["frames"]),
        "pin_to_receipt": t["receiptShown"] - t["pinSubmitted"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="payments per decoder and clip")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-wallet-scan-"))
    stack = Stack(work)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    started = time.time()
    try:
        stack.begin_institution_init()
        stack.start_institution()
        pos = stack.onboard_merchant()
        party = new_party(stack, "bench", fund=10_000_000)
        server = start_wallet_server(stack, party.wallet_dir, "wallet-serve")
        with sync_playwright() as pw:
            for _ in range(args.runs):  # interleaved, so a busy moment hits every variant
                for decoder in ("wasm", "server"):
                    for clip, start in VARIANTS:
                        run = one_payment(pw, server, pos, decoder, clip, start, work)
                        name = f"{clip}-{start}"
                        results.setdefault(decoder, {}).setdefault(name, []).append(run)
                        if not args.json:
                            print(
                                f"  {decoder:6} {name:9} "
                                + json.dumps({k: round(v, 1) for k, v in run.items()}),
                                flush=True,
                            )
    finally:
        stack.stop()
    summary = {
        decoder: {
            clip: {k: round(statistics.median(r[k] for r in runs), 1) for k in runs[0]}
            for clip, runs in clips.items()
        }
        for decoder, clips in results.items()
    }
    doc = {"runs": args.runs, "seconds": round(time.time() - started, 1), "median_ms": summary}
    if args.json:
        print(json.dumps(doc))
        return 0
    print(f"\nmedians over {args.runs} payments each (ms; frames: count)")
    head = ("decoder", "clip-start", "frame->decoded", "decoded->offer", "frame->offer", "frames",
            "decode/frame", "PIN->receipt")  # fmt: skip
    print("  ".join(f"{h:>14}" for h in head))
    for decoder, clips in summary.items():
        for clip, m in clips.items():
            cells = [decoder, clip, *(str(m[k]) for k in (
                "frame_to_decoded", "decoded_to_offer", "frame_to_offer", "frames",
                "decode_per_frame", "pin_to_receipt"))]  # fmt: skip
            print("  ".join(f"{c:>14}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
