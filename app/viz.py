"""Pure display helpers: image compositing (numpy) and Plotly figures. No Streamlit here.

Everything that is shown is derived from the engine's arrays; nothing here changes values that
are scored. Large arrays are decimated (every k-th pixel) *for display only*; callers say so
(:func:`stride_phrase` words it: "every 2nd pixel").

Images over figures: a probability or activation map coloured here (:func:`colormap_rgb`,
:func:`grid_rgb`, with :func:`colorbar_png` as their legend) is sent as one small PNG, where a
Plotly heatmap sends every value as JSON text.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont
from plotly.colors import get_colorscale
from plotly.subplots import make_subplots

RGB = tuple[int, int, int]

# Colour-blind-safe (Okabe-Ito) colours.
SKY_BLUE: RGB = (86, 180, 233)
YELLOW: RGB = (240, 228, 66)
BLUE: RGB = (0, 114, 178)
ORANGE: RGB = (230, 159, 0)
GREEN: RGB = (0, 158, 115)  # bluish green
VERMILLION: RGB = (213, 94, 0)
PURPLE: RGB = (204, 121, 167)  # reddish purple
BLACK: RGB = (0, 0, 0)
WHITE: RGB = (255, 255, 255)
COLOR_NAMES: dict[RGB, str] = {
    SKY_BLUE: "sky blue", YELLOW: "yellow", BLUE: "blue", ORANGE: "orange", GREEN: "green",
    VERMILLION: "vermillion", PURPLE: "purple", BLACK: "black", WHITE: "white",
}

# Error map and the historical defaults of the overlays.
TP_COLOR = GREEN  # predicted and true
FP_COLOR = ORANGE  # predicted, not true
FN_COLOR = PURPLE  # true, missed
MASK_COLOR = BLUE  # a fixed prediction colour (overlays now choose one by contrast)
TRUTH_COLOR = YELLOW  # a fixed truth colour (overlays now choose one by contrast)

# Overlay colours, tried in this order as (prediction, truth): both members are told apart by
# colour-blind readers (different hue AND lightness). Black / white replace a member whose
# luminance contrast with the image is below PAIR_MIN_CONTRAST (last resort).
OVERLAY_PAIRS: tuple[tuple[RGB, RGB], ...] = ((SKY_BLUE, YELLOW), (BLUE, ORANGE))
CONTRAST_COLORS: tuple[RGB, ...] = (SKY_BLUE, YELLOW, BLUE, ORANGE)
MIN_CONTRAST = 3.0  # WCAG 2.1 minimum for graphics, for contrast_color's coloured choices
PAIR_MIN_CONTRAST = 1.5  # overlay lines are saturated and opaque: hue helps beyond luminance

# Curves: colour AND dash per series, so they read apart without colour.
SERIES_COLORS: tuple[RGB, ...] = (BLUE, PURPLE, SKY_BLUE, ORANGE, GREEN)
SERIES_DASHES: tuple[str, ...] = ("solid", "dash", "dot", "dashdot", "longdash")

TITLE_MAX_CHARS = 48
MARGIN = {"l": 4, "r": 4, "t": 30, "b": 4}
GRAY = [[0.0, "rgb(0,0,0)"], [1.0, "rgb(255,255,255)"]]


# --------------------------------------------------------------------------- wording


def ordinal(n: int) -> str:
    """'1st', '2nd', '3rd', '4th', '11th', '12th', '13th', '21st', '102nd' ..."""
    n = int(n)
    tail = abs(n) % 100
    suffix = "th" if 11 <= tail <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(tail % 10, "th")
    return f"{n}{suffix}"


def stride_phrase(k: int, noun: str = "pixel") -> str:
    """'every pixel' (k <= 1) or 'every 2nd pixel', 'every 3rd pixel' ..."""
    k = int(k)
    return f"every {noun}" if k <= 1 else f"every {ordinal(k)} {noun}"


def fit_title(text: str, max_chars: int = TITLE_MAX_CHARS, *, keep_end: bool = True) -> str:
    """``text`` cut to at most ``max_chars`` characters with an ellipsis '…'.

    ``keep_end`` (default) cuts in the middle, so both the start and the end survive
    ('very_long_file_na…png: IoU vs threshold'); otherwise the end is cut.
    """
    text = " ".join(str(text).split())
    if len(text) <= max_chars:
        return text
    if max_chars <= 1:
        return "…"[:max(max_chars, 0)]
    if not keep_end:
        return text[: max_chars - 1].rstrip() + "…"
    head = (max_chars - 1) // 2
    tail = max_chars - 1 - head
    return text[:head] + "…" + text[len(text) - tail:]


def color_name(color: Sequence[int]) -> str:
    """'sky blue' for a colour of this module's palette, else '#rrggbb'."""
    rgb = tuple(int(c) for c in color[:3])
    return COLOR_NAMES.get(rgb, rgb_hex(rgb))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- arrays


def safe_colorscale(name: str) -> list[list]:
    """A named Plotly colour scale as an explicit list, safe from Streamlit's theming.

    Streamlit's chart theme rewrites the placeholder colours '#000001' ... '#000010' in a
    figure to theme colours, and Inferno / Magma start at '#000004' (black would turn pink).
    Such stops are nudged to a visually identical colour.
    """
    stops = [[float(pos), str(color)] for pos, color in get_colorscale(name)]
    for stop in stops:
        if stop[1].lower().startswith("#0000") and stop[1][5:].isdigit():
            stop[1] = "#010106"
    return stops


