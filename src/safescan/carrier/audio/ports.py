"""PCM ports: where an :class:`~safescan.carrier.audio.link.AudioLink` plays and records samples.

A port sends 16-bit PCM bursts and returns whatever samples have been recorded. Ports here:

- :class:`SocketPcmPort`: a stream socket carrying 16-bit little-endian samples (a socketpair,
  or TCP for an ``audio://host:port`` transport). A reader thread drains the socket all the
  time, like a sound card that keeps recording, so two peers sending at once never deadlock.
- :class:`MemoryPcmPort`: an in-process pair, for tests and benchmarks.
- :class:`CallablePcmPort`: wraps two callables (e.g. a sound-card binding).
- :class:`ChannelPcmPort`: passes every sent burst through a :class:`ChannelModel`.
- :class:`RecordingPcmPort`: keeps everything sent and received, to save as WAV files.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from safescan.carrier.audio.channel import ChannelModel
from safescan.carrier.audio.errors import AudioLinkClosed, AudioLinkError
from safescan.carrier.audio.modem import SAMPLE_RATE, Pcm
from safescan.carrier.audio.wav import write_wav

_EMPTY: Pcm = np.zeros(0, dtype=np.int16)


class PcmPort(Protocol):
    """A full-duplex PCM stream endpoint."""

    realtime: bool
    """True if sending takes as long as the audio lasts (a real sound card)."""

    def send(self, samples: Pcm) -> None:
        """Play a burst of 16-bit samples."""

    def recv(self, timeout: float | None) -> Pcm:
        """Samples recorded since the last call; empty after ``timeout`` seconds of silence.

        Raises :class:`AudioLinkClosed` once the stream has ended.
        """

    def close(self) -> None:
        """Stop the port; the peer sees the stream end."""


class _QueueReceiver:
    """Common receive side: a queue of sample chunks, None marking the end of the stream."""

    def __init__(self, maxsize: int = 0) -> None:
        self._queue: queue.Queue[Pcm | None] = queue.Queue(maxsize)
        self._ended = False

    def recv(self, timeout: float | None) -> Pcm:
        if self._ended:
            raise AudioLinkClosed("the PCM stream has ended")
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return _EMPTY
        if first is None:
            self._ended = True
            raise AudioLinkClosed("the PCM stream has ended")
        chunks = [first]
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # report the end on the next call, after this data
                break
            chunks.append(item)
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


class MemoryPcmPort(_QueueReceiver):
    """One end of an in-process PCM pipe; make both ends with :meth:`pair`."""

    realtime = False

    def __init__(self) -> None:
        super().__init__()
        self._peer: MemoryPcmPort | None = None
        self._closed = False

    @classmethod
    def pair(cls) -> tuple[MemoryPcmPort, MemoryPcmPort]:
        """Two connected ends."""
        a, b = cls(), cls()
        a._peer, b._peer = b, a
        return a, b

    def send(self, samples: Pcm) -> None:
        """Deliver a copy of the samples to the other end."""
        if self._closed or self._peer is None or self._peer._closed:
            raise AudioLinkClosed("the PCM pipe is closed")
        self._peer._queue.put(np.array(samples, dtype=np.int16))

    def close(self) -> None:
        """Close this end; the other end's ``recv`` raises :class:`AudioLinkClosed`."""
        if not self._closed:
            self._closed = True
            if self._peer is not None:
                self._peer._queue.put(None)
            self._queue.put(None)


#: the most chunks (each at most 64 KiB) recorded and not yet demodulated: past it the reader
#: stops reading, and the peer's sending waits (before: a peer flooding samples faster than
#: the demodulator took them grew the queue without bound)
MAX_QUEUED_CHUNKS = 256
#: seconds a burst may wait for the peer to take it (``SO_SNDTIMEO``), then the link is
#: closed (before: a peer that never read held the sender in ``sendall`` for ever: the card,
#: which serves one host at a time, for every other host)
SEND_TIMEOUT = 5.0


