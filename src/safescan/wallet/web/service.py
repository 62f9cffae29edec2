"""The wallet app's service: one worker thread owns the wallet store and the key carrier.

The web pages never talk to the carrier or the institution themselves: every step goes through
:class:`WalletService`, which calls the same library as ``safescan wallet`` on the command line
(:mod:`safescan.wallet.flow`, :mod:`safescan.wallet.account`). All of it runs on a single
worker thread, so

* the carrier, which serves one host at a time, sees one command sequence at a time;
* the history database (SQLite) is used from the thread that opened it;
* a second "Pay" press waits for the first and then finds no offer left: one payment.

At most one offer is pending at a time (the carrier holds the opened code in its RAM on an
open session). It is closed when the customer pays or cancels, scans another code, runs another
carrier operation, or after :data:`OFFER_TIMEOUT` seconds (or the code's expiry, if sooner).

PINs pass through here as call arguments only: never logged, stored or put in an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from safescan.carrier import rom
from safescan.carrier.errors import RestartRequired, WrongPin
from safescan.code.certs import TrustStore
from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import InvalidAmount, SafescanError
from safescan.code.keys import parse_pinned_keys
from safescan.code.numbers import json_int
from safescan.wallet.account import change_pin, history_with_refunds, read_statement
from safescan.wallet.errors import (
    CodeRefusedByWallet,
    PaymentNotMade,
    WalletError,
    WalletNotEnrolled,
)
from safescan.wallet.flow import Offer, Wallet, classify, enroll
from safescan.wallet.scan import MAX_TEXT_INPUT

T = TypeVar("T")

OFFER_TIMEOUT = 300
"""Seconds an opened offer waits for the customer before the carrier session is closed."""

#: Errors after which no money can have moved (refused before the carrier signed).
_NOT_PAID_CODES = frozenset({"payment_not_made", "wallet_error", "wallet_request_invalid"})


class WalletRequestInvalid(WalletError):
    """A request to the wallet app is malformed or does not fit its state; nothing changed."""

    code = "wallet_request_invalid"


@dataclass
class PendingOffer:
    """An opened, verified code waiting for the customer's decision."""

    id: str
    offer: Offer
    doc: dict[str, Any]
    deadline: float


def _optional(doc: object, name: str, kind: type[T]) -> T | None:
    """``doc[name]`` if present (and of ``kind``: booleans are not integers), else None."""
    if not isinstance(doc, dict):
        raise WalletRequestInvalid("the request body must be a JSON object")
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise WalletRequestInvalid(f"{name!r} must be a {kind.__name__}")
    return value


def _required(doc: object, name: str, kind: type[T]) -> T:
    value = _optional(doc, name, kind)
    if value is None:
        raise WalletRequestInvalid(f"{name!r} is missing")
    return value


