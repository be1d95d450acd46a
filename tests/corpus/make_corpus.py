"""Generate a corpus of bad or awkward inputs for the engine (nothing is downloaded).

Every file is crafted here, byte by byte where a library would refuse to write it (a PNG
that declares 100000x100000 pixels, a zip with ``../`` members, a pickle that would run a
command...). Each file comes with a :class:`CorpusCase` saying what it is, which engine
path reads it, and what must happen: ``"ok"`` (it loads, with the given shape) or
``"error"`` (a :class:`unet_core.errors.UnetCoreError` of the given class whose one-line
message matches ``match`` and names ``names``).

Kinds and the engine path the tests use for them:

* ``image``: ``unet_core.io.read_image`` (and ``read_mask``) on the file;
* ``mask_pair``: a folder ``NAME/images + NAME/masks``: ``find_pairs`` then ``load_pair``;
* ``zip``: ``open_dataset`` + ``find_pairs`` + ``load_pair`` on the archive;
* ``model``: ``unet_core.model.load_model`` on the file.

Usage::

    python tests/corpus/make_corpus.py OUT_DIR      # writes the files + OUT_DIR/manifest.json

or ``build_corpus(out_dir) -> list[CorpusCase]`` from Python. Generate into a temporary
folder; never commit the generated files.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shlex
import stat
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

KINDS = ("image", "mask_pair", "zip", "model")

#: Payloads in the corpus create files whose name starts with this if they ever run.
MARKER_PREFIX = "PAYLOAD_RAN_"
#: Zip members that try to escape the extraction folder carry this in their name.
ESCAPE_TAG = "unet_corpus_escape"
#: Pixel limit used by the cases that pass ``max_pixels`` explicitly.
SMALL_LIMIT = 10_000

_ACCEPTED = r"\(accepted: PNG, JPEG, TIFF, BMP\)"


@dataclass
class CorpusCase:
    """One generated input and what the engine must do with it.

    Attributes:
        name: file (or, for ``mask_pair``, folder) name relative to the corpus folder.
        kind: ``image`` | ``mask_pair`` | ``zip`` | ``model``.
        expect: ``ok`` (must load) or ``error`` (must raise ``error``).
        match: regex the error message must match (``re.search``).
        error: name of the expected class in :mod:`unet_core.errors`.
        names: text the error message must contain (the offending file); default ``name``.
        note: what the case is about.
        shape: expected HxW of an ``ok`` image (or of every image of a data set).
        value: if set, every pixel of the ``ok`` image must equal it (float32 [0, 1]).
        vmin, vmax: if set, the ``ok`` image's min / max.
        expected_mask: for ``mask_pair`` / ``image`` read as a mask: the expected bool mask.
        pairs: for ``ok`` zips and folders: the number of image/mask pairs.
        max_pixels: passed as ``max_pixels=`` to the reader (None: the default).
        env: environment variables set while the case is read.
    """

    name: str
    kind: str
    expect: str
    match: str = ""
    error: str = "UnetCoreError"
    names: str = ""
    note: str = ""
    shape: tuple[int, int] | None = None
    value: float | None = None
    vmin: float | None = None
    vmax: float | None = None
    expected_mask: list[list[bool]] | None = None
    pairs: int | None = None
    max_pixels: int | None = None
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if self.expect not in ("ok", "error"):
            raise ValueError(f"{self.name}: expect must be 'ok' or 'error'")
        if self.expect == "error" and not self.match:
            raise ValueError(f"{self.name}: an error case needs a regex")
        if not self.names:
            self.names = Path(self.name).name

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"

    def path(self, root: str | os.PathLike) -> Path:
        return Path(root) / self.name


# --------------------------------------------------------------------------- byte crafting


def _pil_bytes(arr: np.ndarray, fmt: str, **kw: object) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_header_only(width: int, height: int, idat: bytes | None = None) -> bytes:
    """An 8-bit grayscale PNG declaring ``width`` x ``height`` with (almost) no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 64) if idat is None else idat
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def tiff_bytes(
    width: int,
    height: int,
    data: bytes,
    *,
    bits: int = 8,
    samples: int = 1,
    sample_format: int = 1,
    compression: int = 1,
    tile: tuple[int, int] | None = None,
    next_ifd_self: bool = False,
) -> bytes:
    """A little-endian baseline TIFF with one strip (or one tile) holding ``data``.

    Written by hand so that it can lie: declare any size, any tile size, any compression.
    ``next_ifd_self`` makes the IFD chain point back to itself (a loop).
    """
    data_offset = 8
    ifd_offset = data_offset + len(data) + (len(data) & 1)
    entries: list[tuple[int, int, int, int]] = [  # tag, type (3 SHORT, 4 LONG), count, value
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, bits),
        (259, 3, 1, compression),
        (262, 3, 1, 2 if samples >= 3 else 1),
        (277, 3, 1, samples),
        (284, 3, 1, 1),
        (339, 3, 1, sample_format),
    ]
    if tile is None:
        entries += [(273, 4, 1, data_offset), (278, 4, 1, height), (279, 4, 1, len(data))]
    else:
        entries += [
            (322, 4, 1, tile[1]),
            (323, 4, 1, tile[0]),
            (324, 4, 1, data_offset),
            (325, 4, 1, len(data)),
        ]
    if samples > 1:  # BitsPerSample must then have one value per sample: keep it simple
        entries = [e for e in entries if e[0] != 258]
    entries.sort()
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, count) + packed
    ifd += struct.pack("<I", ifd_offset if next_ifd_self else 0)
    pad = b"\x00" if len(data) & 1 else b""
    return b"II*\x00" + struct.pack("<I", ifd_offset) + data + pad + ifd


