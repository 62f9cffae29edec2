"""Web assets are package data files, not Python strings: the POS's scripts and style sheet are
files read with importlib.resources, the script the counter and the checkout page share is one
file, and no Python source carries a script or a style sheet."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from safescan.merchant import assets

SRC = Path(__file__).resolve().parent.parent / "src" / "safescan"
STATIC = SRC / "merchant" / "static"

# what only a script or a style sheet contains
ASSET_MARKERS = re.compile(
    r"addEventListener\(|document\.(getElementById|querySelector|createElement)"
    r"|\bfunction\s*\([^)]*\)\s*\{|=>\s*\{|[a-z-]+\s*\{\s*[a-z-]+\s*:[^;{}]+;"
)


def test_every_served_asset_is_a_file_of_the_package() -> None:
    assert set(assets.MEDIA_TYPES) == {p.name for p in STATIC.iterdir() if p.is_file()}
    for name in assets.MEDIA_TYPES:
        assert assets.asset(name) == (STATIC / name).read_bytes()
        assert assets.asset(name).strip()


@pytest.mark.parametrize("name", ["../web.py", "", "pos.js.map", "static/pos.js", "POS.JS"])
def test_only_the_listed_assets_are_read(name: str) -> None:
    with pytest.raises(KeyError):
        assets.asset(name)


def test_the_shared_order_script_is_not_repeated() -> None:
    """order.js holds the status labels, the element helper and the receipt box; the page
    scripts use it instead of carrying copies."""
    shared = (STATIC / "order.js").read_text()
    for needle in ("PARTIALLY_REFUNDED:", "function el(", "function showState(", "showReceipt("):
        assert needle in shared
    for page in ("pos.js", "shop.js"):
        text = (STATIC / page).read_text()
        assert "window.safescanOrder" in text
        for needle in ("PARTIALLY_REFUNDED:", "function el(", "status.closest(", '"verified"'):
            assert needle not in text, f"{page} repeats {needle!r} of order.js"


def test_pages_load_the_shared_script_first() -> None:
    from safescan.merchant import pages

    html = pages.layout(title="t", body="", csrf="c", script="/static/shop.js")
    assert html.index('src="/static/order.js"') < html.index('src="/static/shop.js"')


def _long_strings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) > 60
    ]


def test_no_python_source_carries_a_script_or_style_sheet() -> None:
    found = [
        f"{path.relative_to(SRC)}: {m.group(0)!r}"
        for path in sorted(SRC.rglob("*.py"))
        for text in _long_strings(path)
        for m in [ASSET_MARKERS.search(text)]
        if m is not None
    ]
    assert not found, found


def test_the_check_sees_a_script_in_a_string(tmp_path: Path) -> None:
    script = "(function () {\n  const x = document.getElementById('a');\n  x.hidden = true;\n})();"
    style = "body { margin:0; font: 16px/1.45 system-ui; color: var(--ink); }\n.a { b: c; }"
    for asset in (f"JS = {script!r}", f"CSS = {style!r}", f"X = {'padding ' * 9 + script!r}"):
        module = tmp_path / "m.py"
        module.write_text(asset + "\n")
        assert any(ASSET_MARKERS.search(t) for t in _long_strings(module)), asset
