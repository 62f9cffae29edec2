"""The audio port: APDUs as FSK tones, 16-bit PCM samples carried over TCP (loopback).

Host URL: ``audio://HOST:PORT[?snr=20&atten=6&dc=0.05&drift_ppm=100&seed=1]``; the card side
serves ``tcp://HOST:PORT[?same parameters]`` (``safescan carrier serve --audio URL``).

Both ends run :class:`~safescan.carrier.audio.AudioLink` (CPFSK modem + stop-and-wait ARQ)
over a :class:`~safescan.carrier.audio.SocketPcmPort`. A message of one byte is a reader
control (vpcd convention: ``00`` power off, ``01`` power on, ``02`` reset, ``04`` get ATR), and
every message, control or APDU, is answered by exactly one message (the ATR, an empty message,
or the response APDU). Closing the connection unplugs the token (power off).

Channel model: any of ``snr`` (dB, or ``none``), ``atten`` (dB), ``dc`` (fraction of full
scale), ``drift_ppm``, ``seed`` turns on a :class:`~safescan.carrier.audio.ChannelModel` for
what this end *sends* (unnamed parameters keep the model's defaults); ``channel=1`` turns it on
with all defaults. Put parameters on both ends to impair both directions.

The samples are not paced: both ends are software, so the link runs as fast as the
demodulator (about 170 times faster than real time); :func:`air_time` gives the time the same
exchange would take through a real headset jack.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from safescan.carrier.errors import (
    CarrierDisconnected,
    CarrierTimeout,
    CarrierUnavailable,
    FramingError,
    TransportError,
)
from safescan.carrier.transport.base import Control, shown, split_url
from safescan.carrier.transport.tcp import listen

if TYPE_CHECKING:
    from safescan.carrier.audio import AudioLink, ChannelModel, LinkStats

_FLOAT_KEYS = {
    "snr": "snr_db",
    "atten": "attenuation_db",
    "dc": "dc_offset",
    "drift_ppm": "drift_ppm",
}
_KEYS = frozenset({*_FLOAT_KEYS, "seed", "channel"})


def parse_audio_url(url: str, scheme: str = "audio") -> tuple[str, int, ChannelModel | None]:
    """``audio://HOST:PORT?...`` (or ``tcp://`` for the card) -> (host, port, channel model)."""
    parts = split_url(url, f"{scheme}://HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != scheme or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise TransportError(f"not a {scheme}://HOST:PORT address: {shown(url)}")
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise TransportError(f"malformed parameters in {shown(url)}") from None
    return parts.hostname, port, channel_from_query(dict(query), url)


def channel_from_query(params: dict[str, str], url: str = "") -> ChannelModel | None:
    """A channel model from URL parameters, or None when none is asked for."""
    unknown = sorted(set(params) - _KEYS)
    if unknown:
        raise TransportError(
            f"unknown audio parameter(s) {', '.join(unknown)} in {shown(url)}; "
            f"known: {', '.join(sorted(_KEYS))}"
        )
    if not params or params.get("channel") == "0":
        return None
    from safescan.carrier.audio import AudioLinkError, ChannelModel

    kwargs: dict[str, float | int | None] = {}
    for key, field in _FLOAT_KEYS.items():
        if key not in params:
            continue
        text = params[key]
        if key == "snr" and text.lower() in ("none", "inf", "off"):
            kwargs[field] = None
            continue
        try:
            value = float(text)
        except ValueError:
            raise TransportError(f"audio parameter {key}={text!r} is not a number") from None
        if not math.isfinite(value):
            raise TransportError(f"audio parameter {key}={text!r} must be finite")
        kwargs[field] = value
    if "seed" in params:
        try:
            kwargs["seed"] = int(params["seed"])
        except ValueError:
            raise TransportError(
                f"audio parameter seed={params['seed']!r} is not an integer"
            ) from None
    if params.get("channel", "1") not in ("0", "1"):
        raise TransportError("audio parameter channel must be 0 or 1")
    try:
        return ChannelModel(**kwargs)  # type: ignore[arg-type]
    except AudioLinkError as exc:
        raise TransportError(f"bad channel model in {shown(url)}: {exc.message}") from None


def make_link(sock: socket.socket, channel: ChannelModel | None) -> AudioLink:
    """An :class:`AudioLink` over a connected socket, through ``channel`` if given."""
    from safescan.carrier.audio import AudioLink, ChannelPcmPort, PcmPort, SocketPcmPort

    port: PcmPort = SocketPcmPort(sock)
    if channel is not None:
        port = ChannelPcmPort(port, channel)
    return AudioLink(port)


def air_time(stats: LinkStats, sample_rate: int = 44100) -> float:
    """Seconds of audio this endpoint played and recorded (the real-time cost of the exchange)."""
    return (stats.samples_sent + stats.samples_received) / sample_rate


class AudioTransport:
    """Host side of ``audio://HOST:PORT``: the wallet's headset jack."""

    def __init__(
        self, host: str, port: int, channel: ChannelModel | None = None, *, timeout: float = 5.0
    ) -> None:
        from safescan.carrier.audio import AudioLinkError

        self.url = f"audio://{host}:{port}"
        self._timeout = timeout
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError:
            raise CarrierTimeout(f"no answer from the carrier's audio port at {self.url}") from None
        except OSError as exc:
            raise CarrierUnavailable(
                f"no carrier audio port at {self.url} ({exc.strerror or type(exc).__name__})"
            ) from None
        sock.settimeout(None)
        try:
            self.link = make_link(sock, channel)
        except AudioLinkError as exc:
            sock.close()
            raise CarrierUnavailable(f"cannot open the audio link at {self.url}: {exc}") from None
        self._broken = False

    def _request(self, message: bytes) -> bytes:
        from safescan.carrier.audio import AudioLinkClosed, AudioLinkError, AudioLinkTimeout

        if self._broken:
            raise CarrierDisconnected("the audio link to the carrier is broken; reconnect")
        try:
            return self.link.request(message, timeout=self._timeout)
        except AudioLinkTimeout as exc:
            self._broken = True  # a late answer would be taken for the next one's
            raise CarrierTimeout(f"the carrier at {self.url} did not answer: {exc}") from None
        except AudioLinkClosed as exc:
            self._broken = True
            raise CarrierDisconnected(f"the carrier at {self.url} went away: {exc}") from None
        except AudioLinkError as exc:
            self._broken = True
            raise TransportError(f"audio link to {self.url} failed: {exc}") from None

    def transmit(self, apdu: bytes) -> bytes:
        """Send a command APDU as tones, return the response APDU."""
        if len(apdu) < 2:
            raise TransportError("refusing to send a message the card would read as a control")
        reply = self._request(apdu)
        if len(reply) < 2:
            raise FramingError("the carrier's response is shorter than a status word")
        return reply

    def control(self, message: Control) -> bytes:
        """Send a control byte; returns the ATR for power on / reset / get ATR (else b"")."""
        return self._request(bytes([int(message)]))

    def close(self) -> None:
        """Hang up (the token is unplugged: power off)."""
        self._broken = True
        self.link.close()


def serve_audio(
    apdu: Callable[[bytes], bytes],
    control: Callable[[int], bytes],
    host: str,
    port: int,
    channel: ChannelModel | None,
    ready: Callable[[str], None],
    on_hangup: Callable[[], None],
) -> None:
    """Card side: listen on ``host:port``; serve one host at a time over an audio link."""
    from safescan.carrier.audio import AudioLinkError

    def handle(message: bytes) -> bytes:
        return control(message[0]) if len(message) == 1 else apdu(message)

    server, url = listen(host, port, "audio")
    with server:
        ready(url)
        while True:
            conn, _ = server.accept()
            try:
                link = make_link(conn, channel)
                with link:
                    link.serve(handle)
            except AudioLinkError:
                conn.close()
            finally:
                on_hangup()
