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

import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safescan.carrier import pin as pinmod
from safescan.carrier import rom
from safescan.carrier.apdu import CommandApdu, Ins, Reason, StatusWord, retries_status
from safescan.carrier.channel import KeyKind, Session, card_handshake
from safescan.carrier.eeprom import Eeprom, Image, Lifecycle, Storage
from safescan.carrier.errors import ApduError, ChannelError, ImageError
from safescan.code.errors import SafescanError

KEYGEN_CONTEXT = b"SS1-KEYGEN"
_MAX_COUNTER = 2**63 - 1

#: safescan.code error codes -> reason codes of a refused payment code.
_CODE_REASONS = {
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
    """Internal: a handler refuses the command with a status word and reason."""

    def __init__(self, sw: int, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.sw = sw
        self.reason = reason
        self.message = message


def _refuse(sw: int, reason: Reason, message: str) -> Refusal:
    return Refusal(sw, reason, message)


@dataclass
class Pending:
    """The code just opened, waiting for the customer's confirmation (RAM only)."""

    digest: bytes
    merchant_id: str
    order_id: str
    amount: int | None  # None: a static code, the customer enters the amount
    currency: int | None  # None: a static code without a fixed currency


@dataclass
class _Ram:
    """Volatile state: gone at every power cycle."""

    selected: bool = False
    session: Session | None = None
    pin_verified: bool = False
    wrong_pins: int = 0  # consecutive wrong PINs in this power cycle
    pending: Pending | None = None
    close_after_response: bool = False

    def end_session(self) -> None:
        """Close the channel and forget everything tied to it."""
        if self.session is not None:
            self.session.close()
        self.session = None
        self.pin_verified = False
        self.pending = None


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
    p1p2: tuple[tuple[int, int], ...] = ((0, 0),)


_BOTH = frozenset({Lifecycle.BLANK, Lifecycle.PERSONALIZED})
_BLANK = frozenset({Lifecycle.BLANK})
_PERSO = frozenset({Lifecycle.PERSONALIZED})


class Card:
    """The emulated key carrier: feed it command APDUs with :meth:`transmit`."""

    def __init__(self, storage: Storage, *, clock: Callable[[], int] | None = None) -> None:
        self.eeprom = Eeprom(storage)
        self.clock = clock or (lambda: int(time.time()))
        self.ram = _Ram()
        self.image: Image | None = None
        self.keys = _Keys()
        self.powered = False

    # --- power ----------------------------------------------------------------------------

    def power_on(self) -> bytes:
        """Cold start: clear RAM, read the EEPROM (self-destruct if corrupt); returns the ATR."""
        self.ram = _Ram()
        self.keys = _Keys()
        try:
            self.image = self.eeprom.load()
        except ImageError:
            self.image = Image(Lifecycle.BLANK, device_id=bytes(8))
            self._self_destruct(Reason.INTERNAL)
        else:
            image = self.image
            if image.lifecycle is Lifecycle.PERSONALIZED and image.retries_left == 0:
                # A try was spent and never resolved (power lost mid-check): count it as wrong.
                self._self_destruct(Reason.PIN_REQUIRED)
            else:
                self._load_keys()
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

    @property
    def lifecycle(self) -> Lifecycle:
        """The current lifecycle state."""
        return self.image.lifecycle if self.image is not None else Lifecycle.DESTROYED

    def _load_keys(self) -> None:
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

    def _self_destruct(self, reason: Reason) -> None:
        """Zeroise every key, sync the DESTROYED image; nothing works after this, ever."""
        self.ram.end_session()
        self.ram = _Ram()
        self.keys = _Keys()
        image = self.image
        assert image is not None
        image.zeroise(int(reason))
        # If the write fails, the RAM copy is destroyed anyway; power-on catches the rest.
        with contextlib.suppress(ImageError):
            self.eeprom.destroy(image)

    # --- microprocessor -------------------------------------------------------------------

    def transmit(self, raw: bytes) -> bytes:
        """Process one command APDU; returns the response APDU bytes. Never raises."""
        if not self.powered:
            self.power_on()
        try:
            command = CommandApdu.from_bytes(raw)
        except ApduError as exc:
            return _error(StatusWord.WRONG_LENGTH, Reason.BAD_LENGTH, exc.message)
        if self.lifecycle is Lifecycle.DESTROYED:
            return _error(StatusWord.AUTH_METHOD_BLOCKED, Reason.DESTROYED, _DESTROYED_TEXT)
        if command.cla == rom.CLA_SECURE:
            return self._transmit_secure(command)
        if command.cla not in (rom.CLA_ISO, rom.CLA_PROPRIETARY):
            return _error(StatusWord.CLA_NOT_SUPPORTED, Reason.UNKNOWN_CLA, "class not supported")
        data, sw, reason, text = self._execute(command, secure=False)
        return _response(data, sw, reason, text)

    def _transmit_secure(self, command: CommandApdu) -> bytes:
        session = self.ram.session
        if session is None:
            return _error(
                StatusWord.SM_DATA_MISSING, Reason.CHANNEL_REQUIRED, "no secure channel is open"
            )
        try:
            body = session.open_command(command.header, command.data)
        except ChannelError as exc:
            self.ram.end_session()
            return _error(StatusWord.SM_DATA_INCORRECT, Reason.CHANNEL_FAILURE, exc.message)
        inner = CommandApdu(command.cla, command.ins, command.p1, command.p2, body)
        data, sw, reason, text = self._execute(inner, secure=True)
        if self.lifecycle is Lifecycle.DESTROYED:
            # The command destroyed the card (wrong PIN, tamper): the keys are gone; in clear.
            return _error(StatusWord.AUTH_METHOD_BLOCKED, Reason.DESTROYED, text or _DESTROYED_TEXT)
        frame = session.seal_response(command.header, _response(data, sw, reason, text))
        if self.ram.close_after_response:
            self.ram.close_after_response = False
            self.ram.end_session()
        return frame + StatusWord.SUCCESS.to_bytes(2, "big")

    def _execute(self, command: CommandApdu, *, secure: bool) -> tuple[bytes, int, Reason, str]:
        try:
            rule = _RULES.get(command.ins)
            if rule is None:
                raise _refuse(StatusWord.INS_NOT_SUPPORTED, Reason.UNKNOWN_INS, "unknown command")
            if not secure and command.cla != rule.cla:
                raise _refuse(StatusWord.INS_NOT_SUPPORTED, Reason.UNKNOWN_INS, "not in this class")
            if secure and rule.secure == "never":
                raise _refuse(
                    StatusWord.CONDITIONS_NOT_SATISFIED,
                    Reason.BAD_DATA,
                    "this command is not used inside the secure channel",
                )
            if (command.p1, command.p2) not in rule.p1p2:
                raise _refuse(StatusWord.INCORRECT_P1P2, Reason.BAD_P1P2, "wrong P1/P2")
            if rule.select and not self.ram.selected:
                raise _refuse(
                    StatusWord.CONDITIONS_NOT_SATISFIED, Reason.NOT_SELECTED, "select the applet"
                )
            if rule.secure == "required" and not secure:
                raise _refuse(
                    StatusWord.SECURITY_STATUS_NOT_SATISFIED,
                    Reason.CHANNEL_REQUIRED,
                    "this command needs the secure channel",
                )
            if self.lifecycle not in rule.lifecycles:
                if self.lifecycle is Lifecycle.BLANK:
                    raise _refuse(
                        StatusWord.CONDITIONS_NOT_SATISFIED,
                        Reason.NOT_PERSONALIZED,
                        "the carrier is not personalised yet",
                    )
                raise _refuse(
                    StatusWord.CONDITIONS_NOT_SATISFIED,
                    Reason.ALREADY_PERSONALIZED,
                    "the carrier is already personalised",
                )
            if rule.pin and not self.ram.pin_verified:
                raise _refuse(
                    StatusWord.SECURITY_STATUS_NOT_SATISFIED,
                    Reason.PIN_REQUIRED,
                    "verify the PIN first",
                )
            return rule.handler(self, command), StatusWord.SUCCESS, Reason.NONE, ""
        except Refusal as refusal:
            return b"", refusal.sw, refusal.reason, refusal.message
        except ImageError as exc:
            return b"", StatusWord.UNKNOWN, Reason.INTERNAL, f"EEPROM failure: {exc.message}"

    # --- handlers (security logic unit) ---------------------------------------------------

    def _select(self, command: CommandApdu) -> bytes:
        if command.data != rom.AID:
            raise _refuse(StatusWord.APPLET_NOT_FOUND, Reason.UNKNOWN_AID, "no such applet")
        self.ram.end_session()
        self.ram.selected = True
        if command.p2 == 0x0C:
            return b""
        return bytes(rom.VERSION) + bytes([int(self.lifecycle)])

    def _get_info(self, command: CommandApdu) -> bytes:
        _no_data(command)
        image = self.image
        assert image is not None
        doc: dict[int, Any] = {
            1: list(rom.VERSION),
            2: int(image.lifecycle),
            3: image.device_id,
            9: image.signature_counter,
            12: rom.WRONG_PINS_PER_POWER_CYCLE - self.ram.wrong_pins,
            13: list(rom.ALGORITHMS),
        }
        if self.keys.attestation is not None:
            doc[4] = self.keys.attestation.public_key().public_bytes_raw()
        if image.lifecycle is Lifecycle.PERSONALIZED:
            doc[5] = image.carrier_serial
            doc[6] = image.certificate
            doc[7] = image.retries_left
            doc[8] = image.retry_limit
            doc[14] = image.crl_sequence
        if self.keys.signing is not None:
            doc[10] = self.keys.signing.public_key().public_bytes_raw()
        if self.keys.transport is not None:
            doc[11] = self.keys.transport.public_key().public_bytes_raw()
        return cbor2.dumps(doc, canonical=True)

    def _generate_keys(self, command: CommandApdu) -> bytes:
        _no_data(command)
        image = self.image
        assert image is not None and self.keys.attestation is not None
        signing, transport = secrets.token_bytes(32), secrets.token_bytes(32)
        image.signing_seed = bytearray(signing)
        image.transport_seed = bytearray(transport)
        self.eeprom.write(image)
        self._load_keys()
        assert self.keys.signing is not None and self.keys.transport is not None
        signing_pub = self.keys.signing.public_key().public_bytes_raw()
        transport_pub = self.keys.transport.public_key().public_bytes_raw()
        evidence = KEYGEN_CONTEXT + image.device_id + signing_pub + transport_pub
        signature = self.keys.attestation.sign(evidence)
        return cbor2.dumps(
            {1: signing_pub, 2: transport_pub, 3: image.device_id, 4: signature}, canonical=True
        )

    def _open_channel(self, command: CommandApdu) -> bytes:
        if len(command.data) != 32:
            raise _refuse(StatusWord.WRONG_LENGTH, Reason.BAD_LENGTH, "send a 32-byte X25519 key")
        image = self.image
        assert image is not None
        self.ram.end_session()
        if image.lifecycle is Lifecycle.PERSONALIZED:
            assert self.keys.signing is not None and image.certificate is not None
            key, kind, identity = self.keys.signing, KeyKind.CERTIFIED, image.certificate
        else:
            assert self.keys.attestation is not None
            key, kind = self.keys.attestation, KeyKind.ATTESTATION
            identity = key.public_key().public_bytes_raw()
        try:
            response, session = card_handshake(command.data, key, kind, identity)
        except ChannelError as exc:
            raise _refuse(StatusWord.WRONG_DATA, Reason.BAD_DATA, exc.message) from None
        self.ram.session = session
        return response

    def _check_pin(self, block: bytes) -> None:
        """Pre-decrement, persist, compare; restore on success. Raises Refusal when wrong."""
        image = self.image
        assert image is not None and image.pin_salt is not None and image.pin_verifier is not None
        try:
            candidate = pinmod.unpad_pin(block)
        except pinmod.PinFormatError as exc:
            raise _refuse(StatusWord.WRONG_DATA, Reason.BAD_PIN_FORMAT, str(exc)) from None
        if self.ram.wrong_pins >= rom.WRONG_PINS_PER_POWER_CYCLE:
            raise _refuse(
                StatusWord.CONDITIONS_NOT_SATISFIED,
                Reason.RESTART_REQUIRED,
                "too many wrong PINs: unplug the carrier and plug it in again",
            )
        image.retries_left -= 1
        self.eeprom.write(image)  # the try is spent before the comparison
        if pinmod.matches(self.eeprom.pin_key, image.pin_salt, candidate, image.pin_verifier):
            return
        self.ram.pin_verified = False
        self.ram.wrong_pins += 1
        if image.retries_left == 0:
            self._self_destruct(Reason.PIN_REQUIRED)
            raise _refuse(
                StatusWord.AUTH_METHOD_BLOCKED,
                Reason.DESTROYED,
                "wrong PIN: no tries left, the carrier has destroyed its keys",
            )
        raise _refuse(
            retries_status(image.retries_left),
            Reason.NONE,
            f"wrong PIN: {image.retries_left} tries left",
        )

    def _pin_ok(self) -> None:
        image = self.image
        assert image is not None
        image.retries_left = image.retry_limit
        self.eeprom.write(image)
        self.ram.wrong_pins = 0
        self.ram.pin_verified = True

    def _verify_pin(self, command: CommandApdu) -> bytes:
        image = self.image
        assert image is not None
        if not command.data:  # status query: no try is spent
            if self.ram.pin_verified:
                return b""
            raise _refuse(retries_status(image.retries_left), Reason.NONE, "PIN not verified")
        self._check_pin(command.data)
        self._pin_ok()
        return b""

    def _change_pin(self, command: CommandApdu) -> bytes:
        if len(command.data) != 2 * rom.PIN_BLOCK:
            raise _refuse(StatusWord.WRONG_LENGTH, Reason.BAD_LENGTH, "send old and new PIN blocks")
        image = self.image
        assert image is not None
        try:
            new = pinmod.unpad_pin(command.data[rom.PIN_BLOCK :])
        except pinmod.PinFormatError as exc:
            raise _refuse(StatusWord.WRONG_DATA, Reason.BAD_PIN_FORMAT, f"new PIN: {exc}") from None
        self._check_pin(command.data[: rom.PIN_BLOCK])
        salt = secrets.token_bytes(16)
        image.pin_salt = salt
        image.pin_verifier = bytearray(pinmod.verifier(self.eeprom.pin_key, salt, new))
        self._pin_ok()
        return b""

    def _personalize(self, command: CommandApdu) -> bytes:
        image = self.image
        assert image is not None
        if self.keys.signing is None or self.keys.transport is None:
            raise _refuse(
                StatusWord.CONDITIONS_NOT_SATISFIED,
                Reason.KEYS_NOT_GENERATED,
                "generate the carrier's keys first",
            )
        try:
            value = cbor2.loads(command.data)
        except (cbor2.CBORError, ValueError, TypeError, RecursionError):
            raise _refuse(StatusWord.WRONG_DATA, Reason.BAD_DATA, "not CBOR") from None
        if (
            not isinstance(value, list)
            or len(value) != 3
            or not isinstance(value[0], bytes)
            or not isinstance(value[1], bytes)
            or isinstance(value[2], bool)
            or not isinstance(value[2], int)
        ):
            raise _refuse(
                StatusWord.WRONG_DATA, Reason.BAD_DATA, "expected [bundle, PIN block, retry limit]"
            )
        bundle_bytes, block, limit = value
        if not rom.RETRY_LIMIT_MIN <= limit <= rom.RETRY_LIMIT_MAX:
            raise _refuse(
                StatusWord.WRONG_DATA,
                Reason.BAD_RETRY_LIMIT,
                f"the retry limit must be {rom.RETRY_LIMIT_MIN}-{rom.RETRY_LIMIT_MAX}",
            )
        try:
            pin_digits = pinmod.unpad_pin(block)
        except pinmod.PinFormatError as exc:
            raise _refuse(StatusWord.WRONG_DATA, Reason.BAD_PIN_FORMAT, str(exc)) from None
        from safescan.code.certs import TrustStore
        from safescan.code.keys import VerifyKey
        from safescan.code.provisioning import open_bundle

        # A factory-installed anchor (BLANK image's institution keys) pins the institution.
        anchor = (
            TrustStore({kid: VerifyKey(raw) for kid, raw in image.institution_keys})
            if image.institution_keys
            else None
        )
        try:
            bundle = open_bundle(
                bundle_bytes,
                self.keys.transport,
                carrier_signing_key=VerifyKey(self.keys.signing.public_key().public_bytes_raw()),
                now=self.clock(),
                trust_anchor=anchor,
            )
        except SafescanError as exc:
            raise _refuse(StatusWord.WRONG_DATA, Reason.BAD_BUNDLE, exc.message) from None
        salt = secrets.token_bytes(16)
        image.carrier_serial = bundle.carrier_serial
        image.certificate = bundle.certificate.to_bytes()
        image.institution_keys = sorted((k, v.raw) for k, v in bundle.institution_keys.items())
        image.scheme_keys = [
            (k.kid, bytearray(k.private_bytes()), k.retire_at or 0) for k in bundle.scheme_keys
        ]
        image.pin_salt = salt
        image.pin_verifier = bytearray(pinmod.verifier(self.eeprom.pin_key, salt, pin_digits))
        image.retry_limit = image.retries_left = limit
        image.personalized_at = self.clock()
        image.lifecycle = Lifecycle.PERSONALIZED
        self.eeprom.write(image)
        self.keys.extra.clear()
        # The attested session ends here; the next one is authenticated by the certified key.
        self.ram.close_after_response = True
        return b""

    def _scheme(self) -> tuple[Any, Any]:
        """The keyring and trust store, built once per power cycle."""
        if "keyring" not in self.keys.extra:
            from safescan.code.certs import TrustStore
            from safescan.code.keys import SchemeKey, SchemeKeyring, VerifyKey

            image = self.image
            assert image is not None
            ring = SchemeKeyring()
            for kid, raw, retire in image.scheme_keys:
                ring.add(SchemeKey.from_seed(kid, bytes(raw), retire or None))
            self.keys.extra["keyring"] = ring
            trust = TrustStore({kid: VerifyKey(raw) for kid, raw in image.institution_keys})
            trust.revoked_serials = frozenset(image.revoked_serials)
            trust.revoked_subjects = frozenset(image.revoked_subjects)
            trust.crl_sequence = image.crl_sequence
            self.keys.extra["trust"] = trust
        return self.keys.extra["keyring"], self.keys.extra["trust"]

    def _update_revocations(self, command: CommandApdu) -> bytes:
        """Take a newer institution-signed revocation list: merchant certificates on it are
        refused by OPEN CODE from now on (offline, whatever the host does)."""
        from safescan.code.certs import RevocationList

        image = self.image
        assert image is not None
        _, trust = self._scheme()
        try:
            crl = RevocationList.from_bytes(command.data, trust)
        except SafescanError as exc:  # malformed, unknown issuer key, signature
            raise _refuse(
                StatusWord.WRONG_DATA, Reason.BAD_DATA, f"revocation list: {exc.message}"
            ) from None
        if crl.sequence >= _MAX_COUNTER or any(n >= _MAX_COUNTER for n in crl.serials):
            # the EEPROM image holds 63-bit numbers: never take what it could not store
            raise _refuse(
                StatusWord.WRONG_DATA, Reason.BAD_DATA, "revocation list: a number is too large"
            )
        if crl.sequence <= image.crl_sequence:
            raise _refuse(
                StatusWord.CONDITIONS_NOT_SATISFIED,
                Reason.REVOCATIONS_NOT_NEWER,
                f"revocation list {crl.sequence} is not newer than {image.crl_sequence}",
            )
        if crl.entries > rom.MAX_REVOKED_SERIALS:
            # a genuine list the card cannot keep: never carry on as if unchecked. The card
            # remembers it is behind and refuses merchant-signed codes until a list fits.
            image.crl_stale = crl.sequence
            self.eeprom.write(image)
            raise _refuse(
                StatusWord.WRONG_DATA,
                Reason.OVERSIZE_INPUT,
                f"the card keeps at most {rom.MAX_REVOKED_SERIALS} revocation entries; it"
                " refuses merchant-signed codes until it gets a list it can keep",
            )
        image.crl_sequence = crl.sequence
        image.revoked_serials = sorted(crl.serials)
        image.revoked_subjects = sorted(crl.subjects)
        image.crl_stale = 0
        self.eeprom.write(image)
        trust.revoked_serials = frozenset(crl.serials)
        trust.revoked_subjects = frozenset(crl.subjects)
        trust.crl_sequence = crl.sequence
        return cbor2.dumps({1: crl.sequence, 2: crl.entries}, canonical=True)

    def _open_code(self, command: CommandApdu) -> bytes:
        from safescan.code.envelope import PREFIX, open_code
        from safescan.code.payment import DynamicCode

        self.ram.pending = None
        data: str | bytes = command.data
        if command.data.startswith(PREFIX.encode("ascii")):
            try:
                data = command.data.decode("ascii")
            except UnicodeDecodeError:
                raise _refuse(
                    StatusWord.WRONG_DATA, Reason.MALFORMED_CODE, "the code text is not ASCII"
                ) from None
        keyring, trust = self._scheme()
        try:
            opened = open_code(data, keyring, trust, now=self.clock())
        except SafescanError as exc:
            reason = _CODE_REASONS.get(exc.code, Reason.MALFORMED_CODE)
            raise _refuse(StatusWord.WRONG_DATA, reason, exc.message) from None
        if opened.certificate is not None and self.image is not None and self.image.crl_stale:
            raise _refuse(
                StatusWord.CONDITIONS_NOT_SATISFIED,
                Reason.REVOCATIONS_STALE,
                "this card could not keep the newest revocation list: it refuses"
                " merchant-signed codes until it gets one it can keep",
            )
        code = opened.code
        m = code.merchant
        doc: dict[int, Any] = {
            1: int(code.kind),
            2: [m.id, m.name, m.city, m.country, m.mcc],
            3: opened.issuer,
            10: code.issued_at,
            11: code.expires_at,
            12: list(opened.warnings),
            13: opened.digest,
            14: opened.header.kid,
        }
        if opened.issuer_kid is not None:
            doc[4] = opened.issuer_kid
        if opened.certificate is not None:
            # Merchant-signed: open_code (above, on the card) took every identity field in
            # doc[2] from this institution-certified certificate (v2), never from the code's
            # own text. The certificate goes out too, so the wallet can re-check that binding.
            doc[5] = opened.certificate.serial
            doc[15] = opened.certificate.to_bytes()
        if isinstance(code, DynamicCode):
            doc[6] = code.order_id
            doc[7] = [[i.name, i.quantity, i.unit_price] for i in code.items]
            doc[8] = code.total
            doc[9] = code.currency
            self.ram.pending = Pending(
                opened.digest, m.id, code.order_id, code.total, code.currency
            )
        else:
            if code.currency is not None:
                doc[9] = code.currency
            self.ram.pending = Pending(opened.digest, m.id, "", None, code.currency)
        return cbor2.dumps(doc, canonical=True)

    def _authorize(self, command: CommandApdu) -> bytes:
        from safescan.code.authorization import Authorization
        from safescan.code.currency import currency as lookup_currency
        from safescan.code.keys import SigningKey
        from safescan.code.payment import check_amount

        pending, self.ram.pending = self.ram.pending, None  # consumed, whatever happens
        if pending is None:
            raise _refuse(
                StatusWord.CONDITIONS_NOT_SATISFIED, Reason.NO_PENDING_CODE, "open a code first"
            )
        try:
            value = cbor2.loads(command.data)
        except (cbor2.CBORError, ValueError, TypeError, RecursionError):
            raise _refuse(StatusWord.WRONG_DATA, Reason.BAD_DATA, "not CBOR") from None
        if not isinstance(value, list) or len(value) != 3:
            raise _refuse(
                StatusWord.WRONG_DATA, Reason.BAD_DATA, "expected [merchant id, amount, currency]"
            )
        merchant_id, amount, currency = value
        mismatch = _refuse(
            StatusWord.WRONG_DATA,
            Reason.CONFIRMATION_MISMATCH,
            "the confirmed merchant, amount or currency is not the code's",
        )
        if not isinstance(merchant_id, str) or merchant_id != pending.merchant_id:
            raise mismatch
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise mismatch
        if isinstance(currency, bool) or not isinstance(currency, int):
            raise mismatch
        if pending.amount is not None and amount != pending.amount:
            raise mismatch
        if pending.currency is not None and currency != pending.currency:
            raise mismatch
        try:
            check_amount(amount)
            lookup_currency(currency)
        except SafescanError as exc:
            reason = _CODE_REASONS.get(exc.code, Reason.BAD_DATA)
            raise _refuse(StatusWord.WRONG_DATA, reason, exc.message) from None
        image = self.image
        assert image is not None and self.keys.signing is not None
        assert image.carrier_serial is not None
        if image.signature_counter >= _MAX_COUNTER:
            raise _refuse(
                StatusWord.CONDITIONS_NOT_SATISFIED,
                Reason.COUNTER_EXHAUSTED,
                "the signature counter is exhausted",
            )
        self.ram.pin_verified = False  # one PIN verification, one payment
        image.signature_counter += 1
        self.eeprom.write(image)  # persisted before the signature exists
        auth = Authorization(
            code_digest=pending.digest,
            merchant_id=pending.merchant_id,
            order_id=pending.order_id,
            amount=amount,
            currency=currency,
            counter=image.signature_counter,
            carrier_serial=image.carrier_serial,
            created_at=self.clock(),
        )
        key = SigningKey(self.keys.signing)
        try:
            return auth.signed(key).to_bytes()
        except SafescanError as exc:
            raise _refuse(StatusWord.WRONG_DATA, Reason.BAD_DATA, exc.message) from None

    def _tamper(self, command: CommandApdu) -> bytes:
        self._self_destruct(Reason.DESTROYED)
        return b""


_DESTROYED_TEXT = "the carrier has destroyed its keys and is permanently blocked"


def _no_data(command: CommandApdu) -> None:
    if command.data:
        raise _refuse(StatusWord.WRONG_LENGTH, Reason.BAD_LENGTH, "this command takes no data")


def _error(sw: int, reason: Reason, message: str) -> bytes:
    return _response(b"", sw, reason, message)


def _response(data: bytes, sw: int, reason: Reason, message: str) -> bytes:
    if sw != StatusWord.SUCCESS and (reason or message):
        data = bytes([int(reason)]) + message.encode("utf-8")[:200]
    return data + sw.to_bytes(2, "big")


_RULES: dict[int, _Rule] = {
    Ins.SELECT: _Rule(
        Card._select, rom.CLA_ISO, "never", _BOTH, select=False, p1p2=((4, 0), (4, 0x0C))
    ),
    Ins.GET_INFO: _Rule(Card._get_info, rom.CLA_PROPRIETARY, "optional", _BOTH),
    Ins.GENERATE_KEYS: _Rule(Card._generate_keys, rom.CLA_PROPRIETARY, "required", _BLANK),
    Ins.OPEN_SECURE_CHANNEL: _Rule(Card._open_channel, rom.CLA_PROPRIETARY, "never", _BOTH),
    Ins.VERIFY_PIN: _Rule(Card._verify_pin, rom.CLA_PROPRIETARY, "required", _PERSO),
    Ins.CHANGE_PIN: _Rule(Card._change_pin, rom.CLA_PROPRIETARY, "required", _PERSO),
    Ins.PERSONALIZE: _Rule(Card._personalize, rom.CLA_PROPRIETARY, "required", _BLANK),
    Ins.OPEN_CODE: _Rule(Card._open_code, rom.CLA_PROPRIETARY, "required", _PERSO),
    Ins.AUTHORIZE_PAYMENT: _Rule(
        Card._authorize, rom.CLA_PROPRIETARY, "required", _PERSO, pin=True
    ),
    Ins.UPDATE_REVOCATIONS: _Rule(
        Card._update_revocations, rom.CLA_PROPRIETARY, "optional", _PERSO
    ),
    Ins.TAMPER: _Rule(Card._tamper, rom.CLA_PROPRIETARY, "optional", _BOTH, select=False),
}
