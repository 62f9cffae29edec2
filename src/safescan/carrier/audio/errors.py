"""Typed errors of the audio-port modem and its link layer.

All derive from :class:`safescan.code.errors.SafescanError` through :class:`AudioLinkError`.
"""

from __future__ import annotations

from safescan.code.errors import SafescanError


class AudioLinkError(SafescanError):
    """The audio-port link to the key carrier failed."""

    code = "audio_link_error"


class FrameError(AudioLinkError):
    """A frame is malformed: bad header, unknown kind, length out of range, truncated."""

    code = "audio_frame_error"


class FrameCrcError(FrameError):
    """A frame's checksum does not match: it was corrupted on the line."""

    code = "audio_frame_crc_error"


class AudioLinkTimeout(AudioLinkError):
    """The peer did not acknowledge or answer in time, after every allowed retry."""

    code = "audio_link_timeout"


class AudioLinkClosed(AudioLinkError):
    """The PCM stream was closed by the peer or by this side."""

    code = "audio_link_closed"


class WavFormatError(AudioLinkError):
    """A WAV file is unreadable or not 16-bit mono PCM."""

    code = "audio_wav_format_error"
