"""Data-set evaluation: read pairs, predict in batches, sweep thresholds, all streamed.

Reading and decoding run in a small thread pool ahead of the network (PIL and numpy release the
GIL), images that pad to the same size are batched, and every prediction goes straight into an
accumulator (:class:`~unet_core.metrics.SweepAccumulator` for a binary map,
:class:`~unet_core.metrics.ClassAccumulator` for label maps), so memory stays flat whatever
the data-set size.

Images are read as decoded (:func:`unet_core.io.read_raw`: native dtype, channels kept), so the
card's preprocessing sees what it expects (a ``raw`` model gets its 0-255 values).

* :func:`evaluate_pairs`: the probability map of one class (default: the card's) against
  binary masks, swept over thresholds.
* :func:`evaluate_classes`: the argmax label map against label masks (pixel values = class
  indices, or a palette PNG), per-class IoU / Dice and their mean over classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DataSetError
from .inference import Segmenter, labels_from_probs
from .io import Pair, display_name, load_pair
from .metrics import (
    ClassAccumulator,
    ClassResult,
    SweepAccumulator,
    SweepResult,
    check_min_area,
    check_select_metric,
)

ProgressFn = Callable[[int, int], None]

#: A label-map batch holds at most this many class-probability values (H x W x K summed over
#: its images, float32: 128 MB), so many-class models on large images stay bounded.
MAX_BATCH_VALUES = 2**25


@dataclass
class Evaluation:
    """Result of evaluating one class's probability map on a data set of binary masks."""

    sweep: SweepResult               # with the minimum-area rule reported (sweep.min_area)
    threshold: float                 # the threshold reported (the card's unless overridden)
    select_metric: str = "tgs_metric"
    class_index: int = 0             # the model output channel scored
    class_name: str = ""
    #: names of the pairs whose mask was not cleanly two-level (thresholded; see
    #: :func:`unet_core.io.mask_is_binary`), so callers can warn
    soft_masks: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Metrics at the threshold, the best threshold and its metrics, all with the sweep's
        minimum-area rule ("min_area", 0 = off) (JSON-ready)."""
        s = self.sweep
        at = s.summary_at(self.threshold)
        best_i = s.best_index(self.select_metric)
        best_t = float(s.thresholds[best_i])
        at_best = s.summary_at(best_t)
        iou_i = s.best_index("mean_iou")
        return {
            "n": len(s.names),
            "threshold": float(at["threshold"]), "min_area": s.min_area,
            "iou": at["iou"], "dice": at["dice"], "precision": at["precision"],
            "recall": at["recall"], "tgs_metric": at["tgs_metric"], "pooled_iou": at["pooled_iou"],
            "best_threshold": best_t,
            "best_tgs_metric": at_best["tgs_metric"],
            "best_iou": float(s.mean_iou[iou_i]),
            "best_iou_threshold": float(s.thresholds[iou_i]),
            "iou_at_best_threshold": at_best["iou"],
            "dice_at_best_threshold": at_best["dice"],
            "selected_by": self.select_metric,
            "class_index": self.class_index,
            "class_name": self.class_name,
        }


def add_predictions(acc: SweepAccumulator, segmenter: Segmenter, images: Sequence[np.ndarray],
                    truths: Sequence[np.ndarray], names: Sequence[str],
                    padding_mode: str | None = None, class_index: int | None = None) -> None:
    """Predict images ((H, W) or (H, W, C) each, as decoded or float [0, 1]) in one batch and
    add the probability map of ``class_index`` (default: the card's) with their bool truths."""
    probs = segmenter.predict_batch(list(images), padding_mode, class_index=class_index)
    for prob, truth, name in zip(probs, truths, names, strict=True):
        acc.add(prob, truth, name)


def iter_loaded(pairs: Sequence[Pair], max_pixels: int | None = None, workers: int = 2,
                prefetch: int = 64, *, raw: bool = False, n_classes: int | None = None,
                soft_masks: list[str] | None = None,
                ) -> Iterator[tuple[Pair, np.ndarray, np.ndarray | None]]:
    """Yield (pair, image, mask | None), decoding ahead in threads (see
    :func:`unet_core.io.load_pair`: ``raw`` keeps the decoded image, ``n_classes`` reads label
    masks; by default image float32 (H, W) and mask bool (H, W); ``soft_masks`` collects the
    names of binary masks that had to be thresholded)."""

    def load(pair: Pair) -> tuple[np.ndarray, np.ndarray | None]:
        return load_pair(pair, max_pixels=max_pixels, raw=raw, n_classes=n_classes,
                         soft_masks=soft_masks)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = []
        it = iter(pairs)
        for pair in it:
            pending.append((pair, pool.submit(load, pair)))
            if len(pending) >= prefetch:
                break
        while pending:
            pair, fut = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(load, nxt)))
            img, mask = fut.result()
            yield pair, img, mask


