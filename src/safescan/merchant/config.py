"""The POS configuration file: where the institution is, who the merchant is, its API key.

A JSON file (mode 0600, it holds the merchant's private API key)::

    {"institution_url": "http://127.0.0.1:8080",
     "merchant_id": "M...",
     "api_key": "<64 hex: Ed25519 seed>",
     "trust": {"1": "<64 hex: institution root public key>"},
     "currency": "EUR"}

Found at ``--config PATH``, else ``$SAFESCAN_POS_CONFIG``, else ``~/.config/safescan/pos.json``.
``trust`` pins the institution keys the POS accepts event and receipt signatures from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError
from safescan.code.keys import SigningKey
from safescan.remote import trust_from_json, trust_to_json

ENV_CONFIG = "SAFESCAN_POS_CONFIG"


class PosConfigError(SafescanError):
    """The POS configuration is missing or invalid."""

    code = "pos_config_error"


def default_path() -> Path:
    """``$SAFESCAN_POS_CONFIG`` or ``~/.config/safescan/pos.json``."""
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    return Path.home() / ".config" / "safescan" / "pos.json"


@dataclass
class PosConfig:
    """Everything a merchant terminal needs to talk to the institution."""

    institution_url: str
    merchant_id: str
    api_seed: bytes  # the 32-byte Ed25519 seed of the merchant's API key (secret)
    trust: TrustStore
    currency: str = "EUR"
    path: Path | None = field(default=None, compare=False)

    @property
    def api_key(self) -> SigningKey:
        """The merchant's API signing key."""
        return SigningKey.from_seed(self.api_seed)

    @property
    def journal_path(self) -> Path:
        """The POS's local order journal (next to the config file)."""
        base = self.path if self.path is not None else default_path()
        return base.with_name(base.stem + "-journal.sqlite3")

    def to_json(self) -> dict[str, Any]:
        """The file's contents."""
        return {
            "institution_url": self.institution_url,
            "merchant_id": self.merchant_id,
            "api_key": self.api_seed.hex(),
            "trust": trust_to_json(self.trust),
            "currency": self.currency,
        }

    def save(self, path: Path | None = None) -> Path:
        """Write the file atomically with mode 0600."""
        target = Path(path or self.path or default_path())
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        data = json.dumps(self.to_json(), indent=2).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        self.path = target
        return target

    @classmethod
    def load(cls, path: Path | None = None) -> PosConfig:
        """Read and check the file."""
        target = Path(path or default_path())
        try:
            doc = json.loads(target.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PosConfigError(
                f"no POS configuration at {target}: run `safescan pos onboard` or give --config"
            ) from None
        except (OSError, ValueError) as exc:
            raise PosConfigError(f"cannot read the POS configuration {target}: {exc}") from None
        if not isinstance(doc, dict):
            raise PosConfigError(f"{target} is not a JSON object")
        try:
            seed = bytes.fromhex(str(doc["api_key"]))
            SigningKey.from_seed(seed)
            return cls(
                institution_url=str(doc["institution_url"]),
                merchant_id=str(doc["merchant_id"]),
                api_seed=seed,
                trust=trust_from_json(doc["trust"]),
                currency=str(doc.get("currency", "EUR")),
                path=target,
            )
        except KeyError as exc:
            raise PosConfigError(f"{target} lacks the field {exc.args[0]!r}") from None
        except (ValueError, SafescanError):
            raise PosConfigError(f"{target}: api_key must be a 32-byte hex seed") from None
