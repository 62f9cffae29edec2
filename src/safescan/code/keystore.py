"""A key directory on disk: the institution signing key, scheme keys and the public trust file.

Layout (``safescan keys init DIR``)::

    DIR/institution-<kid>.key   Ed25519 signing key, sealed PKCS#8 (code/keyfile.py) (mode 0600)
    DIR/scheme-<kid>.key        X25519 scheme code key + id + retirement, encrypted (mode 0600)
    DIR/trust.json              public: institution keys and scheme public keys by id

Private keys are never written in clear; the passphrase comes from the caller.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safescan.code import strictjson
from safescan.code.atomicfile import write_atomic
from safescan.code.certs import TrustStore
from safescan.code.errors import KeyFileError, SafescanError
from safescan.code.keys import SchemeKey, SchemeKeyring, SchemePublicKey, SigningKey, VerifyKey
from safescan.code.numbers import canonical_int, json_int
from safescan.code.smallfile import read_bounded

TRUST_FILE = "trust.json"
#: the most a trust file may hold (a few keys of ~70 bytes each and a revocation list)
TRUST_LIMIT = 1 << 20
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


@dataclass
class KeyDirectory:
    """Keys loaded from a key directory."""

    path: Path
    trust: TrustStore
    scheme_public: dict[int, SchemePublicKey]

    @classmethod
    def create(cls, path: Path, passphrase: bytes, *, kid: int = 1) -> KeyDirectory:
        """Generate an institution key and a first scheme key in a new directory."""
        path.mkdir(parents=True, exist_ok=True)
        if (path / TRUST_FILE).exists():
            raise KeyFileError(f"{path} already holds keys; refusing to overwrite them")
        ik = SigningKey.generate()
        sk = SchemeKey.generate(kid)
        ik.save(path / f"institution-{kid}.key", passphrase)
        sk.save(path / f"scheme-{kid}.key", passphrase)
        trust_doc = {
            "type": "safescan-trust",
            "institution_keys": {str(kid): ik.public_key.hex()},
            "scheme_keys": {str(kid): sk.public.raw.hex()},
            "revoked": [],
        }
        write_trust_doc(path / TRUST_FILE, trust_doc)
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> KeyDirectory:
        """Read the public trust file of a key directory."""
        trust, scheme = load_trust_file(path / TRUST_FILE)
        return cls(path, trust, scheme)

    def institution_key(self, kid: int, passphrase: bytes) -> SigningKey:
        """Decrypt the institution signing key ``kid``."""
        return SigningKey.load(self.path / f"institution-{kid}.key", passphrase)

    def keyring(self, passphrase: bytes) -> SchemeKeyring:
        """Decrypt every scheme key in the directory."""
        ring = SchemeKeyring()
        for file in sorted(self.path.glob("scheme-*.key")):
            ring.add(SchemeKey.load(file, passphrase))
        if not ring.keys:
            raise KeyFileError(f"no scheme keys in {self.path}")
        return ring


def write_trust_doc(path: Path, doc: dict[str, Any]) -> None:
    """Write a ``trust.json`` document atomically (0644: it is public), never through a link
    planted at ``path`` (before: ``write_text`` wrote through one)."""
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o644)


def read_trust_doc(path: Path) -> dict[str, Any]:
    """The JSON object of a ``trust.json`` file: at most :data:`TRUST_LIMIT` bytes
    (``smallfile.read_bounded``), read by the strict rule (``code.strictjson``: a key named
    twice, a lone surrogate, a non-finite number refused); else :class:`KeyFileError`."""
    try:
        doc = strictjson.loads(read_bounded(Path(path), TRUST_LIMIT, "a trust file"))
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from exc
    except strictjson.StrictJSONError as exc:
        raise KeyFileError(f"{path} is corrupt: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("type") != "safescan-trust":
        raise KeyFileError(f"{path} is not a safescan trust file")
    return doc


def _public_keys(path: Path, doc: object, what: str) -> dict[int, bytes]:
    """``{"kid": "64 hex digits"}``: each id in its one spelling (``"01"`` or ``" 1"`` would
    name key 1 a second time, the last one winning), each key 32 bytes in hex."""
    if not isinstance(doc, dict):
        raise KeyFileError(f"{path} is corrupt: its {what}s are not an object")
    out: dict[int, bytes] = {}
    for kid, hexkey in doc.items():
        try:
            n = canonical_int(kid, field=f"the {what} id")
        except SafescanError as exc:
            raise KeyFileError(f"{path} is corrupt: {exc.message}") from None
        if not isinstance(hexkey, str) or not _HEX_KEY.fullmatch(hexkey):
            raise KeyFileError(f"{path} is corrupt: {what} {n} is not 64 hex digits")
        out[n] = bytes.fromhex(hexkey)
    return out


def load_trust_file(path: Path) -> tuple[TrustStore, dict[int, SchemePublicKey]]:
    """Parse a ``trust.json`` file (:func:`read_trust_doc`); :class:`KeyFileError`."""
    doc = read_trust_doc(path)
    ikeys = _public_keys(path, doc.get("institution_keys"), "institution key")
    skeys = _public_keys(path, doc.get("scheme_keys", {}), "scheme key")
    revoked = doc.get("revoked", [])
    if not isinstance(revoked, list):
        raise KeyFileError(f"{path} is corrupt: its revoked serials are not a list")
    try:
        serials = frozenset(
            json_int(s, field="a revoked serial", minimum=0, maximum=2**64 - 1) for s in revoked
        )
        return TrustStore({k: VerifyKey(v) for k, v in ikeys.items()}, serials), {
            k: SchemePublicKey(k, v) for k, v in skeys.items()
        }
    except SafescanError as exc:
        raise KeyFileError(f"{path} is corrupt: {exc.message}") from exc
