"""Where a scanned input comes from: an image file, a text file, or the payload text itself.

A command such as ``safescan code inspect SOURCE`` or ``safescan wallet scan SOURCE`` takes
either a path or the text. A mistyped path (``o1.pgn``) must not be reported as "text, not a
payment code": an argument that looks like a path and names no file is :class:`InputNotFound`.
"""

from __future__ import annotations

import re
from pathlib import Path

from safescan.code.errors import SafescanError
from safescan.code.header import looks_like_safescan

#: Longest argument still considered as a possible path (longer ones are payload text).
MAX_PATH_CHARS = 1024
#: Largest text file read as a payload (a code is at most a few KiB of text).
MAX_TEXT_FILE_BYTES = 64 * 1024
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".pgm", ".ppm"})

# a file name: no spaces, ends in a dot and a short extension (o1.pgn, code.png, order.txt)
_FILE_NAME_RE = re.compile(r"[^\s/\\]+\.[A-Za-z0-9]{1,5}\Z")


class InputNotFound(SafescanError):
    """The argument looks like a file path, but there is no such file."""

    code = "file_not_found"


class InputUnreadable(SafescanError):
    """The file exists but cannot be read as a payload (permissions, size, encoding)."""

    code = "file_unreadable"


def looks_like_path(text: str) -> bool:
    """Whether ``text`` is meant as a file path rather than payload text.

    Payment codes (safescan, EMV) and links are never paths; otherwise a path separator, a
    leading ``~`` or ``.``, or a name ending in a short extension makes a path.
    """
    if not text or len(text) > MAX_PATH_CHARS or "\n" in text or "\x00" in text:
        return False
    lowered = text.strip().lower()
    if looks_like_safescan(text) or text.startswith("0002") or "://" in lowered[:16]:
        return False
    if lowered.startswith(("www.", "mailto:", "upi:", "tel:")):
        return False
    if text.startswith(("/", "./", "../", "~")) or "/" in text or "\\" in text:
        return " " not in text.strip() or Path(text).expanduser().parent.exists()
    return _FILE_NAME_RE.fullmatch(text) is not None


def read_source(source: str | Path) -> str:
    """The payload text of ``source``: an image is decoded (one QR code), a text file is read,
    anything else is the text itself. Raises :class:`InputNotFound` for a path with no file,
    :class:`InputUnreadable` for an unreadable one, and the QR errors for a bad image."""
    text = str(source)
    if isinstance(source, Path) or looks_like_path(text):
        path = Path(text).expanduser()
        try:
            is_file = path.is_file()
        except (OSError, ValueError):
            is_file = False
        if not is_file:
            if path.exists():
                raise InputUnreadable(f"{text} is not a file")
            raise InputNotFound(
                f"file not found: {text} (give an image or text file, or the code's text)"
            )
        return _read_file(path)
    try:
        if len(text) <= MAX_PATH_CHARS and "\n" not in text and Path(text).is_file():
            return _read_file(Path(text))  # an existing file without an extension
    except (OSError, ValueError):  # not a usable path: it is payload text
        pass
    return text.strip()


def _read_file(path: Path) -> str:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        from safescan.code import qr  # numpy, Pillow, zxing-cpp: only for an image

        return qr.decode_image(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_TEXT_FILE_BYTES + 1)
    except OSError as exc:
        raise InputUnreadable(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_TEXT_FILE_BYTES:
        raise InputUnreadable(
            f"{path} is larger than {MAX_TEXT_FILE_BYTES} bytes: not a payment code text file"
            " (images must end in .png, .jpg, ...)"
        )
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InputUnreadable(
            f"{path} is neither a known image type (.png, .jpg, ...) nor UTF-8 text"
        ) from None
