"""The carrier protocol's numbers: status words, instruction bytes and reason codes.

A leaf module (it imports nothing of safescan): both :mod:`safescan.carrier.apdu` (which
parses APDUs and raises the errors) and :mod:`safescan.carrier.errors` (which maps a status
word and reason to a typed error) use it, so neither imports the other's late.
"""

from __future__ import annotations

from enum import IntEnum


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
