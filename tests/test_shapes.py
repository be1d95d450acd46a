"""Every model shape the product accepts, each checked against an independent reference.

Tiny models (tests/zoo.py) cover gray / RGB / RGBA / 4-band / 5-band inputs; one sigmoid map,
logits (1 and K channels), softmax K = 2 (binary) and K = 4; a fixed 32x32 input with fit
``resize`` and fit ``pad`` (tiling larger images); fully convolutional networks; a network that
normalises inside itself (``Rescaling(1/255)``) fed raw values; BGR order. Each card is a JSON
file next to (a link to) the saved model, as a user would write it. The reference pipeline
(tf.image.resize, the scaling written out by hand, ``model(x)`` in Keras) never touches
``unet_core.preprocess``; the bar is the issue's 0.04 mean absolute probability, and the
measured differences are ~1e-7 (checked below with max |diff| < 1e-4).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from zoo import (
    build_zoo,
    mae,
    pointwise_reference,
    reference,
    smooth_image,
    strided_output_net,
)

from unet_core.errors import ModelLoadError, ModelSpecError, UnetCoreError
from unet_core.inference import Segmenter
from unet_core.model import ModelCard, card_from_dict, load_model

K4 = ["background", "road", "water", "forest"]
MEAN5 = [0.1, 0.2, 0.3, 0.4, 0.5]
STD5 = [0.5, 0.25, 0.2, 0.1, 0.3]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, tuple[Path, Any]]:
    """The saved tiny models (one ONNX export each, shared by every test here)."""
    return build_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="module")
def load(zoo, tmp_path_factory) -> Callable[..., Any]:
    """``load(model_name, card_dict or None)`` -> LoadedModel: the card written as JSON next to
    a link to the saved model (the link has the model's bytes, so its ONNX export is shared)."""
    root = tmp_path_factory.mktemp("cards")
    count = iter(range(10_000))

    def _load(name: str, card: dict[str, Any] | None = None):
        folder = root / f"v{next(count)}"
        folder.mkdir()
        link = folder / f"{name}.keras"
        link.symlink_to(zoo[name][0])
        if card is not None:
            (folder / f"{name}.json").write_text(json.dumps({"name": name, **card}))
        return load_model(link)

    return _load


def _u8(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64) / 255.0


def _luma(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., None]


def _zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (x - x.mean()) / (x.std() + 1e-7)


def _percentile(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    x = np.asarray(x, np.float64)
    p_lo, p_hi = np.percentile(x, [lo, hi])
    return np.clip((x - p_lo) / (p_hi - p_lo), 0.0, 1.0)


FIXED = {"input_size": [32, 32]}
RGB_K4 = {"classes": K4, **FIXED}

# id, model, card (None: no card), image, hand scaling, how it meets the network, logits
CASES: list[tuple[str, str, dict | None, Callable[[], np.ndarray], Callable, dict, str | None]] = [
    ("gray-unit-fcn", "gray_sigmoid_fcn", {}, lambda: smooth_image(48, 36, seed=1),
     lambda x: _u8(x)[..., None], {}, None),
    ("gray-padded-to-stride", "gray_sigmoid_fcn", {"multiple_of": 4},
     lambda: smooth_image(45, 37, seed=2), lambda x: _u8(x)[..., None],
     {"pad_to": (48, 40)}, None),
    ("rgb-to-gray-luma", "gray_sigmoid_fcn", None, lambda: smooth_image(48, 36, 3, seed=3),
     lambda x: _luma(x) / 255.0, {}, None),
    ("gray-float-minmax", "gray_sigmoid_fcn", {"normalisation": "minmax"},
     lambda: smooth_image(40, 40, dtype=np.float32, seed=4) * 10 - 3,
     lambda x: ((x - x.min()) / (x.max() - x.min()))[..., None], {}, None),
    ("rgb-softmax4-resize", "rgb_softmax4_fixed32", {**RGB_K4, "fit": "resize"},
     lambda: smooth_image(50, 37, 3, seed=5), _u8, {"resize_to": (32, 32)}, None),
    ("bgr-softmax4-resize", "rgb_softmax4_fixed32",
     {**RGB_K4, "fit": "resize", "channel_order": "bgr"},
     lambda: smooth_image(50, 37, 3, seed=5), lambda x: _u8(x[..., ::-1]),
     {"resize_to": (32, 32)}, None),
    ("gray-replicated-to-rgb-resize", "rgb_softmax4_fixed32", {**RGB_K4, "fit": "resize"},
     lambda: smooth_image(21, 70, seed=6), lambda x: np.repeat(_u8(x)[..., None], 3, axis=2),
     {"resize_to": (32, 32)}, None),
    ("rgb-softmax4-fixed-pad", "rgb_softmax4_fixed32", {**RGB_K4, "fit": "pad"},
     lambda: smooth_image(20, 25, 3, seed=7), _u8, {"pad_to": (32, 32)}, None),
    ("rgba-logits1-fcn", "rgba_logits1_fcn", {}, lambda: smooth_image(40, 44, 4, seed=8),
     _u8, {}, "sigmoid"),
    ("band4-uint16-logits1", "rgba_logits1_fcn", {},
     lambda: smooth_image(36, 40, 4, np.uint16, seed=9),
     lambda x: np.asarray(x, np.float64) / 65535.0, {}, "sigmoid"),
    ("band5-meanstd-logits4", "band5_logits4_fcn",
     {"classes": K4, "normalisation": "meanstd", "mean": MEAN5, "std": STD5},
     lambda: smooth_image(32, 44, 5, np.float32, seed=10),
     lambda x: (x - np.array(MEAN5)) / np.array(STD5), {}, "softmax"),
    ("rgb-softmax2-zscore", "rgb_softmax2_fcn", {"normalisation": "zscore"},
     lambda: smooth_image(44, 28, 3, seed=11), _zscore, {}, None),
    ("rescaling-inside-raw", "raw_rescaling_fcn", {"normalisation": "raw"},
     lambda: smooth_image(30, 42, 3, seed=12), lambda x: np.asarray(x, np.float64), {}, None),
]


# The TensorFlow backend (one tf.function trace each) on a few cases of every kind; ONNX
# Runtime (the default) on all.
TF_CASES = ("rgb-softmax4-resize", "band5-meanstd-logits4", "rescaling-inside-raw",
            "rgb-softmax4-fixed-pad")
PARAMS = [pytest.param(backend, *c, id=f"{c[0]}-{backend or 'onnx'}")
          for c in CASES for backend in (None, "tensorflow")
          if backend is None or c[0] in TF_CASES]


@pytest.mark.parametrize(("backend", "case", "name", "card", "make", "scale", "fit", "logits"),
                         PARAMS)
def test_shape_matches_independent_reference(load, zoo, backend, case, name, card, make, scale,
                                             fit, logits):
    loaded = load(name, card)
    seg = Segmenter(loaded, backend=backend)
    assert seg.backend.name == (backend or "onnxruntime"), seg.backend.note
    image = make()
    probs = seg.predict_classes(image)
    expected = reference(zoo[name][1], image, scale, logits=logits, **fit)
    h, w = image.shape[:2]
    k = loaded.card.n_classes
    assert probs.shape == (h, w, k) and probs.dtype == np.float32
    assert expected.shape == (h, w, k)
    assert probs.min() >= 0.0 and probs.max() <= 1.0
    if k >= 2:
        np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    assert mae(probs, expected) <= 0.04  # the bar
    assert np.abs(probs - expected).max() < 1e-4, case  # what is measured: ~1e-7


def test_fixed_size_network_tiles_larger_images_exactly(load, zoo):
    """Fit pad on a fixed 32x32 network tiles a 70x50 image; with a per-pixel network the
    blended tiles must equal the per-pixel result on the whole image (percentile scaling,
    statistics over the whole image, not per tile)."""
    loaded = load("pointwise_softmax3_fixed32",
                  {"classes": ["a", "b", "c"], "normalisation": "percentile",
                   "percentiles": [2, 98], **FIXED, "fit": "pad"})
    seg = Segmenter(loaded)
    assert loaded.card.fit == "pad" and seg.network_size(70, 50) is None  # tiled
    image = smooth_image(70, 50, 3, seed=13)
    probs = seg.predict_classes(image)
    expected = pointwise_reference(zoo["pointwise_softmax3_fixed32"][1],
                                   _percentile(image, 2, 98))
    assert probs.shape == (70, 50, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    assert np.abs(probs - expected).max() < 1e-4
    batch = seg.predict_batch_classes([image, image[:20, :30]])
    np.testing.assert_allclose(batch[0], probs, atol=1e-6)
    assert batch[1].shape == (20, 30, 3)


def test_cardless_fixed_network_defaults_to_resize_and_says_why(load):
    card = load("rgb_softmax4_fixed32").card
    assert card.fit == "resize" and card.input_size == [32, 32]
    assert "fixed 32x32" in card.notes["fit"]
    assert card.channels == 3 and card.n_classes == 4


def test_logits_are_detected_from_the_last_layer(load):
    for name in ("rgba_logits1_fcn", "band5_logits4_fcn"):
        card = load(name, {"classes": K4} if name.startswith("band5") else {}).card
        assert card.output == "logits", name
    assert load("gray_sigmoid_fcn", {}).card.output == "probability"


def test_channel_order_and_scaling_change_the_answer(load):
    """The references above would not notice a swapped order or a wrong scaling unless the
    models react to them: they do, by far more than the tolerance."""
    image = smooth_image(50, 37, 3, seed=5)
    rgb = Segmenter(load("rgb_softmax4_fixed32", {**RGB_K4, "fit": "resize"}))
    bgr = Segmenter(load("rgb_softmax4_fixed32",
                         {**RGB_K4, "fit": "resize", "channel_order": "bgr"}))
    assert mae(rgb.predict_classes(image), bgr.predict_classes(image)) > 1e-3
    raw = Segmenter(load("raw_rescaling_fcn", {"normalisation": "raw"}))
    unit = Segmenter(load("raw_rescaling_fcn", {"normalisation": "unit"}))
    image = smooth_image(30, 42, 3, seed=12)
    assert mae(raw.predict_classes(image), unit.predict_classes(image)) > 1e-2


def test_two_class_softmax_is_binary(load):
    loaded = load("rgb_softmax2_fcn", {"foreground": "road"})
    card = loaded.card
    assert card.classes == ["background", "road"] and card.default_class == 1
    assert card.foreground_name == "road"
    seg = Segmenter(loaded)
    image = smooth_image(44, 28, 3, seed=11)
    probs = seg.predict_classes(image)
    fg = seg.predict_proba(image)
    np.testing.assert_array_equal(fg, probs[..., 1])
    np.testing.assert_array_equal(seg.predict_proba(image, class_index=0), probs[..., 0])
    labels = seg.predict_labels(image)
    assert labels.dtype == np.uint8 and labels.shape == (44, 28)
    np.testing.assert_array_equal(labels, np.argmax(probs, axis=-1))
    mask = seg.predict_mask(image, threshold=0.5)
    assert mask.dtype == np.bool_
    np.testing.assert_array_equal(mask, probs[..., 1] > 0.5)
    assert [p.shape for p in seg.predict_batch([image, image[:9]])] == [(44, 28), (9, 28)]


def test_multiclass_labels_and_class_picker(load):
    seg = Segmenter(load("rgb_softmax4_fixed32", {**RGB_K4, "fit": "resize"}))
    image = smooth_image(50, 37, 3, seed=5)
    probs = seg.predict_classes(image)
    np.testing.assert_array_equal(seg.predict_labels(image), np.argmax(probs, axis=-1))
    np.testing.assert_array_equal(seg.predict_proba(image, class_index=3), probs[..., 3])
    np.testing.assert_array_equal(seg.predict_proba(image), probs[..., 1])  # default class 1
    with pytest.raises(UnetCoreError, match=r"class 4 is not a class .*accepted: 0 background"):
        seg.predict_proba(image, class_index=4)


# -- bad input: one-line messages saying what was found and what is accepted ------------------


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and "accepted" in text, text
    return text


def test_image_channels_that_cannot_be_mapped(load):
    seg = Segmenter(load("rgb_softmax4_fixed32", {**RGB_K4, "fit": "resize"}))
    with pytest.raises(UnetCoreError) as exc:
        seg.predict_classes(smooth_image(32, 32, 5))
    assert "5 channels but the model takes 3" in _one_line(exc)


def test_output_smaller_than_input(tmp_path):
    fixed = tmp_path / "fixed_strided.keras"
    strided_output_net((32, 32)).save(fixed)
    with pytest.raises(ModelSpecError) as exc:
        load_model(fixed)
    assert "16x16 for a 32x32 input" in _one_line(exc)
    dynamic = tmp_path / "dynamic_strided.keras"
    strided_output_net(None).save(dynamic)
    seg = Segmenter(load_model(dynamic), backend="tensorflow")
    with pytest.raises(UnetCoreError) as exc:
        seg.predict_classes(smooth_image(40, 40))
    assert "20x20 for a 40x40 input" in _one_line(exc)


def test_softmax_card_without_class_names(load):
    with pytest.raises(ModelSpecError) as exc:
        load("rgb_softmax4_fixed32", {**FIXED})
    assert "4-class output but its card names no classes" in _one_line(exc)


def test_card_class_count_mismatch(load):
    with pytest.raises(ModelSpecError) as exc:
        load("rgb_softmax4_fixed32", {"classes": K4[:3], **FIXED})
    assert "names 3 classes but the network outputs 4" in _one_line(exc)
    with pytest.raises(ModelSpecError) as exc:
        load("gray_sigmoid_fcn", {"classes": ["bg", "fg"]})
    assert "one output channel" in _one_line(exc)


def test_class_index_out_of_range(load):
    with pytest.raises(UnetCoreError) as exc:
        load("rgb_softmax4_fixed32", {**RGB_K4, "class_index": 4})
    assert "class_index" in _one_line(exc)


def test_meanstd_without_statistics():
    with pytest.raises(UnetCoreError) as exc:
        card_from_dict({"channels": 3, "normalisation": "meanstd"}, "card.json")
    assert "mean" in _one_line(exc)
    with pytest.raises(UnetCoreError) as exc:
        card_from_dict({"channels": 3, "normalisation": "meanstd", "mean": [0.5] * 3},
                       "card.json")
    assert "std" in _one_line(exc)


def test_fit_resize_on_a_fully_convolutional_network(load):
    with pytest.raises(UnetCoreError) as exc:
        Segmenter(load("gray_sigmoid_fcn", {}), fit="resize")
    assert "fully convolutional" in _one_line(exc)
    with pytest.raises(ModelLoadError) as exc:
        load("gray_sigmoid_fcn", {"fit": "resize"})
    assert "fit" in _one_line(exc)


# -- what a card leaves out, the network fills ---------------------------------------------


def test_card_file_is_checked_after_the_network_fills_it(load):
    card = load("rgb_softmax4_fixed32", {"classes": K4, "fit": "resize"}).card
    assert card.fit == "resize" and card.input_size == [32, 32]
    # an ImageNet card next to an RGB model, without "channels": 3
    card = load("rgb_softmax2_fcn", {"normalisation": "meanstd", "mean": [0.485, 0.456, 0.406],
                                     "std": [0.229, 0.224, 0.225]}).card
    assert card.channels == 3 and card.normalisation == "meanstd"


def test_card_object_leaves_network_fields_to_the_network(zoo):
    loaded = load_model(zoo["rgb_softmax4_fixed32"][0],
                        card=ModelCard(name="x", classes=K4, fit="resize", input_size=[32, 32]))
    assert loaded.card.channels == 3
    loaded = load_model(zoo["rgb_softmax4_fixed32"][0], card=ModelCard(name="x", classes=K4))
    assert loaded.card.channels == 3 and loaded.card.input_size == [32, 32]
