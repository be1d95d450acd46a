"""The command line on ONNX models, in-process (main(argv) -> exit status): inspect (layout,
batch, output kind, layer table), predict (pad and resize fits, --class, fixed batches),
evaluate (binary and label masks: a self-consistency run on masks made from the model's own
predictions), and the refusals (--weights, --backend tensorflow, an unsafe graph)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import helper
from PIL import Image

from unet_core.cli import main
from unet_core.errors import UnetCoreError
from unet_core.inference import Segmenter
from unet_core.io import read_mask
from unet_core.model import load_model


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_images(folder: Path, c: int, sizes, seed: int = 0) -> list[Path]:
    """uint8 PNGs (gray for c = 1, RGB for c = 3) of the given (H, W) sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w]
        planes = [127 + 90 * np.sin(xx / (5.0 + k) + i) * np.cos(yy / 6.0)
                  + rng.normal(0, 15, (h, w)) for k in range(c)]
        arr = np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8)
        p = folder / f"img{i}.png"
        Image.fromarray(arr[..., 0] if c == 1 else arr).save(p)
        paths.append(p)
    return paths


def read_png(p: Path) -> np.ndarray:
    return np.asarray(Image.open(p))


def _table_ready(graph) -> bool:
    """Whether unet_core.introspect lists ONNX nodes yet (helper A's part of issue 17)."""
    from unet_core.introspect import layer_table

    try:
        return len(layer_table(graph)) > 0
    except (UnetCoreError, TypeError, AttributeError):
        return False


@pytest.mark.parametrize("name,lines", [
    ("nchw_logits.onnx", ["layout: NCHW: a convolution reads the input directly",
                          "dynamic batch; dynamic height and width",
                          "last op Conv, so logits",
                          "output: logits (no final activation; the engine applies sigmoid)"]),
    ("nchw_softmax_b4.onnx", ["layout: NCHW", "fixed batch 4 (a shorter batch is padded",
                              "fixed 64x64", "last op Softmax, so probabilities",
                              "input 64x64 (NCHW), 1 channel"]),
    ("nhwc_sigmoid4.onnx", ["layout: NHWC: the graph opens with a Transpose",
                            "last op Sigmoid, so probabilities", "4 channels"]),
])
def test_inspect_onnx(capsys, onnx_models, name, lines):
    code, out, err = run(capsys, "inspect", "--model", str(onnx_models / name))
    for line in ["graph: ONNX opset 17, from pytorch 2.2.1", *lines]:
        assert line in out, (line, out)
    graph = load_model(onnx_models / name).model
    if _table_ready(graph):
        assert code == 0, err
        for node in ("/enc1/Conv", "/pool1/MaxPool", "/up2/ConvTranspose", "/head/Conv"):
            assert node in out
    else:  # the layer table is not there yet: everything before it is
        assert code == 2 and err.count("\n") == 1


def test_inspect_onnx_json(capsys, onnx_models):
    code, out, err = run(capsys, "inspect", "--json", "--model",
                         str(onnx_models / "nhwc_logits3_b2.onnx"))
    graph = load_model(onnx_models / "nhwc_logits3_b2.onnx").model
    if not _table_ready(graph):
        assert code == 2 and err.count("\n") == 1
        return
    assert code == 0, err
    data = json.loads(out)
    facts = data["onnx"]
    assert (facts["layout"], facts["batch"], facts["height"], facts["width"]) == (
        "nhwc", 2, 32, 32)
    assert facts["output_kind"] == "logits" and facts["input"] == "args_0"
    assert data["card"]["layout"] == "nhwc" and len(data["layers"]) == graph.n_layers


