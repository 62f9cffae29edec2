"""Printable shop-front codes: a static code (the customer's wallet asks for the amount, and a
tip if they want to add one) with the shop's name and how to pay, as PNG and as a one-page PDF
(Pillow writes both; no other dependency)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Pillow, numpy and zxing-cpp are imported only to draw a page
    from PIL import Image, ImageDraw, ImageFont

PAGE = (1240, 1754)  # A5 at 150 dpi: a table or counter stand
DPI = 150.0
#: Debian's fonts-dejavu-core (any shop name's letters); Pillow's own font (ASCII) without it
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    from PIL import ImageFont

    if FONT.is_file():
        return ImageFont.truetype(str(FONT), size)
    return ImageFont.load_default(size=size)


def _centred(draw: ImageDraw.ImageDraw, y: int, text: str, size: int, fill: str) -> int:
    font = _font(size)
    box = draw.textbbox((0, 0), text, font=font)
    width = box[2] - box[0]
    while width > PAGE[0] - 120 and size > 14:  # long names: smaller, never cut
        size -= 4
        font = _font(size)
        box = draw.textbbox((0, 0), text, font=font)
        width = box[2] - box[0]
    draw.text(((PAGE[0] - width) // 2, y), text, font=font, fill=fill)
    box = (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
    return int(y + (box[3] - box[1]) + size // 2)


def poster(code: str, shop: str, label: str, currency: str) -> Image.Image:
    """The printed page: the shop's name, the code, what to do."""
    from PIL import Image, ImageDraw

    from safescan.code import qr

    page = Image.new("RGB", PAGE, "white")
    draw = ImageDraw.Draw(page)
    y = _centred(draw, 90, shop, 72, "#0d1117")
    if label:
        y = _centred(draw, y, label, 44, "#4d5561")
    code_img = Image.open(io.BytesIO(qr.render_png(code, module_size=12))).convert("RGB")
    side = min(PAGE[0] - 200, 900)
    code_img = code_img.resize((side, side), Image.Resampling.NEAREST)
    page.paste(code_img, ((PAGE[0] - side) // 2, y + 30))
    y += side + 80
    y = _centred(draw, y, "Scan with your safescan wallet", 48, "#0d1117")
    y = _centred(draw, y, f"Enter the amount ({currency}); add a tip if you like", 38, "#1d2430")
    _centred(draw, y, "Your key carrier shows who you pay before you approve.", 30, "#4d5561")
    return page


def poster_png(code: str, shop: str, label: str, currency: str) -> bytes:
    """The page as PNG."""
    out = io.BytesIO()
    poster(code, shop, label, currency).save(out, "PNG", dpi=(DPI, DPI))
    return out.getvalue()


def poster_pdf(code: str, shop: str, label: str, currency: str) -> bytes:
    """The page as a one-page PDF (A5)."""
    out = io.BytesIO()
    poster(code, shop, label, currency).save(
        out, "PDF", resolution=DPI, title=f"{shop} - safescan", creator="safescan"
    )
    return out.getvalue()
