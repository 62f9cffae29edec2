"""Typed errors of the key carrier: on the card side and on the host side.

Host side: every status word the card can answer maps to one :class:`CarrierError` subclass
(see :func:`error_for_status`); transport failures are :class:`TransportError` subclasses.
All derive from :class:`safescan.code.errors.SafescanError`.
"""

from __future__ import annotations

from safescan.carrier.codes import Reason
from safescan.code.errors import SafescanError


class CarrierError(SafescanError):
    """Something went wrong talking to, or inside, the key carrier."""

    code = "carrier_error"


# --- formats --------------------------------------------------------------------------------


class ApduError(CarrierError):
    """An APDU is malformed (bad length fields, out-of-range bytes)."""

    code = "apdu_error"


class ImageError(CarrierError):
    """The EEPROM image is missing, truncated, altered or unreadable."""

    code = "eeprom_image_error"


# --- transport ------------------------------------------------------------------------------


class TransportError(CarrierError):
    """The link to the carrier failed (framing, CRC, unexpected close)."""

    code = "transport_error"


class CarrierUnavailable(TransportError):
    """No carrier answers at this address."""

    code = "carrier_unavailable"


class CarrierDisconnected(TransportError):
    """The carrier went away (removed, powered off, crashed), possibly mid-command."""

    code = "carrier_disconnected"


class CarrierTimeout(TransportError):
    """The carrier did not answer in time."""

    code = "carrier_timeout"


class FramingError(TransportError):
    """A frame on the link was corrupt (bad length or CRC)."""

    code = "framing_error"


# --- host-side verification -----------------------------------------------------------------


class ChannelError(CarrierError):
    """The secure channel failed: a frame was altered, replayed, reordered or dropped.

    The session is closed on both sides; open a new one.
    """

    code = "secure_channel_error"


class CarrierAuthenticationError(ChannelError):
    """The carrier could not prove it holds its certified (or attestation) key."""

    code = "carrier_authentication_failed"


# --- status words ---------------------------------------------------------------------------


class CardStatusError(CarrierError):
    """The card refused a command; ``sw`` is its status word, ``reason`` the reason code."""

    code = "card_refused"

    def __init__(self, message: str, *, sw: int = 0x6F00, reason: int = 0) -> None:
        super().__init__(message)
        self.sw = sw
        self.reason = reason


class WrongPin(CardStatusError):
    """``63Cx``: the PIN is wrong; ``retries_left`` tries remain."""

    code = "wrong_pin"

    @property
    def retries_left(self) -> int:
        """How many tries are left before the carrier destroys its keys."""
        return self.sw & 0x0F


class WrongLength(CardStatusError):
    """``6700``: wrong length."""

    code = "wrong_length"


class SecurityStatusNotSatisfied(CardStatusError):
    """``6982``: the command needs the secure channel or a verified PIN."""

    code = "security_status_not_satisfied"


class CarrierBlocked(CardStatusError):
    """``6983``: the carrier has destroyed its keys; it will never work again."""

    code = "carrier_blocked"


class ConditionsNotSatisfied(CardStatusError):
    """``6985``: not allowed now (wrong lifecycle, no pending code, ...)."""

    code = "conditions_not_satisfied"


class ConfirmationPending(ConditionsNotSatisfied):
    """``6985``: a display carrier waits for the customer to press OK on its own screen."""

    code = "confirmation_pending"


class ConfirmationDeclined(ConditionsNotSatisfied):
    """``6985``: the customer pressed Cancel on the display carrier: nothing was signed."""

    code = "confirmation_declined"


class RestartRequired(ConditionsNotSatisfied):
    """``6985``: too many wrong PINs in this power cycle: unplug and replug the carrier."""

    code = "restart_required"


class SecureMessagingError(CardStatusError, ChannelError):
    """``6987``/``6988``: the card found the secure-channel frame missing or incorrect.

    The card has closed the session (it is also a :class:`ChannelError`).
    """

    code = "secure_messaging_error"


