"""QR imaging (numpy, Pillow, zxing-cpp) warmed up off the request that first needs it.

Importing :mod:`safescan.code.qr` and drawing a first code costs ~0.2 s of CPU once per
process. Servers import it only where a code is drawn (31d4d0d: most of them never draw one),
so the first customer's ``qr.svg`` paid for it inside the request. :func:`warm_qr_imaging`
does it on a background thread instead, started by what announces a code to draw (a checkout
session made or its page opened): readiness is not delayed and a process that never draws a
code never pays for it. A request that comes while the import is under way waits for it
(Python's import lock), never imports twice.
"""

from __future__ import annotations

import threading

#: any alphanumeric text: only the drawing's first call is warmed, the code is thrown away
_WARM_TEXT = "SAFESCAN WARM UP"

_lock = threading.Lock()
_thread: threading.Thread | None = None


def _draw() -> None:
    from safescan.code.qr import render_svg

    render_svg(_WARM_TEXT)


def warm_qr_imaging() -> threading.Thread:
    """Start importing QR imaging and drawing one code on a daemon thread, once per process;
    the thread (already finished, after the first call, or running)."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_draw, name="qr-imaging-warm-up", daemon=True)
            _thread.start()
        return _thread
