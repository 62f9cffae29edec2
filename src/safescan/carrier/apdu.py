"""ISO/IEC 7816-4 command and response APDUs, status words and reason codes.

Parsing is strict: every byte of a command must be accounted for by exactly one of the four
ISO cases (short or extended length); anything else is refused with :class:`ApduError`
(status ``6700``). ``CommandApdu.from_bytes(b).to_bytes() == b`` for every accepted ``b``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from safescan.carrier.errors import ApduError

SHORT_MAX_DATA = 255
SHORT_MAX_NE = 256
EXTENDED_MAX_DATA = 65535
EXTENDED_MAX_NE = 65536


class StatusWord(IntEnum):
    """The status words this card answers (``63Cx`` is built by :func:`retries_status`)."""

    SUCCESS = 0x9000
    VERIFY_FAILED = 0x63C0  # 0x63C0 | retries left
    MEMORY_FAILURE = 0x6581  # the EEPROM write failed
    WRONG_LENGTH = 0x6700
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTH_METHOD_BLOCKED = 0x6983
    CONDITIONS_NOT_SATISFIED = 0x6985
    SM_DATA_MISSING = 0x6987
    SM_DATA_INCORRECT = 0x6988
    WRONG_DATA = 0x6A80
    APPLET_NOT_FOUND = 0x6A82
    NOT_ENOUGH_MEMORY = 0x6A84  # more than the card can keep
    INCORRECT_P1P2 = 0x6A86
    REFERENCED_DATA_NOT_FOUND = 0x6A88
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    UNKNOWN = 0x6F00


class Ins(IntEnum):
    """Instruction bytes (see docs/carrier.md for the command table)."""

    SELECT = 0xA4
    GET_DATA = 0xCA  # P1P2 names the data object: 0000 card info, 0101 last error
    GET_INFO = 0xCA  # (alias) GET DATA of the card info object
    GENERATE_KEYS = 0x46
    OPEN_SECURE_CHANNEL = 0x50
    VERIFY_PIN = 0x20
    CHANGE_PIN = 0x24
    PERSONALIZE = 0x44
    OPEN_CODE = 0x30
    AUTHORIZE_PAYMENT = 0x32
    UPDATE_REVOCATIONS = 0x36
    PUT_DATA = 0xDA  # factory: P1P2 0102 = the attestation certificate
    KEY_UPDATE = 0x38  # scheme-key epochs (safescan.code.keyupdate)
    # 0x7A (TAMPER, firmware 1.x) is gone: the tamper sensor is physical, not an APDU


class Reason(IntEnum):
    """Why a command was refused: field 3 of the GET DATA "last error" object.

    Error answers carry no data (ISO/IEC 7816-4); the status word says what kind of refusal
    it is, the last-error object (reason code for programs, message for people) says why.
    """

    NONE = 0x00
    # payment code refused (OPEN CODE), one per safescan.code error
    MALFORMED_CODE = 0x01
    OVERSIZE_INPUT = 0x02
    UNSUPPORTED_VERSION = 0x03
    UNKNOWN_KEY_ID = 0x04
    KEY_RETIRED = 0x05
    DECRYPTION_FAILED = 0x06
    SIGNATURE_INVALID = 0x07
    CODE_EXPIRED = 0x08
    CODE_NOT_YET_VALID = 0x09
    INVALID_AMOUNT = 0x0A
    TOTAL_MISMATCH = 0x0B
    UNKNOWN_CURRENCY = 0x0C
    UNSAFE_TEXT = 0x0D
    CERTIFICATE_ERROR = 0x0E
    CERTIFICATE_EXPIRED = 0x0F
    CERTIFICATE_REVOKED = 0x10
    # card conditions
    NOT_SELECTED = 0x20
    NOT_PERSONALIZED = 0x21
    ALREADY_PERSONALIZED = 0x22
    KEYS_NOT_GENERATED = 0x23
    KEYS_ALREADY_GENERATED = 0x24
    CHANNEL_REQUIRED = 0x25
    CHANNEL_FAILURE = 0x26
    PIN_REQUIRED = 0x27
    RESTART_REQUIRED = 0x28
    NO_PENDING_CODE = 0x29
    CONFIRMATION_MISMATCH = 0x2A
    DESTROYED = 0x2B
    COUNTER_EXHAUSTED = 0x2C
    REVOCATIONS_NOT_NEWER = 0x2D
    #: the card could not keep the newest revocation list: merchant-signed codes are refused
    REVOCATIONS_STALE = 0x3E
    TAMPERED = 0x2E  # why a card was destroyed (EEPROM field 16): its tamper sensor fired
    NOT_ATTESTED = 0x2F  # no manufacturer certificate for the attestation key yet
    ALREADY_ATTESTED = 0x30
    KEY_UPDATE_OUT_OF_ORDER = 0x31  # a replayed, reordered or stale KEY UPDATE
    CONFIRMATION_PENDING = 0x32  # display model: waiting for the button (poll again)
    CONFIRMATION_DECLINED = 0x33  # display model: Cancel was pressed
    # bad input
    BAD_LENGTH = 0x40
    BAD_DATA = 0x41
    BAD_PIN_FORMAT = 0x42
    BAD_RETRY_LIMIT = 0x43
    BAD_BUNDLE = 0x44
    BAD_P1P2 = 0x45
    UNKNOWN_INS = 0x46
    UNKNOWN_CLA = 0x47
    UNKNOWN_AID = 0x48
    UNKNOWN_OBJECT = 0x49  # GET DATA of a data object the card does not have
    BAD_ATTESTATION = 0x4A  # PUT DATA: not a certificate of this chip's attestation key
    BAD_KEY_UPDATE = 0x4B  # not sealed to this card, not signed, not for its serial, malformed
    INTERNAL = 0x7F


def retries_status(retries_left: int) -> int:
    """``63Cx``: verification failed, ``x`` tries left (0-15)."""
    return 0x63C0 | min(max(retries_left, 0), 0x0F)


def is_retries_status(sw: int) -> bool:
    """Whether ``sw`` is a ``63Cx`` status."""
    return sw & 0xFFF0 == 0x63C0


@dataclass(frozen=True, slots=True)
class CommandApdu:
    """A command APDU. ``ne`` is the expected response length (None: no Le field)."""

    cla: int
    ins: int
    p1: int = 0
    p2: int = 0
    data: bytes = b""
    ne: int | None = None
    extended: bool = False

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
                raise ApduError(f"APDU {name} must be a byte")
        if not isinstance(self.data, bytes) or len(self.data) > EXTENDED_MAX_DATA:
            raise ApduError(f"APDU data must be at most {EXTENDED_MAX_DATA} bytes")
        if self.ne is not None and not 1 <= self.ne <= EXTENDED_MAX_NE:
            raise ApduError(f"APDU Ne must be 1-{EXTENDED_MAX_NE}")
        if self.needs_extended and not self.extended:
            object.__setattr__(self, "extended", True)

    @property
    def needs_extended(self) -> bool:
        """Whether the data or Ne are too large for short length fields."""
        return len(self.data) > SHORT_MAX_DATA or (self.ne or 0) > SHORT_MAX_NE

    @property
    def header(self) -> bytes:
        """CLA INS P1 P2."""
        return bytes((self.cla, self.ins, self.p1, self.p2))

    def to_bytes(self) -> bytes:
        """The encoded command (short length unless ``extended``)."""
        out = bytearray(self.header)
        n = len(self.data)
        if not self.extended:
            if n:
                out.append(n)
                out += self.data
            if self.ne is not None:
                out.append(self.ne & 0xFF)  # 256 encodes as 0x00
            return bytes(out)
        if n:
            out += b"\x00" + n.to_bytes(2, "big") + self.data
            if self.ne is not None:
                out += (self.ne & 0xFFFF).to_bytes(2, "big")  # 65536 encodes as 0x0000
        elif self.ne is not None:
            out += b"\x00" + (self.ne & 0xFFFF).to_bytes(2, "big")
        else:
            # Case 1 has no length fields, so it cannot be extended.
            return bytes(out)
        return bytes(out)

    @classmethod
    def from_bytes(cls, raw: bytes) -> CommandApdu:
        """Parse strictly (ISO/IEC 7816-4 section 5.1); raises :class:`ApduError`."""
        if not isinstance(raw, bytes | bytearray):
            raise ApduError("an APDU is bytes")
        raw = bytes(raw)
        size = len(raw)
        if size < 4:
            raise ApduError("a command APDU has at least 4 bytes")
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        if size == 4:  # case 1
            return cls(cla, ins, p1, p2)
        b5 = raw[4]
        if size == 5:  # case 2S
            return cls(cla, ins, p1, p2, ne=b5 or SHORT_MAX_NE)
        if b5 != 0:  # short Lc
            end = 5 + b5
            if size == end:  # case 3S
                return cls(cla, ins, p1, p2, raw[5:end])
            if size == end + 1:  # case 4S
                return cls(cla, ins, p1, p2, raw[5:end], ne=raw[end] or SHORT_MAX_NE)
            raise ApduError("the APDU's length does not match its Lc field")
        # extended: 0x00 then two bytes
        if size == 7:  # case 2E
            le = int.from_bytes(raw[5:7], "big")
            return cls(cla, ins, p1, p2, ne=le or EXTENDED_MAX_NE, extended=True)
        if size < 7:
            raise ApduError("truncated extended length field")
        lc = int.from_bytes(raw[5:7], "big")
        if lc == 0:
            raise ApduError("an extended Lc of zero is not allowed")
        end = 7 + lc
        if size == end:  # case 3E
            return cls(cla, ins, p1, p2, raw[7:end], extended=True)
        if size == end + 2:  # case 4E
            le = int.from_bytes(raw[end : end + 2], "big")
            return cls(cla, ins, p1, p2, raw[7:end], ne=le or EXTENDED_MAX_NE, extended=True)
        raise ApduError("the APDU's length does not match its extended Lc field")


@dataclass(frozen=True, slots=True)
class ResponseApdu:
    """A response APDU: data and the status word ``SW1 SW2``."""

    data: bytes
    sw: int

    def __post_init__(self) -> None:
        if not 0 <= self.sw <= 0xFFFF:
            raise ApduError("a status word is two bytes")

    @property
    def ok(self) -> bool:
        """Whether the status is ``9000``."""
        return self.sw == StatusWord.SUCCESS

    def to_bytes(self) -> bytes:
        """data || SW1 || SW2."""
        return self.data + self.sw.to_bytes(2, "big")

    @classmethod
    def from_bytes(cls, raw: bytes) -> ResponseApdu:
        """Parse; raises :class:`ApduError` if shorter than a status word."""
        if len(raw) < 2:
            raise ApduError("a response APDU has at least the 2 status bytes")
        return cls(bytes(raw[:-2]), int.from_bytes(raw[-2:], "big"))
