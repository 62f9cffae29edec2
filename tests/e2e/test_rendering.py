"""Untrusted text is shown as text, never as markup or terminal control (issue #13 item 4).

A merchant whose name is rich markup (``[green]✓ Verified by your bank[/]``), items and
references that are markup, HTML or links, EMV and plain QR payloads holding ANSI escapes: the
wallet and POS command lines (real processes, against the real institution) print them
literally, with no escape byte reaching the terminal; the web pages escape them (see
``test_web_pos.py`` for the browser); QR images carry no text at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from safescan.code import qr
from safescan.code.emv import build_emv
from safescan.merchant.client import MerchantApi
from safescan.merchant.config import PosConfig
from safescan.merchant.input import parse_item
from tests.e2e.conftest import World

MARKUP_NAME = "Shop [green]✓ Verified by your bank[/]"
MARKUP_ITEMS = ["[bold red]FREE[/] gift", "[link=https://evil.example]Tea[/link]", "<b>Cake</b> \\"]


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    # output to a pipe: rich prints no styles of its own, so any ESC byte came from the input,
    # and a tag that was parsed as markup would simply vanish from the text
    env = dict(os.environ, COLUMNS="200")
    env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "safescan", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def _markup_merchant(world: World, tmp_path: Path) -> tuple[PosConfig, Path]:
    cfg = world.stack.onboard_merchant(
        name=MARKUP_NAME, city="[blink]Paris[/]", config_name="markup-pos.json"
    )
    return cfg, world.stack.workdir / "markup-pos.json"


def test_wallet_shows_markup_names_and_items_literally(world: World, tmp_path: Path) -> None:
    cfg, _ = _markup_merchant(world, tmp_path)
    with MerchantApi(cfg) as api:
        order = api.create_order(
            [parse_item(f"{n}:1:100") for n in MARKUP_ITEMS],
            reference="[link=https://evil.example]ref[/link]",
        )
    out = _cli(
        "wallet", "scan", order.code, "--wallet-dir", str(world.alice.wallet_dir), stdin="n\n"
    )
    assert out.returncode == 1, out.stdout + out.stderr  # declined: nothing paid
    shown = out.stdout
    assert "Verified payment code" in shown
    assert "[green]✓ Verified by your bank[/]" in shown
    assert "[blink]Paris[/]" in shown
    for name in ("[bold red]FREE[/] gift", "[link=https://evil.example]Tea[/link]", "<b>Cake</b>"):
        assert name in shown, name
    assert "\x1b" not in shown  # no hyperlink, no style: nothing was parsed


def test_emv_and_text_codes_cannot_drive_the_terminal(world: World, tmp_path: Path) -> None:
    payloads = {
        "emv": build_emv(
            {
                "00": "01",
                "26": {"00": "com.example"},
                "52": "5812",
                "53": "978",
                "54": "9.99",
                "58": "FR",
                "59": "[green]VERIFIED[/] Bank",
                "60": "[bold]Paris[/]",
            }
        ),
        "text": "hello \x1b[2J\x1b]0;pwned\x07 [bold]world[/] \u202eevil",
        "url": "https://example.org/[red]x[/]?\x1b[31m",
    }
    for kind, payload in payloads.items():
        image = tmp_path / f"{kind}.png"
        qr.save_png(payload, image)
        out = _cli("wallet", "scan", str(image), "--wallet-dir", str(world.alice.wallet_dir))
        assert out.returncode == 3, (kind, out.stdout, out.stderr)  # shown, not payable
        assert "\x1b" not in out.stdout and "\x07" not in out.stdout, kind
        assert "\u202e" not in out.stdout
    emv_out = _cli("code", "inspect", str(tmp_path / "emv.png"))
    assert "[green]VERIFIED[/] Bank" in emv_out.stdout and "[bold]Paris[/]" in emv_out.stdout
    text_out = _cli(
        "wallet", "scan", str(tmp_path / "text.png"), "--wallet-dir", str(world.alice.wallet_dir)
    )
    assert "\\x1b[2J" in text_out.stdout and "\\u202e" in text_out.stdout


def test_pos_cli_prints_markup_items_literally(world: World, tmp_path: Path) -> None:
    _, path = _markup_merchant(world, tmp_path)
    out = _cli(
        "pos",
        "order",
        "--config",
        str(path),
        "--item",
        "[bold red]FREE[/]:1:100",
        "--no-wait",
        "--png",
        str(tmp_path / "o.png"),
    )
    assert out.returncode == 0, out.stderr
    assert "[bold red]FREE[/]" in out.stdout
    # an error quoting input is escaped too
    bad = _cli(
        "pos", "order", "--config", str(path), "--item", "[red]x[/]\u202e:1:100", "--no-wait"
    )
    assert bad.returncode != 0
    assert "\u202e" not in bad.stdout + bad.stderr
    assert "U+202E" in bad.stdout + bad.stderr


def test_qr_images_hold_no_text_of_the_payload(tmp_path: Path) -> None:
    payload = '<script>alert(1)</script>"/><text>[bold]x</text>'
    svg = qr.render_svg(payload)
    assert "<script" not in svg and "alert" not in svg and "[bold]" not in svg
    assert svg.count("<") == 5  # xml declaration, svg, rect, path, /svg: nothing else
    png = qr.render_png(payload)
    assert b"alert" not in png and b"script" not in png
