"""QR images: rendering (PNG, SVG, terminal), QR versions, and decoding camera-like pictures.

The distortion helpers here (``DISTORTIONS``, ``PAYLOAD``) are also used by
``bench/bench_qr.py``, so the benchmark measures exactly what the tests check.
"""

from __future__ import annotations

import io
import math
import random
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from safescan.code import qr
from safescan.code.errors import (
    ImageUnreadable,
    MultipleCodesFound,
    NoCodeFound,
    PayloadTooLarge,
    QrError,
)

BASE45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


def make_payload(length: int = 400, seed: int = 20240611) -> str:
    """A realistic safescan code: ``SS1:`` then Base45 characters, ``length`` in all."""
    rng = random.Random(seed)
    return "SS1:" + "".join(rng.choice(BASE45_ALPHABET) for _ in range(length - 4))


PAYLOAD = make_payload()
OTHER_PAYLOAD = make_payload(seed=7)
EMV_PAYLOAD = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678"
    "520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京"
    "540523.7253031565502016233030412340603***0708A60086670902ME91320016A0112233449988"
    "77070812345678630444A4"
)

Distortion = Callable[[Image.Image], Image.Image]


def rendered(text: str = PAYLOAD, module_size: int = 6) -> Image.Image:
    """The code for ``text`` as an 8-bit grayscale Pillow image."""
    return qr.make_qr(text).to_image(module_size).convert("L")


# --- distortions of a rendered code, like a phone camera would see it ---------------------


def rotate(degrees: float) -> Distortion:
    def apply(image: Image.Image) -> Image.Image:
        return image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)

    return apply


def rescale(factor: float) -> Distortion:
    def apply(image: Image.Image) -> Image.Image:
        size = (round(image.width * factor), round(image.height * factor))
        method = Image.Resampling.LANCZOS if factor < 1 else Image.Resampling.BICUBIC
        return image.resize(size, method)

    return apply


def blur(radius: float) -> Distortion:
    def apply(image: Image.Image) -> Image.Image:
        return image.filter(ImageFilter.GaussianBlur(radius))

    return apply


def noise(sigma: float, seed: int = 1) -> Distortion:
    def apply(image: Image.Image) -> Image.Image:
        rng = np.random.default_rng(seed)
        values = np.asarray(image, dtype=np.float64)
        values = values + rng.normal(0.0, sigma, values.shape)
        return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))

    return apply


def contrast(low: int, high: int) -> Distortion:
    """Map black to ``low`` and white to ``high`` (dim print, glare)."""

    def apply(image: Image.Image) -> Image.Image:
        return image.point(lambda v: low + (high - low) * v // 255)

    return apply


def jpeg(quality: int) -> Distortion:
    def apply(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue()))

    return apply


def perspective_coefficients(
    source: Sequence[tuple[float, float]], target: Sequence[tuple[float, float]]
) -> tuple[float, ...]:
    """Coefficients for ``Image.transform(PERSPECTIVE)`` mapping ``target`` to ``source``."""
    rows: list[list[float]] = []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    rhs = [c for point in source for c in point]
    return tuple(float(c) for c in np.linalg.solve(np.array(rows), np.array(rhs)))


def perspective(image: Image.Image) -> Image.Image:
    """The code seen at an angle: its corners moved unevenly (a keystone warp)."""
    w, h = image.size
    pad = w // 5
    canvas = Image.new("L", (w + 2 * pad, h + 2 * pad), 255)
    canvas.paste(image, (pad, pad))
    source = [(pad, pad), (pad + w, pad), (pad + w, pad + h), (pad, pad + h)]
    target = [
        (pad + w * 0.12, pad + h * 0.05),
        (pad + w * 0.95, pad - h * 0.02),
        (pad + w * 1.05, pad + h * 0.98),
        (pad - w * 0.03, pad + h * 0.90),
    ]
    return canvas.transform(
        canvas.size,
        Image.Transform.PERSPECTIVE,
        perspective_coefficients(source, target),
        Image.Resampling.BICUBIC,
        fillcolor=255,
    )


