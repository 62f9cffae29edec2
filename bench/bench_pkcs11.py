"""Peer: Ed25519 signing through PKCS#11 (SoftHSM2) against ``cryptography``, same run.

Run: ``.venv/bin/python bench/bench_pkcs11.py [--runs N] [--json]``

Makes a throwaway SoftHSM2 token in a temporary directory (its own ``SOFTHSM2_CONF``; nothing
outside that directory is touched), generates an Ed25519 key pair on the token, and times
signing (and verifying) a 200-byte message, median of N calls, through ``python-pkcs11``
(``CKM_EDDSA``), beside ``cryptography``'s Ed25519 on the same message. The token's signature
is checked with ``cryptography`` first, so both sides compute the same thing.

Needs the Debian package ``softhsm2`` and ``python-pkcs11==0.10.1``; without them it prints
why it is skipped (``"skipped"`` in the JSON) and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

MODULE_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
ED25519_OID = "1.3.101.112"
USER_PIN = "246810"
MESSAGE = bytes(range(200))


def median_us(func: Callable[[], object], runs: int, warmup: int = 20) -> float:
    """Median wall time of one ``func()`` call, in microseconds."""
    for _ in range(warmup):
        func()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        func()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000.0


def missing() -> str | None:
    """Why the PKCS#11 peer cannot run here, or None."""
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util not found (apt-get install softhsm2)"
    if module_path() is None:
        return "libsofthsm2.so not found (apt-get install softhsm2)"
    try:
        import pkcs11  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        return "python-pkcs11 not installed (pip install python-pkcs11==0.10.1)"
    return None


def module_path() -> str | None:
    """The SoftHSM2 PKCS#11 module."""
    return next((p for p in MODULE_PATHS if Path(p).exists()), None)


def softhsm_version() -> str:
    """SoftHSM2's version as its tool reports it."""
    out = subprocess.run(["softhsm2-util", "--version"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def measure(runs: int) -> dict[str, Any]:
    """Both sides' timings, in microseconds; prints them as it goes."""
    reason = missing()
    if reason is not None:
        print(f"PKCS#11 peer skipped: {reason}")
        return {"skipped": reason}
    import pkcs11
    from pkcs11.util.ec import encode_named_curve_parameters

    module = module_path()
    assert module is not None
    ours = Ed25519PrivateKey.generate()
    ours_public = ours.public_key()
    signature = ours.sign(MESSAGE)
    out: dict[str, Any] = {
        "runs": runs,
        "softhsm2": softhsm_version(),
        "python_pkcs11": metadata.version("python-pkcs11"),
        "cryptography": metadata.version("cryptography"),
        "cryptography_sign_us": median_us(lambda: ours.sign(MESSAGE), runs),
        "cryptography_verify_us": median_us(lambda: ours_public.verify(signature, MESSAGE), runs),
    }
    with tempfile.TemporaryDirectory(prefix="safescan-softhsm-") as tmp:
        tokens = Path(tmp) / "tokens"
        tokens.mkdir()
        conf = Path(tmp) / "softhsm2.conf"
        conf.write_text(
            f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        )
        env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                "safescan-bench",
                "--so-pin",
                "12345678",
                "--pin",
                USER_PIN,
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        os.environ["SOFTHSM2_CONF"] = str(conf)  # read by the module when it is loaded
        lib = pkcs11.lib(module)
        token = lib.get_token(token_label="safescan-bench")
        with token.open(user_pin=USER_PIN, rw=True) as session:
            params = session.create_domain_parameters(
                pkcs11.KeyType.EC_EDWARDS,
                {pkcs11.Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID)},
                local=True,
            )
            keys = params.generate_keypair(
                mechanism=pkcs11.Mechanism.EC_EDWARDS_KEY_PAIR_GEN, store=False
            )
            public: Any = keys[0]  # python-pkcs11's sign/verify come from mixins mypy
            private: Any = keys[1]  # cannot see
            point = bytes(public[pkcs11.Attribute.EC_POINT])
            raw = point[2:] if len(point) == 34 and point[:2] == b"\x04\x20" else point
            hsm_signature = private.sign(MESSAGE, mechanism=pkcs11.Mechanism.EDDSA)
            Ed25519PublicKey.from_public_bytes(raw).verify(hsm_signature, MESSAGE)
            out["pkcs11_sign_us"] = median_us(
                lambda: private.sign(MESSAGE, mechanism=pkcs11.Mechanism.EDDSA), runs
            )
            out["pkcs11_verify_us"] = median_us(
                lambda: public.verify(MESSAGE, hsm_signature, mechanism=pkcs11.Mechanism.EDDSA),
                runs,
            )
    out["sign_ratio"] = out["pkcs11_sign_us"] / out["cryptography_sign_us"]
    print(f"SoftHSM2 {out['softhsm2']}, python-pkcs11 {out['python_pkcs11']}, median of {runs}")
    print(f"  Ed25519 sign, cryptography        {out['cryptography_sign_us']:8.1f} us")
    print(f"  Ed25519 sign, PKCS#11 (SoftHSM2)  {out['pkcs11_sign_us']:8.1f} us")
    print(f"  Ed25519 verify, cryptography      {out['cryptography_verify_us']:8.1f} us")
    print(f"  Ed25519 verify, PKCS#11 (SoftHSM2){out['pkcs11_verify_us']:8.1f} us")
    print(f"  PKCS#11 sign / cryptography sign  {out['sign_ratio']:8.2f} x")
    return out


def main() -> None:
    """Measure and print (with --json: text to stderr, one JSON object to stdout)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="calls per timing (median)")
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
