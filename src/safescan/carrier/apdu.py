"""ISO/IEC 7816-4 command and response APDUs (the status words, instructions and reason codes
are declared in :mod:`safescan.carrier.codes`, re-exported here).

Parsing is strict: every byte of a command must be accounted for by exactly one of the four
ISO cases (short or extended length); anything else is refused with :class:`ApduError`
(status ``6700``). ``CommandApdu.from_bytes(b).to_bytes() == b`` for every accepted ``b``.
"""

from __future__ import annotations

from dataclasses import dataclass

from safescan.carrier.codes import Ins, Reason, StatusWord, is_retries_status, retries_status
from safescan.carrier.errors import ApduError

__all__ = [
    "EXTENDED_MAX_DATA",
    "EXTENDED_MAX_NE",
    "SHORT_MAX_DATA",
    "SHORT_MAX_NE",
    "CommandApdu",
    "Ins",
    "Reason",
    "ResponseApdu",
    "StatusWord",
    "is_retries_status",
    "retries_status",
]

SHORT_MAX_DATA = 255
SHORT_MAX_NE = 256
EXTENDED_MAX_DATA = 65535
EXTENDED_MAX_NE = 65536


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
