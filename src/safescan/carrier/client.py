"""Host driver for the key carrier: connect by URL, typed errors, the secure channel.

    with CarrierClient.connect("tcp://127.0.0.1:9000") as carrier:
        carrier.open_session(trust)          # authenticates the carrier's certified key
        contents = carrier.open_code(text)   # show contents.merchant, items, total ...
        carrier.verify_pin("123456")
        auth = carrier.authorize(merchant_id=contents.merchant.id,
                                 amount=contents.total, currency=contents.currency)

Every refusal is a :class:`~safescan.carrier.errors.CardStatusError` subclass chosen by status
word (``WrongPin`` with ``retries_left``, ``CarrierBlocked``, ``CodeRefused`` with
``error_code``, ...); link failures are :class:`~safescan.carrier.errors.TransportError`
subclasses (``CarrierUnavailable``, ``CarrierTimeout``, ``CarrierDisconnected``). Any failure
inside the secure channel closes the session; open a new one.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from safescan.carrier import messages, rom
from safescan.carrier import pin as pinmod
from safescan.carrier.apdu import (
    CommandApdu,
    Ins,
    Reason,
    ResponseApdu,
    StatusWord,
    is_retries_status,
)
from safescan.carrier.channel import HostHandshake, KeyKind, Session
from safescan.carrier.eeprom import Lifecycle
from safescan.carrier.errors import (
    ApduError,
    CardStatusError,
    CarrierAuthenticationError,
    CarrierError,
    ChannelError,
    ConditionsNotSatisfied,
    ConfirmationPending,
    TransportError,
    WrongData,
    WrongLength,
    error_for_status,
)
from safescan.carrier.transport import Control, Transport, open_transport
from safescan.code.attestation import AttestationError, AttestationStatement, CarrierModel
from safescan.code.authorization import Authorization
from safescan.code.certs import Certificate, Role, TrustStore, verify_certificate
from safescan.code.errors import SafescanError
from safescan.code.keys import VerifyKey
from safescan.code.payment import CodeKind, LineItem, Merchant
from safescan.code.provisioning import carrier_subject

EXTENDED_NE = 65536


@dataclass(frozen=True)
class CarrierInfo:
    """What GET INFO reports (public data only)."""

    version: tuple[int, ...]
    lifecycle: Lifecycle
    device_id: bytes
    attestation_key: VerifyKey | None
    carrier_serial: int | None
    certificate: Certificate | None  # parsed, not yet verified (open_session verifies it)
    retries_left: int | None
    retry_limit: int | None
    signature_counter: int
    signing_key: VerifyKey | None
    transport_key: bytes | None
    pin_tries_this_power_cycle: int
    algorithms: tuple[str, ...]
    revocations_sequence: int = 0  # the newest revocation list the card took (0: none)
    model: CarrierModel = CarrierModel.PLAIN  # hardware: PLAIN or DISPLAY (firmware 2.0)
    attestation_certificate: Certificate | None = None  # the manufacturer's (not verified)
    key_epoch: int = 0  # the newest scheme-key epoch the card holds (0: none)

    @classmethod
    def from_cbor(cls, data: bytes) -> CarrierInfo:
        """Parse GET INFO's answer (:class:`safescan.carrier.messages.CardInfo`)."""
        m = messages.CardInfo.from_cbor(data)
        try:
            return cls(
                version=m.version,
                lifecycle=Lifecycle(m.lifecycle),
                device_id=m.device_id,
                attestation_key=_key(m.attestation_key),
                carrier_serial=m.carrier_serial,
                certificate=_certificate(m.certificate),
                retries_left=m.retries_left,
                retry_limit=m.retry_limit,
                signature_counter=m.signature_counter,
                signing_key=_key(m.signing_key),
                transport_key=m.transport_key,
                pin_tries_this_power_cycle=m.pin_tries_this_power_cycle,
                algorithms=m.algorithms,
                revocations_sequence=m.crl_sequence or 0,
                model=CarrierModel(m.model),
                attestation_certificate=_certificate(m.attestation_certificate),
                key_epoch=m.key_epoch or 0,
            )
        except (ValueError, SafescanError) as exc:
            raise messages.MalformedMessage(
                f"the carrier's info is malformed ({type(exc).__name__})"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "version": ".".join(str(v) for v in self.version),
            "lifecycle": self.lifecycle.name.lower(),
            "device_id": self.device_id.hex(),
            "carrier_serial": self.carrier_serial,
            "certificate_serial": self.certificate.serial if self.certificate else None,
            "retries_left": self.retries_left,
            "retry_limit": self.retry_limit,
            "signature_counter": self.signature_counter,
            "attestation_key": self.attestation_key.hex() if self.attestation_key else None,
            "signing_key": self.signing_key.hex() if self.signing_key else None,
            "pin_tries_this_power_cycle": self.pin_tries_this_power_cycle,
            "algorithms": list(self.algorithms),
            "revocations_sequence": self.revocations_sequence,
            "model": self.model.name.lower(),
            "attested": self.attestation_certificate is not None,
            "key_epoch": self.key_epoch,
        }


