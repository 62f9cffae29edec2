"""The wallet's own files are written whole or not at all, owner-only.

``wallet.json`` holds whom the wallet trusts (the pinned institution keys and TLS CA) and
``crl.cbor`` the last revocation list: another local user must not be able to read or swap
them, and a crash while writing must leave the old file, never a torn one.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from safescan.code.certs import TrustStore
from safescan.code.keys import SigningKey
from safescan.wallet.flow import Wallet
from safescan.wallet.store import WalletConfig
from tests.e2e.conftest import Party, World


def _config(directory: Path, url: str = "https://127.0.0.1:1") -> WalletConfig:
    return WalletConfig(
        institution_url=url,
        carrier_url="tcp://127.0.0.1:9",
        trust=TrustStore({1: SigningKey.generate().public_key}),
        carrier_serial=7,
        directory=directory,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_wallet_json_is_owner_only_even_over_a_stale_world_readable_temporary(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "wallet"
    directory.mkdir(mode=0o700)
    stale = directory / "wallet.json.tmp"
    stale.write_text("left by a crash")
    stale.chmod(0o666)
    target = _config(directory).save()
    assert _mode(target) == 0o600
    assert not stale.exists()
    assert json.loads(target.read_text())["carrier_serial"] == 7
    assert WalletConfig.load(directory).carrier_serial == 7


@pytest.mark.parametrize("step", ["write", "fsync", "replace"])
def test_a_failed_save_leaves_the_previous_wallet_json_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    directory = tmp_path / "wallet"
    _config(directory, "https://127.0.0.1:1").save()
    before = (directory / "wallet.json").read_bytes()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, step, broken)
    with pytest.raises(OSError):
        _config(directory, "https://127.0.0.1:2").save()
    monkeypatch.undo()
    assert (directory / "wallet.json").read_bytes() == before
    assert WalletConfig.load(directory).institution_url == "https://127.0.0.1:1"


def test_the_cached_revocation_list_is_owner_only(
    world: World, fresh_party: Callable[[str], Party]
) -> None:
    erin = fresh_party("erin-files")
    crl = erin.wallet_dir / "crl.cbor"
    crl.unlink(missing_ok=True)
    with Wallet.load(erin.wallet_dir) as wallet:
        _, source = wallet.trust()
    assert source == "institution"
    assert crl.exists() and _mode(crl) == 0o600
    assert _mode(erin.wallet_dir / "wallet.json") == 0o600