def cluttered_background(width: int = 1200, height: int = 900, seed: int = 5) -> Image.Image:
    """A gradient with stripes, boxes, lines and text: a shop counter, not a white page."""
    y, x = np.mgrid[0:height, 0:width]
    values = 60 + 120 * x / width + 50 * np.sin(y / 37.0)
    canvas = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    rng = random.Random(seed)
    for _ in range(60):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        box = (x0, y0, x0 + rng.randrange(5, 80), y0 + rng.randrange(5, 80))
        draw.rectangle(box, fill=rng.randrange(256))
        ends = [(rng.randrange(width), rng.randrange(height)) for _ in range(2)]
        draw.line(ends, fill=rng.randrange(256), width=rng.randrange(1, 4))
        draw.text((rng.randrange(width), rng.randrange(height)), "SALE 50%", fill=0)
    return canvas


def on_clutter(image: Image.Image) -> Image.Image:
    canvas = cluttered_background()
    canvas.paste(rotate(5)(image), (350, 200))
    return canvas


def chain(*steps: Distortion) -> Distortion:
    def apply(image: Image.Image) -> Image.Image:
        for step in steps:
            image = step(image)
        return image

    return apply


DISTORTIONS: dict[str, Distortion] = {
    "rotate_7": rotate(7),
    "rotate_30": rotate(30),
    "rotate_90": rotate(90),
    "scale_down_40pct": rescale(0.4),  # ~2.4 px per module
    "scale_up_3x": rescale(3.0),
    "gaussian_blur_2": blur(2.0),
    "gaussian_blur_3": blur(3.0),  # needs the upscale fallback
    "noise_sigma_40": noise(40),
    "noise_sigma_80": noise(80),  # needs the smoothing fallback
    "perspective": perspective,
    "low_contrast_40": contrast(110, 150),
    "low_contrast_20": contrast(120, 140),  # needs the contrast-stretch fallback
    "jpeg_quality_10": jpeg(10),
    "cluttered_background": on_clutter,
    "camera_like": chain(perspective, blur(1.5), noise(30), contrast(60, 170), jpeg(30)),
}


# --- versions and modes ---------------------------------------------------------------------


def test_payload_is_base45_text() -> None:
    assert len(PAYLOAD) == 400
    assert PAYLOAD.startswith("SS1:")
    assert qr.is_alphanumeric(PAYLOAD)
    assert not qr.is_alphanumeric("SS1:abc")


def test_alphanumeric_text_uses_alphanumeric_mode() -> None:
    # Byte mode needs 8 bits a character: 400 characters need version 15 at level M
    # (v14 holds 362 bytes). Alphanumeric mode needs 5.5 bits: version 12 (holds 419).
    byte_mode_version = qr.qr_version(PAYLOAD.lower())  # lower case forces byte mode
    assert byte_mode_version == 15
    assert qr.qr_version(PAYLOAD) == 12
    assert qr.qr_version(PAYLOAD) < byte_mode_version


@pytest.mark.parametrize(
    ("length", "version"),
    # ISO/IEC 18004 alphanumeric capacities at level M: v11 366, v12 419, v13 483 characters.
    [(366, 11), (367, 12), (419, 12), (420, 13), (483, 13), (484, 14)],
)
def test_version_at_capacity_boundaries(length: int, version: int) -> None:
    assert qr.qr_version(make_payload(length)) == version


def test_module_count_and_code_object() -> None:
    code = qr.make_qr(PAYLOAD)
    assert code.version == 12
    assert code.size == 17 + 4 * 12 == qr.module_count(PAYLOAD) == 65
    assert code.size_with_quiet_zone == 65 + 2 * qr.QUIET_ZONE
    assert code.modules.shape == (65, 65)
    assert code.modules.dtype == np.bool_
    # The three finder patterns: 7x7 dark ring corners.
    for y, x in ((0, 0), (0, 58), (58, 0)):
        assert code.modules[y : y + 7, x : x + 7].sum() == 7 * 7 - 5 * 5 + 3 * 3
    assert code.text == PAYLOAD


def test_largest_alphanumeric_text_fits_version_40() -> None:
    assert qr.qr_version("A" * 3391) == 40