@dataclass(frozen=True)
class LastError:
    """GET DATA "last error": the refused command, its status word, reason and message."""

    sw: int
    ins: int
    reason: int
    message: str

    @classmethod
    def from_cbor(cls, data: bytes) -> LastError:
        """Parse the card's last-error object (:class:`safescan.carrier.messages.LastError`)."""
        m = messages.LastError.from_cbor(data)
        return cls(m.sw, m.ins, m.reason, m.message)

    @property
    def reason_name(self) -> str:
        """The reason code's name, e.g. ``"code_expired"``."""
        try:
            return Reason(self.reason).name.lower()
        except ValueError:
            return f"reason_{self.reason:#04x}"


@dataclass(frozen=True)
class GeneratedKeys:
    """The public halves of keys the carrier generated on the device, with its attestation
    statement (what the institution checks before it certifies anything)."""

    statement: AttestationStatement

    @property
    def device_id(self) -> bytes:
        """The chip's device id."""
        return self.statement.device_id

    @property
    def signing_public(self) -> VerifyKey:
        """The carrier signing key (to be certified)."""
        return self.statement.signing_public

    @property
    def transport_public(self) -> bytes:
        """The X25519 transport key (bundles and key updates are sealed to it)."""
        return self.statement.transport_public

    def verify(self, attestation_key: VerifyKey) -> None:
        """Check these keys were attested by ``attestation_key`` (and its certificate is for
        it); raises ``SignatureInvalid`` / ``AttestationError``. The manufacturer chain is the
        institution's check (:meth:`AttestationStatement.verify`)."""
        if self.statement.certificate.public_key != attestation_key:
            raise AttestationError("the attestation certificate is for another attestation key")
        attestation_key.verify(
            self.statement.signature, self.statement.message(), what="key generation attestation"
        )


@dataclass(frozen=True)
class CodeContents:
    """A payment code as the carrier opened and verified it: what the customer is shown."""

    kind: CodeKind
    merchant: Merchant
    issuer: str  # "institution" or "merchant"
    issuer_kid: int | None
    certificate_serial: int | None  # the merchant certificate, if merchant-signed
    order_id: str | None
    items: tuple[LineItem, ...]
    total: int | None  # None for a static code: the customer enters the amount
    currency: int | None
    issued_at: int
    expires_at: int
    warnings: tuple[str, ...]
    digest: bytes
    scheme_kid: int
    certificate: bytes | None = None  # the merchant certificate (v2) the identity came from

    @classmethod
    def from_cbor(cls, data: bytes) -> CodeContents:
        """Parse OPEN CODE's answer (:class:`safescan.carrier.messages.OpenedCode`)."""
        m = messages.OpenedCode.from_cbor(data)
        try:
            return cls(
                kind=CodeKind(m.kind),
                merchant=Merchant(*m.merchant),
                issuer=m.issuer,
                issuer_kid=m.issuer_kid,
                certificate_serial=m.certificate_serial,
                order_id=m.order_id,
                items=m.items or (),
                total=m.total,
                currency=m.currency,
                issued_at=m.issued_at,
                expires_at=m.expires_at,
                warnings=m.warnings,
                digest=m.digest,
                scheme_kid=m.scheme_kid,
                certificate=m.certificate,
            )
        except ValueError as exc:
            raise messages.MalformedMessage(
                f"the carrier's code contents are malformed ({exc})"
            ) from None


def _key(raw: bytes | None) -> VerifyKey | None:
    return None if raw is None else VerifyKey(raw)


def _certificate(raw: bytes | None) -> Certificate | None:
    return None if raw is None else Certificate.from_bytes(raw)


