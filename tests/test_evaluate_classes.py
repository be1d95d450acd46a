"""Engine-level evaluation: images read as decoded (raw models see 0-255), one class of a
K-class model against binary masks, and label masks scored per class.

The models here are single 1x1 convolutions with set weights, so every expected value is
known exactly: a raw-scaled sigmoid ``p = sigmoid(0.2 x - 25.5)`` (foreground iff x > 127.5)
and a raw-scaled 3-class softmax with logits ``(8.5 - 0.1 x, 0, 0.1 x - 17)`` (class 0 iff
x < 85, class 2 iff x > 170, else class 1).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unet_core.errors import MaskError, UnetCoreError
from unet_core.evaluate import evaluate_classes, evaluate_pairs
from unet_core.inference import Segmenter
from unet_core.io import find_pairs, write_mask_png
from unet_core.metrics import class_confusion, class_dice, class_iou
from unet_core.model import ModelCard, from_keras

CLASSES = ["dark", "mid", "bright"]


def conv_model(kernel: list[float], bias: list[float], activation: str):
    import keras

    inp = keras.Input((None, None, 1))
    conv = keras.layers.Conv2D(len(bias), 1, activation=activation, name="head")
    model = keras.Model(inp, conv(inp))
    conv.set_weights([np.array(kernel, np.float32).reshape(1, 1, 1, -1),
                      np.array(bias, np.float32)])
    return model


def truth_of(x: np.ndarray) -> np.ndarray:
    return np.where(x < 85, 0, np.where(x > 170, 2, 1)).astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """5 gray 20x24 images (values away from the class boundaries), with label masks in
    labels/masks, binary masks of class 2 (x > 170) in binary/masks and of x > 127 in
    bright/masks."""
    root = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(7)
    allowed = np.r_[20:80, 90:165, 175:250].astype(np.uint8)
    subs = ("labels", "binary", "bright")
    for sub in subs:
        (root / sub / "images").mkdir(parents=True)
        (root / sub / "masks").mkdir()
    for i in range(5):
        x = rng.choice(allowed, size=(20, 24))
        if i == 4:
            x[x > 170] = 100  # no bright pixel: class 2 absent from truth and prediction
        for sub in subs:
            Image.fromarray(x).save(root / sub / "images" / f"im{i}.png")
        Image.fromarray(truth_of(x)).save(root / "labels" / "masks" / f"im{i}.png")
        write_mask_png(root / "binary" / "masks" / f"im{i}.png", x > 170)
        write_mask_png(root / "bright" / "masks" / f"im{i}.png", x > 127)
    return root


@pytest.fixture(scope="module")
def softmax3() -> Segmenter:
    model = conv_model([-0.1, 0.0, 0.1], [8.5, 0.0, -17.0], "softmax")
    card = ModelCard(name="three", classes=CLASSES, normalisation="raw",
                     select_metric="mean_dice")
    return Segmenter(from_keras(model, card, "three"), backend="tensorflow")


@pytest.fixture(scope="module")
def sigmoid_raw() -> Segmenter:
    model = conv_model([0.2], [-25.5], "sigmoid")
    card = ModelCard(name="bright", foreground="bright", normalisation="raw", domain="test")
    return Segmenter(from_keras(model, card, "bright"), backend="tensorflow")


def test_evaluate_pairs_reads_raw_values(sigmoid_raw, data):
    """A raw-scaled model gets 0-255 values (read_raw): x > 127.5 is found exactly (fed
    [0, 1] values it would find nothing)."""
    ev = evaluate_pairs(sigmoid_raw, find_pairs(data / "bright"))
    s = ev.summary()
    assert s["iou"] == 1.0 and s["dice"] == 1.0 and s["threshold"] == 0.5
    assert ev.select_metric == "mean_iou"  # the card's: no select_metric, domain not seismic
    assert ev.class_index == 0 and ev.class_name == "bright"


def test_one_class_of_a_softmax_against_binary_masks(softmax3, data):
    pairs = find_pairs(data / "binary")
    ev = evaluate_pairs(softmax3, pairs, class_index=2)
    s = ev.summary()
    assert s["iou"] == 1.0 and s["dice"] == 1.0  # class 2 = x > 170 = the masks
    assert s["selected_by"] == "mean_dice"  # the card's select_metric
    assert s["class_index"] == 2 and s["class_name"] == "bright"
    assert evaluate_pairs(softmax3, pairs, select_metric="tgs_metric").select_metric == \
        "tgs_metric"
    # the default class of a softmax is 1 (first after the background): here "mid"
    mid = evaluate_pairs(softmax3, pairs)
    assert mid.class_index == 1 and mid.summary()["iou"] == 0.0
    with pytest.raises(UnetCoreError) as exc:
        evaluate_pairs(softmax3, pairs, class_index=3)
    assert "accepted: 0 dark, 1 mid, 2 bright" in str(exc.value)


def test_evaluate_classes_per_class(softmax3, data):
    pairs = find_pairs(data / "labels")
    r = evaluate_classes(softmax3, pairs)
    assert r.class_names == CLASSES and r.names == [p.name for p in pairs]
    assert r.pixel_accuracy == 1.0 and r.mean_iou == 1.0 and r.pooled_mean_dice == 1.0
    assert r.per_class()[2]["images"] == 4  # im4 has no bright pixel (scores 1.0 there)

    # streaming: one image per batch, tiny value budget -> the same counts
    r1 = evaluate_classes(softmax3, pairs, batch_size=1, max_batch_values=1)
    np.testing.assert_array_equal(r1.confusion, r.confusion)

    # a wrong truth for one image: expected figures from its confusion matrix
    bad = data / "labels_bad"
    shutil.copytree(data / "labels", bad)
    x = np.array(Image.open(bad / "images" / "im0.png"))
    wrong = np.zeros_like(x)
    Image.fromarray(wrong).save(bad / "masks" / "im0.png")
    rb = evaluate_classes(softmax3, find_pairs(bad))
    c0 = class_confusion(truth_of(x), wrong, 3)
    np.testing.assert_allclose(rb.iou[0], class_iou(c0))
    np.testing.assert_allclose(rb.dice[0], class_dice(c0))
    assert rb.iou[0, 0] == pytest.approx((truth_of(x) == 0).mean())
    np.testing.assert_array_equal(rb.iou[1:], 1.0)
    assert rb.mean_iou == pytest.approx((class_iou(c0).mean() + 4) / 5)
    assert rb.pixel_accuracy == pytest.approx(1 - (truth_of(x) != 0).sum() / (5 * 20 * 24))

    # a label mask with a class the model does not have
    Image.fromarray(np.full_like(x, 7)).save(bad / "masks" / "im1.png")
    with pytest.raises(MaskError) as exc:
        evaluate_classes(softmax3, find_pairs(bad))
    assert str(exc.value).startswith("masks/im1.png: label mask holds classes {7} but the "
                                     "model has 3 classes (0..2)")


def test_evaluate_classes_one_map_model_is_two_classes(sigmoid_raw, data, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for p in find_pairs(data / "binary")[:2]:
        x = np.array(Image.open(p.image_path))
        Image.fromarray(x).save(tmp_path / "images" / p.name)
        Image.fromarray((x > 127).astype(np.uint8)).save(tmp_path / "masks" / p.name)
    r = evaluate_classes(sigmoid_raw, find_pairs(tmp_path))
    assert r.class_names == ["background", "bright"]
    assert r.pixel_accuracy == 1.0 and r.mean_iou == 1.0
    # at threshold 1.0 nothing is foreground: class 1 IoU 0, background IoU = its share
    r0 = evaluate_classes(sigmoid_raw, find_pairs(tmp_path), threshold=1.0)
    assert r0.class_iou[1] == 0.0 and 0 < r0.class_iou[0] < 1
