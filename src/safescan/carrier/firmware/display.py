"""The display model's trusted screen and confirm button (like a hardware wallet).

On a carrier with a display (model 2), what the customer approves is what the carrier itself
decrypted and showed, not what the phone says:

1. OPEN CODE puts the code the card opened on its own screen (merchant, items, total).
2. AUTHORIZE PAYMENT (PIN verified, request matching the pending code) does not sign at once:
   the card arms a prompt "Pay <amount> to <merchant>?" built from its own pending code (for a
   static code, the amount the host asked for) and answers ``6985`` CONFIRMATION_PENDING,
   keeping the pending code. The host repeats the same AUTHORIZE to poll.
3. The customer presses OK or Cancel on the device (the emulation's buttons are on the carrier
   process's control socket: ``PRESS OK`` / ``PRESS CANCEL``, or its own terminal). Nothing
   on an I/O interface can press them.
4. The next AUTHORIZE with exactly the prompt's values signs; after Cancel it is refused
   (CONFIRMATION_DECLINED) and the pending code is gone; with other values it is refused
   (CONFIRMATION_MISMATCH) and the prompt and pending code are gone.

An approval belongs to one prompt of one pending code: OPEN CODE, a new session, a power cycle
or a signature clears it, so a confirmation can never be carried over to another code or
amount. The plain model (1) signs as before, after the PIN alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from safescan.carrier.apdu import Reason, StatusWord
from safescan.carrier.firmware.common import Pending, refuse

if TYPE_CHECKING:
    from safescan.carrier.device import Card
    from safescan.code.envelope import OpenedCode

DISPLAY_MODEL = 2


@dataclass
class Prompt:
    """The confirmation the screen asks for (RAM): exactly what a press approves."""

    digest: bytes
    merchant_id: str
    amount: int
    currency: int
    approved: bool = False
    declined: bool = False


def _money(amount: int | None, currency: int | None) -> str | None:
    from safescan.code.currency import currency as lookup

    if amount is None:
        return None
    if currency is None:
        return str(amount)
    return lookup(currency).format(amount)


def show_code(card: Card, opened: OpenedCode) -> None:
    """Put the code the card just opened on its screen (display model)."""
    from safescan.code.payment import DynamicCode

    if card.model != DISPLAY_MODEL:
        return
    code = opened.code
    m = code.merchant
    screen: dict[str, Any] = {
        "state": "code",
        "merchant": m.name,
        "city": m.city,
        "country": m.country,
        "merchant_id": m.id,
        "warnings": list(opened.warnings),
    }
    if isinstance(code, DynamicCode):
        screen["items"] = [i.display_json(code.currency) for i in code.items]
        screen["total"] = _money(code.total, code.currency)
    else:
        screen["items"] = []
        screen["total"] = None  # a static code: the amount is shown when it is confirmed
    card.ram.prompt = None
    card.set_screen(screen)


def gate(card: Card, pending: Pending, amount: int, currency: int) -> None:
    """On the display model, let AUTHORIZE through only after the device's own confirmation
    of exactly ``amount`` ``currency`` for the pending code; raises a :class:`Refusal`
    otherwise (putting the pending code back while the prompt waits)."""
    if card.model != DISPLAY_MODEL:
        return
    prompt = card.ram.prompt
    if prompt is not None and prompt.digest == pending.digest:
        if (prompt.merchant_id, prompt.amount, prompt.currency) != (
            pending.merchant_id,
            amount,
            currency,
        ):
            card.ram.prompt = None
            card.set_screen({"state": "refused", "reason": "another amount was asked to sign"})
            raise refuse(
                StatusWord.WRONG_DATA,
                Reason.CONFIRMATION_MISMATCH,
                "the request is not what the carrier's screen asked to confirm",
            )
        if prompt.declined:
            card.ram.prompt = None
            raise refuse(
                StatusWord.CONDITIONS_NOT_SATISFIED,
                Reason.CONFIRMATION_DECLINED,
                "the payment was declined on the carrier",
            )
        if prompt.approved:
            card.ram.prompt = None
            return
        card.ram.pending = pending  # still waiting for the button
        raise refuse(
            StatusWord.CONDITIONS_NOT_SATISFIED,
            Reason.CONFIRMATION_PENDING,
            "confirm the payment on the carrier's own screen",
        )
    # arm a new prompt from the card's own pending code
    card.ram.prompt = Prompt(pending.digest, pending.merchant_id, amount, currency)
    screen = dict(card.screen)
    screen.update(
        {
            "state": "confirm",
            "amount": _money(amount, currency),
            "prompt": f"Pay {_money(amount, currency)} to {screen.get('merchant', '?')}"
            f" ({screen.get('city', '?')})?",
            "buttons": ["OK", "Cancel"],
        }
    )
    card.set_screen(screen)
    card.ram.pending = pending
    raise refuse(
        StatusWord.CONDITIONS_NOT_SATISFIED,
        Reason.CONFIRMATION_PENDING,
        "confirm the payment on the carrier's own screen",
    )


def signed(card: Card, counter: int) -> None:
    """The signature left the card: say so on the screen."""
    if card.model == DISPLAY_MODEL:
        screen = dict(card.screen)
        screen.update({"state": "signed", "counter": counter})
        screen.pop("buttons", None)
        card.set_screen(screen)


def press(card: Card, ok: bool) -> str:
    """A button press (physical: the control socket, never an APDU). Returns what happened."""
    if card.model != DISPLAY_MODEL:
        return "no buttons on this model"
    prompt = card.ram.prompt
    if prompt is None or prompt.approved or prompt.declined:
        return "nothing to confirm"
    screen = dict(card.screen)
    screen.pop("buttons", None)
    if ok:
        prompt.approved = True
        screen["state"] = "approved"
    else:
        prompt.declined = True
        screen["state"] = "declined"
    card.set_screen(screen)
    return str(screen["state"])
