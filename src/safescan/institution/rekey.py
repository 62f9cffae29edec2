"""`safescan institution rekey`: re-seal the key directory's legacy key files in the current
format (scrypt + AES-256-GCM, :mod:`safescan.code.keyfile`) without waiting for a key to be
saved again.

Files written before that format (PKCS#8 under PBKDF2 at 2,048 iterations) still load, but a
copy of one gives up its passphrase to a cheap offline search. ``rekey`` reads every key file the
index names (``root-<kid>.pem`` unless the root key is in a PKCS#11 token, every
``scheme-<kid>.json``; ``secret.json`` has always been scrypt + AES-GCM), checks that each one
opens under the passphrase *before* anything is written (a wrong passphrase is a
:class:`~safescan.code.errors.KeyFileError` and changes nothing), then rewrites only the legacy
ones: atomically (a temporary file renamed over the old one), fsync'd (file and directory), mode
0600, and read back to check it holds the same key. Running it again has nothing to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safescan.api.errors import ConfigError
from safescan.code import keyfile
from safescan.code.errors import KeyFileError
from safescan.code.keys import SchemeKey, SigningKey, write_private_file
from safescan.institution.keystore import KeyStore


@dataclass
class _Plan:
    """One key file: what it holds now and what it becomes (None: left as it is)."""

    path: Path
    kind: str
    legacy: bool
    new: bytes | None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None


def _plan_root(path: Path, passphrase: bytes) -> _Plan:
    data = _read(path)
    try:
        new = keyfile.reseal(data, passphrase)
    except KeyFileError as exc:
        raise KeyFileError(f"{path.name}: {exc.message}") from None
    if new is not None:
        SigningKey.from_pem(data, passphrase)  # an Ed25519 key, as the root key must be
    return _Plan(path, "root", new is not None, new)


def _plan_scheme(path: Path, passphrase: bytes) -> _Plan:
    data = _read(path)
    try:
        key = SchemeKey.from_json(data, passphrase)
        legacy = keyfile.is_legacy(str(json.loads(data)["pem"]).encode("ascii"))
    except KeyFileError as exc:
        raise KeyFileError(f"{path.name}: {exc.message}") from None
    new = key.to_json(passphrase).encode("ascii") if legacy else None
    return _Plan(path, "scheme", legacy, new)


def _same_key(plan: _Plan, passphrase: bytes) -> bool:
    """The rewritten file opens under the passphrase and holds the key the old one held."""
    assert plan.new is not None
    if plan.kind == "root":
        before = SigningKey.from_pem(plan.new, passphrase).public_key
        return SigningKey.load(plan.path, passphrase).public_key == before
    return (
        SchemeKey.load(plan.path, passphrase).public
        == SchemeKey.from_json(plan.new, passphrase).public
    )


def rekey(key_dir: Path, passphrase: bytes) -> dict[str, Any]:
    """Re-seal every legacy key file of ``key_dir`` (module docstring); returns, per file,
    whether it was legacy and whether it was rewritten."""
    store = KeyStore(key_dir)
    if not store.exists():
        raise ConfigError(f"no institution keys in {key_dir} (run init first)")
    index = json.loads((store.path / "keys.json").read_text())
    plans: list[_Plan] = []
    if store.root_store() == "file":
        plans.append(_plan_root(store.path / f"root-{int(index['root_kid'])}.pem", passphrase))
    for kid in index["scheme_kids"]:
        plans.append(_plan_scheme(store.path / f"scheme-{int(kid)}.json", passphrase))
    store.open_secret(passphrase)  # the whole set opens under it, or nothing is written
    for plan in plans:
        if plan.new is None:
            continue
        try:
            write_private_file(plan.path, plan.new)
        except OSError as exc:
            raise KeyFileError(
                f"cannot write {plan.path.name} ({exc.strerror}): it is as it was; the files"
                " before it are re-sealed; run rekey again"
            ) from None
        if not _same_key(plan, passphrase):  # pragma: no cover - a broken disk or library
            raise KeyFileError(f"{plan.path.name}: the re-sealed file does not read back")
    files = [
        {
            "file": plan.path.name,
            "key": plan.kind,
            "was": "legacy (PBKDF2 PKCS#8)" if plan.legacy else "current (scrypt + AES-GCM)",
            "resealed": plan.new is not None,
        }
        for plan in plans
    ]
    return {
        "key_dir": str(store.path),
        "root_key": store.root_store(),
        "files": files,
        "resealed": sum(1 for f in files if f["resealed"]),
    }


__all__ = ["rekey"]
