"""The payment hot path's code calls, timed one by one (issue 20), for before/after comparisons.

    .venv/bin/python bench/hotpath_micro.py [TREE] [--json]

Imports safescan and the test suite's fixed keys from TREE (default: this checkout), so two
trees (an old commit exported somewhere, and this one) can be compared side by side under the
same load: run it alternately on both. Prints the median (microseconds) of 4,000 calls each of
``open_code()`` on the test suite's typical dynamic code (text form; institution-signed and
merchant-signed; the merchant "Café Lumière" is not ASCII) and of ``verify_certificate()`` on
that merchant's certificate.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

TREE = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 and sys.argv[1] != "--json" else None
TREE = TREE or Path(__file__).resolve().parent.parent
sys.path[:0] = [str(TREE / "src"), str(TREE)]

from tests.code.conftest import NOW, dynamic_code, make_scheme  # noqa: E402

import safescan  # noqa: E402
from safescan.code import certs, encode_text, envelope, seal  # noqa: E402
from safescan.code.certs import Role  # noqa: E402


def median_us(fn: Callable[[], object], n: int = 4000) -> float:
    """Median wall time of ``fn`` in microseconds (after 200 warm-up calls)."""
    for _ in range(200):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return round(statistics.median(out) * 1e6, 1)


def main() -> None:
    """Print the figures (one JSON object with ``--json``)."""
    assert safescan.__file__ and safescan.__file__.startswith(str(TREE)), safescan.__file__
    s = make_scheme()
    inst_code = encode_text(seal(dynamic_code(), s.issuer, s.scheme_key.public))
    merch_code = encode_text(seal(dynamic_code(), s.merchant_issuer, s.scheme_key.public))
    cert = s.merchant_issuer.certificate
    assert cert is not None
    figures = {
        "open_code_institution_us": median_us(
            lambda: envelope.open_code(inst_code, s.keyring, s.trust, now=NOW)
        ),
        "open_code_merchant_us": median_us(
            lambda: envelope.open_code(merch_code, s.keyring, s.trust, now=NOW)
        ),
        "verify_certificate_us": median_us(
            lambda: certs.verify_certificate(cert, s.trust, role=Role.MERCHANT, now=NOW)
        ),
    }
    if "--json" in sys.argv:
        print(json.dumps({"tree": str(TREE), **figures}))
        return
    for name, value in figures.items():
        print(f"{name:28} {value:8.1f} us   ({TREE})")


if __name__ == "__main__":
    main()
