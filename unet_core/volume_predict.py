"""Segment a volume slice by slice, and score it against a label volume.

:func:`segment_volume` cuts a :class:`~unet_core.volume.Volume` into the 2-D slices a person
sees along one axis (:meth:`Volume.slice`), runs them through a
:class:`~unet_core.inference.Segmenter` in batches, and writes every slice's probabilities
back where it came from (:meth:`Volume.put_slice`), so the result has the volume's own
geometry. A slice goes through exactly the path an image with the same numbers would: the
card's channel mapping, value scaling, fit, padding and tiling.

Value scaling: when the card says ``percentile`` or ``unit`` (:data:`CLIPPED`; signed
amplitudes have no full scale) and the volume carries a SEG-Y amplitude clip
(``volume.stats["clip"]``, computed once per cube by the reader), every slice is scaled with
that one clip (:func:`unet_core.segy.scale_amplitudes`) and fed as float [0, 1] with the card's
normalisation set to ``unit``, so all slices share one scale. A one-channel DICOM volume with a
window (``volume.stats["window"]``: the file's VOI LUT / window, or the one the user set) is
fed windowed to float [0, 1] (:func:`unet_core.dicom.windowed`, the image a viewer would
export), and the card's normalisation then applies to that as to any image. Otherwise slices go
in as read and the card's normalisation applies per slice (e.g. ``percentile`` statistics over
each slice), as it would to each exported image.

:func:`evaluate_volume` thresholds the probabilities (minimum-area rule per slice, as the image
path does) and reports per-slice IoU/Dice and whole-volume (3-D) IoU/Dice with the empty-mask
rules of :mod:`unet_core.metrics` (both empty: 1.0).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import UnetCoreError
from .inference import Segmenter, labels_from_probs
from .metrics import check_min_area, confusion_counts, dice, iou, threshold_mask
from .model import ModelCard
from .volume import Volume, check_voxels

ProgressFn = Callable[[int, int], None]


def _clip_scale(x: np.ndarray, stats: dict[str, Any]) -> np.ndarray:
    """Fallback of :func:`unet_core.segy.scale_amplitudes`: ``clip`` (lo, hi) -> [0, 1]."""
    lo, hi = (float(v) for v in stats["clip"])
    if hi - lo < 1e-12:
        return np.zeros(np.shape(x), np.float32)
    y = (np.asarray(x, np.float32) - lo) / (hi - lo)
    return np.clip(y, 0.0, 1.0).astype(np.float32)


CLIPPED: tuple[str, ...] = ("percentile", "unit")
"""Card normalisations that take a SEG-Y cube through its one amplitude clip to 0..1 (signed
amplitudes have no full scale, so ``unit`` means the clip too); ``raw`` keeps amplitudes, and
``minmax``/``zscore``/``meanstd`` apply per slice."""


def slice_scaling(card: ModelCard, volume: Volume
                  ) -> tuple[str | None, Callable[[np.ndarray], np.ndarray] | None]:
    """How a slice of ``volume`` reaches a model with ``card`` (see the module docstring):
    (the normalisation to use instead of the card's, or None; a per-slice scaler, or None for
    slices as read). The dashboard uses it to show exactly what :func:`segment_volume` feeds."""
    if volume.format == "dicom" and volume.channels == 1 and volume.stats.get("window"):
        from .dicom import windowed

        window = volume.stats["window"]
        return None, lambda x: np.asarray(windowed(x, window), dtype=np.float32)
    if card.normalisation not in CLIPPED or not volume.stats.get("clip"):
        return None, None
    try:
        from .segy import scale_amplitudes
    except ImportError:  # the SEG-Y module (or segyio) is absent: same rule, local
        scale_amplitudes = _clip_scale
    stats = volume.stats
    return "unit", lambda x: np.asarray(scale_amplitudes(x, stats), dtype=np.float32)


def _scaler(seg: Segmenter, volume: Volume
            ) -> tuple[Segmenter, Callable[[np.ndarray], np.ndarray] | None]:
    """The segmenter to use and a per-slice scaler (None: slices as read)."""
    normalisation, scale = slice_scaling(seg.card, volume)
    if normalisation is None:
        return seg, scale
    runner = copy.copy(seg)
    runner.card = dataclasses.replace(seg.card, normalisation=normalisation)
    return runner, scale


def scaling_note(seg: Segmenter, volume: Volume) -> str:
    """One sentence saying how slices reach the network (see the module docstring)."""
    if volume.format == "dicom" and volume.channels == 1 and volume.stats.get("window"):
        w = volume.stats["window"]
        what = (f"centre {w['center']:g}, width {w['width']:g}"
                if isinstance(w, dict) and "center" in w and "width" in w else "the file's VOI LUT")
        return (f"slices windowed to 0..1 ({what}), then the card's {seg.card.normalisation} "
                "scaling")
    if seg.card.normalisation in CLIPPED and volume.stats.get("clip"):
        lo, hi = volume.stats["clip"]
        return (f"slices scaled with the cube's one amplitude clip {float(lo):.6g}..{float(hi):.6g}"
                f" to 0..1 ({seg.card.normalisation} card), fed as unit")
    return f"each slice as read, the card's {seg.card.normalisation} scaling per slice"


def segment_volume(seg: Segmenter, volume: Volume, axis: str, *, batch_size: int = 8,
                   progress: ProgressFn | None = None, class_index: int | None = None,
                   all_classes: bool = False, padding_mode: str | None = None) -> np.ndarray:
    """Probabilities of every voxel, slice by slice along ``axis``.

    Args:
        seg: the segmenter (its card's preprocessing applies; see the module docstring for
            the one exception, a ``percentile`` card on a SEG-Y cube with an amplitude clip).
        volume: the volume.
        axis: one of ``volume.axes``.
        batch_size: slices per call of :meth:`Segmenter.predict_batch_classes`.
        progress: ``progress(done, total)`` after each batch of slices.
        class_index: the class returned (default: the card's).
        all_classes: return every class: (D0, D1, D2, K).
        padding_mode: padding mode (default: the segmenter's).

    Returns:
        float32 (D0, D1, D2) probabilities of one class, or (D0, D1, D2, K).
    """
    n = volume.n_slices(axis)  # checks the axis
    k = seg._class(class_index)
    if batch_size < 1:
        raise UnetCoreError(f"batch size {batch_size}; accepted: a whole number >= 1")
    runner, scale = _scaler(seg, volume)
    shape = volume.shape + ((seg.n_classes,) if all_classes else ())
    check_voxels(shape, f"{volume.source.name} probabilities")  # bounded before allocating
    out = np.zeros(shape, np.float32)
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        slices = [volume.slice(axis, i) for i in idx]
        if scale is not None:
            slices = [scale(s) for s in slices]
        probs = runner.predict_batch_classes(slices, padding_mode)
        for i, p in zip(idx, probs, strict=True):
            volume.put_slice(out, axis, i, p if all_classes else p[..., k])
        if progress:
            progress(idx[-1] + 1, n)
    return out


def mask_volume(volume: Volume, probs: np.ndarray, axis: str, threshold: float,
                min_area: int = 0) -> np.ndarray:
    """uint8 0/1 mask of a (D0, D1, D2) probability cube: ``prob > threshold``, the
    minimum-area rule applied per slice along ``axis`` (as the image path applies it per
    image); a (D0, D1, D2, K) cube gives its argmax labels (uint8, uint16 over 256 classes)."""
    p = np.asarray(probs)
    if p.ndim == 4:
        if p.shape[-1] == 1:
            p = p[..., 0]
        else:
            a = volume.axis_index(axis)
            lab = np.zeros(p.shape[:3], np.uint8 if p.shape[-1] <= 256 else np.uint16)
            for i in range(p.shape[a]):
                idx = [slice(None)] * 3
                idx[a] = i
                lab[tuple(idx)] = labels_from_probs(p[tuple(idx)])
            return lab
    k = check_min_area(min_area)
    a = volume.axis_index(axis)
    mask = np.zeros(p.shape, np.uint8)
    for i in range(p.shape[a]):
        idx: list[Any] = [slice(None)] * 3
        idx[a] = i
        mask[tuple(idx)] = threshold_mask(p[tuple(idx)], threshold, k)
    return mask


def _check_labels(volume: Volume, labels: Volume) -> np.ndarray:
    if labels.shape != volume.shape or labels.data.ndim != 3:
        got = "x".join(str(s) for s in labels.data.shape)
        want = "x".join(str(s) for s in volume.shape)
        raise UnetCoreError(
            f"{labels.source.name}: a label volume of shape {got} does not match "
            f"{volume.source.name}; accepted: a label volume of the same geometry ({want})")
    if labels.format != volume.format:
        raise UnetCoreError(
            f"{labels.source.name}: a {labels.format} label volume for a {volume.format} "
            f"volume; accepted: a label volume in the same format and geometry")
    data = np.asarray(labels.data)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise UnetCoreError(f"{labels.source.name}: label volume holds NaN or infinite "
                            "values; accepted: finite class indices (0 = background)")
    return data


def evaluate_volume(seg: Segmenter, volume: Volume, labels_volume: Volume, axis: str,
                    threshold: float | None = None, *, min_area: int | None = None,
                    class_index: int | None = None, batch_size: int = 8,
                    progress: ProgressFn | None = None) -> dict[str, Any]:
    """Score one class's mask against a label volume of the same geometry.

    Truth: label value > 0 for a one-map (sigmoid) model; label == the scored class for a
    softmax model. Prediction: ``prob > threshold`` (default the card's) with the minimum-area
    rule (default the card's) per slice along ``axis``.

    Returns (JSON-ready): ``axis``, ``n_slices``, ``threshold``, ``min_area``, ``class_index``,
    ``slices`` (per slice: ``index``, ``iou``, ``dice``, ``truth_voxels``, ``pred_voxels``),
    ``mean_slice_iou``/``mean_slice_dice`` (mean over slices), and ``iou``/``dice``,
    ``truth_voxels``, ``pred_voxels`` of the whole volume (3-D).
    """
    _check_labels(volume, labels_volume)
    k = seg._class(class_index)
    probs = segment_volume(seg, volume, axis, batch_size=batch_size, progress=progress,
                           class_index=k)
    return score_volume(seg, volume, labels_volume, axis, probs, threshold=threshold,
                        min_area=min_area, class_index=k)


def score_volume(seg: Segmenter, volume: Volume, labels_volume: Volume, axis: str,
                 probs: np.ndarray, *, threshold: float | None = None,
                 min_area: int | None = None, class_index: int | None = None
                 ) -> dict[str, Any]:
    """:func:`evaluate_volume`'s scoring of an already predicted probability cube ``probs``
    (float32, the volume's shape, of ``class_index``): same rules, same JSON-ready dict."""
    truth_data = _check_labels(volume, labels_volume)
    k = seg._class(class_index)
    t = seg.card.threshold if threshold is None else float(threshold)
    area = seg.card.min_area if min_area is None else min_area
    pred = mask_volume(volume, probs, axis, t, area).astype(bool)
    truth = truth_data > 0 if seg.n_classes == 1 else truth_data == k
    a = volume.axis_index(axis)
    rows = []
    for i in range(volume.shape[a]):
        p, g = np.take(pred, i, axis=a), np.take(truth, i, axis=a)
        tp, fp, fn, _ = confusion_counts(p, g)
        rows.append({"index": i, "iou": iou(p, g), "dice": dice(p, g),
                     "truth_voxels": tp + fn, "pred_voxels": tp + fp})
    tp, fp, fn, _ = confusion_counts(pred, truth)
    return {
        "axis": axis, "n_slices": len(rows), "shape": list(volume.shape), "threshold": t,
        "min_area": int(area), "class_index": k, "class_name": seg.card.class_name(k),
        "slices": rows,
        "mean_slice_iou": float(np.mean([r["iou"] for r in rows])),
        "mean_slice_dice": float(np.mean([r["dice"] for r in rows])),
        "iou": iou(pred, truth), "dice": dice(pred, truth),
        "truth_voxels": tp + fn, "pred_voxels": tp + fp,
    }
