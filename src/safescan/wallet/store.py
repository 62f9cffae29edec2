"""The wallet's files: its configuration (JSON) and its payment history (SQLite).

A wallet directory (``--wallet-dir``, else ``$SAFESCAN_WALLET_DIR``, else
``~/.local/share/safescan/wallet``) holds::

    wallet.json        institution URL, carrier URL, pinned institution keys, customer id,
                       carrier serial (no secrets: the keys live in the key carrier)
    crl.cbor           the last signed revocation list fetched (used when offline)
    trusted-time       the newest institution-signed time verified and device time seen: the
                       clock the list's freshness is judged by (safescan.code.timefloor)
    history.sqlite3    verified receipts of the payments made, and the payments whose outcome
                       is not known yet (sent, unanswered: kept until the institution says)
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safescan.client.trust import trust_from_json, trust_to_json
from safescan.code import strictjson
from safescan.code.atomicfile import write_atomic
from safescan.code.authorization import Receipt
from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError
from safescan.code.numbers import json_int
from safescan.code.smallfile import read_bounded
from safescan.wallet.errors import WalletError, WalletNotEnrolled
from safescan.web.pki import ca_from_pem, pin_ca

ENV_WALLET_DIR = "SAFESCAN_WALLET_DIR"


def default_dir() -> Path:
    """``$SAFESCAN_WALLET_DIR``, else ``[wallet] dir`` of the settings file
    (``$SAFESCAN_WALLET_CONFIG``, see :mod:`safescan.wallet.settings`), else
    ``~/.local/share/safescan/wallet``."""
    env = os.environ.get(ENV_WALLET_DIR)
    if env:
        return Path(env)
    if os.environ.get("SAFESCAN_WALLET_CONFIG"):
        from safescan.wallet.settings import configured_dir

        configured = configured_dir()
        if configured is not None:
            return configured
    return Path.home() / ".local" / "share" / "safescan" / "wallet"


@dataclass
class WalletConfig:
    """Where the institution and the key carrier are, and whom to trust."""

    institution_url: str
    carrier_url: str
    trust: TrustStore
    carrier_serial: int
    customer_id: str | None = None
    directory: Path = field(default_factory=default_dir)
    tls_ca: str | None = None  # PEM of the CA pinned for the institution's HTTPS (enroll)

    def pin(self) -> None:
        """Verify this process's connections to the institution with :attr:`tls_ca` only."""
        if self.tls_ca is not None:
            pin_ca(self.institution_url, ca_from_pem(self.tls_ca, "tls_ca"))

    @property
    def history_path(self) -> Path:
        """The history database."""
        return self.directory / "history.sqlite3"

    @property
    def crl_path(self) -> Path:
        """The cached revocation list."""
        return self.directory / "crl.cbor"

    def save(self) -> Path:
        """Write ``wallet.json`` whole or not at all (owner-only, fsync'd: the pinned keys
        and CA decide whom this wallet trusts)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.directory / "wallet.json"
        doc = {
            "institution_url": self.institution_url,
            "carrier_url": self.carrier_url,
            "trust": trust_to_json(self.trust),
            "carrier_serial": self.carrier_serial,
            "customer_id": self.customer_id,
            **({"tls_ca": self.tls_ca} if self.tls_ca is not None else {}),
        }
        write_atomic(target, json.dumps(doc, indent=2).encode("utf-8"))
        return target

    @classmethod
    def load(cls, directory: Path | None = None) -> WalletConfig:
        """Read ``wallet.json``."""
        base = Path(directory or default_dir())
        path = base / "wallet.json"
        try:
            doc = strictjson.loads(read_bounded(path))
        except FileNotFoundError:
            raise WalletNotEnrolled(
                f"no wallet in {base}: run `safescan wallet enroll` first"
            ) from None
        except (OSError, ValueError) as exc:
            raise WalletError(f"cannot read {path}: {exc}") from None
        if not isinstance(doc, dict):
            raise WalletError(f"{path} is not a valid wallet configuration (not a JSON object)")
        try:
            ca = doc.get("tls_ca")
            config = cls(
                institution_url=str(doc["institution_url"]),
                carrier_url=str(doc["carrier_url"]),
                trust=trust_from_json(doc["trust"]),
                carrier_serial=json_int(
                    doc["carrier_serial"], field="carrier_serial", minimum=0, maximum=2**64 - 1
                ),
                customer_id=doc.get("customer_id"),
                directory=base,
                tls_ca=None if ca is None else str(ca),
            )
            config.pin()
            return config
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
CREATE TABLE IF NOT EXISTS pending (
    idempotency_key TEXT PRIMARY KEY,
    created_at      INTEGER NOT NULL,
    code_text       TEXT NOT NULL,
    authorization   TEXT NOT NULL,
    merchant_id     TEXT NOT NULL,
    merchant_name   TEXT NOT NULL,
    merchant_city   TEXT NOT NULL,
    order_id        TEXT NOT NULL,
    amount          INTEGER NOT NULL,
    currency        INTEGER NOT NULL,
    items           TEXT NOT NULL,
    code_digest     TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class PendingPayment:
    """A payment sent (or about to be) whose outcome the wallet does not know yet: what is
    needed to ask the institution (the code, the carrier's authorization, the key) and to check
    the receipt it may answer with (merchant, order, amount, currency, code digest)."""

    idempotency_key: str
    created_at: int
    code_text: str
    authorization: bytes
    merchant_id: str
    merchant_name: str
    merchant_city: str
    order_id: str
    amount: int
    currency: int
    items: list[list[Any]]
    code_digest: bytes

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (without the authorization)."""
        return {
            "idempotency_key": self.idempotency_key,
            "created_at": self.created_at,
            "merchant_id": self.merchant_id,
            "merchant_name": self.merchant_name,
            "order_id": self.order_id,
            "amount": self.amount,
            "currency": self.currency,
        }


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
        pending_key: str | None = None,
    ) -> None:
        """Store a verified receipt (and forget the pending payment it settles, atomically)."""
        try:
            with self.db:
                if pending_key is not None:
                    self.db.execute("DELETE FROM pending WHERE idempotency_key = ?", (pending_key,))
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

    def add_pending(self, p: PendingPayment) -> None:
        """Remember a payment before it is sent (so a lost answer can be looked up later)."""
        try:
            with self.db:
                self.db.execute(
                    "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        p.idempotency_key,
                        p.created_at,
                        p.code_text,
                        base64.b64encode(p.authorization).decode("ascii"),
                        p.merchant_id,
                        p.merchant_name,
                        p.merchant_city,
                        p.order_id,
                        p.amount,
                        p.currency,
                        json.dumps(p.items, ensure_ascii=False),
                        p.code_digest.hex(),
                    ),
                )
        except sqlite3.Error as exc:
            raise WalletError(f"cannot write the payment history: {exc}") from None

    def drop_pending(self, key: str) -> None:
        """Forget a pending payment whose outcome is now known (not charged)."""
        try:
            with self.db:
                self.db.execute("DELETE FROM pending WHERE idempotency_key = ?", (key,))
        except sqlite3.Error as exc:
            raise WalletError(f"cannot write the payment history: {exc}") from None

    def pending(self, digest: bytes | None = None) -> list[PendingPayment]:
        """Payments whose outcome is not known yet (of one code, with ``digest``), oldest
        first."""
        query = "SELECT * FROM pending"
        args: tuple[Any, ...] = ()
        if digest is not None:
            query += " WHERE code_digest = ?"
            args = (digest.hex(),)
        rows = self._rows(query + " ORDER BY created_at, idempotency_key", args)
        try:
            return [self._pending_of(r) for r in rows]
        except (ValueError, TypeError, IndexError) as exc:  # a row edited outside the wallet
            raise WalletError(
                f"the payment history holds a damaged pending payment: {exc}"
            ) from None

    def _rows(self, query: str, args: tuple[Any, ...]) -> list[Any]:
        """``query``'s rows; :class:`WalletError` when the history cannot be read (another
        process holds it locked, the file or its tables are damaged or replaced)."""
        try:
            return self.db.execute(query, args).fetchall()
        except sqlite3.Error as exc:
            raise WalletError(f"cannot read the payment history: {exc}") from None

    @staticmethod
    def _pending_of(r: Any) -> PendingPayment:
        return PendingPayment(
            idempotency_key=r[0],
            created_at=int(r[1]),
            code_text=r[2],
            authorization=base64.b64decode(r[3]),
            merchant_id=r[4],
            merchant_name=r[5],
            merchant_city=r[6],
            order_id=r[7],
            amount=int(r[8]),
            currency=int(r[9]),
            items=json.loads(r[10]),
            code_digest=bytes.fromhex(r[11]),
        )

    def paid_code(self, digest: bytes) -> str | None:
        """The payment id if this exact code was already paid from this wallet."""
        rows = self._rows("SELECT payment_id FROM payments WHERE code_digest = ?", (digest.hex(),))
        return str(rows[0][0]) if rows else None

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
        rows = self._rows(
            f"SELECT {', '.join(cols)} FROM payments ORDER BY paid_at DESC LIMIT ?",  # noqa: S608
            (limit,),
        )
        out = []
        try:
            for row in rows:
                doc = dict(zip(cols, row, strict=True))
                doc["items"] = json.loads(doc["items"])
                out.append(doc)
        except (ValueError, TypeError) as exc:  # a row edited outside the wallet
            raise WalletError(f"the payment history holds a damaged payment: {exc}") from None
        return out
