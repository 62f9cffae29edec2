"""A key directory on disk: the institution signing key, scheme keys and the public trust file.

Layout (``safescan keys init DIR``)::

    DIR/institution-<kid>.key   Ed25519 signing key, sealed PKCS#8 (code/keyfile.py) (mode 0600)
    DIR/scheme-<kid>.key        X25519 scheme code key + id + retirement, encrypted (mode 0600)
    DIR/trust.json              public: institution keys and scheme public keys by id

Private keys are never written in clear; the passphrase comes from the caller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safescan.code.certs import TrustStore
from safescan.code.errors import KeyFileError
from safescan.code.keys import SchemeKey, SchemeKeyring, SchemePublicKey, SigningKey, VerifyKey

TRUST_FILE = "trust.json"


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
        (path / TRUST_FILE).write_text(json.dumps(trust_doc, indent=2) + "\n")
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


def load_trust_file(path: Path) -> tuple[TrustStore, dict[int, SchemePublicKey]]:
    """Parse a ``trust.json`` file."""
    try:
        doc: Any = json.loads(Path(path).read_text())
        if doc.get("type") != "safescan-trust":
            raise KeyFileError(f"{path} is not a safescan trust file")
        ikeys = {int(k): VerifyKey(bytes.fromhex(v)) for k, v in doc["institution_keys"].items()}
        skeys = {
            int(k): SchemePublicKey(int(k), bytes.fromhex(v))
            for k, v in doc.get("scheme_keys", {}).items()
        }
        revoked = frozenset(int(s) for s in doc.get("revoked", []))
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from exc
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        raise KeyFileError(f"{path} is corrupt") from exc
    return TrustStore(ikeys, revoked), skeys
