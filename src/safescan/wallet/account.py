"""The wallet's view of the customer's account, and the carrier's PIN.

:func:`read_statement` asks the institution for the balances, payments and refunds, proving
possession of the key carrier (protocol: :mod:`safescan.api.account`); the answer is sealed to
a key this call makes and forgets. :func:`history_with_refunds` joins it to the wallet's own
verified receipts. :func:`change_pin` runs CHANGE PIN on the carrier.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safescan.api import account
from safescan.carrier import rom
from safescan.carrier.apdu import CommandApdu, Ins
from safescan.carrier.client import EXTENDED_NE
from safescan.carrier.errors import (
    CarrierBlocked,
    CarrierError,
    RestartRequired,
    WrongPin,
)
from safescan.carrier.pin import PinFormatError, check_pin
from safescan.client.errors import InstitutionProtocolError
from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import SafescanError
from safescan.wallet.errors import PaymentNotMade, WalletError
from safescan.wallet.flow import Wallet


class PinNotChanged(WalletError):
    """The PIN was not changed (wrong old PIN, bad new PIN, carrier unusable)."""

    code = "pin_not_changed"


def read_statement(wallet: Wallet) -> dict[str, Any]:
    """The customer's balances, payments and refunds, as the institution has them now."""
    serial = wallet.config.carrier_serial
    private = X25519PrivateKey.generate()
    wallet_key = private.public_key().public_bytes_raw()
    asked = wallet.api.account.challenge(serial, wallet_key)
    challenge, expires_at = asked.challenge, asked.expires_at
    trust, _ = wallet.trust()
    carrier = wallet.connect_carrier(trust)  # this wallet's carrier, authenticated
    try:
        carrier.select()  # ends the session; the proof runs in clear, like any handshake
        resp = carrier.transmit(
            CommandApdu(
                rom.CLA_PROPRIETARY, Ins.OPEN_SECURE_CHANNEL, 0, 0, challenge, ne=EXTENDED_NE
            )
        )
        carrier.check(resp, Ins.OPEN_SECURE_CHANNEL)  # typed error, with the card's reason
    except CarrierError as exc:
        raise PaymentNotMade(
            f"the key carrier did not answer the institution's challenge: {exc.message}",
            cause=exc.code,
        ) from None
    finally:
        carrier.close()
    blob = wallet.api.account.statement(serial, wallet_key, expires_at, resp.data).sealed
    doc = account.open_statement(blob, private, serial, expires_at)
    if doc.get("carrier_serial") != serial:
        raise InstitutionProtocolError("the statement is for another key carrier")
    return doc


def history_with_refunds(wallet: Wallet, limit: int, *, offline: bool = False) -> dict[str, Any]:
    """The wallet's verified receipts (newest first), each with the refunds the institution
    made on it (asked with the key carrier, as :func:`read_statement`).

    Returns ``{"payments", "refunds_checked"}`` and, when the refunds could not be asked (or
    ``offline``), ``refunds_error``: the receipts are then shown alone.
    """
    rows = wallet.history.recent(limit)
    refunds_error: str | None = "not asked (--offline)" if offline else None
    by_payment: dict[str, dict[str, Any]] = {}
    if rows and not offline:
        try:
            statement = read_statement(wallet)
            by_payment = {p["payment_id"]: p for p in statement.get("payments", [])}
        except SafescanError as exc:
            refunds_error = exc.message
    for r in rows:
        known = by_payment.get(r["payment_id"])
        r["refunds"] = known["refunds"] if known else []
        r["refunded"] = known["refunded"] if known else 0
        r["amount_display"] = lookup_currency(r["currency"]).format(r["amount"])
    doc: dict[str, Any] = {"payments": rows, "refunds_checked": refunds_error is None}
    if refunds_error:
        doc["refunds_error"] = refunds_error
    return doc


def change_pin(wallet: Wallet, old: str, new: str) -> None:
    """CHANGE PIN on this wallet's carrier: the new PIN's format is checked here first; the
    old PIN is checked by the carrier like any PIN entry (a wrong one spends a try)."""
    for label, value in (("current", old), ("new", new)):
        try:
            check_pin(value)
        except PinFormatError as exc:
            raise PinNotChanged(f"the {label} PIN is not valid: {exc}") from None
    if new == old:
        raise PinNotChanged("the new PIN is the same as the old one")
    trust, _ = wallet.trust()
    carrier = wallet.connect_carrier(trust)
    try:
        carrier.change_pin(old, new)
    except (WrongPin, RestartRequired):
        raise
    except CarrierBlocked:
        raise PinNotChanged(
            "wrong PIN too many times: the key carrier has destroyed its keys"
        ) from None
    except SafescanError as exc:
        raise PinNotChanged(f"the key carrier refused: {exc.message}") from None
    finally:
        carrier.close()
