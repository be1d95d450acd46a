"""Compare two models on the same images: is model B better than model A, or is it noise?

Both models predict every image of a data set; each image is scored for each model (IoU, Dice,
TGS score of :mod:`unet_core.metrics`, with its empty-mask rules: both masks empty -> 1). Each
model uses its own card (input channels, scaling, fit, threshold, minimum area), so models with
different input specs compare; only the classes must match (:func:`check_comparable`).

Statistics of a metric over n images (:func:`paired_stats`), on the paired differences
``d_i = b_i - a_i`` (B minus A, image by image):

* ``a``, ``b``: the means of A and of B; ``delta``: the mean of ``d`` (> 0: B scores higher);
* ``ci95``: a 95 % confidence interval of the mean of ``d`` by the paired bootstrap
  (``scipy.stats.bootstrap``, BCa, ``n_resamples`` resamples of the images, seeded so a run is
  repeatable). When it excludes 0 the data say the models differ on that metric;
* ``p_value``: the two-sided Wilcoxon signed-rank test of ``d`` (``scipy.stats.wilcoxon``,
  zero differences dropped, its default ``zero_method="wilcox"``);
* wins / ties / losses: images where B's IoU is higher / equal / lower than A's; a tie is a
  difference within :data:`TIE_TOLERANCE` (1e-12) in absolute value.

Degenerate samples: when every difference is the same value ``c`` (a model against itself:
every ``d_i = 0``), the bootstrap distribution is a single point and the interval is
``[c, c]`` exactly; ``p_value`` is 1.0 when every difference is 0. With one image the interval
is ``[d, d]`` and a note says it says nothing. When the BCa interval comes out undefined (NaN,
e.g. almost every difference equal), the percentile interval is used and a note says so; so it
is above :data:`MAX_BCA_N` images (BCa's jackknife grows as n squared).

A model compared with itself (the same loaded model, or the same file content and card with the
same settings, see :func:`same_predictions`) reuses A's probabilities for B, so every
difference is exactly 0: delta 0, ci95 [0, 0], p_value 1.0, ties = n.
"""

from __future__ import annotations

import functools
import hashlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UnetCoreError
from .evaluate import _no_mask, iter_loaded
from .inference import Segmenter
from .io import Pair
from .metrics import check_min_area, segmentation_metrics, threshold_mask
from .model import ModelCard

#: The per-image metrics compared, in report order.
METRICS = ("iou", "dice", "tgs_score")
#: Display names of :data:`METRICS`.
METRIC_LABELS = {"iou": "IoU", "dice": "Dice", "tgs_score": "TGS score"}
#: Two IoUs closer than this (absolute) are a tie in the win / tie / loss counts.
TIE_TOLERANCE = 1e-12
#: Bootstrap resamples computed at a time (bounds memory: batch x n float64 values).
BOOTSTRAP_BATCH = 250
#: Above this many images the percentile interval is used: BCa's jackknife costs n**2
#: (n = 4,000: about 1 s per metric; n = 100,000: minutes), and at such n the two agree closely.
MAX_BCA_N = 20_000

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


class ComparisonCancelled(UnetCoreError):
    """``cancel()`` returned True: the comparison stopped after the batch in progress."""


