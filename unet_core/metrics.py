"""Segmentation metrics and vectorised threshold sweeps (pure numpy).

Definitions used everywhere in this module
------------------------------------------
* A *probability map* ``prob`` is a real array (float or integer dtype) with values in
  [0, 1] and no NaN. A *mask* is a ``bool`` array; ``True`` is foreground (salt).
* Foreground at threshold ``t`` is ``prob > t`` (strictly greater), compared in float64.
  So ``t = 1.0`` always gives an empty mask and ``t = 0.0`` keeps every pixel whose
  probability is not exactly 0.
* From the confusion counts ``tp, fp, fn, tn`` of a prediction against the truth
  (``N = tp + fp + fn + tn`` pixels):

  - IoU (Jaccard)        = tp / (tp + fp + fn)   -- |A∩B| / |A∪B|, never pixel accuracy
  - Dice (F1)            = 2 tp / (2 tp + fp + fn)
  - precision            = tp / (tp + fp)
  - recall               = tp / (tp + fn)
  - pixel accuracy       = (tp + tn) / N
  - coverage (true/pred) = foreground pixels / N  (of the truth / of the prediction)

* Empty-mask rule, for every ratio whose denominator is 0: the value is 1.0 when the
  prediction and the truth are both empty (nothing to find, nothing found), else 0.0.
  E.g. an empty prediction on a non-empty truth has precision 0, recall 0, IoU 0; a
  non-empty prediction on an empty truth has recall 0.
* TGS Salt competition score of one image: the mean, over the 10 IoU thresholds
  ``s`` in 0.50, 0.55, ..., 0.95 (:data:`IOU_THRESHOLDS`), of ``[IoU > s]`` (strict).
  Both masks empty -> 1; exactly one empty -> 0. The data-set TGS metric is the mean of
  the per-image scores.
* A *threshold sweep* evaluates every image at every threshold of a grid (default
  :data:`DEFAULT_THRESHOLDS`, 0.00, 0.01, ..., 1.00) in one vectorised pass; its counts
  are exactly those of :func:`confusion_counts` on :func:`threshold_mask` at each grid
  threshold. ``pooled_iou`` is the IoU of all pixels of all images pooled together.
* Minimum-area rule (``min_area = K``, 0 = off): a thresholded mask with fewer than K
  foreground pixels is emptied, as a whole image ("nothing here"). On data with many empty
  masks (TGS: 39 %) a few stray pixels cost a whole image's score, so models may record a K
  chosen on validation (:func:`select_threshold`). A sweep applies it from its counts: at each
  threshold, an image whose predicted area ``tp + fp`` is below K gets ``tp = fp = 0``.

Multi-class label maps (K >= 2 classes)
---------------------------------------
* A *label map* is an integer (or bool) array of class indices 0..K-1; the prediction is the
  argmax of a softmax model's class probabilities, the truth a label mask
  (:func:`unet_core.io.read_label_mask`).
* :func:`class_confusion` counts pixels by (truth class, predicted class): an int64 (K, K)
  matrix ``C`` with rows = truth, columns = prediction. For class ``k``:
  ``tp = C[k, k]``, ``fp = C[:, k].sum() - tp``, ``fn = C[k, :].sum() - tp``, and IoU and
  Dice of class ``k`` are the binary formulas above on the masks ``label == k``.
* The empty-mask rule is the binary one: a class absent from both the truth and the
  prediction of an image (``tp + fp + fn == 0``) scores IoU = Dice = 1.0 on that image.
* Per class, two aggregates over a data set (:class:`ClassAccumulator`): the *per-image mean*
  (mean over images of the image's IoU / Dice of that class, empty rule included, like
  ``mean_iou`` of a binary sweep) and the *pooled* value (IoU / Dice of the counts summed
  over all images; 1.0 only when the class appears nowhere, in truth or prediction).
* The *mean over classes* (``mean_iou``, ``mean_dice``, and the pooled versions) averages
  **all K classes, background included**, each with the empty rule above (MONAI's
  ``include_background=True``; unlike MONAI's ``ignore_empty`` no class is left out, so a
  class neither present nor predicted counts 1.0).
* Pixel accuracy = pixels whose predicted class equals the truth / all pixels (per image, and
  pooled over the set).

Bad arguments raise :class:`unet_core.errors.UnetCoreError` with a one-line message.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np

from unet_core.errors import UnetCoreError

__all__ = [
    "ClassAccumulator",
    "ClassResult",
    "DEFAULT_THRESHOLDS",
    "IOU_THRESHOLDS",
    "MIN_AREA_CANDIDATES",
    "SweepAccumulator",
    "SweepResult",
    "check_min_area",
    "class_confusion",
    "class_dice",
    "class_iou",
    "check_select_metric",
    "confusion_counts",
    "dice",
    "iou",
    "pixel_accuracy",
    "precision",
    "recall",
    "segmentation_metrics",
    "select_threshold",
    "tgs_score",
    "tgs_score_from_iou",
    "threshold_mask",
    "threshold_sweep",
]

#: The 10 IoU thresholds of the TGS Salt metric: 0.50, 0.55, ..., 0.95 (float64, read-only).
IOU_THRESHOLDS: np.ndarray = np.round(np.arange(10) * 0.05 + 0.5, 2)
IOU_THRESHOLDS.setflags(write=False)

#: Default sweep grid: np.linspace(0, 1, 101), rounded so value k is exactly the float k/100
#: (float64, read-only).
DEFAULT_THRESHOLDS: np.ndarray = np.round(np.linspace(0.0, 1.0, 101), 2)
DEFAULT_THRESHOLDS.setflags(write=False)

_BEST_METRICS = ("tgs_metric", "mean_iou", "mean_dice", "pooled_iou")
#: Metrics that may pick a recommended threshold, and their key in :meth:`SweepResult.summary_at`.
SELECT_METRICS: dict[str, str] = {"tgs_metric": "tgs_metric", "mean_iou": "iou",
                                  "mean_dice": "dice"}
#: Minimum areas (pixels) that :func:`select_threshold` tries; 0 (rule off) is always first.
MIN_AREA_CANDIDATES: tuple[int, ...] = (0, 5, 10, 20, 40, 80, 160, 320)


def check_select_metric(select_metric: str) -> str:
    """``select_metric`` if it is a key of :data:`SELECT_METRICS`, else raise UnetCoreError."""
    if select_metric not in SELECT_METRICS:
        raise UnetCoreError(f"unknown select_metric {select_metric!r}; accepted: "
                            f"{', '.join(SELECT_METRICS)}")
    return select_metric


# Largest number of pixels handled in one vectorised chunk of a batch (bounds memory).
_CHUNK_PIXELS = 4_000_000


# --------------------------------------------------------------------------- validation


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.dtype} array of shape {x.shape}"
    return type(x).__name__


def _as_mask(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a non-empty bool ndarray, or raise."""
    if isinstance(x, np.ndarray | np.bool_ | bool | list | tuple):
        arr = np.asarray(x)
    else:
        raise UnetCoreError(f"{name} must be a bool numpy array, got {_describe(x)}")
    if arr.dtype != np.bool_:
        raise UnetCoreError(
            f"{name} must be a bool array, got dtype {arr.dtype}; "
            "convert it first, e.g. mask > 0 or prob > threshold"
        )
    if arr.ndim == 0 or arr.size == 0:
        raise UnetCoreError(f"{name} must be a non-empty bool array, got shape {arr.shape}")
    return arr


