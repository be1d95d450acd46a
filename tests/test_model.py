import json

import numpy as np
import pytest

from unet_core.errors import ModelLoadError, ModelSpecError
from unet_core.model import ModelCard, build_unet, card_path_for, load_model


def test_build_unet_shapes_and_stride():
    model = build_unet(base_filters=4, depth=3, dropout=0.1)
    y = model(np.zeros((2, 40, 48, 1), np.float32))
    assert tuple(y.shape) == (2, 40, 48, 1)
    assert float(np.min(y)) >= 0.0 and float(np.max(y)) <= 1.0


def test_build_unet_width_loop_scales_parameters():
    small = build_unet(base_filters=4, depth=2).count_params()
    big = build_unet(base_filters=8, depth=2).count_params()
    assert 3 * small < big < 5 * small  # conv params grow ~ width^2


def test_load_with_card(tiny_model_path):
    loaded = load_model(tiny_model_path)
    assert loaded.card_found
    assert loaded.card.name == "tiny" and loaded.card.min_size == 32
    assert loaded.card.inferred == []


def test_load_without_card_infers_and_says_so(tiny_model_path, tmp_path):
    p = tmp_path / "nocard.keras"
    p.write_bytes(tiny_model_path.read_bytes())
    loaded = load_model(p)
    assert not loaded.card_found
    assert loaded.card.multiple_of == 4  # two 2x poolings
    assert loaded.card.input_size is None
    assert "threshold" in loaded.card.inferred
    assert "inferred" in loaded.card.description


def test_legacy_h5_loads(tmp_path):
    model = build_unet(base_filters=4, depth=2, dropout=0.0)
    p = tmp_path / "old.h5"
    model.save(p)
    loaded = load_model(p)
    x = np.random.default_rng(0).random((1, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded.model(x), model(x), atol=1e-6)


def test_card_round_trip(tmp_path):
    card = ModelCard(name="x", input_size=[128, 128], threshold=0.42, metrics={"a": 1})
    p = tmp_path / "x.json"
    card.save(p)
    assert ModelCard.from_dict(json.loads(p.read_text())) == card
    assert card.input_spec == "128x128"
    assert card_path_for("models/salt.keras").name == "salt.json"


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("notes.txt", b"hello", "accepted: .keras"),
        ("empty.keras", b"", "empty"),
        ("fake.keras", b"this is not a zip", "zip archive"),
        ("fake.h5", b"not hdf5 at all", "not an HDF5"),
        ("model.pkl", b"\x80\x04\x95 pickle", "pickle"),
        ("broken.keras", b"PK\x03\x04garbage-zip", "zip archive|could not load"),
    ],
)
def test_not_a_model_is_a_clear_error(tmp_path, name, content, match):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ModelLoadError, match=match):
        load_model(p)


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "nope.keras")


def test_rgb_model_loads_with_its_channels(tmp_path):
    model = build_unet(input_channels=3, base_filters=4, depth=2)
    p = tmp_path / "rgb.keras"
    model.save(p)
    loaded = load_model(p)
    assert loaded.card.channels == 3 and "channels" in loaded.card.inferred
    (tmp_path / "rgb.json").write_text('{"channels": 1}')
    with pytest.raises(ModelSpecError, match="channels = 1 but the network takes 3"):
        load_model(p)


def test_two_output_model_is_refused(tmp_path):
    import keras

    inp = keras.Input((None, None, 1))
    a = keras.layers.Conv2D(1, 3, padding="same")(inp)
    b = keras.layers.Conv2D(1, 3, padding="same")(inp)
    p = tmp_path / "two.keras"
    keras.Model(inp, [a, b]).save(p)
    with pytest.raises(ModelSpecError, match="2 outputs"):
        load_model(p)


def test_bad_card_json_is_clear(tiny_model_path, tmp_path):
    p = tmp_path / "m.keras"
    p.write_bytes(tiny_model_path.read_bytes())
    p.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(p)


# --------------------------------------------------------------------------- issue 15


def _lambda_model():
    import keras

    inp = keras.Input((None, None, 1))
    x = keras.layers.Lambda(lambda t: t / 255.0, name="scale")(inp)
    return keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(x))


def test_trusted_local_model_with_lambda_loads_only_when_trusted(tmp_path):
    path = tmp_path / "lambda.keras"
    _lambda_model().save(path)
    with pytest.raises(ModelLoadError, match="Lambda.*--trust-model.*UNET_TRUSTED_MODELS_DIR"):
        load_model(path)
    loaded = load_model(path, safe_mode=False)
    assert loaded.trusted
    y = loaded.model(np.full((1, 4, 4, 1), 255.0, np.float32))
    assert tuple(y.shape) == (1, 4, 4, 1)


def test_architecture_json_plus_weights(tmp_path):
    """Keras 2's habit: model.to_json() + save_weights(); both Keras 3 and Keras 2 JSON."""
    import h5py

    model = build_unet(input_channels=3, base_filters=4, depth=2, n_classes=3,
                       output_activation="softmax")
    arch = tmp_path / "arch.json"
    arch.write_text(model.to_json())
    weights = tmp_path / "w.weights.h5"
    model.save_weights(weights)
    loaded = load_model(arch, weights=weights)
    x = np.random.default_rng(0).random((1, 16, 16, 3), dtype=np.float32)
    np.testing.assert_allclose(loaded.model(x), model(x), atol=1e-6)
    assert loaded.card.channels == 3 and loaded.card.n_classes == 3
    assert loaded.weights_path == weights

    # a legacy (Keras 2 style) weights file: the model_weights group of a whole .h5 model
    legacy = tmp_path / "whole.h5"
    model.save(legacy)
    k2_weights = tmp_path / "k2_weights.h5"
    with h5py.File(legacy, "r") as f, h5py.File(k2_weights, "w") as g:
        for k, v in f["model_weights"].attrs.items():
            g.attrs[k] = v
        for k in f["model_weights"]:
            f.copy(f["model_weights"][k], g, k)
    np.testing.assert_allclose(load_model(arch, weights=k2_weights).model(x), model(x),
                               atol=1e-6)

    with pytest.raises(ModelLoadError, match="needs its weights: --model arch.json --weights"):
        load_model(arch)
    with pytest.raises(ModelLoadError, match="--weights goes with an architecture .json"):
        load_model(legacy, weights=weights)
    other = build_unet(base_filters=8, depth=2)
    wrong = tmp_path / "other.weights.h5"
    other.save_weights(wrong)
    with pytest.raises(ModelLoadError, match="do not fit arch.json"):
        load_model(arch, weights=wrong)


