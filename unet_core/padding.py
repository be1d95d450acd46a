"""Padding, cropping and tiling between an image's size and a network's size.

Nothing here ever resizes (interpolates) an image: an image is padded up to what the network
accepts, and the network's output is cropped back to exactly the input's height x width.

Padding modes (numpy names): ``constant`` (zeros), ``reflect`` (mirror without repeating the edge
pixel), ``symmetric`` (mirror repeating it), ``wrap`` (periodic), ``edge`` (repeat the edge pixel).
Amounts are split with the larger half *before*: 101 -> 128 pads 14 before and 13 after, as the
TGS competition notebooks did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import UnetCoreError

PAD_MODES: tuple[str, ...] = ("constant", "reflect", "symmetric", "wrap", "edge")


@dataclass(frozen=True)
class PadBox:
    """Where the original image sits inside its padded version.

    ``top``, ``left`` are the rows/columns added before; ``height``, ``width`` the original size.
    """

    top: int
    left: int
    height: int
    width: int

    def crop(self, array: np.ndarray) -> np.ndarray:
        """Crop ``(..., Hp, Wp)`` or ``(Hp, Wp, C)``-style arrays back to the original size.

        The two spatial axes are taken to be axes 0 and 1 for 2-D/3-D arrays whose first two
        axes are at least the padded size; pass ``(N, Hp, Wp[, C])`` arrays through
        :meth:`crop_batch` instead.
        """
        return array[self.top : self.top + self.height, self.left : self.left + self.width]

    def crop_batch(self, array: np.ndarray) -> np.ndarray:
        """Crop an ``(N, Hp, Wp, ...)`` batch to ``(N, H, W, ...)``."""
        return array[:, self.top : self.top + self.height, self.left : self.left + self.width]


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is a supported padding mode, else raise a clear error."""
    if mode not in PAD_MODES:
        raise UnetCoreError(
            f"unknown padding mode {mode!r}; accepted: {', '.join(PAD_MODES)}"
        )
    return mode


def split_padding(size: int, target: int) -> tuple[int, int]:
    """Split ``target - size`` into (before, after), the larger half before (27 -> 14, 13)."""
    if target < size:
        raise UnetCoreError(f"cannot pad size {size} down to {target}")
    total = target - size
    before = (total + 1) // 2
    return before, total - before


def round_up(size: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``size`` (and >= ``multiple``)."""
    return max(multiple, -(-size // multiple) * multiple)


def _pad_2d(image: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]], mode: str
            ) -> np.ndarray:
    """np.pad over the first two axes, robust for 1-pixel-wide images in mirror modes."""
    out = image
    for axis in (0, 1):
        width = [(0, 0)] * image.ndim
        width[axis] = pads[axis]
        if width[axis] == (0, 0):
            continue
        # Mirroring a single row/column is just repeating it.
        axis_mode = "edge" if mode in ("reflect", "symmetric") and out.shape[axis] < 2 else mode
        if axis_mode == "constant":
            out = np.pad(out, width, mode="constant", constant_values=0)
        else:
            out = np.pad(out, width, mode=axis_mode)
    return out


def pad_to(image: np.ndarray, height: int, width: int, mode: str = "reflect"
           ) -> tuple[np.ndarray, PadBox]:
    """Pad ``image`` (H, W[, C]) to (height, width[, C]); returns the padded array and its box."""
    check_mode(mode)
    h, w = image.shape[:2]
    top, bottom = split_padding(h, height)
    left, right = split_padding(w, width)
    padded = _pad_2d(image, ((top, bottom), (left, right)), mode)
    return padded, PadBox(top, left, h, w)


def pad_to_multiple(image: np.ndarray, multiple: int, mode: str = "reflect",
                    min_size: int = 0) -> tuple[np.ndarray, PadBox]:
    """Pad (H, W[, C]) up to the next multiple of ``multiple`` on both axes (at least min_size)."""
    h, w = image.shape[:2]
    return pad_to(image, round_up(max(h, min_size), multiple),
                  round_up(max(w, min_size), multiple), mode)


def _blend_window(tile_h: int, tile_w: int, overlap: int) -> np.ndarray:
    """(tile_h, tile_w) float32 weights: 1 in the middle, linear ramps over ``overlap`` pixels."""

    def ramp(n: int) -> np.ndarray:
        r = np.ones(n, dtype=np.float32)
        if overlap > 0:
            k = min(overlap, n // 2)
            edge = (np.arange(k, dtype=np.float32) + 1.0) / (k + 1.0)
            r[:k] = edge
            r[n - k :] = edge[::-1]
        return r

    return np.outer(ramp(tile_h), ramp(tile_w)).astype(np.float32)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``size`` with at least ``overlap``."""
    if size <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return sorted(set(starts))


def predict_tiled(
    predict: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    tile: tuple[int, int],
    overlap: int = 32,
    mode: str = "reflect",
    batch_size: int = 8,
) -> np.ndarray:
    """Run a fixed-size network over a larger image in overlapping tiles and blend the results.

    ``predict`` maps a float32 batch (N, th, tw[, C]) to maps (N, th, tw[, K]). The image
    (H, W[, C]) float32 is first padded to at least one tile, tiles overlap by ``overlap``
    pixels and are blended with linear ramps, and the result is cropped to (H, W[, K]) float32.
    """
    th, tw = tile
    padded, box = pad_to(image, max(image.shape[0], th), max(image.shape[1], tw), mode)
    ph, pw = padded.shape[:2]
    out: np.ndarray | None = None
    weight = np.zeros((ph, pw), dtype=np.float32)
    window = _blend_window(th, tw, overlap)
    coords = [(y, x) for y in tile_starts(ph, th, overlap) for x in tile_starts(pw, tw, overlap)]
    for i in range(0, len(coords), batch_size):
        chunk = coords[i : i + batch_size]
        batch = np.stack([padded[y : y + th, x : x + tw] for y, x in chunk])
        probs = predict(batch)
        if out is None:
            out = np.zeros((ph, pw, *probs.shape[3:]), dtype=np.float32)
        win = window.reshape(th, tw, *([1] * (probs.ndim - 3)))
        for (y, x), p in zip(chunk, probs, strict=True):
            out[y : y + th, x : x + tw] += p * win
            weight[y : y + th, x : x + tw] += window
    assert out is not None
    w = np.maximum(weight, 1e-12).reshape(ph, pw, *([1] * (out.ndim - 2)))
    return box.crop(out / w)
