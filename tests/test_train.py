"""Training: a tiny model for a few steps on generated data (CI never trains a real model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unet_core.cli import main
from unet_core.errors import UnetCoreError
from unet_core.inference import Segmenter
from unet_core.metrics import MIN_AREA_CANDIDATES
from unet_core.model import load_model
from unet_core.train import (
    TrainConfig,
    augment_pair,
    average_snapshots,
    elastic_displacement,
    lovasz_hinge_loss,
    stratified_split,
    symmetric_lovasz_loss,
)


def _probs(logits: list[float]) -> np.ndarray:
    """(1, 1, N, 1) float32 probabilities whose logits are the given values."""
    return (1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))).astype(np.float32)[
        None, None, :, None]


def test_lovasz_losses_match_hand_computed_values():
    # labels (1, 0), logits (2, -1): hinge errors (-1, 0); sorted (0, -1) with labels (0, 1);
    # Jaccard steps (0.5, 1) -> grad (0.5, 0.5); loss = 0.5*(elu(0)+1) + 0.5*(elu(-1)+1).
    y = np.array([1.0, 0.0], np.float32)[None, None, :, None]
    want = 0.5 + 0.5 * np.exp(-1.0)
    assert float(lovasz_hinge_loss(y, _probs([2.0, -1.0]))[0]) == pytest.approx(want, abs=1e-4)
    # inverted problem: labels (0, 1), logits (-2, 1), errors (-1, 0); sorted (0, -1) with
    # labels (1, 0); Jaccard steps (1, 1) -> grad (1, 0); background term = elu(0)+1 = 1
    assert float(symmetric_lovasz_loss(y, _probs([2.0, -1.0]))[0]) == pytest.approx(
        (want + 1.0) / 2, abs=1e-4)
    # empty mask, logits (1, -1): foreground term = elu(2)+1 = 3 (worst pixel only);
    # background term: labels (1, 1), errors (2, 0), grad (0.5, 0.5) -> 0.5*3 + 0.5*1 = 2
    empty = np.zeros((1, 1, 2, 1), np.float32)
    assert float(lovasz_hinge_loss(empty, _probs([1.0, -1.0]))[0]) == pytest.approx(3.0, abs=1e-4)
    assert float(symmetric_lovasz_loss(empty, _probs([1.0, -1.0]))[0]) == pytest.approx(
        2.5, abs=1e-4)


def test_symmetric_lovasz_penalises_every_false_positive_on_an_empty_mask():
    import tensorflow as tf

    empty = tf.zeros((1, 1, 3, 1))
    p = tf.Variable(_probs([1.0, 0.5, -1.0]))
    grads = {}
    for name, loss in (("plain", lovasz_hinge_loss), ("sym", symmetric_lovasz_loss)):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(loss(empty, p))
        grads[name] = tape.gradient(value, p).numpy().ravel()
    # the plain hinge only pushes down the worst pixel; the symmetric one pushes both positives
    assert grads["plain"][0] > 0 and grads["plain"][1] == 0
    assert grads["sym"][0] > 0 and grads["sym"][1] > 0


def test_stratified_split_is_deterministic_and_balanced():
    cov = np.r_[np.zeros(40), np.linspace(0.01, 0.9, 60)]
    a = stratified_split(cov, 0.2, 0.1, seed=7)
    b = stratified_split(cov, 0.2, 0.1, seed=7)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    tr, va, te = a
    assert len(set(tr) | set(va) | set(te)) == 100 and len(tr) + len(va) + len(te) == 100
    # same share of empty masks as the whole set, up to rounding within each stratum
    assert abs((cov[va] == 0).mean() - 0.4) < 0.06
    assert abs((cov[te] == 0).mean() - 0.4) < 0.06


def test_augment_pair_keeps_image_and_mask_aligned():
    rng = np.random.default_rng(0)
    img = np.zeros((101, 101), np.float32)
    img[30:60, 40:80] = 1.0
    mask = img.copy()
    cfg = TrainConfig(crop=128, brightness=0.0, contrast=0.0)
    for _ in range(5):
        a, m = augment_pair(img, mask, cfg, rng)
        assert a.shape == m.shape == (128, 128)
        assert set(np.unique(m)) <= {0.0, 1.0}
        # with no intensity jitter, bright pixels are exactly the mask (nearest vs linear edges)
        assert np.mean((a > 0.5) == (m > 0.5)) > 0.97


def test_elastic_deformation_keeps_image_and_mask_aligned():
    """With elastic displacements, image and mask are resampled through the same coordinates."""
    rng = np.random.default_rng(3)
    img = np.zeros((200, 200), np.float32)
    img[40:160:20, :] = 1.0  # horizontal bars: rows stay constant unless the crop is bent
    mask = img.copy()
    cfg = TrainConfig(crop=128, brightness=0.0, contrast=0.0, elastic=8.0, elastic_grid=3,
                      scale_range=0.0)
    plain = TrainConfig(crop=128, brightness=0.0, contrast=0.0, scale_range=0.0)

    def mixed_rows(m: np.ndarray) -> int:
        return int(((m > 0.5).any(axis=1) & ~(m > 0.5).all(axis=1)).sum())

    for _ in range(5):
        a, m = augment_pair(img, mask, cfg, rng)
        assert a.shape == m.shape == (128, 128)
        assert set(np.unique(m)) <= {0.0, 1.0}
        assert np.mean((a > 0.5) == (m > 0.5)) > 0.97
        assert mixed_rows(m) > 10
        _, m_plain = augment_pair(img, mask, plain, rng)
        assert mixed_rows(m_plain) == 0


def test_elastic_displacement_is_smooth_and_sized():
    rng = np.random.default_rng(0)
    field = elastic_displacement(256, 10.0, 3, rng)
    assert field.shape == (2, 256, 256) and field.dtype == np.float64
    assert 2.0 < field.std() < 30.0
    # smooth: neighbouring pixels move almost together (a 3 x 3 grid spans the crop)
    assert np.abs(np.diff(field, axis=1)).max() < 1.0
    assert np.abs(np.diff(field, axis=2)).max() < 1.0
    # the grid points themselves carry the drawn displacements (corners = coarse corners)
    coarse = np.random.default_rng(0).normal(0.0, 10.0, (2, 3, 3))
    np.testing.assert_allclose(field[:, 0, 0], coarse[:, 0, 0], atol=1e-9)
    np.testing.assert_allclose(field[:, -1, -1], coarse[:, -1, -1], atol=1e-9)
    with pytest.raises(UnetCoreError, match="elastic_grid"):
        elastic_displacement(64, 5.0, 1, rng)


def test_train_refuses_bad_elastic_settings(tmp_path, seismic_pairs, capsys):
    code = main(["train", "--data", str(seismic_pairs), "--out", str(tmp_path / "m.keras"),
                 "--elastic", "5", "--elastic-grid", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "elastic_grid >= 2" in err and not (tmp_path / "m.keras").exists()


def test_train_tiny_writes_card_and_reloads(tmp_path, seismic_pairs, capsys):
    out = tmp_path / "models" / "tiny.keras"
    code = main(["train", "--data", str(seismic_pairs), "--out", str(out), "--run-dir",
                 str(tmp_path / "run"), "--base-filters", "4", "--depth", "2", "--crop", "64",
                 "--epochs", "2", "--lovasz-epochs", "1", "--sym-lovasz-epochs", "1",
                 "--batch-size", "4",
                 "--samples-per-epoch", "8", "--verbose", "0", "--val-fraction", "0.2",
                 "--test-fraction", "0.2"])
    assert code == 0, capsys.readouterr().err
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["command"].startswith("python -m unet_core train --data")
    assert card["training"]["epochs_run"] == 4
    assert card["training"]["loss"].endswith("then symmetric Lovász hinge")
    assert card["training"]["weights"].startswith("best epoch")
    assert card["min_size"] == 64 and card["multiple_of"] == 4
    assert 0 <= card["threshold"] <= 1
    assert {"validation", "test"} <= set(card["metrics"])
    assert card["min_area"] in MIN_AREA_CANDIDATES
    assert card["metrics"]["min_area"] == card["min_area"]
    assert ("without_min_area" in card["metrics"]) == (card["min_area"] > 0)
    assert out.with_suffix(".heldout.txt").read_text().strip()
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(log) == 5 and "val_best_tgs_metric" in log[0]
    assert [row.split(",")[1] for row in log[1:]] == ["bce_dice", "bce_dice", "lovasz",
                                                       "lovasz_sym"]
    loaded = load_model(out)
    assert loaded.card_found and loaded.card.name == "tiny"
    prob = Segmenter(loaded).predict_proba(np.random.default_rng(0).random((101, 101)))
    assert prob.shape == (101, 101)

    # --resume after the run is complete re-finishes without training more epochs
    code = main(["train", "--data", str(seismic_pairs), "--out", str(out), "--run-dir",
                 str(tmp_path / "run"), "--base-filters", "4", "--depth", "2", "--crop", "64",
                 "--epochs", "2", "--lovasz-epochs", "1", "--sym-lovasz-epochs", "1",
                 "--batch-size", "4",
                 "--samples-per-epoch", "8", "--verbose", "0", "--val-fraction", "0.2",
                 "--test-fraction", "0.2", "--resume"])
    assert code == 0
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 5


def test_average_snapshots_is_the_mean_of_the_final_phase_window(tmp_path):
    import keras

    from unet_core.model import build_unet

    cfg = TrainConfig(base_filters=4, depth=2, dropout=0.0, average_last=2)
    (tmp_path / "snapshots").mkdir()
    weights = {}
    for epoch in (7, 8, 9):  # epoch 7 is outside the window (end 9, last 2 epochs)
        keras.utils.set_random_seed(epoch)
        m = build_unet(base_filters=4, depth=2, dropout=0.0)
        m.save_weights(tmp_path / "snapshots" / f"epoch_{epoch:03d}.weights.h5")
        weights[epoch] = m.get_weights()
    model, first, last = average_snapshots(cfg, tmp_path, end=9)
    assert (first, last) == (8, 9)
    for got, a, b in zip(model.get_weights(), weights[8], weights[9], strict=True):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-6, atol=1e-7)
    assert average_snapshots(cfg, tmp_path, end=20) is None  # fewer than two in the window
    assert average_snapshots(TrainConfig(average_last=0), tmp_path, end=9) is None


def test_shipped_configs_are_valid_and_members_share_a_split():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    configs = {p.stem: TrainConfig(**json.loads(p.read_text()))
               for p in sorted((root / "configs").glob("*.json"))}
    assert {"salt", "salt_b", "salt_wide", "nuclei", "em_membrane"} <= set(configs)
    for stem in ("nuclei", "em_membrane", "salt"):  # the shipped models' configs
        assert configs[stem].out == f"models/{stem}.keras"
    a = configs["salt"]
    split = ("data", "split_seed", "val_fraction", "test_fraction", "invert_masks")
    for other in (configs["salt_b"], configs["salt_wide"]):  # experiments on salt's split
        assert [getattr(a, k) for k in split] == [getattr(other, k) for k in split]
        assert other.seed != a.seed and other.run_path != a.run_path
        assert not other.out.startswith("models/")
    ft = configs["salt_ft"]  # a fine-tune of the shipped salt model, on its split
    assert [getattr(a, k) for k in split] == [getattr(ft, k) for k in split]
    assert ft.init_from == a.out and not ft.out.startswith("models/")
    assert ft.run_path != a.run_path


def test_fine_tune_from_a_trained_model(tmp_path, seismic_pairs, capsys):
    """init_from: starts from the given weights, scores them first, records the file's hash."""
    import hashlib

    import keras

    from unet_core.model import build_unet

    keras.utils.set_random_seed(0)
    start = tmp_path / "start.keras"
    build_unet(base_filters=4, depth=2, dropout=0.0, name="start").save(start)
    out = tmp_path / "ft.keras"
    common = ["train", "--data", str(seismic_pairs), "--out", str(out), "--base-filters", "4",
              "--depth", "2", "--dropout", "0", "--crop", "64", "--batch-size", "4",
              "--samples-per-epoch", "8", "--verbose", "0", "--val-fraction", "0.2",
              "--test-fraction", "0.2", "--init-from", str(start)]
    code = main([*common, "--run-dir", str(tmp_path / "run"), "--epochs", "0",
                 "--lovasz-epochs", "0", "--sym-lovasz-epochs", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "initial weights from" in captured.out
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["initialised_from"] == {
        "model": str(start), "sha256": hashlib.sha256(start.read_bytes()).hexdigest()}
    assert card["training"]["epochs_run"] == 2
    best = card["training"]["best_epoch"]
    weights = card["training"]["weights"]
    assert (weights.startswith("the initial weights") if best == 0
            else weights == f"best epoch {best}")
    if best == 0:  # nothing beat the start: the shipped weights are the starting ones
        shipped = load_model(out).model.get_weights()
        started = load_model(start).model.get_weights()
        for a, b in zip(shipped, started, strict=True):
            np.testing.assert_array_equal(a, b)
    # fine-tuning in place (out == init_from): the card records the file it started from
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    code = main([*common[:-2], "--init-from", str(out), "--run-dir", str(tmp_path / "run3"),
                 "--epochs", "1", "--lovasz-epochs", "0", "--sym-lovasz-epochs", "0"])
    assert code == 0, capsys.readouterr().err
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["initialised_from"]["sha256"] == before
    # another architecture is refused with what differs and what is accepted
    code = main([*common[:-4], "--run-dir", str(tmp_path / "run2"), "--base-filters", "8",
                 "--epochs", "1", "--init-from", str(start)])
    err = capsys.readouterr().err
    assert code == 2 and "architecture differs" in err and "accepted" in err
