"""``safescan demo``: the end-to-end demonstration.

Current stage: a payment-code round trip on embedded defaults (make a sealed, signed code,
render it to a PNG, decode the PNG, open and verify it, print what it holds). The full demo
(institution, key carrier, POS, wallet, attacks) replaces it as those parts land.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from safescan.code import (
    DynamicCode,
    Issuer,
    LineItem,
    Merchant,
    SchemeKey,
    SchemeKeyring,
    SigningKey,
    TrustStore,
    encode_text,
    open_code,
    qr,
    seal,
)
from safescan.code.inspect import describe_opened

console = Console()


def run_round_trip(workdir: Path) -> dict[str, Any]:
    """Make a code, render it to PNG, decode the PNG, open and verify it."""
    now = int(time.time())
    institution = SigningKey.generate()
    scheme_key = SchemeKey.generate(1)
    keyring = SchemeKeyring({1: scheme_key})
    trust = TrustStore({1: institution.public_key})
    code = DynamicCode(
        merchant=Merchant("m_7Qx2", "Café Lumière", "Paris", "FR", 5814),
        order_id="o_" + secrets.token_hex(6),
        items=(
            LineItem("Flat white", 2, 350),
            LineItem("Croissant", 1, 180),
            LineItem("Orange juice", 1, 420),
        ),
        total=1300,
        currency=978,
        issued_at=now,
        expires_at=now + 300,
        nonce=secrets.token_bytes(8),
    )
    binary = seal(code, Issuer.institution(institution, 1), scheme_key.public)
    text = encode_text(binary)
    png = workdir / "code.png"
    qr.save_png(text, png)
    scanned = qr.decode_image(png)
    opened = open_code(scanned, keyring, trust, now=now)
    return {
        "code_bytes": len(binary),
        "text_chars": len(text),
        "qr_version": qr.qr_version(text),
        "png": str(png),
        "scanned_matches": scanned == text,
        "contents": describe_opened(opened),
    }


def demo_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object at the end")
    ] = False,
) -> None:
    """Run the end-to-end demo (currently: the payment-code round trip)."""
    with tempfile.TemporaryDirectory(prefix="safescan-demo-") as tmp:
        result = run_round_trip(Path(tmp))
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
        return
    c = result["contents"]
    console.rule("[bold]safescan: payment code round trip")
    console.print(
        f"sealed code: {result['code_bytes']} bytes -> {result['text_chars']} Base45 characters"
        f" -> QR version {result['qr_version']} (level M)"
    )
    console.print(f"PNG decoded back to the same text: {result['scanned_matches']}")
    m = c["merchant"]
    console.print(f"[green]verified[/] merchant: [bold]{m['name']}[/], {m['city']} ({m['id']})")
    for item in c["items"]:
        console.print(f"  {item['quantity']} x {item['name']:<14} {item['amount']:>6}")
    console.print(f"  total: [bold]{c['total_display']}[/]  (order {c['order_id']})")
