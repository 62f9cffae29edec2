"""QR images for payment codes: render (PNG, SVG, terminal text) and decode (camera-like images).

Rendering uses zxing-cpp (C++, via the ``zxingcpp`` module) at error-correction level M with a
quiet zone of four modules. zxing-cpp picks the encoding modes itself: text made only of the QR
alphanumeric characters (``0-9 A-Z space $ % * + - . / :``, which is what Base45 uses) is
encoded in alphanumeric mode, 5.5 bits a character instead of 8, so a 400-character
``SS1:...`` code needs version 12 where byte mode would need version 15.

Decoding looks for QR codes only (about ten times faster than trying every format), then,
if that finds nothing, tries a few fallback passes (another binarizer, a downscaled copy, a
denoised copy). Every failure is a typed :class:`~safescan.code.errors.QrError`; images whose
header announces more than :data:`MAX_IMAGE_PIXELS` pixels are refused before any pixel is
decoded.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt
import zxingcpp
from PIL import Image, ImageFilter, ImageOps

from safescan.code.errors import (
    ImageUnreadable,
    MultipleCodesFound,
    NoCodeFound,
    PayloadTooLarge,
    QrError,
)

__all__ = [
    "ALPHANUMERIC_CHARSET",
    "EC_LEVEL",
    "MAX_IMAGE_PIXELS",
    "MAX_INPUT_BYTES",
    "QUIET_ZONE",
    "ImageSource",
    "ImageTooLarge",
    "QrCode",
    "decode_all",
    "decode_image",
    "is_alphanumeric",
    "make_qr",
    "module_count",
    "qr_version",
    "render_png",
    "render_svg",
    "render_terminal",
    "save_png",
    "save_svg",
]

EC_LEVEL: Final = "M"
"""Error-correction level of every code we render (recovers ~15 % damage)."""

QUIET_ZONE: Final = 4
"""Light border around the symbol, in modules (the minimum ISO/IEC 18004 asks for)."""

ALPHANUMERIC_CHARSET: Final = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
"""The 45 characters of QR alphanumeric mode (and of Base45)."""

MAX_IMAGE_PIXELS: Final = 40_000_000
"""Largest image (width x height) :func:`decode_image` accepts; checked from the header."""

MAX_INPUT_BYTES: Final = 50 * 1024 * 1024
"""Largest encoded image file or byte string :func:`decode_image` accepts."""

MIN_MODULE_SIZE: Final = 1
MAX_MODULE_SIZE: Final = 64
DEFAULT_MODULE_SIZE: Final = 8

# Version 40 at level M holds 5596 digits; any longer text cannot fit whatever its content.
_MAX_QR_CHARS: Final = 5596

# Decoders we let Pillow use on untrusted input: the common ones, no exotic plugins.
_ALLOWED_FORMATS: Final = ("PNG", "JPEG", "WEBP", "GIF", "BMP")

# Exceptions Pillow raises on corrupt, truncated or hostile input.
_PIL_ERRORS: Final = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)

# Half-block characters: (upper module drawn, lower module drawn) -> character.
_HALF_BLOCKS: Final = {
    (False, False): " ",
    (True, False): "\u2580",  # ▀ upper half block
    (False, True): "\u2584",  # ▄ lower half block
    (True, True): "\u2588",  # █ full block
}

ImageSource: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image"
"""What :func:`decode_image` reads: a file path, encoded image bytes, or a Pillow image."""

BoolMatrix: TypeAlias = npt.NDArray[np.bool_]


class ImageTooLarge(ImageUnreadable):
    """The image is too large to decode safely (pixel count or file size over the limit)."""

    code = "image_too_large"


# --- rendering ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class QrCode:
    """A QR symbol at level M: its text, version and module matrix (``True`` = dark).

    ``modules`` excludes the quiet zone; every output adds :data:`QUIET_ZONE` light modules
    on each side.
    """

    text: str
    version: int
    modules: BoolMatrix = field(repr=False)

    @property
    def size(self) -> int:
        """Modules per side, without the quiet zone (``17 + 4 * version``)."""
        return int(self.modules.shape[0])

    @property
    def size_with_quiet_zone(self) -> int:
        """Modules per side including the quiet zone."""
        return self.size + 2 * QUIET_ZONE

    def padded(self) -> BoolMatrix:
        """The module matrix with the quiet zone added (``True`` = dark)."""
        return np.pad(self.modules, QUIET_ZONE, constant_values=False)

    def to_image(self, module_size: int = DEFAULT_MODULE_SIZE) -> Image.Image:
        """A 1-bit Pillow image, ``module_size`` pixels per module, quiet zone included."""
        _check_module_size(module_size)
        light = ~self.padded()
        image = Image.fromarray(light)  # mode "1": True = white
        side = light.shape[0] * module_size
        return image.resize((side, side), Image.Resampling.NEAREST)

    def to_png(self, module_size: int = DEFAULT_MODULE_SIZE) -> bytes:
        """PNG bytes (1-bit grayscale), ``module_size`` pixels per module."""
        buffer = io.BytesIO()
        self.to_image(module_size).save(buffer, format="PNG")
        return buffer.getvalue()

    def to_svg(self, module_size: int = DEFAULT_MODULE_SIZE) -> str:
        """An SVG document; one user unit per module, displayed at ``module_size`` px/module.

        Dark modules are one ``<path>`` of horizontal runs; the ``viewBox`` lets the
        drawing scale to any size without blurring (``shape-rendering="crispEdges"``).
        """
        _check_module_size(module_size)
        padded = self.padded()
        side = padded.shape[0]
        pixels = side * module_size
        path = "".join(f"M{x} {y}h{run}v1h-{run}z" for y, x, run in _dark_runs(padded))
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{pixels}" '
            f'height="{pixels}" viewBox="0 0 {side} {side}" shape-rendering="crispEdges">\n'
            f'<rect width="{side}" height="{side}" fill="#ffffff"/>\n'
            f'<path fill="#000000" d="{path}"/>\n'
            "</svg>\n"
        )

    def to_terminal(self, *, ascii_only: bool = False, light_background: bool = False) -> str:
        """Text for a terminal, quiet zone included, no trailing newline.

        By default two module rows share one line using Unicode half blocks (``▀ ▄ █``),
        so the code is ``ceil(n / 2)`` lines of ``n`` characters for ``n`` modules with
        the quiet zone. ``ascii_only=True`` draws each module as two characters
        (``##`` or two spaces), one line per module row.

        Terminal glyphs are drawn in the foreground colour: on a dark background (the
        default) the glyphs mark the *light* modules; pass ``light_background=True`` for
        dark-on-light terminals, where the glyphs mark the dark modules.
        """
        inked = self.padded()
        if not light_background:
            inked = ~inked
        if ascii_only:
            return "\n".join("".join("##" if v else "  " for v in row) for row in inked)
        if inked.shape[0] % 2:
            # The row below the last quiet-zone row is beyond the symbol: light.
            inked = np.vstack([inked, np.full((1, inked.shape[1]), not light_background)])
        return "\n".join(
            "".join(
                _HALF_BLOCKS[(bool(u), bool(d))]
                for u, d in zip(inked[y], inked[y + 1], strict=True)
            )
            for y in range(0, inked.shape[0], 2)
        )


def _dark_runs(matrix: BoolMatrix) -> Iterator[tuple[int, int, int]]:
    """Yield ``(row, column, length)`` for each horizontal run of dark modules."""
    for y, row in enumerate(matrix.tolist()):
        x = 0
        width = len(row)
        while x < width:
            if row[x]:
                start = x
                while x < width and row[x]:
                    x += 1
                yield y, start, x - start
            else:
                x += 1


def _check_module_size(module_size: int) -> None:
    if isinstance(module_size, bool) or not isinstance(module_size, int):
        raise QrError(f"module size must be a whole number of pixels, not {module_size!r}")
    if not MIN_MODULE_SIZE <= module_size <= MAX_MODULE_SIZE:
        raise QrError(
            f"module size must be between {MIN_MODULE_SIZE} and {MAX_MODULE_SIZE} pixels, "
            f"not {module_size}"
        )


def is_alphanumeric(text: str) -> bool:
    """True if every character of ``text`` is in the QR alphanumeric set (Base45 text is)."""
    return ALPHANUMERIC_CHARSET.issuperset(text)


def make_qr(text: str) -> QrCode:
    """Encode ``text`` as a QR symbol at level M, in the smallest version that holds it.

    zxing-cpp segments the text into the most compact modes: alphanumeric text stays in
    alphanumeric mode. Raises :class:`PayloadTooLarge` if the text does not fit in
    version 40, and :class:`QrError` for empty text or text that is not valid Unicode.
    """
    if not isinstance(text, str):
        raise QrError(f"a QR code holds text, not {type(text).__name__}")
    if not text:
        raise QrError("cannot make a QR code of empty text")
    if len(text) > _MAX_QR_CHARS:
        raise PayloadTooLarge(
            f"text of {len(text)} characters does not fit in a QR code at level {EC_LEVEL} "
            f"(at most {_MAX_QR_CHARS} digits, 3391 alphanumeric characters or 2331 bytes)"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise QrError(f"text is not valid Unicode (at position {exc.start})") from exc
    try:
        barcode = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level=EC_LEVEL)
        pixels = np.asarray(zxingcpp.write_barcode_to_image(barcode, add_quiet_zones=False))
    except ValueError as exc:
        if "too long" in str(exc).lower():
            raise PayloadTooLarge(
                f"text of {len(text)} characters does not fit in a QR code at level "
                f"{EC_LEVEL} (version 40 is the largest)"
            ) from exc
        raise QrError(f"could not encode the text as a QR code: {exc}") from exc
    except RuntimeError as exc:
        raise QrError(f"could not encode the text as a QR code: {exc}") from exc
    if barcode.ec_level != EC_LEVEL:
        raise QrError(f"zxing-cpp made a level-{barcode.ec_level} code, not level {EC_LEVEL}")
    modules: BoolMatrix = pixels == 0
    size = modules.shape[0]
    if modules.ndim != 2 or modules.shape[1] != size or (size - 17) % 4 or size < 21:
        raise QrError(f"zxing-cpp returned an unexpected {pixels.shape} module matrix")
    modules.setflags(write=False)
    return QrCode(text=text, version=(size - 17) // 4, modules=modules)


def qr_version(text: str) -> int:
    """The QR version (1-40) zxing-cpp chooses for ``text`` at level M."""
    return make_qr(text).version


def module_count(text: str) -> int:
    """Modules per side of the QR symbol for ``text``, without the quiet zone."""
    return make_qr(text).size


def render_png(text: str, *, module_size: int = DEFAULT_MODULE_SIZE) -> bytes:
    """PNG bytes of the QR code for ``text`` (``module_size`` pixels per module)."""
    return make_qr(text).to_png(module_size)


def save_png(
    text: str, path: str | os.PathLike[str], *, module_size: int = DEFAULT_MODULE_SIZE
) -> None:
    """Write the QR code for ``text`` as a PNG file."""
    _write(path, render_png(text, module_size=module_size))


def render_svg(text: str, *, module_size: int = DEFAULT_MODULE_SIZE) -> str:
    """An SVG document of the QR code for ``text``."""
    return make_qr(text).to_svg(module_size)


def save_svg(
    text: str, path: str | os.PathLike[str], *, module_size: int = DEFAULT_MODULE_SIZE
) -> None:
    """Write the QR code for ``text`` as an SVG file (UTF-8)."""
    _write(path, render_svg(text, module_size=module_size).encode("utf-8"))


def render_terminal(text: str, *, ascii_only: bool = False, light_background: bool = False) -> str:
    """Terminal text of the QR code for ``text``; see :meth:`QrCode.to_terminal`."""
    return make_qr(text).to_terminal(ascii_only=ascii_only, light_background=light_background)


def _write(path: str | os.PathLike[str], data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise QrError(f"cannot write {os.fspath(path)!r}: {exc.strerror or exc}") from exc


# --- decoding -------------------------------------------------------------------------------


def decode_image(source: ImageSource) -> str:
    """The text of the single QR code in an image (file path, image bytes or Pillow image).

    Raises :class:`ImageUnreadable` if the input is not a readable image,
    :class:`ImageTooLarge` if it is over :data:`MAX_IMAGE_PIXELS` pixels or
    :data:`MAX_INPUT_BYTES` bytes, :class:`NoCodeFound` if no QR code can be read and
    :class:`MultipleCodesFound` if several can: which one to trust would be a guess.
    """
    texts = decode_all(source)
    if not texts:
        raise NoCodeFound("no QR code could be read in the image")
    if len(texts) > 1:
        raise MultipleCodesFound(
            f"the image holds {len(texts)} QR codes; show only the one to scan"
        )
    return texts[0]


def decode_all(source: ImageSource, *, fast: bool = False) -> list[str]:
    """The texts of all QR codes read in an image, top to bottom then left to right.

    Returns an empty list when there is none. Raises :class:`ImageUnreadable` (or its
    subclass :class:`ImageTooLarge`) for input that is not a readable, reasonably sized image.
    ``fast`` runs the first pass only (camera frames: the next frame is the next try, and a
    frame without a code costs one pass instead of all of them).
    """
    gray = _load_gray(source)
    for attempt in _PASSES[:1] if fast else _PASSES:
        found = attempt(gray)
        if found:
            found.sort(key=_reading_order)
            return [barcode.text for barcode in found]
    return []


def _reading_order(barcode: zxingcpp.Barcode) -> tuple[int, int]:
    corner = barcode.position.top_left
    return (int(corner.y), int(corner.x))


_QR_ONLY: Final = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)


def _read(
    gray: Image.Image, binarizer: zxingcpp.Binarizer = zxingcpp.Binarizer.LocalAverage
) -> list[zxingcpp.Barcode]:
    pixels = np.asarray(gray)
    try:
        found = zxingcpp.read_barcodes(
            pixels,
            formats=_QR_ONLY,
            text_mode=zxingcpp.TextMode.Plain,
            binarizer=binarizer,
        )
    except (ValueError, RuntimeError) as exc:
        raise ImageUnreadable(f"the QR decoder could not process the image: {exc}") from exc
    return [barcode for barcode in found if barcode.valid]


def _pass_default(gray: Image.Image) -> list[zxingcpp.Barcode]:
    return _read(gray)


def _pass_global_histogram(gray: Image.Image) -> list[zxingcpp.Barcode]:
    """One threshold for the whole image: helps uneven blur the local binarizer mis-reads."""
    return _read(gray, zxingcpp.Binarizer.GlobalHistogram)


def _pass_contrast(gray: Image.Image) -> list[zxingcpp.Barcode]:
    """Very low contrast (dim print, glare): stretch the histogram to full range."""
    return _read(ImageOps.autocontrast(gray, cutoff=1))


def _pass_smoothed(gray: Image.Image) -> list[zxingcpp.Barcode]:
    """Heavy sensor noise: a light Gaussian blur averages it out."""
    return _read(gray.filter(ImageFilter.GaussianBlur(1)))


def _pass_resized(gray: Image.Image) -> list[zxingcpp.Barcode]:
    """Small or blurred images: a 2x bilinear upscale; large photos: a ~1000 px copy."""
    longest = max(gray.size)
    if longest > _UPSCALE_LIMIT:
        factor = longest / 1000
        size = (max(1, round(gray.width / factor)), max(1, round(gray.height / factor)))
        return _read(gray.resize(size, Image.Resampling.BOX))
    size = (gray.width * 2, gray.height * 2)
    return _read(gray.resize(size, Image.Resampling.BILINEAR))


_UPSCALE_LIMIT: Final = 1200

_PASSES: Final[tuple[Callable[[Image.Image], list[zxingcpp.Barcode]], ...]] = (
    _pass_default,
    _pass_global_histogram,
    _pass_contrast,
    _pass_smoothed,
    _pass_resized,
)


def _load_gray(source: ImageSource) -> Image.Image:
    """Open ``source`` as an 8-bit grayscale image, refusing oversize input early."""
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height)
        try:
            return _to_gray(source)
        except _PIL_ERRORS as exc:
            raise ImageUnreadable(f"the image could not be converted: {exc}") from exc
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        name = "the image data"
    elif isinstance(source, str | os.PathLike):
        name = repr(os.fspath(source))
        data = _read_file(source, name)
    else:
        raise ImageUnreadable(
            f"cannot read an image from a {type(source).__name__}; "
            "give a file path, image bytes or a Pillow image"
        )
    if len(data) > MAX_INPUT_BYTES:
        raise ImageTooLarge(
            f"{name} is {len(data)} bytes; images over {MAX_INPUT_BYTES} bytes are refused"
        )
    if not data:
        raise ImageUnreadable(f"{name} is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=_ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name} is too large to decode safely: {exc}") from exc
    except _PIL_ERRORS as exc:
        raise ImageUnreadable(
            f"{name} is not an image this software can read (PNG, JPEG, WebP, GIF or BMP)"
        ) from exc
    with image:
        # The header gives the size: refuse bombs before any pixel is decompressed.
        _check_pixels(image.width, image.height)
        try:
            if image.format == "JPEG":
                # Let libjpeg produce grayscale directly (skips the colour conversion).
                image.draft("L", image.size)
            image.load()
            return _to_gray(image)
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(f"{name} is too large to decode safely: {exc}") from exc
        except _PIL_ERRORS as exc:
            raise ImageUnreadable(f"{name} is a damaged or truncated image: {exc}") from exc


def _read_file(path: str | os.PathLike[str], name: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_INPUT_BYTES:
                raise ImageTooLarge(
                    f"{name} is {size} bytes; images over {MAX_INPUT_BYTES} bytes are refused"
                )
            # Read one byte more than the limit: files that grow while read are caught too.
            return handle.read(MAX_INPUT_BYTES + 1)
    except FileNotFoundError as exc:
        raise ImageUnreadable(f"{name}: no such file") from exc
    except IsADirectoryError as exc:
        raise ImageUnreadable(f"{name} is a directory, not an image file") from exc
    except OSError as exc:
        raise ImageUnreadable(f"{name} cannot be read: {exc.strerror or exc}") from exc


def _check_pixels(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageUnreadable(f"the image has no pixels ({width}x{height})")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height / 1e6:.1f} megapixels; "
            f"images over {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels are refused"
        )


def _to_gray(image: Image.Image) -> Image.Image:
    """8-bit grayscale; transparency is flattened onto white, EXIF rotation applied."""
    if image.format == "JPEG" and image.getexif().get(0x0112, 1) != 1:
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "L":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _stretch_to_gray(np.asarray(image, dtype=np.float64))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("L")
    return image.convert("L")


def _stretch_to_gray(values: npt.NDArray[np.float64]) -> Image.Image:
    """Map a high-bit-depth image onto 0-255."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Image.new("L", (values.shape[1], values.shape[0]), 255)
    low, high = float(finite.min()), float(finite.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    scaled = np.nan_to_num((values - low) * scale, nan=255.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))
