"""Stop-and-wait ARQ link: reliable byte messages (APDUs) over a pair of PCM streams.

A message is split into DATA frames of at most ``max_fragment`` bytes (the last one has the
*more* flag clear). Each DATA frame carries an 8-bit sequence number and is sent until the peer
answers ``ACK(seq)``; a ``NAK``, a corrupted reply or no reply within the timeout makes the
sender retransmit, up to ``max_retries`` times, then :class:`AudioLinkTimeout` is raised.
The receiver ACKs every good DATA frame; a repeat of the last sequence number (its ACK was lost)
is acknowledged again but not delivered twice. A frame whose sync word was found but whose CRC
failed is answered with one NAK so that the sender does not have to wait for its timeout.

Host side: :meth:`AudioLink.request`. Card side: :meth:`AudioLink.serve`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from safescan.carrier.audio.errors import AudioLinkClosed, AudioLinkError, AudioLinkTimeout
from safescan.carrier.audio.framing import MAX_PAYLOAD, Frame, FrameKind
from safescan.carrier.audio.modem import Demodulator, ModemConfig, Modulator, Pcm
from safescan.carrier.audio.ports import PcmPort

log = logging.getLogger(__name__)

MAX_MESSAGE = 1 << 17
"""Largest message accepted (an extended APDU is at most 65,544 bytes)."""


@dataclass
class LinkStats:
    """Counters of one link endpoint."""

    frames_sent: int = 0
    retransmissions: int = 0
    acks_sent: int = 0
    naks_sent: int = 0
    frames_received: int = 0
    duplicates: int = 0
    bad_frames: int = 0
    samples_sent: int = 0
    samples_received: int = 0


class AudioLink:
    """Reliable messages over an audio PCM port (one endpoint; the peer runs another)."""

    def __init__(
        self,
        port: PcmPort,
        *,
        config: ModemConfig | None = None,
        max_fragment: int = 255,
        ack_timeout: float = 1.0,
        max_retries: int = 8,
        initial_seq: int | None = None,
    ) -> None:
        if not 1 <= max_fragment <= MAX_PAYLOAD:
            raise AudioLinkError(f"max_fragment must be within 1..{MAX_PAYLOAD}")
        if ack_timeout <= 0 or max_retries < 0:
            raise AudioLinkError("ack_timeout must be > 0 and max_retries >= 0")
        self.port = port
        self.config = config or ModemConfig()
        self.max_fragment = max_fragment
        self.ack_timeout = ack_timeout
        self.max_retries = max_retries
        self.stats = LinkStats()
        self._modulator = Modulator(self.config)
        self._demodulator = Demodulator(self.config)
        self._rx: Pcm = np.zeros(0, dtype=np.int16)
        self._tx_seq = secrets.randbelow(256) if initial_seq is None else initial_seq % 256
        self._last_rx_seq: int | None = None
        self._nak_sent_for: int | None = None
        self._assembly = bytearray()
        self._discarding = False
        self._inbox: deque[bytes] = deque()
        self._control: list[Frame] = []
        self._lock = threading.Lock()

    # --- public API --------------------------------------------------------------------------

    def request(self, data: bytes, timeout: float = 30.0) -> bytes:
        """Host side: send one message (a command APDU) and return the peer's answer."""
        with self._lock:
            self._send_message(data)
            return self._recv_message(timeout)

    def send_message(self, data: bytes) -> None:
        """Send one message reliably (every fragment acknowledged)."""
        with self._lock:
            self._send_message(data)

    def recv_message(self, timeout: float | None = None) -> bytes:
        """Wait for the next complete message; :class:`AudioLinkTimeout` after ``timeout`` s."""
        with self._lock:
            return self._recv_message(timeout)

    def serve(
        self,
        handler: Callable[[bytes], bytes],
        *,
        stop: threading.Event | None = None,
        poll: float = 0.2,
    ) -> None:
        """Card side: answer each message with ``handler(message)`` until closed or ``stop``.

        A response the host never acknowledges is logged and dropped (the host times out and
        asks again); the loop returns when the PCM stream ends.
        """
        while stop is None or not stop.is_set():
            try:
                message = self.recv_message(timeout=poll)
            except AudioLinkTimeout:
                continue
            except AudioLinkClosed:
                return
            response = handler(message)
            try:
                self.send_message(response)
            except AudioLinkTimeout:
                log.warning("audio link: the host did not acknowledge a response; dropped")
            except AudioLinkClosed:
                return

    def close(self) -> None:
        """Close the PCM port."""
        self.port.close()

    def __enter__(self) -> AudioLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sending -----------------------------------------------------------------------------

    def _send_message(self, data: bytes) -> None:
        if len(data) > MAX_MESSAGE:
            raise AudioLinkError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE} bytes")
        chunks = [data[i : i + self.max_fragment] for i in range(0, len(data), self.max_fragment)]
        chunks = chunks or [b""]
        for index, chunk in enumerate(chunks):
            more = index < len(chunks) - 1
            self._send_reliable(Frame(FrameKind.DATA, self._tx_seq, chunk, more))
            self._tx_seq = (self._tx_seq + 1) % 256

    def _transmit(self, frame: Frame) -> float:
        burst = self._modulator.modulate(frame)
        self.port.send(burst)
        self.stats.frames_sent += 1
        self.stats.samples_sent += burst.size
        return burst.size / self.config.sample_rate

    def _send_reliable(self, frame: Frame) -> None:
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            if attempt:
                self.stats.retransmissions += 1
                log.debug("audio link: retransmitting frame %d (attempt %d)", frame.seq, attempt)
            self._control.clear()
            airtime = self._transmit(frame)
            # a real sound card plays the burst before the peer can answer
            deadline = time.monotonic() + self.ack_timeout + (airtime if self.port.realtime else 0)
            if self._await_ack(frame.seq, deadline):
                return
        raise AudioLinkTimeout(
            f"the peer did not acknowledge frame {frame.seq} after {attempts} attempts"
        )

    def _await_ack(self, seq: int, deadline: float) -> bool:
        """True on ACK(seq); False on NAK, a corrupted reply, or the deadline (retransmit)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            bad_before = self.stats.bad_frames
            self._pump(remaining, awaiting_ack=True)
            for control in self._control:
                if control.kind == FrameKind.ACK and control.seq == seq:
                    return True
                if control.kind == FrameKind.NAK:
                    return False
            self._control.clear()
            if self.stats.bad_frames > bad_before:
                return False

    # --- receiving ---------------------------------------------------------------------------

    def _recv_message(self, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._inbox:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise AudioLinkTimeout(f"no message from the peer within {timeout:.1f} s")
            self._pump(remaining, awaiting_ack=False)
        return self._inbox.popleft()

    def _pump(self, timeout: float | None, *, awaiting_ack: bool) -> None:
        """Read what the port has recorded, demodulate, and handle the frames found."""
        chunk = self.port.recv(timeout)
        if chunk.size == 0:
            return
        self.stats.samples_received += chunk.size
        self._rx = np.concatenate([self._rx, chunk]) if self._rx.size else chunk
        result = self._demodulator.scan(self._rx)
        self._rx = self._rx[result.consumed :]
        for frame in result.frames:
            self._on_frame(frame)
        for _ in result.rejected:
            self.stats.bad_frames += 1
            if not awaiting_ack:
                self._nak()

    def _nak(self) -> None:
        """Ask for a retransmission, at most once per expected frame (no NAK storms)."""
        expected = 0 if self._last_rx_seq is None else (self._last_rx_seq + 1) % 256
        if self._nak_sent_for == expected:
            return
        self._nak_sent_for = expected
        self.stats.naks_sent += 1
        self._transmit(Frame(FrameKind.NAK, expected))

    def _on_frame(self, frame: Frame) -> None:
        self.stats.frames_received += 1
        if frame.kind != FrameKind.DATA:
            self._control.append(frame)
            return
        if frame.seq == self._last_rx_seq:
            self.stats.duplicates += 1
        else:
            self._last_rx_seq = frame.seq
            self._nak_sent_for = None
            self._accept_fragment(frame)
        self.stats.acks_sent += 1
        self._transmit(Frame(FrameKind.ACK, frame.seq))

    def _accept_fragment(self, frame: Frame) -> None:
        if not self._discarding:
            self._assembly += frame.payload
            if len(self._assembly) > MAX_MESSAGE:
                log.warning("audio link: incoming message exceeds %d bytes; dropped", MAX_MESSAGE)
                self._assembly.clear()
                self._discarding = True
        if not frame.more:
            if not self._discarding:
                self._inbox.append(bytes(self._assembly))
            self._assembly.clear()
            self._discarding = False
