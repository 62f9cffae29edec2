"""Fake camera videos for Chromium (``--use-file-for-fake-video-capture=FILE.y4m``).

A phone does not see a QR code as a clean image: a hand brings it in from the side (motion
blur), it is at an angle (perspective), out of focus at first, under a lamp's glare, in a dim
shop (low light, sensor noise). :func:`write_video` renders such a clip of a given code text
(or of no code at all) with numpy and Pillow and writes it as YUV4MPEG2 (4:2:0), which
Chromium plays in a loop as the camera.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

from safescan.code import qr

Gray = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Scene:
    """How the clip looks."""

    width: int = 640
    height: int = 480
    fps: int = 20
    hand_frames: int = 14  # the code slides in, motion-blurred, partly behind the hand
    settle_frames: int = 30  # then it is held, shaking a little, coming into focus
    light: float = 0.55  # overall brightness (1.0: a well-lit counter)
    noise: float = 7.0  # sensor noise (standard deviation, grey levels)
    glare: float = 0.55  # strength of a specular highlight across the code
    tilt: float = 0.12  # perspective: how far the far edge shrinks (fraction of the side)
    code_side: float = 0.66  # the code card's side as a fraction of the frame height
    focus_start: float = 2.6  # blur radius (px) when the code stops moving; autofocus clears it
    seed: int = 7

    @property
    def frames(self) -> int:
        """Frames in one loop of the clip."""
        return self.hand_frames + self.settle_frames


def _perspective_coeffs(
    src: list[tuple[float, float]], dst: list[tuple[float, float]]
) -> list[float]:
    """Coefficients for ``Image.transform(PERSPECTIVE)`` mapping ``dst`` corners to ``src``."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return [float(c) for c in np.linalg.solve(np.array(rows, float), np.array(rhs, float))]


def _background(scene: Scene, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """A shop counter: a wood-like gradient with some clutter."""
    h, w = scene.height, scene.width
    y, x = np.mgrid[0:h, 0:w]
    base = 120 + 40 * np.sin(x / 37.0 + np.sin(y / 53.0)) + 25 * (y / h)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        dx, dy = int(rng.integers(30, 140)), int(rng.integers(20, 90))
        draw.rectangle((x0, y0, x0 + dx, y0 + dy), fill=int(rng.integers(60, 220)))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(3)), dtype=np.float64)


