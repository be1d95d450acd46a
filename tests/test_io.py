"""Tests for unet_core.io: decoding rules, error messages, data-set discovery, zip safety."""

from __future__ import annotations

import io
import stat
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from unet_core import io as uio
from unet_core.errors import DataSetError, ImageReadError, MaskError, UnetCoreError

RNG = np.random.default_rng(0)


# --------------------------------------------------------------------------- helpers


def save_pil(path: Path, arr: np.ndarray, fmt: str | None = None, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt, **kw)
    return path


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def noise(h: int = 64, w: int = 64, channels: int | None = None) -> np.ndarray:
    shape = (h, w) if channels is None else (h, w, channels)
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a (huge) size but carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def check_message(exc: pytest.ExceptionInfo[BaseException], *needles: str) -> str:
    """The message is one line and contains every needle."""
    message = str(exc.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


class NamedBytesIO(io.BytesIO):
    """Like Streamlit's UploadedFile: a BytesIO with a .name."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name


# --------------------------------------------------------------------------- limits


def test_get_max_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNET_MAX_PIXELS", raising=False)
    assert uio.get_max_pixels() == uio.DEFAULT_MAX_PIXELS == 40_000_000
    monkeypatch.setenv("UNET_MAX_PIXELS", "1234")
    assert uio.get_max_pixels() == 1234
    for bad in ("0", "-5", "abc", "1.5", ""):
        monkeypatch.setenv("UNET_MAX_PIXELS", bad)
        assert uio.get_max_pixels() == uio.DEFAULT_MAX_PIXELS


def test_extensions() -> None:
    assert uio.IMAGE_EXTENSIONS == (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


# --------------------------------------------------------------------------- decoding


def test_png_8bit(tmp_path: Path) -> None:
    arr = noise(5, 7)
    path = save_pil(tmp_path / "a.png", arr)
    raw = uio.read_raw(path)
    assert raw.dtype == np.uint8 and raw.shape == (5, 7)
    np.testing.assert_array_equal(raw, arr)
    img = uio.read_image(str(path))
    assert img.dtype == np.float32 and img.shape == (5, 7)
    np.testing.assert_allclose(img, arr / 255.0, atol=1e-7)


def test_png_16bit(tmp_path: Path) -> None:
    arr = np.array([[0, 1000, 32768], [40000, 65535, 7]], dtype=np.uint16)
    path = save_pil(tmp_path / "a16.png", arr)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    raw = uio.read_raw(path)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, arr)
    np.testing.assert_allclose(uio.read_image(path), arr / 65535.0, atol=1e-7)


def test_tiff_16bit_and_rgb16(tmp_path: Path) -> None:
    arr = np.array([[0, 65535], [256, 30000]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", arr)
    raw = uio.read_raw(tmp_path / "a.tif")
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, arr)
    np.testing.assert_allclose(uio.read_image(tmp_path / "a.tif"), arr / 65535.0, atol=1e-7)

    rgb = np.zeros((2, 3, 3), dtype=np.uint16)
    rgb[..., 1] = 65535
    tifffile.imwrite(tmp_path / "rgb.tiff", rgb, photometric="rgb")
    assert uio.read_raw(tmp_path / "rgb.tiff").shape == (2, 3, 3)
    np.testing.assert_allclose(uio.read_image(tmp_path / "rgb.tiff"), 0.587, atol=1e-6)


def test_tiff_planar_multipage_and_lzw(tmp_path: Path) -> None:
    planar = np.stack([np.full((4, 5), v, np.uint8) for v in (10, 20, 30)])
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    raw = uio.read_raw(tmp_path / "planar.tif")
    assert raw.shape == (4, 5, 3)
    np.testing.assert_array_equal(raw[0, 0], [10, 20, 30])

    pages = np.stack([np.full((3, 4), i, np.uint8) for i in (7, 8, 9)])
    tifffile.imwrite(tmp_path / "pages.tif", pages, photometric="minisblack")  # 3 pages
    np.testing.assert_array_equal(uio.read_raw(tmp_path / "pages.tif"), pages[0])

    # LZW needs imagecodecs in tifffile; without it the PIL fallback decodes it.
    arr = noise(6, 9)
    save_pil(tmp_path / "lzw.tif", arr, "TIFF", compression="tiff_lzw")
    np.testing.assert_array_equal(uio.read_raw(tmp_path / "lzw.tif"), arr)


def test_tiff_float32(tmp_path: Path) -> None:
    inside = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    tifffile.imwrite(tmp_path / "in.tif", inside)
    assert uio.read_raw(tmp_path / "in.tif").dtype == np.float32
    np.testing.assert_array_equal(uio.read_image(tmp_path / "in.tif"), inside)

    outside = np.array([[-2.0, 0.0], [2.0, 6.0]], dtype=np.float32)
    tifffile.imwrite(tmp_path / "out.tif", outside)
    np.testing.assert_allclose(uio.read_image(tmp_path / "out.tif"), [[0, 0.25], [0.5, 1]])

    tifffile.imwrite(tmp_path / "const.tif", np.full((3, 3), 7.0, np.float32))
    np.testing.assert_array_equal(uio.read_image(tmp_path / "const.tif"), 0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_tiff_float_nan_inf(tmp_path: Path, bad: float) -> None:
    arr = np.zeros((4, 4), np.float32)
    arr[1, 2] = bad
    tifffile.imwrite(tmp_path / "nan.tif", arr)
    with pytest.raises(ImageReadError) as exc:
        uio.read_image(tmp_path / "nan.tif")
    check_message(exc, "nan.tif", "NaN or infinite")
    with pytest.raises(MaskError) as exc:
        uio.read_mask(tmp_path / "nan.tif")
    check_message(exc, "nan.tif", "NaN or infinite")


def test_rgb_rgba_luma(tmp_path: Path) -> None:
    rgb = np.zeros((1, 4, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (0, 0, 255)
    rgb[0, 3] = (128, 128, 128)
    save_pil(tmp_path / "rgb.png", rgb)
    expected = [0.299, 0.587, 0.114, 128 / 255]
    np.testing.assert_allclose(uio.read_image(tmp_path / "rgb.png")[0], expected, atol=1e-6)

    rgba = np.dstack([rgb, np.array([[0, 50, 255, 3]], np.uint8)])
    save_pil(tmp_path / "rgba.png", rgba)
    raw = uio.read_raw(tmp_path / "rgba.png")
    assert raw.shape == (1, 4, 4)
    np.testing.assert_allclose(uio.read_image(tmp_path / "rgba.png")[0], expected, atol=1e-6)

    white = np.full((2, 2, 3), 255, np.uint8)
    assert uio.to_grayscale(white).max() == 255.0  # exact, not 254.99999


def test_to_grayscale_channels() -> None:
    la = np.dstack([np.full((2, 2), 9, np.uint8), np.full((2, 2), 200, np.uint8)])
    np.testing.assert_array_equal(uio.to_grayscale(la), 9.0)
    assert uio.to_grayscale(np.ones((2, 3), bool)).dtype == np.float64
    with pytest.raises(ImageReadError) as exc:
        uio.to_grayscale(np.zeros((2, 2, 5)))
    check_message(exc, "accepted")


def test_palette(tmp_path: Path) -> None:
    im = Image.new("P", (3, 2))
    im.putpalette([0, 0, 0, 255, 255, 255, 255, 0, 0] + [0] * (256 * 3 - 9))
    im.putdata([0, 1, 2, 1, 0, 2])
    im.save(tmp_path / "p.png")
    raw = uio.read_raw(tmp_path / "p.png")
    assert raw.shape == (2, 3, 3) and raw.dtype == np.uint8
    np.testing.assert_array_equal(raw[0, 1], [255, 255, 255])
    np.testing.assert_allclose(uio.read_image(tmp_path / "p.png")[0], [0, 1, 0.299], atol=1e-6)

    im.save(tmp_path / "pt.png", transparency=0)
    assert uio.read_raw(tmp_path / "pt.png").shape == (2, 3, 4)


@pytest.mark.parametrize("shape", [(1, 9), (9, 1), (1, 1)])
def test_thin_images(tmp_path: Path, shape: tuple[int, int]) -> None:
    arr = noise(*shape)
    for ext in (".png", ".tif"):
        path = tmp_path / f"thin{ext}"
        save_pil(path, arr) if ext == ".png" else tifffile.imwrite(path, arr)
        assert uio.read_image(path).shape == shape
        np.testing.assert_array_equal(uio.read_raw(path), arr)


def test_bmp_and_jpeg(tmp_path: Path) -> None:
    arr = noise(8, 11)
    save_pil(tmp_path / "a.bmp", arr)
    np.testing.assert_array_equal(uio.read_raw(tmp_path / "a.bmp"), arr)
    save_pil(tmp_path / "rgb.bmp", noise(4, 4, 3))
    assert uio.read_raw(tmp_path / "rgb.bmp").shape == (4, 4, 3)

    flat = np.full((16, 16), 100, np.uint8)
    save_pil(tmp_path / "a.jpg", flat, quality=95)
    img = uio.read_image(tmp_path / "a.jpg")
    assert img.shape == (16, 16)
    np.testing.assert_allclose(img, 100 / 255, atol=2 / 255)
    save_pil(tmp_path / "rgb.jpeg", np.full((8, 8, 3), 200, np.uint8))
    assert uio.read_raw(tmp_path / "rgb.jpeg").shape == (8, 8, 3)


def test_bytes_and_file_like_sources(tmp_path: Path) -> None:
    arr = noise(3, 4)
    data = png_bytes(arr)
    np.testing.assert_array_equal(uio.read_raw(data), arr)
    np.testing.assert_array_equal(uio.read_raw(io.BytesIO(data), name="x.png"), arr)
    upload = NamedBytesIO(data, "upload.png")
    upload.read()  # already consumed by someone else: must be rewound
    np.testing.assert_array_equal(uio.read_raw(upload), arr)
    assert uio.read_image(upload).shape == (3, 4)

    with pytest.raises(ImageReadError) as exc:
        uio.read_raw(b"hello, world", name="notes.png")
    check_message(exc, "notes.png", "not a readable image")
    with pytest.raises(ImageReadError) as exc:
        uio.read_raw(NamedBytesIO(b"garbage!", "up.jpg"))
    check_message(exc, "up.jpg")

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr.astype(np.uint16))
    np.testing.assert_array_equal(uio.read_raw(buf.getvalue(), name="t.tif"), arr)


def test_bool_png(tmp_path: Path) -> None:
    arr = np.array([[True, False], [False, True]])
    save_pil(tmp_path / "b.png", arr)
    raw = uio.read_raw(tmp_path / "b.png")
    assert raw.dtype == np.bool_
    np.testing.assert_array_equal(uio.read_image(tmp_path / "b.png"), arr.astype(np.float32))


# --------------------------------------------------------------------------- errors


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_text("meow, I am not an image\n" * 10)
    with pytest.raises(ImageReadError) as exc:
        uio.read_image(path)
    msg = check_message(exc, "cat.png", "not a readable image", "accepted: PNG, JPEG, TIFF, BMP")
    assert str(tmp_path) not in msg


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError) as exc:
        uio.read_raw(tmp_path / "empty.png")
    check_message(exc, "empty.png", "0 bytes", "accepted")
    with pytest.raises(ImageReadError) as exc:
        uio.read_raw(b"", name="up.png")
    check_message(exc, "up.png", "0 bytes")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError) as exc:
        uio.read_raw(tmp_path / "nope.png")
    check_message(exc, "nope.png", "not found")
    with pytest.raises(ImageReadError) as exc:
        uio.read_raw(tmp_path)
    check_message(exc, "folder")


def test_truncated_png(tmp_path: Path) -> None:
    data = png_bytes(noise(64, 64))
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as exc:
        uio.read_image(tmp_path / "cut.png")
    check_message(exc, "cut.png", "truncated", "accepted")
    (tmp_path / "head.png").write_bytes(data[:20])  # cut inside the header
    with pytest.raises(ImageReadError) as exc:
        uio.read_image(tmp_path / "head.png")
    check_message(exc, "head.png")


def test_truncated_jpeg(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(noise(64, 64, 3)).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    (tmp_path / "cut.jpg").write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(ImageReadError) as exc:
        uio.read_image(tmp_path / "cut.jpg")
    check_message(exc, "cut.jpg", "truncated", "JPEG")


def test_truncated_tiff(tmp_path: Path) -> None:
    buf = io.BytesIO()
    tifffile.imwrite(buf, RNG.integers(0, 65535, (64, 64), dtype=np.uint16))
    data = buf.getvalue()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as exc:
        uio.read_image(tmp_path / "cut.tif")
    check_message(exc, "cut.tif", "truncated TIFF")
    (tmp_path / "head.tif").write_bytes(data[:6])
    with pytest.raises(ImageReadError) as exc:
        uio.read_image(tmp_path / "head.tif")
    check_message(exc, "head.tif", "TIFF")


def test_unsupported_format_and_channels(tmp_path: Path) -> None:
    save_pil(tmp_path / "anim.gif", noise(4, 4))
    with pytest.raises(ImageReadError) as exc:
        uio.read_raw(tmp_path / "anim.gif")
    check_message(exc, "anim.gif", "GIF", "accepted: PNG, JPEG, TIFF, BMP")

    five = np.zeros((4, 4, 5), np.uint8)
    tifffile.imwrite(tmp_path / "five.tif", five, photometric="rgb", planarconfig="contig")
    with pytest.raises(ImageReadError) as exc:
        uio.read_raw(tmp_path / "five.tif")
    check_message(exc, "five.tif", "5 channels", "accepted")

    tifffile.imwrite(tmp_path / "cplx.tif", np.zeros((4, 4), np.complex64))
    with pytest.raises(ImageReadError) as exc:
        uio.read_raw(tmp_path / "cplx.tif")
    check_message(exc, "cplx.tif", "complex")


def test_pixel_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNET_MAX_PIXELS", raising=False)
    save_pil(tmp_path / "big.png", noise(10, 10))
    tifffile.imwrite(tmp_path / "big.tif", noise(10, 10))
    for name in ("big.png", "big.tif"):
        with pytest.raises(ImageReadError) as exc:
            uio.read_raw(tmp_path / name, max_pixels=99)
        check_message(exc, name, "10x10", "over the limit of 99 pixels", "UNET_MAX_PIXELS")
        assert uio.read_raw(tmp_path / name, max_pixels=100).shape == (10, 10)

    monkeypatch.setenv("UNET_MAX_PIXELS", "50")
    with pytest.raises(ImageReadError):
        uio.read_image(tmp_path / "big.png")
    with pytest.raises(MaskError):
        uio.read_mask(tmp_path / "big.tif")
    monkeypatch.delenv("UNET_MAX_PIXELS")
    assert uio.read_image(tmp_path / "big.png").shape == (10, 10)


@pytest.mark.parametrize("side", [10_000, 100_000])  # PIL warning zone / PIL error zone
def test_pixel_limit_checked_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: int
) -> None:
    monkeypatch.delenv("UNET_MAX_PIXELS", raising=False)
    (tmp_path / "bomb.png").write_bytes(png_header_only(side, side))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not escape
        with pytest.raises(ImageReadError) as exc:
            uio.read_raw(tmp_path / "bomb.png")
    check_message(exc, "bomb.png", "over the limit of 40,000,000 pixels")


def test_pil_own_limit_does_not_interfere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    save_pil(tmp_path / "a.png", noise(100, 100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert uio.read_raw(tmp_path / "a.png").shape == (100, 100)


def test_errors_are_unet_core_errors() -> None:
    assert issubclass(ImageReadError, UnetCoreError)
    with pytest.raises(UnetCoreError):
        uio.read_raw(b"\x00\x01", name="x.bmp")
    with pytest.raises(UnetCoreError):
        uio.read_raw(12345)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- normalise


def test_normalise_rules() -> None:
    gray = np.array([[0.0, 255.0]])
    np.testing.assert_allclose(uio.normalise(gray, np.dtype(np.uint8)), [[0, 1]])
    np.testing.assert_allclose(uio.normalise(gray, np.uint16), [[0, 255 / 65535]], rtol=1e-6)
    np.testing.assert_array_equal(uio.normalise(np.array([[0.0, 1.0]]), np.bool_), [[0, 1]])
    # other integers (PIL's int32): /65535 when within 16 bits, else min-max
    np.testing.assert_allclose(
        uio.normalise(np.array([[0.0, 65535.0]]), np.int32), [[0, 1]], rtol=1e-6
    )
    np.testing.assert_allclose(
        uio.normalise(np.array([[100.0, 100_100.0, 50_100.0]]), np.int32), [[0, 1, 0.5]]
    )
    np.testing.assert_array_equal(uio.normalise(np.full((2, 2), 1e6), np.int32), 0.0)
    # floats
    inside = np.array([[0.1, 0.9]])
    np.testing.assert_allclose(uio.normalise(inside, np.float64), inside, rtol=1e-6)
    np.testing.assert_allclose(uio.normalise(np.array([[-1.0, 3.0]]), np.float32), [[0, 1]])
    np.testing.assert_allclose(uio.normalise(np.full((2, 2), 0.3), np.float32), 0.3, rtol=1e-6)
    out = uio.normalise(np.array([[0.0, 1.0]]), np.float64)
    assert out.dtype == np.float32
    with pytest.raises(ImageReadError) as exc:
        uio.normalise(np.array([[0.0, np.nan]]), np.float32)
    check_message(exc, "NaN")


# --------------------------------------------------------------------------- masks


def test_mask_0_255_and_0_1(tmp_path: Path) -> None:
    m = RNG.random((6, 7)) > 0.5
    save_pil(tmp_path / "m255.png", (m * 255).astype(np.uint8))
    save_pil(tmp_path / "m01.png", m.astype(np.uint8))
    for name in ("m255.png", "m01.png"):
        out = uio.read_mask(tmp_path / name)
        assert out.dtype == np.bool_
        np.testing.assert_array_equal(out, m)
        assert uio.mask_is_binary(uio.read_raw(tmp_path / name))
    tifffile.imwrite(tmp_path / "m16.tif", (m * 65535).astype(np.uint16))
    np.testing.assert_array_equal(uio.read_mask(tmp_path / "m16.tif"), m)
    save_pil(tmp_path / "mb.png", m)
    np.testing.assert_array_equal(uio.read_mask(tmp_path / "mb.png"), m)


def test_binarise_rules() -> None:
    soft8 = np.array([[0, 1, 127, 128, 200, 255]], np.uint8)
    np.testing.assert_array_equal(uio.binarise_mask(soft8), [[0, 0, 0, 1, 1, 1]])
    assert not uio.mask_is_binary(soft8)
    soft16 = np.array([[0, 32767, 32768, 65535]], np.uint16)
    np.testing.assert_array_equal(uio.binarise_mask(soft16), [[0, 0, 1, 1]])
    softf = np.array([[0.0, 0.49, 0.5, 0.8]], np.float32)
    np.testing.assert_array_equal(uio.binarise_mask(softf), [[0, 0, 1, 1]])
    labels = np.array([[0, 1, 1, 0]], np.uint16)
    np.testing.assert_array_equal(uio.binarise_mask(labels), [[0, 1, 1, 0]])
    assert uio.mask_is_binary(labels)
    np.testing.assert_array_equal(uio.binarise_mask(np.zeros((2, 2), np.uint8)), False)
    np.testing.assert_array_equal(uio.binarise_mask(np.full((2, 2), 255, np.uint8)), True)
    boolean = np.array([[True, False]])
    assert uio.binarise_mask(boolean).dtype == np.bool_
    assert uio.mask_is_binary(boolean)
    # colour masks: grayscale first (white -> fg, pure red luma 76 -> bg)
    rgb = np.zeros((1, 3, 3), np.uint8)
    rgb[0, 1] = 255
    rgb[0, 2] = (255, 0, 0)
    np.testing.assert_array_equal(uio.binarise_mask(rgb), [[0, 1, 0]])
    assert not uio.mask_is_binary(rgb)
    assert uio.mask_is_binary(rgb[:, :2])
    # two levels {0, v} at any depth: foreground == v (a 16-bit 0/255 mask is not empty)
    two16 = np.array([[0, 255, 255, 0]], np.uint16)
    np.testing.assert_array_equal(uio.binarise_mask(two16), [[0, 1, 1, 0]])
    assert uio.mask_is_binary(two16)
    np.testing.assert_array_equal(uio.binarise_mask(np.array([[0, 100]], np.uint8)), [[0, 1]])
    np.testing.assert_array_equal(uio.binarise_mask(np.array([[0.0, 0.3]], np.float32)), [[0, 1]])
    # three or more levels still threshold and are not binary
    three16 = np.array([[0, 255, 40000]], np.uint16)
    np.testing.assert_array_equal(uio.binarise_mask(three16), [[0, 0, 1]])
    assert not uio.mask_is_binary(three16)
    assert uio.mask_is_binary(np.array([[0.0, 1.0]], np.float32))


def test_unreadable_mask_is_mask_error(tmp_path: Path) -> None:
    (tmp_path / "m.png").write_text("nope")
    with pytest.raises(MaskError) as exc:
        uio.read_mask(tmp_path / "m.png")
    check_message(exc, "m.png", "not a readable image")


def test_write_png_roundtrip(tmp_path: Path) -> None:
    m = np.array([[True, False, True]])
    uio.write_mask_png(tmp_path / "m.png", m)
    raw = uio.read_raw(tmp_path / "m.png")
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, [[255, 0, 255]])
    np.testing.assert_array_equal(uio.read_mask(tmp_path / "m.png"), m)
    with pytest.raises(MaskError):
        uio.write_mask_png(tmp_path / "bad.png", np.array([[0.2, 0.7]]))
    with pytest.raises(MaskError):
        uio.write_mask_png(tmp_path / "bad.png", np.zeros((2, 2, 2), bool))

    img = np.array([[0.0, 0.5, 1.0, 0.002]], np.float32)
    uio.write_image_png(tmp_path / "i.png", img)
    np.testing.assert_array_equal(uio.read_raw(tmp_path / "i.png"), [[0, 128, 255, 1]])
    with pytest.raises(UnetCoreError):
        uio.write_image_png(tmp_path / "bad.png", np.array([[np.nan]]))


# --------------------------------------------------------------------------- data sets


def make_dataset(
    root: Path, names: list[str], mask_names: list[str] | None = None, size: int = 4
) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for name in names:
        save_pil(root / "images" / name, noise(size, size))
    for name in names if mask_names is None else mask_names:
        save_pil(root / "masks" / name, ((noise(size, size) > 127) * 255).astype(np.uint8))
    return root


def test_find_images(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    for name in ("b.png", "a.TIF", "c.jpeg", ".hidden.png", "notes.txt"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(b"x")
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.png").write_bytes(b"x")
    single = tmp_path / "z.bmp"
    single.write_bytes(b"x")
    found = uio.find_images([folder, str(single), folder / "b.png"])
    assert [p.name for p in found] == ["a.TIF", "b.png", "c.jpeg", "z.bmp"]

    with pytest.raises(DataSetError) as exc:
        uio.find_images([tmp_path / "missing"])
    check_message(exc, "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSetError) as exc:
        uio.find_images([tmp_path / "empty"])
    check_message(exc, "empty", "no images", ".png", ".tiff")
    with pytest.raises(DataSetError) as exc:
        uio.find_images([folder / "notes.txt"])
    check_message(exc, "notes.txt", "accepted")
    with pytest.raises(DataSetError):
        uio.find_images([])


def test_find_pairs_basic_and_mismatched_extensions(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", ["b.png", "a.png"], ["a.png", "b.png", "orphan.png"])
    save_pil(root / "images" / "c.jpg", noise(4, 4))
    save_pil(root / "masks" / "c.png", noise(4, 4))
    save_pil(root / "masks" / "c.tif", noise(4, 4))  # .png preferred over .tif
    save_pil(root / "images" / "d.tif", noise(4, 4))
    save_pil(root / "masks" / "d.bmp", noise(4, 4))
    pairs = uio.find_pairs(root)
    assert [p.name for p in pairs] == ["a.png", "b.png", "c.jpg", "d.tif"]
    assert pairs[0] == uio.Pair("a.png", root / "images" / "a.png", root / "masks" / "a.png")
    assert pairs[2].mask_path == root / "masks" / "c.png"
    assert pairs[3].mask_path == root / "masks" / "d.bmp"
    with pytest.raises(AttributeError):
        pairs[0].name = "x"  # type: ignore[misc]


def test_find_pairs_nested_single_subfolder(tmp_path: Path) -> None:
    make_dataset(tmp_path / "outer" / "inner", ["a.png"])
    (tmp_path / "outer" / "__MACOSX").mkdir()
    pairs = uio.find_pairs(tmp_path / "outer")
    assert len(pairs) == 1 and pairs[0].image_path.parent.parent.name == "inner"


def test_find_pairs_missing_masks(tmp_path: Path) -> None:
    names = [f"img{i:02d}.png" for i in range(13)]
    root = make_dataset(tmp_path / "ds", names, names[:1])
    with pytest.raises(DataSetError) as exc:
        uio.find_pairs(root)
    msg = check_message(exc, "12 of 13 images have no mask", "img01.png", "and 2 more")
    assert "img12.png" not in msg and "img00.png" not in msg

    pairs = uio.find_pairs(root, require_masks=False)
    assert pairs[0].mask_path is not None and pairs[1].mask_path is None

    import shutil

    shutil.rmtree(root / "masks")
    with pytest.raises(DataSetError) as exc:
        uio.find_pairs(root)
    check_message(exc, "masks/")
    assert all(p.mask_path is None for p in uio.find_pairs(root, require_masks=False))


def test_find_pairs_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DataSetError) as exc:
        uio.find_pairs(tmp_path / "nope")
    check_message(exc, "nope")
    (tmp_path / "flat").mkdir()
    save_pil(tmp_path / "flat" / "a.png", noise(2, 2))
    with pytest.raises(DataSetError) as exc:
        uio.find_pairs(tmp_path / "flat")
    check_message(exc, "flat", "no images/ folder", "ROOT/images/NAME + ROOT/masks/NAME")
    (tmp_path / "ds" / "images").mkdir(parents=True)
    (tmp_path / "ds" / "images" / "readme.txt").write_text("x")
    with pytest.raises(DataSetError) as exc:
        uio.find_pairs(tmp_path / "ds")
    check_message(exc, "images", "no images", ".png")


def test_load_pair(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", ["a.png"], size=5)
    image, mask = uio.load_pair(uio.find_pairs(root)[0])
    assert image.shape == (5, 5) and image.dtype == np.float32
    assert mask is not None and mask.shape == (5, 5) and mask.dtype == np.bool_
    assert uio.load_pair(uio.Pair("a.png", root / "images" / "a.png", None))[1] is None

    save_pil(root / "images" / "a.png", noise(101, 101))
    save_pil(root / "masks" / "a.png", noise(100, 90))
    with pytest.raises(MaskError) as exc:
        uio.load_pair(uio.find_pairs(root)[0])
    assert str(exc.value) == (
        "a.png: mask is 100x90 (HxW) but image is 101x101; masks must match their image's size"
    )

    (root / "masks" / "a.png").write_text("broken")
    with pytest.raises(MaskError) as exc:
        uio.load_pair(uio.find_pairs(root)[0])
    check_message(exc, "masks/a.png")


# --------------------------------------------------------------------------- archives


def zip_bytes(members: dict[str, bytes], prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(prefix + name, data)
    return buf.getvalue()


def open_and_close(source: object, **kwargs: object) -> None:
    with uio.open_dataset(source, **kwargs):  # type: ignore[arg-type]
        pass


def dataset_members(names: list[str]) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    for name in names:
        members[f"images/{name}"] = png_bytes(noise(4, 4))
        members[f"masks/{name}"] = png_bytes(((noise(4, 4) > 127) * 255).astype(np.uint8))
    return members


def test_open_dataset_folder_as_is(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", ["a.png"])
    with uio.open_dataset(root) as folder:
        assert folder == root
    assert root.exists()
    with pytest.raises(DataSetError), uio.open_dataset(tmp_path / "missing"):
        pass
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DataSetError) as exc, uio.open_dataset(tmp_path / "x.txt"):
        pass
    check_message(exc, "x.txt", "not a folder or a .zip")


def test_open_dataset_zip_happy_path_and_cleanup(tmp_path: Path) -> None:
    members = dataset_members(["a.png", "b.png"])
    members["__MACOSX/train/._a.png"] = b"junk"
    members[".DS_Store"] = b"junk"
    data = zip_bytes(members, prefix="train/")
    (tmp_path / "train.zip").write_bytes(data)
    for source in (tmp_path / "train.zip", str(tmp_path / "train.zip"), data, io.BytesIO(data)):
        with uio.open_dataset(source) as folder:
            extracted = folder
            assert folder.is_dir() and not str(folder).startswith(str(tmp_path))
            pairs = uio.find_pairs(folder)
            assert [p.name for p in pairs] == ["a.png", "b.png"]
            image, mask = uio.load_pair(pairs[0])
            assert image.shape == mask.shape == (4, 4)
            assert not any(p.name.startswith(".") for p in folder.rglob("*"))
            assert not (folder / "train" / "__MACOSX").exists()
        assert not extracted.exists()

    # cleaned up on an exception inside the block too
    with pytest.raises(RuntimeError), uio.open_dataset(data) as folder:
        extracted = folder
        raise RuntimeError("boom")
    assert not extracted.exists()


def test_zip_without_images_folder(tmp_path: Path) -> None:
    (tmp_path / "flat.zip").write_bytes(zip_bytes({"a.png": png_bytes(noise(2, 2))}))
    with pytest.raises(DataSetError) as exc, uio.open_dataset(tmp_path / "flat.zip") as folder:
        extracted = folder
        uio.find_pairs(folder)
    msg = check_message(exc, "flat.zip", "no images/ folder", "ROOT/images/NAME")
    assert str(extracted) not in msg
    assert not extracted.exists()


@pytest.mark.parametrize(
    ("member", "needle"),
    [("../x.png", "'..'"), ("images/../../evil.png", "'..'"), ("/abs.png", "absolute"),
     ("C:/win.png", "absolute"), ("..\\back.png", "'..'")],
)  # fmt: skip
def test_zip_path_traversal(tmp_path: Path, member: str, needle: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("images/a.png", b"x")
        zf.writestr(zipfile.ZipInfo(member), b"evil")
    with pytest.raises(DataSetError) as exc, uio.open_dataset(buf.getvalue(), name="evil.zip"):
        pass
    check_message(exc, "evil.zip", needle)
    assert not (tmp_path.parent / "x.png").exists()


def test_zip_symlink(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("images/link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    (tmp_path / "link.zip").write_bytes(buf.getvalue())
    with pytest.raises(DataSetError) as exc, uio.open_dataset(tmp_path / "link.zip"):
        pass
    check_message(exc, "link.zip", "symlink")


def test_zip_bomb(tmp_path: Path) -> None:
    data = zip_bytes({"images/zeros.png": bytes(50_000_000)})
    assert len(data) < 200_000
    (tmp_path / "bomb.zip").write_bytes(data)
    with pytest.raises(DataSetError) as exc, uio.open_dataset(tmp_path / "bomb.zip"):
        pass
    check_message(exc, "bomb.zip", "compression ratio", "zip bomb")

    # declared total size over the limit
    small = zip_bytes(dataset_members(["a.png", "b.png"]))
    with pytest.raises(DataSetError) as exc:
        open_and_close(small, name="big.zip", max_unpacked_bytes=200)
    check_message(exc, "big.zip", "more than 200 bytes")
    # too many members
    with pytest.raises(DataSetError) as exc:
        open_and_close(small, name="many.zip", max_members=3)
    check_message(exc, "many.zip", "4 entries")
    # small, very compressible members (e.g. an all-black BMP mask) are fine
    ok = zip_bytes({"images/a.bmp": bytes(100_000)})
    with uio.open_dataset(ok) as folder:
        assert (folder / "images" / "a.bmp").stat().st_size == 100_000


def test_corrupt_zip(tmp_path: Path) -> None:
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 this is not really a zip" * 3)
    with pytest.raises(DataSetError) as exc, uio.open_dataset(tmp_path / "junk.zip"):
        pass
    check_message(exc, "junk.zip", "corrupt or unreadable zip")
    with pytest.raises(DataSetError) as exc:
        open_and_close(b"definitely not a zip", name="up.zip")
    check_message(exc, "up.zip", "corrupt")

    # right structure, damaged member data (CRC / deflate error on extraction)
    payload = RNG.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    data = bytearray(zip_bytes({"images/a.png": payload}))
    start = 30 + len("images/a.png")  # local header + name
    for i in range(start + 10, start + 60):
        data[i] ^= 0xFF
    with pytest.raises(DataSetError) as exc, uio.open_dataset(bytes(data), name="dmg.zip"):
        pass
    check_message(exc, "dmg.zip", "images/a.png")


# --------------------------------------------------------------------------- label masks

LABELS = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)


def palette_png(path: Path, indices: np.ndarray, colours: list[tuple[int, int, int]]) -> Path:
    im = Image.fromarray(indices.astype(np.uint8), mode="P")
    flat = [v for c in colours for v in c]
    im.putpalette(flat + [0] * (768 - len(flat)))
    im.save(path, format="PNG")
    return path


def test_read_label_mask_palette_gives_indices(tmp_path: Path) -> None:
    # colours nothing like the indices: the indices are the classes
    p = palette_png(tmp_path / "p.png", LABELS, [(255, 255, 255), (0, 0, 255), (0, 255, 0)])
    assert Image.open(p).mode == "P"
    out = uio.read_label_mask(p, 3)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, LABELS)
    np.testing.assert_array_equal(uio.read_label_mask(p.read_bytes(), 3), LABELS)
    np.testing.assert_array_equal(uio.read_label_mask(NamedBytesIO(p.read_bytes(), "u.png"), 3),
                                  LABELS)


@pytest.mark.parametrize("kind", ["gray8", "gray16", "rgb_equal", "rgba_equal", "bool",
                                  "float_tiff", "gray_alpha"])
def test_read_label_mask_value_rules(tmp_path: Path, kind: str) -> None:
    path = tmp_path / ("m.tif" if kind == "float_tiff" else "m.png")
    if kind == "gray8":
        save_pil(path, LABELS)
    elif kind == "gray16":
        save_pil(path, LABELS.astype(np.uint16) * 1)
    elif kind == "rgb_equal":
        save_pil(path, np.repeat(LABELS[..., None], 3, axis=2))
    elif kind == "rgba_equal":
        rgba = np.concatenate([np.repeat(LABELS[..., None], 3, 2), np.full((2, 3, 1), 9,
                                                                           np.uint8)], 2)
        save_pil(path, rgba)
    elif kind == "bool":
        Image.fromarray(LABELS == 1).save(path)
    elif kind == "float_tiff":
        tifffile.imwrite(path, LABELS.astype(np.float32))
    else:
        save_pil(path, np.stack([LABELS, np.full_like(LABELS, 200)], axis=2))
    expected = (LABELS == 1).astype(np.uint8) if kind == "bool" else LABELS
    out = uio.read_label_mask(path, 3)
    assert out.dtype == np.uint8 and out.shape == (2, 3)
    np.testing.assert_array_equal(out, expected)


def test_read_label_mask_errors(tmp_path: Path) -> None:
    save_pil(tmp_path / "x.png", np.array([[0, 4], [7, 2]], np.uint8))
    with pytest.raises(MaskError) as exc:
        uio.read_label_mask(tmp_path / "x.png", 3, name="masks/x.png")
    assert str(exc.value) == (
        "masks/x.png: label mask holds classes {4, 7} but the model has 3 classes (0..2); "
        "accepted: pixel values = class indices, or a palette PNG")

    save_pil(tmp_path / "b.png", np.array([[0, 255]], np.uint8))
    with pytest.raises(MaskError) as exc:
        uio.read_label_mask(tmp_path / "b.png", 3)
    check_message(exc, "b.png", "classes {255}", "looks like a binary mask")

    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    save_pil(tmp_path / "c.png", rgb)
    with pytest.raises(MaskError) as exc:
        uio.read_label_mask(tmp_path / "c.png", 3)
    check_message(exc, "c.png", "colour image", "palette PNG")

    tifffile.imwrite(tmp_path / "f.tif", np.array([[0.0, 1.5]], np.float32))
    with pytest.raises(MaskError) as exc:
        uio.read_label_mask(tmp_path / "f.tif", 3)
    check_message(exc, "f.tif", "non-integer values (e.g. 1.5)")

    tifffile.imwrite(tmp_path / "n.tif", np.array([[0, -1]], np.int16))
    with pytest.raises(MaskError) as exc:
        uio.read_label_mask(tmp_path / "n.tif", 3)
    check_message(exc, "n.tif", "negative")

    (tmp_path / "bad.png").write_text("nope")
    with pytest.raises(MaskError) as exc:
        uio.read_label_mask(tmp_path / "bad.png", 3, name="masks/bad.png")
    check_message(exc, "masks/bad.png", "not a readable image")

    palette_png(tmp_path / "p.png", np.array([[0, 5]]), [(0, 0, 0)] * 6)
    with pytest.raises(MaskError) as exc:
        uio.read_label_mask(tmp_path / "p.png", 2)
    check_message(exc, "classes {5}", "2 classes (0..1)")
    with pytest.raises(UnetCoreError, match="n_classes must be"):
        uio.read_label_mask(tmp_path / "p.png", 0)


def test_read_label_mask_pixel_limit(tmp_path: Path) -> None:
    palette_png(tmp_path / "p.png", np.zeros((20, 20)), [(0, 0, 0)])
    with pytest.raises(MaskError) as exc:
        uio.read_label_mask(tmp_path / "p.png", 2, max_pixels=100)
    check_message(exc, "p.png", "over the limit of 100 pixels")


def test_write_label_png_round_trip(tmp_path: Path) -> None:
    uio.write_label_png(tmp_path / "l.png", LABELS)
    im = Image.open(tmp_path / "l.png")
    assert im.mode == "P"
    np.testing.assert_array_equal(np.array(im), LABELS)
    np.testing.assert_array_equal(np.array(im.convert("RGB"))[0],
                                  [(0, 0, 0), (230, 25, 75), (60, 180, 75)])
    np.testing.assert_array_equal(uio.read_label_mask(tmp_path / "l.png", 3), LABELS)
    pal = uio.label_palette(40)
    assert pal.shape == (40, 3) and pal.dtype == np.uint8
    assert len({tuple(c) for c in pal}) == 40  # distinct colours
    assert uio.label_colour_name(1) == "red" and uio.label_colour_name(30).startswith("#")
    with pytest.raises(MaskError, match="0..255"):
        uio.write_label_png(tmp_path / "x.png", np.array([[0, 300]]))
    with pytest.raises(MaskError, match="HxW"):
        uio.write_label_png(tmp_path / "x.png", np.zeros((2, 2, 2), np.uint8))


def test_load_pair_raw_and_labels(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    save_pil(root / "images" / "a.png", noise(5, 6, 3))
    (root / "masks").mkdir()
    palette_png(root / "masks" / "a.png", np.full((5, 6), 2), [(0, 0, 0)] * 3)
    pair = uio.find_pairs(root)[0]
    image, mask = uio.load_pair(pair, raw=True)
    assert image.shape == (5, 6, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, uio.read_raw(root / "images" / "a.png"))
    image, labels = uio.load_pair(pair, raw=True, n_classes=3)
    assert labels.dtype == np.uint8 and (labels == 2).all()
    with pytest.raises(MaskError) as exc:
        uio.load_pair(pair, n_classes=2)
    check_message(exc, "masks/a.png", "classes {2}")
    gray, _ = uio.load_pair(pair)  # default: gray float as before
    assert gray.shape == (5, 6) and gray.dtype == np.float32

    palette_png(root / "masks" / "a.png", np.zeros((5, 5)), [(0, 0, 0)])
    with pytest.raises(MaskError) as exc:
        uio.load_pair(pair, raw=True, n_classes=2)
    assert str(exc.value) == ("a.png: mask is 5x5 (HxW) but image is 5x6; masks must match "
                              "their image's size")


# --------------------------------------------------------------------------- issue 16


def test_display_name_escapes_and_caps() -> None:
    assert uio.display_name("plain name é.png") == "plain name é.png"
    assert uio.display_name("a\nerror: b.png") == "a\\nerror: b.png"
    assert uio.display_name("t\tr\rz\x00e\x1b[31m") == "t\\tr\\rz\\0e\\x1b[31m"
    assert uio.display_name("bidi\u202eevil\u2028x") == "bidi\\u202eevil\\u2028x"
    assert uio.display_name("bad\udcffbyte") == "bad\\udcffbyte"  # undecodable byte of a name
    assert uio.display_name(b"bytes\n") == "bytes\\n"
    long = "x" * 300 + ".png"
    shown = uio.display_name(long)
    assert len(shown) == uio.DISPLAY_NAME_MAX and "\u2026" in shown and shown.endswith(".png")
    assert len(uio.display_name(long, 40)) == 40
    for name in ("a\nb", long, "\x1b" * 200):  # idempotent, printable, one line
        once = uio.display_name(name)
        assert uio.display_name(once) == once
        assert once.isprintable()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pil(orientation: int) -> None:
    from PIL import ImageOps

    arr = np.arange(15, dtype=np.uint8).reshape(3, 5) * 10
    exif = Image.Exif()
    exif[0x0112] = orientation
    for fmt in ("PNG", "TIFF-tifffile"):
        buf = io.BytesIO()
        if fmt == "PNG":
            Image.fromarray(arr).save(buf, "PNG", exif=exif.tobytes())
        else:
            tifffile.imwrite(buf, arr, extratags=[(274, "H", 1, orientation, True)])
        expected = np.array(ImageOps.exif_transpose(_with_exif(arr, exif)))
        np.testing.assert_array_equal(uio.read_raw(buf.getvalue()), expected)


def _with_exif(arr: np.ndarray, exif: Image.Exif) -> Image.Image:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", exif=exif.tobytes())
    return Image.open(io.BytesIO(buf.getvalue()))


def test_orientation_before_the_size_check(tmp_path: Path) -> None:
    """A portrait JPEG stored landscape pairs with its upright mask."""
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(root / "images" / "a.jpg",
                                                        exif=exif.tobytes())
    Image.fromarray(np.zeros((64, 48), np.uint8)).save(root / "masks" / "a.png")
    image, mask = uio.load_pair(uio.find_pairs(root)[0])
    assert image.shape == mask.shape == (64, 48)


def test_png_text_chunk_that_cannot_be_skipped_is_named() -> None:
    png = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(png, "PNG")
    data = png.getvalue()
    bomb = zlib.compress(bytes(4 << 20))
    chunk = b"zTXt" + b"k\x00\x00" + bomb
    body = struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk))
    broken = data[:33] + body + data[33:-12]  # no IEND: the chunks cannot be walked
    with pytest.raises(ImageReadError) as exc:
        uio.read_raw(broken, name="t.png")
    message = str(exc.value)
    assert message.startswith("t.png: ") and "not a readable image" not in message
    assert "PNG metadata chunk" in message


def test_load_pair_reports_soft_masks(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, mask in (("a.png", np.array([[0, 255]], np.uint8)),
                       ("b.png", np.array([[0, 100, 200]], np.uint8)),
                       ("c.png", np.array([[0, 255]], np.uint16))):
        Image.fromarray(np.zeros(mask.shape, np.uint8)).save(root / "images" / name)
        Image.fromarray(mask).save(root / "masks" / name)
    soft: list[str] = []
    masks = [uio.load_pair(p, soft_masks=soft)[1] for p in uio.find_pairs(root)]
    assert soft == ["b.png"]
    np.testing.assert_array_equal(masks[2], [[False, True]])  # 16-bit 0/255: not empty


def test_zip_duplicate_members_are_named(tmp_path: Path) -> None:
    buf = io.BytesIO()
    png = io.BytesIO()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(png, "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("images/a.png", png.getvalue())
            zf.writestr("images/a.png", b"other")
    with pytest.raises(DataSetError) as exc, uio.open_dataset(buf.getvalue(), name="d.zip"):
        pass
    check_message(exc, "d.zip", "more than once")
    assert "size" not in str(exc.value)


def test_zip_of_10000_members_opens_in_seconds(tmp_path: Path) -> None:
    import time

    png = io.BytesIO()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(png, "PNG")
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(5000):
            zf.writestr(f"d/images/{i}.png", png.getvalue())
            zf.writestr(f"d/masks/{i}.png", png.getvalue())
    start = time.perf_counter()
    with uio.open_dataset(path) as folder:
        assert len(uio.find_pairs(folder)) == 5000
    assert time.perf_counter() - start < 30  # was 136 s in the report; ~3 s here
