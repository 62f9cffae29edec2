"""`safescan institution rekey`: re-seal every private key file of the institution in the
current format (scrypt + AES-256-GCM, :mod:`safescan.code.keyfile`), under the same passphrase
or, with ``--new-passphrase-file``, under a new one.

The files: ``root-<kid>.pem`` (unless the root key is in a PKCS#11 token), every
``scheme-<kid>.json``, ``secret.json`` (always scrypt + AES-GCM: rewritten only for a new
passphrase) and the TLS CA key ``<key dir>.tls/ca.key`` when ``init`` made one (a clear one
from an older release is sealed now). Each must open under the current passphrase *before*
anything is written (a wrong passphrase, a file under another passphrase or a damaged file is
a :class:`~safescan.code.errors.KeyFileError` and changes nothing); then they are rewritten
all or nothing (:func:`safescan.code.rekeying.rewrite`: a failure, or a kill at any moment,
leaves every file as it was; the next load puts back what a killed run left). Running it again
with the same passphrase has nothing to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safescan.api.errors import ConfigError
from safescan.code.errors import KeyFileError
from safescan.code.keyfile import is_legacy, is_sealed
from safescan.code.rekeying import Rewrite, recover_if_interrupted, rewrite
from safescan.code.resealing import reseal_file
from safescan.code.smallfile import FILE_LIMIT, read_bounded
from safescan.institution.keystore import KeyStore
from safescan.institution.tls_setup import default_tls_dir


def _read(path: Path) -> bytes:
    try:
        return read_bounded(path, FILE_LIMIT, "a key file")  # before: read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None


def _was(data: bytes) -> str:
    if is_legacy(data) or (data.lstrip().startswith(b"{") and b"BEGIN ENCRYPTED" in data):
        return "legacy (PBKDF2 PKCS#8)"
    if data.lstrip().startswith(b"-----BEGIN") and not is_sealed(data):
        return "clear (an older release's CA key)"
    return "current (scrypt + AES-GCM)"


def _ca_key(key_dir: Path, old: bytes, new: bytes) -> tuple[Path, bytes, bytes | None] | None:
    """The TLS CA key ``init`` made, if any: (path, bytes, new bytes or None)."""
    from safescan.web.pki import ca_key_file, load_ca_key

    tls = default_tls_dir(key_dir)
    path = tls.ca_key
    if not path.is_file():
        return None
    recover_if_interrupted(tls.path)
    data = _read(path)
    if is_sealed(data):
        return path, data, reseal_file(path, data, old, new)
    key = load_ca_key(tls, None)  # a clear PEM (an older release): sealed now
    return path, data, ca_key_file(key, new)


def rekey(key_dir: Path, passphrase: bytes, new_passphrase: bytes | None = None) -> dict[str, Any]:
    """Re-seal the institution's key files (module docstring); returns, per file, what it was
    and whether it was rewritten."""
    store = KeyStore(key_dir)
    if not store.exists():
        raise ConfigError(f"no institution keys in {key_dir} (run init first)")
    recover_if_interrupted(store.path)
    new = passphrase if new_passphrase is None else new_passphrase
    index = store._index()  # bounded, strict, key ids checked (before: read_text, json.loads)
    plans: list[tuple[Path, str, bytes, bytes | None]] = []
    paths: list[tuple[Path, str]] = []
    if store.root_store() == "file":
        paths.append((store.path / f"root-{int(index['root_kid'])}.pem", "root"))
    paths += [(store.path / f"scheme-{int(kid)}.json", "scheme") for kid in index["scheme_kids"]]
    for path, kind in paths:
        data = _read(path)
        plans.append((path, kind, data, reseal_file(path, data, passphrase, new)))
    secret = store.path / "secret.json"
    data = _read(secret)
    resealed = store.reseal_secret(data, passphrase, new)  # opens under the passphrase, or raises
    plans.append((secret, "secret", data, resealed if new != passphrase else None))
    ca = _ca_key(store.path, passphrase, new)
    if ca is not None:
        plans.append((ca[0], "tls-ca", ca[1], ca[2]))
    rewrite(store.path, [Rewrite(p, old, out) for p, _, old, out in plans if out is not None])
    files = [
        {
            "file": path.name if path.parent == store.path else f"{path.parent.name}/{path.name}",
            "key": kind,
            "was": _was(old),
            "resealed": out is not None,
        }
        for path, kind, old, out in plans
    ]
    return {
        "key_dir": str(store.path),
        "root_key": store.root_store(),
        "passphrase": "changed" if new != passphrase else "unchanged",
        "files": files,
        "resealed": sum(1 for f in files if f["resealed"]),
    }


__all__ = ["rekey"]
