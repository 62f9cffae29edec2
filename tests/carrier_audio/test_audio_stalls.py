"""(harden, thirteenth sitting) A hostile or dead peer on the carrier's audio port.

The card serves one host at a time on the audio port as on TCP. Attacked on a real socket
pair (the PCM stream of ``audio://``), in-thread, no process:

* a host that sends requests and never reads what the card plays back (ACK bursts, answers):
  before, the card blocked in ``sendall`` for ever, so no other host was served again; now
  the burst waits at most ``ports.SEND_TIMEOUT`` and the card hangs up;
* a peer flooding samples faster than they are demodulated: before, the port's reader queued
  everything it received (memory without bound); now it stops reading past
  ``ports.MAX_QUEUED_CHUNKS`` and the flood waits for the demodulator (TCP's own push-back).
"""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest

from safescan.carrier.audio import ports
from safescan.carrier.audio.framing import Frame, FrameKind
from safescan.carrier.audio.modem import ModemConfig, Modulator
from safescan.carrier.transport.audio import make_link

DEADLINE = 20.0


def test_a_host_that_never_reads_what_the_card_plays_does_not_hold_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "SEND_TIMEOUT", 0.3, raising=False)
    host, card_side = socket.socketpair()
    host.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    card_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    link = make_link(card_side, None)
    stop = threading.Event()
    worker = threading.Thread(
        target=link.serve, args=(lambda m: b"\x90\x00",), kwargs={"stop": stop}, daemon=True
    )
    worker.start()
    modulator = Modulator(ModemConfig())
    try:
        host.setblocking(False)
        end = time.monotonic() + DEADLINE
        seq = 0
        while worker.is_alive() and time.monotonic() < end:
            burst = modulator.modulate(Frame(FrameKind.DATA, seq, b"\x00\xa4\x04\x00", False))
            data = burst.astype("<i2").tobytes()
            while data and worker.is_alive() and time.monotonic() < end:
                try:
                    data = data[host.send(data) :]
                except BlockingIOError:
                    select.select([], [host], [], 0.2)
                except OSError:
                    data = b""  # the card hung up
            seq = (seq + 1) % 256
        stop.set()
        worker.join(DEADLINE)
        stuck = worker.is_alive()
    finally:
        host.close()  # releases a card stuck in sendall, so the thread ends
        link.close()
        worker.join(DEADLINE)
    assert not stuck, "the card still waits to play a burst the host never reads"


def test_a_flood_of_samples_is_pushed_back_not_queued_without_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "MAX_QUEUED_CHUNKS", 8, raising=False)
    flooder, card_side = socket.socketpair()
    port = ports.SocketPcmPort(card_side)  # its link is busy: nothing is demodulated
    try:
        flooder.setblocking(False)
        chunk = b"\x01\x02" * 32768
        sent, idle = 0, 0
        while sent < 256 * len(chunk) and idle < 10:  # 16 MiB, unless the port pushes back
            try:
                sent += flooder.send(chunk)
                idle = 0
            except BlockingIOError:
                select.select([], [flooder], [], 0.2)
                idle += 1
        assert port._queue.qsize() <= 8
        assert sent < 64 * len(chunk), f"{sent} bytes were taken and queued"  # before: 16 MiB
        # what was held is still delivered in order once the link reads again
        got = port.recv(1.0)
        assert got.size > 0 and int(got[0]) == 0x0201
    finally:
        flooder.close()
        port.close()
