"""(harden, thirteenth sitting) A hostile or dead peer on the carrier's serial line.

The TCP link got frame deadlines in the twelfth sitting (``test_transport_attacks.py``); the
serial line had only an inter-byte timeout. Attacked here on a real pseudo-terminal pair (a
pty is a serial line to both ends: the card's ``serve_fd`` on the master, the host on the
slave), in-thread, no process:

* a frame dripped a byte at a time, each byte within the inter-byte timeout: before, the card
  waited for the rest of a 64 KiB frame for as long as the drip went on (no NAK, no answer);
* a host that floods commands and never reads the answers: before, the card blocked in
  ``write`` for ever (its loop never saw the stop asked of it);
* a card that never reads, on the host's side (``SerialTransport``): before, the host blocked
  in ``write`` for ever; now ``CarrierTimeout``.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Iterator

import pytest

from safescan.carrier.errors import CarrierTimeout
from safescan.carrier.transport import serial as line
from safescan.carrier.transport.base import Control

DEADLINE = 20.0  # how long a test waits for the card before it fails


@pytest.fixture
def pty_pair(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, int, str]]:
    """(card's master fd, host's slave fd, slave path), raw, with a short frame deadline."""
    monkeypatch.setattr(line, "FRAME_TIMEOUT", 0.4)
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield master, slave, os.ttyname(slave)
    finally:
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def _card(master: int) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    worker = threading.Thread(
        target=line.serve_fd,
        args=(master, lambda apdu: b"\x90\x00", lambda c: b"\x3b\x00" if c else b""),
        kwargs={"should_stop": stop.is_set},
        daemon=True,
    )
    worker.start()
    return worker, stop


def _frames_seen(slave: int, decoder: line.FrameDecoder, wait: float) -> list[int]:
    ready, _, _ = select.select([slave], [], [], wait)
    if not ready:
        return []
    return [item[0] for item in decoder.feed(os.read(slave, 65536)) if item is not None]


def test_a_frame_dripped_a_byte_at_a_time_is_dropped_and_the_card_answers_again(
    pty_pair: tuple[int, int, str],
) -> None:
    master, slave, _ = pty_pair
    worker, stop = _card(master)
    decoder = line.FrameDecoder()
    try:
        os.write(slave, bytes([line.SOF, line.T_APDU, 0xFF, 0xFF]))  # 64 KiB announced
        pause = threading.Event()
        end = time.monotonic() + DEADLINE
        nak = False
        while not nak and time.monotonic() < end:
            os.write(slave, b"\x00")  # one byte well within the inter-byte timeout
            nak = line.T_NAK in _frames_seen(slave, decoder, 0)
            pause.wait(line.INTER_BYTE_TIMEOUT / 5)
        assert nak, "a dripped frame kept the card waiting for as long as it dripped"
        # the drip's leftovers are noise now; the next good frame is answered
        pause.wait(line.INTER_BYTE_TIMEOUT * 2)
        if select.select([slave], [], [], 0)[0]:
            os.read(slave, 65536)
        decoder.clear()
        os.write(slave, line.encode_frame(line.T_CONTROL, bytes([Control.GET_ATR])))
        end = time.monotonic() + DEADLINE
        seen: list[int] = []
        while line.T_CONTROL_REPLY not in seen and time.monotonic() < end:
            seen += _frames_seen(slave, decoder, 1.0)
        assert line.T_CONTROL_REPLY in seen
    finally:
        stop.set()
        worker.join(DEADLINE)
    assert not worker.is_alive()


def test_a_host_that_never_reads_its_answers_does_not_hold_the_card(
    pty_pair: tuple[int, int, str],
) -> None:
    master, slave, _ = pty_pair
    worker, stop = _card(master)
    os.set_blocking(slave, False)
    burst = line.encode_frame(line.T_CONTROL, bytes([Control.GET_ATR])) * 64
    end = time.monotonic() + DEADLINE
    sent = 0
    while sent < 64 * 1024 and time.monotonic() < end:  # far more answers than the line holds
        try:
            sent += os.write(slave, burst)
        except BlockingIOError:
            select.select([], [slave], [], 0.5)
    stop.set()  # the card must get back to its loop to see this
    worker.join(DEADLINE)
    stuck = worker.is_alive()
    if stuck:
        os.close(slave)  # release the card's write so the thread ends
    assert not stuck, "the card still waits to write an answer nobody reads"


@pytest.mark.timeout(60)
def test_the_host_side_is_bounded_when_the_card_never_reads(
    pty_pair: tuple[int, int, str],
) -> None:
    master, _, path = pty_pair  # nobody reads the master: a card that took no byte
    transport = line.SerialTransport(path, timeout=0.5)
    try:
        with pytest.raises(CarrierTimeout):
            for _ in range(4):  # far more than the line's buffers hold
                transport.transmit(b"\x00\x10\x00\x00" + b"\x00" * 60000)
    finally:
        transport.close()
    assert master >= 0
