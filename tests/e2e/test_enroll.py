"""``safescan wallet enroll`` as a customer runs it: a blank carrier becomes a paying one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from safescan.code import LineItem
from safescan.merchant.client import MerchantApi
from tests.e2e.conftest import PIN, World


def _wallet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safescan.wallet", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_enroll_cli_then_pay_and_refuse_re_enrolling(world: World, tmp_path: Path) -> None:
    proc, carrier_url = world.stack.start_carrier("carrier-erin")
    try:
        admin = world.stack.need_admin()
        cid = world.stack.customer("Erin", fund=5_000)
        token = admin.enrollment_token(cid)
        pin_file = tmp_path / "pin"
        pin_file.write_text(PIN)
        wallet_dir = tmp_path / "wallet"
        args = ["--institution", world.base_url, "--carrier", carrier_url, "--token", token]
        out = _wallet(
            "enroll",
            *args,
            "--pin-file",
            str(pin_file),
            "--customer-id",
            cid,
            "--wallet-dir",
            str(wallet_dir),
        )
        assert out.returncode == 0, out.stderr
        assert "enrolled" in out.stdout
        config = json.loads((wallet_dir / "wallet.json").read_text())
        assert config["customer_id"] == cid and config["carrier_url"] == carrier_url

        again = _wallet(
            "enroll", *args, "--pin-file", str(pin_file), "--wallet-dir", str(tmp_path / "other")
        )
        assert again.returncode == 2
        assert "already personalised" in again.stderr

        with MerchantApi(world.pos) as api:
            order = api.create_order([LineItem("Tea", 1, 200)], currency="EUR")
        paid = _wallet(
            "scan",
            order.code,
            "--yes",
            "--pin-file",
            str(pin_file),
            "--json",
            "--wallet-dir",
            str(wallet_dir),
        )
        assert paid.returncode == 0, paid.stderr
        assert json.loads(paid.stdout.splitlines()[-1])["result"] == "paid"
        assert admin.balance(cid, "EUR") == 4_800
    finally:
        proc.stop()
