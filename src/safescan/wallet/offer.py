"""The customer's decision on a verified code: :class:`Offer` (PIN, the carrier's signature,
the payment sent until its outcome is known, the receipt verified) and the :class:`Payment`
it ends in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from safescan.carrier.client import CarrierClient, CodeContents
from safescan.carrier.errors import (
    CarrierBlocked,
    CarrierError,
    ConfirmationDeclined,
    ConfirmationPending,
    RestartRequired,
    TransportError,
    WrongPin,
)
from safescan.code.attestation import CarrierModel
from safescan.code.authorization import Receipt
from safescan.code.currency import currency as lookup_currency
from safescan.code.payment import CodeKind
from safescan.wallet import pending
from safescan.wallet.errors import PaymentNotMade, WalletError
from safescan.wallet.scan import describe_contents
from safescan.wallet.store import PendingPayment

if TYPE_CHECKING:
    from safescan.wallet.flow import Wallet


@dataclass(frozen=True)
class Payment:
    """A completed payment with its verified receipt."""

    receipt: Receipt
    merchant_name: str
    merchant_city: str
    amount_display: str
    authorization: bytes = b""  # what went over the wire (public once submitted)
    #: why the verified payment is not in this wallet's history (None: it is). The payment
    #: was made all the same; it stays pending, so this code cannot be paid again from here
    #: and ``safescan wallet pending`` stores the receipt once the history can be written.
    history_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        r = self.receipt
        return {
            "payment_id": r.payment_id,
            "order_id": r.order_id,
            "merchant_id": r.merchant_id,
            "merchant_name": self.merchant_name,
            "merchant_city": self.merchant_city,
            "amount": r.amount,
            "currency": lookup_currency(r.currency).alpha,
            "amount_display": self.amount_display,
            "paid_at": r.paid_at,
            "payer_pseudonym": r.payer_pseudonym,
            "receipt_verified": True,
            "issuer_kid": r.issuer_kid,
            "history_saved": self.history_error is None,
        } | ({} if self.history_error is None else {"history_error": self.history_error})


class Offer:
    """A code the carrier opened and every check passed: ready for the customer's decision.

    The carrier keeps the code pending in its RAM, on this open session; :meth:`pay` must run
    before :meth:`close`.
    """

    def __init__(
        self,
        wallet: Wallet,
        carrier: CarrierClient,
        text: str,
        contents: CodeContents,
        *,
        notices: list[str] | None = None,
        carrier_model: CarrierModel = CarrierModel.PLAIN,
    ) -> None:
        self.wallet = wallet
        self.carrier = carrier
        self.text = text
        self.contents = contents
        self.notices = list(notices or [])
        self.carrier_model = carrier_model  # about this carrier session, shown as warnings

    def __enter__(self) -> Offer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the carrier session (a pending code is forgotten)."""
        self.carrier.close()

    def describe(self) -> dict[str, Any]:
        """What the customer is shown."""
        doc = describe_contents(self.contents, now=self.wallet.trusted_now())
        doc["warnings"] += self.notices
        # a display carrier shows the payment itself: the customer checks it there
        doc["carrier_display"] = self.carrier_model is CarrierModel.DISPLAY
        return doc

    def verify_pin(self, pin: str) -> None:
        """Check the PIN on the carrier (``WrongPin`` with ``retries_left``, ``CarrierBlocked``)."""
        try:
            self.carrier.verify_pin(pin)
        except (WrongPin, RestartRequired):
            raise
        except CarrierBlocked:
            raise PaymentNotMade(
                "wrong PIN too many times: the key carrier has destroyed its keys",
                cause="carrier_blocked",
            ) from None
        except TransportError as exc:
            raise PaymentNotMade(
                f"the key carrier stopped answering: {exc.message}; no payment was made",
                cause=exc.code,
            ) from None
        except CarrierError as exc:
            raise PaymentNotMade(
                f"the key carrier refused the PIN: {exc.message}", cause=exc.code
            ) from None

    def pay(
        self,
        pin: str | None,
        *,
        amount: int | None = None,
        currency: int | None = None,
        confirm_timeout: float = 120.0,
        on_confirm: Callable[[], None] | None = None,
    ) -> Payment:
        """Verify the PIN (unless already done), sign on the carrier, pay, verify the receipt.

        ``amount`` (and ``currency`` if the code fixes none) are for static codes only. A
        display carrier shows the payment on its own screen and signs only after its OK button:
        ``on_confirm`` is called once to tell the customer, who has ``confirm_timeout`` seconds.
        """
        c = self.contents
        if c.kind is CodeKind.DYNAMIC:
            if amount is not None and amount != c.total:
                raise WalletError("a dynamic code's amount is fixed by the merchant")
            pay_amount, pay_currency = c.total, c.currency
        else:
            if amount is None:
                raise WalletError("this is a static code: enter the amount to pay")
            pay_amount = amount
            pay_currency = c.currency if c.currency is not None else currency
            if c.currency is not None and currency is not None and currency != c.currency:
                raise WalletError("this code fixes the currency")
        if pay_amount is None or pay_currency is None:
            raise WalletError("the amount and currency to pay are not known")
        if pin is not None:
            self.verify_pin(pin)
        try:
            auth = self.carrier.authorize(
                merchant_id=c.merchant.id,
                amount=pay_amount,
                currency=pay_currency,
                confirm_timeout=confirm_timeout,
                on_pending=on_confirm,
            )
        except ConfirmationDeclined:
            raise PaymentNotMade(
                "you declined the payment on your key carrier; nothing was charged",
                cause="confirmation_declined",
            ) from None
        except ConfirmationPending:
            raise PaymentNotMade(
                "the payment was not confirmed on the key carrier in time; nothing was charged",
                cause="confirmation_timeout",
            ) from None
        except TransportError as exc:
            raise PaymentNotMade(
                f"the key carrier stopped answering before it signed: {exc.message};"
                " no payment was made",
                cause=exc.code,
            ) from None
        except CarrierError as exc:
            raise PaymentNotMade(
                f"the key carrier did not sign: {exc.message}; no payment was made",
                cause=exc.code,
            ) from None
        raw = auth.to_bytes()
        p = PendingPayment(
            idempotency_key=pending.idempotency_key(raw),
            created_at=self.wallet.now(),
            code_text=self.text,
            authorization=raw,
            merchant_id=c.merchant.id,
            merchant_name=c.merchant.name,
            merchant_city=c.merchant.city,
            order_id=c.order_id or "",
            amount=pay_amount,
            currency=pay_currency,
            items=[i.to_cbor() for i in c.items],
            code_digest=c.digest,
        )
        try:
            self.wallet.history.add_pending(p)  # before sending: a lost answer can be looked up
        except WalletError as exc:
            raise PaymentNotMade(
                f"{exc.message}; the payment was not sent, no payment was made",
                cause=exc.code,
            ) from None
        try:
            answer = self.wallet.pay_authorization(p)
        except PaymentNotMade as exc:
            try:
                self.wallet.history.drop_pending(p.idempotency_key)  # certain: nothing charged
            except WalletError as failed:  # the outcome is still certain: say both
                raise PaymentNotMade(
                    f"{exc.message} (and the wallet could not update its history:"
                    f" {failed.message})",
                    cause=exc.cause,
                ) from None
            raise
        return self.wallet._keep(p, answer)