def bmp_header(width: int, height: int, payload: bytes = b"\x00" * 16) -> bytes:
    """A 24-bit BMP header declaring ``width`` x ``height`` followed by ``payload``."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    size = 14 + len(info) + len(payload)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 14 + len(info)) + info + payload


def deflate_bomb(nbytes: int, chunk: int = 1 << 20) -> bytes:
    """zlib stream of ``nbytes`` zero bytes, compressed without holding them in memory."""
    comp = zlib.compressobj(9)
    zero = bytes(chunk)
    parts = []
    left = nbytes
    while left > 0:
        parts.append(comp.compress(zero[: min(chunk, left)]))
        left -= chunk
    parts.append(comp.flush())
    return b"".join(parts)


def zip_bytes(
    members: Iterable[tuple[str | zipfile.ZipInfo, bytes]],
    compression: int = zipfile.ZIP_DEFLATED,
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for member, data in members:
            if isinstance(member, zipfile.ZipInfo):
                member.compress_type = compression
            zf.writestr(member, data)
    return buf.getvalue()


class RunCommand:
    """Pickles to ``os.system(command)``: unpickling it runs the command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


class OpenFile:
    """Pickles to ``open(path, "w")``: unpickling it creates the file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


# --------------------------------------------------------------------------- the corpus


Data = bytes | Callable[[], bytes]  # file content, or a function making it (skipped when dry)


class _Writer:
    def __init__(self, root: Path, dry: bool = False) -> None:
        self.root = root
        self.dry = dry  # only collect the cases, write nothing
        self.cases: list[CorpusCase] = []
        self.rng = np.random.default_rng(20240601)

    def noise(self, h: int, w: int, *extra: int) -> np.ndarray:
        return self.rng.integers(0, 256, size=(h, w, *extra), dtype=np.uint8)

    def file(self, name: str, data: Data, case: CorpusCase | None) -> None:
        if not self.dry:
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data() if callable(data) else data)
        if case is not None:
            self.cases.append(case)

    def image(self, name: str, data: Data, expect: str, match: str = "", **kw: object) -> None:
        kw.setdefault("error", "ImageReadError")
        self.file(name, data, CorpusCase(name, "image", expect, match, **kw))  # type: ignore[arg-type]

    def dataset(
        self,
        name: str,
        images: dict[str, bytes],
        masks: dict[str, bytes] | None,
        expect: str,
        match: str = "",
        **kw: object,
    ) -> None:
        for fname, data in images.items():
            self.file(f"{name}/images/{fname}", data, None)
        for fname, data in (masks or {}).items():
            self.file(f"{name}/masks/{fname}", data, None)
        self.cases.append(CorpusCase(name, "mask_pair", expect, match, **kw))  # type: ignore[arg-type]

    def zip(self, name: str, data: Data, expect: str, match: str = "", **kw: object) -> None:
        kw.setdefault("error", "DataSetError")
        self.file(name, data, CorpusCase(name, "zip", expect, match, **kw))  # type: ignore[arg-type]

    def model(self, name: str, data: Data, expect: str, match: str = "", **kw: object) -> None:
        kw.setdefault("error", "ModelLoadError")
        self.file(name, data, CorpusCase(name, "model", expect, match, **kw))  # type: ignore[arg-type]


def _images(w: _Writer) -> None:
    png = _pil_bytes(w.noise(64, 64), "PNG")
    jpg = _pil_bytes(w.noise(64, 64, 3), "JPEG", quality=90)
    tif = _tiff_from_array(w.noise(64, 64))

    w.image("empty.png", b"", "error", r"empty file \(0 bytes\)", note="0-byte file")
    w.image("empty.tif", b"", "error", r"empty file \(0 bytes\)", note="0-byte TIFF")
    w.image("truncated.png", png[: len(png) // 2], "error",
            r"corrupt or truncated PNG file .*" + _ACCEPTED, note="PNG cut in half")
    w.image("truncated.jpg", jpg[: len(jpg) // 2], "error",
            r"corrupt or truncated JPEG file", note="JPEG cut in half")
    w.image("truncated.tif", tif[:200], "error",
            r"truncated TIFF file \(image data ends at byte [\d,]+ but the file has 200 bytes\)",
            note="TIFF cut inside its pixel data")
    w.image("text.png", b"just some notes, not an image\n" * 3, "error",
            r"not a readable image " + _ACCEPTED, note="text file named .png")
    w.image("notes.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "error",
            r"not a readable image " + _ACCEPTED, note="SVG (text) image")
    w.image("bomb_100000x100000.png", png_header_only(100_000, 100_000), "error",
            r"over the limit of 40,000,000 pixels", note="decompression bomb: tiny PNG "
            "whose IHDR declares 100000x100000")
    w.image("bomb_7000x7000.png", png_header_only(7_000, 7_000), "error",
            r"7000x7000 \(HxW\) = 49,000,000 pixels, over the limit of 40,000,000",
            note="PNG just over the default limit (below PIL's own bomb limit)")
    w.image("over_limit_arg.png", _pil_bytes(w.noise(200, 100), "PNG"), "error",
            r"200x100 \(HxW\) = 20,000 pixels, over the limit of 10,000 pixels",
            max_pixels=SMALL_LIMIT, note="over the max_pixels argument")
    w.image("over_limit_env.tif", _tiff_from_array(w.noise(100, 100)), "error",
            r"over the limit of 5,000 pixels.*UNET_MAX_PIXELS", env={"UNET_MAX_PIXELS": "5000"},
            note="over the UNET_MAX_PIXELS limit")
    w.image("at_limit_arg.png", _pil_bytes(w.noise(100, 100), "PNG"), "ok", shape=(100, 100),
            max_pixels=SMALL_LIMIT, note="exactly at the max_pixels limit")
    w.image("huge_dims.tif", tiff_bytes(100_000, 100_000, bytes(64)), "error",
            r"100000x100000 \(HxW\) = 10,000,000,000 pixels, over the limit",
            note="tiny TIFF declaring 100000x100000")
    w.image("huge_dims.bmp", bmp_header(100_000, 100_000), "error",
            r"over the limit of 40,000,000 pixels", note="BMP header declaring 100000x100000")
    w.image("bogus_header.bmp", b"BM" + bytes(range(256)) * 2, "error",
            r"not a readable image " + _ACCEPTED, note="BMP with a bogus header")
    w.image("tile_bomb.tif",
            tiff_bytes(16, 16, zlib.compress(bytes(256)), tile=(32768, 32768), compression=8),
            "error", r"TIFF tile of 32768x32768 pixels is over the limit",
            note="16x16 deflate TIFF declaring a 32768x32768 tile (1 GiB decode buffer)")
    w.image("packbits_bomb.tif", tiff_bytes(16, 16, b"\x81\x00" * (256 << 10),
                                            compression=32773),
            "ok", shape=(16, 16), value=0.0,
            note="16x16 PackBits TIFF whose strip expands to 64 MiB (must stay fast and small)")
    w.image("deflate_bomb.tif",
            lambda: tiff_bytes(16, 16, deflate_bomb(64 << 20), compression=8), "error",
            r"decompress", note="16x16 deflate TIFF whose strip inflates to 64 MiB")
    w.image("circular_ifd.tif", tiff_bytes(8, 8, bytes(64), next_ifd_self=True), "ok",
            shape=(8, 8), value=0.0, note="TIFF whose IFD chain loops on itself")
    w.image("garbage.tif", b"II*\x00" + bytes(range(256)) * 4, "error",
            r"TIFF file contains no image " + _ACCEPTED,
            note="TIFF magic then garbage")
    w.image("five_channels.tif", _tiff_from_array(w.noise(8, 8, 5), planar=True), "error",
            r"5 channels \(accepted: 1 gray, 2 gray\+alpha, 3 RGB or 4 RGBA\)",
            note="TIFF with 5 samples per pixel")
    bad_idat = png_header_only(64, 64, idat=bytes(range(200)))
    w.image("bad_idat.png", bad_idat, "error",
            r"corrupt or truncated PNG file \(broken data stream",
            note="valid IHDR, IDAT is not zlib")
    w.image("zero_width.png", png_header_only(0, 16), "error",
            r"not a readable image " + _ACCEPTED, note="IHDR declares width 0")
    if not w.dry:
        (w.root / "folder.png").mkdir(parents=True, exist_ok=True)
    w.cases.append(CorpusCase("folder.png", "image", "error", r"is a folder",
                              error="ImageReadError", note="a folder named like an image"))

    gray16 = np.arange(12 * 20, dtype=np.uint16).reshape(12, 20) * 273
    w.image("gray16.tif", _tiff_from_array(gray16), "ok", shape=(12, 20), vmin=0.0,
            vmax=float(gray16.max()) / 65535, note="16-bit TIFF (/65535)")
    for label, bad in (("nan", np.nan), ("inf", np.inf), ("neginf", -np.inf)):
        arr = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
        arr[3, 4] = bad
        w.image(f"float32_{label}.tif", _tiff_from_array(arr), "error",
                r"NaN or infinite values \(accepted: finite numbers only\)",
                note=f"float32 TIFF with {label}")
    wide = np.linspace(-5, 20, 30, dtype=np.float32).reshape(5, 6)
    w.image("float32_range.tif", _tiff_from_array(wide), "ok", shape=(5, 6), vmin=0.0, vmax=1.0,
            note="float32 TIFF outside [0, 1]: min-max scaled")
    w.image("float64_const.tif", _tiff_from_array(np.full((4, 4), 7.5)), "ok", shape=(4, 4),
            value=0.0, note="constant float64 TIFF outside [0, 1] -> zeros")

    w.image("row_1x300.png", _pil_bytes(w.noise(1, 300), "PNG"), "ok", shape=(1, 300),
            note="1xN image")
    w.image("col_300x1.png", _pil_bytes(w.noise(300, 1), "PNG"), "ok", shape=(300, 1),
            note="Nx1 image")
    w.image("one_pixel.bmp", _pil_bytes(w.noise(1, 1, 3), "BMP"), "ok", shape=(1, 1),
            note="1x1 BMP")
    w.image("constant.png", _pil_bytes(np.full((16, 16), 77, np.uint8), "PNG"), "ok",
            shape=(16, 16), value=77 / 255, note="all-constant image")
    rgba = w.noise(10, 12, 4)
    w.image("rgba.png", _pil_bytes(rgba, "PNG"), "ok", shape=(10, 12), note="RGBA PNG")
    w.image("gray_alpha.png", _pil_bytes(w.noise(10, 12, 2), "PNG"), "ok", shape=(10, 12),
            note="gray + alpha PNG")
    w.image("palette.png", _palette_png(w, transparency=False), "ok", shape=(9, 11),
            note="palette (P) PNG")
    w.image("palette_transparent.png", _palette_png(w, transparency=True), "ok", shape=(9, 11),
            note="palette PNG with a transparent colour")
    w.image("bilevel.png", _bilevel_png(), "ok", shape=(7, 9), vmin=0.0, vmax=1.0,
            note="1-bit PNG")
    w.image("cmyk.jpg", _cmyk_jpeg(w.noise(8, 10, 3)), "ok", shape=(8, 10),
            note="CMYK JPEG")
    w.image("jpeg_named.png", _pil_bytes(w.noise(20, 30, 3), "JPEG"), "ok", shape=(20, 30),
            note="JPEG content with a .png extension (content is sniffed)")
    w.image("png_named.jpg", _pil_bytes(w.noise(20, 30), "PNG"), "ok", shape=(20, 30),
            note="PNG content with a .jpg extension")
    w.image("multipage.tif", _multipage_tiff(), "ok", shape=(6, 7), value=10 / 255,
            note="3-page TIFF: first page")
    w.image("my scan 01.png", png, "ok", shape=(64, 64), note="file name with spaces")
    w.image("ñandú 画像 ü.png", png, "ok", shape=(64, 64), note="unicode file name")
    w.image("SHOUT.PNG", png, "ok", shape=(64, 64), note="upper-case extension")

    gif = _pil_bytes(w.noise(8, 8), "GIF")
    w.image("anim.gif", gif, "error", r"GIF images are not supported " + _ACCEPTED,
            note="GIF is refused with the accepted list")
    w.image("gif_named.png", gif, "error", r"GIF images are not supported " + _ACCEPTED,
            note="GIF content with a .png extension")
    w.image("photo.webp", _pil_bytes(w.noise(8, 8, 3), "WEBP"), "error",
            r"WEBP images are not supported " + _ACCEPTED, note="WEBP is refused")
    w.image("icon.ico", _pil_bytes(w.noise(16, 16, 3), "ICO"), "error",
            r"ICO images are not supported " + _ACCEPTED, note="ICO is refused")


def _tiff_from_array(arr: np.ndarray, planar: bool = False) -> bytes:
    import tifffile

    buf = io.BytesIO()
    if planar:
        tifffile.imwrite(buf, np.moveaxis(arr, -1, 0), planarconfig="separate",
                         photometric="minisblack")
    else:
        tifffile.imwrite(buf, arr)
    return buf.getvalue()


def _multipage_tiff() -> bytes:
    import tifffile

    pages = np.stack([np.full((6, 7), v, np.uint8) for v in (10, 20, 30)])
    buf = io.BytesIO()
    tifffile.imwrite(buf, pages, photometric="minisblack")
    return buf.getvalue()


def _palette_png(w: _Writer, transparency: bool) -> bytes:
    from PIL import Image

    im = Image.fromarray(w.noise(9, 11, 3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    buf = io.BytesIO()
    if transparency:
        im.save(buf, format="PNG", transparency=0)
    else:
        im.save(buf, format="PNG")
    return buf.getvalue()


def _bilevel_png() -> bytes:
    from PIL import Image

    arr = np.zeros((7, 9), bool)
    arr[2:5, 3:7] = True
    buf = io.BytesIO()
    Image.fromarray(arr).convert("1").save(buf, format="PNG")
    return buf.getvalue()


def _cmyk_jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, format="JPEG")
    return buf.getvalue()


def _gray_png(arr: np.ndarray) -> bytes:
    return _pil_bytes(np.asarray(arr), "PNG")


def _masks(w: _Writer) -> None:
    img32 = _gray_png(w.noise(32, 32))
    w.dataset("pair_size_mismatch", {"a.png": img32}, {"a.png": _gray_png(w.noise(32, 40))},
              "error", r"mask is 32x40 \(HxW\) but image is 32x32; masks must match",
              error="MaskError", names="a.png", note="mask with a different size than its image")

    levels = np.array([[0, 100, 127, 128], [200, 255, 1, 254], [64, 129, 0, 255]], np.uint8)
    w.dataset("pair_mask_levels", {"a.png": _gray_png(w.noise(3, 4))},
              {"a.png": _gray_png(levels)}, "ok", shape=(3, 4),
              expected_mask=(levels >= 128).tolist(),
              note="mask with values other than 0/255: foreground is >= 128 (binarise_mask)")
    zero_one = np.array([[0, 1, 1], [1, 0, 0]], np.uint8)
    w.dataset("pair_mask_0_1", {"a.png": _gray_png(w.noise(2, 3))},
              {"a.png": _gray_png(zero_one)}, "ok", shape=(2, 3),
              expected_mask=(zero_one == 1).tolist(), note="0/1 label mask: 1 is foreground")
    colour = np.zeros((2, 3, 3), np.uint8)
    colour[0, 0] = (255, 255, 255)
    colour[0, 1] = (255, 0, 0)  # luma 76: background
    colour[1, 2] = (0, 255, 0)  # luma 150: foreground
    w.dataset("pair_mask_rgb", {"a.png": _gray_png(w.noise(2, 3))},
              {"a.png": _pil_bytes(colour, "PNG")}, "ok", shape=(2, 3),
              expected_mask=[[True, False, False], [False, False, True]],
              note="RGB mask: luma >= 128 is foreground")
    m16 = np.array([[0, 30000, 32768], [40000, 65535, 100]], np.uint16)
    w.dataset("pair_mask_16bit", {"a.png": _gray_png(w.noise(2, 3))},
              {"a.png": _tiff_from_array(m16)}, "ok", shape=(2, 3),
              expected_mask=(m16 >= 32768).tolist(), note="16-bit mask: >= 32768 (TIFF in .png)")
    w.dataset("pair_mask_constant", {"a.png": _gray_png(w.noise(5, 5))},
              {"a.png": _gray_png(np.full((5, 5), 255, np.uint8))}, "ok", shape=(5, 5),
              expected_mask=np.ones((5, 5), bool).tolist(), note="all-foreground mask")
    nan_mask = np.zeros((4, 4), np.float32)
    nan_mask[0, 0] = np.nan
    w.dataset("pair_mask_nan", {"a.tif": _gray_png(w.noise(4, 4))},
              {"a.tif": _tiff_from_array(nan_mask)}, "error", r"NaN or infinite",
              error="MaskError", names="masks/a.tif", note="float mask with NaN")
    w.dataset("pair_mask_truncated", {"a.png": img32}, {"a.png": img32[:60]}, "error",
              r"corrupt or truncated PNG", error="MaskError", names="masks/a.png",
              note="truncated mask file")
    w.dataset("pair_mask_text", {"a.png": img32}, {"a.png": b"not a mask"}, "error",
              r"not a readable image", error="MaskError", names="masks/a.png",
              note="text file as a mask")
    w.dataset("pair_image_bomb", {"a.png": png_header_only(100_000, 100_000)},
              {"a.png": img32}, "error", r"over the limit", error="ImageReadError",
              names="images/a.png", note="bomb as the image of a pair")
    w.dataset("pair_missing_mask", {"a.png": img32, "b.png": img32}, {"a.png": img32}, "error",
              r"1 of 2 images have no mask in masks/: b\.png", error="DataSetError",
              names="pair_missing_mask", note="an image without its mask")
    w.dataset("pair_no_masks_dir", {"a.png": img32}, None, "error", r"no masks/ folder",
              error="DataSetError", names="pair_no_masks_dir", note="no masks/ folder")
    w.dataset("pair_jpg_png_stem", {"a b.jpg": _pil_bytes(w.noise(6, 8, 3), "JPEG")},
              {"a b.png": _gray_png(np.zeros((6, 8), np.uint8))}, "ok", shape=(6, 8), pairs=1,
              expected_mask=np.zeros((6, 8), bool).tolist(),
              note="JPEG image + PNG mask matched by stem, name with a space")


def _zips(w: _Writer) -> None:
    img = _gray_png(w.noise(8, 8))
    mask = _gray_png(((w.noise(8, 8) > 127) * 255).astype(np.uint8))
    good = [("images/a.png", img), ("masks/a.png", mask), ("images/b.png", img),
            ("masks/b.png", mask), ("images/c.png", img), ("masks/c.png", mask)]

    w.zip("good.zip", zip_bytes(good), "ok", pairs=3, shape=(8, 8), note="a valid data set")
    nested = [(f"train/{n}", d) for n, d in good[:2]]
    nested += [("__MACOSX/train/._a.png", b"junk"), ("train/.DS_Store", b"junk")]
    w.zip("données 2024 ü.zip", zip_bytes(nested), "ok", pairs=1, shape=(8, 8),
          note="unicode zip name, data set inside one folder, macOS junk")
    w.zip("traversal.zip", zip_bytes([*good[:2], (f"../{ESCAPE_TAG}_dotdot.png", img)]),
          "error", r"refusing path .*'\.\.'.*path traversal", note="member ../x.png")
    w.zip("traversal_deep.zip",
          zip_bytes([*good[:2], (f"images/../../{ESCAPE_TAG}_deep.png", img)]), "error",
          r"'\.\.'", note="member images/../../x.png")
    w.zip("traversal_backslash.zip", zip_bytes([*good[:2], (f"..\\{ESCAPE_TAG}_bs.png", img)]),
          "error", r"'\.\.'", note="member ..\\x.png (Windows separator)")
    w.zip("absolute.zip", zip_bytes([*good[:2], (f"/tmp/{ESCAPE_TAG}_abs.png", img)]), "error",
          r"refusing absolute path", note="absolute member path")
    w.zip("drive_letter.zip", zip_bytes([*good[:2], (f"C:/{ESCAPE_TAG}_drive.png", img)]),
          "error", r"refusing absolute path", note="member C:/x.png")
    link = zipfile.ZipInfo("images/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    w.zip("symlink.zip", zip_bytes([*good[:2], (link, f"../../{ESCAPE_TAG}_link")]), "error",
          r"refusing symlink 'images/link\.png'", note="symlink member")
    w.zip("bomb.zip", _zip_bomb, "error", r"compression ratio .*zip bomb",
          note="64 MiB of zeros in a ~64 KiB member")
    w.zip("no_images.zip", zip_bytes([("a.png", img), ("b.png", mask)]), "error",
          r"no images/ folder found", note="flat zip without images/")
    w.zip("empty_archive.zip", zip_bytes([]), "error", r"no images/ folder found",
          note="valid zip without members")
    w.zip("corrupt.zip", b"PK\x03\x04" + bytes(range(256)) * 3, "error",
          r"corrupt or unreadable zip archive", note="zip magic then garbage")
    w.zip("png_named.zip", img, "error", r"corrupt or unreadable zip archive",
          note="a PNG named .zip")
    w.zip("damaged_member.zip", _damaged_zip(w), "error",
          r"corrupt or unreadable zip archive at 'images/a\.png'", note="CRC/deflate error")
    w.zip("encrypted_flag.zip", _encrypted_zip([("images/a.png", img), ("masks/a.png", mask)]),
          "error", r"zip is encrypted \('images/a\.png'\)", note="member flagged as encrypted")
    w.zip("file_dir_clash.zip", zip_bytes([("images", img), ("images/a.png", img)]), "error",
          r"cannot extract 'images/a\.png'", note="a file and a folder with the same path")
    w.zip("long_name.zip", zip_bytes([*good[:2], ("images/" + "x" * 300 + ".png", img)]),
          "error", r"cannot extract", note="member name longer than the file system allows")
    w.zip("bad_image_inside.zip",
          zip_bytes([*good[:2], ("images/b.png", b"text"), ("masks/b.png", mask)]), "error",
          r"images/b\.png: not a readable image", error="ImageReadError", names="images/b.png",
          note="a text file among the images")
    w.zip("mask_mismatch_inside.zip",
          zip_bytes([("images/a.png", img), ("masks/a.png", _gray_png(w.noise(9, 8)))]),
          "error", r"mask is 9x8 \(HxW\) but image is 8x8", error="MaskError", names="a.png",
          note="mask of the wrong size inside a zip")
    w.zip("missing_mask_inside.zip", zip_bytes([*good[:2], ("images/b.png", img)]), "error",
          r"missing_mask_inside\.zip: 1 of 2 images have no mask", names="missing_mask_inside.zip",
          note="folder errors name the archive, not the temporary folder")


def _encrypted_zip(members: list[tuple[str, bytes]]) -> bytes:
    """A zip whose first member has the 'encrypted' flag set (zipfile cannot write one)."""
    data = bytearray(zip_bytes(members, zipfile.ZIP_STORED))
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    return bytes(data)


def _zip_bomb() -> bytes:
    member = zipfile.ZipInfo("images/zeros.png")
    member.compress_type = zipfile.ZIP_DEFLATED
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open(member, "w") as out:
        zero = bytes(1 << 20)
        for _ in range(64):
            out.write(zero)
    return buf.getvalue()


def _damaged_zip(w: _Writer) -> bytes:
    payload = w.rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    data = bytearray(zip_bytes([("images/a.png", payload)]))
    start = 30 + len("images/a.png")  # local header + name
    for i in range(start + 10, start + 60):
        data[i] ^= 0xFF
    return bytes(data)


def _h5_bytes(w: _Writer, name: str, build) -> bytes:  # noqa: ANN001
    import h5py

    if w.dry:
        return b""
    path = w.root / f".{name}.tmp"
    with h5py.File(path, "w") as f:
        build(f)
    data = path.read_bytes()
    path.unlink()
    return data


def _models(w: _Writer, keras_models: bool) -> None:
    marker = str(w.root / f"{MARKER_PREFIX}pickle")
    p4 = pickle.dumps(RunCommand(f"touch {shlex.quote(marker)}"), protocol=4)
    p0 = pickle.dumps(OpenFile(marker + "_p0"), protocol=0)
    w.model("empty.keras", b"", "error", r"model file is empty \(0 bytes\)")
    w.model("model.pkl", p4, "error", r"pickle files are refused", note="pickle running a command")
    w.model("pickle.keras", p4, "error", r"pickle files are refused", note="pickle named .keras")
    w.model("pickle.h5", p4, "error", r"pickle files are refused", note="pickle named .h5")
    w.model("pickle_p0.keras", p0, "error", r"not a Keras 3 model",
            note="protocol-0 pickle (no magic) named .keras")
    w.model("pickle_p0.h5", p0, "error", r"not an HDF5 file", note="protocol-0 pickle named .h5")
    w.model("text.h5", b"this is not hdf5\n", "error", r"not an HDF5 file")
    w.model("model.onnx", b"\x08\x07\x12\x04onnx", "error",
            r"not an ONNX model \(the graph has no nodes\); accepted: a \.onnx file",
            note="a protobuf header (IR 7, producer 'onnx') with no graph")
    w.model("noise.onnx", bytes(range(256)) * 4, "error", r"not an ONNX model",
            note="bytes that are no protobuf")
    w.model("model.pt", b"PK\x03\x04torch", "error",
            r"not a model file; accepted: .*\.onnx", note="a PyTorch checkpoint: unsupported")
    w.model("not_a_model.keras", zip_bytes([("hello.txt", b"hi")]), "error",
            r"not a Keras 3 model: the archive has no config\.json",
            note="a zip without config.json")
    w.model("weights_only.h5",
            _h5_bytes(w, "weights_only", lambda f: f.create_dataset("w", data=np.zeros(3))),
            "error", r"holds weights only \(no model config\); give its architecture too: "
            r"--model arch.json --weights", note="HDF5 without a model config")
    w.model("config_not_json.h5",
            _h5_bytes(w, "nj", lambda f: f.attrs.__setitem__("model_config", "{nope")),
            "error", r"config is not valid JSON", note="HDF5 model_config that is not JSON")
    w.model("config_deep.h5",
            _h5_bytes(w, "deep",
                      lambda f: f.attrs.__setitem__("model_config", "[" * 100_000)),
            "error", r"HDF5 model config is not valid JSON \(too deeply nested\)",
            note="HDF5 model_config nested 100000 deep (recursion)")
    w.model("config_array.h5",
            _h5_bytes(w, "arr",
                      lambda f: f.attrs.__setitem__("model_config", np.array([1, 2, 3]))),
            "error", r"HDF5 model config is not a JSON string \(found ndarray\)",
            note="HDF5 model_config that is an array, not a string")
    lam = {"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Lambda", "config": {"function": ["4wEAAAAAAAAA", None, None],
                                            "function_type": "lambda"}}]}}
    w.model("lambda_config.h5",
            _h5_bytes(w, "lam",
                      lambda f: f.attrs.__setitem__("model_config", json.dumps(lam))),
            "error", r"refused: .*Lambda", note="hand-written legacy config with a Lambda")
    os_cfg = {"module": "os", "class_name": "system", "config": {"command": f"touch {marker}"},
              "registered_name": "system"}
    w.model("os_system.keras", zip_bytes([("config.json", json.dumps(os_cfg).encode()),
                                          ("metadata.json", b"{}")]),
            "error", r"refused: .*system \(module os\)",
            note=".keras whose config.json names os.system")
    w.model("config_bomb.keras",
            lambda: zip_bytes([("config.json", b"{" + b" " * ((32 << 20) - 2) + b"}")]),
            "error", r"member 'config\.json' has compression ratio .*zip bomb",
            note=".keras whose config.json inflates to 32 MiB")
    deep = "[" * 100_000 + "]" * 100_000
    # stored, not deflated: this case is about the nesting, not the compression ratio
    w.model("config_deep.keras", zip_bytes([("config.json", deep.encode())], zipfile.ZIP_STORED),
            "error",
            r"config\.json is not valid JSON \(too deeply nested\)",
            note="deeply nested config.json")
    if keras_models:
        _keras_models(w, marker)


def _keras_models(w: _Writer, marker: str) -> None:
    """Real (tiny) Keras models: some fine, some mislabelled, some with hostile configs."""
    keras_bytes, h5_bytes = _tiny_models(w)
    _keras_cases(w, marker, keras_bytes, h5_bytes)


def _tiny_models(w: _Writer) -> tuple[bytes, bytes]:
    """A tiny valid U-Net-like model saved as .keras and as legacy .h5."""
    if w.dry:
        return b"", b""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 1), name="image")
    x = keras.layers.Conv2D(2, 3, padding="same", activation="relu")(inp)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.UpSampling2D(2)(x)
    out = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    model = keras.Model(inp, out, name="tiny")
    tmp = w.root / ".build"
    tmp.mkdir(exist_ok=True)
    model.save(tmp / "tiny.keras")
    model.save(tmp / "tiny.h5")
    keras_bytes = (tmp / "tiny.keras").read_bytes()
    h5_bytes = (tmp / "tiny.h5").read_bytes()
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return keras_bytes, h5_bytes


def _keras_cases(w: _Writer, marker: str, keras_bytes: bytes, h5_bytes: bytes) -> None:

    w.model("tiny.keras", keras_bytes, "ok", shape=(None, None), note="a valid model")
    w.model("tiny_legacy.h5", h5_bytes, "ok", shape=(None, None), note="a valid legacy model")
    w.model("SHOUT.KERAS", keras_bytes, "ok", shape=(None, None), note="upper-case extension")
    w.model("shout_legacy.H5", h5_bytes, "ok", shape=(None, None), note="upper-case .H5")
    w.model("h5_named.keras", h5_bytes, "error", r"not a Keras 3 model",
            note="an HDF5 model with a .keras extension")
    w.model("keras_named.h5", keras_bytes, "error", r"not an HDF5 file",
            note="a .keras zip with a .h5 extension")

    hostile = dup = b""
    if not w.dry:
        with zipfile.ZipFile(io.BytesIO(keras_bytes)) as zf:
            members = {i.filename: zf.read(i) for i in zf.infolist()}
        config = json.loads(members["config.json"])
        layer = config["config"]["layers"][1]
        layer.update({"module": "os", "class_name": "system", "registered_name": "system"})
        layer["config"] = {"command": f"touch {marker}_layer"}
        swapped = {**members, "config.json": json.dumps(config).encode()}
        hostile = zip_bytes(swapped.items(), zipfile.ZIP_STORED)
        top = json.dumps(os_cfg_top(marker)).encode()
        dup = _zip_allow_duplicates([*members.items(), ("config.json", top)])
    w.model("os_system_layer.keras", hostile, "error", r"refused: .*system \(module os\)",
            note="a layer of a real model swapped for os.system")
    w.model("duplicate_config.keras", dup, "error", r"duplicate members \['config\.json'\]",
            note="two config.json members (the last one is hostile)")

    w.model("bad_card.keras", keras_bytes, "error", r"bad_card\.json: .*threshold",
            names="bad_card.json", note="model card with a non-numeric threshold")
    w.file("bad_card.json", json.dumps({"threshold": "high"}).encode(), None)
    w.model("huge_card.keras", keras_bytes, "error", r"huge_card\.json: .*min_size",
            names="huge_card.json", note="model card asking to pad every image to 10^9 pixels")
    w.file("huge_card.json", json.dumps({"min_size": 1_000_000_000}).encode(), None)
    w.model("deep_card.keras", keras_bytes, "error", r"deep_card\.json: model card is not valid",
            names="deep_card.json", note="model card nested 100000 deep")
    w.file("deep_card.json", ("[" * 100_000).encode(), None)


def os_cfg_top(marker: str) -> dict:
    return {"module": "os", "class_name": "system", "config": {"command": f"touch {marker}_dup"},
            "registered_name": "system"}


def _zip_allow_duplicates(members: list[tuple[str, bytes]]) -> bytes:
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name" is the point
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return buf.getvalue()


# --------------------------------------------------------------------------- issue 16

#: a file name carrying a newline that tries to forge an ``error:`` line
FORGED_NAME = "evil\nerror: forged.png"


def _exif_bytes(arr: np.ndarray, fmt: str, orientation: int, **kw: object) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return _pil_bytes(arr, fmt, exif=exif.tobytes(), **kw)


def _png_with_chunk(arr: np.ndarray, kind: bytes, payload: bytes, after_idat: bool) -> bytes:
    """An 8-bit PNG with one extra chunk before IDAT or just before IEND."""
    png = _pil_bytes(arr, "PNG")
    chunk = _png_chunk(kind, payload)
    if after_idat:
        return png[:-12] + chunk + png[-12:]
    return png[:33] + chunk + png[33:]  # right after the IHDR chunk (8 + 25 bytes)


def _issue16(w: _Writer) -> None:
    # EXIF / TIFF orientation, applied to images and masks alike
    land = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))  # 48x64 stored, a gradient
    w.image("exif_orient6.jpg", _exif_bytes(land, "JPEG", 6, quality=95), "ok", shape=(64, 48),
            note="JPEG with EXIF orientation 6 (rotate 90 CW): read upright, 64x48")
    small = w.noise(6, 10)
    w.image("exif_orient8.png", _exif_bytes(small, "PNG", 8), "ok", shape=(10, 6),
            note="PNG eXIf orientation 8 (rotate 90 CCW)")
    w.image("tiff_orient6.tif", lambda: _tiff_orient(w.noise(4, 7), 6), "ok", shape=(7, 4),
            note="TIFF Orientation tag 6")
    pattern = np.zeros((48, 64), np.uint8)
    pattern[:10, :20] = 255  # top-left block of the stored (landscape) mask
    upright6 = np.rot90(pattern, -1)  # what orientation 6 shows
    w.dataset("pair_exif_portrait", {"a.jpg": _exif_bytes(land, "JPEG", 6, quality=95)},
              {"a.png": _gray_png(np.ascontiguousarray(upright6))}, "ok", shape=(64, 48),
              expected_mask=(upright6 == 255).tolist(),
              note="portrait camera JPEG (stored landscape, EXIF 6) + upright PNG mask")
    upright8 = np.rot90(pattern, 1)
    w.dataset("pair_exif_both", {"a.jpg": _exif_bytes(land, "JPEG", 8, quality=95)},
              {"a.png": _exif_bytes(pattern, "PNG", 8)}, "ok", shape=(64, 48),
              expected_mask=(upright8 == 255).tolist(),
              note="image and mask both stored landscape with EXIF orientation 8")
    # a 16-bit mask holding 0/255: foreground is 255 (binarise_mask's two-level rule)
    m16 = np.zeros((4, 5), np.uint16)
    m16[1:3, 1:4] = 255
    w.dataset("pair_mask_16bit_0_255", {"a.png": _gray_png(w.noise(4, 5))},
              {"a.png": _pil_bytes(m16, "PNG")}, "ok", shape=(4, 5),
              expected_mask=(m16 == 255).tolist(), note="16-bit PNG mask with values 0/255")
    # valid PNGs with a metadata chunk that decompresses past PIL's 1 MB text limit
    flat = np.full((8, 8), 51, np.uint8)
    big = deflate_bomb(8 << 20)
    for name, kind, payload, after in (
        ("big_iccp.png", b"iCCP", b"profile\x00\x00" + big, False),
        ("big_ztxt.png", b"zTXt", b"Comment\x00\x00" + big, False),
        ("big_itxt.png", b"iTXt", b"Comment\x00\x01\x00\x00\x00" + big, False),
        ("big_ztxt_after_idat.png", b"zTXt", b"Comment\x00\x00" + big, True),
    ):
        w.image(name, _png_with_chunk(flat, kind, payload, after), "ok", shape=(8, 8),
                value=51 / 255, note=f"{kind.decode()} chunk inflating to 8 MB: pixels read")
    # names with control characters are escaped in messages (no forged lines)
    w.image(FORGED_NAME, b"not an image", "error",
            r"^evil\\nerror: forged\.png: not a readable image", names="evil\\nerror: forged.png",
            note="newline in a file name: shown escaped, one line")
    img = _gray_png(w.noise(8, 8))
    mask = _gray_png(((w.noise(8, 8) > 127) * 255).astype(np.uint8))
    w.zip("dup_member.zip",
          _zip_allow_duplicates([("images/a.png", img), ("masks/a.png", mask),
                                 ("images/a.png", img)]),
          "error", r"dup_member\.zip: zip holds member 'images/a\.png' more than once",
          note="the same member name twice: reported as a duplicate")
    w.zip("ctrl_member.zip",
          zip_bytes([("images/a.png", img), ("masks/a.png", mask),
                     ("images/b\n\x1b[31m.png", b"text"), ("masks/b\n\x1b[31m.png", mask)]),
          "error", r"images/b\\n\\x1b\[31m\.png: not a readable image",
          error="ImageReadError", names="images/b\\n\\x1b[31m.png",
          note="zip member name with a newline and an ANSI escape")


def _tiff_orient(arr: np.ndarray, orientation: int) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, extratags=[(274, "H", 1, orientation, True)])
    return buf.getvalue()


def list_cases(*, keras_models: bool = True) -> list[CorpusCase]:
    """The cases :func:`build_corpus` writes, without writing anything (for test ids)."""
    w = _Writer(Path("corpus"), dry=True)
    _images(w)
    _masks(w)
    _zips(w)
    _issue16(w)
    _models(w, keras_models)
    return w.cases


def build_corpus(out_dir: str | os.PathLike, *, keras_models: bool = True) -> list[CorpusCase]:
    """Write every corpus file into ``out_dir`` (created) and return the cases.

    Args:
        out_dir: destination folder; use a temporary folder.
        keras_models: also build the cases that need Keras (real tiny models).

    Returns:
        The cases, in a stable order; ``out_dir/manifest.json`` lists them too.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    w = _Writer(root)
    _images(w)
    _masks(w)
    _zips(w)
    _issue16(w)
    _models(w, keras_models)
    names = [c.id for c in w.cases]
    if len(names) != len(set(names)):
        raise RuntimeError("duplicate corpus case names")
    manifest = [asdict(c) for c in w.cases]
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    return w.cases


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python tests/corpus/make_corpus.py OUT_DIR", file=sys.stderr)
        return 2
    cases = build_corpus(args[0])
    by_kind = {k: sum(c.kind == k for c in cases) for k in KINDS}
    print(f"wrote {len(cases)} cases to {args[0]}: {by_kind}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
