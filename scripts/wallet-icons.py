"""Draw the wallet app's PNG icons (src/safescan/wallet/web/static/icons/), the same picture
as icon.svg: a shield with a tick inside scan corners. Run once after changing the design:

    .venv/bin/python scripts/wallet-icons.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parents[1] / "src/safescan/wallet/web/static/icons"
GREEN, WHITE = (11, 93, 75, 255), (255, 255, 255, 255)


def draw(size: int, *, maskable: bool) -> Image.Image:
    s = 4  # draw large, then shrink: smooth edges
    big = 512 * s
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    if maskable:
        d.rectangle((0, 0, big, big), fill=GREEN)
        inset = 0.12  # the safe zone of a maskable icon: keep the drawing inside 80 %
    else:
        d.rounded_rectangle((0, 0, big - 1, big - 1), radius=96 * s, fill=GREEN)
        inset = 0.0

    def p(x: float, y: float) -> tuple[float, float]:
        k = 1 - 2 * inset
        return ((inset * 512 + x * k) * s, (inset * 512 + y * k) * s)

    w = int(28 * s * (1 - 2 * inset))
    for pts in (
        [(120, 176), (120, 120), (176, 120)],
        [(336, 120), (392, 120), (392, 176)],
        [(392, 336), (392, 392), (336, 392)],
        [(176, 392), (120, 392), (120, 336)],
        [(218, 258), (246, 286), (296, 232)],
    ):
        d.line([p(*q) for q in pts], fill=WHITE, width=w, joint="curve")
    shield = [(256, 150), (342, 184), (342, 246), (330, 300), (300, 340), (256, 364),
              (212, 340), (182, 300), (170, 246), (170, 184), (256, 150)]  # fmt: skip
    d.line([p(*q) for q in shield], fill=WHITE, width=w, joint="curve")
    return img.resize((size, size), Image.Resampling.LANCZOS)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    draw(192, maskable=False).save(OUT / "icon-192.png", optimize=True)
    draw(512, maskable=False).save(OUT / "icon-512.png", optimize=True)
    draw(512, maskable=True).save(OUT / "icon-maskable-512.png", optimize=True)


if __name__ == "__main__":
    main()
