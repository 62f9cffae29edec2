"""Benchmark the payment smart code (safescan.code.envelope) and print its byte budget.

Run: ``.venv/bin/python bench/bench_code.py [--runs N] [--json]``

Timings (median of N single calls, ``time.perf_counter_ns``), all in the same run:
raw Ed25519 sign / verify, raw HPKE seal / open (``cryptography``'s
``hpke.Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_128_GCM)``) on inputs of the same size as the
typical code's, then ``seal()`` and ``open_code()`` of the typical dynamic code (3 items, as in
``tests/code/conftest.py``), and their ratio to the raw primitives they are built on.
Targets (issue 2): seal+sign <= 200 us, open+verify <= 250 us, ratio <= 1.5.

Sizes: the byte budget per field of the typical institution-signed dynamic code, of a static
code and of merchant-signed dynamic and static codes (which carry the merchant's version-2
certificate, the identity in it, and name it in the body by serial), with total bytes, Base45
characters and the QR version at level M.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "src"):  # the package (if not installed) and the test fixtures
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import base45  # noqa: E402
from cryptography.hazmat.primitives import hpke  # noqa: E402
from tests.code.conftest import NOW, dynamic_code, make_scheme, static_code  # noqa: E402

from safescan.code import cbor, encode_text, envelope, open_code, qr, seal  # noqa: E402
from safescan.code.payment import DynamicCode, StaticCode  # noqa: E402

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
TARGET_SEAL_US = 200.0
TARGET_OPEN_US = 250.0
TARGET_RATIO = 1.5


def median_us(func: Callable[[], object], runs: int, warmup: int = 50) -> float:
    """Median wall time of one ``func()`` call, in microseconds."""
    for _ in range(warmup):
        func()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(runs):
        start = clock()
        func()
        samples.append(clock() - start)
    return statistics.median(samples) / 1000.0


def measure(runs: int) -> dict[str, float]:
    """All timings, in microseconds."""
    scheme = make_scheme()
    code = dynamic_code()
    issuer, public = scheme.issuer, scheme.scheme_key.public
    header, plaintext = envelope.sign_code(code, issuer, public.kid)
    message = envelope.SIG_CONTEXT + header + plaintext[envelope.SIGNATURE_BYTES :]
    signature = plaintext[: envelope.SIGNATURE_BYTES]
    ed_private = scheme.institution_key
    ed_public = scheme.institution_key.public_key
    x_public = public.x25519()
    x_private = scheme.scheme_key.private_key()
    info = envelope.HPKE_INFO + header
    sealed_raw = SUITE.encrypt(plaintext, x_public, info=info)
    binary = seal(code, issuer, public)
    merchant_binary = seal(code, scheme.merchant_issuer, public)
    text = encode_text(binary)
    keyring, trust = scheme.keyring, scheme.trust

    t = {
        "ed25519_sign": median_us(lambda: ed_private.sign(message), runs),
        "ed25519_verify": median_us(lambda: ed_public.verify(signature, message), runs),
        "hpke_seal": median_us(lambda: SUITE.encrypt(plaintext, x_public, info=info), runs),
        "hpke_open": median_us(lambda: SUITE.decrypt(sealed_raw, x_private, info=info), runs),
        "seal": median_us(lambda: seal(code, issuer, public), runs),
        "open_code": median_us(lambda: open_code(binary, keyring, trust, now=NOW), runs),
        "seal_merchant": median_us(lambda: seal(code, scheme.merchant_issuer, public), runs),
        "open_code_merchant": median_us(
            lambda: open_code(merchant_binary, keyring, trust, now=NOW), runs
        ),
        "open_code_text": median_us(lambda: open_code(text, keyring, trust, now=NOW), runs),
    }
    # Where open_code's time beyond the raw primitives goes (for tuning, not targets).
    signed = plaintext[envelope.SIGNATURE_BYTES :]
    body_value = envelope.split_signed(signed, envelope.VERSION)[1]
    opened = open_code(binary, keyring, trust, now=NOW).code
    base45_text = text[len(envelope.PREFIX) :]
    t |= {
        "part_cbor_strict_loads": median_us(lambda: cbor.strict_loads(signed), runs),
        "part_body_parse_validate": median_us(lambda: DynamicCode.from_cbor(body_value), runs),
        "part_lookalike_warnings": median_us(opened.warnings, runs),
        "part_base45_decode": median_us(lambda: base45.b45decode(base45_text), runs),
    }
    t["seal_ratio"] = t["seal"] / (t["ed25519_sign"] + t["hpke_seal"])
    t["open_ratio"] = t["open_code"] / (t["ed25519_verify"] + t["hpke_open"])
    return t


def budget(
    code: DynamicCode | StaticCode,
    issuer: envelope.Issuer,
    kid: int,
    version: int = envelope.VERSION,
) -> dict[str, Any]:
    """Bytes per field of ``code`` sealed by ``issuer``; the parts add up to the total."""
    header, plaintext = envelope.sign_code(code, issuer, kid, version=version)
    signed = plaintext[envelope.SIGNATURE_BYTES :]
    # a merchant-signed body names its certificate's serial
    body = envelope.split_signed(signed, version)[1]
    size = [len(cbor.dumps(v)) for v in body]
    if isinstance(code, DynamicCode) and version >= 2:
        size.insert(3, 0)  # no total: the items' sum
    parts: dict[str, int] = {
        "header": len(header),
        "enc": envelope.ENC_BYTES,
        "tag": envelope.TAG_BYTES,
        "signature": envelope.SIGNATURE_BYTES,
        "signer": len(cbor.dumps(issuer.signer_field())),
        "merchant": size[0],
    }
    if isinstance(code, DynamicCode):
        parts |= {
            "order id": size[1],
            "items": size[2],
            "total": size[3],
            "currency": size[4],
            "times": size[5] + size[6],
            "nonce": size[7],
        }
    else:
        parts |= {
            "order id": 0,
            "items": 0,
            "total": 0,
            "currency": size[3] if len(size) == 4 else 0,
            "times": size[1] + size[2],
            "nonce": 0,
        }
    parts["framing"] = len(signed) - sum(size) - parts["signer"]  # the array head(s)
    total = sum(parts.values())
    scheme_binary_len = len(header) + envelope.ENC_BYTES + len(plaintext) + envelope.TAG_BYTES
    assert total == scheme_binary_len, (total, scheme_binary_len)
    return {"parts": parts, "total": total}


def sizes() -> dict[str, dict[str, Any]]:
    """Byte budgets of the three reference codes, with text length and QR version."""
    scheme = make_scheme()
    public = scheme.scheme_key.public
    cases = {
        "dynamic (institution, 3 items)": (dynamic_code(), scheme.issuer),
        "static (institution, currency)": (static_code(), scheme.issuer),
        "dynamic (merchant-signed + cert)": (dynamic_code(), scheme.merchant_issuer),
        "static (merchant-signed + cert)": (static_code(), scheme.merchant_issuer),
    }
    out = {}
    for name, (code, issuer) in cases.items():
        info = budget(code, issuer, public.kid)
        binary = seal(code, issuer, public)
        assert len(binary) == info["total"]
        text = encode_text(binary)
        info |= {"base45_chars": len(text), "qr_version_m": qr.qr_version(text)}
        out[name] = info
    return out


def report(timings: dict[str, float], budgets: dict[str, dict[str, Any]], runs: int) -> None:
    """Print the figures for people."""
    print(
        f"safescan code benchmark: Python {platform.python_version()}, "
        f"cryptography {metadata.version('cryptography')}, cbor2 {metadata.version('cbor2')}, "
        f"median of {runs} calls"
    )
    rows = [
        ("raw Ed25519 sign", "ed25519_sign", ""),
        ("raw Ed25519 verify", "ed25519_verify", ""),
        ("raw HPKE seal (X25519, HKDF-SHA256, AES-128-GCM)", "hpke_seal", ""),
        ("raw HPKE open", "hpke_open", ""),
        ("seal() typical dynamic code (sign + seal)", "seal", f"target <= {TARGET_SEAL_US:.0f}"),
        ("open_code() binary (open + verify)", "open_code", f"target <= {TARGET_OPEN_US:.0f}"),
        ("open_code() from Base45 text", "open_code_text", ""),
        ("seal() merchant-signed", "seal_merchant", ""),
        ("open_code() merchant-signed (+ cert verify)", "open_code_merchant", ""),
        ("  part of open: cbor.strict_loads(signed)", "part_cbor_strict_loads", ""),
        ("  part of open: DynamicCode.from_cbor (validate)", "part_body_parse_validate", ""),
        ("  part of open: look-alike warnings", "part_lookalike_warnings", ""),
        ("  part of open_code(text): Base45 decode", "part_base45_decode", ""),
    ]
    for label, key, note in rows:
        print(f"  {label:<50} {timings[key]:8.1f} us  {note}")
    print(
        f"  {'ratio seal / (sign + HPKE seal)':<50} {timings['seal_ratio']:8.2f} x   "
        f"target <= {TARGET_RATIO}"
    )
    print(
        f"  {'ratio open / (verify + HPKE open)':<50} {timings['open_ratio']:8.2f} x   "
        f"target <= {TARGET_RATIO}"
    )
    print()
    names = list(budgets)
    width = 34

    def line(label: str, values: list[object]) -> None:
        print(f"  {label:<20}" + "".join(f"{v!s:>{width}}" for v in values))

    line("byte budget", [n[: width - 2] for n in names])
    for field in budgets[names[0]]["parts"]:
        line(field, [budgets[n]["parts"][field] for n in names])
    line("total bytes", [budgets[n]["total"] for n in names])
    line("text chars (SS1:...)", [budgets[n]["base45_chars"] for n in names])
    line("QR version (M)", [budgets[n]["qr_version_m"] for n in names])


def main(argv: list[str] | None = None) -> int:
    """Measure, then print (or print JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000, help="calls per timing (median)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    timings = measure(args.runs)
    budgets = sizes()
    if args.json:
        print(json.dumps({"runs": args.runs, "timings_us": timings, "sizes": budgets}, indent=2))
    else:
        report(timings, budgets, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
