"""Serial line framing that detects corruption, for UART/USB-serial tokens (and pty pairs).

Frame::

    SOF(1)=0xA5 || type(1) || length(2, big-endian) || payload || CRC-32(4, big-endian)
    CRC-32 (zlib polynomial) over type || length || payload

Types: 0x01 command APDU and 0x81 its response; 0x02 control (payload: one vpcd control byte)
and 0x82 its reply (the ATR, or empty); 0xEE NAK (the card received a corrupt frame and did not
execute anything). The receiver hunts for SOF, so it resynchronises after line noise; a frame
that stays incomplete for :data:`INTER_BYTE_TIMEOUT` is discarded.
"""

from __future__ import annotations

import binascii
import contextlib
import logging
import os
import select
import termios
import time
from collections.abc import Callable
from typing import Any

from safescan.carrier.errors import (
    CarrierDisconnected,
    CarrierTimeout,
    CarrierUnavailable,
    FramingError,
)
from safescan.carrier.transport.base import Control

log = logging.getLogger("safescan.carrier")

SOF = 0xA5
T_APDU = 0x01
T_RESPONSE = 0x81
T_CONTROL = 0x02
T_CONTROL_REPLY = 0x82
T_NAK = 0xEE
TYPES = frozenset({T_APDU, T_RESPONSE, T_CONTROL, T_CONTROL_REPLY, T_NAK})
MAX_PAYLOAD = 0xFFFF
INTER_BYTE_TIMEOUT = 0.25
#: once a frame has begun, seconds for the rest of it to arrive, and for an answer to be taken
#: by the host (as for TCP: ``server.FRAME_TIMEOUT``); the line may stay idle between frames
FRAME_TIMEOUT = 5.0
BAUDRATE = 115200


def encode_frame(frame_type: int, payload: bytes) -> bytes:
    """One frame on the wire."""
    if len(payload) > MAX_PAYLOAD:
        raise FramingError(f"a serial frame carries at most {MAX_PAYLOAD} bytes")
    body = bytes([frame_type]) + len(payload).to_bytes(2, "big") + payload
    return bytes([SOF]) + body + binascii.crc32(body).to_bytes(4, "big")


