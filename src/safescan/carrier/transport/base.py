"""What every transport shares: the reader's control messages, the host-side
:class:`Transport` interface and the address parsers. The transports import this module, the
package's :func:`~safescan.carrier.transport.open_transport` imports the transports."""

from __future__ import annotations

import re
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


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:/*)[^/?#@]*@")


def shown(url: str) -> str:
    """``url`` as an error message may quote it: user information (``user:password@``)
    replaced by ``***@``, a query or fragment by ``?...`` / ``#...`` (a token may sit there),
    at most 200 characters, ``repr`` quoted."""
    text = _USERINFO.sub(r"\1***@", url)
    for mark in "?#":
        if mark in text:
            text = text[: text.index(mark)] + mark + "..."
    return repr(text if len(text) <= 200 else text[:200] + "...")


def split_url(url: str, form: str) -> SplitResult:
    """``urlsplit(url)``; :class:`TransportError` naming ``form`` (``tcp://HOST:PORT``) when
    it cannot be split (an unclosed IPv6 literal raises ``ValueError`` there) or when it holds
    user information (``user:password@``: never used, so refused and never echoed)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise TransportError(f"not a {form} address: {shown(url)}") from None
    if "@" in parts.netloc:
        raise TransportError(
            f"a {form} address holds user information (user:password@): leave it out"
        )
    return parts


def parse_tcp_url(url: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (host, port); raises :class:`TransportError` (also for a
    query or fragment, which nothing reads)."""
    parts = split_url(url, "tcp://HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        port = None
    if (
        parts.scheme != "tcp"
        or not parts.hostname
        or port is None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "?" in url
        or "#" in url
    ):
        raise TransportError(f"not a tcp://HOST:PORT address: {shown(url)}")
    return parts.hostname, port


def serial_path(url: str) -> str:
    """``serial:///dev/pts/3`` -> ``/dev/pts/3``; raises :class:`TransportError`."""
    parts = split_url(url, "serial:///DEVICE")
    if parts.scheme != "serial" or parts.netloc or not parts.path.startswith("/"):
        raise TransportError(f"not a serial:///DEVICE address: {shown(url)}")
    return parts.path
