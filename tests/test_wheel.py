"""The wheel carries the wallet app's web assets (package data): an install from the wheel,
without npm or the source tree, serves the whole app."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "src" / "safescan" / "wallet" / "web" / "static"


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
