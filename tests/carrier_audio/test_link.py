"""ARQ link: retransmission on loss and corruption, duplicates, socket and TCP transports."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from safescan.carrier.audio import (
    AudioLink,
    AudioLinkClosed,
    AudioLinkError,
    AudioLinkTimeout,
    CallablePcmPort,
    ChannelModel,
    ChannelPcmPort,
    FrameKind,
    MemoryPcmPort,
    PcmPort,
    RecordingPcmPort,
    SocketPcmPort,
    demodulate,
    read_wav,
)
from safescan.carrier.audio.modem import Pcm
from safescan.code.errors import SafescanError
from tests.institution.pg import free_port

FAST = {"ack_timeout": 0.4, "max_retries": 6, "initial_seq": 0}


class FaultyPort:
    """Drops or corrupts the bursts sent at chosen positions (0 = first burst sent)."""

    def __init__(
        self, inner: PcmPort, drop: Collection[int] = (), corrupt: Collection[int] = ()
    ) -> None:
        self.inner = inner
        self.realtime = False
        self.drop, self.corrupt = set(drop), set(corrupt)
        self.count = 0
        self._rng = np.random.default_rng(99)

    def send(self, samples: Pcm) -> None:
        index = self.count
        self.count += 1
        if index in self.drop:
            return
        if index in self.corrupt:
            samples = samples.copy()
            start = samples.size * 2 // 3
            samples[start : start + 400] = self._rng.integers(-12000, 12000, 400)
        self.inner.send(samples)

    def recv(self, timeout: float | None) -> Pcm:
        return self.inner.recv(timeout)

    def close(self) -> None:
        self.inner.close()


def apdu_handler(calls: list[bytes]) -> Callable[[bytes], bytes]:
    def handle(message: bytes) -> bytes:
        calls.append(message)
        return message[::-1] + b"\x90\x00"

    return handle


@contextmanager
def served(
    host_port: PcmPort, card_port: PcmPort, **kwargs: object
) -> Iterator[tuple[AudioLink, AudioLink, list[bytes]]]:
    options = {**FAST, **kwargs}
    host = AudioLink(host_port, **options)
    card = AudioLink(card_port, **options)
    calls: list[bytes] = []
    thread = threading.Thread(target=card.serve, args=(apdu_handler(calls),), daemon=True)
    thread.start()
    try:
        yield host, card, calls
    finally:
        host.close()
        thread.join(timeout=60)  # it stops at its next poll; a loaded machine may take a while
        card.close()
        assert not thread.is_alive(), "the card's serve loop did not stop when the host closed"


def faulty_pair(
    host_faults: dict[str, set[int]], card_faults: dict[str, set[int]]
) -> tuple[FaultyPort, FaultyPort]:
    a, b = MemoryPcmPort.pair()
    return FaultyPort(a, **host_faults), FaultyPort(b, **card_faults)


def test_clean_exchange_over_memory_ports() -> None:
    a, b = MemoryPcmPort.pair()
    with served(a, b) as (host, card, calls):
        assert host.request(b"\x00\xa4\x04\x00", timeout=10) == b"\x00\x04\xa4\x00\x90\x00"
        assert calls == [b"\x00\xa4\x04\x00"]
        assert host.stats.retransmissions == 0 and card.stats.retransmissions == 0


def test_lost_request_frame_is_retransmitted_after_timeout() -> None:
    host_port, card_port = faulty_pair({"drop": {0}}, {})
    with served(host_port, card_port) as (host, _card, calls):
        assert host.request(b"hello card", timeout=10) == b"drac olleh\x90\x00"
        assert host.stats.retransmissions >= 1
        assert calls == [b"hello card"]


def test_corrupted_request_frame_is_nakked_and_resent() -> None:
    host_port, card_port = faulty_pair({"corrupt": {0}}, {})
    with served(host_port, card_port) as (host, card, calls):
        assert host.request(bytes(range(200)), timeout=10) == bytes(range(200))[::-1] + b"\x90\x00"
        assert card.stats.bad_frames >= 1
        assert card.stats.naks_sent >= 1
        assert host.stats.retransmissions >= 1
        assert calls == [bytes(range(200))]


def test_lost_ack_gives_a_duplicate_that_is_not_delivered_twice() -> None:
    host_port, card_port = faulty_pair({}, {"drop": {0}})  # the card's first ACK is lost
    with served(host_port, card_port) as (host, card, calls):
        assert host.request(b"once", timeout=10) == b"ecno\x90\x00"
        assert card.stats.duplicates >= 1
        assert calls == [b"once"]


def test_corrupted_response_is_recovered() -> None:
    host_port, card_port = faulty_pair({}, {"corrupt": {1}})  # burst 1 = the response DATA
    with served(host_port, card_port) as (host, card, _calls):
        assert host.request(b"abc" * 50, timeout=10) == (b"abc" * 50)[::-1] + b"\x90\x00"
        assert host.stats.bad_frames >= 1
        assert card.stats.retransmissions >= 1


def test_fragmented_messages_with_faults_on_both_sides() -> None:
    rng = np.random.default_rng(3)
    messages = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (0, 700, 256)]
    host_port, card_port = faulty_pair({"drop": {1}, "corrupt": {4}}, {"drop": {2}, "corrupt": {5}})
    with served(host_port, card_port) as (host, _card, calls):
        for message in messages:
            assert host.request(message, timeout=20) == message[::-1] + b"\x90\x00"
        assert calls == messages
        assert host.stats.frames_received > 0


def test_gives_up_with_a_typed_error_when_nobody_answers() -> None:
    a, _b = MemoryPcmPort.pair()
    host = AudioLink(a, ack_timeout=0.05, max_retries=2)
    with pytest.raises(AudioLinkTimeout, match="after 3 attempts") as info:
        host.request(b"anyone?")
    assert isinstance(info.value, SafescanError)
    assert host.stats.frames_sent == 3 and host.stats.retransmissions == 2


def test_closed_peer_is_a_typed_error() -> None:
    a, b = MemoryPcmPort.pair()
    b.close()
    with pytest.raises(AudioLinkClosed):
        AudioLink(a).request(b"x")
    with pytest.raises(AudioLinkTimeout):
        AudioLink(MemoryPcmPort.pair()[0]).recv_message(timeout=0.05)


def test_request_response_over_socketpair_through_20_db_channel() -> None:
    """PCM over a socketpair, both directions through the channel model (20 dB, drift, DC)."""
    a, b = socket.socketpair()
    host_port = ChannelPcmPort(SocketPcmPort(a), ChannelModel(snr_db=20, drift_ppm=100, seed=1))
    card_port = ChannelPcmPort(SocketPcmPort(b), ChannelModel(snr_db=20, drift_ppm=-100, seed=2))
    select = b"\x00\xa4\x04\x00\x08safescan\x00"
    extended = b"\x80\x2a\x00\x00\x00\x01\x00" + bytes(range(256))
    with served(host_port, card_port) as (host, _card, calls):
        assert host.request(select, timeout=20) == select[::-1] + b"\x90\x00"
        assert host.request(extended, timeout=20) == extended[::-1] + b"\x90\x00"
        assert calls == [select, extended]


def test_tcp_transport_on_loopback() -> None:
    server = socket.create_server(("127.0.0.1", free_port()))
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    acceptor = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
    acceptor.start()
    host_port = SocketPcmPort.connect("127.0.0.1", port)
    acceptor.join(timeout=60)  # connected: accept() returns once the thread runs
    server.close()
    with served(host_port, SocketPcmPort(accepted[0])) as (host, _card, _calls):
        assert host.request(b"\x00\xb0\x00\x00\x10", timeout=10) == b"\x10\x00\x00\xb0\x00\x90\x00"


def test_connect_refused_is_a_typed_error() -> None:
    probe = socket.create_server(("127.0.0.1", free_port()))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(AudioLinkError, match="cannot connect"):
        SocketPcmPort.connect("127.0.0.1", port, timeout=1)


def test_callable_port_and_wav_recording(tmp_path: Path) -> None:
    a, b = MemoryPcmPort.pair()
    wrapped = CallablePcmPort(a.send, a.recv, close=a.close)
    recorder = RecordingPcmPort(wrapped)
    with served(recorder, b) as (host, _card, _calls):
        assert host.request(b"tap", timeout=10) == b"pat\x90\x00"
    recorder.save(tmp_path / "sent.wav", tmp_path / "heard.wav")
    sent, rate = read_wav(tmp_path / "sent.wav")
    heard, _ = read_wav(tmp_path / "heard.wav")
    assert rate == 44100
    sent_frames = demodulate(sent)
    assert [f.kind for f in sent_frames] == [FrameKind.DATA, FrameKind.ACK]
    assert sent_frames[0].payload == b"tap"
    assert [f.payload for f in demodulate(heard) if f.kind == FrameKind.DATA] == [b"pat\x90\x00"]


def test_link_parameters_are_checked() -> None:
    port = MemoryPcmPort.pair()[0]
    with pytest.raises(AudioLinkError):
        AudioLink(port, max_fragment=0)
    with pytest.raises(AudioLinkError):
        AudioLink(port, ack_timeout=0)
