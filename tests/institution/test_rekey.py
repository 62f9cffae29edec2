"""`safescan institution rekey`: key files written the legacy way (PKCS#8 under PBKDF2, as
``cryptography``'s ``BestAvailableEncryption`` wrote them before the sealed format) are
re-sealed under scrypt + AES-GCM, all or nothing, atomically, 0600, idempotently; a wrong
passphrase, a file under another passphrase or a damaged file changes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safescan.code import keyfile
from safescan.code.errors import KeyFileError
from safescan.code.keys import SchemeKey, SigningKey
from safescan.institution.keystore import KeyStore
from safescan.institution.rekey import rekey
from tests.institution.harness import PASSPHRASE, institution_cli

PASS = PASSPHRASE.encode()


def _legacy_pem(key: Ed25519PrivateKey | X25519PrivateKey, passphrase: bytes = PASS) -> bytes:
    """A key file as releases before the sealed format wrote it."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def _legacy_scheme(kid: int, retire_at: int | None, passphrase: bytes = PASS) -> bytes:
    pem = _legacy_pem(X25519PrivateKey.generate(), passphrase).decode("ascii")
    doc = {"type": "safescan-scheme-key", "kid": kid, "retire_at": retire_at, "pem": pem}
    return json.dumps(doc).encode()


def _legacy_dir(path: Path) -> dict[str, Any]:
    """An institution key directory whose root key and two scheme keys (one retiring) are
    legacy files; returns their public keys."""
    store = KeyStore(path)
    store.create(PASS)
    index = json.loads((path / "keys.json").read_text())
    root = Ed25519PrivateKey.generate()
    (path / "root-1.pem").write_bytes(_legacy_pem(root))
    (path / "scheme-1.json").write_bytes(_legacy_scheme(1, 1_900_000_000))
    (path / "scheme-2.json").write_bytes(_legacy_scheme(2, None))
    index["scheme_kids"] = [1, 2]
    (path / "keys.json").write_text(json.dumps(index))
    for name in ("root-1.pem", "scheme-1.json", "scheme-2.json"):
        os.chmod(path / name, 0o600)
    return _publics(path)


def _publics(path: Path) -> dict[str, Any]:
    keys = KeyStore(path).load(PASS)
    return {
        "root": keys.root.public_key.raw,
        "scheme": {k: (v.public.raw, v.retire_at) for k, v in keys.scheme.keys.items()},
    }


def _snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _legacy_files(path: Path) -> list[str]:
    out = []
    if keyfile.is_legacy((path / "root-1.pem").read_bytes()):
        out.append("root-1.pem")
    for name in ("scheme-1.json", "scheme-2.json"):
        if keyfile.is_legacy(json.loads((path / name).read_text())["pem"].encode()):
            out.append(name)
    return out