def _as_pair(pred: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _as_mask(pred, "pred")
    t = _as_mask(truth, "truth")
    if p.shape != t.shape:
        raise UnetCoreError(f"pred and truth must have the same shape, got {p.shape} and {t.shape}")
    return p, t


def _as_prob(x: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """Return ``x`` as a float64 ndarray with values in [0, 1], or raise."""
    if not isinstance(x, np.ndarray | list | tuple):
        raise UnetCoreError(f"{name} must be a float numpy array in [0, 1], got {_describe(x)}")
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise UnetCoreError(
            f"{name} must be a float array of probabilities in [0, 1], got dtype {arr.dtype}"
        )
    if arr.size == 0:
        raise UnetCoreError(f"{name} must not be empty, got shape {arr.shape}")
    if ndim is not None and arr.ndim != ndim:
        what = "HxW" if ndim == 2 else "(B, H, W)"
        raise UnetCoreError(f"{name} must be a {ndim}-D {what} array, got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if np.isnan(arr).any():
        raise UnetCoreError(f"{name} contains NaN; probabilities must be numbers in [0, 1]")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise UnetCoreError(
            f"{name} has values in [{lo:.4g}, {hi:.4g}]; probabilities must lie in [0, 1]"
        )
    return arr


def _as_threshold(threshold: Any, name: str = "threshold") -> float:
    if isinstance(threshold, bool | np.bool_) or not isinstance(
        threshold, int | float | np.integer | np.floating
    ):
        raise UnetCoreError(f"{name} must be a number in [0, 1], got {_describe(threshold)}")
    t = float(threshold)
    if math.isnan(t) or not 0.0 <= t <= 1.0:
        raise UnetCoreError(f"{name} must be a number in [0, 1], got {t}")
    return t


def check_min_area(min_area: Any) -> int:
    """``min_area`` as an int >= 0 (pixels; 0 = the rule is off), or raise UnetCoreError."""
    if isinstance(min_area, bool | np.bool_) or not isinstance(min_area, int | np.integer):
        raise UnetCoreError(f"min_area must be a whole number of pixels >= 0, got "
                            f"{_describe(min_area)}")
    if min_area < 0:
        raise UnetCoreError(f"min_area must be a whole number of pixels >= 0, got {min_area}")
    return int(min_area)


def _as_thresholds(thresholds: Any) -> np.ndarray:
    """Validated, sorted, de-duplicated float64 copy of a threshold grid."""
    if thresholds is None:
        return np.array(DEFAULT_THRESHOLDS, dtype=np.float64)
    arr = np.asarray(thresholds)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise UnetCoreError(f"thresholds must be numbers in [0, 1], got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.size == 0:
        raise UnetCoreError(
            f"thresholds must be a non-empty 1-D array of numbers in [0, 1], got shape {arr.shape}"
        )
    arr = arr.astype(np.float64)
    if np.isnan(arr).any() or arr.min() < 0.0 or arr.max() > 1.0:
        raise UnetCoreError("thresholds must be numbers in [0, 1] (no NaN)")
    return np.unique(arr)


# --------------------------------------------------------------------------- core maths


def _ratio(num: np.ndarray, den: np.ndarray, both_empty: np.ndarray) -> np.ndarray:
    """num/den as float64; where den == 0: 1.0 if both masks are empty, else 0.0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    safe = np.where(den > 0, den, 1.0)
    return np.where(den > 0, num / safe, np.where(both_empty, 1.0, 0.0))


def _tgs_from_iou(
    iou_arr: np.ndarray, pred_empty: np.ndarray, truth_empty: np.ndarray
) -> np.ndarray:
    hits = np.asarray(iou_arr, dtype=np.float64)[..., None] > IOU_THRESHOLDS
    score = hits.mean(axis=-1)
    return np.where(pred_empty & truth_empty, 1.0, np.where(pred_empty ^ truth_empty, 0.0, score))


def _metrics_from_counts(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray
) -> dict[str, np.ndarray]:
    """All ratio metrics from (broadcastable) integer count arrays; shared by every path."""
    tp, fp, fn, tn = (np.asarray(c, dtype=np.int64) for c in (tp, fp, fn, tn))
    pred_empty = (tp + fp) == 0
    truth_empty = (tp + fn) == 0
    both = pred_empty & truth_empty
    n = tp + fp + fn + tn
    iou_arr = _ratio(tp, tp + fp + fn, both)
    return {
        "iou": iou_arr,
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, both),
        "precision": _ratio(tp, tp + fp, both),
        "recall": _ratio(tp, tp + fn, both),
        "pixel_accuracy": _ratio(tp + tn, n, both),
        "tgs_score": _tgs_from_iou(iou_arr, pred_empty, truth_empty),
        "coverage_true": _ratio(tp + fn, n, np.zeros_like(both)),
        "coverage_pred": _ratio(tp + fp, n, np.zeros_like(both)),
    }


# --------------------------------------------------------------------------- per image


def threshold_mask(prob: np.ndarray, threshold: float, min_area: int = 0) -> np.ndarray:
    """Binarise a probability map: float array (any shape, values in [0, 1]) -> bool
    array of the same shape, ``prob > threshold`` (strict, compared in float64), emptied
    when it has fewer than ``min_area`` foreground pixels (0, the default, keeps any mask)."""
    p = _as_prob(prob, "prob")
    mask = p > _as_threshold(threshold)
    if np.count_nonzero(mask) < check_min_area(min_area):
        mask[...] = False
    return mask


def confusion_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """Confusion counts of two bool masks of the same shape (normally HxW).

    Returns ``(tp, fp, fn, tn)`` as Python ints (pixel counts).
    """
    p, t = _as_pair(pred, truth)
    tp = int(np.count_nonzero(p & t))
    n_pred = int(np.count_nonzero(p))
    n_true = int(np.count_nonzero(t))
    fp = n_pred - tp
    fn = n_true - tp
    tn = int(p.size) - tp - fp - fn
    return tp, fp, fn, tn


def _one(pred: np.ndarray, truth: np.ndarray, key: str) -> float:
    return float(_metrics_from_counts(*confusion_counts(pred, truth))[key])


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """IoU (Jaccard) |A∩B|/|A∪B| of two bool masks of equal shape; 1.0 if both empty."""
    return _one(pred, truth, "iou")


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice 2|A∩B|/(|A|+|B|) of two bool masks of equal shape; 1.0 if both empty."""
    return _one(pred, truth, "dice")


def precision(pred: np.ndarray, truth: np.ndarray) -> float:
    """Precision tp/(tp+fp) of bool masks of equal shape (empty-mask rule if tp+fp == 0)."""
    return _one(pred, truth, "precision")


def recall(pred: np.ndarray, truth: np.ndarray) -> float:
    """Recall tp/(tp+fn) of bool masks of equal shape (empty-mask rule if tp+fn == 0)."""
    return _one(pred, truth, "recall")


def pixel_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of pixels where the two bool masks (equal shape) agree: (tp+tn)/N."""
    return _one(pred, truth, "pixel_accuracy")


def tgs_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """TGS Salt score of one image (bool masks of equal shape): mean of [IoU > s] over
    :data:`IOU_THRESHOLDS`; 1.0 if both masks are empty, 0.0 if exactly one is."""
    return _one(pred, truth, "tgs_score")


def tgs_score_from_iou(
    iou: float | np.ndarray,
    pred_empty: bool | np.ndarray,
    truth_empty: bool | np.ndarray,
) -> float | np.ndarray:
    """Vectorised TGS score from IoU values and emptiness flags.

    ``iou``: float or float array in [0, 1]; ``pred_empty``/``truth_empty``: bool or bool
    arrays; all three broadcast together. Returns a float when every input is a scalar,
    else a float64 array of the broadcast shape.
    """
    iou_arr = np.asarray(iou)
    if iou_arr.dtype == np.bool_ or not (
        np.issubdtype(iou_arr.dtype, np.floating) or np.issubdtype(iou_arr.dtype, np.integer)
    ):
        raise UnetCoreError(f"iou must be a number or float array in [0, 1], got {iou_arr.dtype}")
    iou_arr = iou_arr.astype(np.float64)
    if np.isnan(iou_arr).any() or (iou_arr.size and (iou_arr.min() < 0 or iou_arr.max() > 1)):
        raise UnetCoreError("iou values must be numbers in [0, 1] (no NaN)")
    pe = np.asarray(pred_empty)
    te = np.asarray(truth_empty)
    for name, flag in (("pred_empty", pe), ("truth_empty", te)):
        if flag.dtype != np.bool_:
            raise UnetCoreError(f"{name} must be a bool or bool array, got dtype {flag.dtype}")
    try:
        shape = np.broadcast_shapes(iou_arr.shape, pe.shape, te.shape)
    except ValueError:
        raise UnetCoreError(
            "iou, pred_empty and truth_empty must broadcast together, got shapes "
            f"{iou_arr.shape}, {pe.shape}, {te.shape}"
        ) from None
    out = _tgs_from_iou(iou_arr, pe, te)
    out = np.broadcast_to(out, shape)
    if out.ndim == 0:
        return float(out)
    return np.array(out, dtype=np.float64)


def segmentation_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """All metrics of one bool prediction against one bool truth (equal shapes).

    Keys: "iou", "dice", "precision", "recall", "pixel_accuracy", "tgs_score",
    "coverage_true", "coverage_pred" (coverages are fractions of foreground pixels).
    """
    m = _metrics_from_counts(*confusion_counts(pred, truth))
    return {k: float(v) for k, v in m.items()}


# --------------------------------------------------------------------------- sweeps


def _f64(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


@dataclass
class SweepResult:
    """Metrics of N images at each of T thresholds.

    Per-image arrays are (N, T) float64; ``coverage`` is (N,) (fraction of foreground
    pixels in each truth mask); ``thresholds`` and ``pooled_iou`` are (T,) float64.
    ``min_area`` is the minimum-area rule the metrics include (0 = off). ``counts``, when
    present, holds the confusion counts the metrics came from -- "tp" and "fp" (N, T) int64,
    "pos" and "neg" (N,) int64 (truth foreground / background pixels) -- so
    :meth:`with_min_area` can re-derive them for another rule without re-running anything.
    """

    thresholds: np.ndarray
    names: list[str]
    coverage: np.ndarray
    iou: np.ndarray
    dice: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    tgs: np.ndarray
    pooled_iou: np.ndarray
    min_area: int = 0
    counts: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.thresholds = _f64(self.thresholds)
        self.names = [str(n) for n in self.names]
        self.coverage = _f64(self.coverage)
        self.pooled_iou = _f64(self.pooled_iou)
        n, t = len(self.names), self.thresholds.shape[0] if self.thresholds.ndim == 1 else -1
        if n == 0 or t <= 0:
            raise UnetCoreError("a sweep result needs at least one image and one threshold")
        for field in ("iou", "dice", "precision", "recall", "tgs"):
            arr = _f64(getattr(self, field))
            if arr.shape != (n, t):
                raise UnetCoreError(
                    f"SweepResult.{field} must have shape (N, T) = {(n, t)}, got {arr.shape}"
                )
            setattr(self, field, arr)
        if self.coverage.shape != (n,) or self.pooled_iou.shape != (t,):
            raise UnetCoreError(
                f"SweepResult.coverage must be ({n},) and pooled_iou ({t},), "
                f"got {self.coverage.shape} and {self.pooled_iou.shape}"
            )
        self.min_area = check_min_area(self.min_area)
        if self.counts is not None:
            shapes = {"tp": (n, t), "fp": (n, t), "pos": (n,), "neg": (n,)}
            try:
                counts = {k: np.asarray(self.counts[k], dtype=np.int64) for k in shapes}
            except (KeyError, TypeError, ValueError):
                raise UnetCoreError("SweepResult.counts must hold integer arrays 'tp', 'fp', "
                                    "'pos' and 'neg'") from None
            bad = [k for k, shape in shapes.items() if counts[k].shape != shape]
            if bad:
                raise UnetCoreError(f"SweepResult.counts {bad} must have shapes "
                                    f"{[shapes[k] for k in bad]}")
            self.counts = counts

    def with_min_area(self, min_area: int) -> SweepResult:
        """The same sweep with the minimum-area rule ``min_area`` (pixels; 0 = off) instead
        of ``self.min_area``. Needs ``counts`` (every sweep this module makes has them)."""
        k = check_min_area(min_area)
        if k == self.min_area:
            return self
        if self.counts is None:
            raise UnetCoreError("this sweep result has no confusion counts, so its minimum "
                                "area cannot change; re-run the sweep")
        return _result_from_counts(self.thresholds, self.names, min_area=k, **self.counts)

    # ---- aggregates over images, each (T,)
    @property
    def mean_iou(self) -> np.ndarray:
        """(T,) mean per-image IoU at each threshold."""
        return self.iou.mean(axis=0)

    @property
    def mean_dice(self) -> np.ndarray:
        """(T,) mean per-image Dice at each threshold."""
        return self.dice.mean(axis=0)

    @property
    def mean_precision(self) -> np.ndarray:
        """(T,) mean per-image precision at each threshold."""
        return self.precision.mean(axis=0)

    @property
    def mean_recall(self) -> np.ndarray:
        """(T,) mean per-image recall at each threshold."""
        return self.recall.mean(axis=0)

    @property
    def tgs_metric(self) -> np.ndarray:
        """(T,) data-set TGS metric (mean of per-image TGS scores) at each threshold."""
        return self.tgs.mean(axis=0)

    # ---- lookups
    def best_index(self, metric: str = "tgs_metric") -> int:
        """Index of the threshold maximising ``metric`` (one of "tgs_metric", "mean_iou",
        "mean_dice", "pooled_iou"); ties go to the threshold closest to 0.5 (then the lower)."""
        if metric not in _BEST_METRICS:
            raise UnetCoreError(f"unknown metric {metric!r}; accepted: {', '.join(_BEST_METRICS)}")
        values = np.asarray(getattr(self, metric), dtype=np.float64)
        tied = np.flatnonzero(values >= values.max() - 1e-12)
        dist = np.abs(self.thresholds[tied] - 0.5)
        return int(tied[int(np.argmin(dist))])

    def best_threshold(self, metric: str = "tgs_metric") -> float:
        """Threshold maximising ``metric`` (see :meth:`best_index`)."""
        return float(self.thresholds[self.best_index(metric)])

    def index_of(self, threshold: float) -> int:
        """Index of the grid threshold nearest to ``threshold`` (ties: the lower one)."""
        t = _as_threshold(threshold)
        return int(np.argmin(np.abs(self.thresholds - t)))

    def summary_at(self, threshold: float) -> dict[str, float]:
        """Means over images at the grid threshold nearest to ``threshold``.

        Keys: "threshold" (the grid value used), "iou", "dice", "precision", "recall",
        "tgs_metric", "pooled_iou".
        """
        k = self.index_of(threshold)
        return {
            "threshold": float(self.thresholds[k]),
            "iou": float(self.mean_iou[k]),
            "dice": float(self.mean_dice[k]),
            "precision": float(self.mean_precision[k]),
            "recall": float(self.mean_recall[k]),
            "tgs_metric": float(self.tgs_metric[k]),
            "pooled_iou": float(self.pooled_iou[k]),
        }

    def per_image(self, threshold: float) -> list[dict]:
        """One dict per image, in input order, at the grid threshold nearest to
        ``threshold``: {"name", "coverage", "iou", "dice", "precision", "recall", "tgs_score"}."""
        k = self.index_of(threshold)
        return [
            {
                "name": name,
                "coverage": float(self.coverage[i]),
                "iou": float(self.iou[i, k]),
                "dice": float(self.dice[i, k]),
                "precision": float(self.precision[i, k]),
                "recall": float(self.recall[i, k]),
                "tgs_score": float(self.tgs[i, k]),
            }
            for i, name in enumerate(self.names)
        ]

    def to_dict(self) -> dict:
        """JSON-serialisable dict: every field as (nested) lists of numbers, plus the (T,)
        aggregates "mean_iou", "mean_dice", "mean_precision", "mean_recall", "tgs_metric"."""
        return {
            "thresholds": self.thresholds.tolist(),
            "names": list(self.names),
            "coverage": self.coverage.tolist(),
            "iou": self.iou.tolist(),
            "dice": self.dice.tolist(),
            "precision": self.precision.tolist(),
            "recall": self.recall.tolist(),
            "tgs": self.tgs.tolist(),
            "pooled_iou": self.pooled_iou.tolist(),
            "mean_iou": self.mean_iou.tolist(),
            "mean_dice": self.mean_dice.tolist(),
            "mean_precision": self.mean_precision.tolist(),
            "mean_recall": self.mean_recall.tolist(),
            "tgs_metric": self.tgs_metric.tolist(),
            "min_area": self.min_area,
            **({"counts": {k: v.tolist() for k, v in self.counts.items()}}
               if self.counts is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> SweepResult:
        """Inverse of :meth:`to_dict` (extra aggregate keys are ignored)."""
        keys = (
            "thresholds", "names", "coverage", "iou", "dice",
            "precision", "recall", "tgs", "pooled_iou",
        )  # fmt: skip
        missing = [k for k in keys if k not in data]
        if missing:
            raise UnetCoreError(f"sweep dict is missing keys {missing}; expected {list(keys)}")
        optional = {k: data[k] for k in ("min_area", "counts") if k in data}
        return cls(**{k: data[k] for k in keys}, **optional)


class SweepAccumulator:
    """Streaming sweep: add images one at a time (or in batches) without keeping
    probability maps in memory; only the (T,) confusion counts of each image are kept."""

    def __init__(self, thresholds: np.ndarray | None = None) -> None:
        self.thresholds: np.ndarray = _as_thresholds(thresholds)
        self._names: list[str] = []
        self._tp: list[np.ndarray] = []  # (B, T) int64 chunks
        self._fp: list[np.ndarray] = []
        self._pos: list[np.ndarray] = []  # (B,) truth foreground pixels
        self._neg: list[np.ndarray] = []  # (B,) truth background pixels

    def __len__(self) -> int:
        return len(self._names)

    def add(self, prob: np.ndarray, truth: np.ndarray, name: str) -> None:
        """Add one image: ``prob`` float HxW in [0, 1], ``truth`` bool HxW, ``name`` str."""
        p = _as_prob(prob, "prob", ndim=2)
        t = _as_mask(truth, "truth")
        if t.shape != p.shape:
            raise UnetCoreError(
                f"prob and truth must have the same HxW shape, got {p.shape} and {t.shape}"
            )
        if not isinstance(name, str):
            raise UnetCoreError(f"name must be a str, got {type(name).__name__}")
        self._count(p[None], t[None])
        self._names.append(name)

    def add_batch(self, probs: np.ndarray, truths: np.ndarray, names: Sequence[str]) -> None:
        """Add B images of equal size: ``probs`` float (B, H, W) in [0, 1], ``truths`` bool
        (B, H, W), ``names`` B strings."""
        p = _as_prob(probs, "probs", ndim=3)
        t = _as_mask(truths, "truths")
        if t.shape != p.shape:
            raise UnetCoreError(
                f"probs and truths must have the same (B, H, W) shape, got {p.shape} and {t.shape}"
            )
        if isinstance(names, str) or len(names) != p.shape[0]:
            got = "a single str" if isinstance(names, str) else f"{len(names)} names"
            raise UnetCoreError(f"names must be a sequence of {p.shape[0]} str, got {got}")
        names = list(names)
        if not all(isinstance(n, str) for n in names):
            raise UnetCoreError("names must all be str")
        per_image = p.shape[1] * p.shape[2]
        step = max(1, _CHUNK_PIXELS // max(per_image, 1))
        for start in range(0, p.shape[0], step):
            self._count(p[start : start + step], t[start : start + step])
        self._names.extend(names)

    def _count(self, p: np.ndarray, t: np.ndarray) -> None:
        """Vectorised counts for a validated (B, H, W) float64 / bool chunk."""
        b = p.shape[0]
        n_t = self.thresholds.shape[0]
        # idx = number of grid thresholds strictly below each pixel value, in 0..T;
        # the pixel is foreground at threshold k iff k < idx.
        idx = np.searchsorted(self.thresholds, p.reshape(b, -1), side="left")
        img = np.arange(b, dtype=np.int64)[:, None]
        key = (img * 2 + t.reshape(b, -1)) * (n_t + 1) + idx
        hist = np.bincount(key.ravel(), minlength=b * 2 * (n_t + 1)).reshape(b, 2, n_t + 1)
        # tail[..., j] = number of pixels with idx >= j
        tail = np.cumsum(hist[..., ::-1], axis=-1)[..., ::-1]
        self._fp.append(tail[:, 0, 1:].astype(np.int64))
        self._tp.append(tail[:, 1, 1:].astype(np.int64))
        self._neg.append(tail[:, 0, 0].astype(np.int64))
        self._pos.append(tail[:, 1, 0].astype(np.int64))

    def result(self, min_area: int = 0) -> SweepResult:
        """The :class:`SweepResult` of every image added so far, with the minimum-area rule
        ``min_area`` (pixels; 0 = off) applied at every threshold."""
        if not self._names:
            raise UnetCoreError("no images to sweep; add at least one image first")
        return _result_from_counts(
            self.thresholds, self._names, tp=np.concatenate(self._tp),
            fp=np.concatenate(self._fp), pos=np.concatenate(self._pos),
            neg=np.concatenate(self._neg), min_area=check_min_area(min_area))


def _result_from_counts(thresholds: np.ndarray, names: Sequence[str], *, tp: np.ndarray,
                        fp: np.ndarray, pos: np.ndarray, neg: np.ndarray,
                        min_area: int = 0) -> SweepResult:
    """Metrics from counts: tp, fp (N, T) and pos, neg (N,) int64; masks with fewer than
    ``min_area`` predicted pixels are scored as empty predictions."""
    counts = {"tp": tp, "fp": fp, "pos": pos, "neg": neg}
    if min_area > 0:
        emptied = (tp + fp) < min_area
        tp, fp = np.where(emptied, 0, tp), np.where(emptied, 0, fp)
    fn = pos[:, None] - tp
    tn = neg[:, None] - fp
    m = _metrics_from_counts(tp, fp, fn, tn)
    pooled = _metrics_from_counts(tp.sum(0), fp.sum(0), fn.sum(0), tn.sum(0))
    return SweepResult(
        thresholds=np.array(thresholds, dtype=np.float64),
        names=list(names),
        coverage=pos / (pos + neg),
        iou=m["iou"],
        dice=m["dice"],
        precision=m["precision"],
        recall=m["recall"],
        tgs=m["tgs_score"],
        pooled_iou=pooled["iou"],
        min_area=min_area,
        counts=counts,
    )


def select_threshold(sweep: SweepResult, metric: str = "tgs_metric",
                     min_areas: Sequence[int] = MIN_AREA_CANDIDATES
                     ) -> tuple[float, int, SweepResult]:
    """Pick the (threshold, minimum area) pair that maximises ``metric`` on ``sweep``.

    ``metric``: "tgs_metric", "mean_iou", "mean_dice" or "pooled_iou"; ``min_areas``: the
    minimum areas (pixels) to try, e.g. ``(0,)`` to pick the threshold alone. A larger area
    must score strictly higher than every smaller one to be chosen; within an area, ties go to
    the threshold closest to 0.5 (:meth:`SweepResult.best_index`). Returns the grid threshold,
    the area and the sweep with that area applied.
    """
    areas = sorted({check_min_area(a) for a in min_areas})
    if not areas:
        raise UnetCoreError("min_areas must hold at least one area (0 turns the rule off)")
    best: tuple[float, int, SweepResult] | None = None
    best_score = -math.inf
    for area in areas:
        res = sweep.with_min_area(area)
        i = res.best_index(metric)
        score = float(np.asarray(getattr(res, metric))[i])
        if score > best_score + 1e-12:
            best, best_score = (float(res.thresholds[i]), area, res), score
    assert best is not None
    return best


def threshold_sweep(
    probs: Sequence[np.ndarray] | np.ndarray,
    truths: Sequence[np.ndarray] | np.ndarray,
    names: Sequence[str] | None = None,
    thresholds: np.ndarray | None = None,
) -> SweepResult:
    """Evaluate N images at every threshold of a grid in one vectorised pass.

    ``probs``: N float HxW maps in [0, 1] (sizes may differ) or one (N, H, W) array;
    ``truths``: matching bool masks; ``names``: N str (default "image_0", ...);
    ``thresholds``: 1-D grid in [0, 1] (default :data:`DEFAULT_THRESHOLDS`; it is sorted
    and de-duplicated). Returns a :class:`SweepResult`.
    """
    acc = SweepAccumulator(thresholds)
    for arg, what in ((probs, "probs"), (truths, "truths")):
        if isinstance(arg, np.ndarray):
            if arg.ndim != 3:
                raise UnetCoreError(
                    f"{what} as one array must be (N, H, W), got shape {arg.shape}; "
                    f"for a single image pass [{what[:-1]}]"
                )
        elif not isinstance(arg, Sequence) or isinstance(arg, str):
            raise UnetCoreError(
                f"{what} must be a list of HxW arrays or an (N, H, W) array, got {_describe(arg)}"
            )
    n = len(probs)
    if n == 0:
        raise UnetCoreError("probs is empty; give at least one image")
    if len(truths) != n:
        raise UnetCoreError(f"got {n} probability maps but {len(truths)} truth masks")
    if names is None:
        names = [f"image_{i}" for i in range(n)]
    elif isinstance(names, str) or len(names) != n:
        got = "a single str" if isinstance(names, str) else f"{len(names)} names"
        raise UnetCoreError(f"names must be a sequence of {n} str (one per image), got {got}")
    if isinstance(probs, np.ndarray) and isinstance(truths, np.ndarray):
        acc.add_batch(probs, truths, names)
    else:
        for i in range(n):
            try:
                acc.add(probs[i], truths[i], names[i])
            except UnetCoreError as exc:
                raise UnetCoreError(f"image {i} ({names[i]!r}): {exc}") from None
    return acc.result()


# --------------------------------------------------------------------------- multi-class


def _as_labels(x: Any, name: str, n_classes: int) -> np.ndarray:
    """``x`` as a non-empty integer array of class indices 0..n_classes-1, or raise."""
    if not isinstance(x, np.ndarray | list | tuple):
        raise UnetCoreError(f"{name} must be an integer array of class indices, got "
                            f"{_describe(x)}")
    arr = np.asarray(x)
    if arr.dtype != np.bool_ and arr.dtype.kind not in "iu":
        raise UnetCoreError(f"{name} must hold integer class indices, got dtype {arr.dtype}; "
                            "convert it first, e.g. probs.argmax(-1)")
    if arr.ndim == 0 or arr.size == 0:
        raise UnetCoreError(f"{name} must be a non-empty array of class indices, got shape "
                            f"{arr.shape}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n_classes:
        bad = lo if lo < 0 else hi
        raise UnetCoreError(f"{name} holds class {bad} but there are {n_classes} classes "
                            f"(accepted: 0..{n_classes - 1})")
    return arr


def _check_n_classes(n_classes: Any) -> int:
    if isinstance(n_classes, bool | np.bool_) or not isinstance(n_classes, int | np.integer):
        raise UnetCoreError(f"n_classes must be a whole number >= 2, got {_describe(n_classes)}")
    if not 2 <= int(n_classes) <= 65536:
        raise UnetCoreError(f"n_classes must be 2..65536, got {n_classes}")
    return int(n_classes)


def class_confusion(pred_labels: np.ndarray, truth_labels: np.ndarray,
                    n_classes: int) -> np.ndarray:
    """Confusion matrix of two label maps of equal shape: int64 (K, K), ``[truth, pred]``.

    ``pred_labels`` and ``truth_labels``: integer (or bool) arrays of class indices
    0..K-1. Entry ``[i, j]`` counts the pixels of truth class ``i`` predicted as class ``j``.
    """
    k = _check_n_classes(n_classes)
    p = _as_labels(pred_labels, "pred_labels", k)
    t = _as_labels(truth_labels, "truth_labels", k)
    if p.shape != t.shape:
        raise UnetCoreError(f"pred_labels and truth_labels must have the same shape, got "
                            f"{p.shape} and {t.shape}")
    p, t = p.reshape(-1), t.reshape(-1)
    out = np.zeros(k * k, dtype=np.int64)
    for start in range(0, p.size, _CHUNK_PIXELS):  # bounded temporaries on huge images
        key = t[start:start + _CHUNK_PIXELS].astype(np.int64) * k
        key += p[start:start + _CHUNK_PIXELS]
        out += np.bincount(key, minlength=k * k).astype(np.int64)
    return out.reshape(k, k)


def _class_counts(confusion: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tp, fp, fn) per class, each int64 (..., K), from a (..., K, K) confusion matrix."""
    c = np.asarray(confusion)
    if c.ndim < 2 or c.shape[-1] != c.shape[-2] or c.shape[-1] < 2 or c.dtype.kind not in "iu":
        raise UnetCoreError(f"confusion must be an integer (K, K) matrix with K >= 2, got "
                            f"{_describe(c)}")
    c = c.astype(np.int64)
    tp = np.diagonal(c, axis1=-2, axis2=-1)
    return tp, c.sum(axis=-2) - tp, c.sum(axis=-1) - tp


def _class_iou_dice(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    absent = (tp + fp + fn) == 0
    return (_ratio(tp, tp + fp + fn, absent), _ratio(2 * tp, 2 * tp + fp + fn, absent))


def class_iou(confusion: np.ndarray) -> np.ndarray:
    """IoU of each class from a (K, K) confusion matrix: float64 (K,), ``tp / (tp + fp + fn)``;
    1.0 for a class absent from both truth and prediction."""
    return _class_iou_dice(*_class_counts(confusion))[0]


def class_dice(confusion: np.ndarray) -> np.ndarray:
    """Dice of each class from a (K, K) confusion matrix: float64 (K,),
    ``2 tp / (2 tp + fp + fn)``; 1.0 for a class absent from both truth and prediction."""
    return _class_iou_dice(*_class_counts(confusion))[1]


@dataclass
class ClassResult:
    """Multi-class scores of N label maps (see the module docstring for the rules).

    ``iou``, ``dice``: float64 (N, K) per image and class; ``image_accuracy``: (N,) pixel
    accuracy per image; ``tp``, ``fp``, ``fn``: int64 (N, K) per-image counts;
    ``confusion``: int64 (K, K) summed over images (rows truth, columns prediction).
    """

    class_names: list[str]
    names: list[str]
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    pixels: np.ndarray  # (N,) pixels per image
    correct: np.ndarray  # (N,) pixels whose class is right
    confusion: np.ndarray
    iou: np.ndarray = dc_field(init=False)
    dice: np.ndarray = dc_field(init=False)
    image_accuracy: np.ndarray = dc_field(init=False)

    def __post_init__(self) -> None:
        self.iou, self.dice = _class_iou_dice(self.tp, self.fp, self.fn)
        self.image_accuracy = self.correct / np.maximum(self.pixels, 1)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_iou(self) -> np.ndarray:
        """(K,) per-image mean IoU of each class."""
        return self.iou.mean(axis=0)

    @property
    def class_dice(self) -> np.ndarray:
        """(K,) per-image mean Dice of each class."""
        return self.dice.mean(axis=0)

    @property
    def pooled_iou(self) -> np.ndarray:
        """(K,) IoU of each class on the counts pooled over all images."""
        return class_iou(self.confusion)

    @property
    def pooled_dice(self) -> np.ndarray:
        """(K,) Dice of each class on the counts pooled over all images."""
        return class_dice(self.confusion)

    @property
    def mean_iou(self) -> float:
        """Mean over all K classes of the per-image mean IoU."""
        return float(self.class_iou.mean())

    @property
    def mean_dice(self) -> float:
        """Mean over all K classes of the per-image mean Dice."""
        return float(self.class_dice.mean())

    @property
    def pooled_mean_iou(self) -> float:
        """Mean over all K classes of the pooled IoU."""
        return float(self.pooled_iou.mean())

    @property
    def pooled_mean_dice(self) -> float:
        """Mean over all K classes of the pooled Dice."""
        return float(self.pooled_dice.mean())

    @property
    def pixel_accuracy(self) -> float:
        """Pixels of the right class / all pixels, pooled over the set."""
        return float(self.correct.sum() / max(int(self.pixels.sum()), 1))

    def per_class(self) -> list[dict[str, Any]]:
        """One dict per class: index, name, iou, dice (per-image means), pooled_iou,
        pooled_dice, truth_pixels, pred_pixels, images (how many truths hold the class)."""
        truth = self.confusion.sum(axis=1)
        pred = self.confusion.sum(axis=0)
        present = ((self.tp + self.fn) > 0).sum(axis=0)
        ci, cd, pi, pd = self.class_iou, self.class_dice, self.pooled_iou, self.pooled_dice
        return [{"index": k, "name": name, "iou": float(ci[k]), "dice": float(cd[k]),
                 "pooled_iou": float(pi[k]), "pooled_dice": float(pd[k]),
                 "truth_pixels": int(truth[k]), "pred_pixels": int(pred[k]),
                 "images": int(present[k])}
                for k, name in enumerate(self.class_names)]

    def per_image(self) -> list[dict[str, Any]]:
        """One flat dict per image, in input order: name, pixel_accuracy, mean_iou,
        mean_dice (over all classes), then ``iou:CLASS`` and ``dice:CLASS`` for each class."""
        rows = []
        for i, name in enumerate(self.names):
            row: dict[str, Any] = {"name": name,
                                   "pixel_accuracy": float(self.image_accuracy[i]),
                                   "mean_iou": float(self.iou[i].mean()),
                                   "mean_dice": float(self.dice[i].mean())}
            row.update({f"iou:{c}": float(self.iou[i, k]) for k, c in enumerate(self.class_names)})
            row.update({f"dice:{c}": float(self.dice[i, k])
                        for k, c in enumerate(self.class_names)})
            rows.append(row)
        return rows

    def summary(self) -> dict[str, Any]:
        """Set-level figures (JSON-ready): n, n_classes, mean_iou, mean_dice,
        pooled_mean_iou, pooled_mean_dice, pixel_accuracy, mean_over, classes (per_class)."""
        return {
            "n": len(self.names), "n_classes": self.n_classes,
            "mean_iou": self.mean_iou, "mean_dice": self.mean_dice,
            "pooled_mean_iou": self.pooled_mean_iou, "pooled_mean_dice": self.pooled_mean_dice,
            "pixel_accuracy": self.pixel_accuracy,
            "mean_over": (f"all {self.n_classes} classes, background included; a class absent "
                          "from both truth and prediction scores 1.0"),
            "classes": self.per_class(),
        }

    def to_dict(self) -> dict[str, Any]:
        """:meth:`summary` plus the confusion matrix (rows truth, columns prediction) and
        the per-image rows; JSON-ready."""
        return {**self.summary(), "confusion": self.confusion.tolist(),
                "per_image": self.per_image()}


class ClassAccumulator:
    """Streaming multi-class scores: add label maps one at a time; only the per-class
    counts of each image (3 K integers) and the summed (K, K) confusion are kept.

    Args:
        n_classes: K >= 2.
        class_names: K names (default "class 0", ...).
    """

    def __init__(self, n_classes: int, class_names: Sequence[str] | None = None) -> None:
        self.n_classes = _check_n_classes(n_classes)
        if class_names is None:
            class_names = [f"class {k}" for k in range(self.n_classes)]
        if isinstance(class_names, str) or len(class_names) != self.n_classes:
            raise UnetCoreError(f"class_names must be {self.n_classes} names, got "
                                f"{_describe(class_names)}")
        self.class_names = [str(c) for c in class_names]
        self._names: list[str] = []
        self._tp: list[np.ndarray] = []
        self._fp: list[np.ndarray] = []
        self._fn: list[np.ndarray] = []
        self._pixels: list[int] = []
        self._correct: list[int] = []
        self._confusion = np.zeros((self.n_classes, self.n_classes), dtype=np.int64)

    def __len__(self) -> int:
        return len(self._names)

    def add(self, pred_labels: np.ndarray, truth_labels: np.ndarray, name: str) -> None:
        """Add one image: integer label maps of equal shape (class indices 0..K-1)."""
        if not isinstance(name, str):
            raise UnetCoreError(f"name must be a str, got {type(name).__name__}")
        try:
            c = class_confusion(pred_labels, truth_labels, self.n_classes)
        except UnetCoreError as exc:
            raise UnetCoreError(f"{name}: {exc}") from None
        tp, fp, fn = _class_counts(c)
        self._tp.append(tp)
        self._fp.append(fp)
        self._fn.append(fn)
        self._pixels.append(int(c.sum()))
        self._correct.append(int(tp.sum()))
        self._confusion += c
        self._names.append(name)

    def result(self) -> ClassResult:
        """The :class:`ClassResult` of every image added so far."""
        if not self._names:
            raise UnetCoreError("no images to score; add at least one image first")
        return ClassResult(
            class_names=list(self.class_names), names=list(self._names),
            tp=np.stack(self._tp), fp=np.stack(self._fp), fn=np.stack(self._fn),
            pixels=np.array(self._pixels, dtype=np.int64),
            correct=np.array(self._correct, dtype=np.int64),
            confusion=self._confusion.copy())
