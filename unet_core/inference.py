"""Inference: image(s) in, probability map(s) out, at exactly the input's size.

The :class:`Segmenter` maps each image to the network's input as its card says
(:func:`unet_core.preprocess.model_input`: channels, channel order, value scaling, with
statistics over the whole image), then fits it to the network by the card's ``fit``:

* ``resize``: the whole image is resized to ``card.input_size`` (bilinear, half-pixel
  centres), predicted in one pass, and the class probabilities are resized back to exactly
  the image's height x width (bilinear);
* ``pad`` (never resizes): a fixed-size network (card.input_size) gets images up to that
  size padded to it, larger images tiled with overlap and blended
  (:func:`unet_core.padding.predict_tiled`); a fully convolutional network gets images padded
  to at least ``card.min_size`` and up to a multiple of ``card.multiple_of``; when that padded
  image would exceed ``max_network_pixels`` (default 1024 x 1024), it is predicted in
  overlapping square tiles and blended the same way, so memory stays bounded.

Outputs are class probabilities (H, W, K): K = 1 for one sigmoid map, K classes for a softmax.
:meth:`Segmenter.predict_proba` gives one class's map (H, W) (the card's default class unless
``class_index`` is given), :meth:`Segmenter.predict_labels` the label map.

Forward passes go through an inference backend (:mod:`unet_core.backends`): ONNX Runtime on a
cached export of the model by default, or one ``tf.function`` traced once for any (N, H, W, C)
float32 batch; never ``model.predict`` per image.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence

import numpy as np

from . import budget
from .backends import make_backend
from .errors import UnetCoreError
from .metrics import threshold_mask
from .model import LoadedModel
from .padding import (
    PadBox,
    check_mode,
    pad_to,
    pad_to_multiple,
    predict_tiled,
    round_up,
    tile_starts,
)
from .preprocess import FITS, NORMALISATIONS, model_input, resize_bilinear, scale_values

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Largest padded image a fully convolutional network sees in one piece (1024 x 1024 pixels);
#: larger images are tiled. Keeps a forward pass's activations to a few hundred MB.
MAX_NETWORK_PIXELS = 1024 * 1024

#: Smallest side of a fixed network input (a 1x1 input would make every pixel its own tile).
MIN_FIXED_SIDE = 16
#: Most tiles one image may need (``UNET_MAX_TILES``).
DEFAULT_MAX_TILES = 10_000

log = logging.getLogger(__name__)


def max_tiles() -> int:
    """``UNET_MAX_TILES`` or 10,000."""
    return budget._env_int("UNET_MAX_TILES", DEFAULT_MAX_TILES)


def normalise_input(image: np.ndarray, rule: str) -> np.ndarray:
    """Apply a value scaling rule to a float32 (H, W) image already in [0, 1].

    Kept for one-channel callers (training); see :func:`unet_core.preprocess.scale_values`.
    """
    if rule not in NORMALISATIONS:
        raise UnetCoreError(
            f"unknown input normalisation {rule!r}; accepted: {', '.join(NORMALISATIONS)}")
    x = np.asarray(image, dtype=np.float32)
    return scale_values(x[..., None], rule)[..., 0]


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate a grayscale image: 2-D float, finite. Returns float32 (H, W)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise UnetCoreError(
            f"image has shape {arr.shape}; accepted: a 2-D grayscale array (H, W) "
            "(read files with unet_core.io.read_image)")
    if arr.size == 0:
        raise UnetCoreError("image is empty (0 pixels)")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise UnetCoreError("image contains NaN or infinite values; accepted: finite values")
    return arr


class Segmenter:
    """Runs a loaded model on images; see the module docstring for the fit rules.

    Images are (H, W) or (H, W, C) arrays as decoded (:func:`unet_core.io.read_raw`, native
    dtype: a ``raw`` model sees 0-255 values) or float images in [0, 1]
    (:func:`unet_core.io.read_image`, fine for every rule but ``raw``).

    Args:
        loaded: the model and its card.
        padding_mode: default padding mode (None: the card's).
        tta: flip test-time augmentation (None: the card's).
        fit: ``pad`` or ``resize`` (None: the card's; ``resize`` needs ``card.input_size``).
        batch_size: images per forward pass in :meth:`predict_batch`.
        tile_overlap: overlap in pixels when tiling a fixed-size network.
        max_batch_pixels: a batch holds at most this many network-input pixels (large images
            go through fewer at a time, so memory stays bounded).
        max_network_pixels: a fully convolutional network sees at most this many pixels per
            image (default :data:`MAX_NETWORK_PIXELS`, 1024 x 1024); a larger padded image is
            predicted in overlapping tiles (see :meth:`tile_size`). ``None``: never tile.
        backend: inference backend name (None: the default, see :mod:`unet_core.backends`).
        int8_calibration: folder of calibration images for the ``onnxruntime-int8`` backend
            (None: ``$UNET_INT8_CALIBRATION``, else the model's validation split).
    """

    def __init__(self, loaded: LoadedModel, *, padding_mode: str | None = None,
                 tta: bool | None = None, fit: str | None = None, batch_size: int = 16,
                 tile_overlap: int = 32, max_batch_pixels: int = 2**22,
                 max_network_pixels: int | None = MAX_NETWORK_PIXELS,
                 backend: str | None = None,
                 int8_calibration: str | os.PathLike | None = None) -> None:
        self.loaded = loaded
        self.card = loaded.card
        self.model = loaded.model
        self.padding_mode = check_mode(padding_mode or self.card.padding_mode)
        self.tta = self.card.tta if tta is None else tta
        self.fit = fit or self.card.fit or ("resize" if self.card.input_size else "pad")
        if self.fit not in FITS:
            raise UnetCoreError(f"unknown fit {self.fit!r}; accepted: {', '.join(FITS)}")
        if self.fit == "resize" and not self.card.input_size:
            raise UnetCoreError(
                f"{loaded.name}: fit resize needs a network with a fixed input size; this one "
                "is fully convolutional (accepted: fit pad)")
        self.batch_size = batch_size
        self.max_batch_pixels = max_batch_pixels
        self.tile_overlap = tile_overlap
        self.max_network_pixels = max_network_pixels
        path = getattr(loaded, "path", None)
        self.label = path.name if path is not None else loaded.name  # names it in messages
        size = self.card.input_size
        if size and min(size) < MIN_FIXED_SIDE:
            raise UnetCoreError(
                f"{self.label}: refused: the network's fixed input is {size[0]}x{size[1]} "
                f"pixels; accepted: at least {MIN_FIXED_SIDE}x{MIN_FIXED_SIDE} (a smaller input "
                "would split every image into thousands of tiles)")
        self.estimate = budget.model_estimate(self.model)
        # pixels one forward pass may take within UNET_MAX_FORWARD_MB (a fully convolutional
        # network is tiled below it)
        self.forward_pixels: int | None = None
        per_mpx = self.forward_bytes(1024, 1024)
        if per_mpx:
            self.forward_pixels = max(1, int(budget.max_forward_mb() * 2**20 / per_mpx * 2**20))
        self.backend = make_backend(loaded, backend, calibration=int8_calibration)

    @property
    def n_classes(self) -> int:
        """K: 1 for one sigmoid map, else the softmax classes."""
        return self.card.n_classes

    def _class(self, class_index: int | None) -> int:
        k = self.card.default_class if class_index is None else int(class_index)
        if not 0 <= k < self.n_classes:
            names = ", ".join(f"{i} {self.card.class_name(i)}" for i in range(self.n_classes))
            raise UnetCoreError(
                f"class {k} is not a class of {self.loaded.name}; accepted: {names}")
        return k

    # -- low level ---------------------------------------------------------------------------
    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Network on a prepared batch: (N, H, W, C) float32 -> (N, H, W, K) probabilities.

        A (N, H, W) batch is taken as one channel. With TTA the image and its left-right
        mirror go through in one call when the doubled batch fits ``max_batch_pixels``, and
        their probabilities are averaged.
        """
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim == 3:
            x = x[..., None]
        if not self.tta:
            return self._run(x)
        n = len(x)
        if 2 * x[..., 0].size <= self.max_batch_pixels:
            both = self._run(np.concatenate([x, x[:, :, ::-1]]))
            y, yf = both[:n], both[n:]
        else:
            y, yf = self._run(x), self._run(np.ascontiguousarray(x[:, :, ::-1]))
        return (0.5 * (y + yf[:, :, ::-1])).astype(np.float32, copy=False)

    def forward_bytes(self, height: int, width: int) -> int | None:
        """Estimated float32 activation bytes of one image's forward pass at this size
        (None when the network's config cannot be read)."""
        if self.estimate is None:
            return None
        return self.estimate.activation_bytes(height, width)

    def _run(self, x: np.ndarray) -> np.ndarray:
        """The backend on a batch, bounded and checked: refused before it runs when one image's
        activations would exceed ``UNET_MAX_FORWARD_MB``, split into smaller batches when the
        whole batch would; runtime failures and NaN/inf outputs become one-line errors."""
        n, h, w = x.shape[:3]
        label = self.label
        budget.check_forward(self.estimate, h, w, label)
        per_image = self.forward_bytes(h, w) or 0
        limit = budget.max_forward_mb() * 2**20
        if n > 1 and per_image * n > limit:
            step = max(1, limit // max(1, per_image))
            return np.concatenate([self._run(x[i:i + step]) for i in range(0, n, step)])
        try:
            y = self.backend(x)
        except UnetCoreError:
            raise
        except MemoryError:
            log.exception("forward pass of %s on %s failed", label, x.shape)
            raise UnetCoreError(
                f"{label}: ran out of memory predicting a {h}x{w} input; try a smaller image "
                "or a lower UNET_MAX_FORWARD_MB") from None
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime / TensorFlow runtime errors
            log.exception("forward pass of %s on %s failed", label, x.shape)
            text = str(exc).lower()
            if "alloc" in text or "out of memory" in text or "oom" in text:
                raise UnetCoreError(
                    f"{label}: ran out of memory predicting a {h}x{w} input; try a smaller "
                    "image") from None
            raise UnetCoreError(
                f"{label}: the model failed on a {h}x{w} input ({type(exc).__name__} in the "
                f"{self.backend.name} runtime; details in the server log)") from None
        if not np.isfinite(y).all():
            kind = "NaN" if np.isnan(y).any() else "infinite values"
            raise UnetCoreError(
                f"{label}: the model's output holds {kind} (its weights may be NaN); "
                "accepted: a model whose outputs are finite probabilities")
        return y

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """An image mapped and scaled as the card says, at its own size: float32 (H, W, C)."""
        return model_input(image, self.card)

    def _padded_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) a fully convolutional network needs for an image of this size, untiled."""
        card = self.card
        m = max(1, card.multiple_of)
        return round_up(max(height, card.min_size), m), round_up(max(width, card.min_size), m)

    def network_size(self, height: int, width: int, max_pixels: int | None = None
                     ) -> tuple[int, int] | None:
        """(H, W) the network will see for an image of this size, or None if it will be tiled.

        ``max_pixels`` overrides ``max_network_pixels`` for a fully convolutional network.
        With ``fit="resize"`` always the card's input size.
        """
        card = self.card
        if card.input_size:
            th, tw = card.input_size
            if self.fit == "resize":
                return th, tw
            return (th, tw) if height <= th and width <= tw else None
        size = self._padded_size(height, width)
        pixels = self._pixel_budget(max_pixels)
        if pixels and size[0] * size[1] > pixels:
            return None
        return size

    def _pixel_budget(self, max_pixels: int | None) -> int | None:
        """Pixels per pass: ``max_pixels`` (default ``max_network_pixels``), at most what fits
        the forward-memory limit."""
        pixels = self.max_network_pixels if max_pixels is None else max_pixels
        if pixels and self.forward_pixels is not None:  # None / 0: never tile (as asked)
            pixels = min(pixels, self.forward_pixels)
        return pixels

    def tile_size(self, height: int, width: int, max_pixels: int | None = None
                  ) -> tuple[int, int]:
        """(th, tw) of the tiles for an image that :meth:`network_size` says is tiled.

        A fixed-size network: its input size. A fully convolutional one: squares of the
        largest multiple of ``card.multiple_of`` whose area fits the pixel budget (at least
        ``card.min_size``), no larger than the padded image on either axis.
        """
        card = self.card
        if card.input_size:
            th, tw = card.input_size
            return th, tw
        m = max(1, card.multiple_of)
        pixels = self._pixel_budget(max_pixels)
        smallest = round_up(max(card.min_size, 1), m)
        side = max(smallest, m, (math.isqrt(max(1, pixels or 0)) // m) * m)
        ph, pw = self._padded_size(height, width)
        return min(side, ph), min(side, pw)

    def tile_overlap_for(self, tile: tuple[int, int]) -> int:
        """Overlap between tiles: ``tile_overlap``; for a fully convolutional network at least
        1/8 of the tile's shorter side (context for the receptive field), rounded up to a
        multiple of ``card.multiple_of`` and at most half a tile."""
        if self.card.input_size:
            return self.tile_overlap
        m = max(1, self.card.multiple_of)
        overlap = round_up(max(self.tile_overlap, min(tile) // 8), m)
        return min(overlap, (min(tile) // 4 // m) * m)

    def _check_tiles(self, height: int, width: int, tile: tuple[int, int], overlap: int) -> None:
        """Refuse an image that would need more than ``UNET_MAX_TILES`` tiles."""
        n = (len(tile_starts(max(height, tile[0]), tile[0], overlap))
             * len(tile_starts(max(width, tile[1]), tile[1], overlap)))
        limit = max_tiles()
        if n > limit:
            raise UnetCoreError(
                f"{self.label}: refused: a {height}x{width} image needs {n:,} tiles of "
                f"{tile[0]}x{tile[1]} (limit {limit:,}, UNET_MAX_TILES)")

    def prepare(self, image: np.ndarray, padding_mode: str | None = None
                ) -> tuple[np.ndarray, PadBox]:
        """One image as the network sees it -> (float32 (Hn, Wn, C), box of the image in it).

        ``pad``: mapped, scaled and padded (the box locates the image). ``resize``: mapped,
        scaled and resized to the input size (the box is the whole input).
        """
        mode = check_mode(padding_mode or self.padding_mode)
        x = self.model_input(image)
        if self.fit == "resize":
            th, tw = self.card.input_size  # type: ignore[misc]
            return resize_bilinear(x, (th, tw)), PadBox(0, 0, th, tw)
        return self._pad(x, mode)

    def _pad(self, x: np.ndarray, mode: str) -> tuple[np.ndarray, PadBox]:
        """Pad a mapped, scaled (H, W, C) image to the network's size."""
        card = self.card
        if card.input_size:
            th, tw = card.input_size
            return pad_to(x, th, tw, mode)
        return pad_to_multiple(x, max(1, card.multiple_of), mode, min_size=card.min_size)

    # -- public ------------------------------------------------------------------------------
    def predict_classes(self, image: np.ndarray, padding_mode: str | None = None, *,
                        max_pixels: int | None = None) -> np.ndarray:
        """Class probabilities of one image: float32 (H, W, K) at exactly the image's size.

        Images too large for one pass (``pad`` fit: over the fixed input size, or over
        ``max_pixels``, default ``max_network_pixels``, once padded) are predicted in
        overlapping tiles blended with linear ramps (:func:`unet_core.padding.predict_tiled`).
        """
        mode = check_mode(padding_mode or self.padding_mode)
        x = self.model_input(image)
        h, w = x.shape[:2]
        if self.fit == "resize":
            th, tw = self.card.input_size  # type: ignore[misc]
            y = self.forward(resize_bilinear(x, (th, tw))[None])[0]
            return np.clip(resize_bilinear(y, (h, w)), 0.0, 1.0)
        if self.network_size(h, w, max_pixels=max_pixels) is None:
            tile = self.tile_size(h, w, max_pixels=max_pixels)
            per_batch = max(1, min(self.batch_size, self.max_batch_pixels // (tile[0] * tile[1])))
            if self.card.input_size:
                overlap = max(0, min(self.tile_overlap, min(tile) // 4))
                self._check_tiles(h, w, tile, overlap)
                return predict_tiled(self.forward, x, tile, overlap, mode, per_batch)
            # Fully convolutional: pad as for one pass, then tile on the network's stride grid
            # (tiles, overlaps and offsets are multiples of card.multiple_of), so every tile
            # sees the same pooling grid as the untiled pass would.
            padded, box = self._pad(x, mode)
            overlap = self.tile_overlap_for(tile)
            self._check_tiles(*padded.shape[:2], tile, overlap)
            return box.crop(predict_tiled(self.forward, padded, tile, overlap, mode, per_batch))
        padded, box = self._pad(x, mode)
        return box.crop(self.forward(padded[None])[0])

    def predict_proba(self, image: np.ndarray, padding_mode: str | None = None, *,
                      max_pixels: int | None = None, class_index: int | None = None
                      ) -> np.ndarray:
        """Probability map of one class (default: the card's) for one image: float32 (H, W)."""
        k = self._class(class_index)
        return np.ascontiguousarray(
            self.predict_classes(image, padding_mode, max_pixels=max_pixels)[..., k])

    def predict_labels(self, image: np.ndarray, padding_mode: str | None = None,
                       threshold: float | None = None) -> np.ndarray:
        """Label map of one image: uint8 (H, W) (uint16 over 256 classes): the argmax class
        for a softmax; for one sigmoid map 1 where ``prob > threshold`` (default the card's)."""
        probs = self.predict_classes(image, padding_mode)
        return labels_from_probs(probs, self.card.threshold if threshold is None else threshold)

    def predict_batch_classes(self, images: Sequence[np.ndarray],
                              padding_mode: str | None = None) -> list[np.ndarray]:
        """Class probabilities of many images (any sizes): list of float32 (H_i, W_i, K).

        Images that reach the network at the same size are stacked into batches of
        ``batch_size``.
        """
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            size = self.network_size(*np.shape(im)[:2])
            if size is None:
                out[i] = self.predict_classes(im, padding_mode)
            else:
                groups.setdefault(size, []).append(i)
        for (h, w), idx in groups.items():
            step = max(1, min(self.batch_size, self.max_batch_pixels // (h * w)))
            for s in range(0, len(idx), step):
                chunk = idx[s : s + step]
                prepared = [self.prepare(images[i], padding_mode) for i in chunk]
                probs = self.forward(np.stack([p for p, _ in prepared]))
                for i, (_, box), prob in zip(chunk, prepared, probs, strict=True):
                    if self.fit == "resize":
                        size = np.shape(images[i])[:2]
                        out[i] = np.clip(resize_bilinear(prob, size), 0.0, 1.0)
                    else:
                        out[i] = box.crop(prob)
        return [o for o in out if o is not None]

    def predict_batch(self, images: Sequence[np.ndarray], padding_mode: str | None = None,
                      class_index: int | None = None) -> list[np.ndarray]:
        """Probability maps of one class (default: the card's) for many images: list of
        float32 (H_i, W_i)."""
        k = self._class(class_index)
        return [np.ascontiguousarray(p[..., k])
                for p in self.predict_batch_classes(images, padding_mode)]

    def predict_mask(self, image: np.ndarray, threshold: float | None = None,
                     padding_mode: str | None = None, min_area: int | None = None,
                     class_index: int | None = None) -> np.ndarray:
        """Binary mask (bool (H, W)) of one class at ``threshold`` with the minimum-area rule
        ``min_area`` (pixels; both default to the card's)."""
        t = self.card.threshold if threshold is None else threshold
        k = self.card.min_area if min_area is None else min_area
        return threshold_mask(self.predict_proba(image, padding_mode, class_index=class_index),
                              t, k)


def labels_from_probs(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Label map from class probabilities (H, W, K): argmax for K >= 2, ``prob > threshold``
    for K = 1. Returns uint8 (H, W) (uint16 for more than 256 classes)."""
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise UnetCoreError(f"class probabilities must be (H, W, K), got shape {probs.shape}")
    if probs.shape[-1] == 1:
        return (probs[..., 0] > threshold).astype(np.uint8)
    dtype = np.uint8 if probs.shape[-1] <= 256 else np.uint16
    return np.argmax(probs, axis=-1).astype(dtype)


def predict_files(seg: Segmenter, paths: Sequence[os.PathLike], *,
                  batch_size: int | None = None, workers: int = 2, prefetch: int = 32
                  ) -> Iterator[tuple[os.PathLike, np.ndarray | UnetCoreError]]:
    """Class probabilities of image files, in their order: (path, float32 (H, W, K)) or
    (path, the UnetCoreError that file raised).

    Files are decoded ahead in ``workers`` threads (at most ``prefetch`` waiting), and
    consecutive images go ``batch_size`` (default: the segmenter's) at a time through
    :meth:`Segmenter.predict_batch_classes` (images that reach the network at one size share a
    forward pass; a batch holds at most ``max_batch_pixels`` decoded pixels). A batch that
    fails is predicted image by image, so each error names its own file. The values are those
    of :meth:`Segmenter.predict_classes` image by image (ONNX Runtime's per-image CPU results
    do not depend on the batch, checked bit for bit on the bundled models).
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from .io import read_raw

    step = max(1, batch_size or seg.batch_size)

    def read(path: os.PathLike) -> np.ndarray | UnetCoreError:
        try:
            return read_raw(path)
        except UnetCoreError as exc:
            return exc

    def run(chunk: list[tuple[os.PathLike, np.ndarray]]
            ) -> Iterator[tuple[os.PathLike, np.ndarray | UnetCoreError]]:
        try:
            probs = seg.predict_batch_classes([im for _, im in chunk])
        except UnetCoreError:
            for path, im in chunk:  # again one at a time: the error names its file
                try:
                    yield path, seg.predict_classes(im)
                except UnetCoreError as exc:
                    yield path, exc
            return
        yield from zip((p for p, _ in chunk), probs, strict=True)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: list[tuple[os.PathLike, Future]] = []
        todo = iter(paths)
        chunk: list[tuple[os.PathLike, np.ndarray]] = []
        pixels = 0
        while True:
            while len(pending) < prefetch:
                nxt = next(todo, None)
                if nxt is None:
                    break
                pending.append((nxt, pool.submit(read, nxt)))
            if not pending:
                break
            path, fut = pending.pop(0)
            image = fut.result()
            if isinstance(image, UnetCoreError):
                yield from run(chunk)  # keep the order: what came before goes first
                chunk, pixels = [], 0
                yield path, image
                continue
            chunk.append((path, image))
            pixels += int(np.prod(image.shape[:2]))
            if len(chunk) >= step or pixels >= seg.max_batch_pixels:
                yield from run(chunk)
                chunk, pixels = [], 0
        yield from run(chunk)
