"""Transports: how APDUs reach the card. Small interface; the protocol does not care.

A host transport (:class:`Transport`) moves one command APDU to the card and one response back,
and delivers the reader's control messages (power off / on / reset / get ATR). URLs:

- ``tcp://HOST:PORT``: vsmartcard ``vpcd`` framing over TCP (:mod:`.tcp`).
- ``serial:///dev/ttyX``: length + CRC-32 framing over a serial line (:mod:`.serial`).
- ``pcsc://READER``: a card in a PC/SC reader through ``pcscd`` (:mod:`.pcsc`, pyscard).
- ``audio://HOST:PORT[?snr=..]``: FSK tones as PCM samples over TCP (:mod:`.audio`).
"""

from __future__ import annotations

from safescan.carrier.errors import TransportError
from safescan.carrier.transport.base import Control, Transport, parse_tcp_url, serial_path, shown

__all__ = ["Control", "Transport", "open_transport", "parse_tcp_url", "serial_path", "shown"]


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
        f"unknown carrier address {shown(url)}: use tcp://HOST:PORT, serial:///DEVICE, "
        "pcsc://READER or audio://HOST:PORT"
    )