@pytest.mark.parametrize("text", ["A" * 3392, "a" * 2332, "9" * 5597, "A" * 1_000_000])
def test_text_too_long_raises_payload_too_large(text: str) -> None:
    with pytest.raises(PayloadTooLarge, match="does not fit"):
        qr.render_png(text)


@pytest.mark.parametrize("text", ["", "SS1:\ud800"])
def test_empty_or_invalid_text_raises_qr_error(text: str) -> None:
    with pytest.raises(QrError) as info:
        qr.make_qr(text)
    assert not isinstance(info.value, PayloadTooLarge)


# --- PNG ------------------------------------------------------------------------------------


@pytest.mark.parametrize("module_size", [2, 8])
def test_png_round_trip(module_size: int) -> None:
    data = qr.render_png(PAYLOAD, module_size=module_size)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (73 * module_size, 73 * module_size)
    assert qr.decode_image(data) == PAYLOAD


def test_png_pixels_are_the_modules_with_a_quiet_zone() -> None:
    code = qr.make_qr(PAYLOAD)
    with Image.open(io.BytesIO(code.to_png(module_size=3))) as image:
        pixels = np.asarray(image.convert("L"))
    sampled_dark = pixels[1::3, 1::3] < 128  # centre pixel of each module
    assert np.array_equal(sampled_dark, code.padded())
    assert not sampled_dark[:4].any() and not sampled_dark[-4:].any()
    assert not sampled_dark[:, :4].any() and not sampled_dark[:, -4:].any()


def test_save_png_and_decode_from_file(tmp_path: Path) -> None:
    path = tmp_path / "code.png"
    qr.save_png(PAYLOAD, path, module_size=4)
    assert qr.decode_image(path) == PAYLOAD
    assert qr.decode_image(str(path)) == PAYLOAD


@pytest.mark.parametrize("module_size", [0, 65, -1])
def test_module_size_out_of_range(module_size: int) -> None:
    with pytest.raises(QrError, match="module size"):
        qr.render_png(PAYLOAD, module_size=module_size)


def test_module_size_must_be_an_int() -> None:
    with pytest.raises(QrError, match="whole number"):
        qr.render_png(PAYLOAD, module_size=2.5)  # type: ignore[arg-type]


def test_save_to_missing_directory_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(QrError, match="cannot write"):
        qr.save_png(PAYLOAD, tmp_path / "missing" / "code.png")


@pytest.mark.parametrize(
    "text",
    [EMV_PAYLOAD, "Café ☕ 支付 — ok", "https://example.com/pay?id=42&amount=3.50"],
    ids=["emv_mpm", "unicode", "url"],
)
def test_other_text_round_trips(text: str) -> None:
    assert qr.decode_image(qr.render_png(text, module_size=4)) == text


# --- SVG ------------------------------------------------------------------------------------


def rasterize_svg(svg: str) -> np.ndarray:
    """Parse our SVG and paint its path into a module matrix (True = dark)."""
    ns = {"svg": "http://www.w3.org/2000/svg"}
    root = ElementTree.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    _, _, width, height = (int(v) for v in root.attrib["viewBox"].split())
    matrix = np.zeros((height, width), dtype=bool)
    path = root.find("svg:path", ns)
    assert path is not None and path.attrib["fill"] == "#000000"
    for x, y, run in re.findall(r"M(\d+) (\d+)h(\d+)v1h-\3z", path.attrib["d"]):
        row, start = int(y), int(x)
        assert not matrix[row, start : start + int(run)].any(), "overlapping runs"
        matrix[row, start : start + int(run)] = True
    # Every command in the path was understood.
    assert re.fullmatch(r"(M\d+ \d+h(\d+)v1h-\2z)*", path.attrib["d"])
    return matrix


def test_svg_is_well_formed_and_draws_the_modules() -> None:
    code = qr.make_qr(PAYLOAD)
    svg = code.to_svg(module_size=5)
    root = ElementTree.fromstring(svg)
    assert root.attrib["width"] == root.attrib["height"] == str(73 * 5)
    assert root.attrib["viewBox"] == "0 0 73 73"
    matrix = rasterize_svg(svg)
    assert matrix.sum() == code.modules.sum()
    assert np.array_equal(matrix, code.padded())