def test_trust_model_is_harmless_and_weights_refused(capsys, onnx_models, tmp_path):
    model = str(onnx_models / "nchw_gray.onnx")
    out_dir = tmp_path / "out"
    imgs = write_images(tmp_path / "in", 1, [(30, 40)])
    code, _, err = run(capsys, "predict", "--model", model, "--trust-model", str(imgs[0]),
                       "--out", str(out_dir))
    assert code == 0, err
    assert "--trust-model: no effect" in err and "safe_mode off" not in err
    code, _, err = run(capsys, "predict", "--model", model, "--weights", model, str(imgs[0]),
                       "--out", str(out_dir))
    assert code == 2 and err.count("\n") == 1 and "holds its weights" in err
    code, _, err = run(capsys, "predict", "--model", model, "--backend", "tensorflow",
                       str(imgs[0]), "--out", str(out_dir))
    assert code == 2 and err.count("\n") == 1 and "runs on ONNX Runtime" in err


def test_unsafe_graph_refused_in_one_line(capsys, tmp_path):
    from onnx import TensorProto
    from onnx_zoo import save

    g = helper.make_graph(
        [helper.make_node("Backdoor", ["x"], ["y"], domain="com.example.evil")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 32, 32])])
    path = save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
                tmp_path / "evil.onnx")
    code, _, err = run(capsys, "inspect", "--model", str(path))
    assert code == 2 and err.count("\n") == 1 and "custom domain 'com.example.evil'" in err


def test_predict_pad_fit_onnx(capsys, onnx_models, tmp_path):
    """A dynamic NHWC graph, 4 channels: probabilities equal the engine's, masks at 0.5."""
    model = onnx_models / "nhwc_sigmoid4.onnx"
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for i, (h, w) in enumerate([(33, 47), (40, 40)]):
        arr = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        Image.fromarray(arr, mode="RGBA").save(folder / f"im{i}.png")
        arrays[f"im{i}"] = arr
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", "--model", str(model), str(folder), "--out", str(out))
    assert code == 0, err
    assert "backend onnxruntime (the ONNX file itself (NHWC, dynamic batch))" in err
    seg = Segmenter(load_model(model))
    for stem, arr in arrays.items():
        prob = np.load(out / f"{stem}_prob.npy")
        assert prob.shape == arr.shape[:2]
        np.testing.assert_allclose(prob, seg.predict_classes(arr)[..., 0], atol=1e-6)
        np.testing.assert_array_equal(read_mask(out / f"{stem}_mask.png"), prob > 0.5)


def test_predict_resize_class_fixed_batch(capsys, onnx_models, tmp_path):
    """The fixed batch-4, 64x64 softmax graph on three images of other sizes: --fit resize
    (the default for it), --class 2, --all-classes, label maps."""
    model = onnx_models / "nchw_softmax_b4.onnx"
    imgs = write_images(tmp_path / "in", 1, [(50, 70), (64, 64), (101, 33)])
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", "--model", str(model), "--fit", "resize", "--class",
                       "2", "--all-classes", *map(str, imgs), "--out", str(out))
    assert code == 0, err
    assert "class 2" in err and "fixed batch 4" in err
    seg = Segmenter(load_model(model))
    for p in imgs:
        img = read_png(p)
        probs = np.load(out / f"{p.stem}_prob.npy")
        assert probs.shape == (*img.shape, 4)
        np.testing.assert_allclose(probs, seg.predict_classes(img), atol=1e-6)
        np.testing.assert_array_equal(read_mask(out / f"{p.stem}_mask.png"),
                                      probs[..., 2] > 0.5)
        np.testing.assert_array_equal(read_png(out / f"{p.stem}_labels.png"),
                                      probs.argmax(-1))


def _pairs(folder: Path, model: Path, c: int, label: bool) -> float:
    """images/ + masks/ where each mask is the model's own prediction (argmax labels, or the
    probabilities at their median to 2 decimals, on evaluate's threshold grid, returned): a
    self-consistency set on which a correct pipeline scores perfectly."""
    imgs = write_images(folder / "images", c, [(40, 52), (64, 64), (29, 31)], seed=3)
    (folder / "masks").mkdir()
    seg = Segmenter(load_model(model))
    probs = [seg.predict_classes(read_png(p)) for p in imgs]
    t = round(float(np.median(np.concatenate([q[..., 0].ravel() for q in probs]))), 2)
    for p, q in zip(imgs, probs, strict=True):
        mask = (q.argmax(-1).astype(np.uint8) if label else
                ((q[..., 0] > t) * 255).astype(np.uint8))
        Image.fromarray(mask).save(folder / "masks" / p.name)
    return t


