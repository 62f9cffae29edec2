"""Audio-port modem of the key carrier: CPFSK frames over 16-bit PCM, with an ARQ link.

Layers, bottom up: :mod:`.framing` (frames <-> bits), :mod:`.modem` (bits <-> PCM),
:mod:`.channel` (a model of the analogue path), :mod:`.ports` (where PCM goes: sockets,
memory, callables), :mod:`.link` (reliable messages with retransmission), :mod:`.wav`.

Typical use, host side::

    link = AudioLink(SocketPcmPort.connect("127.0.0.1", 5000))
    response = link.request(command_apdu)

and card side ``AudioLink(SocketPcmPort(conn)).serve(card.process_apdu)``.
"""

from __future__ import annotations

from safescan.carrier.audio.channel import ChannelModel, resample_drift
from safescan.carrier.audio.errors import (
    AudioLinkClosed,
    AudioLinkError,
    AudioLinkTimeout,
    FrameCrcError,
    FrameError,
    WavFormatError,
)
from safescan.carrier.audio.framing import (
    MAX_PAYLOAD,
    Frame,
    FrameKind,
    bits_to_bytes,
    bytes_to_bits,
    decode_frame,
    encode_frame,
    frame_bits,
)
from safescan.carrier.audio.link import MAX_MESSAGE, AudioLink, LinkStats
from safescan.carrier.audio.modem import (
    SAMPLE_RATE,
    Demodulator,
    ModemConfig,
    Modulator,
    ScanResult,
    demodulate,
    from_pcm16,
    modulate,
    modulate_bits,
    to_pcm16,
)
from safescan.carrier.audio.ports import (
    CallablePcmPort,
    ChannelPcmPort,
    MemoryPcmPort,
    PcmPort,
    RecordingPcmPort,
    SocketPcmPort,
)
from safescan.carrier.audio.wav import read_wav, write_wav

__all__ = [
    "MAX_MESSAGE",
    "MAX_PAYLOAD",
    "SAMPLE_RATE",
    "AudioLink",
    "AudioLinkClosed",
    "AudioLinkError",
    "AudioLinkTimeout",
    "CallablePcmPort",
    "ChannelModel",
    "ChannelPcmPort",
    "Demodulator",
    "Frame",
    "FrameCrcError",
    "FrameError",
    "FrameKind",
    "LinkStats",
    "MemoryPcmPort",
    "ModemConfig",
    "Modulator",
    "PcmPort",
    "RecordingPcmPort",
    "ScanResult",
    "SocketPcmPort",
    "WavFormatError",
    "bits_to_bytes",
    "bytes_to_bits",
    "decode_frame",
    "demodulate",
    "encode_frame",
    "frame_bits",
    "from_pcm16",
    "modulate",
    "modulate_bits",
    "read_wav",
    "resample_drift",
    "to_pcm16",
    "write_wav",
]
