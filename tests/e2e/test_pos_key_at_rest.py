"""The POS's API private key at rest (issue #13 item 12): encrypted, migrated, never in clear.

The configuration files are written by the real onboarding path and used by real
``safescan pos`` processes against the running institution.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from safescan.merchant.config import ENV_PASSPHRASE, ENV_PASSPHRASE_FILE, PosConfig
from tests.e2e.conftest import World


def _pos(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safescan.merchant", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env if env is not None else dict(os.environ),
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _clear_forms(seed: bytes) -> list[bytes]:
    """Every way the seed could be written down in clear."""
    return [
        seed,
        seed.hex().encode(),
        seed.hex().upper().encode(),
        base64.b64encode(seed),
        base64.urlsafe_b64encode(seed),
        base64.b64encode(seed).rstrip(b"="),
        base64.b32encode(seed),
        seed[:16].hex().encode(),  # even half of it
    ]


def _holds_no_key(path: Path, seed: bytes) -> None:
    data = path.read_bytes()
    for form in _clear_forms(seed):
        assert form not in data, form
    doc = json.loads(data)
    assert "api_key" not in doc and doc["format"] == 2
    blob = base64.b64decode(doc["api_key_pkcs12"])
    for form in _clear_forms(seed):
        assert form not in blob
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_name(path.name + ".tmp").exists()


def test_onboarded_configuration_holds_no_key_in_clear_and_works(world: World) -> None:
    _holds_no_key(world.pos_path, world.pos.api_seed)
    out = _pos("orders", "--json", "--config", str(world.pos_path))
    assert out.returncode == 0, out.stderr
    assert "orders" in json.loads(out.stdout)


def test_wrong_missing_or_short_passphrase_and_tampering_are_typed_errors(
    world: World, tmp_path: Path
) -> None:
    before = world.pos_path.read_bytes()
    env = dict(os.environ)
    for bad in ("wrong-passphrase", "short"):
        env[ENV_PASSPHRASE] = bad
        out = _pos("orders", "--config", str(world.pos_path), env=env)
        assert out.returncode == 2, out.stderr
        assert "pos_config_error" in out.stderr and "Traceback" not in out.stderr
    env.pop(ENV_PASSPHRASE)
    out = _pos("orders", "--config", str(world.pos_path), env=env)  # no passphrase, no terminal
    assert out.returncode == 2 and ENV_PASSPHRASE in out.stderr
    # a passphrase file works like the variable
    pw = tmp_path / "pw"
    pw.write_text(world.stack.passphrase + "\n")
    out = _pos(
        "orders",
        "--json",
        "--config",
        str(world.pos_path),
        env={**env, ENV_PASSPHRASE_FILE: str(pw)},
    )
    assert out.returncode == 0, out.stderr
    # a flipped byte anywhere in the encrypted key
    doc = json.loads(before)
    blob = bytearray(base64.b64decode(doc["api_key_pkcs12"]))
    for offset in (10, len(blob) // 2, len(blob) - 5):
        tampered = bytearray(blob)
        tampered[offset] ^= 0x01
        copy = tmp_path / f"tampered-{offset}.json"
        copy.write_text(json.dumps({**doc, "api_key_pkcs12": base64.b64encode(tampered).decode()}))
        out = _pos("orders", "--config", str(copy))
        assert out.returncode == 2 and "pos_config_error" in out.stderr, out.stderr
    assert world.pos_path.read_bytes() == before


def test_a_clear_key_configuration_is_refused_then_migrated_in_place(
    world: World, tmp_path: Path
) -> None:
    legacy = tmp_path / "legacy-pos.json"
    seed = world.pos.api_seed
    legacy.write_text(
        json.dumps(
            {
                "institution_url": world.pos.institution_url,
                "merchant_id": world.pos.merchant_id,
                "api_key": seed.hex(),
                "trust": {str(k): v.hex() for k, v in world.pos.trust.institution_keys.items()},
                "currency": "EUR",
            }
        )
    )
    refused = _pos("orders", "--config", str(legacy))
    assert refused.returncode == 2 and "encrypt-key" in refused.stderr
    migrated = _pos("encrypt-key", "--config", str(legacy))
    assert migrated.returncode == 0, migrated.stderr
    _holds_no_key(legacy, seed)
    assert PosConfig.load(legacy, passphrase=world.stack.passphrase.encode()).api_seed == seed
    out = _pos("orders", "--json", "--config", str(legacy))
    assert out.returncode == 0, out.stderr
    again = _pos("encrypt-key", "--config", str(legacy))
    assert again.returncode == 2 and "nothing to encrypt" in again.stderr