def _no_mask(pair: Pair) -> DataSetError:
    return DataSetError(
        f"{display_name(pair.name)}: no mask; evaluation needs a mask for every image")


def evaluate_pairs(segmenter: Segmenter, pairs: Sequence[Pair], *,
                   padding_mode: str | None = None, threshold: float | None = None,
                   select_metric: str | None = None, batch_size: int = 32,
                   max_pixels: int | None = None, progress: ProgressFn | None = None,
                   invert_masks: bool = False, min_area: int | None = None,
                   class_index: int | None = None) -> Evaluation:
    """Evaluate one class's probability map on image/mask pairs (every pair needs a binary
    mask).

    ``class_index`` picks the model output scored (default: the card's default class, e.g.
    the first class after the background of a softmax). ``threshold`` and ``min_area`` (the
    minimum-area rule, pixels) default to the card's, ``select_metric`` (what picks the best
    threshold) to ``card.selection_metric``; the sweep keeps its counts, so
    ``evaluation.sweep.with_min_area(k)`` tries another rule. ``invert_masks`` scores against
    the complement of each mask (for data whose masks mark the other class, see
    ``ModelCard.truth_inverted``). ``progress(done, total)`` is called after each batch.
    Raises the io errors of a bad pair, UnetCoreError for a class the model does not have.
    """
    card = segmenter.card
    t = card.threshold if threshold is None else threshold
    k = check_min_area(card.min_area if min_area is None else min_area)
    metric = card.selection_metric if select_metric is None else check_select_metric(
        select_metric)
    cls = segmenter._class(class_index)  # validates the index against the model's classes
    acc = SweepAccumulator()
    total = len(pairs)
    done = 0
    batch: list[tuple[Pair, np.ndarray, np.ndarray]] = []

    def flush() -> None:
        nonlocal done
        add_predictions(acc, segmenter, [b[1] for b in batch], [b[2] for b in batch],
                        [b[0].name for b in batch], padding_mode, class_index=cls)
        done += len(batch)
        batch.clear()
        if progress:
            progress(done, total)

    soft: list[str] = []
    for pair, img, mask in iter_loaded(pairs, max_pixels=max_pixels, raw=True, soft_masks=soft):
        if mask is None:
            raise _no_mask(pair)
        batch.append((pair, img, ~mask if invert_masks else mask))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return Evaluation(acc.result(k), float(t), metric, cls, card.class_name(cls),
                      soft_masks=sorted(soft))


def class_names_for(segmenter: Segmenter) -> list[str]:
    """The classes a label-mask evaluation scores: the card's K >= 2 class names, or
    ``["background", card.foreground]`` for a one-map (sigmoid) model."""
    card = segmenter.card
    return list(card.classes) if card.n_classes >= 2 else ["background", card.foreground]


def evaluate_classes(segmenter: Segmenter, pairs: Sequence[Pair], *,
                     padding_mode: str | None = None, threshold: float | None = None,
                     batch_size: int = 32, max_pixels: int | None = None,
                     progress: ProgressFn | None = None,
                     max_batch_values: int = MAX_BATCH_VALUES) -> ClassResult:
    """Score a model's label maps against label masks (every pair needs one).

    Masks are read with :func:`unet_core.io.read_label_mask` (pixel values = class indices,
    or a palette PNG; a class the model does not have is a MaskError). The prediction is the
    argmax over the K >= 2 classes of a softmax model; a one-map model is scored as two
    classes (background, foreground) at ``threshold`` (default: the card's). Returns a
    :class:`~unet_core.metrics.ClassResult`: per-class IoU / Dice (per-image mean and pooled),
    their mean over all classes, pixel accuracy and per-image rows.
    ``progress(done, total)`` is called after each batch. A batch holds at most
    ``batch_size`` images and ``max_batch_values`` class probabilities.
    """
    names = class_names_for(segmenter)
    n_classes = len(names)
    t = segmenter.card.threshold if threshold is None else threshold
    acc = ClassAccumulator(n_classes, names)
    total = len(pairs)
    done = 0
    batch: list[tuple[Pair, np.ndarray, np.ndarray]] = []
    values = 0

    def flush() -> None:
        nonlocal done, values
        probs = segmenter.predict_batch_classes([b[1] for b in batch], padding_mode)
        for (pair, _, truth), prob in zip(batch, probs, strict=True):
            acc.add(labels_from_probs(prob, t), truth, pair.name)
        done += len(batch)
        batch.clear()
        values = 0
        if progress:
            progress(done, total)

    per_pixel = segmenter.n_classes
    for pair, img, mask in iter_loaded(pairs, max_pixels=max_pixels, raw=True,
                                       n_classes=n_classes):
        if mask is None:
            raise _no_mask(pair)
        batch.append((pair, img, mask))
        values += mask.size * per_pixel
        if len(batch) >= batch_size or values >= max_batch_values:
            flush()
    if batch:
        flush()
    return acc.result()