def _card(text: str | None, side: int) -> Image.Image:
    """The code as shown (a printed card with its quiet zone), or a blank card with a logo."""
    if text is None:
        card = Image.new("L", (side, side), 235)
        draw = ImageDraw.Draw(card)
        draw.rectangle((side // 6, side // 6, side * 5 // 6, side // 3), fill=70)
        for i in range(4):
            y = side // 2 + i * side // 10
            draw.line((side // 6, y, side * 5 // 6, y), fill=120, width=max(2, side // 60))
        return card
    code = qr.make_qr(text).to_image(module_size=8).convert("L")
    return code.resize((side, side), Image.Resampling.BILINEAR)


def _hand(draw: ImageDraw.ImageDraw, cx: float, cy: float, side: float) -> None:
    """A hand holding the card's lower edge: a dark skin-toned blob with fingers."""
    tone = 96
    draw.ellipse((cx - side * 0.45, cy + side * 0.38, cx + side * 0.35, cy + side * 1.1), fill=tone)
    for i in range(4):
        fx = cx - side * 0.3 + i * side * 0.14
        draw.rounded_rectangle(
            (fx, cy + side * 0.30, fx + side * 0.1, cy + side * 0.62), radius=side * 0.05, fill=tone
        )


def frames(text: str | None, scene: Scene = Scene()) -> Iterator[Gray]:
    """The clip's frames (grayscale, ``height`` x ``width``)."""
    rng = np.random.default_rng(scene.seed)
    back = _background(scene, rng)
    h, w = scene.height, scene.width
    side = int(h * scene.code_side)
    card = _card(text, side)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(scene.frames):
        moving = i < scene.hand_frames
        # where the card's centre is: sliding in from the right, then held with a little shake
        t = min(1.0, i / max(1, scene.hand_frames - 1))
        ease = 1 - (1 - t) ** 3
        cx = w / 2 + (1 - ease) * (w * 0.75) + rng.normal(0, 1.5)
        cy = h / 2 + (1 - ease) * (h * 0.15) + rng.normal(0, 1.5)
        half = side / 2
        k = scene.tilt * side
        corners = [  # perspective: the right edge is further from the camera
            (cx - half, cy - half),
            (cx + half - k * 0.3, cy - half + k * 0.5),
            (cx + half - k * 0.3, cy + half - k * 0.5),
            (cx - half, cy + half),
        ]
        coeffs = _perspective_coeffs(
            [(0, 0), (side, 0), (side, side), (0, side)], [(x, y) for x, y in corners]
        )
        warped = card.transform(
            (w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR
        )
        mask = Image.new("L", card.size, 255).transform(
            (w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR
        )
        frame = Image.fromarray(back.astype(np.uint8))
        frame.paste(warped, (0, 0), mask)
        _hand(ImageDraw.Draw(frame), cx, cy, side)
        if moving:  # motion blur along the slide
            length = int(6 + 20 * (1 - t))
            still = np.asarray(frame, dtype=np.float64)
            arr = sum(np.roll(still, s, axis=1) for s in range(length)) / length
        else:  # autofocus: blurred at first, then sharp enough
            settle = i - scene.hand_frames
            radius = max(0.8, scene.focus_start - settle * 0.25)
            arr = np.asarray(frame.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float64)
        # glare: a bright elliptical highlight drifting over the upper left of the code
        gx, gy = cx - side * 0.18 + 10 * np.sin(i / 5), cy - side * 0.2
        glare = np.exp(-(((xx - gx) / (side * 0.22)) ** 2 + ((yy - gy) / (side * 0.12)) ** 2))
        arr = arr + scene.glare * glare * (255 - arr)
        # low light: darker, flatter, and noisier (gain), with a vignette
        vignette = 1 - 0.35 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2) * 2
        arr = arr * scene.light * vignette + 12
        arr = arr + rng.normal(0, scene.noise, arr.shape)
        yield np.clip(arr, 0, 255).astype(np.uint8)


def write_y4m(path: Path, clip: Iterator[Gray], scene: Scene) -> Path:
    """Write frames as YUV4MPEG2 4:2:0 (neutral chroma)."""
    chroma = bytes([128]) * ((scene.width // 2) * (scene.height // 2) * 2)
    with open(path, "wb") as out:
        out.write(
            f"YUV4MPEG2 W{scene.width} H{scene.height} F{scene.fps}:1 Ip A1:1 C420jpeg\n".encode()
        )
        for frame in clip:
            out.write(b"FRAME\n")
            out.write(frame.tobytes())
            out.write(chroma)
    return path


def write_video(path: Path, text: str | None, scene: Scene = Scene()) -> Path:
    """The clip of ``text`` (None: a card with no code) as a Y4M file for Chromium."""
    return write_y4m(path, frames(text, scene), scene)


def readable_frames(text: str | None, scene: Scene = Scene()) -> list[int]:
    """Indexes of the frames zxing-cpp can read ``text`` in (a check that a clip is neither
    trivially clean nor impossible)."""
    found = []
    for i, frame in enumerate(frames(text, scene)):
        if text is not None and text in qr.decode_all(Image.fromarray(frame)):
            found.append(i)
    return found


def side_by_side(left: str, right: str, scene: Scene) -> Iterator[Gray]:
    """Two codes held side by side (a sticker put next to the merchant's own), in the same dim,
    noisy, glary light, shaking a little: ``scene.frames`` frames."""
    rng = np.random.default_rng(scene.seed)
    back = _background(scene, rng)
    h, w = scene.height, scene.width
    side = int(min(h * scene.code_side, w * 0.44))
    cards = [_card(left, side), _card(right, side)]
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(scene.frames):
        frame = Image.fromarray(back.astype(np.uint8))
        for n, card in enumerate(cards):
            x = int(w * (0.26 + 0.48 * n) - side / 2 + rng.normal(0, 1.5))
            y = int(h / 2 - side / 2 + rng.normal(0, 1.5))
            frame.paste(card, (x, y))
        arr = np.asarray(frame.filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float64)
        gx, gy = w * 0.3 + 10 * np.sin(i / 5), h * 0.35
        glare = np.exp(-(((xx - gx) / (side * 0.22)) ** 2 + ((yy - gy) / (side * 0.12)) ** 2))
        arr = arr + scene.glare * 0.5 * glare * (255 - arr)
        arr = arr * max(scene.light, 0.8) + 12 + rng.normal(0, scene.noise * 0.5, arr.shape)
        yield np.clip(arr, 0, 255).astype(np.uint8)
