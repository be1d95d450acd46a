"""Model comparison: paired statistics, the engine on tiny models, the ``compare`` command."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from unet_core import compare as cmpmod
from unet_core.cli import main
from unet_core.compare import (
    METRICS,
    ComparisonCancelled,
    check_comparable,
    compare_images,
    compare_pairs,
    disagreement_map,
    paired_stats,
    reading,
    same_predictions,
    win_tie_loss,
)
from unet_core.errors import UnetCoreError
from unet_core.inference import Segmenter
from unet_core.io import find_pairs, read_mask, read_raw
from unet_core.metrics import dice, iou, tgs_score, threshold_mask
from unet_core.model import load_model

ROOT = Path(__file__).resolve().parents[1]
TF = ("--backend", "tensorflow")  # no ONNX export for these throw-away models
SUMMARY_KEYS = {"n", "metrics", "wins", "ties", "losses"}
METRIC_KEYS = {"a", "b", "delta", "ci95", "p_value"}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def seg(path: Path) -> Segmenter:
    return Segmenter(load_model(path), backend="tensorflow")


@pytest.fixture(scope="module")
def perturbed_model_path(tiny_model_path, tmp_path_factory) -> Path:
    """The tiny U-Net with every weight nudged by seeded noise, saved with the same card."""
    import keras

    model = keras.models.load_model(tiny_model_path)
    rng = np.random.default_rng(7)
    model.set_weights([w + rng.normal(0.0, 0.3, w.shape).astype(w.dtype) * (w.ndim > 1)
                       for w in model.get_weights()])
    path = tmp_path_factory.mktemp("perturbed") / "tiny_b.keras"
    model.save(path)
    shutil.copy(tiny_model_path.with_suffix(".json"), path.with_suffix(".json"))
    return path


@pytest.fixture(scope="module")
def seg_a(tiny_model_path) -> Segmenter:
    return seg(tiny_model_path)


@pytest.fixture(scope="module")
def seg_b(perturbed_model_path) -> Segmenter:
    return seg(perturbed_model_path)


# --------------------------------------------------------------------------- paired_stats


def test_paired_stats_hand_case_matches_scipy():
    a = np.array([0.5, 0.6, 0.7, 0.8, 0.4, 0.9])
    b = np.array([0.6, 0.6, 0.9, 0.9, 0.3, 1.0])
    r = paired_stats(a, b, seed=3, n_resamples=2000)
    assert r.a == pytest.approx(3.9 / 6) and r.b == pytest.approx(4.3 / 6)
    assert r.delta == pytest.approx(0.4 / 6)  # (0.1 + 0 + 0.2 + 0.1 - 0.1 + 0.1) / 6
    ref = stats.bootstrap((b - a,), np.mean, method="BCa", confidence_level=0.95,
                          n_resamples=2000, rng=np.random.default_rng(3))
    assert r.ci95 == (pytest.approx(ref.confidence_interval.low),
                      pytest.approx(ref.confidence_interval.high))
    assert r.ci_method == "BCa" and r.notes == ()
    assert r.p_value == pytest.approx(stats.wilcoxon(b - a).pvalue)
    assert r.p_value == pytest.approx(stats.wilcoxon(b, a).pvalue)
    assert isinstance(r.to_dict()["ci95"][0], float)


def test_interval_covers_the_true_mean_difference():
    rng = np.random.default_rng(11)
    a = rng.uniform(0.3, 0.9, 300)
    b = a + 0.05 + rng.normal(0.0, 0.1, 300)  # true mean difference 0.05
    r = paired_stats(a, b, seed=0, n_resamples=999)
    lo, hi = r.ci95
    assert lo < 0.05 < hi and lo < r.delta < hi
    assert r.delta == pytest.approx(float(np.mean(b - a)))
    assert r.excludes_zero  # 0.05 over a spread of 0.1 with 300 images: lo > 0
    assert r.p_value < 1e-6


def test_seed_makes_the_interval_repeatable_and_batching_changes_nothing():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(size=50), rng.uniform(size=50)
    one = paired_stats(a, b, seed=5, n_resamples=500)
    assert paired_stats(a, b, seed=5, n_resamples=500) == one
    assert paired_stats(a, b, seed=5, n_resamples=500, batch=None).ci95 == pytest.approx(one.ci95)
    assert paired_stats(a, b, seed=6, n_resamples=500).ci95 != one.ci95


def test_identical_scores_give_exact_zero_without_warnings():
    a = np.array([0.2, 1.0, 0.0, 0.7])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = paired_stats(a, a.copy())
    assert (r.a, r.b, r.delta, r.ci95, r.p_value) == (0.475, 0.475, 0.0, (0.0, 0.0), 1.0)
    assert r.ci_method == "constant" and r.notes == ()


def test_constant_nonzero_difference():
    a = np.zeros(9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = paired_stats(a, a + 0.25)
    assert r.delta == 0.25 and r.ci95 == (0.25, 0.25)
    # nine positive differences: exact two-sided p = 2 / 2**9
    assert r.p_value == pytest.approx(2 / 2**9)
    assert r.p_value == pytest.approx(stats.wilcoxon(np.full(9, 0.25)).pvalue)


def test_one_image_gives_the_difference_and_a_note():
    r = paired_stats(np.array([0.5]), np.array([0.75]))
    assert r.delta == 0.25 and r.ci95 == (0.25, 0.25)
    assert r.ci_method == "single image" and "one image" in r.notes[0]


def test_nan_bca_falls_back_to_percentile(monkeypatch):
    real = stats.bootstrap

    def nan_bca(data, statistic, *, method, **kw):
        res = real(data, statistic, method=method, **kw)
        if method == "BCa":
            res.confidence_interval = type(res.confidence_interval)(np.nan, np.nan)
        return res

    monkeypatch.setattr(stats, "bootstrap", nan_bca)
    a = np.array([0.1, 0.4, 0.3, 0.8, 0.5])
    b = np.array([0.2, 0.4, 0.6, 0.7, 0.9])
    r = paired_stats(a, b, seed=1, n_resamples=500)
    ref = real((b - a,), np.mean, method="percentile", n_resamples=500,
               rng=np.random.default_rng(1))
    assert r.ci_method == "percentile" and "percentile" in r.notes[0]
    assert r.ci95 == (pytest.approx(ref.confidence_interval.low),
                      pytest.approx(ref.confidence_interval.high))


def test_large_samples_use_the_percentile_interval(monkeypatch):
    monkeypatch.setattr(cmpmod, "MAX_BCA_N", 5)
    a = np.array([0.1, 0.4, 0.3, 0.8, 0.5, 0.2])
    b = np.array([0.2, 0.4, 0.6, 0.7, 0.9, 0.2])
    r = paired_stats(a, b, seed=2, n_resamples=400)
    ref = stats.bootstrap((b - a,), np.mean, method="percentile", n_resamples=400,
                          rng=np.random.default_rng(2))
    assert r.ci_method == "percentile" and "6 images" in r.notes[0]
    assert r.ci95 == (pytest.approx(ref.confidence_interval.low),
                      pytest.approx(ref.confidence_interval.high))


def _comparison(a: np.ndarray, b: np.ndarray) -> cmpmod.Comparison:
    """A Comparison whose three metrics all hold the scores (a, b)."""
    w, t, lo = win_tie_loss(a, b)
    r = paired_stats(a, b, n_resamples=500)
    return cmpmod.Comparison(
        names=[f"i{k}" for k in range(a.size)],
        per_image={f"{m}_{s}": v for m in METRICS for s, v in (("a", a), ("b", b))},
        metrics=dict.fromkeys(METRICS, r), wins=w, ties=t, losses=lo, label_a="A",
        label_b="B", threshold_a=0.5, threshold_b=0.5, min_area_a=0, min_area_b=0,
        class_index=0, seed=0)


def test_reading_sentences():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.4, 0.8, 60)
    assert reading(_comparison(a, a + 0.1 + rng.normal(0, 0.02, 60))).startswith(
        "B is better on IoU: the 95 % CI")
    assert reading(_comparison(a, a - 0.1 + rng.normal(0, 0.02, 60))).startswith(
        "A is better on IoU")
    noise = _comparison(a, a + rng.normal(0, 0.1, 60))
    assert noise.metrics["iou"].ci95[0] < 0 < noise.metrics["iou"].ci95[1]
    assert reading(noise).startswith("no evidence of a difference in mean IoU")
    # B slightly lower on most images, far higher on a few: the mean cannot tell, Wilcoxon can
    b = a - 0.01
    b[:6] += 0.2
    text = reading(_comparison(a, b))
    assert "includes 0" in text and "finds B lower on more images (6 wins, 54 losses)" in text


@pytest.mark.parametrize("a, b, words", [
    (np.zeros(3), np.zeros(4), "same images"),
    (np.array([0.1, np.nan]), np.zeros(2), "NaN"),
    (np.zeros((2, 2)), np.zeros((2, 2)), "1-D"),
    (np.array([], dtype=float), np.array([], dtype=float), "non-empty"),
])
def test_bad_scores_are_one_line_errors(a, b, words):
    with pytest.raises(UnetCoreError, match=words) as exc:
        paired_stats(a, b)
    assert "\n" not in str(exc.value)


def test_win_tie_loss_tolerance():
    a = np.array([0.5, 0.5, 0.5, 0.5, 0.5])
    b = np.array([0.5 + 1e-13, 0.6, 0.3, 0.5, 0.5 - 1e-11])
    assert win_tie_loss(a, b) == (1, 2, 2)


# --------------------------------------------------------------------------- single image


def test_disagreement_map_and_compare_images_by_hand():
    a = np.array([[True, True], [False, False]])
    b = np.array([[True, False], [True, False]])
    np.testing.assert_array_equal(disagreement_map(a, b), [[3, 1], [2, 0]])
    assert disagreement_map(a, b).dtype == np.uint8
    pa = np.where(a, 0.9, 0.1)
    pb = np.where(b, 0.6, 0.4)
    truth = np.array([[True, True], [True, False]])
    r = compare_images(pa, pb, truth, threshold_a=0.5, threshold_b=0.5)
    assert r["disagree_fraction"] == 0.5 and r["area_a"] == 2 and r["area_b"] == 2
    assert r["iou_ab"] == pytest.approx(1 / 3)
    assert r["metrics_a"] == {"iou": pytest.approx(2 / 3), "dice": pytest.approx(0.8),
                              "tgs_score": pytest.approx(0.4)}  # 2/3 beats 0.50..0.65
    assert r["metrics_b"]["iou"] == pytest.approx(2 / 3)
    # B's own threshold above its 0.6: B's mask is empty
    r = compare_images(pa, pb, None, threshold_a=0.5, threshold_b=0.7)
    assert r["area_b"] == 0 and r["metrics_a"] is None and r["disagree_fraction"] == 0.5
    # minimum area empties A's 2-pixel mask
    r = compare_images(pa, pb, truth, threshold_a=0.5, threshold_b=0.5, min_area_a=3)
    assert r["area_a"] == 0 and r["metrics_a"]["iou"] == 0.0
    with pytest.raises(UnetCoreError, match="one shape"):
        disagreement_map(a, b[:1])
    with pytest.raises(UnetCoreError, match="truth"):
        compare_images(pa, pb, truth[:1], threshold_a=0.5, threshold_b=0.5)


# --------------------------------------------------------------------------- engine


def test_self_comparison_is_exactly_zero(seg_a, tiny_model_path, seismic_pairs):
    pairs = find_pairs(seismic_pairs, require_masks=True)
    s = seg_a
    calls = []
    for other in (s, seg(tiny_model_path)):  # the same Segmenter, and the same file loaded twice
        assert same_predictions(s, other)
        c = compare_pairs(s, other, pairs, n_resamples=500, batch_size=5,
                          progress=lambda done, total: calls.append((done, total)))
        assert c.shared_predictions
        assert c.summary() == {
            "n": 12, "wins": 0, "ties": 12, "losses": 0,
            "metrics": {m: {"a": c.metrics[m].a, "b": c.metrics[m].a, "delta": 0.0,
                            "ci95": [0.0, 0.0], "p_value": 1.0} for m in METRICS}}
        assert "same score on every image" in reading(c)
    assert calls[:3] == [(5, 12), (10, 12), (12, 12)]


def test_two_models_match_a_hand_loop(seg_a, seg_b, seismic_pairs):
    pairs = find_pairs(seismic_pairs, require_masks=True)[:6]
    sa, sb = seg_a, seg_b
    assert not same_predictions(sa, sb)
    c = compare_pairs(sa, sb, pairs, threshold=0.5, seed=4, n_resamples=500)
    hand = {f"{m}_{s}": [] for m in METRICS for s in "ab"}
    for p in pairs:
        image, truth = read_raw(p.image_path), read_mask(p.mask_path)
        for side, model in (("a", sa), ("b", sb)):
            mask = threshold_mask(model.predict_proba(image), 0.5, 0)
            hand[f"iou_{side}"].append(iou(mask, truth))
            hand[f"dice_{side}"].append(dice(mask, truth))
            hand[f"tgs_score_{side}"].append(tgs_score(mask, truth))
    assert c.names == [p.name for p in pairs]
    for key, values in hand.items():
        np.testing.assert_allclose(c.per_image[key], values, atol=1e-12)
    d_iou = np.array(hand["iou_b"]) - np.array(hand["iou_a"])
    assert np.abs(d_iou).max() > 0.01  # the perturbation changes the masks
    for m in METRICS:
        d = np.array(hand[f"{m}_b"]) - np.array(hand[f"{m}_a"])
        r = c.metrics[m]
        assert r.delta == pytest.approx(d.mean(), abs=1e-12)
        assert r.a == pytest.approx(np.mean(hand[f"{m}_a"]))
        assert r == paired_stats(np.array(hand[f"{m}_a"]), np.array(hand[f"{m}_b"]), seed=4,
                                 n_resamples=500)
    assert c.wins + c.ties + c.losses == 6
    assert (c.wins, c.losses) == (int((d_iou > 1e-12).sum()), int((d_iou < -1e-12).sum()))
    order = c.disagreement_order()
    assert sorted(order.tolist()) == list(range(6))
    assert abs(d_iou[order[0]]) == np.abs(d_iou).max()
    rows = c.rows()
    assert rows[0]["delta_iou"] == pytest.approx(d_iou[0])


def test_cancel_stops_after_the_batch(seg_a, seg_b, seismic_pairs):
    pairs = find_pairs(seismic_pairs, require_masks=True)
    with pytest.raises(ComparisonCancelled, match="after 4 of 12"):
        compare_pairs(seg_a, seg_b, pairs, batch_size=4, cancel=lambda: True)


def test_different_classes_are_refused(tiny_model_path, own_models):
    a, b = load_model(tiny_model_path).card, load_model(own_models / "three.keras").card
    with pytest.raises(UnetCoreError) as exc:
        check_comparable(a, b)
    msg = str(exc.value)
    assert "\n" not in msg and "one map (foreground)" in msg
    assert "3 classes (background, road, car)" in msg
    renamed = load_model(own_models / "three.keras").card
    renamed.classes = ["background", "road", "truck"]
    with pytest.raises(UnetCoreError, match="truck"):
        check_comparable(b, renamed)


def test_different_input_specs_compare(seg_a, own_models, seismic_pairs):
    """A 1-channel fully convolutional model against a 3-channel raw-BGR one, each with its
    own card."""
    pairs = find_pairs(seismic_pairs, require_masks=True)[:4]
    sa, sb = seg_a, seg(own_models / "rgb.keras")
    assert (sa.card.channels, sb.card.channels) == (1, 3)
    c = compare_pairs(sa, sb, pairs, min_area=0, n_resamples=200)
    assert c.n == 4 and c.wins + c.ties + c.losses == 4
    image = read_raw(pairs[0].image_path)
    mask = threshold_mask(sb.predict_proba(image), sb.card.threshold, 0)
    assert c.per_image["iou_b"][0] == pytest.approx(iou(mask, read_mask(pairs[0].mask_path)))


# --------------------------------------------------------------------------- command line


@pytest.mark.slow
def test_cli_json_has_exactly_the_keys(capsys, tiny_model_path, perturbed_model_path,
                                       seismic_pairs, tmp_path):
    per = tmp_path / "out" / "per.csv"
    code, out, err = run(capsys, "compare", "--model", str(tiny_model_path), "--model",
                         str(perturbed_model_path), "--data", str(seismic_pairs), "--json",
                         "--resamples", "300", "--seed", "2", "--per-image", str(per), *TF)
    assert code == 0, err
    res = json.loads(out)
    assert set(res) == SUMMARY_KEYS and set(res["metrics"]) == set(METRICS)
    for m in METRICS:
        assert set(res["metrics"][m]) == METRIC_KEYS and len(res["metrics"][m]["ci95"]) == 2
    assert res["n"] == 12 and res["wins"] + res["ties"] + res["losses"] == 12
    with open(per, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    assert list(rows[0]) == ["name", "iou_a", "iou_b", "dice_a", "dice_b", "tgs_score_a",
                             "tgs_score_b", "delta_iou", "delta_dice", "delta_tgs_score"]
    deltas = [float(r["iou_b"]) - float(r["iou_a"]) for r in rows]
    assert res["metrics"]["iou"]["delta"] == pytest.approx(np.mean(deltas))


def test_cli_text_self_comparison(capsys, tiny_model_path, seismic_pairs):
    code, out, err = run(capsys, "compare", "--model", str(tiny_model_path), "--model",
                         str(tiny_model_path), "--data", str(seismic_pairs), *TF)
    assert code == 0, err
    assert "n = 12 images" in out and "tie on 12" in out
    assert "[+0.0000, +0.0000]" in out and "same score on every image" in out
    for label in ("IoU", "Dice", "TGS score"):
        assert label in out


@pytest.mark.parametrize("extra, words", [
    ((), "exactly two models, got 1"),
    (("--model", "x.keras", "--model", "y.keras"), "exactly two models, got 3"),
])
def test_cli_needs_two_models(capsys, tiny_model_path, seismic_pairs, extra, words):
    code, out, err = run(capsys, "compare", "--model", str(tiny_model_path), *extra,
                         "--data", str(seismic_pairs))
    assert code == 2 and out == ""
    assert err.startswith("error:") and words in err and err.count("\n") == 1


def test_cli_refuses_different_classes(capsys, tiny_model_path, own_models, seismic_pairs):
    code, _, err = run(capsys, "compare", "--model", str(tiny_model_path), "--model",
                       str(own_models / "three.keras"), "--data", str(seismic_pairs), *TF)
    assert code == 2 and err.count("\n") == 1 and "different classes" in err


@pytest.mark.slow
def test_bundled_salt_model(capsys, tmp_path):
    """models/salt.keras against itself (exactly 0) and against its no-TTA variant."""
    model, data = ROOT / "models" / "salt.keras", ROOT / "assets" / "seismic"
    if not model.is_file() or not (data / "images").is_dir():
        pytest.skip("bundled salt model or assets/seismic absent")
    variant = tmp_path / "salt_notta.keras"
    shutil.copy(model, variant)
    card = json.loads(model.with_suffix(".json").read_text())
    variant.with_suffix(".json").write_text(json.dumps({**card, "tta": False}))
    base = ("compare", "--model", str(model), "--data", str(data), "--json", *TF)
    code, out, err = run(capsys, *base, "--model", str(model))
    assert code == 0, err
    res = json.loads(out)
    assert res["ties"] == res["n"] == len(list((data / "images").iterdir()))
    assert all(res["metrics"][m]["ci95"] == [0.0, 0.0] and res["metrics"][m]["delta"] == 0.0
               and res["metrics"][m]["p_value"] == 1.0 for m in METRICS)
    code, out, err = run(capsys, *base, "--model", str(variant))
    assert code == 0, err
    res = json.loads(out)
    assert res["wins"] + res["ties"] + res["losses"] == res["n"]
    r = res["metrics"]["iou"]
    assert r["ci95"][0] <= r["delta"] <= r["ci95"][1]


def test_module_has_no_streamlit():
    assert "streamlit" not in Path(cmpmod.__file__).read_text()


def test_cards_disagreeing_on_inverted_masks_need_a_choice(seg_a, tiny_model_path,
                                                           seismic_pairs):
    import dataclasses

    loaded = load_model(tiny_model_path)
    loaded.card = dataclasses.replace(loaded.card, name="inv", truth_inverted=True)
    inv = Segmenter(loaded, backend="tensorflow")
    pairs = find_pairs(seismic_pairs, require_masks=True)[:2]
    with pytest.raises(UnetCoreError, match="B inv's card says the masks mark the other class"):
        compare_pairs(seg_a, inv, pairs)
    c = compare_pairs(seg_a, inv, pairs, invert_masks=True, n_resamples=100)
    assert c.invert_masks and not c.shared_predictions  # the cards differ
    image, truth = read_raw(pairs[0].image_path), read_mask(pairs[0].mask_path)
    mask = threshold_mask(seg_a.predict_proba(image), 0.5, 0)
    assert c.per_image["iou_a"][0] == pytest.approx(iou(mask, ~truth))
    assert c.per_image["iou_b"][0] == pytest.approx(c.per_image["iou_a"][0])
