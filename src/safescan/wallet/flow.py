"""The wallet's flows as a library: enroll a key carrier, scan, open, pay, verify, remember.

The command line (:mod:`safescan.wallet.cli`), the demo and the tests all call these.
:class:`Wallet` is the session (configuration, history, the institution through its
:class:`~safescan.client.WalletClient`, the carrier); :mod:`.scan` classifies inputs and
describes codes without acting on them; :mod:`.offer` is the customer's decision and payment.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safescan.api.states import CodeState, Status
from safescan.carrier.client import CarrierClient, CodeContents
from safescan.carrier.errors import (
    CardStatusError,
    CarrierBlocked,
    CarrierError,
    CodeRefused,
    TransportError,
)
from safescan.client.answers import CodeStatus, PaymentMade
from safescan.client.errors import InstitutionUnreachable
from safescan.client.retry import retry_budget
from safescan.client.wallet import WalletClient
from safescan.code.attestation import CarrierModel
from safescan.code.certs import RevocationList, TrustStore
from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import SafescanError
from safescan.code.timefloor import TimeFloor
from safescan.wallet import crlcache, pending
from safescan.wallet.certified import check_certified_merchant
from safescan.wallet.errors import (
    CodeRefusedByWallet,
    NotPayable,
    PaymentNotMade,
    ReceiptInvalid,
    WalletError,
)
from safescan.wallet.offer import Offer, Payment
from safescan.wallet.revocations import update_card
from safescan.wallet.scan import (
    Scan,
    classify,
    describe_contents,
    not_payable_message,
    read_input,
)
from safescan.wallet.store import History, PendingPayment, WalletConfig

#: Institution answers (error codes) that mean "this code cannot be paid", shown as refusals.
_STATUS_REFUSALS = {
    CodeState.PAID: ("already_paid", "this code has already been paid"),
    CodeState.REFUNDED: ("already_paid", "this code has already been paid (and refunded)"),
    CodeState.CLOSED: ("order_closed", "the merchant cancelled this order"),
    CodeState.EXPIRED: ("code_expired", "this code has expired; ask the merchant for a new one"),
    CodeState.UNKNOWN: ("unknown_order", "the institution does not know this code's order"),
}


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
        self.api = WalletClient(config.institution_url, timeout=timeout)
        # a payment is retried for `retry_seconds` ($SAFESCAN_RETRY_SECONDS, 30 s: longer than
        # a failover; at most `tries` times when given), then looked up up to `lookups` times,
        # before the wallet says its outcome is not known (see safescan.wallet.pending)
        self.tries, self.lookups = tries, lookups
        self.retry_seconds = retry_budget(retry_seconds)
        # the newest verified revocation list (and its CBOR): never replaced by an older one
        self._crl: tuple[RevocationList, bytes] | None = None
        self._trust_notices: list[str] = []  # what the last revocation list choice noticed
        self._card_stale = False  # the card could not take the newest revocation list
        self._notices: list[str] = []  # things about this session the customer should know
        self._model = CarrierModel.PLAIN  # of the carrier last connected
        # the marks of trusted time the last revocation check left (safescan.code.timefloor)
        self._floor = TimeFloor()

    @classmethod
    def load(cls, directory: Path | None = None, **options: Any) -> Wallet:
        """Open the wallet stored in ``directory`` (``options``: see :class:`Wallet`)."""
        return cls(WalletConfig.load(directory), **options)

    def close(self) -> None:
        """Close files and connections."""
        self.history.close()
        self.api.close()

    def __enter__(self) -> Wallet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> int:
        """Unix seconds."""
        return int(self.clock())

    def trusted_now(self) -> int:
        """The time a code's expiry and a certificate's validity are judged at: the latest of
        the device clock and the marks of trusted time the last revocation check left (the
        newest institution-signed time verified, the newest device time seen;
        :mod:`safescan.code.timefloor`), so a clock set back does not make an expired code or
        certificate valid again (before: the device clock alone)."""
        return self._floor.at(self.now())

    # --- scanning -------------------------------------------------------------------------

    def scan(self, source: str | Path) -> Scan:
        """Decode (if an image) and classify the input."""
        return classify(read_input(source), now=self.now())

    def trust(self) -> tuple[TrustStore, str]:
        """The pinned institution keys plus the newest verified revocation list we can get.

        Returns the trust store and where the list came from (``"institution"``, ``"cache"``
        or ``"none"``: there is none, in the institution nor cached).
        A cached list that does not verify is never "nothing is revoked": the institution's
        replaces it (a notice says so), or, offline, :class:`RevocationListInvalid` is raised;
        the list's sequence never goes back (:mod:`safescan.wallet.crlcache`).
        """
        trust = TrustStore(dict(self.config.trust.institution_keys))
        fetched: bytes | None
        try:
            fetched = self.api.revocations.signed()
        except SafescanError:  # unreachable, or no list to give: the cached one, if any
            fetched = None
        choice = crlcache.choose(self.config.crl_path, trust, fetched, self._crl, now=self.now())
        self._trust_notices = choice.notices
        self._floor = choice.floor
        if choice.crl is None or choice.raw is None:
            return trust, "none"
        trust.apply_revocations(choice.crl)
        self._crl = (choice.crl, choice.raw)
        return trust, choice.source

    def connect_carrier(self, trust: TrustStore) -> CarrierClient:
        """Connect to the key carrier and open the authenticated secure channel."""
        try:
            carrier = CarrierClient.connect(self.config.carrier_url)
        except CarrierError as exc:
            raise PaymentNotMade(
                f"the key carrier cannot be reached: {exc.message}", cause=exc.code
            ) from None
        try:
            info = carrier.open_session(trust, now=self.trusted_now())
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
        card = update_card(self.api, trust, carrier, info.revocations_sequence)
        self._notices = [*self._trust_notices, *card.notices]
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
            update = self.api.carriers.key_update(serial, from_epoch=epoch).key_update
        except InstitutionUnreachable:
            return  # offline: the carrier keeps the epochs it has
        except SafescanError as exc:
            self._notices.append(
                f"the institution sends this key carrier no new keys: {exc.message}"
            )
            return
        if not update:  # None: up to date
            return
        try:
            carrier.key_update(update)
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
                # a damaged cache replaced, an older list not adopted (wallet.crlcache)
                "notices": list(self._trust_notices),
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
            raise NotPayable(not_payable_message(scan))
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
        # judged at trusted time, not the device clock alone: the carrier checked expiry by
        # its own clock, which a device set back sets back too (the same host)
        now, at = self.now(), self.trusted_now()
        check_certified_merchant(contents, trust, now=at, device=now)
        if at >= contents.expires_at:
            raise CodeRefusedByWallet(
                "this code has expired; ask the merchant for a new one"
                + _set_back(now, at, "code"),
                reason="code_expired",
            )
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
            if status.merchant_status is Status.REVOKED:
                raise CodeRefusedByWallet(
                    "the institution has revoked this merchant: do not pay",
                    reason="merchant_revoked",
                )
            refusal = _STATUS_REFUSALS.get(status.state)
            if refusal is not None:
                raise CodeRefusedByWallet(refusal[1], reason=refusal[0])

    def code_status(self, text: str) -> CodeStatus | None:
        """The institution's view of a code, if it offers ``POST /v1/codes/status``.

        Returns None when the institution has no such endpoint or cannot be reached (the
        payment itself then settles it). See docs/institution.md.
        """
        try:
            return self.api.codes.status(text)
        except InstitutionUnreachable:
            return None
        except SafescanError as exc:
            raise CodeRefusedByWallet(
                f"the institution refuses this code: {exc.message}", reason=exc.code
            ) from None

    def pay_authorization(self, p: PendingPayment) -> PaymentMade:
        """Send a remembered payment until its outcome is known (see
        :func:`safescan.wallet.pending.submit`); returns the success answer."""
        return pending.submit(
            self.api, p, budget=self.retry_seconds, tries=self.tries, lookups=self.lookups
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
            doc = pending.lookup_once(self.api, p)
        except SafescanError as exc:
            return out | {"outcome": "unknown", "message": exc.message}
        if doc.payment is not None:  # succeeded
            try:
                paid = self._keep(p, doc.payment)
            except ReceiptInvalid as exc:
                return out | {"outcome": "unknown", "message": exc.message}
            return out | {"outcome": "paid", "payment": paid.to_json()}
        # refused or not processed: certainly not charged
        self.history.drop_pending(p.idempotency_key)
        detail = doc.error.message if doc.error is not None else None
        message = str(detail or doc.message or doc.outcome)
        return out | {"outcome": "not_charged", "message": message}

    def _keep(self, p: PendingPayment, answer: PaymentMade) -> Payment:
        """Verify the answer's receipt against what was approved, and keep it."""
        try:
            receipt = pending.check_receipt(answer, p, self.config.trust)
        except SafescanError as exc:
            raise ReceiptInvalid(
                f"the institution's receipt does not verify: {exc.message}"
            ) from None
        try:
            self.history.add(
                receipt,
                merchant_name=p.merchant_name,
                merchant_city=p.merchant_city,
                items=p.items,
                pending_key=p.idempotency_key,
            )
            not_saved = None
        except WalletError as exc:  # the payment was made: say so, and this apart
            not_saved = (
                f"{exc.message}; the payment stays pending in this wallet (do not pay this code"
                " again; `safescan wallet pending` stores the receipt once the history can be"
                " written)"
            )
        cur = lookup_currency(receipt.currency)
        return Payment(
            receipt,
            p.merchant_name,
            p.merchant_city,
            cur.format(receipt.amount),
            p.authorization,
            history_error=not_saved,
        )


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


def _set_back(now: int, at: int, what: str) -> str:
    """What to add to a refusal judged at trusted time ``at`` when the device clock ``now``
    reads earlier (it was set back, or is wrong)."""
    if at <= now:
        return ""
    return (
        f" (this device's clock reads {_utc(now)}, but it already read {_utc(at)} or the"
        f" institution signed that time: a clock set back does not make a {what} valid again)"
    )


def _utc(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


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
