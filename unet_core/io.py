"""Reading and writing images, masks and data sets of image/mask pairs.

Everything a user can get wrong (a file that is not an image, a truncated file, an
image over the pixel limit, a mask of the wrong size, an unsafe zip archive...) raises
one of :class:`~unet_core.errors.ImageReadError`, :class:`~unet_core.errors.MaskError`
or :class:`~unet_core.errors.DataSetError` with a one-line message that names the file,
says what was wrong and what is accepted. No exception of PIL, tifffile or zipfile
escapes from the reading functions.

Value conventions
-----------------
* :func:`read_raw` returns the decoded pixels unchanged (native dtype and range).
* :func:`read_image` returns float32 HxW in [0, 1] (grayscale, see :func:`normalise`).
* :func:`read_mask` returns bool HxW (foreground True, see :func:`binarise_mask`).
* :func:`read_label_mask` returns uint8 HxW class indices (a label mask: pixel values are class
  indices, or the indices of a palette PNG); :func:`write_label_png` writes one as a palette PNG
  coloured by :func:`label_palette`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import stat
import tempfile
import unicodedata
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeAlias

import numpy as np
import tifffile
from PIL import Image, PngImagePlugin

from unet_core.errors import DataSetError, ImageReadError, MaskError, UnetCoreError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "LABEL_COLOURS",
    "MAX_LABEL_CLASSES",
    "Pair",
    "Source",
    "apply_orientation",
    "binarise_mask",
    "check_labels",
    "display_name",
    "find_images",
    "find_pairs",
    "get_max_pixels",
    "label_colour_name",
    "label_palette",
    "load_pair",
    "mask_is_binary",
    "normalise",
    "open_dataset",
    "read_image",
    "read_label_mask",
    "read_mask",
    "read_raw",
    "to_grayscale",
    "write_image_png",
    "write_label_png",
    "write_mask_png",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DEFAULT_MAX_PIXELS: int = 40_000_000
MAX_PIXELS_ENV: str = "UNET_MAX_PIXELS"

Source: TypeAlias = str | os.PathLike | bytes | BinaryIO

_ACCEPTED = "accepted: PNG, JPEG, TIFF, BMP"
_ACCEPTED_EXT = "accepted: " + ", ".join(IMAGE_EXTENSIONS)
_LAYOUT = "expected ROOT/images/NAME + ROOT/masks/NAME, masks matched by file name"
# PIL format names we decode (MPO is how PIL names some camera JPEGs, DIB a BMP variant;
# TIFF only as a fallback when tifffile lacks the codec, e.g. LZW without imagecodecs).
_PIL_FORMATS = frozenset({"PNG", "JPEG", "MPO", "BMP", "DIB"})
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_MIN_RATIO_CHECK_BYTES = 1 << 20  # members smaller than this skip the ratio check
_COPY_CHUNK = 1 << 20


# --------------------------------------------------------------------------- limits


def get_max_pixels() -> int:
    """Return the pixel limit: ``$UNET_MAX_PIXELS`` if it is an int > 0, else the default.

    Returns
    -------
    int
        Maximum number of pixels (H*W) an image may declare before it is decoded.
    """
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if value:
        try:
            parsed = int(value)
        except ValueError:
            return DEFAULT_MAX_PIXELS
        if parsed > 0:
            return parsed
    return DEFAULT_MAX_PIXELS


def _resolve_max_pixels(max_pixels: int | None) -> int:
    if max_pixels is None:
        return get_max_pixels()
    if int(max_pixels) <= 0:
        raise UnetCoreError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    return int(max_pixels)


def _check_pixels(name: str, height: int, width: int, max_pixels: int) -> None:
    pixels = int(height) * int(width)
    if pixels > max_pixels:
        raise ImageReadError(
            f"{name}: image is {height}x{width} (HxW) = {pixels:,} pixels, over the limit of "
            f"{max_pixels:,} pixels (accepted: up to {max_pixels:,}; "
            f"set {MAX_PIXELS_ENV} to raise it)"
        )
    if height < 1 or width < 1:
        raise ImageReadError(f"{name}: image has no pixels ({height}x{width})")


def _short(exc: BaseException) -> str:
    """One-line, bounded description of an exception for use inside a message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


# --------------------------------------------------------------------------- names

DISPLAY_NAME_MAX: int = 120
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x00": "\\0"}


def _escape_char(ch: str) -> str:
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _needs_escape(ch: str) -> bool:
    category = unicodedata.category(ch)
    # Cc: C0/C1 controls (newline, ESC...); Cs: lone surrogates (undecodable bytes of a file
    # name); Cf: format characters (bidi overrides, zero-width joiners) that can disguise text;
    # Zl/Zp: line and paragraph separators.
    return category in {"Cc", "Cs", "Cf", "Zl", "Zp"}


