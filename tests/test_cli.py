"""The command line, end to end in-process (main(argv) -> exit status)."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest

from unet_core.cli import main
from unet_core.io import read_mask


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_for_every_command(capsys):
    for cmd in ("predict", "evaluate", "inspect", "train"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        assert "usage" in capsys.readouterr().out


def test_predict_writes_mask_and_prob(capsys, tiny_model_path, seismic_pairs, tmp_path):
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", "--model", str(tiny_model_path),
                       str(seismic_pairs / "images"), "--out", str(out), "--threshold", "0.4",
                       "--padding", "edge")
    assert code == 0, err
    masks = sorted(out.glob("*_mask.png"))
    probs = sorted(out.glob("*_prob.npy"))
    assert len(masks) == len(probs) == 12
    prob = np.load(probs[0])
    assert prob.shape == (101, 101) and prob.dtype == np.float32
    np.testing.assert_array_equal(read_mask(masks[0]), prob > 0.4)


def test_predict_never_overwrites_an_input(capsys, tiny_model_path, tmp_path):
    from unet_core.io import write_image_png
    from unet_core.synthetic import seismic_section

    img, _ = seismic_section(seed=1)
    write_image_png(tmp_path / "a.png", img)
    write_image_png(tmp_path / "a_mask.png", img)  # an input named like an output
    before = (tmp_path / "a_mask.png").read_bytes()
    code, _, err = run(capsys, "predict", "--model", str(tiny_model_path), str(tmp_path),
                       "--out", str(tmp_path))
    assert code == 2
    assert "refusing to overwrite input" in err and err.count("\n") == 1
    assert (tmp_path / "a_mask.png").read_bytes() == before


def test_predict_bad_file_reports_and_continues(capsys, tiny_model_path, seismic_pairs,
                                                tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(next((seismic_pairs / "images").iterdir()), src / "good.png")
    (src / "bad.png").write_text("not an image")
    code, _, err = run(capsys, "predict", "--model", str(tiny_model_path), str(src),
                       "--out", str(tmp_path / "o"))
    assert code == 1
    assert "bad.png" in err and "Traceback" not in err
    assert (tmp_path / "o" / "good_mask.png").exists()


def test_evaluate_json(capsys, tiny_model_path, seismic_pairs):
    code, out, err = run(capsys, "evaluate", "--model", str(tiny_model_path), "--data",
                         str(seismic_pairs), "--json")
    assert code == 0, err
    res = json.loads(out)
    for key in ("n", "threshold", "iou", "dice", "tgs_metric", "best_threshold",
                "best_tgs_metric", "best_iou"):
        assert key in res
    assert res["n"] == 12
    assert 0 <= res["iou"] <= 1 and 0 <= res["best_tgs_metric"] <= 1
    assert res["best_tgs_metric"] >= res["tgs_metric"] - 1e-12


def test_evaluate_text_and_zip(capsys, tiny_model_path, seismic_pairs, tmp_path):
    z = tmp_path / "data.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(seismic_pairs.rglob("*.png")):
            zf.write(p, "data/" + str(p.relative_to(seismic_pairs)))
    code, out, err = run(capsys, "evaluate", "--model", str(tiny_model_path), "--data", str(z),
                         "--per-image", str(tmp_path / "per.csv"))
    assert code == 0, err
    assert "best threshold" in out and "TGS metric" in out
    assert len((tmp_path / "per.csv").read_text().splitlines()) == 13


def test_evaluate_inverted_masks_follow_the_card(capsys, tiny_model_path, seismic_pairs,
                                                tmp_path):
    """Masks marking the other class: --invert-masks, or by default when the card says so."""
    from unet_core.io import write_mask_png
    from unet_core.model import ModelCard

    flipped = tmp_path / "flipped"
    shutil.copytree(seismic_pairs, flipped)
    for m in (flipped / "masks").glob("*.png"):
        write_mask_png(m, ~read_mask(m))
    base = ["evaluate", "--model", str(tiny_model_path), "--json", "--data"]
    ref = json.loads(run(capsys, *base, str(seismic_pairs))[1])
    assert ref["masks_inverted"] is False
    inv = json.loads(run(capsys, *base, str(flipped), "--invert-masks")[1])
    assert inv["masks_inverted"] is True
    for key in ("iou", "dice", "tgs_metric", "best_threshold"):
        assert inv[key] == pytest.approx(ref[key])
    plain = json.loads(run(capsys, *base, str(flipped))[1])
    assert plain["iou"] != pytest.approx(ref["iou"])

    # a card with truth_inverted inverts by default; --no-invert-masks overrides it
    model = tmp_path / "m" / "inv.keras"
    model.parent.mkdir()
    shutil.copy(tiny_model_path, model)
    card = ModelCard.from_dict(json.loads(tiny_model_path.with_suffix(".json").read_text()))
    card.truth_inverted = True
    card.save(model.with_suffix(".json"))
    base[2] = str(model)
    code, out, err = run(capsys, *base, str(flipped))
    assert code == 0, err
    assert json.loads(out)["masks_inverted"] is True
    assert json.loads(out)["iou"] == pytest.approx(ref["iou"])
    out = run(capsys, *base, str(flipped), "--no-invert-masks")[1]
    assert json.loads(out)["iou"] == pytest.approx(plain["iou"])


def test_evaluate_lists_images_without_masks(capsys, tiny_model_path, seismic_pairs, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(seismic_pairs, data)
    (data / "masks" / "seismic_003.png").unlink()
    code, _, err = run(capsys, "evaluate", "--model", str(tiny_model_path), "--data", str(data))
    assert code == 2 and "seismic_003.png" in err and err.startswith("error:")


@pytest.mark.parametrize("setup", ["empty", "missing", "mask_size"])
def test_evaluate_bad_folders(capsys, tiny_model_path, seismic_pairs, tmp_path, setup):
    data = tmp_path / "d"
    if setup == "empty":
        (data / "images").mkdir(parents=True)
        (data / "masks").mkdir()
    elif setup == "mask_size":
        shutil.copytree(seismic_pairs, data)
        from unet_core.io import write_mask_png

        write_mask_png(data / "masks" / "seismic_000.png", np.zeros((50, 50), bool))
    code, _, err = run(capsys, "evaluate", "--model", str(tiny_model_path), "--data", str(data))
    assert code == 2
    assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err


def test_bad_model_file(capsys, seismic_pairs, tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_text("not a model")
    code, _, err = run(capsys, "evaluate", "--model", str(bad), "--data", str(seismic_pairs))
    assert code == 2 and "model.keras" in err and "accepted" not in err or "zip" in err


def test_inspect(capsys, tiny_model_path):
    code, out, _ = run(capsys, "inspect", "--model", str(tiny_model_path))
    assert code == 0 and "Conv2D" in out and "enc0a_conv" in out
    code, out, _ = run(capsys, "inspect", "--model", str(tiny_model_path), "--json")
    data = json.loads(out)
    assert data["card"]["name"] == "tiny" and len(data["layers"]) > 10


def test_bad_threshold_is_argparse_error(capsys, tiny_model_path):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--model", str(tiny_model_path), "x.png", "--out", "o",
              "--threshold", "2"])
    assert exc.value.code == 2
    assert "outside 0..1" in capsys.readouterr().err