def test_evaluate_onnx_self_consistency(capsys, onnx_models, tmp_path):
    model = onnx_models / "nchw_logits.onnx"
    t = _pairs(tmp_path / "bin", model, 3, label=False)
    fg = np.concatenate([(read_png(p) > 0).ravel() for p in (tmp_path / "bin/masks").iterdir()])
    assert 0.3 < fg.mean() < 0.7  # the masks are not trivial
    code, out, err = run(capsys, "evaluate", "--model", str(model), "--data",
                         str(tmp_path / "bin"), "--threshold", str(t), "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["n"] == 3 and res["backend"] == "onnxruntime" and res["threshold"] == t
    assert res["iou"] == pytest.approx(1.0) and res["dice"] == pytest.approx(1.0)

    model = onnx_models / "nchw_softmax_b4.onnx"
    _pairs(tmp_path / "lab", model, 1, label=True)
    code, out, err = run(capsys, "evaluate", "--model", str(model), "--data",
                         str(tmp_path / "lab"), "--labels")
    assert code == 0, err
    assert "pixel accuracy 1.0000" in out and "4 classes (argmax label map)" in out


def test_card_option_layout_reads_the_graph(capsys, tmp_path):
    """`--card` stating "layout": "nhwc" for a graph whose layout cannot be read from it (a
    fixed (1, 32, 32, 3) input scaled before its Transpose): without it the graph is refused
    with a hint, with it predict runs and matches plain ONNX Runtime."""
    from onnx_zoo import ort_forward
    from test_onnx import _mul_first_nhwc

    model = _mul_first_nhwc(tmp_path)
    img = write_images(tmp_path / "in", 3, [(32, 32)])[0]
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", "--model", str(model), str(img), "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and '"layout": "nhwc"' in err
    card = tmp_path / "elsewhere" / "card.json"
    card.parent.mkdir()
    card.write_text(json.dumps({"name": "mul_first", "layout": "nhwc"}))
    code, _, err = run(capsys, "predict", "--model", str(model), "--card", str(card), str(img),
                       "--out", str(out))
    assert code == 0, err
    x = read_png(img).astype(np.float32)[None] / 255.0
    want = ort_forward(model, x)[0, ..., 0]
    np.testing.assert_allclose(np.load(out / "img0_prob.npy"), want, atol=2e-5)
    code, out_text, err = run(capsys, "inspect", "--model", str(model), "--card", str(card))
    assert code == 0, err
    assert "layout: NHWC: stated in the model card" in out_text


def test_calibrate_onnx_rewrites_its_card(capsys, onnx_models, tmp_path):
    """calibrate re-picks an ONNX model's threshold on the validation names of a split (the
    masks are the model's own at a threshold t: the pick must land on it, IoU 1)."""
    import shutil

    model = tmp_path / "m.onnx"
    shutil.copy(onnx_models / "nchw_logits.onnx", model)
    (tmp_path / "m.json").write_text(json.dumps({"name": "m", "threshold": 0.9}))
    t = _pairs(tmp_path / "data", model, 3, label=False)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "val": ["img0.png", "img1.png"],
                                 "test": ["img2.png"]}))
    code, out, err = run(capsys, "calibrate", "--model", str(model), "--data",
                         str(tmp_path / "data"), "--split", str(split), "--select", "mean_iou",
                         "--no-select-min-area")
    assert code == 0, err
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["metrics"]["validation"]["iou"] == pytest.approx(1.0)
    assert abs(card["threshold"] - t) <= 0.011  # the grid's neighbour of t
    assert card["output"] == "logits" and card["layout"] == "nchw"