class WrongData(CardStatusError):
    """``6A80``: the data field is wrong."""

    code = "wrong_data"


class CodeRefused(WrongData):
    """``6A80``: the payment code was refused; ``error_code`` names why (e.g. ``code_expired``)."""

    code = "code_refused"

    @property
    def error_code(self) -> str:
        """The :mod:`safescan.code.errors` code of the refusal, e.g. ``"code_expired"``."""
        try:
            return Reason(self.reason).name.lower()
        except ValueError:
            return "code_error"


class ConfirmationMismatch(WrongData):
    """``6A80``: the confirmed merchant, amount or currency is not the pending code's."""

    code = "confirmation_mismatch"


class NotFound(CardStatusError):
    """``6A82``/``6A88``: the applet or the referenced data does not exist."""

    code = "not_found"


class IncorrectParameters(CardStatusError):
    """``6A86``: wrong P1/P2."""

    code = "incorrect_parameters"


class InsNotSupported(CardStatusError):
    """``6D00``: unknown instruction."""

    code = "ins_not_supported"


class ClaNotSupported(CardStatusError):
    """``6E00``: unknown class byte."""

    code = "cla_not_supported"


#: What a status word means when the card gave no reason (ISO/IEC 7816-4 wording).
_SW_TEXT = {
    0x6581: "the carrier's memory failed",
    0x6700: "wrong length",
    0x6982: "security status not satisfied (secure channel or PIN needed)",
    0x6983: "the carrier has destroyed its keys and is permanently blocked",
    0x6985: "conditions of use not satisfied",
    0x6987: "no secure channel is open",
    0x6988: "the secure-channel frame was altered, replayed or out of order",
    0x6A80: "incorrect data",
    0x6A82: "no such applet",
    0x6A84: "more data than the carrier can keep",
    0x6A86: "incorrect P1/P2",
    0x6A88: "referenced data not found",
    0x6D00: "instruction not supported",
    0x6E00: "class not supported",
}


def error_for_status(sw: int, reason: int, message: str) -> CardStatusError:
    """The typed host-side error for a refusal status word and (if the card gave one through
    GET DATA "last error") its reason code and message."""
    text = message or (
        f"the carrier refused the command: {_SW_TEXT[sw]} (status {sw:04X})"
        if sw in _SW_TEXT
        else f"the carrier refused the command (status {sw:04X})"
    )
    cls: type[CardStatusError]
    if sw & 0xFFF0 == 0x63C0:
        cls = WrongPin
        text = message or f"wrong PIN: {sw & 0x0F} tries left"
    elif sw == 0x6700:
        cls = WrongLength
    elif sw == 0x6982:
        cls = SecurityStatusNotSatisfied
    elif sw == 0x6983:
        cls = CarrierBlocked
    elif sw == 0x6985:
        by_reason: dict[int, type[CardStatusError]] = {
            Reason.RESTART_REQUIRED: RestartRequired,
            Reason.CONFIRMATION_PENDING: ConfirmationPending,
            Reason.CONFIRMATION_DECLINED: ConfirmationDeclined,
        }
        cls = by_reason.get(reason, ConditionsNotSatisfied)
    elif sw in (0x6987, 0x6988):
        cls = SecureMessagingError
    elif sw in (0x6A80, 0x6A84):
        if 0 < reason < 0x20:
            cls = CodeRefused
        elif reason == Reason.CONFIRMATION_MISMATCH:
            cls = ConfirmationMismatch
        else:
            cls = WrongData
    elif sw in (0x6A82, 0x6A88):
        cls = NotFound
    elif sw == 0x6A86:
        cls = IncorrectParameters
    elif sw == 0x6D00:
        cls = InsNotSupported
    elif sw == 0x6E00:
        cls = ClaNotSupported
    else:
        cls = CardStatusError
    return cls(text, sw=sw, reason=reason)