class WalletService:
    """The wallet in ``directory``, its carrier and its pending offer, on one worker thread."""

    def __init__(
        self,
        directory: Path,
        *,
        institution_url: str | None = None,
        carrier_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.defaults = {"institution_url": institution_url, "carrier_url": carrier_url}
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wallet-carrier")
        self._wallet: Wallet | None = None
        self._pending: PendingOffer | None = None
        self._thread: threading.Thread | None = None

    # --- running on the worker thread -----------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    def close(self) -> None:
        """Close the pending offer, the wallet, and stop the worker thread."""

        def shut() -> None:
            self._close_pending()
            if self._wallet is not None:
                self._wallet.close()
                self._wallet = None

        with contextlib.suppress(RuntimeError):
            self._pool.submit(shut).result(timeout=30)
        self._pool.shutdown(wait=True)

    def _check_thread(self) -> None:
        current = threading.current_thread()
        if self._thread is None:
            self._thread = current
        if current is not self._thread:
            raise RuntimeError("wallet operations run on the service's worker thread only")

    def _wallet_or_fail(self) -> Wallet:
        self._check_thread()
        if self._wallet is None:
            try:
                self._wallet = Wallet.load(self.directory)
            except WalletNotEnrolled:
                raise WalletNotEnrolled(
                    "this wallet has no key carrier yet: enroll first"
                ) from None
        return self._wallet

    def _close_pending(self) -> None:
        if self._pending is not None:
            self._pending.offer.close()
            self._pending = None

    # --- state and enrollment -------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Whether the wallet is enrolled, and with which institution and carrier."""
        self._check_thread()
        try:
            cfg = self._wallet_or_fail().config
        except WalletNotEnrolled:
            return {
                "enrolled": False,
                "defaults": dict(self.defaults),
                "pin_min": rom.PIN_MIN,
                "pin_max": rom.PIN_MAX,
            }
        return {
            "enrolled": True,
            "institution_url": cfg.institution_url,
            "carrier_url": cfg.carrier_url,
            "carrier_serial": cfg.carrier_serial,
            "customer_id": cfg.customer_id,
            "pin_min": rom.PIN_MIN,
            "pin_max": rom.PIN_MAX,
            "offer": self._pending.doc if self._pending is not None else None,
        }

    def enroll(self, doc: object) -> dict[str, Any]:
        """Register the blank carrier with a token and set its PIN (as ``wallet enroll``)."""
        self._check_thread()
        if (self.directory / "wallet.json").exists():
            raise WalletRequestInvalid("this wallet is already enrolled")
        keys = _optional(doc, "institution_keys", str)
        retry = _optional(doc, "retry_limit", int)
        try:
            pinned = TrustStore(parse_pinned_keys(keys.split())) if keys else None
        except SafescanError as exc:
            raise WalletRequestInvalid(exc.message) from None
        cfg = enroll(
            directory=self.directory,
            institution_url=_required(doc, "institution_url", str).strip(),
            carrier_url=_required(doc, "carrier_url", str).strip(),
            token=_required(doc, "token", str).strip(),
            pin=_required(doc, "pin", str),
            retry_limit=retry if retry is not None else rom.RETRY_LIMIT_DEFAULT,
            customer_id=_optional(doc, "customer_id", str) or None,
            trust=pinned,
        )
        self._wallet = Wallet(cfg)
        return {"enrolled": True, "carrier_serial": cfg.carrier_serial}

    # --- scanning and paying --------------------------------------------------------------

    def scan(self, doc: object) -> dict[str, Any]:
        """Classify a decoded text; open and verify a safescan code on the carrier.

        The answer's ``result`` is ``offer`` (with ``offer_id``), ``refused`` (with ``reason``:
        refused before any question), ``not_payable`` (an EMV code, a link, text: shown only)
        or ``error`` (the carrier or institution could not be used; nothing was paid).
        """
        text = _required(doc, "text", str)
        if len(text) > MAX_TEXT_INPUT:
            raise WalletRequestInvalid("the scanned text is too large to be a payment code")
        wallet = self._wallet_or_fail()
        self._close_pending()
        scanned = classify(text, now=wallet.now())
        if not scanned.payable:
            return {"result": "not_payable", "kind": scanned.kind, "info": scanned.info}
        try:
            offer = wallet.open(text)
        except CodeRefusedByWallet as exc:
            return {"result": "refused", "reason": exc.reason, "message": exc.message}
        except SafescanError as exc:
            return {"result": "error", "error": exc.to_dict()}
        doc_out = offer.describe()
        currency = doc_out.get("currency")
        doc_out["minor_units"] = lookup_currency(currency).minor_units if currency else None
        offer_id = secrets.token_urlsafe(16)
        doc_out["offer_id"] = offer_id
        expires = float(offer.contents.expires_at)
        deadline = min(self.clock() + OFFER_TIMEOUT, expires)
        self._pending = PendingOffer(offer_id, offer, doc_out, deadline)
        return {"result": "offer", "offer": doc_out}

    def _take_pending(self, offer_id: str) -> PendingOffer:
        self._check_thread()
        self.expire()
        pending = self._pending
        if pending is None or not secrets.compare_digest(pending.id, offer_id):
            raise WalletRequestInvalid(
                "this offer is no longer open (paid, cancelled, expired or replaced): scan again"
            )
        return pending

    def pay(self, offer_id: str, doc: object) -> dict[str, Any]:
        """Check the PIN on the carrier, sign, pay, verify the receipt.

        ``result``: ``paid`` (with the verified ``payment``), ``wrong_pin`` (``retries_left``;
        the offer stays open), or ``error`` with ``outcome`` ``not_paid`` (certain: nothing
        was signed or sent) or ``unknown`` (ask ``history``/the institution later).
        """
        pending = self._take_pending(offer_id)
        pin = _required(doc, "pin", str)
        amount = _optional(doc, "amount", int)
        if amount is not None:
            try:
                amount = json_int(amount, field="the amount")
            except InvalidAmount as exc:
                raise WalletRequestInvalid(exc.message) from None
        offer = pending.offer
        try:
            offer.verify_pin(pin)
        except WrongPin as exc:
            left = exc.retries_left
            if left == 0:
                self._close_pending()
            return {"result": "wrong_pin", "retries_left": left}
        except RestartRequired as exc:
            self._close_pending()
            error = PaymentNotMade(exc.message, cause=exc.code)
            return {"result": "error", "outcome": "not_paid", "error": error.to_dict()}
        except SafescanError as exc:
            self._close_pending()
            return {"result": "error", "outcome": "not_paid", "error": exc.to_dict()}
        self._pending = None  # whatever happens next, this offer is used up
        try:
            paid = offer.pay(None, amount=amount if pending.doc["kind"] == "static" else None)
        except SafescanError as exc:
            outcome = "not_paid" if exc.code in _NOT_PAID_CODES else "unknown"
            return {"result": "error", "outcome": outcome, "error": exc.to_dict()}
        finally:
            offer.close()
        return {"result": "paid", "payment": paid.to_json()}

    def cancel(self, offer_id: str) -> dict[str, Any]:
        """The customer declined: close the carrier session; nothing was paid."""
        self._take_pending(offer_id)
        self._close_pending()
        return {"result": "cancelled"}

    def expire(self) -> None:
        """Close a pending offer past its deadline."""
        self._check_thread()
        if self._pending is not None and self.clock() >= self._pending.deadline:
            self._close_pending()

    # --- account and carrier --------------------------------------------------------------

    def history(self, limit: int = 50) -> dict[str, Any]:
        """Verified receipts, newest first, with the refunds the institution made on them."""
        wallet = self._wallet_or_fail()
        self._close_pending()
        return history_with_refunds(wallet, limit)

    def balance(self) -> dict[str, Any]:
        """Balances, payments and refunds, proven with the carrier (no PIN needed)."""
        wallet = self._wallet_or_fail()
        self._close_pending()
        return read_statement(wallet)

    def status(self) -> dict[str, Any]:
        """Institution keys, revocation list, the carrier's counters and PIN tries left."""
        wallet = self._wallet_or_fail()
        self._close_pending()
        return wallet.status()

    def change_pin(self, doc: object) -> dict[str, Any]:
        """CHANGE PIN on the carrier; a wrong current PIN spends a try."""
        wallet = self._wallet_or_fail()
        self._close_pending()
        old, new = _required(doc, "old", str), _required(doc, "new", str)
        try:
            change_pin(wallet, old, new)
        except WrongPin as exc:
            return {"result": "wrong_pin", "retries_left": exc.retries_left}
        except RestartRequired as exc:
            return {"result": "error", "error": exc.to_dict()}
        return {"result": "changed"}
