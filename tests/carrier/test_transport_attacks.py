"""A hostile or dead peer on the card's TCP (vpcd) link: half a frame and then nothing, a
flood of commands whose answers are never read. The card serves one host at a time, like a
reader, so a peer that could hold it for ever would lock every other host out (and, for the
audio port, which shares the serving loop, the same). Once a frame has begun, the rest of it
must arrive, and its answer be taken, within ``server.FRAME_TIMEOUT``; between frames a host
may stay idle as long as it likes (a wallet holds the link while its customer types the PIN).

In-thread: the real ``serve_connection`` on a real 127.0.0.1 TCP connection, no process.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from safescan.carrier import server
from safescan.carrier.client import CarrierClient
from safescan.carrier.device import Card
from safescan.carrier.eeprom import MemoryStorage
from safescan.carrier.errors import CarrierTimeout
from safescan.carrier.transport import Control
from safescan.procs import free_port, release_port

DEADLINE = 20.0  # how long a test waits for the card to hang up before it fails


@pytest.fixture
def link(monkeypatch: pytest.MonkeyPatch) -> server.CardLink:
    monkeypatch.setattr(server, "FRAME_TIMEOUT", 0.2)
    card = Card(MemoryStorage())
    card.power_on()
    return server.CardLink(card)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(host side, card side) of one TCP connection on 127.0.0.1, with small buffers so a
    flood fills them after a few kilobytes."""
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    host = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    host.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host.connect(("127.0.0.1", port))
    card_side, _ = listener.accept()
    card_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    listener.close()
    release_port(port)
    try:
        yield host, card_side
    finally:
        host.close()
        card_side.close()


def _serve(card_side: socket.socket, link: server.CardLink) -> threading.Thread:
    worker = threading.Thread(target=server.serve_connection, args=(card_side, link), daemon=True)
    worker.start()
    return worker


def _exchange(host: socket.socket, payload: bytes) -> bytes:
    host.sendall(len(payload).to_bytes(2, "big") + payload)
    head = host.recv(2)
    size = int.from_bytes(head, "big")
    body = b""
    while len(body) < size:
        body += host.recv(size - len(body))
    return body


@pytest.mark.parametrize(
    "sent",
    [b"\x00", b"\x00\x05", b"\x00\x05\x00\xa4\x04"],
    ids=["half a length", "length only", "half a command"],
)
def test_half_a_frame_and_silence_does_not_hold_the_card(
    pair: tuple[socket.socket, socket.socket], link: server.CardLink, sent: bytes
) -> None:
    """Before: the card waited for the rest of the frame for ever, and every other host
    (``serve_tcp`` accepts the next one only when this one ends) timed out."""
    host, card_side = pair
    worker = _serve(card_side, link)
    assert _exchange(host, bytes([Control.GET_ATR]))  # a host that worked, then stalls
    host.sendall(sent)
    worker.join(DEADLINE)
    stuck = worker.is_alive()
    if stuck:
        host.close()  # release the card side so the thread ends
        worker.join(DEADLINE)
    assert not stuck, "the card still waits for the rest of a frame"
    assert not link.card.powered  # hanging up is a power-off: RAM gone


def test_a_flood_whose_answers_are_never_read_does_not_hold_the_card(
    pair: tuple[socket.socket, socket.socket], link: server.CardLink
) -> None:
    """Before: the card blocked for ever sending an answer nobody read."""
    host, card_side = pair
    worker = _serve(card_side, link)
    host.setblocking(False)
    burst = (b"\x00\x01" + bytes([Control.GET_ATR])) * 256
    end = time.monotonic() + DEADLINE
    while worker.is_alive() and time.monotonic() < end:
        try:
            host.send(burst)
        except BlockingIOError:
            select.select([], [host], [], 0.5)
        except OSError:
            break  # the card hung up
    worker.join(DEADLINE)  # a card that hung up ends its loop; a stuck one does not
    stuck = worker.is_alive()
    if stuck:
        host.close()
        worker.join(DEADLINE)
    assert not stuck, "the card still waits to send an answer nobody reads"


def test_a_host_idle_between_frames_keeps_the_card(
    pair: tuple[socket.socket, socket.socket], link: server.CardLink
) -> None:
    """The bound is on a frame begun, never on the pause between frames."""
    host, card_side = pair
    worker = _serve(card_side, link)
    atr = _exchange(host, bytes([Control.GET_ATR]))
    readable, _, _ = select.select([host], [], [], 2.5 * server.FRAME_TIMEOUT)
    assert readable == [], "the card hung up on an idle host"
    assert _exchange(host, bytes([Control.GET_ATR])) == atr
    host.close()
    worker.join(DEADLINE)
    assert not worker.is_alive()


def test_a_frame_dripped_a_byte_at_a_time_does_not_hold_the_card(
    pair: tuple[socket.socket, socket.socket], link: server.CardLink
) -> None:
    """Before (with a bound per ``recv``): a peer sending one byte of a 64 KiB frame within
    each timeout held the card for as long as it liked; the bound is on the whole frame."""
    host, card_side = pair
    worker = _serve(card_side, link)
    host.sendall(b"\xff\xff")  # a frame of 65535 bytes, then a drip
    stop = threading.Event()
    end = time.monotonic() + DEADLINE
    hung_up = False
    while not hung_up and time.monotonic() < end:  # drip until the card hangs up
        try:
            host.send(b"\x00")
        except OSError:
            hung_up = True
        hung_up = hung_up or not worker.is_alive()
        stop.wait(server.FRAME_TIMEOUT / 4)
    host.close()
    worker.join(DEADLINE)
    assert hung_up, "a peer dripping a frame held the card for as long as it dripped"


def test_the_host_side_bounds_a_whole_answer_not_each_read() -> None:
    """The host's side (wallet, ``safescan carrier info``): an impostor or broken carrier that
    drips its answer a byte at a time, each within the host's timeout, is ``CarrierTimeout``
    once the timeout has passed for the exchange, never a wait without end."""
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    stop = threading.Event()

    def impostor() -> None:
        conn, _ = listener.accept()
        with conn:
            while conn.recv(3):  # POWER ON, GET ATR
                if not stop.is_set():
                    conn.sendall(b"\x00\x40")  # a 64-byte ATR, then a drip
                    while not stop.wait(0.05):
                        try:
                            conn.send(b"\x3b")
                        except OSError:
                            return

    thread = threading.Thread(target=impostor, daemon=True)
    thread.start()
    try:
        with pytest.raises(CarrierTimeout):
            CarrierClient.connect(f"tcp://127.0.0.1:{port}", timeout=0.5)
    finally:
        stop.set()
        listener.close()
        thread.join(DEADLINE)
        release_port(port)