def test_svg_round_trip_by_rendering_it(tmp_path: Path) -> None:
    path = tmp_path / "code.svg"
    qr.save_svg(PAYLOAD, path)
    matrix = rasterize_svg(path.read_text(encoding="utf-8"))
    image = Image.fromarray(~matrix).resize((73 * 4, 73 * 4), Image.Resampling.NEAREST)
    assert qr.decode_image(image) == PAYLOAD


# --- terminal -------------------------------------------------------------------------------

HALF = {" ": (False, False), "▀": (True, False), "▄": (False, True), "█": (True, True)}


def test_terminal_half_blocks() -> None:
    code = qr.make_qr(PAYLOAD)
    text = qr.render_terminal(PAYLOAD)
    lines = text.split("\n")
    assert len(lines) == math.ceil(73 / 2) == 37
    assert all(len(line) == 73 for line in lines)
    assert set(text) <= set(HALF) | {"\n"}
    # Default (dark terminal background): glyphs mark light modules.
    inked = np.array([[HALF[c][half] for c in line] for line in lines for half in (0, 1)])
    assert np.array_equal(inked[:73], ~code.padded())
    assert inked[73].all()  # the row past the symbol is light


def test_terminal_light_background_marks_dark_modules() -> None:
    code = qr.make_qr(PAYLOAD)
    lines = qr.render_terminal(PAYLOAD, light_background=True).split("\n")
    inked = np.array([[HALF[c][half] for c in line] for line in lines for half in (0, 1)])
    assert np.array_equal(inked[:73], code.padded())
    assert not inked[73].any()


def test_terminal_ascii_fallback() -> None:
    code = qr.make_qr(PAYLOAD)
    text = qr.render_terminal(PAYLOAD, ascii_only=True, light_background=True)
    assert text.isascii()
    lines = text.split("\n")
    assert len(lines) == 73
    assert all(len(line) == 146 for line in lines)
    inked = np.array([[line[i : i + 2] == "##" for i in range(0, 146, 2)] for line in lines])
    assert np.array_equal(inked, code.padded())


# --- decoding camera-like pictures ----------------------------------------------------------


@pytest.mark.parametrize("name", list(DISTORTIONS))
def test_decode_distorted(name: str) -> None:
    image = DISTORTIONS[name](rendered())
    assert qr.decode_image(image) == PAYLOAD


