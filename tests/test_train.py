"""Training: a tiny model for a few steps on generated data (CI never trains a real model)."""

from __future__ import annotations

import json

import numpy as np

from unet_core.cli import main
from unet_core.inference import Segmenter
from unet_core.model import load_model
from unet_core.train import TrainConfig, augment_pair, stratified_split


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


def test_train_tiny_writes_card_and_reloads(tmp_path, seismic_pairs, capsys):
    out = tmp_path / "models" / "tiny.keras"
    code = main(["train", "--data", str(seismic_pairs), "--out", str(out), "--run-dir",
                 str(tmp_path / "run"), "--base-filters", "4", "--depth", "2", "--crop", "64",
                 "--epochs", "2", "--lovasz-epochs", "1", "--batch-size", "4",
                 "--samples-per-epoch", "8", "--verbose", "0", "--val-fraction", "0.2",
                 "--test-fraction", "0.2"])
    assert code == 0, capsys.readouterr().err
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["command"].startswith("python -m unet_core train --data")
    assert card["training"]["epochs_run"] == 3
    assert card["min_size"] == 64 and card["multiple_of"] == 4
    assert 0 <= card["threshold"] <= 1
    assert {"validation", "test"} <= set(card["metrics"])
    assert out.with_suffix(".heldout.txt").read_text().strip()
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(log) == 4 and "val_best_tgs_metric" in log[0]
    loaded = load_model(out)
    assert loaded.card_found and loaded.card.name == "tiny"
    prob = Segmenter(loaded).predict_proba(np.random.default_rng(0).random((101, 101)))
    assert prob.shape == (101, 101)

    # --resume after the run is complete re-finishes without training more epochs
    code = main(["train", "--data", str(seismic_pairs), "--out", str(out), "--run-dir",
                 str(tmp_path / "run"), "--base-filters", "4", "--depth", "2", "--crop", "64",
                 "--epochs", "2", "--lovasz-epochs", "1", "--batch-size", "4",
                 "--samples-per-epoch", "8", "--verbose", "0", "--val-fraction", "0.2",
                 "--test-fraction", "0.2", "--resume"])
    assert code == 0
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 4
