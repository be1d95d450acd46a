"""Ensembles: members trained on one split, averaged into one flat model with its own card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from unet_core.cli import main
from unet_core.ensemble import ensemble_model
from unet_core.inference import Segmenter
from unet_core.introspect import layer_table
from unet_core.model import build_unet, from_keras, load_model

TINY = ["--base-filters", "4", "--depth", "2", "--crop", "64", "--epochs", "1",
        "--batch-size", "4", "--samples-per-epoch", "8", "--verbose", "0",
        "--val-fraction", "0.25", "--test-fraction", "0.25"]


def _train(root: Path, data: Path, name: str, seed: int, split_seed: int) -> Path:
    out = root / f"{name}.keras"
    code = main(["train", "--data", str(data), "--out", str(out), "--run-dir", str(root / name),
                 "--seed", str(seed), "--split-seed", str(split_seed), *TINY])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def members(tmp_path_factory, seismic_pairs) -> tuple[Path, Path, Path]:
    """Two tiny members on one split (split seed 5) and a third on another split."""
    root = tmp_path_factory.mktemp("members")
    a = _train(root, seismic_pairs, "a", seed=1, split_seed=5)
    b = _train(root, seismic_pairs, "b", seed=2, split_seed=5)
    other = _train(root, seismic_pairs, "other", seed=3, split_seed=6)
    return a, b, other


def test_ensemble_model_is_the_mean_of_its_members():
    import keras

    keras.utils.set_random_seed(0)
    m1 = build_unet(base_filters=4, depth=2, dropout=0.0, name="one")
    m2 = build_unet(base_filters=4, depth=2, dropout=0.0, name="two")
    ens = ensemble_model([m1, m2], name="pair")
    x = np.random.default_rng(0).random((2, 32, 48, 1)).astype(np.float32)
    want = (m1.predict(x, verbose=0) + m2.predict(x, verbose=0)) / 2
    np.testing.assert_allclose(ens.predict(x, verbose=0), want, atol=1e-6)
    names = [layer.name for layer in ens.layers]
    assert names[-1] == "ensemble_mean"
    assert all(n.startswith(("m1_", "m2_")) for n in names[1:-1])
    assert not any(isinstance(layer, keras.Model) for layer in ens.layers)  # flat
    assert ens.count_params() == m1.count_params() + m2.count_params()
    rows = layer_table(ens)
    assert {"m1_mask", "m2_mask", "ensemble_mean"} <= {r.name for r in rows}


def test_ensemble_model_needs_two_members():
    from unet_core.errors import UnetCoreError

    with pytest.raises(UnetCoreError, match="at least 2 members"):
        ensemble_model([build_unet(base_filters=4, depth=2)])


def test_ensemble_cli_writes_card_and_scores_like_the_mean(tmp_path, members, seismic_pairs,
                                                           capsys):
    a, b, _ = members
    out = tmp_path / "models" / "pair.keras"
    split = a.parent / "a" / "split.json"
    code = main(["ensemble", str(a), str(b), "--out", str(out), "--data", str(seismic_pairs),
                 "--split", str(split)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "2 members" in printed and "held-out test tgs_metric" in printed
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["name"] == "pair"
    assert card["architecture"]["type"] == "ensemble: mean of 2 residual U-Nets"
    assert [m["name"] for m in card["architecture"]["members"]] == ["a", "b"]
    members_rec = card["training"]["members"]
    assert [m["file"] for m in members_rec] == ["a.keras", "b.keras"]
    assert all(m["command"].startswith("python -m unet_core train") for m in members_rec)
    assert card["training"]["command"].startswith("python -m unet_core ensemble")
    assert card["training"]["split"]["seed"] == 5
    assert {"validation", "test"} <= set(card["metrics"])
    held = out.with_suffix(".heldout.txt").read_text().split()
    assert held == json.loads(split.read_text())["test"]
    assert json.loads(out.with_suffix(".split.json").read_text()) == json.loads(split.read_text())

    ens, la, lb = load_model(out), load_model(a), load_model(b)
    assert ens.card_found and ens.card.threshold == card["threshold"]
    assert ens.model.count_params() == la.model.count_params() + lb.model.count_params()
    image = np.random.default_rng(1).random((101, 101)).astype(np.float32)
    got = Segmenter(ens, backend="tensorflow").predict_proba(image)
    want = (Segmenter(la, backend="tensorflow").predict_proba(image)
            + Segmenter(lb, backend="tensorflow").predict_proba(image)) / 2
    np.testing.assert_allclose(got, want, atol=1e-5)

    # the recorded figures are those `evaluate` reproduces on the held-out names
    code = main(["evaluate", "--model", str(out), "--data", str(seismic_pairs), "--names",
                 str(out.with_suffix(".heldout.txt")), "--json", "--backend", "tensorflow"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tgs_metric"] == pytest.approx(card["metrics"]["test"]["tgs_metric"], abs=1e-6)
    assert result["iou"] == pytest.approx(card["metrics"]["test"]["iou"], abs=1e-4)


def test_ensemble_refuses_members_of_another_split(tmp_path, members, seismic_pairs, capsys):
    a, _, other = members
    code = main(["ensemble", str(a), str(other), "--out", str(tmp_path / "x.keras"), "--data",
                 str(seismic_pairs), "--split", str(a.parent / "a" / "split.json")])
    err = capsys.readouterr().err
    assert code == 2 and "other.keras: its held-out images" in err and "one split" in err
    assert not (tmp_path / "x.keras").exists()


def test_ensemble_refuses_members_fed_differently(tmp_path, members, seismic_pairs, capsys):
    a, b, _ = members
    odd = tmp_path / "odd.keras"
    shutil.copy(b, odd)
    card = json.loads(b.with_suffix(".json").read_text())
    card.update(normalisation="percentile", training={})
    odd.with_suffix(".json").write_text(json.dumps(card))
    code = main(["ensemble", str(a), str(odd), "--out", str(tmp_path / "x.keras"), "--data",
                 str(seismic_pairs), "--split", str(a.parent / "a" / "split.json")])
    err = capsys.readouterr().err
    assert code == 2 and "normalisation (a.keras: unit, odd.keras: percentile)" in err


@pytest.mark.parametrize("case", ["one member", "overwrite", "bad split", "not keras"])
def test_ensemble_bad_arguments_say_what_is_accepted(tmp_path, members, seismic_pairs, capsys,
                                                     case):
    a, b, _ = members
    split = a.parent / "a" / "split.json"
    out = tmp_path / "e.keras"
    args = {"one member": [str(a), "--out", str(out), "--split", str(split)],
            "overwrite": [str(a), str(b), "--out", str(b), "--split", str(split)],
            "bad split": [str(a), str(b), "--out", str(out), "--split", str(a)],
            "not keras": [str(a), str(b), "--out", str(tmp_path / "e.h5"), "--split",
                          str(split)]}[case]
    before = b.read_bytes()
    code = main(["ensemble", *args, "--data", str(seismic_pairs)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ")
    expect = {"one member": "at least 2 members", "overwrite": "would overwrite a member",
              "bad split": "not a readable split file", "not keras": "as a .keras file"}[case]
    assert expect in err
    assert b.read_bytes() == before and not out.exists()


def test_ensemble_introspects_like_any_model():
    from unet_core.introspect import ActivationProbe

    m = ensemble_model([build_unet(base_filters=4, depth=2), build_unet(base_filters=4, depth=2)])
    assert from_keras(m, name="pair").card.multiple_of == 4  # stride inferred through members
    probe = ActivationProbe(m, layers=["m1_mask", "m2_mask", "ensemble_mean"])
    acts = probe.run(np.random.default_rng(2).random((16, 16)).astype(np.float32))
    assert set(acts) == {"m1_mask", "m2_mask", "ensemble_mean"}
    np.testing.assert_allclose(acts["ensemble_mean"], (acts["m1_mask"] + acts["m2_mask"]) / 2,
                               atol=1e-6)
