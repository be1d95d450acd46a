"""From a decoded image to what a network was trained on: channels, value scaling, resizing.

A model card states its input (see :class:`unet_core.model.ModelCard`); this module applies it.
Every function takes the image *as decoded* (:func:`unet_core.io.read_raw`: (H, W) or
(H, W, C), native dtype), so ``raw`` models see their 0-255 values, and returns float32.

Channels (:func:`map_channels`, raw values kept):

* an image with the model's channel count is kept as it is (4-band TIFFs stay 4 bands);
* a grayscale image (1 channel, or gray + alpha) fed to an N-channel model is replicated N times;
* an RGB(A) image fed to a 1-channel model becomes ITU-R BT.601 luma
  ``0.299 R + 0.587 G + 0.114 B`` (as :func:`unet_core.io.to_grayscale`);
* an RGBA image fed to a 3-channel model drops its alpha channel;
* ``channel_order="bgr"`` reverses the first three channels (OpenCV's order) after that.

Value scaling (:data:`NORMALISATIONS`, :func:`scale_values`), with ``x`` the mapped values:

* ``unit``: ``x / m`` with ``m`` the dtype's full scale (bool 1, uint8 255, uint16 65535, other
  integers 65535 when all values fit, floats 1 when all values lie in [0, 1]); values outside
  that range are min-max scaled instead, as :func:`unet_core.io.normalise` does;
* ``raw``: ``x`` as float32, unscaled (models that normalise inside themselves);
* ``minmax``: ``(x - min) / (max - min)`` over the whole image (all channels); constant -> 0;
* ``percentile``: ``(x - p_lo) / (p_hi - p_lo)`` clipped to [0, 1], ``p_lo, p_hi`` the
  card's ``percentiles`` (default 1st and 99th) over the whole image; flat -> 0;
* ``zscore``: ``(x - mean) / (std + 1e-7)`` with one mean and std over all pixels and channels;
* ``meanstd``: ``(x / m - mean_c) / std_c`` per channel ``c``, on the ``unit`` scale
  (ImageNet: mean 0.485, 0.456, 0.406 and std 0.229, 0.224, 0.225).

Statistics are always taken over the whole image, before any tiling or resizing, so a tile or a
resized copy sees the same values the whole image would.

Resizing (:func:`resize_bilinear`): bilinear with half-pixel centres and no antialiasing, the
rule of OpenCV's ``INTER_LINEAR`` and ``tf.image.resize(..., "bilinear")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import UnetCoreError

NORMALISATIONS: tuple[str, ...] = ("unit", "raw", "minmax", "percentile", "zscore", "meanstd")
CHANNEL_ORDERS: tuple[str, ...] = ("rgb", "bgr")
FITS: tuple[str, ...] = ("pad", "resize")
ZSCORE_EPS = 1e-7

__all__ = [
    "CHANNEL_ORDERS",
    "FITS",
    "NORMALISATIONS",
    "display_image",
    "image_channels",
    "map_channels",
    "model_input",
    "resize_bilinear",
    "scale_values",
    "unit_scale",
]


def _as_image(image: Any) -> np.ndarray:
    """Validate an image array: (H, W) or (H, W, C), real, finite, not empty."""
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and not 1 <= arr.shape[2] <= 64):
        raise UnetCoreError(
            f"image has shape {arr.shape}; accepted: (H, W) or (H, W, C) with 1..64 channels "
            "(read files with unet_core.io.read_raw)")
    if arr.size == 0:
        raise UnetCoreError("image is empty (0 pixels)")
    if arr.dtype.kind not in "biuf":
        raise UnetCoreError(f"image has dtype {arr.dtype}; accepted: bool, integer or float")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise UnetCoreError("image contains NaN or infinite values; accepted: finite values")
    return arr


def image_channels(image: np.ndarray) -> int:
    """Channels of an (H, W) or (H, W, C) image (2-D -> 1)."""
    return 1 if np.ndim(image) == 2 else int(np.shape(image)[2])


def unit_scale(image: np.ndarray) -> tuple[float, float]:
    """``(offset, scale)`` such that ``(x - offset) / scale`` is the ``unit`` image in [0, 1].

    bool -> (0, 1); uint8 -> (0, 255); uint16 -> (0, 65535); other integers -> (0, 65535) when
    all values lie in 0..65535; floats -> (0, 1) when all lie in [0, 1]; otherwise the image's
    own (min, max - min) (a constant image: scale 1).
    """
    arr = np.asarray(image)
    if arr.dtype == np.bool_:
        return 0.0, 1.0
    if arr.dtype == np.uint8:
        return 0.0, 255.0
    if arr.dtype == np.uint16:
        return 0.0, 65535.0
    lo, hi = float(arr.min()), float(arr.max())
    if arr.dtype.kind in "iu" and lo >= 0 and hi <= 65535:
        return 0.0, 65535.0
    if arr.dtype.kind == "f" and lo >= 0 and hi <= 1:
        return 0.0, 1.0
    return lo, (hi - lo) if hi > lo else 1.0


def _luma(x: np.ndarray) -> np.ndarray:
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    return np.where((r == g) & (g == b), r, luma).astype(np.float32)


def map_channels(image: np.ndarray, channels: int, order: str = "rgb", *,
                 name: str = "image") -> np.ndarray:
    """An image's channels as a model of ``channels`` inputs takes them (raw values kept).

    Args:
        image: (H, W) or (H, W, C), any real dtype.
        channels: the model's input channels (1..64).
        order: ``rgb`` or ``bgr`` (the first three channels reversed), see the module docstring.
        name: used in error messages.

    Returns:
        float32 (H, W, channels).

    Raises:
        UnetCoreError: the image's channels cannot be mapped (e.g. 3 to a 5-channel model).
    """
    if order not in CHANNEL_ORDERS:
        raise UnetCoreError(f"unknown channel order {order!r}; accepted: rgb, bgr")
    arr = _as_image(image)
    x = arr.astype(np.float32, copy=False)
    if x.ndim == 2:
        x = x[..., None]
    c = x.shape[2]
    if c == channels:
        out = x
    elif c in (1, 2):  # gray or gray + alpha: replicate the gray channel
        out = np.repeat(x[..., :1], channels, axis=2)
    elif c in (3, 4) and channels == 1:
        out = _luma(x)[..., None]
    elif c == 4 and channels == 3:
        out = x[..., :3]
    else:
        also = {1: ", RGB or RGBA (as luma)", 3: ", RGBA (alpha dropped)"}.get(channels, "")
        raise UnetCoreError(
            f"{name} has {c} channels but the model takes {channels}; accepted: {channels}-"
            f"channel images, grayscale (replicated){also}")
    if order == "bgr" and out.shape[2] >= 3:
        out = np.concatenate([out[..., 2::-1], out[..., 3:]], axis=2)
    return np.ascontiguousarray(out, dtype=np.float32)


def scale_values(x: np.ndarray, rule: str, *, unit: tuple[float, float] = (0.0, 1.0),
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 percentiles: Sequence[float] = (1.0, 99.0)) -> np.ndarray:
    """Apply a card's value scaling to mapped values (see the module docstring for formulas).

    Args:
        x: float32 (H, W, C) raw values (from :func:`map_channels`).
        rule: one of :data:`NORMALISATIONS`.
        unit: ``(offset, scale)`` of the decoded image's ``unit`` rule (:func:`unit_scale`).
        mean, std: per-channel statistics on the unit scale (``meanstd``; one value or C).
        percentiles: (low, high) percentiles for ``percentile``.

    Returns:
        float32 (H, W, C).
    """
    if rule not in NORMALISATIONS:
        raise UnetCoreError(
            f"unknown input normalisation {rule!r}; accepted: {', '.join(NORMALISATIONS)}")
    x = np.asarray(x, dtype=np.float32)
    if rule == "raw":
        return x
    if rule == "unit":
        off, scale = unit
        return ((x - off) / scale).astype(np.float32) if (off, scale) != (0.0, 1.0) else x
    if rule == "meanstd":
        off, scale = unit
        c = x.shape[-1]
        m = np.broadcast_to(np.asarray(mean if mean is not None else [0.0], np.float32), (c,))
        s = np.broadcast_to(np.asarray(std if std is not None else [1.0], np.float32), (c,))
        return (((x - off) / scale - m) / s).astype(np.float32)
    if rule == "zscore":
        mu, sd = float(x.mean(dtype=np.float64)), float(x.std(dtype=np.float64))
        return ((x - mu) / (sd + ZSCORE_EPS)).astype(np.float32)
    if rule == "minmax":
        lo, hi = float(x.min()), float(x.max())
    else:
        lo, hi = (float(v) for v in np.percentile(x, tuple(percentiles)))
    if hi - lo < 1e-12:
        return np.zeros_like(x)
    out = (x - lo) / (hi - lo)
    if rule == "percentile":
        out = np.clip(out, 0.0, 1.0)
    return out.astype(np.float32)


def model_input(image: np.ndarray, card: Any, *, name: str = "image") -> np.ndarray:
    """The network's view of an image at its own size: channels mapped, values scaled.

    Args:
        image: (H, W) or (H, W, C) as decoded (:func:`unet_core.io.read_raw`), any real dtype.
        card: a :class:`unet_core.model.ModelCard` (channels, channel_order, normalisation,
            mean, std, percentiles).

    Returns:
        float32 (H, W, card.channels).
    """
    arr = _as_image(image)
    x = map_channels(arr, card.channels, card.channel_order, name=name)
    unit = unit_scale(arr) if card.normalisation in ("unit", "meanstd") else (0.0, 1.0)
    return scale_values(x, card.normalisation, unit=unit, mean=card.mean, std=card.std,
                        percentiles=card.percentiles)


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (i0, i1) and weight of i1 for half-pixel-centre bilinear sampling."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0.0, n_in - 1)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (pos - i0).astype(np.float32)


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with half-pixel centres, no antialiasing (OpenCV ``INTER_LINEAR``).

    Args:
        x: (H, W) or (H, W, C) array.
        size: (height, width) of the result.

    Returns:
        float32 (height, width) or (height, width, C).
    """
    arr = np.asarray(x, dtype=np.float32)
    h, w = arr.shape[:2]
    th, tw = int(size[0]), int(size[1])
    if (h, w) == (th, tw):
        return arr.copy()
    r0, r1, wr = _axis_weights(h, th)
    c0, c1, wc = _axis_weights(w, tw)
    extra = (None,) * (arr.ndim - 2)
    rows = arr[r0] + (arr[r1] - arr[r0]) * wr[(slice(None), None, *extra)]
    out = rows[:, c0] + (rows[:, c1] - rows[:, c0]) * wc[(None, slice(None), *extra)]
    return np.ascontiguousarray(out, dtype=np.float32)


def display_image(image: np.ndarray) -> np.ndarray:
    """An image for showing: float32 (H, W) gray or (H, W, 3) RGB in [0, 1] (``unit`` scale).

    RGBA drops alpha; gray + alpha keeps the gray; other channel counts show their first channel.
    """
    arr = _as_image(image)
    off, scale = unit_scale(arr)
    x = arr.astype(np.float32)
    if x.ndim == 3:
        c = x.shape[2]
        x = x[..., :3] if c in (3, 4) else x[..., 0]
    return np.clip((x - off) / scale, 0.0, 1.0).astype(np.float32)
