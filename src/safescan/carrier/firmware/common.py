"""What every command handler of the card shares: the refusal type and the RAM records."""

from __future__ import annotations

from dataclasses import dataclass

from safescan.carrier.apdu import CommandApdu, Reason, StatusWord

#: The EEPROM image holds 63-bit numbers (counters, sequences, epochs).
MAX_COUNTER = 2**63 - 1

DESTROYED_TEXT = "the carrier has destroyed its keys and is permanently blocked"

#: safescan.code error codes -> reason codes of a refused payment code.
CODE_REASONS = {
    "malformed_code": Reason.MALFORMED_CODE,
    "oversize_input": Reason.OVERSIZE_INPUT,
    "unsupported_version": Reason.UNSUPPORTED_VERSION,
    "unknown_key_id": Reason.UNKNOWN_KEY_ID,
    "key_retired": Reason.KEY_RETIRED,
    "decryption_failed": Reason.DECRYPTION_FAILED,
    "signature_invalid": Reason.SIGNATURE_INVALID,
    "code_expired": Reason.CODE_EXPIRED,
    "code_not_yet_valid": Reason.CODE_NOT_YET_VALID,
    "invalid_amount": Reason.INVALID_AMOUNT,
    "total_mismatch": Reason.TOTAL_MISMATCH,
    "unknown_currency": Reason.UNKNOWN_CURRENCY,
    "unsafe_text": Reason.UNSAFE_TEXT,
    "certificate_error": Reason.CERTIFICATE_ERROR,
    "certificate_expired": Reason.CERTIFICATE_EXPIRED,
    "certificate_revoked": Reason.CERTIFICATE_REVOKED,
}


class Refusal(Exception):
    """A handler refuses the command with a status word, a reason code and a message."""

    def __init__(self, sw: int, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.sw = sw
        self.reason = reason
        self.message = message


def refuse(sw: int, reason: Reason, message: str) -> Refusal:
    """A :class:`Refusal` to raise."""
    return Refusal(sw, reason, message)


def no_data(command: CommandApdu) -> None:
    """Refuse a command that must carry no data."""
    if command.data:
        raise refuse(StatusWord.WRONG_LENGTH, Reason.BAD_LENGTH, "this command takes no data")


@dataclass(frozen=True)
class LastError:
    """The last refused command (RAM): what GET DATA "last error" answers.

    ``session`` is the number of the secure session the refusal was answered in (None: in
    clear); it is only readable at the same level, so a reason given inside the channel never
    leaves it in clear.
    """

    sw: int
    ins: int
    reason: Reason
    message: str
    session: int | None


@dataclass
class Pending:
    """The code just opened, waiting for the customer's confirmation (RAM only)."""

    digest: bytes
    merchant_id: str
    order_id: str
    amount: int | None  # None: a static code, the customer enters the amount
    currency: int | None  # None: a static code without a fixed currency
