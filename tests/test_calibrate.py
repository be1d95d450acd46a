"""calibrate: re-pick a trained model's threshold and minimum area on its validation split;
and the minimum-area rule as the evaluate and predict commands apply it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from unet_core.cli import main
from unet_core.io import find_pairs, read_mask
from unet_core.metrics import MIN_AREA_CANDIDATES, threshold_sweep

TINY = ["--base-filters", "4", "--depth", "2", "--crop", "64", "--epochs", "1",
        "--batch-size", "4", "--samples-per-epoch", "8", "--verbose", "0",
        "--val-fraction", "0.25", "--test-fraction", "0.25"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, seismic_pairs) -> tuple[Path, Path]:
    """A tiny model trained with the rule off (min_area 0), and its run's split.json."""
    root = tmp_path_factory.mktemp("calib")
    out = root / "tiny.keras"
    code = main(["train", "--data", str(seismic_pairs), "--out", str(out), "--run-dir",
                 str(root / "run"), "--seed", "1", "--split-seed", "5", "--no-select-min-area",
                 *TINY])
    assert code == 0
    return out, root / "run" / "split.json"


def _copy(model: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for suffix in (".keras", ".json", ".heldout.txt", ".split.json"):
        shutil.copy(model.with_suffix(suffix), dest / model.with_suffix(suffix).name)
    return dest / model.name


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_with_the_rule_off_records_min_area_zero(trained):
    card = json.loads(trained[0].with_suffix(".json").read_text())
    assert card["min_area"] == 0 and card["metrics"]["min_area"] == 0
    assert "without_min_area" not in card["metrics"]


def test_calibrate_rewrites_the_card_only(tmp_path, trained, seismic_pairs, capsys):
    model = _copy(trained[0], tmp_path / "m")
    before = json.loads(model.with_suffix(".json").read_text())
    model_sha = _sha(model)
    assert json.loads(model.with_suffix(".split.json").read_text()) == json.loads(
        trained[1].read_text())  # train writes the split next to the model
    code = main(["calibrate", "--model", str(model), "--data", str(seismic_pairs)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "card rewritten" in printed and "before:" in printed and "after:" in printed
    assert _sha(model) == model_sha  # the model file is untouched
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["min_area"] in MIN_AREA_CANDIDATES and 0 <= card["threshold"] <= 1
    cal = card["training"]["calibration"]
    assert cal["command"].startswith("python -m unet_core calibrate --model")
    assert cal["previous"]["threshold"] == before["threshold"]
    assert cal["previous"]["min_area"] == 0
    assert cal["previous"]["validation"] == before["metrics"]["validation"]
    # everything else in the card is kept
    for key in ("architecture", "name", "normalisation", "padding_mode", "tta", "min_size"):
        assert card[key] == before[key]
    assert card["training"]["command"] == before["training"]["command"]
    assert not list(model.parent.glob("*.tmp"))

    # `evaluate` on the held-out names, with the card's threshold and minimum area, reproduces
    # the test figures the card records; and the validation pick is the best pair there
    for names, part in ((model.with_suffix(".heldout.txt"), "test"), (None, "validation")):
        if names is None:
            names = tmp_path / "val.txt"
            names.write_text("\n".join(json.loads(trained[1].read_text())["val"]) + "\n")
        code = main(["evaluate", "--model", str(model), "--data", str(seismic_pairs), "--names",
                     str(names), "--json", "--backend", "tensorflow"])
        assert code == 0
        result = json.loads(capsys.readouterr().out)
        assert result["min_area"] == card["min_area"]
        assert result["tgs_metric"] == pytest.approx(card["metrics"][part]["tgs_metric"],
                                                     abs=1e-6)


def test_calibrate_without_the_rule_keeps_min_area_zero(tmp_path, trained, seismic_pairs,
                                                        capsys):
    model = _copy(trained[0], tmp_path / "m")
    code = main(["calibrate", "--model", str(model), "--data", str(seismic_pairs), "--split",
                 str(trained[1]), "--no-select-min-area", "--select", "mean_iou"])
    assert code == 0, capsys.readouterr().err
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["min_area"] == 0 and card["metrics"]["selected_by"] == "mean_iou"
    # without --select, calibrate keeps the metric that picked the card's threshold
    assert main(["calibrate", "--model", str(model), "--data", str(seismic_pairs)]) == 0
    assert "validation mean_iou" in capsys.readouterr().out
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["metrics"]["selected_by"] == "mean_iou"


@pytest.mark.parametrize("case", ["foreign split", "no card", "bad split", "missing images",
                                  "no split"])
def test_calibrate_refuses_and_leaves_the_card(tmp_path, trained, seismic_pairs, capsys, case):
    model = _copy(trained[0], tmp_path / "m")
    split = trained[1]
    data = seismic_pairs
    if case == "foreign split":
        other = json.loads(split.read_text())
        other["test"] = other["test"][:-1]
        split = tmp_path / "other.json"
        split.write_text(json.dumps(other))
        want = "its held-out images"
    elif case == "no card":
        model.with_suffix(".json").unlink()
        want = "no model card"
    elif case == "no split":
        model.with_suffix(".split.json").unlink()
        split = None
        want = "no --split given and no tiny.split.json"
    elif case == "bad split":
        split = tmp_path / "split.json"
        split.write_bytes(b"\x00\x01binary")
        want = "not a readable split file"
    else:
        data = tmp_path / "fewer"
        shutil.copytree(seismic_pairs, data)
        name = json.loads(split.read_text())["val"][0]
        gone = [p for p in find_pairs(data, require_masks=True) if p.name == name]
        assert gone
        gone[0].image_path.unlink()
        gone[0].mask_path.unlink()
        want = "split images are not in"
    card_path = model.with_suffix(".json")
    before = card_path.read_bytes() if card_path.exists() else None
    code = main(["calibrate", "--model", str(model), "--data", str(data),
                 *(["--split", str(split)] if split else [])])
    err = capsys.readouterr().err
    assert code == 2 and want in err and "Traceback" not in err
    assert (card_path.read_bytes() if card_path.exists() else None) == before


def test_evaluate_and_predict_apply_a_min_area_override(tmp_path, trained, seismic_pairs,
                                                        capsys):
    model = trained[0]
    big = 10**6  # larger than any 101x101 mask: every prediction is emptied
    code = main(["evaluate", "--model", str(model), "--data", str(seismic_pairs), "--json",
                 "--min-area", str(big), "--backend", "tensorflow"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    truths = [read_mask(p.mask_path) for p in find_pairs(seismic_pairs, require_masks=True)]
    empty = [np.zeros_like(t, dtype=float) for t in truths]
    want = threshold_sweep(empty, truths).summary_at(0.5)["tgs_metric"]  # the empty-mask rule
    assert result["min_area"] == big and result["tgs_metric"] == pytest.approx(want)

    image = next(iter(find_pairs(seismic_pairs, require_masks=True))).image_path
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model), str(image), "--out", str(out),
                 "--threshold", "0", "--min-area", str(big), "--backend", "tensorflow"]) == 0
    assert "minimum area" in capsys.readouterr().err
    assert not read_mask(out / f"{image.stem}_mask.png").any()

    for bad in ("-3", "2.5", "many"):
        with pytest.raises(SystemExit) as exc:
            main(["evaluate", "--model", str(model), "--data", str(seismic_pairs),
                  "--min-area", bad])
        assert exc.value.code == 2
        assert "pixels >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["salt", "nuclei", "em_membrane"])
def test_shipped_split_files_match_the_held_out_lists(name):
    """models/NAME.split.json (what calibrate reads) is the split the card was trained on."""
    models = Path(__file__).resolve().parents[1] / "models"
    split = json.loads((models / f"{name}.split.json").read_text())
    held = (models / f"{name}.heldout.txt").read_text().split()
    card = json.loads((models / f"{name}.json").read_text())
    assert split["test"] == held
    assert not (set(split["train"]) & set(split["val"])) and not (set(split["val"]) & set(held))
    assert len(split["val"]) == card["metrics"]["validation"]["n"]
    assert len(split["train"]) == card["training"]["split"]["train"]
    assert card["training"]["split_names"] == f"{name}.split.json"
    assert card["min_area"] == card["metrics"]["min_area"]