def test_rekey_reseals_every_legacy_file_and_keeps_the_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    before = _legacy_dir(keys)
    (keys / "scheme-2.json.tmp").write_bytes(b"stale")  # a crash's leftover, world-readable
    os.chmod(keys / "scheme-2.json.tmp", 0o644)
    assert _legacy_files(keys) == ["root-1.pem", "scheme-1.json", "scheme-2.json"]
    done = institution_cli("rekey", "--keys", str(keys), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["resealed"] == 3 and out["root_key"] == "file"
    assert [(f["file"], f["resealed"]) for f in out["files"]] == [
        ("root-1.pem", True),
        ("scheme-1.json", True),
        ("scheme-2.json", True),
        ("secret.json", False),  # always scrypt + AES-GCM: rewritten for a new passphrase only
    ]
    assert all(f["was"].startswith("legacy") for f in out["files"][:3])
    assert _legacy_files(keys) == []
    assert _publics(keys) == before  # the same keys, retirement times included
    for name in ("root-1.pem", "scheme-1.json", "scheme-2.json"):
        assert (keys / name).stat().st_mode & 0o777 == 0o600, name
        assert not (keys / f"{name}.tmp").exists()
    assert PASSPHRASE not in (keys / "root-1.pem").read_text()
    # idempotent: nothing left to do, nothing rewritten
    files = _snapshot(keys)
    again = institution_cli("rekey", "--keys", str(keys), "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["resealed"] == 0
    assert all(
        not f["resealed"] and f["was"].startswith("current")
        for f in json.loads(again.stdout)["files"]
    )
    assert _snapshot(keys) == files
    text = institution_cli("rekey", "--keys", str(keys))
    assert text.returncode == 0 and "0 key file(s) re-sealed" in text.stdout


@pytest.mark.parametrize(
    "spoil",
    [
        "wrong passphrase",
        "one scheme file under another passphrase",
        "the root file truncated",
        "a scheme file's pem damaged",
        "the server secret under another passphrase",
    ],
)
def test_rekey_refuses_and_changes_nothing(tmp_path: Path, spoil: str) -> None:
    keys = tmp_path / "keys"
    _legacy_dir(keys)
    passphrase = PASS
    if spoil == "wrong passphrase":
        passphrase = b"not the passphrase"
    elif spoil == "one scheme file under another passphrase":
        (keys / "scheme-2.json").write_bytes(_legacy_scheme(2, None, b"another passphrase"))
    elif spoil == "the root file truncated":
        data = (keys / "root-1.pem").read_bytes()
        (keys / "root-1.pem").write_bytes(data[: len(data) // 2])
    elif spoil == "a scheme file's pem damaged":
        doc = json.loads((keys / "scheme-1.json").read_text())
        doc["pem"] = doc["pem"].replace("A", "B", 3)
        (keys / "scheme-1.json").write_text(json.dumps(doc))
    else:
        KeyStore(keys)._save_secret(os.urandom(32), b"another passphrase")
    files = _snapshot(keys)
    with pytest.raises(KeyFileError):
        rekey(keys, passphrase)
    assert _snapshot(keys) == files  # the root file was legacy and still is: all or nothing


def test_rekey_through_the_cli_refuses_a_wrong_passphrase_typed(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    _legacy_dir(keys)
    files = _snapshot(keys)
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not the passphrase\n")
    os.chmod(wrong, 0o600)
    done = institution_cli("rekey", "--keys", str(keys), "--passphrase-file", str(wrong), "--json")
    assert done.returncode != 0
    err = json.loads(done.stdout)["error"]
    assert err["code"] == "key_file_error" and "passphrase" in err["message"]
    assert "not the passphrase" not in done.stdout + done.stderr
    assert _snapshot(keys) == files


def test_a_write_that_fails_leaves_every_file_as_it_was_and_a_second_run_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys"
    before = _legacy_dir(keys)
    real_replace = os.replace

    def failing(src: Any, dst: Any) -> None:
        if str(dst).endswith("scheme-1.json"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    files = _snapshot(keys)
    with pytest.raises(KeyFileError, match="every key file is as it was"):
        rekey(keys, PASS)
    # all or nothing: the root file, re-sealed before the failure, is put back too
    assert _legacy_files(keys) == ["root-1.pem", "scheme-1.json", "scheme-2.json"]
    assert {k: v for k, v in _snapshot(keys).items() if k != ".rekey.lock"} == files
    assert _publics(keys) == before  # every file opens, untouched
    monkeypatch.setattr(os, "replace", real_replace)
    assert rekey(keys, PASS)["resealed"] == 3
    assert _legacy_files(keys) == [] and _publics(keys) == before


def test_keys_loaded_after_rekey_sign_and_open_as_before(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    _legacy_dir(keys)
    old = KeyStore(keys).load(PASS)
    rekey(keys, PASS)
    new = KeyStore(keys).load(PASS)
    message = b"receipt"
    new.root.public_key.verify(old.root.sign(message), message)
    old.root.public_key.verify(new.root.sign(message), message)
    assert isinstance(new.root, SigningKey)
    assert all(isinstance(k, SchemeKey) for k in new.scheme.keys.values())
    assert new.secret == old.secret
