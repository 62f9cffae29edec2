"""ROM: the firmware's constants (applet identifier, version, algorithms, ATR).

Nothing here changes at run time; a real token would burn these into mask ROM.
"""

from __future__ import annotations

from typing import Final

#: Applet identifier: proprietary RID category ``F`` + ``SAFESCAN`` + applet version 1.
AID: Final = bytes.fromhex("F0") + b"SAFESCAN" + b"\x01"

#: Firmware version (major, minor, patch). History in docs/carrier.md.
#: 2.0: ISO error answers + GET DATA last error; no TAMPER APDU. 2.1: the time mark (the newest
#: institution-signed time verified, kept in the EEPROM image; expiry judged no earlier).
VERSION: Final = (2, 1, 0)

#: What the card implements, reported by GET INFO.
ALGORITHMS: Final = (
    "ed25519",  # carrier signing key, attestation key, channel authentication
    "x25519",  # transport key (provisioning), secure-channel key agreement
    "hkdf-sha256",
    "aes-256-gcm",  # secure channel, EEPROM image
    "hpke-x25519-sha256-aes128gcm",  # payment codes, provisioning bundles
)

#: GET DATA objects (P1P2; 0100-01FF is the proprietary range of ISO/IEC 7816-4).
DO_CARD_INFO: Final = 0x0000  # the GET INFO map (firmware 1.x used P1P2 = 0000 too)
DO_LAST_ERROR: Final = 0x0101  # the last refused command: {1: SW, 2: INS, 3: reason, 4: text}
DO_ATTESTATION_CERT: Final = 0x0102  # PUT DATA at the factory: the attestation certificate
#: GENERATE KEYS signs the host's 32-byte challenge into the attestation statement.
CHALLENGE_BYTES: Final = 32

#: How far (seconds) the time mark may move past the one the EEPROM holds before OPEN CODE
#: writes the image for it alone (EEPROM wear; the wallet's ``timefloor.DEVICE_STEP``): a mark
#: moved by an institution-signed code is believed after a power cut at most this much behind.
#: Personalisation, KEY UPDATE and UPDATE REVOCATIONS write their mark at once (they write the
#: image anyway).
TIME_MARK_STEP: Final = 180

#: Class bytes the card accepts.
CLA_ISO: Final = 0x00  # interindustry (SELECT)
CLA_PROPRIETARY: Final = 0x80  # proprietary, in clear
CLA_SECURE: Final = 0x84  # proprietary, secure messaging (inside the secure channel)

#: PIN rules: 4-16 ASCII digits, padded with 0xFF to a fixed 16 bytes on the wire.
PIN_MIN: Final = 4
PIN_MAX: Final = 16
PIN_BLOCK: Final = 16
RETRY_LIMIT_DEFAULT: Final = 5
RETRY_LIMIT_MIN: Final = 3
RETRY_LIMIT_MAX: Final = 16
#: Like FIDO2 authenticators: this many consecutive wrong PINs, then a power cycle is required.
WRONG_PINS_PER_POWER_CYCLE: Final = 3

#: Largest command data field the card accepts (a code is <= 1024 bytes, a bundle <= 4096,
#: a revocation list of MAX_REVOKED_SERIALS serials <= 5,300).
MAX_COMMAND_DATA: Final = 8192
#: Revoked certificate serials the card keeps (UPDATE REVOCATIONS refuses a longer list).
MAX_REVOKED_SERIALS: Final = 1024


def _atr() -> bytes:
    """Answer To Reset: direct convention, T=0 and T=1, historical bytes ``SAFESCAN``."""
    historical = b"SAFESCAN"
    # TS=3B; T0=0x80|K (TD1 follows); TD1=0x80 (TD2 follows, T=0); TD2=0x01 (T=1); then TCK.
    body = bytes([0x80 | len(historical), 0x80, 0x01]) + historical
    tck = 0
    for byte in body:
        tck ^= byte
    return b"\x3b" + body + bytes([tck])


ATR: Final = _atr()