def test_decode_distorted_jpeg_file(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    DISTORTIONS["camera_like"](rendered()).convert("RGB").save(path, quality=40)
    assert qr.decode_image(path) == PAYLOAD
    assert qr.decode_image(path.read_bytes()) == PAYLOAD


def test_decode_clean_1000px_image() -> None:
    data = qr.render_png(PAYLOAD, module_size=14)
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (1022, 1022)
    assert qr.decode_image(data) == PAYLOAD


def test_decode_light_on_dark() -> None:
    inverted = rendered().point(lambda v: 255 - v)
    assert qr.decode_image(inverted) == PAYLOAD


def test_decode_transparent_png() -> None:
    # Dark modules opaque, light modules fully transparent black: must count as white.
    dark = np.asarray(rendered()) < 128
    rgba = np.zeros((*dark.shape, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(dark, 255, 0)
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    assert qr.decode_image(buffer.getvalue()) == PAYLOAD


def test_decode_16_bit_png() -> None:
    values = np.asarray(rendered(), dtype=np.uint16) * 257
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        assert image.mode.startswith("I")
    assert qr.decode_image(buffer.getvalue()) == PAYLOAD


def test_blank_image_has_no_code() -> None:
    with pytest.raises(NoCodeFound):
        qr.decode_image(Image.new("L", (800, 600), 255))
    assert qr.decode_all(Image.new("L", (800, 600), 255)) == []


def test_cluttered_image_without_code_has_no_code() -> None:
    with pytest.raises(NoCodeFound):
        qr.decode_image(cluttered_background())


def test_two_codes_are_ambiguous() -> None:
    canvas = Image.new("L", (1000, 500), 255)
    canvas.paste(rendered(PAYLOAD), (20, 30))
    canvas.paste(rendered(OTHER_PAYLOAD), (530, 40))
    with pytest.raises(MultipleCodesFound, match="2 QR codes") as info:
        qr.decode_image(canvas)
    assert info.value.code == "multiple_codes_found"
    assert qr.decode_all(canvas) == [PAYLOAD, OTHER_PAYLOAD]


# --- hostile and broken input ---------------------------------------------------------------


def test_text_file_renamed_png_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "code.png"
    path.write_text("SS1:THIS IS NOT AN IMAGE\n", encoding="utf-8")
    with pytest.raises(ImageUnreadable, match="not an image") as info:
        qr.decode_image(path)
    assert not isinstance(info.value, qr.ImageTooLarge)


@pytest.mark.parametrize("keep", [0.02, 0.1, 0.5])
def test_truncated_png_is_unreadable(keep: float) -> None:
    data = qr.render_png(PAYLOAD, module_size=4)
    with pytest.raises(ImageUnreadable):
        qr.decode_image(data[: int(len(data) * keep)])


def test_missing_file_empty_bytes_directory_and_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(ImageUnreadable, match="no such file"):
        qr.decode_image(tmp_path / "absent.png")
    with pytest.raises(ImageUnreadable, match="directory"):
        qr.decode_image(tmp_path)
    with pytest.raises(ImageUnreadable, match="empty"):
        qr.decode_image(b"")
    with pytest.raises(ImageUnreadable, match="int"):
        qr.decode_image(123)  # type: ignore[arg-type]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels but holds almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("width", "height"), [(8000, 6000), (20000, 20000)])
def test_oversize_image_refused_before_decoding(width: int, height: int) -> None:
    with pytest.raises(qr.ImageTooLarge, match=r"too large|megapixels") as info:
        qr.decode_image(png_header_only(width, height))
    assert isinstance(info.value, ImageUnreadable)
    assert info.value.code == "image_too_large"


def test_image_at_the_pixel_limit_is_not_refused_for_size() -> None:
    # 40 MP exactly is allowed: the (empty) data is then found to be truncated.
    with pytest.raises(ImageUnreadable) as info:
        qr.decode_image(png_header_only(8000, 5000))
    assert not isinstance(info.value, qr.ImageTooLarge)


def test_oversize_file_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = qr.render_png(PAYLOAD, module_size=4)
    monkeypatch.setattr(qr, "MAX_INPUT_BYTES", len(data) - 1)
    path = tmp_path / "code.png"
    path.write_bytes(data)
    with pytest.raises(qr.ImageTooLarge):
        qr.decode_image(path)
    with pytest.raises(qr.ImageTooLarge):
        qr.decode_image(data)


def test_corrupted_images_raise_only_typed_errors() -> None:
    rng = random.Random(99)
    small = rendered(module_size=2)
    samples = []
    for fmt in ("PNG", "JPEG", "GIF", "BMP"):
        buffer = io.BytesIO()
        small.save(buffer, format=fmt)
        samples.append(buffer.getvalue())
    outcomes = {"decoded": 0, "error": 0}
    for i in range(160):
        data = bytearray(samples[i % len(samples)])
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            text = qr.decode_image(bytes(data))
        except QrError:
            outcomes["error"] += 1
        else:
            assert text == PAYLOAD  # error correction may fix pixel damage, never alter text
            outcomes["decoded"] += 1
    assert outcomes["error"] > 0


@pytest.mark.parametrize("name", ["gaussian_blur_3", "noise_sigma_80", "low_contrast_20"])
def test_fallback_passes_are_needed(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    image = DISTORTIONS[name](rendered())
    monkeypatch.setattr(qr, "_PASSES", qr._PASSES[:1])  # the fast QR-only pass alone
    with pytest.raises(NoCodeFound):
        qr.decode_image(image)
    monkeypatch.undo()
    assert qr.decode_image(image) == PAYLOAD