class CarrierClient:
    """A connection to one key carrier."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.atr = b""
        self._session: Session | None = None
        self._card_key: VerifyKey | None = None
        self._selected = False

    @classmethod
    def connect(cls, url: str, *, timeout: float = 5.0) -> CarrierClient:
        """Connect to ``tcp://HOST:PORT``, ``serial:///DEVICE``, ``pcsc://READER`` or
        ``audio://HOST:PORT`` and power the card on."""
        client = cls(open_transport(url, timeout=timeout))
        try:
            client.power_on()
        except CarrierError:
            client.close()
            raise
        return client

    def __enter__(self) -> CarrierClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the link (the card loses power: RAM, session and PIN status are gone)."""
        self._forget_session()
        self.transport.close()

    # --- power ----------------------------------------------------------------------------

    def power_on(self) -> bytes:
        """Power the card on; returns the ATR."""
        self._forget_session()
        self._selected = False
        self.transport.control(Control.POWER_ON)
        self.atr = self.transport.control(Control.GET_ATR)
        return self.atr

    def power_off(self) -> None:
        """Cut the card's power."""
        self._forget_session()
        self._selected = False
        self.transport.control(Control.POWER_OFF)

    def power_cycle(self) -> bytes:
        """Power off, then on: RAM is lost (session, PIN status, pending code)."""
        self.power_off()
        return self.power_on()

    # --- raw exchange ---------------------------------------------------------------------

    @property
    def has_session(self) -> bool:
        """Whether a secure channel is open."""
        return self._session is not None

    def _forget_session(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = None

    def transmit(self, command: CommandApdu) -> ResponseApdu:
        """Send one APDU as is (no secure channel); returns the response."""
        return ResponseApdu.from_bytes(self.transport.transmit(command.to_bytes()))

    def _clear(self, ins: int, data: bytes = b"", p1: int = 0, p2: int = 0) -> bytes:
        cla = rom.CLA_ISO if ins == Ins.SELECT else rom.CLA_PROPRIETARY
        resp = self.transmit(CommandApdu(cla, ins, p1, p2, data, ne=EXTENDED_NE))
        if resp.sw != StatusWord.SUCCESS:
            self._refused(resp.sw, ins, secure=False)
        return resp.data

    def _secure(
        self, ins: int, data: bytes = b"", p1: int = 0, p2: int = 0, *, explain: bool = True
    ) -> bytes:
        session = self._session
        if session is None:
            raise ConditionsNotSatisfied("open a secure session with the carrier first")
        if len(data) > rom.MAX_COMMAND_DATA:  # refused here, before the sequence advances
            raise WrongLength(
                f"the command data is {len(data)} bytes; the carrier takes at most"
                f" {rom.MAX_COMMAND_DATA}",
                sw=StatusWord.WRONG_LENGTH,
                reason=Reason.BAD_LENGTH,
            )
        header = bytes((rom.CLA_SECURE, ins, p1, p2))
        try:
            frame = session.seal_command(header, data)
            resp = self.transmit(CommandApdu(rom.CLA_SECURE, ins, p1, p2, frame, ne=EXTENDED_NE))
        except (TransportError, ApduError):  # the channel's sequence moved on: it is over
            self._forget_session()
            raise
        if resp.sw != StatusWord.SUCCESS:
            self._forget_session()  # the card closed the session (or never had one)
            self._refused(resp.sw, ins, secure=False)
        try:
            inner = ResponseApdu.from_bytes(session.open_response(header, resp.data))
        except ChannelError:
            self._forget_session()
            raise
        if inner.sw != StatusWord.SUCCESS:
            if not explain:
                raise error_for_status(inner.sw, 0, "")
            self._refused(inner.sw, ins, secure=True)
        if ins == Ins.PERSONALIZE:
            self._forget_session()  # the card ends the attested session after personalising
        return inner.data

    def last_error(self, *, secure: bool | None = None) -> LastError | None:
        """GET DATA "last error": why the carrier refused the last command (None if nothing is
        recorded at this level). ``secure`` defaults to "inside the session if one is open"."""
        inside = self._session is not None if secure is None else secure
        p1, p2 = divmod(rom.DO_LAST_ERROR, 256)
        try:
            if inside:
                raw = self._secure(Ins.GET_DATA, p1=p1, p2=p2, explain=False)
            else:
                cmd = CommandApdu(rom.CLA_PROPRIETARY, Ins.GET_DATA, p1, p2, ne=EXTENDED_NE)
                resp = self.transmit(cmd)
                if resp.sw != StatusWord.SUCCESS:
                    return None
                raw = resp.data
        except CardStatusError:
            return None
        return LastError.from_cbor(raw)

    def check(self, resp: ResponseApdu, ins: int) -> bytes:
        """For an APDU sent in clear with :meth:`transmit`: its data, or the typed error (with
        the card's reason, from GET DATA "last error")."""
        if resp.sw != StatusWord.SUCCESS:
            self._refused(resp.sw, ins, secure=False)
        return resp.data

    def _refused(self, sw: int, ins: int, *, secure: bool) -> NoReturn:
        """Raise the typed error for a refusal; its reason comes from GET DATA "last error"
        (not for ``63Cx`` and ``6983``, which say everything: nothing else is answered)."""
        reason, message = 0, ""
        if not is_retries_status(sw) and sw != StatusWord.AUTH_METHOD_BLOCKED:
            try:
                last = self.last_error(secure=secure and self._session is not None)
            except ChannelError:  # the session broke while asking: the refusal stands
                last = None
            if last is not None and last.sw == sw and last.ins == ins:
                reason, message = last.reason, last.message
        raise error_for_status(sw, reason, message)

    # --- commands -------------------------------------------------------------------------

    def select(self) -> None:
        """SELECT the safescan applet."""
        self._forget_session()
        self._clear(Ins.SELECT, rom.AID, p1=0x04, p2=0x0C)
        self._selected = True

    def _ensure_selected(self) -> None:
        if not self._selected:
            self.select()

    def get_info(self) -> CarrierInfo:
        """Serial, version, lifecycle, counters, certificate (in clear: all public)."""
        self._ensure_selected()
        if self._session is not None:
            return CarrierInfo.from_cbor(self._secure(Ins.GET_INFO))
        return CarrierInfo.from_cbor(self._clear(Ins.GET_INFO))

    def open_session(
        self,
        trust: TrustStore | None = None,
        *,
        attestation_key: VerifyKey | None = None,
        now: int | None = None,
    ) -> CarrierInfo:
        """Open the secure channel, authenticating the carrier.

        A personalised carrier must prove it holds the key in its certificate, which must
        verify under ``trust`` (role carrier, valid at ``now``, not revoked): a
        ``CertificateError`` otherwise. A blank carrier proves its attestation key; pass
        ``attestation_key`` to pin the expected one.
        """
        self.select()
        info = self.get_info()
        if info.lifecycle is Lifecycle.PERSONALIZED:
            if trust is None:
                raise CarrierAuthenticationError(
                    "a trust store is needed to authenticate a personalised carrier"
                )
            cert = info.certificate
            if cert is None or info.carrier_serial is None:
                raise CarrierAuthenticationError("the carrier did not present its certificate")
            verify_certificate(
                cert, trust, role=Role.CARRIER, now=int(time.time()) if now is None else now
            )
            if cert.subject != carrier_subject(info.carrier_serial):
                raise CarrierAuthenticationError("the carrier's certificate is for another serial")
            key, kind, identity = cert.public_key, KeyKind.CERTIFIED, cert.to_bytes()
        else:
            if info.attestation_key is None:
                raise CarrierAuthenticationError("the carrier has no attestation key")
            if attestation_key is not None and attestation_key != info.attestation_key:
                raise CarrierAuthenticationError("this is not the expected carrier (attestation)")
            key, kind, identity = (
                info.attestation_key,
                KeyKind.ATTESTATION,
                info.attestation_key.raw,
            )
        handshake = HostHandshake.start()
        answer = self._clear(Ins.OPEN_SECURE_CHANNEL, handshake.public)
        self._session = handshake.finish(answer, key.raw, kind, identity)
        self._card_key = key
        return info

    def close_session(self) -> None:
        """Forget the session on this side (the card drops it at the next open or power off)."""
        self._forget_session()

    def put_attestation(self, certificate: bytes) -> None:
        """Factory step (in clear, BLANK, once): fuse the manufacturer's certificate for the
        chip's attestation key (see :mod:`safescan.carrier.factory`)."""
        self._ensure_selected()
        p1, p2 = divmod(rom.DO_ATTESTATION_CERT, 256)
        self._clear(Ins.PUT_DATA, certificate, p1=p1, p2=p2)

    def generate_keys(self, challenge: bytes | None = None) -> GeneratedKeys:
        """BLANK carrier: create the signing and transport keys on the device; the answer is
        the attestation statement over them and ``challenge`` (32 bytes; the institution's
        :func:`~safescan.code.attestation.enrollment_challenge`, random if not given)."""
        if challenge is None:
            challenge = secrets.token_bytes(rom.CHALLENGE_BYTES)
        raw = self._secure(Ins.GENERATE_KEYS, challenge)
        try:
            keys = GeneratedKeys(AttestationStatement.from_bytes(raw))
        except SafescanError as exc:
            raise WrongData(f"the carrier's attestation statement is malformed: {exc}") from None
        if keys.statement.challenge != challenge:
            raise CarrierAuthenticationError("the carrier attested another challenge")
        if self._card_key is not None:
            keys.verify(self._card_key)  # the attestation key that authenticated this session
        return keys

    def personalize(
        self, bundle: bytes, pin: str, retry_limit: int = rom.RETRY_LIMIT_DEFAULT
    ) -> None:
        """Load the institution's sealed bundle, set the PIN and retry limit; then locked."""
        block = _pin_block(pin)
        request = messages.Personalize(bundle=bundle, pin_block=block, retry_limit=retry_limit)
        self._secure(Ins.PERSONALIZE, request.to_cbor())

    def verify_pin(self, pin: str) -> None:
        """VERIFY PIN; raises ``WrongPin`` (``retries_left``), ``RestartRequired``, ..."""
        self._secure(Ins.VERIFY_PIN, _pin_block(pin))

    def pin_verified(self) -> bool:
        """Whether the PIN is verified in this session (spends no try)."""
        from safescan.carrier.errors import WrongPin

        try:
            self._secure(Ins.VERIFY_PIN)
        except WrongPin:
            return False
        return True

    def change_pin(self, old: str, new: str) -> None:
        """CHANGE PIN (the old PIN is checked like VERIFY PIN)."""
        self._secure(Ins.CHANGE_PIN, _pin_block(old) + _pin_block(new))

    def update_revocations(self, crl: bytes) -> int:
        """UPDATE REVOCATIONS: hand the card a newer institution-signed revocation list (CBOR
        bytes); from then on it refuses codes under the revoked merchant certificates itself.
        Returns the list's sequence number. Refused (typed error) if it is not newer than the
        card's, does not verify, or is longer than the card keeps."""
        answer = self._secure(Ins.UPDATE_REVOCATIONS, crl)
        return messages.RevocationsTaken.from_cbor(answer).sequence

    def key_update(self, update: bytes) -> int:
        """KEY UPDATE: hand the card the institution's sealed update of its scheme-key epochs
        (:mod:`safescan.code.keyupdate`). Returns the card's epoch afterwards. Refused if it
        is not for this card, not signed, or does not start at the card's own epoch (typed
        errors; the card keeps what it had)."""
        self._ensure_selected()
        if self._session is not None:
            raw = self._secure(Ins.KEY_UPDATE, update)
        else:
            raw = self._clear(Ins.KEY_UPDATE, update)
        return messages.KeysUpdated.from_cbor(raw).epoch

    def open_code(self, code: str | bytes) -> CodeContents:
        """Have the carrier open and verify a code (QR text or binary); ``CodeRefused`` if bad."""
        data = code.encode("ascii", "replace") if isinstance(code, str) else code
        return CodeContents.from_cbor(self._secure(Ins.OPEN_CODE, data))

    def authorize(
        self,
        *,
        merchant_id: str,
        amount: int,
        currency: int,
        confirm_timeout: float = 0.0,
        poll: float = 0.2,
        on_pending: Callable[[], None] | None = None,
    ) -> Authorization:
        """Confirm the pending code's exact merchant, amount and currency; returns the
        carrier's signed authorization (verified here against the carrier's key).

        A display carrier first shows the payment on its own screen and signs only after its
        OK button: it answers ``ConfirmationPending`` meanwhile. This repeats the request every
        ``poll`` seconds for up to ``confirm_timeout`` seconds (``on_pending`` is called once,
        to tell the customer to look at the carrier), then raises ``ConfirmationPending``;
        Cancel on the device raises ``ConfirmationDeclined``."""
        payload = messages.Authorize(
            merchant_id=merchant_id, amount=amount, currency=currency
        ).to_cbor()
        deadline = time.monotonic() + confirm_timeout
        told = False
        while True:
            try:
                raw = self._secure(Ins.AUTHORIZE_PAYMENT, payload)
                break
            except ConfirmationPending:
                if not told and on_pending is not None:
                    on_pending()
                told = True
                if time.monotonic() >= deadline:
                    raise
                time.sleep(poll)
        auth = Authorization.from_bytes(raw)
        if self._card_key is None:
            raise CarrierAuthenticationError("no carrier key to verify the authorization")
        auth.verify(self._card_key)
        if (auth.merchant_id, auth.amount, auth.currency) != (merchant_id, amount, currency):
            raise CarrierAuthenticationError("the carrier signed something other than confirmed")
        return auth


def _pin_block(pin: str) -> bytes:
    try:
        return pinmod.pad_pin(pin)
    except pinmod.PinFormatError as exc:
        raise WrongData(str(exc)) from None