@dataclass(frozen=True)
class MetricComparison:
    """One metric of two models on the same n images (see the module docstring).

    ``a``, ``b``: mean over images of A and of B; ``delta``: mean of the paired difference
    B - A; ``ci95``: (low, high) confidence interval of that mean (95 % unless another
    ``confidence`` was asked); ``p_value``: Wilcoxon signed-rank, two-sided; ``ci_method``:
    "BCa", "percentile" (BCa was undefined), "constant" (every difference equal) or
    "single image"; ``notes``: what the reader should know about the interval.
    """

    a: float
    b: float
    delta: float
    ci95: tuple[float, float]
    p_value: float
    ci_method: str = "BCa"
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """``{"a", "b", "delta", "ci95": [lo, hi], "p_value"}`` as Python floats."""
        return {"a": float(self.a), "b": float(self.b), "delta": float(self.delta),
                "ci95": [float(self.ci95[0]), float(self.ci95[1])],
                "p_value": float(self.p_value)}

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies strictly on one side of 0."""
        lo, hi = self.ci95
        return lo > 0.0 or hi < 0.0


def _as_scores(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iuf":
        raise UnetCoreError(f"{name} must be numbers (one score per image), got dtype "
                            f"{arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise UnetCoreError(f"{name} must be a non-empty 1-D array (one score per image), got "
                            f"shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise UnetCoreError(f"{name} holds NaN or infinite values; accepted: finite scores")
    return arr


def paired_stats(a: np.ndarray, b: np.ndarray, *, seed: int = 0, n_resamples: int = 9999,
                 confidence: float = 0.95, batch: int | None = BOOTSTRAP_BATCH
                 ) -> MetricComparison:
    """Means, mean paired difference B - A, its bootstrap interval and the Wilcoxon p-value.

    ``a``, ``b``: the per-image scores of models A and B on the same n images, float (n,)
    in the same order. The interval is ``scipy.stats.bootstrap((b - a,), np.mean,
    method="BCa", confidence_level=confidence, n_resamples=n_resamples,
    rng=np.random.default_rng(seed))`` (``batch`` resamples at a time, same result). Degenerate
    cases, none of which warns or gives NaN:

    * every difference equal to ``c`` (all 0 for a model against itself): ``ci95 = (c, c)``
      and ``delta = c`` exactly; ``p_value`` 1.0 when ``c == 0``;
    * n == 1: ``ci95 = (d, d)``, with a note that one image gives no interval;
    * a BCa interval scipy cannot compute (NaN): the percentile interval, with a note;
    * more than :data:`MAX_BCA_N` images: the percentile interval, with a note.

    Raises UnetCoreError for arrays of different lengths, empty or non-finite scores,
    ``n_resamples < 1`` or ``confidence`` outside (0, 1).
    """
    from scipy import stats

    a = _as_scores(a, "a")
    b = _as_scores(b, "b")
    if a.shape != b.shape:
        raise UnetCoreError(f"a and b must score the same images, got {a.size} and {b.size} "
                            "scores")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise UnetCoreError(f"n_resamples must be a whole number >= 1, got {n_resamples!r}")
    if not (isinstance(confidence, float | int) and 0.0 < float(confidence) < 1.0):
        raise UnetCoreError(f"confidence must be a number in (0, 1), e.g. 0.95; got "
                            f"{confidence!r}")
    d = b - a
    n = d.size
    mean_a, mean_b = float(a.mean()), float(b.mean())
    notes: list[str] = []
    if np.all(d == d[0]):
        c = float(d[0])
        method = "single image" if n == 1 else "constant"
        if n == 1:
            notes.append("one image: no interval can be estimated; it is the one difference")
        if c == 0.0:
            p = 1.0
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p = float(stats.wilcoxon(d).pvalue)
        return MetricComparison(mean_a, mean_b, c, (c, c), _finite_p(p), method, tuple(notes))
    delta = float(d.mean())
    kw = dict(confidence_level=float(confidence), n_resamples=n_resamples, batch=batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa on near-degenerate data: NaN, handled below
        lo = hi = math.nan
        method = "BCa"
        if n <= MAX_BCA_N:
            res = stats.bootstrap((d,), np.mean, method="BCa",
                                  rng=np.random.default_rng(seed), **kw)
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        else:
            notes.append(f"{n} images: the percentile bootstrap interval is shown (BCa's "
                         f"jackknife is too slow above {MAX_BCA_N} images; at this size the "
                         "two agree closely)")
        if not (math.isfinite(lo) and math.isfinite(hi)):
            res = stats.bootstrap((d,), np.mean, method="percentile",
                                  rng=np.random.default_rng(seed), **kw)
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
            method = "percentile"
            if n <= MAX_BCA_N:
                notes.append("the BCa interval is undefined for this sample (almost every "
                             "difference is the same); the percentile bootstrap interval is "
                             "shown")
        p = float(stats.wilcoxon(d).pvalue)
    return MetricComparison(mean_a, mean_b, delta, (lo, hi), _finite_p(p), method,
                            tuple(notes))


def _finite_p(p: float) -> float:
    """A p-value scipy left undefined (NaN) is reported as 1.0 (no evidence)."""
    return p if math.isfinite(p) else 1.0


def win_tie_loss(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int]:
    """(wins, ties, losses) of B against A over paired scores (float (n,) each): B higher by
    more than :data:`TIE_TOLERANCE` is a win, lower by more a loss, else a tie."""
    d = _as_scores(b, "b") - _as_scores(a, "a")
    wins = int(np.count_nonzero(d > TIE_TOLERANCE))
    losses = int(np.count_nonzero(d < -TIE_TOLERANCE))
    return wins, d.size - wins - losses, losses


@dataclass
class Comparison:
    """Two models scored on the same n images.

    ``per_image``: "iou_a", "iou_b", "dice_a", "dice_b", "tgs_score_a", "tgs_score_b", each
    float64 (n,) in ``names`` order; ``metrics``: a :class:`MetricComparison` per name of
    :data:`METRICS`; wins / ties / losses on IoU, B better = win.
    """

    names: list[str]
    per_image: dict[str, np.ndarray]
    metrics: dict[str, MetricComparison]
    wins: int
    ties: int
    losses: int
    label_a: str
    label_b: str
    threshold_a: float
    threshold_b: float
    min_area_a: int
    min_area_b: int
    class_index: int
    seed: int
    class_name: str = ""
    n_resamples: int = 9999
    #: B's probabilities were A's (the same model and settings): every difference is 0
    shared_predictions: bool = False
    invert_masks: bool = False
    soft_masks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.names)

    def summary(self) -> dict[str, Any]:
        """``{"n", "metrics": {"iou": {"a", "b", "delta", "ci95": [lo, hi], "p_value"},
        "dice": {...}, "tgs_score": {...}}, "wins", "ties", "losses"}``, JSON-ready."""
        return {"n": self.n,
                "metrics": {m: self.metrics[m].to_dict() for m in METRICS},
                "wins": int(self.wins), "ties": int(self.ties), "losses": int(self.losses)}

    def delta(self, metric: str = "iou") -> np.ndarray:
        """Per-image difference B - A of ``metric``: float64 (n,)."""
        if metric not in METRICS:
            raise UnetCoreError(f"unknown metric {metric!r}; accepted: {', '.join(METRICS)}")
        return self.per_image[f"{metric}_b"] - self.per_image[f"{metric}_a"]

    def disagreement_order(self) -> np.ndarray:
        """Pair indices (int64), largest ``|iou_b - iou_a|`` first (stable: ties keep pair
        order)."""
        return np.argsort(-np.abs(self.delta("iou")), kind="stable").astype(np.int64)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per image in pair order: name, iou_a, iou_b, dice_a, dice_b,
        tgs_score_a, tgs_score_b, delta_iou, delta_dice, delta_tgs_score."""
        cols = [f"{m}_{s}" for m in METRICS for s in ("a", "b")]
        deltas = {m: self.delta(m) for m in METRICS}
        out = []
        for i, name in enumerate(self.names):
            row: dict[str, Any] = {"name": name}
            row.update({c: float(self.per_image[c][i]) for c in cols})
            row.update({f"delta_{m}": float(deltas[m][i]) for m in METRICS})
            out.append(row)
        return out


