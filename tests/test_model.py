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
