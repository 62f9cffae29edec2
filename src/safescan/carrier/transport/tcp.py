"""TCP with vsmartcard ``vpcd`` framing: every message is a 2-byte big-endian length + payload.

A 1-byte payload is a control message from the reader (0x00 power off, 0x01 power on,
0x02 reset, 0x04 get ATR; only get ATR is answered, with the ATR). Any other payload is a
command APDU, answered with one response APDU. The same card loop serves a host that connects
to us (``serve --listen``) and a ``vpcd`` reader we connect to (``serve --vpcd``), so the
emulator also plugs into ``pcscd``.
"""

from __future__ import annotations

import contextlib
import socket
import time

from safescan.carrier.errors import (
    CarrierDisconnected,
    CarrierTimeout,
    CarrierUnavailable,
    FramingError,
    TransportError,
)
from safescan.carrier.transport.base import Control

MAX_FRAME = 0xFFFF


def listen(host: str, port: int, scheme: str) -> tuple[socket.socket, str]:
    """A listening socket on ``host:port`` (port 0: any free port) and the URL a host reaches
    it at, ``scheme://HOST:PORT`` (an IPv6 host in brackets): the card side of ``tcp://`` and
    ``audio://``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    try:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((host, port))
        server.listen(4)
    except OSError:
        server.close()
        raise
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return server, f"{scheme}://{shown}:{server.getsockname()[1]}"


def recv_exact(sock: socket.socket, size: int, deadline: float | None = None) -> bytes | None:
    """Read exactly ``size`` bytes; None on a clean close before the first byte.

    ``deadline`` (``time.monotonic()``): all of them by then, else ``TimeoutError``. A
    socket timeout alone bounds each ``recv``, so a peer dripping one byte within each
    timeout held the reader for ever."""
    buf = bytearray()
    while len(buf) < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the frame did not arrive in time")
            sock.settimeout(remaining)
        chunk = sock.recv(size - len(buf))
        if not chunk:
            if not buf:
                return None
            raise ConnectionResetError("connection closed mid-frame")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket, deadline: float | None = None) -> bytes | None:
    """One vpcd frame's payload; None when the peer closed cleanly between frames.
    ``deadline``: the whole frame by then (see :func:`recv_exact`)."""
    head = recv_exact(sock, 2, deadline)
    if head is None:
        return None
    size = int.from_bytes(head, "big")
    payload = recv_exact(sock, size, deadline) if size else b""
    if payload is None:
        raise ConnectionResetError("connection closed mid-frame")
    return payload


def send_frame(sock: socket.socket, payload: bytes) -> None:
    """Send one vpcd frame."""
    if len(payload) > MAX_FRAME:
        raise FramingError(f"a frame carries at most {MAX_FRAME} bytes")
    sock.sendall(len(payload).to_bytes(2, "big") + payload)


class TcpTransport:
    """Host side of the vpcd framing."""

    def __init__(self, host: str, port: int, *, timeout: float = 5.0) -> None:
        self.url = f"tcp://{host}:{port}"
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError:
            raise CarrierTimeout(f"no answer from the carrier at {self.url}") from None
        except OSError as exc:
            raise CarrierUnavailable(
                f"no carrier at {self.url} ({exc.strerror or type(exc).__name__})"
            ) from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.settimeout(timeout)
        self._timeout = timeout
        self._broken = False

    def _exchange(self, payload: bytes, *, answer: bool) -> bytes:
        if self._broken:
            raise CarrierDisconnected("the link to the carrier is broken; reconnect")
        deadline = time.monotonic() + self._timeout  # the whole exchange, however it drips
        try:
            self._sock.settimeout(self._timeout)
            send_frame(self._sock, payload)
            if not answer:
                return b""
            reply = recv_frame(self._sock, deadline)
        except TimeoutError:
            self._broken = True
            raise CarrierTimeout(f"the carrier at {self.url} did not answer in time") from None
        except OSError as exc:
            self._broken = True
            raise CarrierDisconnected(
                f"the carrier at {self.url} went away ({exc.strerror or type(exc).__name__})"
            ) from None
        if reply is None:
            self._broken = True
            raise CarrierDisconnected(f"the carrier at {self.url} closed the link mid-command")
        return reply

    def transmit(self, apdu: bytes) -> bytes:
        """Send a command APDU, return the response APDU."""
        if len(apdu) < 2:
            raise TransportError("refusing to send a frame the card would read as a control byte")
        reply = self._exchange(apdu, answer=True)
        if len(reply) < 2:
            raise FramingError("the carrier's response is shorter than a status word")
        return reply

    def control(self, message: Control) -> bytes:
        """Send a control byte; returns the ATR for GET_ATR."""
        return self._exchange(bytes([int(message)]), answer=message is Control.GET_ATR)

    def close(self) -> None:
        """Close the socket (the card sees a power-off)."""
        self._broken = True
        with contextlib.suppress(OSError):
            self._sock.close()
