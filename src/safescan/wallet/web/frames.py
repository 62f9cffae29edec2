"""Decoding camera frames on the service with zxing-cpp (the app's "server" decoder).

The page sends one grayscale frame (8 bits a pixel, row by row) with its width and height;
the service reads every QR code in it with the same decoder as ``safescan wallet scan``
(:func:`safescan.code.qr.decode_all`, first pass only) and answers the texts. Nothing else
is done with them: the page then asks :meth:`~.service.WalletService.scan` about the one it
saw.
"""

from __future__ import annotations

from PIL import Image

from safescan.code import qr
from safescan.code.errors import InvalidAmount
from safescan.code.numbers import parse_int
from safescan.wallet.web.service import WalletRequestInvalid

MAX_SIDE = 4096
MAX_PIXELS = 4_000_000
MAX_IMAGE_BYTES = 8 * 1024 * 1024


def parse_size(width: str | None, height: str | None) -> tuple[int, int]:
    """The frame's size from its headers; :class:`WalletRequestInvalid` unless both are
    whole numbers in 1..MAX_SIDE and the frame is at most MAX_PIXELS."""
    try:
        w = parse_int(width or "", field="the frame's width", maximum=MAX_SIDE)
        h = parse_int(height or "", field="the frame's height", maximum=MAX_SIDE)
    except InvalidAmount:
        raise WalletRequestInvalid(
            f"a frame needs its width and height: whole numbers 1 to {MAX_SIDE}"
        ) from None
    if w * h > MAX_PIXELS:
        raise WalletRequestInvalid(
            f"a frame is 1 to {MAX_SIDE} pixels a side and at most {MAX_PIXELS} pixels"
        )
    return w, h


def decode_frame(data: bytes, width: int, height: int) -> list[str]:
    """Every QR code's text in a grayscale frame (empty when there is none), read in one pass
    (:func:`safescan.code.qr.decode_all` with ``fast``): the camera sends the next frame."""
    if len(data) != width * height:
        raise WalletRequestInvalid(
            f"a {width}x{height} grayscale frame is {width * height} bytes, not {len(data)}"
        )
    return qr.decode_all(Image.frombytes("L", (width, height), data), fast=True)


def decode_picture(data: bytes) -> list[str]:
    """Every QR code's text in an image file (PNG, JPEG, WebP, GIF, BMP): a photo the
    customer chose instead of using the camera."""
    if len(data) > MAX_IMAGE_BYTES:
        raise WalletRequestInvalid(f"a picture is at most {MAX_IMAGE_BYTES} bytes")
    return qr.decode_all(data)
