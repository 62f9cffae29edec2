"""VERIFY PIN and CHANGE PIN: the retry counter is spent and synced before every comparison."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from safescan.carrier import pin as pinmod
from safescan.carrier import rom
from safescan.carrier.apdu import CommandApdu, Reason, StatusWord, retries_status
from safescan.carrier.firmware.common import refuse

if TYPE_CHECKING:
    from safescan.carrier.device import Card


def check_pin(card: Card, block: bytes) -> None:
    """Pre-decrement, persist, compare; restore on success. Raises Refusal when wrong."""
    image = card.image
    assert image is not None and image.pin_salt is not None and image.pin_verifier is not None
    try:
        candidate = pinmod.unpad_pin(block)
    except pinmod.PinFormatError as exc:
        raise refuse(StatusWord.WRONG_DATA, Reason.BAD_PIN_FORMAT, str(exc)) from None
    if card.ram.wrong_pins >= rom.WRONG_PINS_PER_POWER_CYCLE:
        raise refuse(
            StatusWord.CONDITIONS_NOT_SATISFIED,
            Reason.RESTART_REQUIRED,
            "too many wrong PINs: unplug the carrier and plug it in again",
        )
    image.retries_left -= 1
    card.eeprom.write(image)  # the try is spent before the comparison
    if pinmod.matches(card.eeprom.pin_key, image.pin_salt, candidate, image.pin_verifier):
        return
    card.ram.pin_verified = False
    card.ram.wrong_pins += 1
    if image.retries_left == 0:
        card.self_destruct(Reason.PIN_REQUIRED)
        raise refuse(
            StatusWord.AUTH_METHOD_BLOCKED,
            Reason.DESTROYED,
            "wrong PIN: no tries left, the carrier has destroyed its keys",
        )
    raise refuse(
        retries_status(image.retries_left),
        Reason.NONE,
        f"wrong PIN: {image.retries_left} tries left",
    )


def _pin_ok(card: Card) -> None:
    image = card.image
    assert image is not None
    image.retries_left = image.retry_limit
    card.eeprom.write(image)
    card.ram.wrong_pins = 0
    card.ram.pin_verified = True


def verify_pin(card: Card, command: CommandApdu) -> bytes:
    """VERIFY PIN (a PIN block), or the status query (no data: no try is spent)."""
    image = card.image
    assert image is not None
    if not command.data:  # status query: no try is spent
        if card.ram.pin_verified:
            return b""
        raise refuse(retries_status(image.retries_left), Reason.NONE, "PIN not verified")
    check_pin(card, command.data)
    _pin_ok(card)
    return b""


def change_pin(card: Card, command: CommandApdu) -> bytes:
    """CHANGE PIN: old block || new block; the old PIN is checked like VERIFY PIN."""
    if len(command.data) != 2 * rom.PIN_BLOCK:
        raise refuse(StatusWord.WRONG_LENGTH, Reason.BAD_LENGTH, "send old and new PIN blocks")
    image = card.image
    assert image is not None
    try:
        new = pinmod.unpad_pin(command.data[rom.PIN_BLOCK :])
    except pinmod.PinFormatError as exc:
        raise refuse(StatusWord.WRONG_DATA, Reason.BAD_PIN_FORMAT, f"new PIN: {exc}") from None
    check_pin(card, command.data[: rom.PIN_BLOCK])
    salt = secrets.token_bytes(16)
    image.pin_salt = salt
    image.pin_verifier = bytearray(pinmod.verifier(card.eeprom.pin_key, salt, new))
    _pin_ok(card)
    return b""
