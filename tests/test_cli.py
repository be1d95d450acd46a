"""The command line, end to end in-process (main(argv) -> exit status)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
                         str(seismic_pairs), "--json", "--select-metric", "tgs_metric")
    assert code == 0, err
    res = json.loads(out)
    assert res["selected_by"] == "tgs_metric"
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


# --------------------------------------------------------------------------- models of any shape

REAL = Path(__file__).resolve().parents[2] / "shared" / "realmodels"
TF = ("--backend", "tensorflow")  # no ONNX export for these throw-away models
CARD3 = {"description": "tiny RGB 3-class test model", "classes": ["background", "road",
                                                                    "water"],
         "select_metric": "mean_dice", "fit": "resize"}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, Path]:
    """Tiny models built on the fly, and data for them.

    rgb3: RGB, 3-class softmax, fixed 32x32, no card (its card kept apart in card3.json;
    also saved as arch.json + w.weights.h5); logit1: 1 channel, logits, fully convolutional,
    no card; five: 5 channels. Data: 3 RGB 40x48 images with label masks (the rgb3 model's
    own argmax, as palette PNGs) in labels/, and binary masks of its class 2 at 0.5 in binary/.
    """
    import keras

    from unet_core.inference import Segmenter
    from unet_core.io import write_label_png, write_mask_png
    from unet_core.model import build_unet, load_model

    root = tmp_path_factory.mktemp("shapes")
    keras.utils.set_random_seed(1)
    rgb3 = build_unet(3, base_filters=4, depth=2, dropout=0.0, output_activation="softmax",
                      n_classes=3, input_size=(32, 32), name="rgb3")
    rgb3.save(root / "rgb3.keras")
    (root / "arch.json").write_text(rgb3.to_json())
    rgb3.save_weights(root / "w.weights.h5")
    build_unet(1, base_filters=4, depth=2, dropout=0.0, output_activation="linear",
               name="logit1").save(root / "logit1.keras")
    build_unet(5, base_filters=4, depth=1, dropout=0.0, name="five").save(root / "five.keras")
    (root / "card3.json").write_text(json.dumps(CARD3))

    rng = np.random.default_rng(5)
    seg = Segmenter(load_model(root / "rgb3.keras"), backend="tensorflow")
    for sub in ("labels", "binary"):
        (root / sub / "images").mkdir(parents=True)
        (root / sub / "masks").mkdir()
    for i in range(3):
        img = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        probs = seg.predict_classes(img)
        for sub in ("labels", "binary"):
            Image.fromarray(img).save(root / sub / "images" / f"c{i}.png")
        write_label_png(root / "labels" / "masks" / f"c{i}.png", probs.argmax(-1))
        write_mask_png(root / "binary" / "masks" / f"c{i}.png", probs[..., 2] > 0.5)
    return {"root": root, "rgb3": root / "rgb3.keras", "card3": root / "card3.json",
            "logit1": root / "logit1.keras", "five": root / "five.keras",
            "arch": root / "arch.json", "weights": root / "w.weights.h5",
            "images": root / "labels" / "images"}


def test_predict_rgb_softmax_classes_and_label_map(capsys, shapes, tmp_path):
    out = tmp_path / "o"
    code, _, err = run(capsys, "predict", "--model", str(shapes["rgb3"]), "--card",
                       str(shapes["card3"]), "--all-classes", "--class", "water",
                       str(shapes["images"]), "--out", str(out), *TF)
    assert code == 0, err
    assert "preprocessing: 3 channels (RGB), values / full scale (0..1), resized to 32x32" in err
    assert "0: background (black); 1: road (red); 2: water (green)" in err
    assert "class 2 (water)" in err
    probs = np.load(out / "c0_prob.npy")
    assert probs.shape == (40, 48, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    labels = Image.open(out / "c0_labels.png")
    assert labels.mode == "P"  # palette indices = class indices
    np.testing.assert_array_equal(np.array(labels), probs.argmax(-1))
    np.testing.assert_array_equal(read_mask(out / "c0_mask.png"), probs[..., 2] > 0.5)

    # cardless: the default class (1) as HxW, and the inferred settings with their reasons
    code, _, err = run(capsys, "predict", "--model", str(shapes["rgb3"]),
                       str(shapes["images"] / "c0.png"), "--out", str(tmp_path / "p"), *TF)
    assert code == 0, err
    assert "[inferred: no model card found]" in err
    assert "fit: resize: the network takes a fixed 32x32 input" in err
    one = np.load(tmp_path / "p" / "c0_prob.npy")
    assert one.shape == (40, 48)
    np.testing.assert_allclose(one, probs[..., 1], atol=1e-6)


def test_arch_json_with_weights(capsys, shapes, tmp_path):
    code, _, err = run(capsys, "predict", "--model", str(shapes["arch"]), "--weights",
                       str(shapes["weights"]), "--card", str(shapes["card3"]), "--all-classes",
                       str(shapes["images"] / "c1.png"), "--out", str(tmp_path), *TF)
    assert code == 0, err
    from unet_core.inference import Segmenter
    from unet_core.io import read_raw
    from unet_core.model import load_model

    ref = Segmenter(load_model(shapes["rgb3"]), backend="tensorflow").predict_classes(
        read_raw(shapes["images"] / "c1.png"))
    np.testing.assert_allclose(np.load(tmp_path / "c1_prob.npy"), ref, atol=1e-5)


def test_predict_logits_one_channel(capsys, shapes, tmp_path):
    code, _, err = run(capsys, "predict", "--model", str(shapes["logit1"]), "--all-classes",
                       str(shapes["images"] / "c0.png"), "--out", str(tmp_path), *TF)
    assert code == 0, err
    prob = np.load(tmp_path / "c0_prob.npy")
    assert prob.shape == (40, 48, 1)  # an RGB image fed to a 1-channel model as luma
    assert prob.min() > 0 and prob.max() < 1 and prob.std() > 0  # sigmoid of the logits
    assert not (tmp_path / "c0_labels.png").exists()
    assert "output: the last layer has no sigmoid or softmax" in err


def test_inspect_other_shapes(capsys, shapes):
    code, out, err = run(capsys, "inspect", "--model", str(shapes["rgb3"]))
    assert code == 0, err
    assert "input 32x32, 3 channels, order RGB  [inferred (no card found)]" in out
    assert "output: probabilities (softmax over 3 classes)" in out
    assert "fit: resize" in out and "classes: 0: class 0 (black)" in out
    assert "  fit: resize: the network takes a fixed 32x32 input" in out
    code, out, _ = run(capsys, "inspect", "--model", str(shapes["logit1"]), "--channel-order",
                       "bgr", "--normalisation", "meanstd", "--mean", "0.5", "--std", "0.25")
    assert code == 0
    assert "output: logits (no final activation; the engine applies sigmoid)" in out
    assert "(x/full scale - mean [0.5]) / std [0.25]" in out
    assert "  normalisation:" not in out  # set on the command line: no longer inferred
    code, out, _ = run(capsys, "inspect", "--model", str(shapes["rgb3"]), "--card",
                       str(shapes["card3"]), "--class", "0", "--json")
    data = json.loads(out)
    assert data["card"]["classes"] == CARD3["classes"] and data["card"]["class_index"] == 0
    assert data["card_found"] is True and data["preprocessing"].startswith("3 channels (RGB)")


def test_evaluate_label_masks(capsys, shapes, tmp_path):
    base = ["evaluate", "--model", str(shapes["rgb3"]), "--card", str(shapes["card3"]),
            "--labels", *TF, "--data", str(shapes["root"] / "labels")]
    code, out, err = run(capsys, *base, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["n"] == 3 and res["n_classes"] == 3
    assert [c["name"] for c in res["classes"]] == CARD3["classes"]
    # the masks are this model's own argmax: (nearly) perfect, whatever the batching
    assert res["pixel_accuracy"] >= 0.999 and res["mean_iou"] >= 0.99
    assert sum(c["truth_pixels"] for c in res["classes"]) == 3 * 40 * 48
    code, out, err = run(capsys, *base, "--per-image", str(tmp_path / "per.csv"))
    assert code == 0, err
    assert "label masks, 3 classes (argmax label map)" in out
    assert "2 water" in out and "mean over all 3 classes, background included" in out
    header = (tmp_path / "per.csv").read_text().splitlines()[0]
    assert header.startswith("name,pixel_accuracy,mean_iou,mean_dice,iou:background")


def test_evaluate_one_class_against_binary_masks(capsys, shapes):
    base = ["evaluate", "--model", str(shapes["rgb3"]), "--card", str(shapes["card3"]),
            "--class", "2", *TF, "--data", str(shapes["root"] / "binary")]
    code, out, err = run(capsys, *base, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["class_index"] == 2 and res["class_name"] == "water"
    assert res["selected_by"] == "mean_dice"  # the card's select_metric
    assert res["iou"] >= 0.99  # the masks are class 2 at 0.5
    code, out, _ = run(capsys, *base, "--select", "tgs_metric")  # --select: the old name
    assert "scoring class 2 (water) against binary masks" in out
    assert "(by tgs_metric)" in out


@pytest.mark.parametrize(("argv", "needle"), [
    (["predict", "{rgb3}", "--class", "7"],
     "--class 7: not a class of rgb3.keras (3 classes); accepted: 0 (class 0), 1 (class 1), "
     "2 (class 2)"),
    (["predict", "{rgb3}", "--card", "{card3}", "--class", "river"], "1 (road), 2 (water)"),
    (["predict", "{logit1}", "--fit", "resize"],
     "logit1.keras with --fit: model card field fit = 'resize' is invalid"),
    (["predict", "{rgb3}", "--mean", "0.5,0.5", "--std", "0.2"],
     "model card field mean = [0.5, 0.5] is invalid (accepted: null or a list of 1 or 3"),
    (["predict", "{rgb3}", "--mean", "0.5", "--normalisation", "unit"],
     "--mean goes with --normalisation meanstd, not unit"),
    (["predict", "{rgb3}", "--weights", "{weights}"], "--weights goes with an architecture"),
    (["inspect", "{arch}"], "an architecture JSON needs its weights"),
    (["predict", "{five}"], "c0.png: image has 3 channels but the model takes 5; accepted: "
     "5-channel images, grayscale (replicated)"),
    (["evaluate", "{rgb3}", "--labels", "--min-area", "3"], "--min-area is for binary masks"),
    (["evaluate", "{rgb3}", "--labels"], "label mask holds classes {255} but the model has 3"),
])
def test_model_option_errors_are_one_line(capsys, shapes, tmp_path, argv, needle):
    argv = [a.format(**shapes) for a in argv]
    cmd, model, rest = argv[0], argv[1], argv[2:]
    args = [cmd, "--model", model, *rest, *TF]
    if cmd == "predict":
        args += [str(shapes["images"] / "c0.png"), "--out", str(tmp_path)]
    elif cmd == "evaluate":
        args += ["--data", str(shapes["root"] / "binary")]  # 0/255 masks
    if cmd == "inspect":
        args.remove("--backend")
        args.remove("tensorflow")
    code, _, err = run(capsys, *args)
    assert "Traceback" not in err
    if model == str(shapes["five"]):  # a failed image is reported and the others go on
        assert code == 1 and f"error: {needle}" in err.splitlines()
    else:
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
        assert needle in err


def test_trust_model_loads_a_lambda_layer(capsys, tmp_path):
    import keras

    inp = keras.Input((None, None, 1))
    x = keras.layers.Lambda(lambda t: t / 255.0, name="scale")(inp)
    out = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    path = tmp_path / "lam.keras"
    keras.Model(inp, out).save(path)
    code, _, err = run(capsys, "inspect", "--model", str(path))
    assert code == 2 and "--trust-model" in err and err.count("\n") == 1
    code, out, err = run(capsys, "inspect", "--model", str(path), "--trust-model")
    assert code == 0, err
    assert "trusting lam.keras: loaded with Keras safe_mode off" in err and "Lambda" in out


def test_real_lane_model_with_a_card(capsys, tmp_path):
    """The public lane U-Net (RGB->BGR, raw 0-255, 128x128 sigmoid) with its authors'
    preprocessing written as a card: Dice >= 0.9 on its samples; fed 0..1 values it fails."""
    model = REAL / "lane_bgr_unet.h5"
    samples = REAL / "samples" / "lane"
    if not model.is_file() or not (samples / "images").is_dir():
        pytest.skip(f"real models are absent ({REAL})")
    from unet_core.io import read_raw
    from unet_core.metrics import dice

    card = tmp_path / "lane_card.json"
    card.write_text(json.dumps({"channel_order": "bgr", "normalisation": "raw"}))

    def dices(*extra: str) -> list[float]:
        out = tmp_path / "out"
        code, _, err = run(capsys, "predict", "--fit", "resize", "--model", str(model),
                           "--card", str(card), str(samples / "images"), "--out", str(out),
                           *TF, *extra)
        assert code == 0, err
        assert "3 channels (BGR)" in err and "resized to 128x128" in err
        scores = []
        for p in sorted((samples / "images").iterdir()):
            truth = read_raw(samples / "masks" / p.name)
            truth = (truth if truth.ndim == 2 else truth[..., 0]) > 127
            scores.append(dice(read_mask(out / f"{p.stem}_mask.png"), truth))
        return scores

    good = dices()
    assert len(good) == 5 and min(good) >= 0.9, good
    assert max(dices("--normalisation", "unit")) < 0.5  # the override is applied


# --------------------------------------------------------------------------- issue 16: names,
# output files and write errors end in one line (or the right result), never a traceback


def _one_image(folder: Path, name: str, seismic_pairs: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    shutil.copy(sorted((seismic_pairs / "images").iterdir())[0], target)
    return target


def test_predict_output_names_over_255_bytes(capsys, tiny_model_path, seismic_pairs, tmp_path):
    src = tmp_path / "in"
    long_a = "é" * 120 + "a" + ".png"  # 245 bytes: + "_mask.png" would be 254, "_prob.npy" too
    long_b = "é" * 120 + "bbbbbbbbbb" + ".png"  # 254 bytes: outputs over 255
    long_c = "é" * 120 + "bbbbbbbbbc" + ".png"  # differs only past the cut
    for name in (long_a, long_b, long_c):
        _one_image(src, name, seismic_pairs)
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", "--model", str(tiny_model_path), str(src),
                       "--out", str(out))
    assert code == 0, err
    assert "Traceback" not in err
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 6  # distinct outputs for every input
    assert all(len(n.encode()) <= 255 for n in names)
    assert sum(n.endswith("_mask.png") for n in names) == 3
    assert f"{Path(long_a).stem}_mask.png" in names  # short enough: unchanged


def test_per_image_into_a_missing_folder_is_created(capsys, tiny_model_path, seismic_pairs,
                                                    tmp_path):
    target = tmp_path / "new" / "sub" / "per.csv"
    code, _, err = run(capsys, "evaluate", "--model", str(tiny_model_path), "--data",
                       str(seismic_pairs), "--per-image", str(target))
    assert code == 0, err
    assert len(target.read_text().splitlines()) == 13


@pytest.mark.parametrize("where", ["per-image-under-file", "per-image-is-folder"])
def test_per_image_write_errors_are_one_line(capsys, tiny_model_path, seismic_pairs, tmp_path,
                                             where):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "per.csv" if where == "per-image-under-file" else tmp_path
    code, out, err = run(capsys, "evaluate", "--model", str(tiny_model_path), "--data",
                         str(seismic_pairs), "--per-image", str(target))
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: --per-image ") and "cannot write" in lines[-1], err
    assert sum(ln.startswith("error:") for ln in lines) == 1 and "Traceback" not in err


def test_predict_write_errors_are_one_line(capsys, tiny_model_path, seismic_pairs, tmp_path):
    src = tmp_path / "in"
    _one_image(src, "a.png", seismic_pairs)
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "predict", "--model", str(tiny_model_path), str(src),
                       "--out", str(tmp_path / "file" / "sub"))
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: --out "), err
    out = tmp_path / "out"
    (out / "a_mask.png").mkdir(parents=True)  # the output name is taken by a folder
    code, _, err = run(capsys, "predict", "--model", str(tiny_model_path), str(src),
                       "--out", str(out))
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: --out ") and "cannot write a_mask.png" in last, err


def test_newline_in_a_file_name_cannot_forge_a_line(capsys, tiny_model_path, seismic_pairs,
                                                    tmp_path):
    src = tmp_path / "in"
    _one_image(src, "good.png", seismic_pairs)
    (src / "x\nerror: forged.png").write_text("not an image")
    code, _, err = run(capsys, "predict", "--model", str(tiny_model_path), str(src),
                       "--out", str(tmp_path / "o"))
    assert code == 1
    assert "x\\nerror: forged.png: not a readable image" in err
    assert not any(ln.startswith("error: forged") for ln in err.splitlines()), err


def test_evaluate_warns_about_masks_that_are_not_binary(capsys, tiny_model_path, seismic_pairs,
                                                        tmp_path):
    data = tmp_path / "data"
    shutil.copytree(seismic_pairs, data)
    first = sorted((data / "masks").iterdir())[0]
    soft = np.array(Image.open(first).convert("L"))
    soft[:10, :10] = 100  # a third level: thresholded, so say so
    Image.fromarray(soft).save(first)
    code, out, err = run(capsys, "evaluate", "--model", str(tiny_model_path), "--data",
                         str(data), "--json")
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "1 mask(s) not cleanly binary" in warnings[0], err
    assert first.name in warnings[0]
    json.loads(out)
    # clean masks (and a 16-bit 0/255 one) give no warning
    sixteen = np.where(np.array(Image.open(first).convert("L")) >= 128, 255, 0).astype(np.uint16)
    Image.fromarray(sixteen).save(first)
    code, out, err = run(capsys, "evaluate", "--model", str(tiny_model_path), "--data",
                         str(data), "--json")
    assert code == 0 and "warning:" not in err, err