def display_name(name: str, max_len: int = DISPLAY_NAME_MAX) -> str:
    """Return a user-supplied name (file or zip member name) safe to print on one line.

    Control characters (newline, carriage return, tab, NUL, ESC...), format characters (bidi
    overrides, zero-width characters), line separators and lone surrogates are written as
    backslash escapes (``\\n``, ``\\r``, ``\\t``, ``\\0``, ``\\x1b``, ``\\u202e``),
    so a name can never start a new line or forge an ``error:`` line in a message. A
    backslash itself is kept as is. The result is capped at *max_len* characters (default
    120): a longer name keeps its start and its end (where the extension is) around
    an ellipsis ``…``.

    Parameters
    ----------
    name : str
        The name as given (``bytes`` are decoded with replacement; other objects via ``str``).
    max_len : int, optional
        Maximum length of the result, at least 8.

    Returns
    -------
    str
        A printable one-line version of *name*.
    """
    if isinstance(name, bytes | bytearray):
        name = bytes(name).decode("utf-8", "replace")
    elif not isinstance(name, str):
        name = str(name)
    if any(_needs_escape(ch) for ch in name):
        name = "".join(_escape_char(ch) if _needs_escape(ch) else ch for ch in name)
    max_len = max(8, int(max_len))
    if len(name) > max_len:
        tail = max(3, (max_len - 1) // 3)
        head = max_len - 1 - tail
        name = name[:head] + "\u2026" + name[-tail:]
    return name


def _q(name: str) -> str:
    """A user-supplied name quoted for a message: ``'name'`` through :func:`display_name`."""
    return f"'{display_name(name)}'"


def _path_label(path: str | os.PathLike) -> str:
    """A user-supplied folder or file path for a message (escaped, longer cap than names)."""
    return display_name(os.fspath(path), 2 * DISPLAY_NAME_MAX)


# --------------------------------------------------------------------------- sources


def _source_name(source: Source, name: str | None) -> str:
    """The name messages use for *source*, already passed through :func:`display_name`."""
    if name:
        return display_name(name)
    if isinstance(source, str | os.PathLike):
        return display_name(Path(os.fspath(source)).name or os.fspath(source))
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>"
    stream_name = getattr(source, "name", None)
    if isinstance(stream_name, str) and stream_name:
        return display_name(Path(stream_name).name or stream_name)
    return "<stream>"


@contextlib.contextmanager
def _open_binary(source: Source, name: str, error: type[UnetCoreError]) -> Iterator[BinaryIO]:
    """Yield a seekable binary file object positioned at 0 for any supported source."""
    if isinstance(source, str | os.PathLike):
        path = Path(os.fspath(source))
        if not path.exists():
            raise error(f"{name}: file not found ({display_name(str(path))})")
        if path.is_dir():
            raise error(f"{name}: is a folder, not an image file ({_ACCEPTED})")
        try:
            fh = path.open("rb")
        except OSError as exc:
            raise error(f"{name}: cannot open file ({_short(exc)})") from None
        with fh:
            yield fh
        return
    if isinstance(source, bytes | bytearray | memoryview):
        yield io.BytesIO(bytes(source))
        return
    if not hasattr(source, "read"):
        raise error(
            f"{name}: unsupported source of type {type(source).__name__} "
            "(accepted: a path, bytes or a binary file object)"
        )
    stream: BinaryIO
    try:
        seekable = bool(getattr(source, "seekable", lambda: False)())
        if seekable:
            source.seek(0)
            stream = source
        else:
            data = source.read()
            if not isinstance(data, bytes | bytearray):
                raise error(f"{name}: file object is not opened in binary mode")
            stream = io.BytesIO(bytes(data))
    except (OSError, ValueError) as exc:
        if isinstance(exc, UnetCoreError):
            raise
        raise error(f"{name}: cannot read file object ({_short(exc)})") from None
    yield stream


def _stream_size(fh: BinaryIO) -> int:
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(0)
    return size


# --------------------------------------------------------------------------- decoding


def read_raw(
    source: Source, *, name: str | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Decode an image file without changing its values.

    Parameters
    ----------
    source
        A path, the raw file bytes or a binary file-like object (e.g. a Streamlit
        ``UploadedFile``; it is rewound to 0 first and not closed).
    name
        Name used in error messages; defaults to the path's / object's file name.
    max_pixels
        Pixel limit checked on the declared size before decoding; default
        :func:`get_max_pixels`.

    Returns
    -------
    np.ndarray
        HxW, or HxWxC with C = 2 (gray + alpha), 3 (RGB) or 4 (RGBA), in the native dtype
        (bool, uint8, uint16, int32, float32, float64...). Palette images are expanded to
        RGB/RGBA; a multi-page TIFF gives its first page. TIFFs are decoded with tifffile
        (PIL as a fallback for codecs tifffile lacks), PNG/JPEG/BMP with PIL. 16-bit RGB
        PNGs are reduced to 8 bits by PIL.

    Raises
    ------
    ImageReadError
        Not a readable image, empty, truncated, over the pixel limit, > 4 channels...
    """
    label = _source_name(source, name)
    limit = _resolve_max_pixels(max_pixels)
    with _open_binary(source, label, ImageReadError) as fh:
        try:
            size = _stream_size(fh)
            head = fh.read(4)
            fh.seek(0)
        except (OSError, ValueError) as exc:
            raise ImageReadError(f"{label}: cannot read file ({_short(exc)})") from None
        if size == 0:
            raise ImageReadError(f"{label}: empty file (0 bytes), not an image ({_ACCEPTED})")
        if head in _TIFF_MAGIC:
            return _read_tiff(fh, size, label, limit)
        return _read_pil(fh, label, limit, _PIL_FORMATS)


def _read_pil(fh: BinaryIO, name: str, max_pixels: int, formats: frozenset[str]) -> np.ndarray:
    try:
        return _read_pil_once(fh, name, max_pixels, formats)
    except _PngTextTooLarge:
        pass
    # A valid PNG whose colour profile or text chunk decompresses past PIL's text limit
    # (PngImagePlugin.MAX_TEXT_CHUNK, 1 MB): read the pixels without those chunks.
    stripped = _strip_png_metadata(fh)
    if stripped is None:
        raise ImageReadError(
            f"{name}: PNG metadata chunk (colour profile or text) decompresses past PIL's "
            f"limit of {PngImagePlugin.MAX_TEXT_CHUNK / 1e6:.0f} MB and the file's chunks "
            f"could not be skipped ({_ACCEPTED})"
        )
    copy, largest = stripped
    try:
        return _read_pil_once(copy, name, max_pixels, formats)
    except _PngTextTooLarge:
        raise ImageReadError(
            f"{name}: PNG text chunk of {largest / 1e6:.1f} MB over the limit of "
            f"{PngImagePlugin.MAX_TEXT_CHUNK / 1e6:.0f} MB ({_ACCEPTED})"
        ) from None


def _read_pil_once(
    fh: BinaryIO, name: str, max_pixels: int, formats: frozenset[str]
) -> np.ndarray:
    # PIL refuses (DecompressionBombError) images over 2*MAX_IMAGE_PIXELS and warns over
    # MAX_IMAGE_PIXELS. We check the size ourselves, so make sure PIL's own limit is never
    # below ours (only ever raised, never lowered) and silence its warning.
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fh)
    except Image.DecompressionBombError as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        declared = f"declares {int(m.group(1)):,} pixels, " if m else ""
        raise ImageReadError(
            f"{name}: image {declared}over the limit of {max_pixels:,} pixels "
            f"(accepted: up to {max_pixels:,}; set {MAX_PIXELS_ENV} to raise it)"
        ) from None
    except Exception as exc:
        if _is_text_limit(exc):
            raise _PngTextTooLarge() from None
        raise ImageReadError(f"{name}: not a readable image ({_ACCEPTED})") from None
    with im:
        fmt = im.format or "unknown"
        if fmt not in formats:
            raise ImageReadError(f"{name}: {fmt} images are not supported ({_ACCEPTED})")
        width, height = im.size
        _check_pixels(name, height, width, max_pixels)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
                arr = _pil_to_array(im)
                orientation = _orientation_of(im)
        except UnetCoreError:
            raise
        except Exception as exc:
            if _is_text_limit(exc):
                raise _PngTextTooLarge() from None
            raise ImageReadError(
                f"{name}: corrupt or truncated {fmt} file ({_short(exc)}) ({_ACCEPTED})"
            ) from None
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return apply_orientation(arr, orientation)


_EXIF_ORIENTATION = 0x0112


def _orientation_of(im: Image.Image) -> int:
    """The EXIF orientation tag (1..8) of an opened PIL image; 1 when absent or unreadable."""
    try:
        value = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # malformed EXIF: read the pixels as stored
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels (HxW or HxWxC) the way an EXIF/TIFF orientation tag says.

    The same transposition as PIL's ``ImageOps.exif_transpose``: 1 as stored, 2 mirrored
    left-right, 3 rotated 180, 4 mirrored top-bottom, 5 transposed, 6 rotated 90 clockwise,
    7 transversed, 8 rotated 90 counter-clockwise. Images and masks are read through it
    alike, so a portrait camera JPEG and its mask keep matching.
    """
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.swapaxes(0, 1)
    elif orientation == 6:
        arr = arr.swapaxes(0, 1)[:, ::-1]
    elif orientation == 7:
        arr = arr.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:
        arr = arr.swapaxes(0, 1)[::-1]
    else:
        return arr
    return np.ascontiguousarray(arr)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# metadata chunks PIL decompresses and may refuse (MAX_TEXT_CHUNK); never needed for pixels
_PNG_SKIPPABLE = frozenset({b"iCCP", b"zTXt", b"iTXt", b"tEXt"})


class _PngTextTooLarge(Exception):
    """PIL refused a PNG metadata chunk over its text limits."""


def _is_text_limit(exc: BaseException) -> bool:
    text = str(exc)
    return "MAX_TEXT_CHUNK" in text or "MAX_TEXT_MEMORY" in text or "Too much memory" in text


def _strip_png_metadata(fh: BinaryIO) -> tuple[io.BytesIO, int] | None:
    """Copy a PNG without its iCCP/zTXt/iTXt/tEXt chunks; (copy, largest dropped size).

    None if the file is not a well-formed chunk sequence (then it stays unreadable).
    """
    fh.seek(0)
    if fh.read(8) != _PNG_SIGNATURE:
        return None
    out = io.BytesIO()
    out.write(_PNG_SIGNATURE)
    largest = 0
    while True:
        header = fh.read(8)
        if len(header) < 8:
            return None
        length = int.from_bytes(header[:4], "big")
        kind = header[4:]
        if kind in _PNG_SKIPPABLE:
            largest = max(largest, length)
            fh.seek(length + 4, os.SEEK_CUR)
            continue
        data = fh.read(length + 4)
        if len(data) < length + 4:
            return None
        out.write(header)
        out.write(data)
        if kind == b"IEND":
            break
    out.seek(0)
    return out, largest


def _pil_to_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("1", "L", "LA", "RGB", "RGBA", "I", "F"):
        return np.array(im)
    if mode.startswith("I;16"):
        return np.array(im).astype(np.uint16)
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        return np.array(im.convert("RGBA" if has_alpha else "RGB"))
    if mode in ("RGBa", "RGBX"):
        return np.array(im.convert("RGBA" if mode == "RGBa" else "RGB"))
    if mode == "La":
        return np.array(im.convert("LA"))
    if mode == "I;16S" or mode.startswith("I;32"):
        return np.array(im.convert("I"))
    return np.array(im.convert("RGB"))  # CMYK, YCbCr, LAB, HSV...


# TIFF compressions tifffile decodes itself. Deflate is checked first with a bounded
# inflate (tifffile inflates a strip in one go, whatever its size); anything else
# (PackBits, LZMA, LZW, JPEG...) goes to PIL/libtiff, which decodes into the image
# buffer and so cannot be made to allocate more than the image needs.
_TIFF_NONE = 1
_TIFF_DEFLATE = frozenset({8, 32946})


@contextlib.contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """Drop tifffile's log records (it logs parse warnings to stderr) while reading."""
    logger = logging.getLogger("tifffile")
    logger.addFilter(_drop_record)
    try:
        yield
    finally:
        logger.removeFilter(_drop_record)


def _drop_record(record: logging.LogRecord) -> bool:
    return False


def _check_tiff_chunks(fh: BinaryIO, page: tifffile.TiffPage, name: str, max_pixels: int) -> None:
    """Refuse tiles over the pixel limit and deflate chunks that inflate past their size."""
    if page.is_tiled:
        tile_pixels = int(page.tilelength) * int(page.tilewidth) * max(1, int(page.tiledepth))
        if tile_pixels > max_pixels:
            raise ImageReadError(
                f"{name}: TIFF tile of {page.tilelength}x{page.tilewidth} pixels is over the "
                f"limit of {max_pixels:,} pixels (accepted: tiles up to {max_pixels:,} pixels; "
                f"set {MAX_PIXELS_ENV} to raise it)"
            )
    if int(page.compression) not in _TIFF_DEFLATE:
        return
    itemsize = max(1, np.dtype(page.dtype).itemsize) if page.dtype is not None else 8
    expected = int(np.prod(page.chunks, dtype=np.int64)) * itemsize
    for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
        if not count:
            continue
        fh.seek(int(offset))
        data = fh.read(int(count))
        try:
            inflated = zlib.decompressobj().decompress(data, expected + 1)
        except zlib.error as exc:
            raise ImageReadError(
                f"{name}: corrupt deflate data in TIFF ({_short(exc)}) ({_ACCEPTED})"
            ) from None
        if len(inflated) > expected:
            raise ImageReadError(
                f"{name}: TIFF strip/tile decompresses to more than the {expected:,} bytes "
                "its size allows (decompression bomb; accepted: well-formed TIFF files)"
            )


def _read_tiff(fh: BinaryIO, size: int, name: str, max_pixels: int) -> np.ndarray:
    codec_error: BaseException | None = None
    try:
        with _quiet_tifffile(), tifffile.TiffFile(fh) as tif:
            try:
                page = tif.pages[0]  # not len(tif.pages): that walks the whole IFD chain
            except IndexError:
                raise ImageReadError(f"{name}: TIFF file contains no image ({_ACCEPTED})") from None
            if not isinstance(page, tifffile.TiffPage):
                page = page.aspage()
            height, width = int(page.imagelength), int(page.imagewidth)
            _check_pixels(name, height, width, max_pixels)
            samples = int(page.samplesperpixel)
            if samples > 4:
                raise ImageReadError(
                    f"{name}: TIFF has {samples} channels "
                    "(accepted: 1 gray, 2 gray+alpha, 3 RGB or 4 RGBA)"
                )
            if int(page.imagedepth) > 1:
                raise ImageReadError(
                    f"{name}: volumetric TIFF (depth {page.imagedepth}) is not supported "
                    "(accepted: 2-D images; multi-page TIFFs give their first page)"
                )
            for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
                if count and int(offset) + int(count) > size:
                    raise ImageReadError(
                        f"{name}: truncated TIFF file (image data ends at byte "
                        f"{int(offset) + int(count):,} but the file has {size:,} bytes)"
                    )
            _check_tiff_chunks(fh, page, name, max_pixels)
            compression = int(page.compression)
            if compression != _TIFF_NONE and compression not in _TIFF_DEFLATE:
                codec_error = ValueError(f"compression {page.compression.name} goes to PIL")
            else:
                try:
                    arr = page.asarray()
                except Exception as exc:
                    codec_error = exc
                else:
                    arr = _tiff_to_array(arr, page, name)
                    return apply_orientation(arr, _tiff_orientation(page))
    except UnetCoreError:
        raise
    except Exception as exc:
        raise ImageReadError(
            f"{name}: corrupt or unreadable TIFF file ({_short(exc)}) ({_ACCEPTED})"
        ) from None
    # tifffile could parse the file but not decode it (typically LZW/JPEG compression
    # without the optional imagecodecs package), or it is not one tifffile may decode:
    # let PIL/libtiff try.
    try:
        fh.seek(0)
        return _read_pil(fh, name, max_pixels, frozenset({"TIFF"}))
    except ImageReadError:
        reason = _short(codec_error) if codec_error else "no decoder"
        raise ImageReadError(
            f"{name}: cannot decode this TIFF ({reason}) "
            "(accepted: TIFF, uncompressed or deflate/LZW compressed, 8/16-bit or float)"
        ) from None


def _tiff_orientation(page: tifffile.TiffPage) -> int:
    try:
        tag = page.tags.get(274)
        value = int(tag.value) if tag is not None else 1
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def _tiff_to_array(arr: np.ndarray, page: tifffile.TiffPage, name: str) -> np.ndarray:
    axes = page.axes
    if len(axes) != arr.ndim:
        arr = arr.squeeze()
        axes = "".join(a for a, n in zip(page.axes, page.shape, strict=False) if n != 1)
        if len(axes) != arr.ndim:
            raise ImageReadError(f"{name}: unsupported TIFF layout {page.shape} ({page.axes})")
    if "S" in axes:
        arr = np.moveaxis(arr, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    for i in reversed(range(len(axes))):
        if axes[i] not in "YXS":
            if arr.shape[i] != 1:
                raise ImageReadError(
                    f"{name}: unsupported TIFF layout {page.shape} ({page.axes}); "
                    "accepted: 2-D gray, RGB or RGBA images"
                )
            arr = np.take(arr, 0, axis=i)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.dtype.kind == "c":
        raise ImageReadError(f"{name}: complex-valued TIFF is not supported ({_ACCEPTED})")
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    photometric = int(page.photometric)
    if photometric == int(tifffile.PHOTOMETRIC.PALETTE) and page.colormap is not None:
        cmap = np.asarray(page.colormap)
        cmap = cmap.astype(np.uint8) if cmap.max() <= 255 else cmap.astype(np.uint16)
        index = np.clip(arr.astype(np.intp), 0, cmap.shape[1] - 1)
        arr = np.moveaxis(cmap[:, index], 0, -1)
    elif photometric == int(tifffile.PHOTOMETRIC.MINISWHITE) and arr.ndim == 2:
        if arr.dtype == np.bool_:
            arr = ~arr
        elif arr.dtype.kind == "u" and int(page.bitspersample) == arr.dtype.itemsize * 8:
            arr = np.iinfo(arr.dtype).max - arr
    return np.ascontiguousarray(arr)


# --------------------------------------------------------------------------- values


def to_grayscale(raw: np.ndarray) -> np.ndarray:
    """Convert a decoded image to one channel, keeping its native value range.

    Parameters
    ----------
    raw
        HxW or HxWxC array (any real dtype, e.g. from :func:`read_raw`).

    Returns
    -------
    np.ndarray
        float64 HxW. RGB(A) uses ITU-R BT.601 luma 0.299 R + 0.587 G + 0.114 B (alpha
        ignored; pixels with R == G == B keep their exact value); 1- or 2-channel (gray +
        alpha) images use channel 0; bool becomes 0.0/1.0.

    Raises
    ------
    ImageReadError
        If the array is not 2-D or 3-D with 1 to 4 channels.
    """
    arr = np.asarray(raw)
    if arr.ndim == 2:
        return arr.astype(np.float64)
    if arr.ndim != 3 or not 1 <= arr.shape[2] <= 4:
        raise ImageReadError(
            f"image array has shape {arr.shape} (accepted: HxW or HxWxC with C = 1, 2, 3 or 4)"
        )
    if arr.shape[2] <= 2:
        return arr[:, :, 0].astype(np.float64)
    r = arr[:, :, 0].astype(np.float64)
    g = arr[:, :, 1].astype(np.float64)
    b = arr[:, :, 2].astype(np.float64)
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    return np.where((r == g) & (g == b), r, luma)


def normalise(gray: np.ndarray, dtype_hint: np.dtype, *, name: str | None = None) -> np.ndarray:
    """Scale a grayscale image to float32 [0, 1] by the rule for its original dtype.

    Parameters
    ----------
    gray
        HxW array in the native value range (e.g. float64 from :func:`to_grayscale`).
    dtype_hint
        dtype of the decoded file (``read_raw(...).dtype``), which selects the rule:

        * bool -> 0/1; uint8 -> /255; uint16 -> /65535;
        * other integers (e.g. PIL's int32) -> /65535 if all values lie in [0, 65535],
          else min-max scaled;
        * float -> unchanged if all values lie in [0, 1], else min-max scaled
          (a constant image outside [0, 1] gives zeros).
    name
        File name used in error messages.

    Returns
    -------
    np.ndarray
        float32 HxW in [0, 1].

    Raises
    ------
    ImageReadError
        If any value is NaN or infinite.
    """
    dtype = np.dtype(dtype_hint)
    values = np.asarray(gray, dtype=np.float64)
    if values.size and not np.isfinite(values).all():
        prefix = f"{name}: " if name else ""
        raise ImageReadError(
            f"{prefix}image contains NaN or infinite values (accepted: finite numbers only)"
        )
    if dtype == np.bool_:
        out = values
    elif dtype == np.uint8:
        out = values / 255.0
    elif dtype == np.uint16:
        out = values / 65535.0
    elif dtype.kind in "iu":
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        out = values / 65535.0 if lo >= 0 and hi <= 65535 else _min_max(values, lo, hi)
    else:
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        out = values if lo >= 0 and hi <= 1 else _min_max(values, lo, hi)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _min_max(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


def read_image(
    source: Source, *, name: str | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Read any supported image as a normalised grayscale array.

    ``read_raw -> to_grayscale -> normalise``; see those for the rules.

    Returns
    -------
    np.ndarray
        float32 HxW in [0, 1].

    Raises
    ------
    ImageReadError
        Unreadable file, over the pixel limit, NaN/inf values...
    """
    label = _source_name(source, name)
    raw = read_raw(source, name=label, max_pixels=max_pixels)
    return normalise(to_grayscale(raw), raw.dtype, name=label)


# --------------------------------------------------------------------------- masks


def binarise_mask(raw: np.ndarray, *, name: str | None = None) -> np.ndarray:
    """Turn a decoded mask into foreground/background.

    Rule, in order: colour masks go to grayscale first (:func:`to_grayscale`); bool stays
    as is; if the mask holds exactly two values, 0 and some v > 0 (0/1, 0/255 in an 8-bit
    or a 16-bit file, 0/65535, 0/0.5...), foreground is where it equals v, whatever the
    bit depth; otherwise foreground is a :func:`normalise`-d value >= 0.5 (8-bit: >= 128;
    16-bit: >= 32768; float in [0, 1]: >= 0.5; other floats after min-max scaling). A mask
    of a single value is all background if that value is 0 and otherwise follows the
    threshold. :func:`mask_is_binary` says whether the threshold (a soft or many-valued
    mask) was needed, so callers can warn.

    Parameters
    ----------
    raw
        HxW or HxWxC mask in its native dtype (e.g. from :func:`read_raw`).
    name
        File name used in error messages.

    Returns
    -------
    np.ndarray
        bool HxW, True = foreground.

    Raises
    ------
    MaskError
        Unsupported shape or NaN/inf values.
    """
    arr = np.asarray(raw)
    prefix = f"{name}: " if name else ""
    if arr.dtype == np.bool_ and arr.ndim == 2:
        return arr.copy()
    try:
        gray = to_grayscale(arr)
        if gray.size and not np.isfinite(gray).all():
            raise ImageReadError("mask contains NaN or infinite values (accepted: finite only)")
    except ImageReadError as exc:
        raise MaskError(f"{prefix}{exc}") from None
    if arr.dtype == np.bool_:
        return gray == 1.0
    level = _two_level_value(gray)
    if level is not None:
        return gray == level
    return normalise(gray, arr.dtype) >= 0.5


def _two_level_value(gray: np.ndarray) -> float | None:
    """v if *gray* holds exactly the two values 0 and v > 0, else None."""
    nonzero = gray[gray != 0]
    if nonzero.size == 0 or nonzero.size == gray.size:
        return None
    level = nonzero.flat[0]
    if level <= 0 or not (nonzero == level).all():
        return None
    return float(level)


def mask_is_binary(raw: np.ndarray) -> bool:
    """Whether a decoded mask holds only two clean levels.

    Parameters
    ----------
    raw
        HxW or HxWxC mask in its native dtype.

    Returns
    -------
    bool
        True if the (grayscale) values are only 0 and one other positive value v (0/1,
        0/255, 0/65535, a 16-bit 0/255...: :func:`binarise_mask` takes v as foreground), or
        a single value 0, 1 or the dtype's full scale; bool masks are always binary. False
        for soft / anti-aliased / many-valued masks, so callers can warn that
        :func:`binarise_mask` had to threshold.
    """
    arr = np.asarray(raw)
    if arr.dtype == np.bool_:
        return True
    try:
        gray = to_grayscale(arr)
    except ImageReadError:
        return False
    if _two_level_value(gray) is not None:
        return True
    zero = gray == 0
    if (zero | (gray == 1)).all():
        return True
    full = 255.0 if arr.dtype == np.uint8 else 65535.0 if arr.dtype.kind in "iu" else 1.0
    return bool((zero | (gray == full)).all())


def read_mask(
    source: Source, *, name: str | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Read a mask file and binarise it with :func:`binarise_mask`.

    Returns
    -------
    np.ndarray
        bool HxW, True = foreground.

    Raises
    ------
    MaskError
        Any problem reading the file (same messages as :func:`read_raw`).
    """
    label = _source_name(source, name)
    try:
        raw = read_raw(source, name=label, max_pixels=max_pixels)
    except ImageReadError as exc:
        raise MaskError(str(exc)) from None
    return binarise_mask(raw, name=label)


# --------------------------------------------------------------------------- label masks

_LABEL_ACCEPTED = "accepted: pixel values = class indices, or a palette PNG"
MAX_LABEL_CLASSES = 256


def _check_n_classes(n_classes: object) -> int:
    if (isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer)
            or not 1 <= int(n_classes) <= MAX_LABEL_CLASSES):
        raise UnetCoreError(
            f"n_classes must be a whole number 1..{MAX_LABEL_CLASSES}, got {n_classes!r}")
    return int(n_classes)


def _palette_indices(fh: BinaryIO, name: str, max_pixels: int) -> np.ndarray | None:
    """The palette indices (uint8 HxW) of a palette image (PIL mode P/PA), else None.

    Anything that is not a palette image PIL can open returns None, so :func:`read_raw`
    reads (or refuses) it with its usual messages.
    """
    head = fh.read(4)
    fh.seek(0)
    if not head or head in _TIFF_MAGIC:
        return None
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fh)
    except Exception:
        fh.seek(0)
        return None
    with im:
        fmt = im.format or "unknown"
        if fmt not in _PIL_FORMATS or im.mode not in ("P", "PA"):
            fh.seek(0)
            return None
        width, height = im.size
        try:
            _check_pixels(name, height, width, max_pixels)
        except ImageReadError as exc:
            raise MaskError(str(exc)) from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
                arr = np.array(im)
                orientation = _orientation_of(im)
        except Exception as exc:
            raise MaskError(
                f"{name}: corrupt or truncated {fmt} file ({_short(exc)}) ({_ACCEPTED})"
            ) from None
    if arr.ndim == 3:  # PA: index + alpha
        arr = arr[..., 0]
    return np.ascontiguousarray(apply_orientation(arr, orientation), dtype=np.uint8)


def _label_values(raw: np.ndarray, name: str) -> np.ndarray:
    """Class indices of a decoded (non-palette) label mask: HxW non-negative integers."""
    arr = np.asarray(raw)
    if arr.ndim == 3:
        c = arr.shape[2]
        if c in (3, 4):
            rgb = arr[..., :3]
            if not ((rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])).all():
                raise MaskError(
                    f"{name}: label mask is a colour image (its R, G and B differ); "
                    f"{_LABEL_ACCEPTED} (gray values, or RGB with R = G = B)")
        arr = arr[..., 0]  # gray (+ alpha), or RGB(A) with equal channels
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise MaskError(f"{name}: label mask contains NaN or infinite values; "
                            f"{_LABEL_ACCEPTED}")
        frac = arr[arr != np.round(arr)]
        if frac.size:
            raise MaskError(
                f"{name}: label mask holds non-integer values (e.g. {float(frac[0]):.4g}); "
                f"{_LABEL_ACCEPTED}")
    if arr.dtype.kind not in "iuf":
        raise MaskError(f"{name}: label mask has dtype {arr.dtype}; {_LABEL_ACCEPTED}")
    if arr.size and float(arr.min()) < 0:
        raise MaskError(f"{name}: label mask holds negative values (min {arr.min()}); "
                        f"{_LABEL_ACCEPTED}")
    return arr


def check_labels(labels: np.ndarray, n_classes: int, name: str) -> np.ndarray:
    """``labels`` (HxW non-negative integers) as uint8 class indices, or MaskError naming the
    classes found that a model of ``n_classes`` classes does not have."""
    n = _check_n_classes(n_classes)
    arr = np.asarray(labels)
    if arr.size and float(arr.max()) >= n:
        unknown = np.unique(arr[arr >= n])
        shown = ", ".join(str(int(v)) for v in unknown[:10])
        more = f", ... ({unknown.size} in all)" if unknown.size > 10 else ""
        classes = f"{n} classes (0..{n - 1})" if n > 1 else "1 class (0)"
        hint = ""
        if np.isin(arr, (0, 255)).all():
            hint = " (values 0/255: this looks like a binary mask, not class indices)"
        raise MaskError(f"{name}: label mask holds classes {{{shown}{more}}} but the model has "
                        f"{classes}; {_LABEL_ACCEPTED}{hint}")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def read_label_mask(
    source: Source, n_classes: int, *, name: str | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Read a label mask: every pixel holds a class index 0..n_classes-1.

    Rules: a palette image (PNG saved in PIL mode "P") gives its palette *indices*, whatever
    the colours; a grayscale image gives its values, which must be whole numbers (bool -> 0/1,
    floats such as 2.0 allowed); an RGB(A) image whose R, G and B are equal is read as gray
    (alpha ignored), gray + alpha uses the gray. Values are not rescaled: a 0/255 mask holds
    classes 0 and 255.

    Parameters
    ----------
    source
        A path, bytes or binary file object (as :func:`read_raw`).
    n_classes
        The model's classes K (1..256); any value >= K is refused.
    name, max_pixels
        As :func:`read_raw`.

    Returns
    -------
    np.ndarray
        uint8 HxW class indices.

    Raises
    ------
    MaskError
        Unreadable file (same messages as :func:`read_raw`), a colour mask, non-integer or
        negative values, or classes the model does not have, e.g. "masks/x.png: label mask
        holds classes {4, 7} but the model has 3 classes (0..2); accepted: pixel values =
        class indices, or a palette PNG".
    """
    n = _check_n_classes(n_classes)
    label = _source_name(source, name)
    limit = _resolve_max_pixels(max_pixels)
    with _open_binary(source, label, MaskError) as fh:
        try:
            indices = _palette_indices(fh, label, limit)
        except (OSError, ValueError) as exc:
            if isinstance(exc, UnetCoreError):
                raise
            raise MaskError(f"{label}: cannot read file ({_short(exc)})") from None
        if indices is None:
            try:
                raw = read_raw(fh, name=label, max_pixels=limit)
            except ImageReadError as exc:
                raise MaskError(str(exc)) from None
            indices = _label_values(raw, label)
    return check_labels(indices, n, label)


#: The fixed label colours (name, RGB) of classes 0, 1, 2, ...: black for class 0, then
#: distinct colours; classes past the list get generated colours (:func:`label_palette`).
LABEL_COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("black", (0, 0, 0)), ("red", (230, 25, 75)), ("green", (60, 180, 75)),
    ("yellow", (255, 225, 25)), ("blue", (0, 130, 200)), ("orange", (245, 130, 48)),
    ("purple", (145, 30, 180)), ("cyan", (70, 240, 240)), ("magenta", (240, 50, 230)),
    ("lime", (210, 245, 60)), ("pink", (250, 190, 212)), ("teal", (0, 128, 128)),
    ("lavender", (220, 190, 255)), ("brown", (170, 110, 40)), ("beige", (255, 250, 200)),
    ("maroon", (128, 0, 0)), ("mint", (170, 255, 195)), ("olive", (128, 128, 0)),
    ("apricot", (255, 215, 180)), ("navy", (0, 0, 128)), ("grey", (128, 128, 128)),
    ("white", (255, 255, 255)),
)


def label_palette(n: int = MAX_LABEL_CLASSES) -> np.ndarray:
    """Colours of classes 0..n-1: uint8 (n, 3). The first ``len(LABEL_COLOURS)`` are
    :data:`LABEL_COLOURS`; later ones step the hue by the golden ratio (deterministic)."""
    import colorsys

    n = int(n)
    out = np.zeros((max(n, 0), 3), dtype=np.uint8)
    for i in range(n):
        if i < len(LABEL_COLOURS):
            out[i] = LABEL_COLOURS[i][1]
        else:
            h = (i * 0.618033988749895) % 1.0
            v = 0.95 if i % 2 else 0.7
            out[i] = np.round(np.array(colorsys.hsv_to_rgb(h, 0.75, v)) * 255)
    return out


def label_colour_name(index: int) -> str:
    """Name of class ``index``'s colour in :func:`label_palette` (a hex code past the list)."""
    if 0 <= index < len(LABEL_COLOURS):
        return LABEL_COLOURS[index][0]
    r, g, b = (int(v) for v in label_palette(index + 1)[index])
    return f"#{r:02x}{g:02x}{b:02x}"


# --------------------------------------------------------------------------- writing


def write_mask_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a mask as an 8-bit grayscale PNG with values 0 and 255.

    Parameters
    ----------
    path
        Destination file (written as PNG whatever its extension).
    mask
        bool HxW (integer arrays holding only 0/1 are accepted too).

    Raises
    ------
    MaskError
        If ``mask`` is not 2-D or not boolean / 0-1 valued. OSError from the file system
        propagates.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise MaskError(f"{Path(path).name}: mask to write has shape {arr.shape} (accepted: HxW)")
    if arr.dtype != np.bool_:
        if arr.dtype.kind not in "iuf" or not np.isin(arr, (0, 1)).all():
            raise MaskError(
                f"{Path(path).name}: mask to write has dtype {arr.dtype} with values other "
                "than 0/1 (accepted: bool HxW)"
            )
        arr = arr != 0
    Image.fromarray(arr.astype(np.uint8) * np.uint8(255)).save(path, format="PNG")


def write_label_png(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write a label map as a palette PNG whose indices are the class indices.

    Parameters
    ----------
    path
        Destination file (written as PNG whatever its extension).
    labels
        integer or bool HxW class indices 0..255 (e.g. an argmax label map). Colours come
        from :func:`label_palette`; :func:`read_label_mask` reads the indices back.

    Raises
    ------
    MaskError
        Not 2-D, not integers, or values outside 0..255. OSError propagates.
    """
    arr = np.asarray(labels)
    fname = Path(path).name
    if arr.ndim != 2:
        raise MaskError(f"{fname}: label map to write has shape {arr.shape} (accepted: HxW)")
    if arr.dtype != np.bool_ and arr.dtype.kind not in "iu":
        raise MaskError(f"{fname}: label map to write has dtype {arr.dtype} (accepted: "
                        "integer class indices 0..255)")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
        raise MaskError(f"{fname}: label map to write holds values {int(arr.min())}.."
                        f"{int(arr.max())} (accepted: class indices 0..255)")
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette(label_palette(256).ravel().tolist())
    im.save(path, format="PNG")


def write_image_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a [0, 1] image as an 8-bit grayscale PNG (``round(image * 255)``).

    Parameters
    ----------
    path
        Destination file (written as PNG whatever its extension).
    image
        float HxW in [0, 1] (values outside are clipped).

    Raises
    ------
    UnetCoreError
        If ``image`` is not 2-D or holds NaN/inf. OSError from the file system propagates.
    """
    arr = np.asarray(image, dtype=np.float64)
    fname = Path(path).name
    if arr.ndim != 2:
        raise UnetCoreError(f"{fname}: image to write has shape {arr.shape} (accepted: HxW)")
    if not np.isfinite(arr).all():
        raise UnetCoreError(f"{fname}: image to write contains NaN or infinite values")
    out = np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    Image.fromarray(out).save(path, format="PNG")


# --------------------------------------------------------------------------- data sets


@dataclass(frozen=True)
class Pair:
    """One image of a data set and its mask (``None`` when it has none)."""

    name: str
    image_path: Path
    mask_path: Path | None


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _list_images(folder: Path) -> list[Path]:
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise DataSetError(f"{_path_label(folder)}: cannot list folder ({_short(exc)})") from None
    return sorted(
        (
            p
            for p in entries
            if not _is_hidden(p) and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        ),
        key=lambda p: p.name,
    )


def find_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Collect image files from files and folders.

    Parameters
    ----------
    inputs
        Image files and/or folders. Folders are listed non-recursively, sorted by name,
        keeping only :data:`IMAGE_EXTENSIONS` (case-insensitive) and skipping hidden files.

    Returns
    -------
    list[Path]
        Image paths in input order, duplicates removed.

    Raises
    ------
    DataSetError
        No inputs, a path that does not exist, a file without an image extension, or a
        folder without images.
    """
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    if not inputs:
        raise DataSetError(f"no image files or folders given ({_ACCEPTED_EXT})")
    found: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise DataSetError(f"{_path_label(path)}: no such file or folder")
        if path.is_dir():
            images = _list_images(path)
            if not images:
                raise DataSetError(
                    f"{_path_label(path)}: folder contains no images ({_ACCEPTED_EXT})"
                )
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            images = [path]
        else:
            raise DataSetError(f"{display_name(path.name)}: not an image file ({_ACCEPTED_EXT})")
        for image in images:
            if image not in seen:
                seen.add(image)
                found.append(image)
    return found


def _data_root(root: Path) -> Path:
    if (root / "images").is_dir():
        return root
    try:
        subdirs = [
            p for p in root.iterdir() if p.is_dir() and not _is_hidden(p) and p.name != "__MACOSX"
        ]
    except OSError as exc:
        raise DataSetError(f"{_path_label(root)}: cannot list folder ({_short(exc)})") from None
    if len(subdirs) == 1 and (subdirs[0] / "images").is_dir():
        return subdirs[0]
    raise DataSetError(f"{_path_label(root)}: no images/ folder found ({_LAYOUT})")


def find_pairs(root: str | os.PathLike, *, require_masks: bool = True) -> list[Pair]:
    """Match the images of a data set folder with their masks.

    Layout: ``ROOT/images/NAME`` + ``ROOT/masks/NAME``. A mask matches by file name, or
    else by stem with any image extension (``images/a.jpg`` + ``masks/a.png``; ``.png``
    preferred when several exist). ``ROOT`` may also be a folder whose single subfolder
    has that layout (what unzipping a zip of a folder gives). Masks without images are
    ignored.

    Parameters
    ----------
    root
        The data set folder.
    require_masks
        If True every image must have a mask.

    Returns
    -------
    list[Pair]
        Sorted by name; ``mask_path`` is None for images without a mask.

    Raises
    ------
    DataSetError
        Missing path, no images/ folder, images/ empty, images without masks (if
        ``require_masks``).
    """
    base = Path(root)
    if not base.exists():
        raise DataSetError(f"{_path_label(base)}: no such folder")
    if not base.is_dir():
        raise DataSetError(f"{_path_label(base)}: not a folder ({_LAYOUT})")
    data = _data_root(base)
    images = _list_images(data / "images")
    if not images:
        raise DataSetError(
            f"{_path_label(data / 'images')}: folder contains no images ({_ACCEPTED_EXT})"
        )
    mask_dir = data / "masks"
    if not mask_dir.is_dir():
        if require_masks:
            raise DataSetError(f"{_path_label(data)}: no masks/ folder next to images/ ({_LAYOUT})")
        return [Pair(p.name, p, None) for p in images]
    masks = _list_images(mask_dir)
    by_name = {p.name: p for p in masks}
    by_stem: dict[str, Path] = {}
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    for p in sorted(masks, key=lambda p: (rank.get(p.suffix.lower(), 99), p.name)):
        by_stem.setdefault(p.stem, p)
    pairs = [Pair(p.name, p, by_name.get(p.name) or by_stem.get(p.stem)) for p in images]
    missing = [p.name for p in pairs if p.mask_path is None]
    if require_masks and missing:
        shown = ", ".join(missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise DataSetError(
            f"{_path_label(data)}: {len(missing)} of {len(pairs)} images have no mask in masks/: "
            f"{shown}{more} (masks are matched by file name, or by stem with any of "
            f"{', '.join(IMAGE_EXTENSIONS)})"
        )
    return pairs


def load_pair(
    pair: Pair, *, max_pixels: int | None = None, raw: bool = False,
    n_classes: int | None = None, soft_masks: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an image and its mask.

    Parameters
    ----------
    pair
        The image and its mask (``mask_path`` may be None).
    max_pixels
        Pixel limit (see :func:`read_raw`).
    raw
        Read the image with :func:`read_raw` (native dtype, channels kept: what the model
        card's preprocessing expects) instead of :func:`read_image` (gray float [0, 1]).
    n_classes
        Read the mask as a label mask of this many classes (:func:`read_label_mask`, uint8
        class indices) instead of a binary mask (:func:`read_mask`).

    Returns
    -------
    tuple[np.ndarray, np.ndarray | None]
        (image, mask or None): image float32 HxW in [0, 1], or as decoded (HxW or HxWxC)
        with ``raw``; mask bool HxW, or uint8 HxW with ``n_classes``.
    soft_masks
        If a list, the pair's name is appended to it when its binary mask was not cleanly
        two-level (:func:`mask_is_binary` False: :func:`binarise_mask` had to threshold),
        so callers can warn.

    Raises
    ------
    ImageReadError
        The image is unreadable (message names ``images/NAME``).
    MaskError
        The mask is unreadable (message names ``masks/NAME``), holds classes the model does
        not have, or its height x width differs from the image's.
    """
    image_name = f"images/{pair.image_path.name}"
    if raw:
        image = read_raw(pair.image_path, name=image_name, max_pixels=max_pixels)
    else:
        image = read_image(pair.image_path, name=image_name, max_pixels=max_pixels)
    if pair.mask_path is None:
        return image, None
    mask_name = f"masks/{pair.mask_path.name}"
    if n_classes is None and soft_masks is not None:
        try:
            raw_mask = read_raw(pair.mask_path, name=mask_name, max_pixels=max_pixels)
        except ImageReadError as exc:
            raise MaskError(str(exc)) from None
        if not mask_is_binary(raw_mask):
            soft_masks.append(pair.name)
        mask = binarise_mask(raw_mask, name=mask_name)
    elif n_classes is None:
        mask = read_mask(pair.mask_path, name=mask_name, max_pixels=max_pixels)
    else:
        mask = read_label_mask(pair.mask_path, n_classes, name=mask_name, max_pixels=max_pixels)
    if mask.shape != image.shape[:2]:
        mh, mw = mask.shape
        ih, iw = image.shape[:2]
        raise MaskError(
            f"{display_name(pair.name)}: mask is {mh}x{mw} (HxW) but image is {ih}x{iw}; "
            "masks must match their image's size"
        )
    return image, mask


# --------------------------------------------------------------------------- archives

_DRIVE = re.compile(r"^[A-Za-z]:")


def _member_parts(filename: str, archive: str) -> list[str]:
    """Split a zip member name into safe path parts, refusing traversal and absolute paths."""
    normalised = filename.replace("\\", "/")
    if normalised.startswith("/") or _DRIVE.match(normalised):
        raise DataSetError(
            f"{archive}: refusing absolute path {_q(filename)} in zip "
            "(accepted: relative paths inside the archive)"
        )
    parts = [part for part in normalised.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise DataSetError(
            f"{archive}: refusing path {_q(filename)} containing '..' in zip "
            "(path traversal; accepted: relative paths inside the archive)"
        )
    if any("\x00" in part for part in parts):
        raise DataSetError(f"{archive}: refusing invalid member name {_q(filename)} in zip")
    return parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


@contextlib.contextmanager
def open_dataset(
    path: str | os.PathLike | bytes | BinaryIO,
    *,
    max_unpacked_bytes: int = 2_000_000_000,
    max_members: int = 100_000,
    max_ratio: float = 200.0,
    name: str | None = None,
) -> Iterator[Path]:
    """Yield a folder usable by :func:`find_pairs` for a folder or a zip archive.

    A folder is yielded as-is. A ``.zip`` (path, bytes or binary file-like object) is
    extracted into a fresh temporary folder that is deleted when the ``with`` block ends.
    Extraction refuses (DataSetError) absolute member paths, ``..`` path components,
    symlinks, more than ``max_members`` entries, a declared total uncompressed size over
    ``max_unpacked_bytes``, any member of at least 1 MiB whose compression ratio exceeds
    ``max_ratio`` (zip bomb), and corrupt or encrypted archives. The bytes actually written
    are counted too, so nothing beyond the declared sizes is written, and never outside
    the temporary folder. Hidden entries and ``__MACOSX/`` are skipped. DataSetErrors
    raised inside the block that mention the temporary folder are re-raised with the
    archive's name in its place.

    Parameters
    ----------
    path
        A folder, a zip file path, the zip's bytes or a binary file object.
    max_unpacked_bytes, max_members, max_ratio
        Safety limits (see above).
    name
        Archive name for messages; defaults to the file name.

    Yields
    ------
    Path
        The folder to pass to :func:`find_pairs`.
    """
    label = _source_name(path, name)
    if isinstance(path, str | os.PathLike):
        folder = Path(os.fspath(path))
        if not folder.exists():
            raise DataSetError(f"{_path_label(folder)}: no such file or folder")
        if folder.is_dir():
            yield folder
            return
        if folder.suffix.lower() != ".zip" and not zipfile.is_zipfile(folder):
            raise DataSetError(
                f"{label}: not a folder or a .zip archive (accepted: a folder or .zip holding "
                "ROOT/images/NAME + ROOT/masks/NAME)"
            )
    with (
        _open_binary(path, label, DataSetError) as fh,
        tempfile.TemporaryDirectory(prefix="unet_dataset_", ignore_cleanup_errors=True) as tmp,
    ):
        target = Path(tmp)
        _extract_zip(fh, target, label, max_unpacked_bytes, max_members, max_ratio)
        try:
            yield target
        except UnetCoreError as exc:
            message = str(exc)
            for form in {str(target), str(target.resolve())}:
                message = message.replace(form, label)
            if message == str(exc):
                raise
            raise type(exc)(message) from exc


def _extract_zip(
    fh: BinaryIO,
    target: Path,
    label: str,
    max_unpacked_bytes: int,
    max_members: int,
    max_ratio: float,
) -> None:
    corrupt = f"{label}: corrupt or unreadable zip archive"
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise DataSetError(f"{corrupt} ({_short(exc)}) (accepted: a valid .zip file)") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise DataSetError(
                f"{label}: zip has {len(infos):,} entries, over the limit of "
                f"{max_members:,} (accepted: up to {max_members:,} files)"
            )
        total = 0
        planned: list[tuple[zipfile.ZipInfo, list[str]]] = []
        seen: set[str] = set()
        for info in infos:
            parts = _member_parts(info.filename, label)
            if _is_symlink(info):
                raise DataSetError(
                    f"{label}: refusing symlink {_q(info.filename)} in zip "
                    "(accepted: regular files and folders)"
                )
            total += info.file_size
            if total > max_unpacked_bytes:
                raise DataSetError(
                    f"{label}: zip would unpack to more than {max_unpacked_bytes:,} bytes "
                    f"(possible zip bomb; accepted: up to {max_unpacked_bytes:,} bytes)"
                )
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size >= _MIN_RATIO_CHECK_BYTES and ratio > max_ratio:
                raise DataSetError(
                    f"{label}: zip member {_q(info.filename)} has compression ratio "
                    f"{ratio:,.0f}:1 (possible zip bomb; accepted: up to {max_ratio:,.0f}:1)"
                )
            if info.flag_bits & 0x1:
                raise DataSetError(
                    f"{label}: zip is encrypted ({_q(info.filename)}); "
                    "accepted: unencrypted .zip files"
                )
            if not parts or info.is_dir():
                continue
            if any(p.startswith(".") or p == "__MACOSX" for p in parts):
                continue
            key = "/".join(parts)
            if key in seen:
                raise DataSetError(
                    f"{label}: zip holds member {_q(key)} more than once "
                    "(duplicate names; accepted: one entry per file)"
                )
            seen.add(key)
            planned.append((info, parts))
        # Parts are checked above (no '..', absolute path, drive, NUL or symlink) and the
        # folder is fresh and only ever gets plain files and folders from us, so a string
        # check replaces a per-member resolve() (which stat()s every level: slow for
        # thousands of members); folders are created once each.
        root = os.path.realpath(target)
        made: set[str] = {root}
        written = 0
        for info, parts in planned:
            dest = os.path.join(root, *parts)
            parent = os.path.dirname(dest)
            if os.path.commonpath((root, os.path.normpath(dest))) != root:
                raise DataSetError(
                    f"{label}: refusing member {_q(info.filename)} that would be written outside "
                    "the extraction folder"
                )
            try:
                if parent not in made:
                    os.makedirs(parent, exist_ok=True)
                    made.add(parent)
                with zf.open(info) as src, open(dest, "xb") as out:
                    member_written = 0
                    while chunk := src.read(_COPY_CHUNK):
                        member_written += len(chunk)
                        written += len(chunk)
                        if member_written > info.file_size or written > max_unpacked_bytes:
                            raise DataSetError(
                                f"{label}: zip member {_q(info.filename)} unpacks to more "
                                "than its declared size (possible zip bomb)"
                            )
                        out.write(chunk)
            except UnetCoreError:
                raise
            except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
                raise DataSetError(
                    f"{corrupt} at {_q(info.filename)} ({_short(exc)}) "
                    "(accepted: a valid .zip file)"
                ) from None
            except NotImplementedError as exc:
                raise DataSetError(
                    f"{label}: unsupported zip compression for {_q(info.filename)} "
                    f"({_short(exc)}); accepted: stored or deflate"
                ) from None
            except (OSError, RuntimeError) as exc:
                # strerror, not str(exc): that names the temporary folder, gone by now
                reason = getattr(exc, "strerror", None) or _short(exc)
                raise DataSetError(
                    f"{label}: cannot extract {_q(info.filename)} ({reason})"
                ) from None
