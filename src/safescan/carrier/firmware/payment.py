"""OPEN CODE and AUTHORIZE PAYMENT: the card opens a code itself and signs only that code."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cbor2

from safescan.carrier.apdu import CommandApdu, Reason, StatusWord
from safescan.carrier.firmware import display
from safescan.carrier.firmware.common import CODE_REASONS, MAX_COUNTER, Pending, refuse
from safescan.carrier.firmware.keys import scheme
from safescan.carrier.messages import Authorize, MalformedMessage, OpenedCode
from safescan.code.errors import SafescanError

if TYPE_CHECKING:
    from safescan.carrier.device import Card


def open_code(card: Card, command: CommandApdu) -> bytes:
    """OPEN CODE: decrypt and verify a payment code; it becomes the pending payment."""
    from safescan.code.envelope import PREFIX
    from safescan.code.envelope import open_code as open_envelope
    from safescan.code.payment import DynamicCode

    card.ram.pending = None
    data: str | bytes = command.data
    if command.data.startswith(PREFIX.encode("ascii")):
        try:
            data = command.data.decode("ascii")
        except UnicodeDecodeError:
            raise refuse(
                StatusWord.WRONG_DATA, Reason.MALFORMED_CODE, "the code text is not ASCII"
            ) from None
    keyring, trust = scheme(card)
    try:
        # judged at trusted time: a clock set back never revives an expired code, a lapsed
        # merchant certificate or a retired scheme key (before: the card's clock alone)
        opened = open_envelope(data, keyring, trust, now=card.trusted_now())
    except SafescanError as exc:
        reason = CODE_REASONS.get(exc.code, Reason.MALFORMED_CODE)
        raise refuse(StatusWord.WRONG_DATA, reason, exc.message) from None
    if opened.certificate is not None and card.image is not None and card.image.crl_stale:
        raise refuse(
            StatusWord.CONDITIONS_NOT_SATISFIED,
            Reason.REVOCATIONS_STALE,
            "this card could not keep the newest revocation list: it refuses"
            " merchant-signed codes until it gets one it can keep",
        )
    code = opened.code
    if opened.certificate is None:
        # signed with an institution key the card holds: its issue time is the institution's
        # (a merchant-signed code's is the merchant's own clock: never a mark)
        card.advance_time_mark(code.issued_at)
        card.keep_time_mark()
    m = code.merchant
    cert = opened.certificate
    dynamic = code if isinstance(code, DynamicCode) else None
    answer = OpenedCode(
        kind=int(code.kind),
        merchant=(m.id, m.name, m.city, m.country, m.mcc),
        issuer=opened.issuer,
        issuer_kid=opened.issuer_kid,
        # Merchant-signed: open_code (above, on the card) took every identity field of
        # ``merchant`` from this institution-certified certificate (v2), never from the
        # code's own text. The certificate goes out too, so the wallet can re-check that
        # binding.
        certificate_serial=None if cert is None else cert.serial,
        certificate=None if cert is None else cert.to_bytes(),
        order_id=None if dynamic is None else dynamic.order_id,
        items=None if dynamic is None else dynamic.items,
        total=None if dynamic is None else dynamic.total,
        currency=code.currency,
        issued_at=code.issued_at,
        expires_at=code.expires_at,
        warnings=tuple(opened.warnings),
        digest=opened.digest,
        scheme_kid=opened.header.kid,
    )
    if dynamic is not None:
        card.ram.pending = Pending(
            opened.digest, m.id, dynamic.order_id, dynamic.total, code.currency
        )
    else:
        card.ram.pending = Pending(opened.digest, m.id, "", None, code.currency)
    display.show_code(card, opened)  # the display model shows what it decrypted itself
    return answer.to_cbor()


def authorize(card: Card, command: CommandApdu) -> bytes:
    """AUTHORIZE PAYMENT: ``[merchant id, amount, currency]`` must equal the pending code."""
    from safescan.code.authorization import Authorization
    from safescan.code.currency import currency as lookup_currency
    from safescan.code.keys import SigningKey
    from safescan.code.payment import check_amount

    pending, card.ram.pending = card.ram.pending, None  # consumed, whatever happens
    if pending is None:
        raise refuse(
            StatusWord.CONDITIONS_NOT_SATISFIED, Reason.NO_PENDING_CODE, "open a code first"
        )
    try:
        value = cbor2.loads(command.data)
    except (cbor2.CBORError, ValueError, TypeError, RecursionError):
        raise refuse(StatusWord.WRONG_DATA, Reason.BAD_DATA, "not CBOR") from None
    if not isinstance(value, list) or len(value) != 3:
        raise refuse(
            StatusWord.WRONG_DATA, Reason.BAD_DATA, "expected [merchant id, amount, currency]"
        )
    mismatch = refuse(
        StatusWord.WRONG_DATA,
        Reason.CONFIRMATION_MISMATCH,
        "the confirmed merchant, amount or currency is not the code's",
    )
    try:  # three values of another type confirm nothing the card showed
        request = Authorize.from_value(value)
    except MalformedMessage:
        raise mismatch from None
    merchant_id, amount, currency = request.merchant_id, request.amount, request.currency
    if merchant_id != pending.merchant_id:
        raise mismatch
    if pending.amount is not None and amount != pending.amount:
        raise mismatch
    if pending.currency is not None and currency != pending.currency:
        raise mismatch
    try:
        check_amount(amount)
        lookup_currency(currency)
    except SafescanError as exc:
        reason = CODE_REASONS.get(exc.code, Reason.BAD_DATA)
        raise refuse(StatusWord.WRONG_DATA, reason, exc.message) from None
    # the display model signs only after its own screen showed this and its button approved it
    display.gate(card, pending, amount, currency)
    image = card.image
    assert image is not None and card.keys.signing is not None
    assert image.carrier_serial is not None
    if image.signature_counter >= MAX_COUNTER:
        raise refuse(
            StatusWord.CONDITIONS_NOT_SATISFIED,
            Reason.COUNTER_EXHAUSTED,
            "the signature counter is exhausted",
        )
    card.ram.pin_verified = False  # one PIN verification, one payment
    image.signature_counter += 1
    card.eeprom.write(image)  # persisted before the signature exists
    auth = Authorization(
        code_digest=pending.digest,
        merchant_id=pending.merchant_id,
        order_id=pending.order_id,
        amount=amount,
        currency=currency,
        counter=image.signature_counter,
        carrier_serial=image.carrier_serial,
        created_at=card.clock(),
    )
    key = SigningKey(card.keys.signing)
    try:
        signed = auth.signed(key).to_bytes()
    except SafescanError as exc:
        raise refuse(StatusWord.WRONG_DATA, Reason.BAD_DATA, exc.message) from None
    display.signed(card, image.signature_counter)
    return signed
