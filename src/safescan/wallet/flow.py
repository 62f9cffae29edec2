"""The wallet's flows as a library: enroll a key carrier, scan, open, pay, verify, remember.

The command line (:mod:`safescan.wallet.cli`), the demo and the tests all call these.

    wallet = Wallet.load(directory)
    scan = wallet.scan("code.png")                    # decode + classify; never acts on text
    with wallet.open(scan.text) as offer:             # the key carrier opens and verifies;
        show(offer.describe())                        # refusals happen here, before any question
        paid = offer.pay(pin)                         # carrier signs -> institution -> receipt

Everything a customer must be protected from is refused in :meth:`Wallet.open`, before the
wallet asks for confirmation: a code the carrier cannot open or verify (altered, forged,
swapped, expired, unknown key), a merchant certificate on the signed revocation list, a code
this wallet already paid, and (where the institution offers a code-status lookup) a code the
institution says is paid, closed or expired.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from safescan.api.encoding import b64d
from safescan.api.errors import NotFound
from safescan.carrier.client import CarrierClient, CodeContents
from safescan.carrier.errors import (
    CardStatusError,
    CarrierBlocked,
    CarrierError,
    CodeRefused,
    ConfirmationDeclined,
    ConfirmationPending,
    RestartRequired,
    TransportError,
    WrongPin,
)
from safescan.code.attestation import CarrierModel
from safescan.code.authorization import Receipt
from safescan.code.certs import RevocationList, TrustStore
from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import SafescanError
from safescan.code.inspect import inspect_text
from safescan.code.lookalike import protected_match, protected_names
from safescan.code.payment import CodeKind
from safescan.code.source import read_source
from safescan.remote import (
    InstitutionHttp,
    InstitutionUnreachable,
    retry_budget,
)
from safescan.wallet import pending
from safescan.wallet.certified import check_certified_merchant
from safescan.wallet.errors import (
    CodeRefusedByWallet,
    NotPayable,
    PaymentNotMade,
    ReceiptInvalid,
    WalletError,
)
from safescan.wallet.revocations import update_card
from safescan.wallet.store import History, PendingPayment, WalletConfig

MAX_TEXT_INPUT = 8192

#: Institution answers (error codes) that mean "this code cannot be paid", shown as refusals.
_STATUS_REFUSALS = {
    "paid": ("already_paid", "this code has already been paid"),
    "refunded": ("already_paid", "this code has already been paid (and refunded)"),
    "closed": ("order_closed", "the merchant cancelled this order"),
    "expired": ("code_expired", "this code has expired; ask the merchant for a new one"),
    "unknown": ("unknown_order", "the institution does not know this code's order"),
}


@dataclass(frozen=True)
class Scan:
    """What an input holds, classified without acting on it."""

    kind: str  # "safescan", "emv", "url" or "text"
    text: str
    info: dict[str, Any]

    @property
    def payable(self) -> bool:
        """Only safescan codes can be paid here."""
        return self.kind == "safescan"


@dataclass(frozen=True)
class Payment:
    """A completed payment with its verified receipt."""

    receipt: Receipt
    merchant_name: str
    merchant_city: str
    amount_display: str
    authorization: bytes = b""  # what went over the wire (public once submitted)

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
        }


def read_input(source: str | Path) -> str:
    """An image file is decoded (QR), a text file read; a path with no file is
    ``InputNotFound``; anything else is taken as the payload text itself."""
    text = str(source)
    if not isinstance(source, Path) and len(text) > MAX_TEXT_INPUT:
        raise NotPayable(f"the input is {len(text)} characters: too large to be a payment code")
    return read_source(source)


def classify(text: str, *, now: int | None = None) -> Scan:
    """Say what ``text`` is (safescan code, EMV code, link, text); never opens or follows it."""
    info = inspect_text(text, now=int(time.time()) if now is None else now)
    kind = str(info.get("kind"))
    if kind == "unknown":
        kind = "url" if info.get("looks_like") == "url" else "text"
    return Scan(kind=kind, text=text, info=info)


def _protected_name_warnings(name: str, already: Sequence[str]) -> list[str]:
    """The wallet's own look-alike check, with the names *it* protects
    (``$SAFESCAN_PROTECTED_NAMES``): the card's warnings use the card's list."""
    like = protected_match(name, protected_names())
    if like is None or any(repr(like) in w for w in already):
        return []
    return [
        f"merchant name {name!r} looks like {like!r} (Unicode confusables) but is not it;"
        " check it is the merchant you expect"
    ]


def describe_contents(contents: CodeContents, *, now: int | None = None) -> dict[str, Any]:
    """What the customer is shown about a verified code."""
    now = int(time.time()) if now is None else now
    m = contents.merchant
    cur = lookup_currency(contents.currency) if contents.currency is not None else None
    doc: dict[str, Any] = {
        "kind": "dynamic" if contents.kind is CodeKind.DYNAMIC else "static",
        "merchant": {
            "id": m.id,
            "name": m.name,
            "city": m.city,
            "country": m.country,
            "mcc": f"{m.mcc:04d}",
        },
        "issuer": contents.issuer,
        "issuer_kid": contents.issuer_kid,
        "certificate_serial": contents.certificate_serial,
        "order_id": contents.order_id,
        "items": [
            {
                "name": i.name,
                "quantity": i.quantity,
                "unit_price": i.unit_price,
                "amount": i.amount,
                "display": cur.format(i.amount) if cur else str(i.amount),
            }
            for i in contents.items
        ],
        "total": contents.total,
        "currency": cur.alpha if cur else None,
        "total_display": cur.format(contents.total)
        if cur is not None and contents.total is not None
        else None,
        "issued_at": contents.issued_at,
        "expires_at": contents.expires_at,
        "expires_in": max(0, contents.expires_at - now),
        "warnings": [*contents.warnings, *_protected_name_warnings(m.name, contents.warnings)],
        "digest": contents.digest.hex(),
    }
    return doc


class Wallet:
    """One customer's wallet: configuration, history, and the way to the carrier."""

    def __init__(
        self,
        config: WalletConfig,
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
        tries: int | None = None,
        lookups: int = 3,
        retry_seconds: float | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.history = History(config.history_path)
        self.remote = InstitutionHttp(config.institution_url, timeout=timeout)
        # a payment is retried for `retry_seconds` ($SAFESCAN_RETRY_SECONDS, 30 s: longer than
        # a failover; at most `tries` times when given), then looked up up to `lookups` times,
        # before the wallet says its outcome is not known (see safescan.wallet.pending)
        self.tries, self.lookups = tries, lookups
        self.retry_seconds = retry_budget(retry_seconds)
        self._crl: bytes | None = None  # the newest verified revocation list (CBOR)
        self._card_stale = False  # the card could not take the newest revocation list
        self._notices: list[str] = []  # things about this session the customer should know
        self._model = CarrierModel.PLAIN  # of the carrier last connected

    @classmethod
    def load(cls, directory: Path | None = None, **options: Any) -> Wallet:
        """Open the wallet stored in ``directory`` (``options``: see :class:`Wallet`)."""
        return cls(WalletConfig.load(directory), **options)

    def close(self) -> None:
        """Close files and connections."""
        self.history.close()
        self.remote.close()

    def __enter__(self) -> Wallet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> int:
        """Unix seconds."""
        return int(self.clock())

    # --- scanning -------------------------------------------------------------------------

    def scan(self, source: str | Path) -> Scan:
        """Decode (if an image) and classify the input."""
        return classify(read_input(source), now=self.now())

    def trust(self) -> tuple[TrustStore, str]:
        """The pinned institution keys plus the newest verified revocation list we can get.

        Returns the trust store and where the list came from (``"institution"``, ``"cache"``
        or ``"none"``).
        """
        trust = TrustStore(dict(self.config.trust.institution_keys))
        source = "none"
        raw: bytes | None = None
        try:
            resp = self.remote.send("GET", "/v1/revocation-list?format=cbor")
            if resp.status_code == 200:
                raw, source = resp.content, "institution"
        except InstitutionUnreachable:
            raw = None
        if raw is None:
            try:
                raw, source = self.config.crl_path.read_bytes(), "cache"
            except OSError:
                return trust, "none"
        try:
            crl = RevocationList.from_bytes(raw, trust)
            trust.apply_revocations(crl)
        except SafescanError:
            return trust, "none"
        self._crl = raw
        if source == "institution":
            tmp = self.config.crl_path.with_suffix(".tmp")
            try:
                tmp.write_bytes(raw)
                tmp.replace(self.config.crl_path)
            except OSError:
                pass  # a cache only
        return trust, source

    def connect_carrier(self, trust: TrustStore) -> CarrierClient:
        """Connect to the key carrier and open the authenticated secure channel."""
        try:
            carrier = CarrierClient.connect(self.config.carrier_url)
        except CarrierError as exc:
            raise PaymentNotMade(
                f"the key carrier cannot be reached: {exc.message}", cause=exc.code
            ) from None
        try:
            info = carrier.open_session(trust, now=self.now())
        except CarrierBlocked:
            carrier.close()
            raise PaymentNotMade(
                "the key carrier has destroyed its keys (too many wrong PINs or tampering);"
                " it can never pay again",
                cause="carrier_blocked",
            ) from None
        except SafescanError as exc:
            carrier.close()
            raise PaymentNotMade(
                f"the key carrier could not be authenticated: {exc.message}", cause=exc.code
            ) from None
        if info.carrier_serial != self.config.carrier_serial:
            carrier.close()
            raise PaymentNotMade(
                f"this is key carrier {info.carrier_serial}, not this wallet's"
                f" ({self.config.carrier_serial})",
                cause="wrong_carrier",
            )
        card = update_card(self.remote, trust, carrier, info.revocations_sequence)
        self._notices = list(card.notices)
        self._card_stale = card.stale
        self._model = info.model
        self._sync_epochs(carrier, info.key_epoch)
        return carrier

    def _sync_epochs(self, carrier: CarrierClient, epoch: int) -> None:
        """Whenever online: fetch the carrier's KEY UPDATE (sealed to the carrier, so the phone
        learns nothing from it) and deliver it, so the carrier opens codes of the current
        scheme-key epoch; a carrier offline for several epochs catches up in one update."""
        serial = self.config.carrier_serial
        try:
            doc = self.remote.call(
                "POST", f"/v1/carriers/{serial}/key-update", {"from_epoch": epoch}
            )
        except InstitutionUnreachable:
            return  # offline: the carrier keeps the epochs it has
        except SafescanError as exc:
            self._notices.append(
                f"the institution sends this key carrier no new keys: {exc.message}"
            )
            return
        raw = doc.get("key_update") if isinstance(doc, dict) else None
        if not raw:
            return
        try:
            carrier.key_update(b64d(str(raw), param="key_update", max_bytes=4096))
        except CardStatusError as exc:
            self._notices.append(f"the key carrier refused its key update: {exc.message}")
        except SafescanError as exc:
            carrier.close()
            raise PaymentNotMade(
                f"the key carrier stopped answering: {exc.message}", cause=exc.code
            ) from None

    def status(self) -> dict[str, Any]:
        """The wallet and its key carrier at a glance (JSON-ready). Connecting brings the
        carrier's revocation list up to date, as before a payment; a carrier that cannot be
        reached or authenticated is reported under ``carrier.error``."""
        trust, source = self.trust()
        cfg = self.config
        doc: dict[str, Any] = {
            "institution_url": cfg.institution_url,
            "carrier_url": cfg.carrier_url,
            "carrier_serial": cfg.carrier_serial,
            "customer_id": cfg.customer_id,
            "institution_keys": {
                str(kid): key.hex() for kid, key in sorted(cfg.trust.institution_keys.items())
            },
            "revocation_list": {
                "sequence": trust.crl_sequence if trust.crl_sequence >= 0 else None,
                "source": source,
                "revoked_serials": len(trust.revoked_serials),
            },
        }
        try:
            carrier = self.connect_carrier(trust)
        except PaymentNotMade as exc:
            doc["carrier"] = {"reachable": False, "error": exc.message}
            return doc
        try:
            info = carrier.get_info()
        except CarrierError as exc:
            doc["carrier"] = {"reachable": False, "error": exc.message}
            return doc
        finally:
            carrier.close()
        doc["carrier"] = {
            "reachable": True,
            "lifecycle": info.lifecycle.name.lower(),
            "version": ".".join(str(v) for v in info.version),
            "signature_counter": info.signature_counter,
            "pin_retries_left": info.retries_left,
            "pin_retry_limit": info.retry_limit,
            "revocations_sequence": info.revocations_sequence,
            "notices": list(self._notices),
        }
        return doc

    def open(self, text: str) -> Offer:
        """Have the carrier open ``text`` and run every check; refusals raise before any question.

        Raises :class:`NotPayable` for anything that is not a safescan code,
        :class:`CodeRefusedByWallet` (with ``reason``) for a refused code and
        :class:`PaymentNotMade` if the carrier cannot be used.
        """
        scan = classify(text, now=self.now())
        if not scan.payable:
            raise NotPayable(_not_payable_message(scan))
        trust, _ = self.trust()
        carrier = self.connect_carrier(trust)
        try:
            try:
                contents = carrier.open_code(text)
            except CodeRefused as exc:
                raise CodeRefusedByWallet(
                    _refusal_message(exc.error_code, exc.message), reason=exc.error_code
                ) from None
            except TransportError as exc:
                raise PaymentNotMade(
                    f"the key carrier stopped answering: {exc.message}", cause=exc.code
                ) from None
            except CarrierError as exc:
                raise PaymentNotMade(
                    f"the key carrier refused to open the code: {exc.message}", cause=exc.code
                ) from None
            self._check(contents, text, trust)
        except BaseException:
            carrier.close()
            raise
        return Offer(
            self, carrier, text, contents, notices=self._notices, carrier_model=self._model
        )

    def _check(self, contents: CodeContents, text: str, trust: TrustStore) -> None:
        check_certified_merchant(contents, trust, now=self.now())
        serial = contents.certificate_serial
        if serial is not None and (
            serial in trust.revoked_serials or contents.merchant.id in trust.revoked_subjects
        ):
            raise CodeRefusedByWallet(
                f"the merchant's certificate {serial} has been revoked: do not pay this code",
                reason="certificate_revoked",
            )
        if serial is not None and self._card_stale:
            raise CodeRefusedByWallet(
                "the key carrier could not take the newest revocation list, so it cannot check"
                " this merchant-signed code: refused until it can",
                reason="revocations_stale",
            )
        for p in self.history.pending(contents.digest):  # sent before, outcome not known
            if self._resolve(p)["outcome"] in ("paid", "unknown"):
                break
        if self.history.pending(contents.digest):
            raise CodeRefusedByWallet(
                "a payment of this exact code was sent and is not confirmed yet: this wallet"
                " is finding out whether it went through (safescan wallet pending); do not pay"
                " again until it knows",
                reason="outcome_unknown",
            )
        paid = self.history.paid_code(contents.digest)
        if paid is not None:
            raise CodeRefusedByWallet(
                f"you already paid this exact code (payment {paid}); a code pays once",
                reason="already_paid",
            )
        status = self.code_status(text)
        if status is not None:
            if status.get("merchant_status") == "revoked":
                raise CodeRefusedByWallet(
                    "the institution has revoked this merchant: do not pay",
                    reason="merchant_revoked",
                )
            refusal = _STATUS_REFUSALS.get(str(status.get("state")))
            if refusal is not None:
                raise CodeRefusedByWallet(refusal[1], reason=refusal[0])

    def code_status(self, text: str) -> dict[str, Any] | None:
        """The institution's view of a code, if it offers ``POST /v1/codes/status``.

        Returns None when the institution has no such endpoint or cannot be reached (the
        payment itself then settles it). See docs/institution.md.
        """
        try:
            doc = self.remote.call("POST", "/v1/codes/status", {"code": text})
        except NotFound:
            return None
        except InstitutionUnreachable:
            return None
        except SafescanError as exc:
            raise CodeRefusedByWallet(
                f"the institution refuses this code: {exc.message}", reason=exc.code
            ) from None
        return doc if isinstance(doc, dict) else None

    def pay_authorization(self, p: PendingPayment) -> dict[str, Any]:
        """Send a remembered payment until its outcome is known (see
        :func:`safescan.wallet.pending.submit`); returns the success answer."""
        return pending.submit(
            self.remote, p, budget=self.retry_seconds, tries=self.tries, lookups=self.lookups
        )

    def resolve_pending(self) -> list[dict[str, Any]]:
        """Ask the institution about every payment whose outcome is not known (its status
        lookup, which also makes sure a payment it never processed never will be); keep the
        receipt of each that went through. One entry per payment: ``outcome`` is ``paid``
        (with ``payment``), ``not_charged`` (with ``message``) or ``unknown`` (still)."""
        return [self._resolve(p) for p in self.history.pending()]

    def _resolve(self, p: PendingPayment) -> dict[str, Any]:
        out: dict[str, Any] = {"pending": p.to_json()}
        try:
            doc = pending.lookup_once(self.remote, p)
        except SafescanError as exc:
            return out | {"outcome": "unknown", "message": exc.message}
        state = doc.get("outcome")
        if state == "succeeded" and isinstance(doc.get("payment"), dict):
            try:
                paid = self._keep(p, doc["payment"])
            except ReceiptInvalid as exc:
                return out | {"outcome": "unknown", "message": exc.message}
            return out | {"outcome": "paid", "payment": paid.to_json()}
        if state in ("refused", "not_processed"):
            self.history.drop_pending(p.idempotency_key)
            error = doc.get("error")
            detail = error.get("message") if isinstance(error, dict) else None
            message = str(detail or doc.get("message") or state)
            return out | {"outcome": "not_charged", "message": message}
        return out | {"outcome": "unknown", "message": "the institution's answer is malformed"}

    def _keep(self, p: PendingPayment, answer: dict[str, Any]) -> Payment:
        """Verify the answer's receipt against what was approved, and keep it."""
        try:
            receipt = pending.check_receipt(answer, p, self.config.trust)
        except SafescanError as exc:
            raise ReceiptInvalid(
                f"the institution's receipt does not verify: {exc.message}"
            ) from None
        self.history.add(
            receipt,
            merchant_name=p.merchant_name,
            merchant_city=p.merchant_city,
            items=p.items,
            pending_key=p.idempotency_key,
        )
        cur = lookup_currency(receipt.currency)
        return Payment(
            receipt, p.merchant_name, p.merchant_city, cur.format(receipt.amount), p.authorization
        )


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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the carrier session (a pending code is forgotten)."""
        self.carrier.close()

    def describe(self) -> dict[str, Any]:
        """What the customer is shown."""
        doc = describe_contents(self.contents, now=self.wallet.now())
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
            items=[[i.name, i.quantity, i.unit_price] for i in c.items],
            code_digest=c.digest,
        )
        self.wallet.history.add_pending(p)  # before sending: a lost answer can be looked up
        try:
            answer = self.wallet.pay_authorization(p)
        except PaymentNotMade:
            self.wallet.history.drop_pending(p.idempotency_key)  # certain: nothing charged
            raise
        return self.wallet._keep(p, answer)


def _not_payable_message(scan: Scan) -> str:
    if scan.kind == "emv":
        return "an EMVCo QR code: unverified (no signature), not payable here"
    if scan.kind == "url":
        return "a link, not a payment code; it was not opened"
    return "not a payment code; it was shown as text only"


_REFUSAL_TEXT = {
    "signature_invalid": "the code is not signed by the payment institution: it may be a"
    " sticker glued over the merchant's real code. Do not pay",
    "decryption_failed": "the code was altered (or sealed to another key): do not pay",
    "code_expired": "the code has expired; ask the merchant for a new one",
    "code_not_yet_valid": "the code is not valid yet (check this device's clock)",
    "certificate_revoked": "the merchant's certificate has been revoked: do not pay",
    "certificate_expired": "the merchant's certificate has expired: do not pay",
    "unknown_key_id": "the code uses a key this carrier does not know",
    "key_retired": "the code uses a retired key; ask the merchant for a new one",
}


def _refusal_message(reason: str, detail: str) -> str:
    text = _REFUSAL_TEXT.get(reason)
    return f"{text} ({detail})" if text else detail


from safescan.wallet.enroll import enroll  # noqa: E402 - re-exported (the public API)

__all__ = [
    "Offer",
    "Payment",
    "Scan",
    "Wallet",
    "classify",
    "describe_contents",
    "enroll",
    "read_input",
]
