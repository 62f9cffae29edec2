"""``safescan wallet enroll`` as a customer runs it: a blank carrier becomes a paying one."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import httpx

from safescan.code import LineItem, SigningKey
from safescan.merchant.client import MerchantApi
from tests.e2e.conftest import PIN, World, start_new_carrier


def _wallet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safescan.wallet", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_enroll_cli_then_pay_and_refuse_re_enrolling(world: World, tmp_path: Path) -> None:
    proc, carrier_url = start_new_carrier(world.stack, "carrier-erin")
    try:
        admin = world.stack.need_admin()
        cid = world.stack.customer("Erin", fund=5_000)
        token = admin.enrollment_tokens.issue(cid).token
        pin_file = tmp_path / "pin"
        pin_file.write_text(PIN)
        wallet_dir = tmp_path / "wallet"
        args = ["--institution", world.base_url, "--carrier", carrier_url, "--token", token]
        args += ["--institution-ca", str(world.stack.tls_ca)]  # pinned at set-up (HTTPS)
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
        assert admin.customers.balance(cid, "EUR") == 4_800

        status = _wallet("status", "--json", "--wallet-dir", str(wallet_dir))
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        card = doc["carrier"]
        assert card["reachable"] and card["lifecycle"] == "personalized"
        assert card["signature_counter"] == 1 and card["pin_retries_left"] == 5
        assert doc["revocation_list"]["source"] == "institution"
        # connecting brought the card's own list up to the wallet's
        assert card["revocations_sequence"] == max(0, doc["revocation_list"]["sequence"])
        assert doc["institution_keys"] == config["trust"]
        shown = _wallet("status", "--wallet-dir", str(wallet_dir))
        assert shown.returncode == 0 and "payments signed" in shown.stdout, shown.stderr
    finally:
        proc.stop()
    down = _wallet("status", "--json", "--wallet-dir", str(wallet_dir))
    assert down.returncode == 2 and json.loads(down.stdout)["carrier"]["reachable"] is False


def test_enroll_with_pinned_institution_key_refuses_another_institutions_certificate(
    world: World, tmp_path: Path
) -> None:
    """The customer's enrollment letter carries the institution's root key (`institution
    root-keys`); `wallet enroll --institution-key` pins it instead of trusting whatever the URL
    serves. Pinned keys the institution does not publish are refused before the carrier is
    touched (a certificate under any other key would be refused before the carrier is
    personalised); with the right key the same carrier enrolls and pays."""
    listed = subprocess.run(
        [sys.executable, "-m", "safescan.institution", "root-keys", "--db", world.stack.db_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=world.stack.env(),
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    pins = listed.stdout.split()
    served = httpx.get(world.base_url + "/v1/keys", verify=world.verify).json()["root_keys"]
    assert pins == [f"{k['kid']}:{base64.b64decode(k['public_key']).hex()}" for k in served]

    proc, carrier_url = start_new_carrier(world.stack, "carrier-pinned")
    try:
        admin = world.stack.need_admin()
        cid = world.stack.customer("Pia", fund=1_000)
        pin_file = tmp_path / "pin"
        pin_file.write_text(PIN)
        kid = pins[0].split(":")[0]
        rogue = f"{kid}:{SigningKey.generate().public_key.raw.hex()}"

        def enroll(pin: str, directory: str) -> subprocess.CompletedProcess[str]:
            return _wallet(
                "enroll",
                "--institution",
                world.base_url,
                "--carrier",
                carrier_url,
                "--token",
                admin.enrollment_tokens.issue(cid).token,
                "--institution-key",
                pin,
                "--institution-ca",
                str(world.stack.tls_ca),
                "--pin-file",
                str(pin_file),
                "--wallet-dir",
                str(tmp_path / directory),
            )

        refused = enroll(rogue, "w1")
        assert refused.returncode == 2
        # the institution publishes no such key: refused before the carrier is touched
        assert "does not publish the pinned institution key" in refused.stderr, refused.stderr
        assert not (tmp_path / "w1" / "wallet.json").exists()
        malformed = enroll("1:abcd", "w2")
        assert malformed.returncode == 2 and "KID:64-hex-digits" in malformed.stderr

        ok = enroll(pins[0], "w3")  # the carrier is still blank: it enrolls now
        assert ok.returncode == 0, ok.stderr
        config = json.loads((tmp_path / "w3" / "wallet.json").read_text())
        assert config["trust"] == dict([pins[0].split(":")])
    finally:
        proc.stop()
