"""Transports: how APDUs reach the card. Small interface; the protocol does not care.

A host transport (:class:`Transport`) moves one command APDU to the card and one response back,
and delivers the reader's control messages (power off / on / reset / get ATR). URLs:

- ``tcp://HOST:PORT``: vsmartcard ``vpcd`` framing over TCP (:mod:`.tcp`).
- ``serial:///dev/ttyX``: length + CRC-32 framing over a serial line (:mod:`.serial`).
- ``pcsc://READER``: a card in a PC/SC reader through ``pcscd`` (:mod:`.pcsc`, pyscard).
- ``audio://HOST:PORT[?snr=..]``: FSK tones as PCM samples over TCP (:mod:`.audio`).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Protocol
from urllib.parse import urlsplit

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


def parse_tcp_url(url: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (host, port); raises :class:`TransportError`."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise TransportError(f"not a tcp://HOST:PORT address: {url!r}")
    return parts.hostname, port


def serial_path(url: str) -> str:
    """``serial:///dev/pts/3`` -> ``/dev/pts/3``; raises :class:`TransportError`."""
    parts = urlsplit(url)
    if parts.scheme != "serial" or parts.netloc or not parts.path.startswith("/"):
        raise TransportError(f"not a serial:///DEVICE address: {url!r}")
    return parts.path


def open_transport(url: str, *, timeout: float = 5.0) -> Transport:
    """Connect to the card at ``url`` (``tcp://``, ``serial://``, ``pcsc://``, ``audio://``)."""
    if url.startswith("tcp://"):
        from safescan.carrier.transport.tcp import TcpTransport

        host, port = parse_tcp_url(url)
        return TcpTransport(host, port, timeout=timeout)
    if url.startswith("serial://"):
        from safescan.carrier.transport.serial import SerialTransport

        return SerialTransport(serial_path(url), timeout=timeout)
    if url.startswith("pcsc://"):
        from safescan.carrier.transport.pcsc import PcscTransport, parse_pcsc_url

        return PcscTransport(parse_pcsc_url(url), timeout=timeout)
    if url.startswith("audio://"):
        from safescan.carrier.transport.audio import AudioTransport, parse_audio_url

        host, port, channel = parse_audio_url(url)
        return AudioTransport(host, port, channel, timeout=timeout)
    raise TransportError(
        f"unknown carrier address {url!r}: use tcp://HOST:PORT, serial:///DEVICE, "
        "pcsc://READER or audio://HOST:PORT"
    )