def test_architecture_json_with_lambda_is_refused(tmp_path):
    arch = tmp_path / "arch.json"
    arch.write_text(_lambda_model().to_json())
    w = tmp_path / "w.weights.h5"
    _lambda_model().save_weights(w)
    with pytest.raises(ModelLoadError, match="refused: architecture contains Lambda.*trust"):
        load_model(arch, weights=w)


def test_keras2_model_keras3_cannot_rebuild_says_how_to_resave(tmp_path):
    import h5py

    legacy = tmp_path / "k2.h5"
    build_unet(base_filters=4, depth=2).save(legacy)
    with h5py.File(legacy, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        cfg["config"]["layers"][1]["class_name"] = "LocallyConnected2D"  # gone in Keras 3
        f.attrs["model_config"] = json.dumps(cfg)
        f.attrs["keras_version"] = "2.4.0"
    with pytest.raises(ModelLoadError, match=r"Keras 3 cannot rebuild this Keras 2\.4\.0 model.*"
                                             r"to_json\(\).*--weights weights\.h5"):
        load_model(legacy)


def test_weights_only_h5_says_to_give_the_architecture(tmp_path):
    w = tmp_path / "only.weights.h5"
    build_unet(base_filters=4, depth=2).save_weights(w)
    with pytest.raises(ModelLoadError, match="weights only .*--model arch.json --weights"):
        load_model(w)


@pytest.mark.parametrize(("fields", "match"), [
    ({"normalisation": "meanstd"}, "mean = None is invalid"),
    ({"normalisation": "meanstd", "mean": [123.7], "std": [58.4]}, "0..1 scale"),
    ({"normalisation": "meanstd", "mean": [0.5], "std": [0]}, "std = .* positive"),
    ({"fit": "resize"}, "fit = 'resize' is invalid .*needs one"),
    ({"fit": "stretch"}, "fit = 'stretch' is invalid .*pad, resize"),
    ({"channel_order": "grb"}, "channel_order .* rgb, bgr"),
    ({"classes": ["only"]}, "classes .* 2..256 distinct names"),
    ({"classes": ["a", "a"]}, "distinct"),
    ({"percentiles": [99, 1]}, "percentiles"),
    ({"select_metric": "accuracy"}, "select_metric"),
])
def test_card_fields_of_the_input_spec_are_checked(tiny_model_path, tmp_path, fields, match):
    path = tmp_path / "m.keras"
    path.write_bytes(tiny_model_path.read_bytes())
    (tmp_path / "m.json").write_text(json.dumps(fields))
    with pytest.raises(ModelLoadError, match=match):
        load_model(path)


def test_card_reconciled_with_the_network(tmp_path):
    """Fields a card leaves out come from the network; contradictions are one-line errors."""
    model = build_unet(input_channels=3, base_filters=4, depth=2, n_classes=3,
                       output_activation="softmax", input_size=(32, 32))
    path = tmp_path / "m.keras"
    model.save(path)
    card = tmp_path / "m.json"
    card.write_text(json.dumps({"classes": ["bg", "liver", "tumour"], "fit": "resize"}))
    c = load_model(path).card
    assert (c.channels, c.input_size, c.n_classes, c.default_class) == (3, [32, 32], 3, 1)
    assert c.class_name(2) == "tumour" and c.output == "probability"
    card.write_text(json.dumps({"foreground": "liver"}))
    with pytest.raises(ModelSpecError, match="3-class output but its card names no classes"):
        load_model(path)
    card.write_text(json.dumps({"classes": ["a", "b"]}))
    with pytest.raises(ModelSpecError, match="names 2 classes but the network outputs 3"):
        load_model(path)
    card.write_text(json.dumps({"classes": ["a", "b", "c"], "class_index": 5}))
    with pytest.raises(ModelLoadError, match="class_index = 5 is invalid"):
        load_model(path)


def test_cardless_fixed_size_model_says_which_fit_and_why(tmp_path):
    model = build_unet(input_channels=1, base_filters=4, depth=2, n_classes=2,
                       output_activation="linear", input_size=(32, 32))
    path = tmp_path / "m.keras"
    model.save(path)
    c = load_model(path).card
    assert c.fit == "resize" and "fixed 32x32 input" in c.notes["fit"]
    assert c.output == "logits" and "logits" in c.notes["output"]
    assert c.classes == ["background", "foreground"] and c.default_class == 1
    assert "resized to 32x32 (bilinear)" in c.preprocessing


def test_selection_metric_follows_the_card():
    assert ModelCard(domain="seismic").selection_metric == "tgs_metric"
    assert ModelCard(domain="microscopy").selection_metric == "mean_iou"
    assert ModelCard(domain="seismic", select_metric="mean_dice").selection_metric == "mean_dice"
    assert ModelCard(metrics={"selected_by": "mean_iou"}, domain="seismic"
                     ).selection_metric == "mean_iou"