def reading(comparison: Comparison, metric: str = "iou") -> str:
    """One sentence reading ``metric``'s result, e.g. "B is better on IoU: the 95 % CI of the
    difference B - A, [+0.0021, +0.0335], excludes 0"."""
    m = comparison.metrics[metric]
    label = METRIC_LABELS[metric]
    lo, hi = m.ci95
    ci = f"[{lo:+.4f}, {hi:+.4f}]"
    if comparison.shared_predictions or (lo == hi == 0.0 and m.delta == 0.0):
        return (f"no difference on {label}: the two models give the same score on every "
                "image")
    if comparison.n == 1:
        return f"one image only: no evidence either way on {label}"
    if m.excludes_zero:
        better = "B" if m.delta > 0 else "A"
        return (f"{better} is better on {label}: the 95 % CI of the difference B - A, {ci}, "
                "excludes 0")
    text = (f"no evidence of a difference in mean {label}: the 95 % CI of the difference "
            f"B - A, {ci}, includes 0")
    if m.p_value < 0.05 and m.delta != 0.0 and metric == "iou":
        lower = "lower" if comparison.losses > comparison.wins else "higher"
        text += (f", though the Wilcoxon test (p = {m.p_value:.2g}) finds B {lower} on more "
                 f"images ({comparison.wins} wins, {comparison.losses} losses): a consistent "
                 "small difference that the mean does not resolve")
    return text


def _class_set(card: ModelCard) -> str:
    if card.n_classes == 1:
        return f"one map ({card.foreground})"
    return f"{card.n_classes} classes ({', '.join(card.classes)})"


def check_comparable(card_a: ModelCard, card_b: ModelCard) -> None:
    """Refuse two models whose classes differ (a one-line UnetCoreError naming both sets).

    Two one-map (sigmoid) models compare whatever their foreground names (a cardless model
    calls it "foreground"); two softmax models need the same class names in the same order.
    Everything else (channels, size, scaling, fit, threshold) may differ: each model uses
    its own card.
    """
    same = (card_a.n_classes == card_b.n_classes
            and (card_a.n_classes == 1 or list(card_a.classes) == list(card_b.classes)))
    if not same:
        raise UnetCoreError(
            f"the two models have different classes: A {card_a.name} has "
            f"{_class_set(card_a)}, B {card_b.name} has {_class_set(card_b)}; accepted: two "
            "models with the same classes")


