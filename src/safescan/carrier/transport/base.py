"""What every transport shares: the reader's control messages, the host-side
:class:`Transport` interface and the address parsers. The transports import this module, the
package's :func:`~safescan.carrier.transport.open_transport` imports the transports."""

from __future__ import annotations

from enum import IntEnum
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

from safescan.carrier.errors import TransportError


class Control(IntEnum):
    """vpcd control messages (one byte)."""

    POWER_OFF = 0x00
    POWER_ON = 0x01
    RESET = 0x02
    GET_ATR = 0x04


class Transport(Protocol):
    """A host-side link to one card."""

    url: str

    def transmit(self, apdu: bytes) -> bytes:
        """Send a command APDU, return the response APDU."""

    def control(self, message: Control) -> bytes:
        """Send a reader control message; returns the ATR for GET_ATR (else b"")."""

    def close(self) -> None:
        """Close the link."""


def split_url(url: str, form: str) -> SplitResult:
    """``urlsplit(url)``; :class:`TransportError` naming ``form`` (``tcp://HOST:PORT``) when
    it cannot be split (an unclosed IPv6 literal raises ``ValueError`` there)."""
    try:
        return urlsplit(url)
    except ValueError:
        raise TransportError(f"not a {form} address: {url!r}") from None


def parse_tcp_url(url: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (host, port); raises :class:`TransportError`."""
    parts = split_url(url, "tcp://HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise TransportError(f"not a tcp://HOST:PORT address: {url!r}")
    return parts.hostname, port


def serial_path(url: str) -> str:
    """``serial:///dev/pts/3`` -> ``/dev/pts/3``; raises :class:`TransportError`."""
    parts = split_url(url, "serial:///DEVICE")
    if parts.scheme != "serial" or parts.netloc or not parts.path.startswith("/"):
        raise TransportError(f"not a serial:///DEVICE address: {url!r}")
    return parts.path
