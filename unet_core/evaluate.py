"""Data-set evaluation: read pairs, predict in batches, sweep thresholds, all streamed.

Reading and decoding run in a small thread pool ahead of the network (PIL and numpy release the
GIL), images that pad to the same size are batched, and every probability map goes straight into
a :class:`~unet_core.metrics.SweepAccumulator`, so memory stays flat whatever the data-set size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DataSetError
from .inference import Segmenter
from .io import Pair, load_pair
from .metrics import SweepAccumulator, SweepResult, check_min_area

ProgressFn = Callable[[int, int], None]


@dataclass
class Evaluation:
    """Result of evaluating a model on a data set."""

    sweep: SweepResult               # with the minimum-area rule reported (sweep.min_area)
    threshold: float                 # the threshold reported (the card's unless overridden)
    select_metric: str = "tgs_metric"

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
        }


def add_predictions(acc: SweepAccumulator, segmenter: Segmenter, images: Sequence[np.ndarray],
                    truths: Sequence[np.ndarray], names: Sequence[str],
                    padding_mode: str | None = None) -> None:
    """Predict images (float32 (H, W) each) in one batch and add them with their bool truths."""
    probs = segmenter.predict_batch(list(images), padding_mode)
    for prob, truth, name in zip(probs, truths, names, strict=True):
        acc.add(prob, truth, name)


def iter_loaded(pairs: Sequence[Pair], max_pixels: int | None = None, workers: int = 2,
                prefetch: int = 64) -> Iterator[tuple[Pair, np.ndarray, np.ndarray | None]]:
    """Yield (pair, image float32 (H, W), mask bool (H, W) | None), decoding ahead in threads."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = []
        it = iter(pairs)
        for pair in it:
            pending.append((pair, pool.submit(load_pair, pair, max_pixels=max_pixels)))
            if len(pending) >= prefetch:
                break
        while pending:
            pair, fut = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(load_pair, nxt, max_pixels=max_pixels)))
            img, mask = fut.result()
            yield pair, img, mask


def evaluate_pairs(segmenter: Segmenter, pairs: Sequence[Pair], *,
                   padding_mode: str | None = None, threshold: float | None = None,
                   select_metric: str = "tgs_metric", batch_size: int = 32,
                   max_pixels: int | None = None, progress: ProgressFn | None = None,
                   invert_masks: bool = False, min_area: int | None = None) -> Evaluation:
    """Evaluate a model on image/mask pairs (every pair must have a mask).

    ``threshold`` and ``min_area`` (the minimum-area rule, pixels) default to the card's; the
    sweep keeps its counts, so ``evaluation.sweep.with_min_area(k)`` tries another rule.
    ``invert_masks`` scores against the complement of each mask (for data whose masks mark the
    other class, see ``ModelCard.truth_inverted``). ``progress(done, total)`` is called after
    each batch. Raises the io errors of a bad pair.
    """
    t = segmenter.card.threshold if threshold is None else threshold
    k = check_min_area(segmenter.card.min_area if min_area is None else min_area)
    acc = SweepAccumulator()
    total = len(pairs)
    done = 0
    batch: list[tuple[Pair, np.ndarray, np.ndarray]] = []

    def flush() -> None:
        nonlocal done
        add_predictions(acc, segmenter, [b[1] for b in batch], [b[2] for b in batch],
                        [b[0].name for b in batch], padding_mode)
        done += len(batch)
        batch.clear()
        if progress:
            progress(done, total)

    for pair, img, mask in iter_loaded(pairs, max_pixels=max_pixels):
        if mask is None:
            raise DataSetError(f"{pair.name}: no mask; evaluation needs a mask for every image")
        batch.append((pair, img, ~mask if invert_masks else mask))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return Evaluation(acc.result(k), float(t), select_metric)