@functools.lru_cache(maxsize=32)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_key(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return _digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def same_predictions(seg_a: Segmenter, seg_b: Segmenter) -> bool:
    """True when B would predict exactly what A predicts: the same Segmenter or loaded model,
    or the same model file content (and weights file) with the same card, fit, padding, TTA,
    tiling and backend."""
    if seg_a is seg_b:
        return True
    settings = ("padding_mode", "tta", "fit", "tile_overlap", "max_network_pixels")
    if any(getattr(seg_a, s) != getattr(seg_b, s) for s in settings):
        return False
    if seg_a.backend.name != seg_b.backend.name or seg_a.card.to_dict() != seg_b.card.to_dict():
        return False
    la, lb = seg_a.loaded, seg_b.loaded
    if la is lb or la.model is lb.model:
        return True
    key_a, key_b = _file_key(la.path), _file_key(lb.path)
    if key_a is None or key_a != key_b:
        return False
    if (la.weights_path is None) != (lb.weights_path is None):
        return False
    return la.weights_path is None or _file_key(la.weights_path) == _file_key(lb.weights_path)


def _per_image(mask: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    m = segmentation_metrics(mask, truth)
    return m["iou"], m["dice"], m["tgs_score"]


def compare_pairs(seg_a: Segmenter, seg_b: Segmenter, pairs: Sequence[Pair], *,
                  threshold: float | None = None, min_area: int | None = None,
                  class_index: int | None = None, seed: int = 0, n_resamples: int = 9999,
                  progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                  invert_masks: bool | None = None, batch_size: int = 32,
                  max_pixels: int | None = None) -> Comparison:
    """Both models on every pair (each needs a binary mask), scored image by image.

    Each model uses its own card's threshold and minimum area unless ``threshold`` /
    ``min_area`` is given (then it applies to both). ``class_index``: the output class scored
    (default: A's card's; both models must have it: :func:`check_comparable`).
    ``invert_masks``: score against the complement of each mask (default: the cards'
    ``truth_inverted``, which must then agree). ``progress(done, total)`` is called after each
    batch of ``batch_size`` images; ``cancel()`` returning True stops there with
    :class:`ComparisonCancelled`. ``seed`` and ``n_resamples`` go to :func:`paired_stats`.
    Raises the io errors of a bad pair, UnetCoreError for different classes or a pair
    without a mask.
    """
    ca, cb = seg_a.card, seg_b.card
    check_comparable(ca, cb)
    cls = seg_a._class(class_index)
    seg_b._class(cls)
    notes: list[str] = []
    if class_index is None and cb.default_class != cls:
        notes.append(f"B's card scores class {cb.default_class} by default; both models are "
                     f"scored on A's class {cls} ({ca.class_name(cls)})")
    if invert_masks is None:
        if ca.truth_inverted != cb.truth_inverted:
            yes, no = (("A", ca), ("B", cb)) if ca.truth_inverted else (("B", cb), ("A", ca))
            raise UnetCoreError(
                f"{yes[0]} {yes[1].name}'s card says the masks mark the other class "
                f"(truth_inverted) and {no[0]} {no[1].name}'s does not; accepted: say whether "
                "to invert the masks (invert_masks, or --invert-masks / --no-invert-masks)")
        invert_masks = ca.truth_inverted
    t_a = float(ca.threshold if threshold is None else threshold)
    t_b = float(cb.threshold if threshold is None else threshold)
    k_a = check_min_area(ca.min_area if min_area is None else min_area)
    k_b = check_min_area(cb.min_area if min_area is None else min_area)
    shared = same_predictions(seg_a, seg_b)
    if not pairs:
        raise UnetCoreError("no image/mask pairs to compare on; accepted: a data set with at "
                            "least one image and its mask")
    total = len(pairs)
    cols: dict[str, list[float]] = {f"{m}_{s}": [] for m in METRICS for s in ("a", "b")}
    names: list[str] = []
    batch: list[tuple[Pair, np.ndarray, np.ndarray]] = []

    def flush() -> None:
        images = [b[1] for b in batch]
        probs_a = seg_a.predict_batch(images, class_index=cls)
        probs_b = probs_a if shared else seg_b.predict_batch(images, class_index=cls)
        for (pair, _, truth), pa, pb in zip(batch, probs_a, probs_b, strict=True):
            ma = threshold_mask(pa, t_a, k_a)
            mb = ma if shared and (t_a, k_a) == (t_b, k_b) else threshold_mask(pb, t_b, k_b)
            for side, mask in (("a", ma), ("b", mb)):
                for m, v in zip(METRICS, _per_image(mask, truth), strict=True):
                    cols[f"{m}_{side}"].append(v)
            names.append(pair.name)
        batch.clear()
        if progress:
            progress(len(names), total)
        if cancel is not None and cancel():
            raise ComparisonCancelled(f"comparison cancelled after {len(names)} of {total} "
                                      "images")

    soft: list[str] = []
    for pair, img, mask in iter_loaded(pairs, max_pixels=max_pixels, raw=True,
                                       soft_masks=soft):
        if mask is None:
            raise _no_mask(pair)
        batch.append((pair, img, ~mask if invert_masks else mask))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    per_image = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
    stats = {m: paired_stats(per_image[f"{m}_a"], per_image[f"{m}_b"], seed=seed,
                             n_resamples=n_resamples) for m in METRICS}
    wins, ties, losses = win_tie_loss(per_image["iou_a"], per_image["iou_b"])
    return Comparison(
        names=names, per_image=per_image, metrics=stats, wins=wins, ties=ties, losses=losses,
        label_a=seg_a.label, label_b=seg_b.label, threshold_a=t_a, threshold_b=t_b,
        min_area_a=k_a, min_area_b=k_b, class_index=cls, seed=seed,
        class_name=ca.class_name(cls), n_resamples=n_resamples, shared_predictions=shared,
        invert_masks=bool(invert_masks), soft_masks=sorted(soft), notes=notes)


def disagreement_map(mask_a: np.ndarray, mask_b: np.ndarray) -> np.ndarray:
    """Where two bool (H, W) masks agree: uint8 (H, W), 0 neither, 1 only A, 2 only B,
    3 both."""
    a, b = np.asarray(mask_a), np.asarray(mask_b)
    if a.dtype != np.bool_ or b.dtype != np.bool_:
        raise UnetCoreError(f"masks must be bool arrays, got {a.dtype} and {b.dtype}; convert "
                            "first, e.g. prob > threshold")
    if a.shape != b.shape or a.ndim != 2:
        raise UnetCoreError(f"masks must be two (H, W) arrays of one shape, got {a.shape} and "
                            f"{b.shape}")
    return a.astype(np.uint8) + 2 * b.astype(np.uint8)


def compare_images(prob_a: np.ndarray, prob_b: np.ndarray, truth: np.ndarray | None, *,
                   threshold_a: float, threshold_b: float, min_area_a: int = 0,
                   min_area_b: int = 0) -> dict[str, Any]:
    """Two models' probability maps of one image (float (H, W) each, in [0, 1]), each at its
    own threshold and minimum area, against an optional bool (H, W) ``truth``.

    Returns a dict: "mask_a", "mask_b" (bool (H, W)); "map" (:func:`disagreement_map`, uint8);
    "disagree_fraction" (share of pixels in exactly one mask, float); "area_a", "area_b"
    (foreground pixels, int); "iou_ab" (IoU of the two masks; 1.0 when both are empty);
    "metrics_a", "metrics_b" ({"iou", "dice", "tgs_score"} of each mask against ``truth``, or
    None without a truth).
    """
    pa, pb = np.asarray(prob_a), np.asarray(prob_b)
    if pa.shape != pb.shape or pa.ndim != 2:
        raise UnetCoreError(f"prob_a and prob_b must be two (H, W) maps of one image, got "
                            f"shapes {pa.shape} and {pb.shape}")
    ma = threshold_mask(pa, threshold_a, min_area_a)
    mb = threshold_mask(pb, threshold_b, min_area_b)
    dmap = disagreement_map(ma, mb)
    out: dict[str, Any] = {
        "mask_a": ma, "mask_b": mb, "map": dmap,
        "disagree_fraction": float(np.count_nonzero((dmap == 1) | (dmap == 2)) / dmap.size),
        "area_a": int(np.count_nonzero(ma)), "area_b": int(np.count_nonzero(mb)),
        "iou_ab": float(segmentation_metrics(ma, mb)["iou"]),
        "metrics_a": None, "metrics_b": None,
    }
    if truth is not None:
        t = np.asarray(truth)
        if t.shape != pa.shape:
            raise UnetCoreError(f"truth has shape {t.shape} but the maps are {pa.shape}; "
                                "accepted: the image's own mask")
        for side, mask in (("a", ma), ("b", mb)):
            out[f"metrics_{side}"] = dict(zip(METRICS, _per_image(mask, t), strict=True))
    return out