class FrameDecoder:
    """Incremental decoder: feed bytes, get whole frames (or None for each corrupt one)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> bool:
        """Whether a partial frame is buffered."""
        return bool(self._buf)

    def clear(self) -> None:
        """Drop any partial frame."""
        self._buf.clear()

    def feed(self, data: bytes) -> list[tuple[int, bytes] | None]:
        """Add received bytes; returns the complete frames (None marks a corrupt frame)."""
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes] | None] = []
        while buf:
            start = buf.find(SOF)
            if start < 0:
                buf.clear()
                out.append(None)
                break
            if start:
                del buf[:start]
                out.append(None)
            if len(buf) < 4:
                break
            frame_type, size = buf[1], int.from_bytes(buf[2:4], "big")
            if frame_type not in TYPES:
                del buf[:1]
                out.append(None)
                continue
            total = 4 + size + 4
            if len(buf) < total:
                break
            body = bytes(buf[1 : 4 + size])
            crc = int.from_bytes(buf[4 + size : total], "big")
            if binascii.crc32(body) != crc:
                del buf[:1]
                out.append(None)
                continue
            out.append((frame_type, body[3:]))
            del buf[:total]
        return out


class SerialTransport:
    """Host side: a serial device opened with pyserial."""

    def __init__(self, path: str, *, timeout: float = 5.0) -> None:
        import serial

        self.url = f"serial://{path}"
        self._timeout = timeout
        self._serial_error: type[Exception] = serial.SerialException
        self._write_timeout: type[Exception] = serial.SerialTimeoutException
        try:
            # write_timeout: a card that never reads held the host in write() for ever
            self._port: Any = serial.Serial(
                path, baudrate=BAUDRATE, timeout=timeout, write_timeout=timeout
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise CarrierUnavailable(
                f"cannot open the carrier's serial port {path}: {exc}"
            ) from None
        self._decoder = FrameDecoder()

    def _exchange(self, frame_type: int, payload: bytes, want: int) -> bytes:
        try:
            self._port.reset_input_buffer()
            self._decoder.clear()
            self._port.write(encode_frame(frame_type, payload))
            self._port.flush()
            deadline = time.monotonic() + self._timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CarrierTimeout(f"the carrier on {self.url} did not answer in time")
                self._port.timeout = remaining
                chunk = self._port.read(max(1, self._port.in_waiting))
                if not chunk:
                    continue
                for item in self._decoder.feed(chunk):
                    if item is None:
                        continue  # line noise before the answer; a corrupt answer times out
                    got_type, body = item
                    if got_type == T_NAK:
                        raise FramingError(
                            f"the carrier on {self.url} received a corrupt frame (not executed)"
                        )
                    if got_type == want:
                        return body
        except self._write_timeout:
            raise CarrierTimeout(
                f"the carrier on {self.url} did not take the command in time"
            ) from None
        except (self._serial_error, OSError) as exc:
            raise CarrierDisconnected(f"the carrier on {self.url} went away: {exc}") from None

    def transmit(self, apdu: bytes) -> bytes:
        """Send a command APDU, return the response APDU."""
        reply = self._exchange(T_APDU, apdu, T_RESPONSE)
        if len(reply) < 2:
            raise FramingError("the carrier's response is shorter than a status word")
        return reply

    def control(self, message: Control) -> bytes:
        """Send a control byte; returns the ATR for power on / reset / get ATR."""
        return self._exchange(T_CONTROL, bytes([int(message)]), T_CONTROL_REPLY)

    def close(self) -> None:
        """Close the port."""
        with contextlib.suppress(self._serial_error, OSError):
            self._port.close()


def _write_all(fd: int, data: bytes, deadline: float) -> None:
    """All of ``data`` to the non-blocking ``fd`` before ``deadline`` (monotonic), else
    ``TimeoutError``: a host that never reads its answers cannot hold the card in ``write``."""
    view = memoryview(data)
    while view:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the host did not take the answer in time")
        _, writable, _ = select.select([], [fd], [], left)
        if writable:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                continue


def _answer(fd: int, frame: bytes) -> bool:
    """Send one frame; False if the host did not take it within :data:`FRAME_TIMEOUT`: then
    it is dropped with everything else queued on the line, both ways (the commands the host
    queued behind it are not run: it reads no answers; before, the card blocked in ``write``
    for ever)."""
    try:
        _write_all(fd, frame, time.monotonic() + FRAME_TIMEOUT)
        return True
    except TimeoutError:
        log.info("serial line: the host did not take an answer; dropped with what was queued")
        if os.isatty(fd):
            with contextlib.suppress(OSError, termios.error):
                termios.tcflush(fd, termios.TCIOFLUSH)
        return False


def serve_fd(
    fd: int,
    apdu: Callable[[bytes], bytes],
    control: Callable[[int], bytes],
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Card side: answer frames arriving on ``fd`` until ``should_stop()``.

    A frame that stays incomplete for :data:`INTER_BYTE_TIMEOUT`, or has not completed
    :data:`FRAME_TIMEOUT` after it began (a host dripping a byte at a time; before, each byte
    within the inter-byte timeout kept a 64 KiB frame pending for as long as it dripped), is
    dropped and answered with a NAK; an answer the host does not take within
    :data:`FRAME_TIMEOUT` is dropped (before: the card blocked in ``write`` for ever)."""
    os.set_blocking(fd, False)
    decoder = FrameDecoder()
    begun: float | None = None  # when the pending frame's first byte came
    while not should_stop():
        if begun is not None and time.monotonic() - begun > FRAME_TIMEOUT:
            decoder.clear()
            begun = None
            _answer(fd, encode_frame(T_NAK, b""))
        ready, _, _ = select.select([fd], [], [], INTER_BYTE_TIMEOUT)
        if not ready:
            if decoder.pending:
                decoder.clear()
                begun = None
                _answer(fd, encode_frame(T_NAK, b""))
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:
            time.sleep(0.05)  # no host has the line open yet
            continue
        if not data:
            time.sleep(0.05)
            continue
        corrupt, taken = False, True
        for item in decoder.feed(data):
            if item is None:
                corrupt = True
                continue
            frame_type, body = item
            if frame_type == T_APDU:
                taken = _answer(fd, encode_frame(T_RESPONSE, apdu(body)))
            elif frame_type == T_CONTROL and len(body) == 1:
                taken = _answer(fd, encode_frame(T_CONTROL_REPLY, control(body[0])))
            else:
                corrupt = True
            if not taken:
                decoder.clear()
                break
        if corrupt and taken:
            _answer(fd, encode_frame(T_NAK, b""))
        if not decoder.pending:
            begun = None
        elif begun is None:
            begun = time.monotonic()
