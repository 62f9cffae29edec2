"""The card: microprocessor (APDU dispatcher), security logic unit and self-destruct unit.

:class:`Card` takes raw command APDUs and returns raw response APDUs; it never raises for
anything a host can send. RAM (:class:`_Ram`) is lost on every power cycle; the EEPROM image
(:mod:`safescan.carrier.eeprom`) is the only thing that persists.

Access rules (checked in this order for every command; see docs/carrier.md):

1. DESTROYED: every command answers ``6983``.
2. Parse strictly (``6700``), class byte (``6E00``), instruction (``6D00``), P1/P2 (``6A86``).
3. Applet selected (``6985``), secure channel where required (``6982``), lifecycle
   (``6985``), verified PIN where required (``6982``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safescan.carrier import rom
from safescan.carrier.apdu import CommandApdu, Ins, Reason, StatusWord
from safescan.carrier.channel import Session
from safescan.carrier.eeprom import Eeprom, Image, Lifecycle, Storage
from safescan.carrier.errors import ApduError, ChannelError, ImageError
from safescan.carrier.firmware import (
    display,
    identity,
    keys,
    payment,
    personalization,
    pin_commands,
)
from safescan.carrier.firmware.common import (
    DESTROYED_TEXT,
    MAX_COUNTER,
    LastError,
    Pending,
    Refusal,
    refuse,
)
from safescan.carrier.firmware.display import Prompt

__all__ = ["Card"]

log = logging.getLogger("safescan.carrier")


@dataclass
class _Ram:
    """Volatile state: gone at every power cycle."""

    selected: bool = False
    session: Session | None = None
    pin_verified: bool = False
    wrong_pins: int = 0  # consecutive wrong PINs in this power cycle
    pending: Pending | None = None
    close_after_response: bool = False
    session_no: int = 0  # bumped by every OPEN SECURE CHANNEL
    level: int | None = None  # the session the running command arrived in (None: clear)
    last_error: LastError | None = None
    prompt: Prompt | None = None  # display model: the confirmation the screen asks for
    screen: dict[str, Any] = field(default_factory=lambda: {"state": "idle"})

    def end_session(self) -> None:
        """Close the channel and forget everything tied to it."""
        if self.session is not None:
            self.session.close()
        self.session = None
        self.pin_verified = False
        self.pending = None
        self.prompt = None


@dataclass
class _Keys:
    """Key objects built from the image at power-on (RAM)."""

    attestation: Ed25519PrivateKey | None = None
    signing: Ed25519PrivateKey | None = None
    transport: X25519PrivateKey | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Rule:
    handler: Callable[[Card, CommandApdu], bytes]
    cla: int  # CLA in clear (0x00 or 0x80); 0x84 is accepted if ``secure`` allows it
    secure: str  # "never", "optional", "required"
    lifecycles: frozenset[Lifecycle]
    pin: bool = False
    select: bool = True
    p1p2: tuple[tuple[int, int], ...] | None = ((0, 0),)


ANY_P1P2 = None  # the handler (or _GET_DATA) decides
_BOTH = frozenset({Lifecycle.BLANK, Lifecycle.PERSONALIZED})
_BLANK = frozenset({Lifecycle.BLANK})
_PERSO = frozenset({Lifecycle.PERSONALIZED})


class Card:
    """The emulated key carrier: feed it command APDUs with :meth:`transmit`."""

    def __init__(
        self,
        storage: Storage,
        *,
        clock: Callable[[], int] | None = None,
        model: int = 1,
    ) -> None:
        """``model`` (1 plain, 2 display) is the hardware a virgin chip is manufactured as;
        an existing image keeps the model it was made with (see :attr:`model`)."""
        self.eeprom = Eeprom(storage)
        self.manufactured_model = model
        #: called with the new screen whenever the display changes (the process renders it)
        self.on_screen: Callable[[dict[str, Any]], None] | None = None
        self.clock = clock or (lambda: int(time.time()))
        self.ram = _Ram()
        self.image: Image | None = None
        self.keys = _Keys()
        self.powered = False
        #: a self-destruct whose DESTROYED image could not be written (the EEPROM refused):
        #: the card stays destroyed in this process and writes it again at every power-on
        self.destruction_unwritten = False

    # --- power ----------------------------------------------------------------------------

    def power_on(self) -> bytes:
        """Cold start: clear RAM, read the EEPROM (self-destruct if corrupt); returns the ATR."""
        self.ram = _Ram()
        self.keys = _Keys()
        if self.destruction_unwritten and self.image is not None:
            # never read the old image back: it still holds the keys the card destroyed
            self._write_destruction(self.image)
            self.powered = True
            return rom.ATR
        try:
            self.image = self.eeprom.load(self.manufactured_model)
        except ImageError:
            self.image = Image(Lifecycle.BLANK, device_id=bytes(8))
            self.self_destruct(Reason.INTERNAL)
        else:
            image = self.image
            if image.lifecycle is Lifecycle.PERSONALIZED and image.retries_left == 0:
                # A try was spent and never resolved (power lost mid-check): count it as wrong.
                self.self_destruct(Reason.PIN_REQUIRED)
            else:
                self.load_keys()
        self.powered = True
        return rom.ATR

    def install_trust_anchor(self, keys: dict[int, bytes]) -> bool:
        """Factory step: fuse the institution root key(s) this carrier will trust.

        Only a BLANK carrier with no anchor yet takes one; PERSONALIZE then accepts only a
        bundle signed under it. Returns True if installed, False if the card already has one
        (or is no longer blank), so re-running the factory step changes nothing.
        """
        image = self.image
        if image is None or image.lifecycle is not Lifecycle.BLANK or image.institution_keys:
            return False
        if not keys or any(len(raw) != 32 for raw in keys.values()):
            raise ValueError("a trust anchor is one or more 32-byte Ed25519 keys")
        image.institution_keys = sorted(keys.items())
        self.eeprom.write(image)
        return True

    def power_off(self) -> None:
        """Power lost: RAM (session, PIN status, pending code) is gone."""
        self.ram.end_session()
        self.ram = _Ram()
        self.keys = _Keys()
        self.powered = False

    def reset(self) -> bytes:
        """Warm reset: same as a power cycle for RAM."""
        self.power_off()
        return self.power_on()

    # --- trusted time ---------------------------------------------------------------------

    def trusted_now(self) -> int:
        """The time a code's expiry, a certificate's validity and a scheme key's retirement are
        judged at: the later of the card's clock and the newest institution-signed time the
        card has verified (the EEPROM's time mark). The clock is the host's (or the carrier
        host's) to set; a clock set back cannot make the card believe an earlier time than one
        the institution signed and the card checked."""
        mark = self.image.time_mark if self.image is not None else 0
        return max(self.clock(), mark)

    def advance_time_mark(self, signed_at: int) -> None:
        """Raise the time mark (RAM image) to ``signed_at``: an institution-signed time the
        card has just verified. Only ever forward; a value the image cannot hold (63 bits) is
        ignored. The caller writes the image (see :meth:`keep_time_mark`)."""
        image = self.image
        assert image is not None
        if image.time_mark < signed_at <= MAX_COUNTER:
            image.time_mark = signed_at

    def keep_time_mark(self) -> None:
        """Write the image when the mark has moved more than :data:`rom.TIME_MARK_STEP` past
        the one the EEPROM holds (EEPROM wear: an opened code moves the mark every time)."""
        image = self.image
        assert image is not None
        if image.time_mark - self.eeprom.kept_time_mark > rom.TIME_MARK_STEP:
            self.eeprom.write(image)

    @property
    def model(self) -> int:
        """The carrier model recorded at manufacture (1 plain, 2 display)."""
        return self.image.model if self.image is not None else self.manufactured_model

    @property
    def lifecycle(self) -> Lifecycle:
        """The current lifecycle state."""
        return self.image.lifecycle if self.image is not None else Lifecycle.DESTROYED

    def load_keys(self) -> None:
        """Build the key objects from the image (power-on, after GENERATE KEYS)."""
        image = self.image
        assert image is not None
        keys = _Keys()
        if image.attestation_seed is not None:
            keys.attestation = Ed25519PrivateKey.from_private_bytes(bytes(image.attestation_seed))
        if image.signing_seed is not None:
            keys.signing = Ed25519PrivateKey.from_private_bytes(bytes(image.signing_seed))
        if image.transport_seed is not None:
            keys.transport = X25519PrivateKey.from_private_bytes(bytes(image.transport_seed))
        self.keys = keys

    # --- self-destruct unit ---------------------------------------------------------------

    def self_destruct(self, reason: Reason) -> None:
        """Zeroise every key, sync the DESTROYED image; nothing works after this, ever."""
        self.ram.end_session()
        self.ram = _Ram()
        self.keys = _Keys()
        image = self.image
        assert image is not None
        image.zeroise(int(reason))
        self._write_destruction(image)

    def _write_destruction(self, image: Image) -> bool:
        """Persist the DESTROYED image; True once it is written.

        Before: a failed write was suppressed, and the next power cycle in the same process
        (a host reconnecting) read the old image back, keys and all, although the tamper
        sensor had answered "destroyed". Now the card stays destroyed in RAM and tries the
        write again at every power-on; the failure is logged (no secret in it).
        """
        try:
            self.eeprom.destroy(image)
        except ImageError as exc:
            self.destruction_unwritten = True
            log.error(
                "self-destruct: the DESTROYED image could not be written (%s); the card stays"
                " destroyed in this process and writes it again at every power-on",
                exc.message,
            )
            return False
        self.destruction_unwritten = False
        return True

    # --- the display model's screen and buttons (physical, see firmware/display.py) --------

    @property
    def screen(self) -> dict[str, Any]:
        """What the carrier's own display shows (display model; RAM)."""
        return dict(self.ram.screen)

    def set_screen(self, screen: dict[str, Any]) -> None:
        """Change the display (firmware only)."""
        self.ram.screen = dict(screen)
        if self.on_screen is not None:
            self.on_screen(self.screen)

    def press(self, ok: bool) -> str:
        """A button on the device: OK (True) or Cancel (False). No APDU reaches this."""
        if self.image is None:
            self.power_on()
        if self.lifecycle is Lifecycle.DESTROYED:
            return "destroyed"
        return display.press(self, ok)

    def tamper(self) -> bool:
        """The tamper sensor fired (a physical event: no APDU reaches this): self-destruct.

        Returns whether the DESTROYED image is written (False: destroyed in RAM only, the
        EEPROM refused the write; see :meth:`_write_destruction`)."""
        if self.image is None:
            self.power_on()
        if self.lifecycle is not Lifecycle.DESTROYED:
            self.self_destruct(Reason.TAMPERED)
        elif self.destruction_unwritten:
            assert self.image is not None
            self._write_destruction(self.image)
        return not self.destruction_unwritten

    # --- microprocessor -------------------------------------------------------------------

    def transmit(self, raw: bytes) -> bytes:
        """Process one command APDU; returns the response APDU bytes. Never raises.

        An error answer is the status word alone (ISO/IEC 7816-4: no data with an error
        status); its reason and message are kept in RAM for GET DATA "last error".
        """
        if not self.powered:
            self.power_on()
        try:
            command = CommandApdu.from_bytes(raw)
        except ApduError as exc:
            ins = raw[1] if len(raw) > 1 else 0
            return self._fail(StatusWord.WRONG_LENGTH, ins, Reason.BAD_LENGTH, exc.message, None)
        if self.lifecycle is Lifecycle.DESTROYED:
            return self._fail(
                StatusWord.AUTH_METHOD_BLOCKED, command.ins, Reason.DESTROYED, DESTROYED_TEXT, None
            )
        if command.cla == rom.CLA_SECURE:
            return self._transmit_secure(command)
        if command.cla not in (rom.CLA_ISO, rom.CLA_PROPRIETARY):
            return self._fail(
                StatusWord.CLA_NOT_SUPPORTED,
                command.ins,
                Reason.UNKNOWN_CLA,
                "class not supported",
                None,
            )
        data, sw, reason, text = self._execute(command, level=None)
        return self._answer(command, data, sw, reason, text, None)

    def _fail(self, sw: int, ins: int, reason: Reason, message: str, level: int | None) -> bytes:
        """Record a refusal for GET DATA "last error"; the answer is the status word alone."""
        self.ram.last_error = LastError(sw, ins, reason, message[:200], level)
        return sw.to_bytes(2, "big")

    def _answer(
        self,
        command: CommandApdu,
        data: bytes,
        sw: int,
        reason: Reason,
        message: str,
        level: int | None,
    ) -> bytes:
        if _reads_last_error(command):  # reading the last error never replaces it
            return data + sw.to_bytes(2, "big")
        if sw == StatusWord.SUCCESS:
            self.ram.last_error = None
            return data + sw.to_bytes(2, "big")
        return self._fail(sw, command.ins, reason, message, level)

    def _transmit_secure(self, command: CommandApdu) -> bytes:
        session = self.ram.session
        if session is None:
            return self._fail(
                StatusWord.SM_DATA_MISSING,
                command.ins,
                Reason.CHANNEL_REQUIRED,
                "no secure channel is open",
                None,
            )
        try:
            body = session.open_command(command.header, command.data)
        except ChannelError as exc:
            self.ram.end_session()
            return self._fail(
                StatusWord.SM_DATA_INCORRECT, command.ins, Reason.CHANNEL_FAILURE, exc.message, None
            )
        level = self.ram.session_no
        inner = CommandApdu(command.cla, command.ins, command.p1, command.p2, body)
        data, sw, reason, text = self._execute(inner, level=level)
        if self.lifecycle is Lifecycle.DESTROYED:
            # The command destroyed the card (last wrong PIN): the keys are gone; in clear.
            return self._fail(
                StatusWord.AUTH_METHOD_BLOCKED,
                command.ins,
                Reason.DESTROYED,
                text or DESTROYED_TEXT,
                None,
            )
        answer = self._answer(inner, data, sw, reason, text, level)
        frame = session.seal_response(command.header, answer)
        if self.ram.close_after_response:
            self.ram.close_after_response = False
            self.ram.end_session()
        return frame + StatusWord.SUCCESS.to_bytes(2, "big")

    def _execute(
        self, command: CommandApdu, *, level: int | None
    ) -> tuple[bytes, int, Reason, str]:
        secure = level is not None
        self.ram.level = level
        try:
            rule = _RULES.get(command.ins)
            if rule is None:
                raise refuse(StatusWord.INS_NOT_SUPPORTED, Reason.UNKNOWN_INS, "unknown command")
            if command.ins == Ins.GET_DATA:
                rule = _GET_DATA.get((command.p1, command.p2), rule)
            if not secure and command.cla != rule.cla:
                raise refuse(StatusWord.INS_NOT_SUPPORTED, Reason.UNKNOWN_INS, "not in this class")
            if secure and rule.secure == "never":
                raise refuse(
                    StatusWord.CONDITIONS_NOT_SATISFIED,
                    Reason.BAD_DATA,
                    "this command is not used inside the secure channel",
                )
            if rule.p1p2 is not None and (command.p1, command.p2) not in rule.p1p2:
                raise refuse(StatusWord.INCORRECT_P1P2, Reason.BAD_P1P2, "wrong P1/P2")
            if rule.select and not self.ram.selected:
                raise refuse(
                    StatusWord.CONDITIONS_NOT_SATISFIED, Reason.NOT_SELECTED, "select the applet"
                )
            if rule.secure == "required" and not secure:
                raise refuse(
                    StatusWord.SECURITY_STATUS_NOT_SATISFIED,
                    Reason.CHANNEL_REQUIRED,
                    "this command needs the secure channel",
                )
            if self.lifecycle not in rule.lifecycles:
                if self.lifecycle is Lifecycle.BLANK:
                    raise refuse(
                        StatusWord.CONDITIONS_NOT_SATISFIED,
                        Reason.NOT_PERSONALIZED,
                        "the carrier is not personalised yet",
                    )
                raise refuse(
                    StatusWord.CONDITIONS_NOT_SATISFIED,
                    Reason.ALREADY_PERSONALIZED,
                    "the carrier is already personalised",
                )
            if rule.pin and not self.ram.pin_verified:
                raise refuse(
                    StatusWord.SECURITY_STATUS_NOT_SATISFIED,
                    Reason.PIN_REQUIRED,
                    "verify the PIN first",
                )
            return rule.handler(self, command), StatusWord.SUCCESS, Reason.NONE, ""
        except Refusal as refusal:
            return b"", refusal.sw, refusal.reason, refusal.message
        except ImageError as exc:
            return b"", StatusWord.MEMORY_FAILURE, Reason.INTERNAL, f"EEPROM: {exc.message}"


def _reads_last_error(command: CommandApdu) -> bool:
    return command.ins == Ins.GET_DATA and (command.p1 << 8 | command.p2) == rom.DO_LAST_ERROR


def _unknown_object(card: Card, command: CommandApdu) -> bytes:
    raise refuse(StatusWord.REFERENCED_DATA_NOT_FOUND, Reason.UNKNOWN_OBJECT, "no such data object")


_RULES: dict[int, _Rule] = {
    Ins.SELECT: _Rule(
        identity.select, rom.CLA_ISO, "never", _BOTH, select=False, p1p2=((4, 0), (4, 0x0C))
    ),
    # GET DATA: the data object is chosen by P1P2 (_GET_DATA); any other P1P2 is unknown
    Ins.GET_DATA: _Rule(
        _unknown_object, rom.CLA_PROPRIETARY, "optional", _BOTH, select=False, p1p2=ANY_P1P2
    ),
    Ins.GENERATE_KEYS: _Rule(
        personalization.generate_keys, rom.CLA_PROPRIETARY, "required", _BLANK
    ),
    Ins.OPEN_SECURE_CHANNEL: _Rule(identity.open_channel, rom.CLA_PROPRIETARY, "never", _BOTH),
    Ins.VERIFY_PIN: _Rule(pin_commands.verify_pin, rom.CLA_PROPRIETARY, "required", _PERSO),
    Ins.CHANGE_PIN: _Rule(pin_commands.change_pin, rom.CLA_PROPRIETARY, "required", _PERSO),
    Ins.PERSONALIZE: _Rule(personalization.personalize, rom.CLA_PROPRIETARY, "required", _BLANK),
    Ins.PUT_DATA: _Rule(
        personalization.put_attestation,
        rom.CLA_PROPRIETARY,
        "never",
        _BLANK,
        p1p2=(divmod(rom.DO_ATTESTATION_CERT, 256),),
    ),
    Ins.OPEN_CODE: _Rule(payment.open_code, rom.CLA_PROPRIETARY, "required", _PERSO),
    Ins.AUTHORIZE_PAYMENT: _Rule(
        payment.authorize, rom.CLA_PROPRIETARY, "required", _PERSO, pin=True
    ),
    Ins.UPDATE_REVOCATIONS: _Rule(keys.update_revocations, rom.CLA_PROPRIETARY, "optional", _PERSO),
    Ins.KEY_UPDATE: _Rule(keys.key_update, rom.CLA_PROPRIETARY, "optional", _PERSO),
}

#: GET DATA objects by P1P2 (docs/carrier.md).
_GET_DATA: dict[tuple[int, int], _Rule] = {
    divmod(rom.DO_CARD_INFO, 256): _Rule(
        identity.get_info, rom.CLA_PROPRIETARY, "optional", _BOTH, p1p2=ANY_P1P2
    ),
    divmod(rom.DO_LAST_ERROR, 256): _Rule(
        identity.last_error, rom.CLA_PROPRIETARY, "optional", _BOTH, select=False, p1p2=ANY_P1P2
    ),
}
