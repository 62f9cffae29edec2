"""The wallet warns about look-alikes of the names it protects (issue #13 item 5).

An institution protects its own list; a wallet may protect more (its bank's brands, through
``$SAFESCAN_PROTECTED_NAMES``). A merchant whose name passed one institution's onboarding but
imitates a name the wallet protects is shown with a warning before the PIN, by the real wallet
command line against the real institution.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safescan.merchant.client import MerchantApi
from safescan.merchant.input import parse_item
from tests.e2e.conftest import World


def test_wallet_warns_about_a_lookalike_of_a_name_it_protects(world: World, tmp_path: Path) -> None:
    cfg = world.stack.onboard_merchant(name="G1obex Market", config_name="globex-pos.json")
    with MerchantApi(cfg) as api:
        order = api.create_order([parse_item("Gift card:1:2500")])
    protected = tmp_path / "protected.txt"
    protected.write_text("# brands this wallet's bank protects\nGlobex Market\n")

    def scan(env_extra: dict[str, str]) -> dict[str, object]:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "safescan",
                "wallet",
                "scan",
                order.code,
                "--json",
                "--wallet-dir",
                str(world.alice.wallet_dir),
            ],
            input="n\n",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, **env_extra},
        )
        first = out.stdout.strip().splitlines()[0]
        return dict(json.loads(first))

    warned = scan({"SAFESCAN_PROTECTED_NAMES": str(protected)})
    assert warned["result"] == "offer"
    warnings = warned["offer"]["warnings"]  # type: ignore[index]
    assert any("looks like 'Globex Market'" in w for w in warnings), warnings
    plain = scan({})
    assert plain["offer"]["warnings"] == []  # type: ignore[index]