class SocketPcmPort(_QueueReceiver):
    """16-bit little-endian samples over a connected stream socket."""

    realtime = False

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(MAX_QUEUED_CHUNKS)
        self._sock = sock
        self._closed = False
        seconds = int(SEND_TIMEOUT)
        micros = int((SEND_TIMEOUT - seconds) * 1_000_000)
        with contextlib.suppress(OSError):  # the receiving side is not touched (SO_RCVTIMEO)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, micros)
            )
        self._reader = threading.Thread(target=self._read_loop, name="pcm-reader", daemon=True)
        self._reader.start()

    @classmethod
    def connect(cls, host: str, port: int, timeout: float = 5.0) -> SocketPcmPort:
        """Connect to a PCM stream server (the carrier side of ``audio://host:port``)."""
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise AudioLinkError(
                f"cannot connect to the audio port at {host}:{port}: {exc}"
            ) from exc
        sock.settimeout(None)
        return cls(sock)

    def _read_loop(self) -> None:
        carry = b""
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    break
                data = carry + data
                whole = len(data) - len(data) % 2
                carry = data[whole:]
                if whole and not self._put(
                    np.frombuffer(data[:whole], dtype="<i2").astype(np.int16)
                ):
                    return
        except OSError:
            pass  # the socket was closed under us: the end of the stream, reported below
        finally:
            if not self._put(None):
                self._end_now()

    def _end_now(self) -> None:
        """The port is closed: the end of the stream goes in now, in place of a recorded
        chunk if the queue is full (nobody may wait for what it held)."""
        while True:
            try:
                self._queue.put_nowait(None)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def _put(self, item: Pcm | None) -> bool:
        """Queue ``item``, waiting while the queue is full; False once the port is closed."""
        while not self._closed:
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def send(self, samples: Pcm) -> None:
        """Write the samples to the socket."""
        if self._closed:
            raise AudioLinkClosed("the PCM socket is closed")
        try:
            self._sock.sendall(np.asarray(samples, dtype="<i2").tobytes())
        except OSError as exc:
            raise AudioLinkClosed(f"the PCM socket failed while sending: {exc}") from exc

    def close(self) -> None:
        """Shut the socket down and stop the reader thread."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):  # already disconnected
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._reader.join(timeout=2.0)


class CallablePcmPort:
    """A port made of two callables: ``send_pcm(samples)`` and ``recv_pcm(timeout)``."""

    def __init__(
        self,
        send_pcm: Callable[[Pcm], None],
        recv_pcm: Callable[[float | None], Pcm],
        *,
        realtime: bool = False,
        close: Callable[[], None] | None = None,
    ) -> None:
        self._send = send_pcm
        self._recv = recv_pcm
        self._close = close
        self.realtime = realtime

    def send(self, samples: Pcm) -> None:
        """Play the samples through ``send_pcm``."""
        self._send(samples)

    def recv(self, timeout: float | None) -> Pcm:
        """Samples from ``recv_pcm``."""
        return np.asarray(self._recv(timeout), dtype=np.int16)

    def close(self) -> None:
        """Call the ``close`` callable, if any."""
        if self._close is not None:
            self._close()


class ChannelPcmPort:
    """Sends every burst through a channel model (attenuation, noise, DC, drift)."""

    def __init__(self, inner: PcmPort, channel: ChannelModel) -> None:
        self.inner = inner
        self.channel = channel
        self.realtime = inner.realtime

    def send(self, samples: Pcm) -> None:
        """Impair the burst, then send it."""
        self.inner.send(self.channel.apply(samples))

    def recv(self, timeout: float | None) -> Pcm:
        """Samples from the inner port, unchanged."""
        return self.inner.recv(timeout)

    def close(self) -> None:
        """Close the inner port."""
        self.inner.close()


class RecordingPcmPort:
    """Keeps a copy of everything sent and received; :meth:`save` writes two WAV files."""

    def __init__(self, inner: PcmPort) -> None:
        self.inner = inner
        self.realtime = inner.realtime
        self.sent: list[Pcm] = []
        self.received: list[Pcm] = []

    def send(self, samples: Pcm) -> None:
        """Record, then send."""
        self.sent.append(np.array(samples, dtype=np.int16))
        self.inner.send(samples)

    def recv(self, timeout: float | None) -> Pcm:
        """Receive, then record."""
        chunk = self.inner.recv(timeout)
        if chunk.size:
            self.received.append(chunk)
        return chunk

    def close(self) -> None:
        """Close the inner port."""
        self.inner.close()

    def save(self, sent_path: str | Path, received_path: str | Path) -> None:
        """Write what was sent and what was received as 16-bit mono WAV files."""
        for path, chunks in ((sent_path, self.sent), (received_path, self.received)):
            data = np.concatenate(chunks) if chunks else _EMPTY
            write_wav(path, data, SAMPLE_RATE)
