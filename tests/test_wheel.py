"""The wheel carries the web assets (package data): an install from the wheel, without npm or
the source tree, serves the whole wallet app and the web POS's scripts and style sheet."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "safescan"
STATIC = PACKAGE / "wallet" / "web" / "static"


@pytest.mark.slow
def test_the_wheel_holds_every_static_asset_of_the_wallet_app(tmp_path: Path) -> None:
    pytest.importorskip("hatchling", reason="hatchling (the build backend) is not installed")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    [wheel] = tmp_path.glob("safescan-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        "safescan/wallet/web/static/" + p.relative_to(STATIC).as_posix()
        for p in STATIC.rglob("*")
        if p.is_file()
    }
    assert len(wanted) >= 15
    assert wanted <= names, sorted(wanted - names)
    wasm = zipfile.ZipFile(wheel).read(
        "safescan/wallet/web/static/vendor/zxing-wasm/zxing_reader.wasm"
    )
    assert wasm[:4] == b"\0asm"  # the real module, not a placeholder or an LFS pointer
    # every data file of the package (the POS's static/ too), byte for byte
    data = {
        "safescan/" + p.relative_to(PACKAGE).as_posix(): p
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    for name in ("order.js", "pos.js", "shop.js", "pos.css"):
        assert f"safescan/merchant/static/{name}" in data
    assert set(data) <= names, sorted(set(data) - names)
    with zipfile.ZipFile(wheel) as zf:
        for name, path in data.items():
            assert zf.read(name) == path.read_bytes(), name
