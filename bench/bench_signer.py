"""Signatures per second through the institution's signing interface: key file vs PKCS#11 token.

Run: ``.venv/bin/python bench/bench_signer.py [--seconds S] [--threads 1,4] [--json]``

Both sides are :class:`safescan.code.keys.Signer` objects exactly as the institution uses
them: a :class:`~safescan.code.keys.SigningKey` loaded from the key directory (``file``) and a
:class:`~safescan.institution.hsm.TokenKey` generated in a throwaway SoftHSM2 token
(``pkcs11``: one logged-in session per process, one operation at a time on it). Each signs a
200-byte message (a receipt's to-be-signed bytes are ~190) in a closed loop for S seconds with
1 and with N threads; every signature of the token is checked once with ``cryptography``.

Needs the Debian package ``softhsm2`` and ``python-pkcs11``; without them only the file side
runs and the reason is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.institution import softhsm  # noqa: E402

from safescan.code.keys import Signer, SigningKey  # noqa: E402
from safescan.institution import hsm  # noqa: E402

MESSAGE = bytes(range(200))


def rate(signer: Signer, seconds: float, threads: int) -> float:
    """Signatures per second, ``threads`` closed-loop signers for ``seconds``."""
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            signer.sign(MESSAGE)
            n += 1
        counts[i] = n

    start = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - start)


def measure(seconds: float, threads: list[int]) -> dict[str, Any]:
    """Both sides' signatures per second; prints them as it goes."""
    out: dict[str, Any] = {"seconds": seconds, "message_bytes": len(MESSAGE)}
    signers: dict[str, Signer] = {"file": SigningKey.generate()}
    with tempfile.TemporaryDirectory(prefix="safescan-signer-") as d:
        reason = softhsm.missing()
        if reason is None:
            token = softhsm.make(Path(d))
            token.reload_in_process()
            key = hsm.Token(token.settings()).generate(1)
            key.public_key.verify(key.sign(MESSAGE), MESSAGE)
            signers["pkcs11"] = key
            out["softhsm2"] = softhsm_version()
        else:
            out["pkcs11_skipped"] = reason
            print(f"PKCS#11 side skipped: {reason}")
        for name, signer in signers.items():
            for n in threads:
                per_s = rate(signer, seconds, n)
                out[f"{name}_{n}t_per_s"] = round(per_s, 1)
                print(f"  {name:6s} {n} thread(s)  {per_s:10.1f} signatures/s")
    if "pkcs11_1t_per_s" in out:
        out["token_cost_us_per_signature"] = round(
            1e6 / out["pkcs11_1t_per_s"] - 1e6 / out["file_1t_per_s"], 1
        )
        print(f"  extra time per signature in the token: {out['token_cost_us_per_signature']} us")
    return out


def softhsm_version() -> str:
    import subprocess

    done = subprocess.run(["softhsm2-util", "--version"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main() -> None:
    """Measure and print (with --json: text to stderr, one JSON object to stdout)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--threads", default="1,4", help="comma-separated thread counts")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    if not args.json:
        measure(args.seconds, threads)
        return
    with contextlib.redirect_stdout(sys.stderr):
        figures = measure(args.seconds, threads)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
