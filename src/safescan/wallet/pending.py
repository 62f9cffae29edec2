"""Sending a payment so that the wallet never tells the customer an outcome it does not know.

A payment is remembered (:class:`~safescan.wallet.store.PendingPayment`) *before* it is sent,
with the Idempotency-Key derived from the carrier's authorization. Then:

* a success answer (a verified receipt) settles it: the receipt is kept, the pending entry goes;
* a definite refusal (the institution's typed 4xx answer, "never processed" from the status
  lookup, or no attempt ever left the phone) settles it too: nothing was charged;
* anything else (timeouts after sending, a cut connection, "in progress", a server error, and
  the status lookup unanswered as well) leaves the outcome unknown: the wallet says so
  (:class:`~safescan.wallet.errors.PaymentOutcomeUnknown`), keeps the entry, and resolves it
  later with the status lookup (``POST /v1/payments/lookup``), which also makes sure that a
  payment the institution never processed never will be.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from safescan.api.wire import PaymentRequest
from safescan.client.answers import PaymentLookup, PaymentMade
from safescan.client.errors import InstitutionUnreachable, OutcomeUnknown, RequestNotProcessed
from safescan.client.trust import verify_receipt
from safescan.client.wallet import WalletClient
from safescan.code.authorization import Receipt
from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError
from safescan.wallet.errors import PaymentNotMade, PaymentOutcomeUnknown
from safescan.wallet.store import PendingPayment


def idempotency_key(authorization: bytes) -> str:
    """The key of a payment: bound to the carrier's authorization (one key per signature)."""
    return "pay-" + hashlib.sha256(authorization).hexdigest()[:40]


def _request(p: PendingPayment) -> PaymentRequest:
    return PaymentRequest(p.code_text, p.authorization)


def submit(
    api: WalletClient,
    p: PendingPayment,
    *,
    budget: float | None = None,
    tries: int | None = None,
    lookups: int = 3,
    backoff: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> PaymentMade:
    """Send the payment until its outcome is known; returns the success answer.

    It rides through a failover: retried with the same Idempotency-Key for up to ``budget``
    seconds (``$SAFESCAN_RETRY_SECONDS``, 30 s by default; see
    :func:`safescan.client.retry.send_until_known`), then looked up.

    Raises :class:`PaymentNotMade` when it is certain nothing was charged and
    :class:`PaymentOutcomeUnknown` when it is not known.
    """
    try:
        return api.payments.until_known(
            _request(p),
            idempotency_key=p.idempotency_key,
            budget=budget,
            tries=tries,
            lookups=lookups,
            backoff=backoff,
            sleep=sleep,
        )
    except OutcomeUnknown as exc:
        raise PaymentOutcomeUnknown(
            f"{exc.message}. You may or may not have been charged: this wallet keeps the payment"
            " and finds out as soon as the institution answers (check with"
            " `safescan wallet pending`)",
            key=p.idempotency_key,
        ) from None
    except RequestNotProcessed as exc:
        raise PaymentNotMade(
            f"the institution confirms it never processed this payment ({exc.message});"
            " nothing was charged",
            cause=exc.code,
        ) from None
    except InstitutionUnreachable as exc:  # never left the phone
        raise PaymentNotMade(
            f"{exc.message}; no payment was made (nothing was charged)", cause=exc.code
        ) from None
    except SafescanError as exc:
        raise PaymentNotMade(
            f"the institution refused the payment: {exc.message}", cause=exc.code
        ) from None


def check_receipt(answer: PaymentMade, p: PendingPayment, trust: TrustStore) -> Receipt:
    """The answer's receipt, verified: signed by the institution, for this very payment
    (merchant, order, amount, currency, code)."""
    receipt = verify_receipt(
        answer.receipt,
        trust,
        merchant_id=p.merchant_id,
        order_id=p.order_id or None,
        amount=p.amount,
        currency=p.currency,
        code_digest=p.code_digest,
    )
    if receipt.payment_id != answer.payment_id:
        raise SafescanError("the receipt is for another payment")
    return receipt


def lookup_once(api: WalletClient, p: PendingPayment) -> PaymentLookup:
    """One status lookup of a pending payment (settles it at the institution)."""
    return api.payments.lookup(_request(p), idempotency_key=p.idempotency_key)


__all__ = ["check_receipt", "idempotency_key", "lookup_once", "submit"]
