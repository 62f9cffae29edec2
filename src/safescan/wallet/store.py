"""The wallet's files: its configuration (JSON) and its payment history (SQLite).

A wallet directory (``--wallet-dir``, else ``$SAFESCAN_WALLET_DIR``, else
``~/.local/share/safescan/wallet``) holds::

    wallet.json        institution URL, carrier URL, pinned institution keys, customer id,
                       carrier serial (no secrets: the keys live in the key carrier)
    crl.cbor           the last signed revocation list fetched (used when offline)
    history.sqlite3    verified receipts of the payments made
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safescan.code.authorization import Receipt
from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError
from safescan.remote import trust_from_json, trust_to_json
from safescan.wallet.errors import WalletError, WalletNotEnrolled

ENV_WALLET_DIR = "SAFESCAN_WALLET_DIR"


def default_dir() -> Path:
    """``$SAFESCAN_WALLET_DIR`` or ``~/.local/share/safescan/wallet``."""
    env = os.environ.get(ENV_WALLET_DIR)
    return Path(env) if env else Path.home() / ".local" / "share" / "safescan" / "wallet"


@dataclass
class WalletConfig:
    """Where the institution and the key carrier are, and whom to trust."""

    institution_url: str
    carrier_url: str
    trust: TrustStore
    carrier_serial: int
    customer_id: str | None = None
    directory: Path = field(default_factory=default_dir)

    @property
    def history_path(self) -> Path:
        """The history database."""
        return self.directory / "history.sqlite3"

    @property
    def crl_path(self) -> Path:
        """The cached revocation list."""
        return self.directory / "crl.cbor"

    def save(self) -> Path:
        """Write ``wallet.json`` atomically."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.directory / "wallet.json"
        doc = {
            "institution_url": self.institution_url,
            "carrier_url": self.carrier_url,
            "trust": trust_to_json(self.trust),
            "carrier_serial": self.carrier_serial,
            "customer_id": self.customer_id,
        }
        tmp = target.with_name("wallet.json.tmp")
        tmp.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        os.replace(tmp, target)
        return target

    @classmethod
    def load(cls, directory: Path | None = None) -> WalletConfig:
        """Read ``wallet.json``."""
        base = Path(directory or default_dir())
        path = base / "wallet.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise WalletNotEnrolled(
                f"no wallet in {base}: run `safescan wallet enroll` first"
            ) from None
        except (OSError, ValueError) as exc:
            raise WalletError(f"cannot read {path}: {exc}") from None
        try:
            return cls(
                institution_url=str(doc["institution_url"]),
                carrier_url=str(doc["carrier_url"]),
                trust=trust_from_json(doc["trust"]),
                carrier_serial=int(doc["carrier_serial"]),
                customer_id=doc.get("customer_id"),
                directory=base,
            )
        except (KeyError, TypeError, ValueError, SafescanError) as exc:
            raise WalletError(f"{path} is not a valid wallet configuration ({exc})") from None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    payment_id    TEXT PRIMARY KEY,
    paid_at       INTEGER NOT NULL,
    merchant_id   TEXT NOT NULL,
    merchant_name TEXT NOT NULL,
    merchant_city TEXT NOT NULL,
    order_id      TEXT NOT NULL,
    amount        INTEGER NOT NULL,
    currency      INTEGER NOT NULL,
    items         TEXT NOT NULL,
    code_digest   TEXT NOT NULL,
    receipt       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_digest ON payments (code_digest);
"""


class History:
    """Verified receipts, newest first."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=5)
            self.db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise WalletError(f"cannot open the payment history {path}: {exc}") from None

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def add(
        self,
        receipt: Receipt,
        *,
        merchant_name: str,
        merchant_city: str,
        items: list[list[Any]],
    ) -> None:
        """Store a verified receipt."""
        try:
            with self.db:
                self.db.execute(
                    "INSERT OR IGNORE INTO payments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        receipt.payment_id,
                        receipt.paid_at,
                        receipt.merchant_id,
                        merchant_name,
                        merchant_city,
                        receipt.order_id,
                        receipt.amount,
                        receipt.currency,
                        json.dumps(items, ensure_ascii=False),
                        receipt.code_digest.hex(),
                        base64.b64encode(receipt.to_bytes()).decode("ascii"),
                    ),
                )
        except sqlite3.Error as exc:
            raise WalletError(f"cannot write the payment history: {exc}") from None

    def paid_code(self, digest: bytes) -> str | None:
        """The payment id if this exact code was already paid from this wallet."""
        row = self.db.execute(
            "SELECT payment_id FROM payments WHERE code_digest = ?", (digest.hex(),)
        ).fetchone()
        return str(row[0]) if row else None

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest payments first."""
        cols = [
            "payment_id",
            "paid_at",
            "merchant_id",
            "merchant_name",
            "merchant_city",
            "order_id",
            "amount",
            "currency",
            "items",
        ]
        rows = self.db.execute(
            f"SELECT {', '.join(cols)} FROM payments ORDER BY paid_at DESC LIMIT ?",  # noqa: S608
            (limit,),
        ).fetchall()
        out = []
        for row in rows:
            doc = dict(zip(cols, row, strict=True))
            doc["items"] = json.loads(doc["items"])
            out.append(doc)
        return out
