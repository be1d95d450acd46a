"""Tests of unet_core.metrics against hand-computed values and brute force."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unet_core.errors import UnetCoreError
from unet_core.metrics import (
    DEFAULT_THRESHOLDS,
    IOU_THRESHOLDS,
    MIN_AREA_CANDIDATES,
    ClassAccumulator,
    SweepAccumulator,
    SweepResult,
    class_confusion,
    class_dice,
    class_iou,
    confusion_counts,
    dice,
    iou,
    pixel_accuracy,
    precision,
    recall,
    segmentation_metrics,
    select_threshold,
    tgs_score,
    tgs_score_from_iou,
    threshold_mask,
    threshold_sweep,
)


def _mask(rows: list[str]) -> np.ndarray:
    """'#' = foreground, '.' = background."""
    return np.array([[c == "#" for c in r] for r in rows], dtype=bool)


# 4x4 case: truth has 5 foreground pixels, prediction 4, overlap 3.
TRUTH_4 = _mask(["###.", "##..", "....", "...."])
PRED_4 = _mask([".##.", "#...", "...#", "...."])
# tp = (0,1),(0,2),(1,0) = 3; fp = (2,3) = 1; fn = (0,0),(1,1) = 2; tn = 16-6 = 10


# --------------------------------------------------------------------------- constants


def test_constants():
    assert IOU_THRESHOLDS.dtype == np.float64
    assert IOU_THRESHOLDS.tolist() == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert DEFAULT_THRESHOLDS.shape == (101,)
    assert DEFAULT_THRESHOLDS[0] == 0.0 and DEFAULT_THRESHOLDS[-1] == 1.0
    assert all(DEFAULT_THRESHOLDS[k] == k / 100 for k in range(101))
    np.testing.assert_allclose(DEFAULT_THRESHOLDS, np.linspace(0, 1, 101), rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- per image


def test_threshold_mask_strict():
    prob = np.array([[0.0, 0.5], [0.5000001, 1.0]])
    assert threshold_mask(prob, 0.5).tolist() == [[False, False], [True, True]]
    assert not threshold_mask(prob, 1.0).any()  # t = 1 always empty
    assert threshold_mask(prob, 0.0).tolist() == [[False, True], [True, True]]
    assert threshold_mask(prob.astype(np.float32), 0.5).dtype == bool


def test_hand_computed_4x4():
    assert confusion_counts(PRED_4, TRUTH_4) == (3, 1, 2, 10)
    assert iou(PRED_4, TRUTH_4) == pytest.approx(3 / 6)  # 3 / (3+1+2) = 0.5
    assert dice(PRED_4, TRUTH_4) == pytest.approx(6 / 9)  # 2*3 / (6+1+2)
    assert precision(PRED_4, TRUTH_4) == pytest.approx(3 / 4)  # 3 / (3+1)
    assert recall(PRED_4, TRUTH_4) == pytest.approx(3 / 5)  # 3 / (3+2)
    assert pixel_accuracy(PRED_4, TRUTH_4) == pytest.approx(13 / 16)  # (3+10) / 16
    # IoU 0.5 is not > 0.5 -> no threshold passed
    assert tgs_score(PRED_4, TRUTH_4) == 0.0
    m = segmentation_metrics(PRED_4, TRUTH_4)
    assert set(m) == {
        "iou", "dice", "precision", "recall", "pixel_accuracy",
        "tgs_score", "coverage_true", "coverage_pred",
    }  # fmt: skip
    assert m["coverage_true"] == pytest.approx(5 / 16)
    assert m["coverage_pred"] == pytest.approx(4 / 16)
    assert m["iou"] == pytest.approx(0.5)
    assert all(isinstance(v, float) for v in m.values())


def test_both_empty_all_one():
    e = np.zeros((3, 5), dtype=bool)
    assert confusion_counts(e, e) == (0, 0, 0, 15)
    m = segmentation_metrics(e, e)
    for key in ("iou", "dice", "precision", "recall", "pixel_accuracy", "tgs_score"):
        assert m[key] == 1.0, key
    assert m["coverage_true"] == 0.0 and m["coverage_pred"] == 0.0


def test_empty_prediction_on_nonempty_truth():
    truth = np.zeros((4, 4), dtype=bool)
    truth[0, :2] = True  # 2 pixels
    pred = np.zeros_like(truth)
    m = segmentation_metrics(pred, truth)
    assert m["iou"] == 0.0 and m["dice"] == 0.0
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["tgs_score"] == 0.0
    assert m["pixel_accuracy"] == pytest.approx(14 / 16)


def test_nonempty_prediction_on_empty_truth():
    truth = np.zeros((4, 4), dtype=bool)
    pred = truth.copy()
    pred[3, 3] = True
    m = segmentation_metrics(pred, truth)
    # tp=0, fp=1, fn=0: precision 0/1; recall 0/0 with pred non-empty -> 0
    assert m["iou"] == 0.0 and m["precision"] == 0.0 and m["recall"] == 0.0
    assert m["tgs_score"] == 0.0
    assert m["pixel_accuracy"] == pytest.approx(15 / 16)


def test_perfect_prediction():
    assert tgs_score(TRUTH_4, TRUTH_4) == 1.0
    assert iou(TRUTH_4, TRUTH_4) == 1.0


def test_tgs_on_crafted_iou():
    f, t = False, True
    # number of thresholds s in {0.50..0.95} with IoU > s, divided by 10
    assert tgs_score_from_iou(0.5, f, f) == 0.0  # strict: 0.5 > 0.5 is false
    assert tgs_score_from_iou(0.51, f, f) == pytest.approx(0.1)  # only 0.50
    assert tgs_score_from_iou(0.76, f, f) == pytest.approx(0.6)  # 0.50..0.75 -> 6
    assert tgs_score_from_iou(0.951, f, f) == 1.0  # all 10
    assert tgs_score_from_iou(1.0, f, f) == 1.0
    assert tgs_score_from_iou(0.55, f, f) == pytest.approx(0.1)  # 0.55 exactly not > 0.55
    assert tgs_score_from_iou(1.0, t, t) == 1.0  # both empty
    assert tgs_score_from_iou(0.0, t, f) == 0.0  # exactly one empty
    assert tgs_score_from_iou(0.0, f, t) == 0.0
    assert isinstance(tgs_score_from_iou(0.7, f, f), float)


def test_tgs_from_iou_vectorised():
    ious = np.array([0.5, 0.51, 0.76, 0.951, 1.0, 0.0])
    pe = np.array([False, False, False, False, True, True])
    te = np.array([False, False, False, False, True, False])
    out = tgs_score_from_iou(ious, pe, te)
    assert isinstance(out, np.ndarray) and out.shape == (6,)
    np.testing.assert_allclose(out, [0.0, 0.1, 0.6, 1.0, 1.0, 0.0])
    # broadcasting: (3, 1) iou against scalar flags and a (1, 2) flag
    grid = tgs_score_from_iou(np.array([[0.6], [0.8], [0.99]]), False, np.array([[False, True]]))
    assert grid.shape == (3, 2)
    # 0.6 > {0.50,0.55} -> 0.2; 0.8 > 0.50..0.75 -> 0.6; 0.99 -> 1.0; truth empty column -> 0
    np.testing.assert_allclose(grid, [[0.2, 0.0], [0.6, 0.0], [1.0, 0.0]])


def test_tgs_score_matches_from_iou_for_exact_fractions():
    # truth 20 px, pred covers 11 of them exactly: IoU = 11/20 = 0.55 -> not > 0.55
    truth = np.zeros((5, 4), dtype=bool)
    truth[:] = True
    pred = np.zeros_like(truth)
    pred.flat[:11] = True
    assert iou(pred, truth) == 0.55
    assert tgs_score(pred, truth) == pytest.approx(0.1)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call",
    [
        lambda: iou(np.zeros((2, 2), bool), np.zeros((2, 3), bool)),  # shape mismatch
        lambda: iou(np.zeros((2, 2), np.uint8), np.zeros((2, 2), bool)),  # non-bool
        lambda: dice(np.zeros((2, 2), bool), np.zeros((2, 2), np.float32)),
        lambda: confusion_counts(np.zeros((0, 0), bool), np.zeros((0, 0), bool)),
        lambda: threshold_mask(np.array([[0.2, 1.5]]), 0.5),  # out of range
        lambda: threshold_mask(np.array([[0.2, -0.1]]), 0.5),
        lambda: threshold_mask(np.array([[0.2, np.nan]]), 0.5),  # NaN
        lambda: threshold_mask(np.array([[0.2]]), 1.5),  # bad threshold
        lambda: threshold_mask(np.array([[0.2]]), float("nan")),
        lambda: threshold_mask(np.array([[True]]), 0.5),  # bool is not a probability
        lambda: tgs_score_from_iou(np.nan, False, False),
        lambda: tgs_score_from_iou(1.2, False, False),
        lambda: tgs_score_from_iou(0.5, 0, False),  # int flag
        lambda: tgs_score_from_iou(np.zeros(3), np.zeros(2, bool), False),  # broadcast
        lambda: threshold_sweep([], []),  # empty input list
        lambda: threshold_sweep([np.zeros((2, 2))], []),  # length mismatch
        lambda: threshold_sweep([np.zeros((2, 2))], [np.zeros((2, 2), np.uint8)]),
        lambda: threshold_sweep([np.zeros((2, 2))], [np.zeros((2, 3), bool)]),
        lambda: threshold_sweep([np.full((2, 2), 2.0)], [np.zeros((2, 2), bool)]),
        lambda: threshold_sweep([np.zeros((2, 2))], [np.zeros((2, 2), bool)], names=["a", "b"]),
        lambda: threshold_sweep(np.zeros((2, 2)), np.zeros((2, 2), bool)),  # 2-D array
        lambda: threshold_sweep(
            [np.zeros((2, 2))], [np.zeros((2, 2), bool)], thresholds=np.array([0.1, 1.1])
        ),
        lambda: threshold_sweep([np.zeros((2, 2))], [np.zeros((2, 2), bool)], thresholds=[]),
        lambda: SweepAccumulator().result(),  # nothing added
        lambda: SweepAccumulator().add(np.zeros((2, 2)), np.zeros((2, 2), bool), 3),
        lambda: SweepAccumulator().add_batch(
            np.zeros((2, 2, 2)), np.zeros((2, 2, 2), bool), ["only-one"]
        ),
    ],
)
def test_bad_arguments_raise(call):
    with pytest.raises(UnetCoreError) as info:
        call()
    msg = str(info.value)
    assert msg and "\n" not in msg


def test_error_messages_say_what_is_accepted():
    with pytest.raises(UnetCoreError, match="bool"):
        iou(np.zeros((2, 2), np.uint8), np.zeros((2, 2), bool))
    with pytest.raises(UnetCoreError, match=r"\[0, 1\]"):
        threshold_mask(np.array([[0.2, 1.5]]), 0.5)
    with pytest.raises(UnetCoreError, match="same shape"):
        iou(np.zeros((2, 2), bool), np.zeros((2, 3), bool))
    with pytest.raises(UnetCoreError, match="unknown metric"):
        threshold_sweep([np.zeros((2, 2))], [np.zeros((2, 2), bool)]).best_index("accuracy")


# --------------------------------------------------------------------------- sweeps


def _random_set(rng: np.random.Generator, thresholds: np.ndarray, n: int = 12):
    """Images of different sizes whose probabilities often equal grid thresholds exactly."""
    probs, truths = [], []
    for i in range(n):
        h, w = rng.integers(3, 14, size=2)
        if i % 3 == 0:
            p = rng.choice(thresholds, size=(h, w))  # exactly on the grid
        elif i % 3 == 1:
            p = rng.random((h, w))
            p[rng.random((h, w)) < 0.3] = rng.choice(
                [0.0, 1.0, 0.5, thresholds[len(thresholds) // 2 + 1]]
            )
        else:
            p = rng.random((h, w)).astype(np.float32)
        if i == 4:
            t = np.zeros((h, w), dtype=bool)  # empty truth
        elif i == 5:
            t = np.ones((h, w), dtype=bool)  # full truth
        else:
            t = rng.random((h, w)) < rng.random()
        probs.append(p)
        truths.append(t)
    return probs, truths


@pytest.mark.parametrize("thresholds", [None, np.array([0.0, 0.13, 0.5, 0.77, 1.0])])
def test_sweep_equals_brute_force(thresholds):
    rng = np.random.default_rng(0)
    grid = DEFAULT_THRESHOLDS if thresholds is None else thresholds
    probs, truths = _random_set(rng, grid)
    res = threshold_sweep(probs, truths, thresholds=thresholds)
    n, t = len(probs), len(grid)
    assert res.iou.shape == (n, t) and res.tgs.shape == (n, t) and res.pooled_iou.shape == (t,)
    np.testing.assert_array_equal(res.thresholds, grid)
    assert res.names == [f"image_{i}" for i in range(n)]
    pooled = np.zeros((t, 4), dtype=np.int64)
    for i, (p, tr) in enumerate(zip(probs, truths, strict=True)):
        assert res.coverage[i] == tr.mean()
        for k, th in enumerate(grid):
            pred = threshold_mask(p, th)
            counts = confusion_counts(pred, tr)
            pooled[k] += counts
            m = segmentation_metrics(pred, tr)
            # exact equality: same counts, same arithmetic
            assert res.iou[i, k] == m["iou"], (i, k)
            assert res.dice[i, k] == m["dice"], (i, k)
            assert res.precision[i, k] == m["precision"], (i, k)
            assert res.recall[i, k] == m["recall"], (i, k)
            assert res.tgs[i, k] == m["tgs_score"], (i, k)
    tp, fp, fn, _ = pooled.T
    expected_pooled = np.where(tp + fp + fn > 0, tp / np.maximum(tp + fp + fn, 1), 1.0)
    np.testing.assert_array_equal(res.pooled_iou, expected_pooled)
    # the t = 1.0 column is an empty prediction everywhere
    assert res.tgs[4, -1] == 1.0  # empty truth, empty prediction
    assert res.iou[5, -1] == 0.0  # full truth, empty prediction


def test_sweep_accepts_unsorted_thresholds():
    p = [np.array([[0.2, 0.6]])]
    t = [np.array([[False, True]])]
    res = threshold_sweep(p, t, thresholds=np.array([0.7, 0.1, 0.5, 0.5]))
    assert res.thresholds.tolist() == [0.1, 0.5, 0.7]
    # t=0.1: pred both -> tp1 fp1 -> IoU 1/2; t=0.5: pred right only -> 1; t=0.7: empty -> 0
    assert res.iou[0].tolist() == [0.5, 1.0, 0.0]


def _crafted_sweep() -> SweepResult:
    # Two 1x4 images, grid 0.0, 0.25, 0.5, 0.75, 1.0.
    # image "a": truth [T T F F], prob [0.9 0.6 0.4 0.1]
    #   t=0.00: pred TTTT -> tp2 fp2 fn0 -> IoU 2/4 = 0.5
    #   t=0.25: pred TTT. -> tp2 fp1     -> IoU 2/3
    #   t=0.50: pred TT.. -> tp2         -> IoU 1
    #   t=0.75: pred T... -> tp1 fn1     -> IoU 1/2
    #   t=1.00: empty     -> IoU 0
    # image "b": truth all F, prob [0.3 0.2 0.1 0.0]
    #   t=0.00: pred TTT. -> IoU 0 (fp only); t=0.25: pred T... -> 0; t>=0.5: both empty -> 1
    probs = [np.array([[0.9, 0.6, 0.4, 0.1]]), np.array([[0.3, 0.2, 0.1, 0.0]])]
    truths = [np.array([[True, True, False, False]]), np.zeros((1, 4), dtype=bool)]
    return threshold_sweep(
        probs, truths, names=["a", "b"], thresholds=np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    )


def test_crafted_sweep_values_and_best_threshold():
    res = _crafted_sweep()
    np.testing.assert_allclose(res.iou[0], [0.5, 2 / 3, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(res.iou[1], [0.0, 0.0, 1.0, 1.0, 1.0])
    # TGS image a: IoU 0.5 -> 0, 2/3 -> {0.50,0.55,0.60,0.65} = 0.4, 1 -> 1, 0.5 -> 0, 0 -> 0
    np.testing.assert_allclose(res.tgs[0], [0.0, 0.4, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(res.tgs[1], [0.0, 0.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(res.tgs_metric, [0.0, 0.2, 1.0, 0.5, 0.5])
    np.testing.assert_allclose(res.mean_iou, [0.25, 1 / 3, 1.0, 0.75, 0.5])
    # pooled: t=0 tp2 fp5 fn0 -> 2/7; t=0.25 tp2 fp2 -> 2/4; t=0.5 -> 1; t=0.75 tp1 fn1 -> 1/2
    # t=1 tp0 fn2 -> 0
    np.testing.assert_allclose(res.pooled_iou, [2 / 7, 0.5, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(res.coverage, [0.5, 0.0])
    assert res.best_index() == 2
    assert res.best_threshold("tgs_metric") == 0.5
    assert res.best_threshold("mean_iou") == 0.5
    assert res.best_threshold("pooled_iou") == 0.5
    assert res.best_threshold("mean_dice") == 0.5


def test_best_threshold_tie_goes_closest_to_half():
    # one image whose truth is empty and whose probabilities are all 0:
    # every threshold gives both-empty -> all metrics 1.0 everywhere -> pick 0.5
    res = threshold_sweep([np.zeros((3, 3))], [np.zeros((3, 3), bool)])
    assert np.all(res.tgs_metric == 1.0)
    assert res.best_threshold() == 0.5
    # grid without 0.5: 0.4 and 0.6 tie on distance -> the lower one
    res = threshold_sweep(
        [np.zeros((3, 3))], [np.zeros((3, 3), bool)], thresholds=np.array([0.1, 0.4, 0.6, 0.9])
    )
    assert res.best_threshold("mean_iou") == 0.4


def test_index_summary_and_per_image():
    res = _crafted_sweep()
    assert res.index_of(0.5) == 2
    assert res.index_of(0.3) == 1  # nearest to 0.25
    assert res.index_of(0.99) == 4
    s = res.summary_at(0.55)  # nearest grid value 0.5
    assert s == {
        "threshold": 0.5, "iou": 1.0, "dice": 1.0, "precision": 1.0,
        "recall": 1.0, "tgs_metric": 1.0, "pooled_iou": 1.0,
    }  # fmt: skip
    s = res.summary_at(0.25)
    # a: tp2 fp1 fn0 -> precision 2/3 recall 1 dice 4/5; b: fp1 -> precision 0, recall 0, dice 0
    assert s["precision"] == pytest.approx((2 / 3 + 0) / 2)
    assert s["recall"] == pytest.approx((1 + 0) / 2)
    assert s["dice"] == pytest.approx((4 / 5 + 0) / 2)
    assert s["tgs_metric"] == pytest.approx(0.2)
    rows = res.per_image(0.25)
    assert [r["name"] for r in rows] == ["a", "b"]
    assert set(rows[0]) == {"name", "coverage", "iou", "dice", "precision", "recall", "tgs_score"}
    assert rows[0]["iou"] == pytest.approx(2 / 3) and rows[0]["tgs_score"] == pytest.approx(0.4)
    assert rows[0]["coverage"] == 0.5
    assert rows[1]["iou"] == 0.0 and rows[1]["coverage"] == 0.0


def test_to_dict_is_json_and_round_trips():
    res = _crafted_sweep()
    d = json.loads(json.dumps(res.to_dict()))
    assert d["names"] == ["a", "b"]
    assert len(d["iou"]) == 2 and len(d["iou"][0]) == 5
    assert d["tgs_metric"] == pytest.approx([0.0, 0.2, 1.0, 0.5, 0.5])
    back = SweepResult.from_dict(d)
    np.testing.assert_array_equal(back.tgs, res.tgs)
    np.testing.assert_array_equal(back.pooled_iou, res.pooled_iou)
    assert back.best_threshold() == res.best_threshold()


def test_accumulator_matches_threshold_sweep():
    rng = np.random.default_rng(1)
    probs, truths = _random_set(rng, DEFAULT_THRESHOLDS, n=9)
    names = [f"img{i}" for i in range(9)]
    ref = threshold_sweep(probs, truths, names=names)
    acc = SweepAccumulator()
    for p, t, nm in zip(probs, truths, names, strict=True):
        acc.add(p, t, nm)
    assert len(acc) == 9
    got = acc.result()
    assert got.to_dict() == ref.to_dict()
    # batches of equal-size images, mixed with single adds
    h, w = 7, 5
    bp = rng.choice(DEFAULT_THRESHOLDS, size=(6, h, w))
    bt = rng.random((6, h, w)) < 0.4
    bt[2] = False
    bn = [f"b{i}" for i in range(6)]
    acc = SweepAccumulator()
    acc.add(bp[0], bt[0], bn[0])
    acc.add_batch(bp[1:4], bt[1:4], bn[1:4])
    acc.add_batch(bp[4:], bt[4:], bn[4:])
    assert len(acc) == 6
    ref = threshold_sweep(list(bp), list(bt), names=bn)
    assert acc.result().to_dict() == ref.to_dict()
    # (N, H, W) array input goes the batch path and agrees too
    assert threshold_sweep(bp, bt, names=bn).to_dict() == ref.to_dict()


def test_accumulator_chunking(monkeypatch):
    import unet_core.metrics as metrics

    rng = np.random.default_rng(2)
    bp = rng.random((10, 6, 6))
    bt = rng.random((10, 6, 6)) < 0.5
    ref = threshold_sweep(list(bp), list(bt))
    monkeypatch.setattr(metrics, "_CHUNK_PIXELS", 80)  # 2 images per chunk
    acc = SweepAccumulator()
    acc.add_batch(bp, bt, [f"image_{i}" for i in range(10)])
    assert acc.result().to_dict() == ref.to_dict()


# --------------------------------------------------------------------------- minimum area


def test_threshold_mask_min_area_empties_small_masks():
    prob = np.array([[0.9, 0.8, 0.1], [0.2, 0.1, 0.0]])  # 2 pixels above 0.5
    assert threshold_mask(prob, 0.5, 0).sum() == 2
    assert threshold_mask(prob, 0.5, 2).sum() == 2  # exactly min_area pixels: kept
    assert not threshold_mask(prob, 0.5, 3).any()   # fewer: emptied as a whole
    assert threshold_mask(prob, 0.5, 3).shape == prob.shape
    assert threshold_mask(prob, 0.85, 1).sum() == 1
    for bad in (-1, 1.5, True, "3", None):
        with pytest.raises(UnetCoreError, match="min_area must be a whole number"):
            threshold_mask(prob, 0.5, bad)


def test_sweep_min_area_matches_brute_force():
    rng = np.random.default_rng(7)
    probs = rng.random((6, 9, 9)) ** 3  # mostly low: small predicted areas at high thresholds
    truths = rng.random((6, 9, 9)) > 0.8
    truths[0] = False  # an empty truth
    truths[1] = False
    probs[1] = 0.0
    probs[1, 0, :2] = 0.95  # 2 stray pixels on an empty truth
    acc = SweepAccumulator()
    acc.add_batch(probs, truths, [f"i{k}" for k in range(6)])
    for area in (0, 1, 3, 8, 20):
        res = acc.result(area)
        assert res.min_area == area
        for t in (0.0, 0.3, 0.5, 0.9):
            k = res.index_of(t)
            for i in range(6):
                want = segmentation_metrics(threshold_mask(probs[i], t, area), truths[i])
                assert res.iou[i, k] == pytest.approx(want["iou"])
                assert res.tgs[i, k] == pytest.approx(want["tgs_score"])
                assert res.precision[i, k] == pytest.approx(want["precision"])
    # image 1: the 2 stray pixels cost the whole score unless min_area > 2
    k = acc.result(0).index_of(0.5)
    assert acc.result(0).tgs[1, k] == 0.0 and acc.result(3).tgs[1, k] == 1.0
    # with_min_area re-derives from counts, in both directions
    base, three = acc.result(0), acc.result(3)
    np.testing.assert_array_equal(base.with_min_area(3).tgs, three.tgs)
    np.testing.assert_array_equal(three.with_min_area(0).iou, base.iou)
    np.testing.assert_array_equal(three.with_min_area(0).pooled_iou, base.pooled_iou)
    assert base.with_min_area(0) is base


def test_sweep_counts_round_trip_and_are_required_to_change_min_area():
    acc = SweepAccumulator([0.25, 0.5])
    acc.add(np.array([[0.9, 0.1], [0.1, 0.1]]), np.zeros((2, 2), bool), "a")
    res = acc.result(2)
    back = SweepResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.min_area == 2
    np.testing.assert_array_equal(back.with_min_area(0).tgs, acc.result(0).tgs)
    plain = res.to_dict()
    del plain["counts"]
    bare = SweepResult.from_dict(plain)
    assert bare.counts is None and bare.min_area == 2
    with pytest.raises(UnetCoreError, match="no confusion counts"):
        bare.with_min_area(0)
    with pytest.raises(UnetCoreError, match="counts"):
        SweepResult.from_dict({**plain, "counts": {"tp": [[0, 0]]}})


def test_select_threshold_picks_the_smallest_area_that_helps():
    # image A: empty truth, 3 stray pixels at 0.9 (a false alarm unless min_area > 3);
    # image B: 10 true pixels predicted exactly at 0.8 (lost if min_area > 10).
    a_prob = np.zeros((8, 8))
    a_prob[0, :3] = 0.9
    b_truth = np.zeros((8, 8), bool)
    b_truth[2:4, 1:6] = True
    b_prob = np.where(b_truth, 0.8, 0.0)
    sweep = threshold_sweep([a_prob, b_prob], [np.zeros((8, 8), bool), b_truth])
    # without the rule: A scores 0 at every threshold below 0.9, B scores 1 below 0.8
    t0, area0, res0 = select_threshold(sweep, "tgs_metric", (0,))
    assert area0 == 0 and res0.tgs_metric.max() == 0.5
    t, area, res = select_threshold(sweep)  # MIN_AREA_CANDIDATES = 0, 5, 10, 20, ...
    assert area == 5  # 5 and 10 both give 1.0; the smaller area wins the tie
    assert 0.0 <= t < 0.8 and res.min_area == 5
    assert res.summary_at(t)["tgs_metric"] == 1.0
    assert t == pytest.approx(0.5)  # threshold ties go to 0.5
    assert MIN_AREA_CANDIDATES[0] == 0
    with pytest.raises(UnetCoreError, match="at least one area"):
        select_threshold(sweep, "tgs_metric", ())
    with pytest.raises(UnetCoreError, match="unknown metric"):
        select_threshold(sweep, "accuracy")


# --------------------------------------------------------------------------- multi-class

# 2x3 case, K = 3. (truth, pred) pairs: (0,0) (1,1) (1,2) / (2,2) (0,2) (0,0)
PRED_L = np.array([[0, 1, 2], [2, 2, 0]], dtype=np.uint8)
TRUTH_L = np.array([[0, 1, 1], [2, 0, 0]], dtype=np.uint8)
CONF_L = np.array([[2, 0, 1], [0, 1, 1], [0, 0, 1]])
# class 0: tp 2 fp 0 fn 1 -> IoU 2/3, Dice 4/5; class 1: tp 1 fp 0 fn 1 -> 1/2, 2/3;
# class 2: tp 1 fp 2 fn 0 -> 1/3, 1/2; pixel accuracy 4/6


def test_class_confusion_by_hand():
    c = class_confusion(PRED_L, TRUTH_L, 3)
    assert c.dtype == np.int64 and c.shape == (3, 3)
    np.testing.assert_array_equal(c, CONF_L)  # rows truth, columns prediction
    np.testing.assert_allclose(class_iou(c), [2 / 3, 1 / 2, 1 / 3])
    np.testing.assert_allclose(class_dice(c), [4 / 5, 2 / 3, 1 / 2])
    # a class absent from both truth and prediction scores 1.0 (the binary empty rule)
    c4 = class_confusion(PRED_L, TRUTH_L, 4)
    assert c4.shape == (4, 4) and c4[3].sum() == c4[:, 3].sum() == 0
    assert class_iou(c4)[3] == 1.0 and class_dice(c4)[3] == 1.0
    # bool label maps are classes 0/1, and equal the binary metrics
    p, t = PRED_4, TRUTH_4
    np.testing.assert_allclose(class_iou(class_confusion(p, t, 2))[1], iou(p, t))


def test_class_confusion_matches_binary_metrics_per_class(rng):
    pred = rng.integers(0, 4, (37, 29))
    truth = rng.integers(0, 4, (37, 29))
    c = class_confusion(pred, truth, 4)
    assert c.sum() == pred.size
    for k in range(4):
        assert class_iou(c)[k] == pytest.approx(iou(pred == k, truth == k))
        assert class_dice(c)[k] == pytest.approx(dice(pred == k, truth == k))


@pytest.mark.parametrize(
    ("pred", "truth", "k", "needle"),
    [
        (PRED_L, TRUTH_L[:1], 3, "same shape"),
        (PRED_L, TRUTH_L, 2, "holds class 2 but there are 2 classes (accepted: 0..1)"),
        (PRED_L - 1.0, TRUTH_L, 3, "integer class indices"),
        (PRED_L.astype(np.int8) - 1, TRUTH_L, 3, "holds class -1"),
        (PRED_L, TRUTH_L, 1, "n_classes must be 2"),
        ("abc", TRUTH_L, 3, "integer array"),
    ],
)
def test_class_confusion_errors(pred, truth, k, needle):
    with pytest.raises(UnetCoreError) as exc:
        class_confusion(pred, truth, k)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_class_accumulator_by_hand():
    acc = ClassAccumulator(3, ["background", "road", "water"])
    acc.add(PRED_L, TRUTH_L, "a")
    acc.add(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8), "b")  # all background
    assert len(acc) == 2
    r = acc.result()
    # image b: class 0 perfect, classes 1 and 2 absent from both -> 1.0
    np.testing.assert_allclose(r.iou, [[2 / 3, 1 / 2, 1 / 3], [1, 1, 1]])
    np.testing.assert_allclose(r.dice, [[4 / 5, 2 / 3, 1 / 2], [1, 1, 1]])
    np.testing.assert_allclose(r.class_iou, [5 / 6, 3 / 4, 2 / 3])
    np.testing.assert_allclose(r.class_dice, [9 / 10, 5 / 6, 3 / 4])
    assert r.mean_iou == pytest.approx(0.75)  # all 3 classes, background included
    assert r.mean_dice == pytest.approx(149 / 180)
    # pooled: confusion summed (class 0 gains 4 tp) -> class 0 IoU 6/7, Dice 12/13
    np.testing.assert_array_equal(r.confusion, CONF_L + np.diag([4, 0, 0]))
    np.testing.assert_allclose(r.pooled_iou, [6 / 7, 1 / 2, 1 / 3])
    np.testing.assert_allclose(r.pooled_dice, [12 / 13, 2 / 3, 1 / 2])
    assert r.pooled_mean_iou == pytest.approx((6 / 7 + 1 / 2 + 1 / 3) / 3)
    assert r.pixel_accuracy == pytest.approx(8 / 10)
    np.testing.assert_allclose(r.image_accuracy, [4 / 6, 1.0])

    classes = r.per_class()
    assert [c["name"] for c in classes] == ["background", "road", "water"]
    assert [c["truth_pixels"] for c in classes] == [7, 2, 1]
    assert [c["pred_pixels"] for c in classes] == [6, 1, 3]
    assert [c["images"] for c in classes] == [2, 1, 1]
    rows = r.per_image()
    assert [row["name"] for row in rows] == ["a", "b"]
    assert rows[0]["iou:water"] == pytest.approx(1 / 3)
    assert rows[0]["mean_iou"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 3) / 3)
    assert rows[1]["pixel_accuracy"] == 1.0
    d = json.loads(json.dumps(r.to_dict()))
    assert d["n"] == 2 and d["n_classes"] == 3 and d["mean_iou"] == pytest.approx(0.75)
    assert d["confusion"][0] == [6, 0, 1] and len(d["per_image"]) == 2
    assert "background included" in d["mean_over"]


def test_class_accumulator_errors():
    with pytest.raises(UnetCoreError, match="class_names must be 3 names"):
        ClassAccumulator(3, ["a", "b"])
    acc = ClassAccumulator(2)
    assert acc.class_names == ["class 0", "class 1"]
    with pytest.raises(UnetCoreError, match="no images"):
        acc.result()
    with pytest.raises(UnetCoreError, match=r"^img7: truth_labels holds class 2"):
        acc.add(np.zeros((2, 2), int), np.full((2, 2), 2), "img7")
    assert len(acc) == 0