def rgb_hex(color: tuple[int, int, int]) -> str:
    """'#rrggbb' of an (r, g, b) tuple."""
    return "#{:02x}{:02x}{:02x}".format(*color)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] (H, W[, C]) -> uint8, rounded and clipped."""
    return np.rint(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * 255).astype(np.uint8)


def display_stride(shape: Sequence[int], max_side: int) -> int:
    """Smallest integer step k such that shape[:2] // k fits in ``max_side`` pixels."""
    side = max(int(shape[0]), int(shape[1]), 1)
    return max(1, -(-side // max_side))


def decimate(array: np.ndarray, max_side: int) -> tuple[np.ndarray, int]:
    """Every k-th row/column so the array fits in ``max_side`` (display only); returns (view, k)."""
    k = display_stride(array.shape, max_side)
    return (array[::k, ::k] if k > 1 else array), k


def png_bytes(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W), (H, W, 3) or (H, W, 4) array."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def mask_png_bytes(mask: np.ndarray) -> bytes:
    """8-bit grayscale PNG with 0 (background) and 255 (foreground) of a bool mask."""
    return png_bytes(np.asarray(mask, dtype=bool).astype(np.uint8) * np.uint8(255))


def label_png_bytes(labels: np.ndarray) -> bytes:
    """Palette PNG of a label map (class indices 0..255): pixel value = class index, coloured
    by :func:`label_colors` (the same file as :func:`unet_core.io.write_label_png`)."""
    arr = np.asarray(labels)
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette(label_colors(256).ravel().tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """``np.save`` of an array, as bytes."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def gray_to_rgb(image: np.ndarray) -> np.ndarray:
    """float [0, 1] (H, W) -> float32 (H, W, 3)."""
    g = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    return np.repeat(g[:, :, None], 3, axis=2)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A display image (float [0, 1], gray (H, W) or RGB(A) (H, W, 3|4), e.g. from
    :func:`unet_core.preprocess.display_image`) as float32 (H, W, 3): gray is repeated, colour
    kept (alpha dropped)."""
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return gray_to_rgb(arr)
    return np.clip(arr[..., :3], 0.0, 1.0)


def _erode4(mask: np.ndarray, steps: int, edge: bool) -> np.ndarray:
    """``steps`` 4-neighbourhood erosions; ``edge``: value of the pixels beyond the image."""
    inner = np.asarray(mask, dtype=bool)
    for _ in range(steps):
        p = np.pad(inner, 1, mode="constant", constant_values=edge)
        inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return inner


def _dilate4(mask: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` 4-neighbourhood dilations (a diamond of radius ``steps``)."""
    out = np.asarray(mask, dtype=bool)
    for _ in range(steps):
        p = np.pad(out, 1, mode="constant", constant_values=False)
        out = p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
    return out


def boundary(mask: np.ndarray, thickness: int = 1, *, side: str = "inner",
             image_edge: bool = True) -> np.ndarray:
    """Pixels along the edge of a bool mask (4-neighbourhood), ``thickness`` wide.

    ``side="inner"``: mask pixels within ``thickness`` steps of the background;
    ``side="outer"``: background pixels within ``thickness`` steps of the mask.
    ``image_edge`` (inner only): whether the border of the image counts as background, i.e.
    a mask that touches the border is outlined along it.
    """
    m = np.asarray(mask, dtype=bool)
    steps = max(1, int(thickness))
    if side == "outer":
        return _dilate4(m, steps) & ~m
    if side != "inner":
        raise ValueError(f"side must be 'inner' or 'outer', not {side!r}")
    return m & ~_erode4(m, steps, edge=not image_edge)


def blend(base: np.ndarray, where: np.ndarray, color: tuple[int, int, int], alpha: float
          ) -> np.ndarray:
    """Blend ``color`` into float RGB ``base`` where the bool ``where`` is set (returns a copy)."""
    out = np.array(base, dtype=np.float32, copy=True)
    c = np.asarray(color, dtype=np.float32) / 255.0
    a = np.float32(np.clip(alpha, 0.0, 1.0))
    w = np.asarray(where, dtype=bool)
    if w.shape == out.shape[:2] and out.ndim == 3:  # whole-array arithmetic beats fancy indexing
        mixed = c if a == 1.0 else (1.0 - a) * out + a * c
        np.copyto(out, mixed, where=w[:, :, None])
    else:
        out[w] = (1.0 - a) * out[w] + a * c
    return out


# --------------------------------------------------------------------------- contrast


def _linear(srgb: np.ndarray) -> np.ndarray:
    """sRGB values in [0, 1] -> linear light."""
    v = np.clip(np.asarray(srgb, dtype=np.float64), 0.0, 1.0)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def luminance(image: np.ndarray) -> np.ndarray:
    """Relative luminance (WCAG, 0 = black, 1 = white) of a gray (H, W) or RGB (H, W, 3) image.

    Float images are read as [0, 1]; integer images as 0 … 255.
    """
    arr = np.asarray(image)
    scale = 255.0 if np.issubdtype(arr.dtype, np.integer) else 1.0
    v = arr.astype(np.float64) / scale
    if v.ndim == 3:
        lin = _linear(v[..., :3])
        return lin @ np.array([0.2126, 0.7152, 0.0722])
    return _linear(v)


def _color_luminance(color: Sequence[int]) -> float:
    return float(luminance(np.asarray([[color[:3]]], dtype=np.uint8))[0, 0])


def contrast_ratio(lum_a: float, lum_b: float) -> float:
    """WCAG contrast ratio (1 … 21) of two relative luminances."""
    hi, lo = max(lum_a, lum_b), min(lum_a, lum_b)
    return (hi + 0.05) / (lo + 0.05)


def mean_luminance(image: np.ndarray, where: np.ndarray | None = None) -> float:
    """Mean relative luminance of ``image`` over the bool ``where`` (the whole image if None
    or empty); 0.5 gray's luminance for an image without finite pixels."""
    arr = np.asarray(image)
    if where is not None:
        w = np.asarray(where, dtype=bool)
        if w.shape == arr.shape[:2] and w.any():
            arr = arr[w][None]  # (1, n[, C]): only the pixels that count
    lum = luminance(arr)
    finite = lum[np.isfinite(lum)]
    return float(finite.mean()) if finite.size else 0.214


def contrast_color(image: np.ndarray, where: np.ndarray | None = None, *,
                   candidates: Sequence[RGB] = CONTRAST_COLORS,
                   min_contrast: float = MIN_CONTRAST) -> RGB:
    """The colour-blind-safe colour that stands out most against ``image``.

    Of ``candidates`` (Okabe-Ito sky blue, yellow, blue, orange), the one with the greatest
    luminance contrast against the image's mean luminance over ``where`` (e.g. a band around a
    mask's edge; the whole image if None). Black or white, as a last resort, when no candidate
    reaches ``min_contrast`` and one of them does better.
    """
    lum = mean_luminance(image, where)
    scored = sorted(((contrast_ratio(_color_luminance(c), lum), i, c)
                     for i, c in enumerate(candidates)), key=lambda s: (-s[0], s[1]))
    best_ratio, _, best = scored[0] if scored else (0.0, 0, BLACK)
    if best_ratio >= min_contrast:
        return tuple(int(v) for v in best)  # type: ignore[return-value]
    bw = max((WHITE, BLACK), key=lambda c: contrast_ratio(_color_luminance(c), lum))
    return bw if contrast_ratio(_color_luminance(bw), lum) > best_ratio else best


def edge_band(*masks: np.ndarray | None, width: int = 3) -> np.ndarray | None:
    """Pixels within ``width`` steps of the edge of any of ``masks`` (None if there is none)."""
    band = None
    for m in masks:
        if m is None:
            continue
        b = _dilate4(boundary(m, 1, image_edge=False), width)
        band = b if band is None else band | b
    return band if band is not None and band.any() else None


def overlay_colors(image: np.ndarray, mask: np.ndarray | None = None,
                   truth: np.ndarray | None = None) -> dict[str, RGB]:
    """The two colours the overlays use here: ``{"pred": (r, g, b), "truth": (r, g, b)}``.

    Chosen against the image's mean luminance near the edges of ``mask`` and ``truth`` (the
    whole image when they have none): the first pair of :data:`OVERLAY_PAIRS` (sky blue /
    yellow, then blue / orange) whose members both contrast with it; a member that does not is
    replaced by black or white. The two colours always differ. Call it with the same arrays as
    :func:`overlay_rgb` / :func:`thumbnail_rgb` to write a legend (see :func:`overlay_legend`).
    """
    lum = mean_luminance(image, edge_band(mask, truth))
    bw = sorted((WHITE, BLACK), key=lambda c: -contrast_ratio(_color_luminance(c), lum))
    best: tuple[tuple[int, float], RGB, RGB] | None = None
    for pred_c, truth_c in OVERLAY_PAIRS:
        chosen, subs = [], 0
        for c in (pred_c, truth_c):
            if contrast_ratio(_color_luminance(c), lum) < PAIR_MIN_CONTRAST:
                c, subs = bw[0], subs + 1
            chosen.append(c)
        if chosen[0] == chosen[1]:  # both replaced: black and white
            chosen[1] = bw[1]
        worst = min(contrast_ratio(_color_luminance(c), lum) for c in chosen)
        key = (subs, -worst)
        if best is None or key < best[0]:
            best = ((subs, -worst), chosen[0], chosen[1])  # type: ignore[assignment]
    assert best is not None
    return {"pred": best[1], "truth": best[2]}


def overlay_legend(colors: dict[str, RGB], *, style: str = "Fill", truth: bool = True,
                   thumbnail: bool = False) -> str:
    """A caption naming the colours of :func:`overlay_colors`, e.g.
    'sky blue = predicted mask (filled, outlined inside) · yellow = true mask (outlined
    outside)'."""
    pred = color_name(colors["pred"])
    if thumbnail or style == "Contour":
        text = f"{pred} = predicted mask (outlined inside)"
    else:
        text = f"{pred} = predicted mask (filled, outlined inside)"
    if truth:
        text += f" · {color_name(colors['truth'])} = true mask (outlined outside)"
        if thumbnail:
            text += ("; tinted: false alarms (prediction's colour) and misses (truth's "
                     "colour)")
    return text


def outline_legend(colors: dict[str, RGB] | None = None, *, errors: bool = True) -> str:
    """The caption of :func:`thumbnail_rgb` images. With ``colors`` (what the thumbnail used),
    their names; without, the usual pair for a grid of thumbnails whose colours follow each
    image ('prediction: sky blue (blue on bright images), inside its edge · …')."""
    if colors is None:
        pred, truth = "sky blue (blue on bright images)", "yellow (orange on bright images)"
    else:
        pred, truth = color_name(colors["pred"]), color_name(colors["truth"])
    text = f"prediction: {pred}, inside its edge · truth: {truth}, outside its edge"
    return text + (" · tinted: errors" if errors else "")


# --------------------------------------------------------------------------- composites


def _upscale(array: np.ndarray | None, factor: int) -> np.ndarray | None:
    if array is None or factor <= 1:
        return array
    return np.repeat(np.repeat(np.asarray(array), factor, axis=0), factor, axis=1)


def _enlarge_factor(shape: Sequence[int], min_side: int) -> int:
    """Smallest integer factor that makes the longer of shape[:2] at least ``min_side``."""
    side = max(int(shape[0]), int(shape[1]), 1)
    return max(1, -(-int(min_side) // side)) if min_side else 1


def upscale_nearest(array: np.ndarray, min_side: int) -> np.ndarray:
    """``array`` (H, W[, C]) enlarged by the smallest integer factor (nearest neighbour: each
    value becomes a k x k block) that makes its longer side at least ``min_side``; unchanged if
    it already is. For showing small maps (an 8x8 activation, a 3x3 kernel) with ``st.image``
    without the browser blurring them."""
    out = _upscale(np.asarray(array), _enlarge_factor(np.shape(array), min_side))
    assert out is not None
    return out


def _check_shape(name: str, array: np.ndarray | None, shape: tuple[int, ...]) -> None:
    if array is not None and np.shape(array)[:2] != shape[:2]:
        raise ValueError(f"{name} is {np.shape(array)[:2]}, the image {shape[:2]}: "
                         "decimate both with the same stride")


def overlay_rgb(image: np.ndarray, mask: np.ndarray, style: str = "Fill", opacity: float = 0.45,
                color: tuple[int, int, int] | None = None, *, truth: np.ndarray | None = None,
                truth_color: tuple[int, int, int] | None = None, thickness: int = 2,
                min_side: int = 0) -> np.ndarray:
    """uint8 RGB: the image (gray or colour, float [0, 1]) with the predicted mask and, if
    given, the true mask's outline.

    ``style="Fill"``: the mask blended at ``opacity``, plus its outline (``thickness`` px,
    inside the mask) at full opacity so its edges stay visible; ``"Contour"``: the outline
    only, at full opacity. ``truth``: outlined ``thickness`` px *outside* the true mask in a
    second colour, so where prediction and truth agree both lines show side by side.

    Colours: ``color`` / ``truth_color``, or (None) those of :func:`overlay_colors` (same
    arguments) which contrast with the image. ``min_side``: an image smaller than this is first
    enlarged by the smallest integer factor (nearest neighbour) that makes its longer side at
    least ``min_side``, so the lines stay thin on screen when a small image is shown stretched.
    The image borders are not outlined.
    """
    img = np.asarray(image)
    m = np.asarray(mask, dtype=bool)
    _check_shape("mask", m, img.shape)
    t = None if truth is None else np.asarray(truth, dtype=bool)
    _check_shape("truth", t, img.shape)
    if color is None or (t is not None and truth_color is None):
        auto = overlay_colors(img, m, t)
        color = auto["pred"] if color is None else color
        truth_color = auto["truth"] if truth_color is None else truth_color
    factor = _enlarge_factor(img.shape, min_side)
    img, m, t = _upscale(img, factor), _upscale(m, factor), _upscale(t, factor)
    base = as_rgb(img)
    if style != "Contour":
        base = blend(base, m, color, opacity)
    base = blend(base, boundary(m, thickness, image_edge=False), color, 1.0)
    if t is not None:
        base = blend(base, boundary(t, thickness, side="outer"), truth_color, 1.0)  # type: ignore[arg-type]
    return to_uint8(base)


def thumbnail_rgb(image: np.ndarray, pred: np.ndarray | None, truth: np.ndarray | None,
                  max_side: int = 160, *, errors: bool = True, thickness: int = 2,
                  colors: dict[str, RGB] | None = None) -> np.ndarray:
    """uint8 (h, w, 3) thumbnail: every k-th pixel (integer k) so it fits ``max_side``, with the
    predicted mask outlined inside and the true mask outlined outside, in two colours
    (:func:`overlay_colors` of the thumbnail, or ``colors``). ``errors``: false alarms lightly
    tinted in the prediction's colour, misses in the truth's. A small image is enlarged by an
    integer factor while it stays within ``max_side``. Display only.
    """
    img = np.asarray(image)
    _check_shape("pred", pred, img.shape)
    _check_shape("truth", truth, img.shape)
    k = display_stride(img.shape, max_side)
    small = img[::k, ::k]
    p = None if pred is None else np.asarray(pred, dtype=bool)[::k, ::k]
    t = None if truth is None else np.asarray(truth, dtype=bool)[::k, ::k]
    factor = max(1, int(max_side) // max(small.shape[0], small.shape[1], 1))
    small, p, t = _upscale(small, factor), _upscale(p, factor), _upscale(t, factor)
    cols = colors or overlay_colors(small, p, t)
    rgb = as_rgb(small)
    if errors and p is not None and t is not None:
        rgb = blend(rgb, p & ~t, cols["pred"], 0.3)
        rgb = blend(rgb, t & ~p, cols["truth"], 0.3)
    if p is not None:
        rgb = blend(rgb, boundary(p, thickness, image_edge=False), cols["pred"], 1.0)
    if t is not None:
        rgb = blend(rgb, boundary(t, thickness, side="outer"), cols["truth"], 1.0)
    return to_uint8(rgb)


def error_map_rgb(image: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """uint8 RGB: TP / FP / FN pixels in three colours over the dimmed image (TN; gray or
    colour)."""
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    out = as_rgb(image) * 0.55
    for where, color in ((p & t, TP_COLOR), (p & ~t, FP_COLOR), (~p & t, FN_COLOR)):
        out[where] = np.asarray(color, dtype=np.float32) / 255.0
    return to_uint8(out)


def nearest_upsample(cropped: np.ndarray, box_top: int, box_left: int, height: int, width: int,
                     map_shape: Sequence[int], padded_shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour upsampling of a cropped activation map to the image's (H, W).

    ``cropped`` is what :func:`unet_core.introspect.crop_activation` returned for a map of
    ``map_shape`` (h, w) computed on a padded input of ``padded_shape`` (Hp, Wp) whose image
    sits at (box_top, box_left). Each image pixel takes the value of the map cell covering it.
    For display only.
    """
    h, w = int(map_shape[0]), int(map_shape[1])
    hp, wp = int(padded_shape[0]), int(padded_shape[1])
    r0 = (box_top * h) // hp
    c0 = (box_left * w) // wp
    rows = ((np.arange(height) + box_top) * h) // hp - r0
    cols = ((np.arange(width) + box_left) * w) // wp - c0
    rows = np.clip(rows, 0, cropped.shape[0] - 1)
    cols = np.clip(cols, 0, cropped.shape[1] - 1)
    return cropped[np.ix_(rows, cols)]


def resize_nearest(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``array`` (h, w[, C]) resized to ``shape`` (H, W) by nearest neighbour: each output
    pixel takes the value of the input cell covering it. For display only."""
    h, w = array.shape[:2]
    rows = np.minimum((np.arange(int(shape[0])) * h) // max(1, int(shape[0])), h - 1)
    cols = np.minimum((np.arange(int(shape[1])) * w) // max(1, int(shape[1])), w - 1)
    return array[np.ix_(rows, cols)]


# --------------------------------------------------------------------------- label maps


def label_colors(n_classes: int) -> np.ndarray:
    """uint8 (n, 3): the colour of each class 0..n-1, those of the label PNGs the engine
    writes (:func:`unet_core.io.label_palette`: class 0 black, then red, green, yellow, ...)."""
    from unet_core.io import label_palette

    return label_palette(max(1, int(n_classes)))


def label_color_name(index: int) -> str:
    """The name of class ``index``'s colour ('black', 'red', …; '#rrggbb' past the list)."""
    from unet_core.io import label_colour_name

    return label_colour_name(int(index))


def label_rgb(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """uint8 (H, W, 3): a label map (class indices 0..n-1) in the classes' colours."""
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {lab.shape}")
    lut = label_colors(max(int(n_classes), int(lab.max(initial=0)) + 1))
    return lut[lab.astype(np.intp)]


def label_edges(labels: np.ndarray) -> np.ndarray:
    """bool (H, W): pixels whose right or lower neighbour has another class (4-neighbourhood,
    one pixel wide); the image border is not an edge."""
    lab = np.asarray(labels)
    out = np.zeros(lab.shape, dtype=bool)
    out[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    out[:-1, :] |= lab[:-1, :] != lab[1:, :]
    return out


def label_overlay_rgb(image: np.ndarray, labels: np.ndarray, n_classes: int,
                      alpha: float = 0.5) -> np.ndarray:
    """uint8 (H, W, 3): the class colours blended over a display image (float [0, 1], gray
    or RGB) at ``alpha``."""
    base = as_rgb(image)
    colours = label_rgb(labels, n_classes).astype(np.float32) / 255.0
    a = np.float32(np.clip(alpha, 0.0, 1.0))
    return to_uint8((1.0 - a) * base + a * colours)


def label_thumbnail_rgb(image: np.ndarray, labels: np.ndarray, truth: np.ndarray | None,
                        n_classes: int, max_side: int = 160) -> np.ndarray:
    """uint8 (h, w, 3) thumbnail (every k-th pixel, a small image enlarged by an integer
    factor): the predicted classes blended over the image at 50 %, and the edges between the
    *true* classes (``truth``, class indices) in white. Display only."""
    img = np.asarray(image)
    _check_shape("labels", labels, img.shape)
    _check_shape("truth", truth, img.shape)
    k = display_stride(img.shape, max_side)
    small, lab = img[::k, ::k], np.asarray(labels)[::k, ::k]
    tru = None if truth is None else np.asarray(truth)[::k, ::k]
    factor = max(1, int(max_side) // max(small.shape[0], small.shape[1], 1))
    small, lab, tru = _upscale(small, factor), _upscale(lab, factor), _upscale(tru, factor)
    out = label_overlay_rgb(small, lab, n_classes, 0.5)
    if tru is not None:
        out[label_edges(tru)] = WHITE
    return out


# --------------------------------------------------------------------------- colour maps


def _parse_color(text: str) -> tuple[float, float, float]:
    text = text.strip()
    if text.startswith("#"):
        h = text[1:]
        if len(h) == 3:
            h = "".join(ch * 2 for ch in h)
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    nums = re.findall(r"[-+]?\d*\.?\d+", text)
    if len(nums) < 3:
        raise ValueError(f"not a colour: {text!r}")
    return float(nums[0]), float(nums[1]), float(nums[2])


@lru_cache(maxsize=32)
def colormap_lut(cmap: str = "viridis") -> np.ndarray:
    """(256, 3) uint8 lookup table of a colour map: 'viridis', 'inferno', 'gray' (black to
    white), or any Plotly colour scale name ('RdBu_r', 'Magma', …), interpolated linearly
    between its stops. Read-only."""
    name = cmap.strip()
    if name.lower() in ("gray", "grey", "gray_r", "grey_r"):
        ramp = np.arange(256, dtype=np.uint8)
        lut = np.repeat(ramp[:, None], 3, axis=1)
        lut = lut[::-1].copy() if name.lower().endswith("_r") else lut
    else:
        try:
            stops = get_colorscale(name)
        except Exception as exc:  # plotly raises PlotlyError for unknown names
            raise ValueError(f"unknown colour map {cmap!r}") from exc
        pos = np.array([float(p) for p, _ in stops])
        cols = np.array([_parse_color(str(c)) for _, c in stops], dtype=np.float64)
        x = np.linspace(0.0, 1.0, 256)
        lut = np.stack([np.interp(x, pos, cols[:, i]) for i in range(3)], axis=1)
        lut = np.rint(np.clip(lut, 0, 255)).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def _value_range(values: np.ndarray, vmin: float | None, vmax: float | None
                 ) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    lo = float(vmin) if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    return lo, hi


def colormap_rgb(values: np.ndarray, vmin: float | None = None, vmax: float | None = None,
                 cmap: str = "viridis", *, nan_color: RGB = (128, 128, 128)) -> np.ndarray:
    """uint8 (H, W, 3): a 2-D array coloured through a 256-entry lookup table.

    ``vmin`` -> the map's first colour, ``vmax`` -> its last, clipped outside (the data's
    finite min / max when None; a flat range gives the first colour). NaN / inf -> ``nan_color``.
    Pure numpy: show it with ``st.image`` instead of sending a heatmap's numbers.
    """
    v = np.asarray(values, dtype=np.float64)
    lo, hi = _value_range(v, vmin, vmax)
    lut = colormap_lut(cmap)
    finite = np.isfinite(v)
    scaled = (np.where(finite, v, lo) - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    idx = np.rint(np.clip(scaled, 0.0, 1.0) * 255).astype(np.intp)
    out = lut[idx]
    if not finite.all():
        out[~finite] = nan_color
    return out


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _format_value(x: float, fmt: str) -> str:
    text = format(float(x), fmt)
    return "0" if text in ("-0", "-0.0") else text


def colorbar_rgb(vmin: float, vmax: float, cmap: str = "viridis", label: str = "",
                 width: int = 320, *, bar_height: int = 12, ticks: int = 3, fmt: str = ".3g",
                 text_color: RGB = (128, 128, 128), font_size: int = 12) -> np.ndarray:
    """uint8 RGBA (h, width, 4): a horizontal colour bar with ``ticks`` values (vmin … vmax)
    under it and ``label`` centred below them; transparent background, mid-gray text (readable
    on light and dark themes). The legend of :func:`colormap_rgb` images."""
    width = max(int(width), 32)
    font = _font(font_size)
    pad = 2
    text_h = font_size + 4
    height = bar_height + pad + text_h + (text_h if label else 0)
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    ramp = colormap_lut(cmap)[np.linspace(0, 255, width).round().astype(np.intp)]
    bar = np.repeat(ramp[None, :, :], bar_height, axis=0)
    canvas.paste(Image.fromarray(np.ascontiguousarray(bar), mode="RGB"), (0, 0))
    draw = ImageDraw.Draw(canvas)
    fill = (*text_color, 255)
    n = max(2, int(ticks))
    for i in range(n):
        frac = i / (n - 1)
        x = int(round(frac * (width - 1)))
        draw.line([(x, bar_height), (x, bar_height + pad)], fill=fill)
        text = _format_value(vmin + frac * (vmax - vmin), fmt)
        tw = draw.textlength(text, font=font)
        tx = min(max(0.0, x - tw / 2), width - tw)
        draw.text((tx, bar_height + pad), text, fill=fill, font=font)
    if label:
        tw = draw.textlength(label, font=font)
        draw.text((max(0.0, (width - tw) / 2), bar_height + pad + text_h), label, fill=fill,
                  font=font)
    return np.asarray(canvas)


def colorbar_png(vmin: float, vmax: float, cmap: str = "viridis", label: str = "",
                 width: int = 320, **kwargs) -> bytes:
    """PNG bytes of :func:`colorbar_rgb` (for ``st.image`` under a colour-mapped image)."""
    return png_bytes(colorbar_rgb(vmin, vmax, cmap, label, width, **kwargs))


class GridImage(NamedTuple):
    """What :func:`grid_image` returns: the uint8 (H, W, 3) image, each tile's box
    (top, left, height, width) in it, and each tile's integer enlargement factor."""

    rgb: np.ndarray
    boxes: list[tuple[int, int, int, int]]
    scales: list[int]


def grid_rgb(tiles: Sequence[np.ndarray], cols: int, zmin: float | Sequence[float],
             zmax: float | Sequence[float], cmap: str = "viridis", tile_px: int = 96,
             gap: int = 4, **kwargs) -> np.ndarray:
    """uint8 (H, W, 3): :func:`grid_image`'s picture only (for ``st.image``); same arguments."""
    return grid_image(tiles, cols, zmin, zmax, cmap, tile_px, gap, **kwargs).rgb


def grid_image(tiles: Sequence[np.ndarray], cols: int, zmin: float | Sequence[float],
               zmax: float | Sequence[float], cmap: str = "viridis", tile_px: int = 96,
               gap: int = 4, *, titles: Sequence[str] | None = None,
               background: RGB = (255, 255, 255), text_color: RGB = (64, 64, 64),
               frame: RGB | None = (160, 160, 160),
               nan_color: RGB = (128, 128, 128)) -> GridImage:
    """Channel tiles composed into ONE uint8 image on one colour scale (for ``st.image``).

    Each 2-D tile is coloured by :func:`colormap_rgb` and enlarged by an integer factor
    (nearest neighbour) until its longer side is at least ``tile_px`` (a 3x3 kernel becomes
    96x96), then placed, centred, in a grid of ``cols`` cells separated by ``gap`` px of
    ``background``. ``zmin`` / ``zmax``: one range for every tile, or one per tile (each tile
    stretched to its own range). ``titles``: a line of text above each tile. ``frame``: a
    1 px line just outside each tile (so white tiles of a diverging map stay apart from a white
    background; the image gets a 1 px margin for it), None for none.
    Returns :class:`GridImage` (``.rgb``, ``.boxes``, ``.scales``).
    """
    n = len(tiles)
    bg = np.asarray(background, dtype=np.uint8)
    if n == 0:
        return GridImage(np.tile(bg, (1, 1, 1)), [], [])
    cols = max(1, min(int(cols), n))
    rows = -(-n // cols)
    per_tile = not np.isscalar(zmin)
    coloured, scales = [], []
    for k, tile in enumerate(tiles):
        z = np.asarray(tile, dtype=np.float64)
        if z.ndim != 2:
            raise ValueError(f"tile {k} is {z.shape}, not 2-D")
        lo = float(zmin[k]) if per_tile else float(zmin)  # type: ignore[index, arg-type]
        hi = float(zmax[k]) if per_tile else float(zmax)  # type: ignore[index, arg-type]
        s = max(1, -(-int(tile_px) // max(z.shape[0], z.shape[1], 1)))
        coloured.append(_upscale(colormap_rgb(z, lo, hi, cmap, nan_color=nan_color), s))
        scales.append(s)
    cell_h = max(c.shape[0] for c in coloured)
    cell_w = max(c.shape[1] for c in coloured)
    font_size = 11
    title_h = font_size + 4 if titles else 0
    margin = 1 if frame is not None else 0
    height = rows * (cell_h + title_h) + (rows - 1) * gap + 2 * margin
    width = cols * cell_w + (cols - 1) * gap + 2 * margin
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[:] = bg
    boxes: list[tuple[int, int, int, int]] = []
    for k, c in enumerate(coloured):
        r, q = divmod(k, cols)
        top = margin + r * (cell_h + title_h + gap) + title_h + (cell_h - c.shape[0]) // 2
        left = margin + q * (cell_w + gap) + (cell_w - c.shape[1]) // 2
        h, w = c.shape[:2]
        if frame is not None:
            out[top - 1:top + h + 1, left - 1:left + w + 1] = frame
        out[top:top + h, left:left + w] = c
        boxes.append((top, left, h, w))
    if titles:
        canvas = Image.fromarray(out)
        draw = ImageDraw.Draw(canvas)
        font = _font(font_size)
        for k, text in enumerate(list(titles)[:n]):
            r, q = divmod(k, cols)
            label = fit_title(str(text), max(4, cell_w // 6))
            tw = draw.textlength(label, font=font)
            x = margin + q * (cell_w + gap) + max(0.0, (cell_w - tw) / 2)
            draw.text((x, margin + r * (cell_h + title_h + gap)), label,
                      fill=tuple(text_color), font=font)
        out = np.asarray(canvas).copy()
    return GridImage(out, boxes, scales)


# --------------------------------------------------------------------------- figures


def _image_axes(fig: go.Figure, row: int | None = None, col: int | None = None) -> None:
    kw = {"row": row, "col": col} if row is not None else {}
    fig.update_xaxes(visible=False, **kw)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", **kw)


def image_figure(rgb: np.ndarray, title: str = "", height: int = 320,
                 legend: Sequence[tuple[str, tuple[int, int, int]]] = ()) -> go.Figure:
    """An RGB or gray uint8 image as a Plotly figure (sent as one PNG, not as numbers).

    ``legend`` adds (label, colour) entries as square markers (e.g. for TP/FP/FN).
    """
    arr = np.asarray(rgb)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(arr)).decode("ascii")
    fig = go.Figure(go.Image(source=uri, hoverinfo="skip"))
    for label, color in legend:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label,
                                 marker={"color": rgb_hex(color), "symbol": "square",
                                         "size": 12}))
    fig.update_xaxes(visible=False, range=[-0.5, arr.shape[1] - 0.5])
    fig.update_yaxes(visible=False, range=[arr.shape[0] - 0.5, -0.5], scaleanchor="x")
    fig.update_layout(
        title={"text": fit_title(title), "font": {"size": 14}}, height=height, margin=MARGIN,
        showlegend=bool(legend),
        legend={"orientation": "h", "yanchor": "top", "y": -0.02, "x": 0},
    )
    return fig


def heatmap_figure(z: np.ndarray, title: str = "", zmin: float | None = None,
                   zmax: float | None = None, colorscale: str = "Viridis",
                   colorbar_title: str = "", height: int = 320,
                   text_format: str | None = None) -> go.Figure:
    """A 2-D array as a heatmap (row 0 at the top, square pixels) with a colour bar.

    ``text_format`` (e.g. ".3f") writes each value in its cell (for small kernels).
    For big arrays prefer :func:`colormap_rgb` + :func:`colorbar_png` (a PNG, not numbers).
    """
    arr = np.asarray(z, dtype=np.float32)
    kw: dict = {}
    if text_format:
        kw = {"texttemplate": "%{z:" + text_format + "}", "textfont": {"size": 12}}
    fig = go.Figure(go.Heatmap(
        z=arr, zmin=zmin, zmax=zmax, colorscale=safe_colorscale(colorscale),
        colorbar={"title": {"text": colorbar_title}, "thickness": 12},
        hovertemplate="row %{y}, col %{x}: %{z:.4g}<extra></extra>", **kw))
    _image_axes(fig)
    fig.update_layout(title={"text": fit_title(title), "font": {"size": 14}}, height=height,
                      margin=MARGIN)
    return fig


def overlay_heatmap_figure(image: np.ndarray, values: np.ndarray, title: str = "",
                           opacity: float = 0.55, colorscale: str = "Inferno",
                           colorbar_title: str = "", zmin: float | None = None,
                           zmax: float | None = None, height: int = 360) -> go.Figure:
    """Gray image with a translucent heatmap of the same (H, W) on top, with a colour bar."""
    fig = go.Figure()
    fig.add_trace(go.Heatmap(z=np.asarray(image, dtype=np.float32), colorscale=GRAY,
                             zmin=0.0, zmax=1.0, showscale=False, hoverinfo="skip"))
    fig.add_trace(go.Heatmap(
        z=np.asarray(values, dtype=np.float32), colorscale=safe_colorscale(colorscale),
        opacity=opacity,
        zmin=zmin, zmax=zmax, colorbar={"title": {"text": colorbar_title}, "thickness": 12},
        hovertemplate="row %{y}, col %{x}: %{z:.4g}<extra></extra>"))
    _image_axes(fig)
    fig.update_layout(title={"text": fit_title(title), "font": {"size": 14}}, height=height,
                      margin=MARGIN)
    return fig


# Threshold-curve labels: rough width of one character in plot-width fractions (an 11 px
# font in a ~350 px wide plot, the narrowest column the pages use), the closest two labels'
# x may be on one row, and the height of one row of labels in data units (per unit of y).
LABEL_CHAR_W = 0.018
LABEL_MIN_DX = 0.08
LABEL_ROW_H = 0.09


def _place_labels(labels: Sequence[tuple[float, str, str]]
                  ) -> list[tuple[float, str, str, int]]:
    """(x, text, preferred xanchor) -> (x, text, xanchor, row) with every label inside [0, 1]
    and no two labels of one row overlapping or closer than LABEL_MIN_DX in x."""
    placed: list[tuple[float, str, str, int]] = []
    spans: list[tuple[int, float, float, float]] = []  # (row, x, lo, hi)
    for x, text, anchor in labels:
        x = float(np.clip(x, 0.0, 1.0))
        w = LABEL_CHAR_W * len(text)
        if anchor == "right" and x - w < 0.0:
            anchor = "left" if x + w <= 1.0 or x < 0.5 else "right"
        elif anchor == "left" and x + w > 1.0:
            anchor = "right" if x - w >= 0.0 or x >= 0.5 else "left"
        lo, hi = (x - w, x) if anchor == "right" else (x, x + w)
        row = 0
        while any(r == row and (abs(px - x) < LABEL_MIN_DX or (lo < phi + 0.01
                                                                and plo < hi + 0.01))
                  for r, px, plo, phi in spans):
            row += 1
        spans.append((row, x, lo, hi))
        placed.append((x, text, anchor, row))
    return placed


def curves_figure(thresholds: np.ndarray, series: dict[str, np.ndarray], *,
                  current: float | None = None, best: float | None = None,
                  reference: float | None = None, reference_label: str = "card",
                  title: str = "", height: int = 320, yaxis_title: str = "score") -> go.Figure:
    """Metric(s) vs threshold, with vertical lines at the current / best / reference threshold.

    Series differ by colour (Okabe-Ito) AND dash (solid, dash, dot …). The lines end at the top
    of the data; their labels ('now 0.40', 'best 0.42', 'card 0.50') sit in a band above it,
    inside the plot: 'now' and 'best' on the outer sides of their two lines, labels near the
    left / right edge turned inwards, and labels closer than LABEL_MIN_DX (or overlapping)
    stacked on separate rows. The legend is one row under the plot; the title is cut with an
    ellipsis (:func:`fit_title`).
    """
    fig = go.Figure()
    t = np.asarray(thresholds, dtype=np.float64)
    top_data = 1.0
    for i, (name, values) in enumerate(series.items()):
        y = np.asarray(values, dtype=np.float64)
        finite = y[np.isfinite(y)]
        if finite.size:
            top_data = max(top_data, float(finite.max()))
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        dash = SERIES_DASHES[i % len(SERIES_DASHES)]
        fig.add_trace(go.Scatter(x=t, y=y, mode="lines", name=name,
                                 line={"color": rgb_hex(color), "dash": dash, "width": 2.5},
                                 hovertemplate="t=%{x:.2f}: %{y:.3f}"))
    same = best is not None and current is not None and round(best, 2) == round(current, 2)
    now_left = best is None or current is None or current <= best
    marks: list[tuple[float, str, str, str, str]] = []  # x, text, anchor, colour, dash
    if current is not None:
        marks.append((current, f"now = best {current:.2f}" if same else f"now {current:.2f}",
                      "right" if now_left else "left", rgb_hex(VERMILLION), "solid"))
    if best is not None and not same:
        marks.append((best, f"best {best:.2f}", "left" if now_left else "right",
                      rgb_hex(GREEN), "dash"))
    if reference is not None:
        marks.append((reference, f"{reference_label} {reference:.2f}", "left", "#7f7f7f", "dot"))
    placed = _place_labels([(x, text, anchor) for x, text, anchor, _, _ in marks])
    rows = 1 + max((p[3] for p in placed), default=0)
    base = 1.02 * top_data
    row_h = LABEL_ROW_H * top_data
    y_top = base + rows * row_h + 0.01 * top_data
    for (x, _, _, color, dash), (lx, text, anchor, row) in zip(marks, placed, strict=True):
        fig.add_shape(type="line", x0=x, x1=x, y0=0, y1=top_data, xref="x", yref="y",
                      line={"color": color, "dash": dash, "width": 2})
        fig.add_annotation(x=lx, y=base + (row + 0.5) * row_h, xref="x", yref="y", text=text,
                           showarrow=False, xanchor=anchor, yanchor="middle",
                           font={"size": 11, "color": color})
    legend = len(series) > 1
    yaxis: dict = {"title": {"text": yaxis_title}, "range": [0, y_top]}
    if top_data <= 1.0:
        yaxis["tickvals"] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    fig.update_layout(
        title={"text": fit_title(title), "font": {"size": 14}, "x": 0.0, "xanchor": "left",
               "xref": "paper", "y": 1.0, "yref": "container", "yanchor": "top",
               "pad": {"t": 8}},
        height=height,
        margin={"l": 56, "r": 16, "t": 40 if title else 12, "b": 76 if legend else 48},
        xaxis={"title": {"text": "threshold"}, "range": [0, 1]},
        yaxis=yaxis,
        showlegend=legend,
        legend={"orientation": "h", "x": 0.0, "xanchor": "left", "y": 0.0, "yref": "container",
                "yanchor": "bottom"},
    )
    return fig


def grid_figure(tiles: Sequence[np.ndarray], titles: Sequence[str], *, cols: int,
                zmin: float | Sequence[float], zmax: float | Sequence[float],
                colorscale: str, colorbar_title: str, tile_px: int = 110,
                hover_label: str = "value") -> go.Figure:
    """A grid of small heatmaps sharing ONE colour axis (one colour bar for the whole grid).

    ``zmin``/``zmax``: one range for all tiles (shared scale), or one per tile; per-tile
    ranges are applied by rescaling each tile to 0..1 so the single colour bar reads
    'each tile's min -> max'. Sends every value; :func:`grid_rgb` is one image.
    """
    n = len(tiles)
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    per_tile = not np.isscalar(zmin)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[fit_title(t, 16) for t in titles],
                        horizontal_spacing=0.02, vertical_spacing=0.3 / rows)
    for k, tile in enumerate(tiles):
        r, c = k // cols + 1, k % cols + 1
        z = np.asarray(tile, dtype=np.float32)
        if per_tile:
            lo, hi = float(zmin[k]), float(zmax[k])  # type: ignore[index]
            z = (z - lo) / (hi - lo) if hi > lo else np.zeros_like(z)
        fig.add_trace(go.Heatmap(z=z, coloraxis="coloraxis",
                                 hovertemplate=f"{titles[k]} r%{{y}} c%{{x}}: "
                                 f"%{{z:.4g}} {hover_label}<extra></extra>"), row=r, col=c)
        _image_axes(fig, row=r, col=c)
        # Square pixels in each subplot: anchor each y axis to its own x axis.
        axis = "" if k == 0 else str(k + 1)
        fig.update_yaxes(scaleanchor=f"x{axis}", row=r, col=c)
    lo_all, hi_all = (0.0, 1.0) if per_tile else (float(zmin), float(zmax))  # type: ignore[arg-type]
    fig.update_layout(
        coloraxis={"colorscale": safe_colorscale(colorscale), "cmin": lo_all, "cmax": hi_all,
                   "colorbar": {"title": {"text": colorbar_title}, "thickness": 12}},
        height=rows * tile_px + 40, margin={"l": 4, "r": 4, "t": 28, "b": 4},
    )
    fig.update_annotations(font_size=10)
    return fig


def histogram_figure(counts: np.ndarray, edges: np.ndarray, title: str = "",
                     xaxis_title: str = "weight", height: int = 260) -> go.Figure:
    """Bar chart of a histogram given as (counts, edges)."""
    centers = 0.5 * (edges[:-1] + edges[1:])
    fig = go.Figure(go.Bar(x=centers, y=counts, width=np.diff(edges), marker_line_width=0,
                           hovertemplate="%{x:.4g}: %{y}<extra></extra>"))
    fig.update_layout(title={"text": fit_title(title), "font": {"size": 14}}, height=height,
                      margin={"l": 56, "r": 10, "t": 36, "b": 40}, bargap=0,
                      xaxis={"title": {"text": xaxis_title}}, yaxis={"title": {"text": "count"}})
    return fig
