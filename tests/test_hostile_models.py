"""Hostile model files: their payload would create a marker file if it ever ran.

load_model must refuse every one with a one-line ModelLoadError (or, for models that are
harmless but unusable, a ModelSpecError saying what is accepted) and the marker must never
appear. Where it is cheap, a control shows that the payload is live: the same file loaded
the unsafe way does create the marker.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shlex
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from unet_core.errors import ModelLoadError, ModelSpecError, UnetCoreError
from unet_core.model import load_model

keras = pytest.importorskip("keras")


@pytest.fixture()
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "PAYLOAD_RAN"
    yield path


def refused(path: Path, marker: Path, cls: type[UnetCoreError] = ModelLoadError) -> str:
    """load_model(path) raises ``cls`` with a one-line message naming the file; no marker."""
    with pytest.raises(UnetCoreError) as exc:
        load_model(path)
    message = str(exc.value)
    assert isinstance(exc.value, cls), f"{type(exc.value).__name__}: {message}"
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(path.name), message
    assert not marker.exists(), f"the payload ran while loading {path.name}"
    return message


def zip_members(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def keras_members(model: object, tmp_path: Path) -> dict[str, bytes]:
    path = tmp_path / "clean.keras"
    model.save(path)  # type: ignore[attr-defined]
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def tiny() -> object:
    inp = keras.Input((None, None, 1), name="image")
    x = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="conv")(inp)
    return keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x))


def lambda_model(marker: Path) -> object:
    """A model whose Lambda creates ``marker`` each time it is traced or called."""
    # the path is a constant of the lambda's bytecode (no closure, no defaults to serialise)
    payload = eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")  # noqa: S307
    inp = keras.Input((None, None, 1))
    out = keras.layers.Lambda(payload, name="payload")(inp)
    model = keras.Model(inp, out)
    marker.unlink()  # building the model ran it once
    return model


# --------------------------------------------------------------------------- a. .keras Lambda


@pytest.mark.parametrize(("name", "phrase"), [("lambda.keras", "refused"),
                                            ("lambda.h5", "legacy .h5")])
def test_lambda_payload_is_refused(tmp_path: Path, marker: Path, name: str, phrase: str) -> None:
    """A Lambda in a .keras model or a legacy .h5 (marshalled bytecode) is refused unrun."""
    path = tmp_path / name
    lambda_model(marker).save(path)
    assert not marker.exists()
    message = refused(path, marker)
    assert "Lambda" in message and phrase in message

    # control: the payload is live (loaded the unsafe way, it runs)
    keras.models.load_model(path, safe_mode=False)(np.zeros((1, 2, 2, 1), np.float32))
    assert marker.exists()


def test_keras_lambda_is_refused_even_when_keras_would_only_fail(tmp_path: Path,
                                                                  marker: Path) -> None:
    """A Lambda of a named function is saved by name: refused by name, not by luck."""

    def payload(x, m=str(marker)):  # noqa: ANN001, ANN202
        open(m, "w").close()  # noqa: SIM115
        return x

    inp = keras.Input((None, None, 1))
    model = keras.Model(inp, keras.layers.Lambda(payload)(inp))
    marker.unlink()
    path = tmp_path / "named.keras"
    model.save(path)
    assert "Lambda" in refused(path, marker)


def test_serialised_lambda_in_an_activation_is_refused(tmp_path: Path, marker: Path) -> None:
    members = keras_members(tiny(), tmp_path)
    config = json.loads(members["config.json"])
    conv = next(c for c in config["config"]["layers"] if c["config"]["name"] == "conv")
    conv["config"]["activation"] = {"class_name": "__lambda__",
                                    "config": {"value": ["4wEAAAAAAAAA", None, None]}}
    path = tmp_path / "activation.keras"
    path.write_bytes(zip_members({**members, "config.json": json.dumps(config).encode()}))
    assert "__lambda__" in refused(path, marker)


# --------------------------------------------------------------------------- b. legacy .h5


def test_legacy_h5_custom_module_is_refused(tmp_path: Path, marker: Path) -> None:
    import h5py

    path = tmp_path / "custom.h5"
    tiny().save(path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        config["config"]["layers"][1].update({"class_name": "system", "module": "os"})
        f.attrs["model_config"] = json.dumps(config)
    assert "system (module os)" in refused(path, marker)


# --------------------------------------------------------------------------- c. pickles


class Payload:
    def __init__(self, marker: Path) -> None:
        self.command = f"touch {shlex.quote(str(marker))}"

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


@pytest.mark.parametrize("name", ["model.pkl", "model.keras", "model.h5", "model.hdf5",
                                  "model.pickle"])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_is_refused(tmp_path: Path, marker: Path, name: str, protocol: int) -> None:
    path = tmp_path / name
    path.write_bytes(pickle.dumps(Payload(marker), protocol=protocol))
    assert "pickle files are refused" in refused(path, marker)


def test_pickle_without_magic_and_zipped_pickle_are_refused(tmp_path: Path,
                                                           marker: Path) -> None:
    data = pickle.dumps(Payload(marker), protocol=0)  # ASCII: no \x80 magic
    for name in ("p0.keras", "p0.h5"):
        (tmp_path / name).write_bytes(data)
        refused(tmp_path / name, marker)
    # a PyTorch-style zip holding a pickle, named .keras
    zipped = tmp_path / "torch.keras"
    zipped.write_bytes(zip_members({"archive/data.pkl": data, "archive/version": b"3"}))
    assert "no config.json" in refused(zipped, marker)
    # control: the payload is live
    pickle.loads(data)  # noqa: S301
    assert marker.exists()


# --------------------------------------------------------------------------- d. custom classes


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        ({"module": "os", "class_name": "system", "registered_name": "system"}, "top"),
        ({"module": "os", "class_name": "system", "registered_name": "system"}, "layer"),
        ({"module": "builtins", "class_name": "function", "config": "eval",
          "registered_name": "function"}, "activation"),
        ({"module": "subprocess", "class_name": "Popen", "registered_name": None}, "layer"),
        ({"module": "keras_evil.layers", "class_name": "Dense", "registered_name": None},
         "layer"),
    ],
    ids=["os.system-top", "os.system-layer", "builtins.eval", "subprocess.Popen",
         "keras-lookalike"],
)
def test_non_keras_class_is_refused(tmp_path: Path, marker: Path, entry: dict,
                                    where: str) -> None:
    members = keras_members(tiny(), tmp_path)
    config = json.loads(members["config.json"])
    command = {"command": f"touch {marker}", "args": [f"touch {marker}"]}
    if where == "top":
        config = {**entry, "config": command}
    elif where == "layer":
        layer = next(c for c in config["config"]["layers"] if c["config"]["name"] == "conv")
        layer.update(entry)
        layer["config"] = {**layer["config"], **command}
    else:
        layer = next(c for c in config["config"]["layers"] if c["config"]["name"] == "conv")
        layer["config"]["activation"] = entry
    path = tmp_path / f"hostile_{where}.keras"
    path.write_bytes(zip_members({**members, "config.json": json.dumps(config).encode()}))
    message = refused(path, marker)
    assert re.search(rf"refused: model config contains .*\(module {entry['module']}\)", message)
    assert "Accepted: models built from standard Keras layers" in message


def test_non_modelling_keras_api_is_refused(tmp_path: Path, marker: Path) -> None:
    """A keras.* name that is not a layer (here keras.utils.get_file, a download)."""
    members = keras_members(tiny(), tmp_path)
    config = json.loads(members["config.json"])
    layer = next(c for c in config["config"]["layers"] if c["config"]["name"] == "conv")
    layer["config"]["activation"] = {"module": "keras.utils", "class_name": "function",
                                     "config": "get_file", "registered_name": "function"}
    path = tmp_path / "get_file.keras"
    path.write_bytes(zip_members({**members, "config.json": json.dumps(config).encode()}))
    refused(path, marker)


def test_nested_compile_config_is_checked(tmp_path: Path, marker: Path) -> None:
    """Only the top-level compile_config is skipped (Keras drops it with compile=False)."""
    members = keras_members(tiny(), tmp_path)
    config = json.loads(members["config.json"])
    layer = next(c for c in config["config"]["layers"] if c["config"]["name"] == "conv")
    layer["compile_config"] = {"loss": {"module": "os", "class_name": "system",
                                        "config": {"command": f"touch {marker}"}}}
    path = tmp_path / "nested_compile.keras"
    path.write_bytes(zip_members({**members, "config.json": json.dumps(config).encode()}))
    assert "system (module os)" in refused(path, marker)


def test_trained_model_with_custom_loss_loads(tmp_path: Path) -> None:
    """A custom loss lands in the top-level compile_config as a builtins function: fine."""

    def dice_loss(y_true, y_pred):  # noqa: ANN001, ANN202
        return 1.0 - keras.ops.mean(y_true * y_pred)

    model = tiny()
    model.compile(optimizer="adam", loss=dice_loss)
    path = tmp_path / "trained.keras"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        assert '"module": "builtins"' in zf.read("config.json").decode()
    assert load_model(path).card.inferred


def test_clean_model_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "clean.keras"
    tiny().save(path)
    loaded = load_model(path)
    assert tuple(loaded.model(np.zeros((1, 4, 4, 1), np.float32)).shape) == (1, 4, 4, 1)
    legacy = tmp_path / "clean.h5"
    tiny().save(legacy)
    assert load_model(legacy).card.inferred


# --------------------------------------------------------------------------- e. wrong shapes


def _two_inputs() -> object:
    a, b = keras.Input((None, None, 1)), keras.Input((None, None, 1))
    return keras.Model([a, b], keras.layers.Conv2D(1, 1)(keras.layers.Add()([a, b])))


def _two_outputs() -> object:
    inp = keras.Input((None, None, 1))
    return keras.Model(inp, [keras.layers.Conv2D(1, 1)(inp), keras.layers.Conv2D(1, 1)(inp)])


def _too_many_channels() -> object:
    inp = keras.Input((None, None, 100))
    return keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(inp))


def _shrinking_output() -> object:
    inp = keras.Input((32, 32, 3))
    return keras.Model(inp, keras.layers.Conv2D(3, 3, strides=2, padding="same",
                                                activation="softmax")(inp))


def _dict_output() -> object:
    inp = keras.Input((None, None, 1))
    return keras.Model(inp, {"mask": keras.layers.Conv2D(1, 1)(inp)})


def _classifier() -> object:
    inp = keras.Input((32, 32, 1))
    return keras.Model(inp, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(inp)))


def _unbuilt_sequential() -> object:
    return keras.Sequential([keras.layers.Conv2D(1, 1)])


def _huge_fixed_input() -> object:
    inp = keras.Input((100_000, 100_000, 1))
    return keras.Model(inp, keras.layers.Conv2D(1, 1)(inp))


def _huge_stride() -> object:
    inp = keras.Input((None, None, 1))
    x = keras.layers.UpSampling2D(4096)(keras.layers.MaxPooling2D(4096)(inp))
    return keras.Model(inp, keras.layers.Conv2D(1, 1)(x))


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (_two_inputs, r"model has 2 inputs; accepted: one image input \(N, H, W, C\)"),
        (_two_outputs, r"model has 2 outputs; accepted: one image input .* one output "
                       r"\(N, H, W, K\)"),
        (_too_many_channels, r"has 100 channels; accepted: 1 to 64 channels"),
        (_shrinking_output, r"output is 16x16 for a 32x32 input; accepted: an output of the "
                            r"input's height and width"),
        (_dict_output, r"dict of outputs \(mask\); accepted: one image input"),
        (_classifier, r"output has shape \(None, 1\); accepted: one map \(N, H, W, 1\) or K "
                      r"class maps"),
        (_unbuilt_sequential, r"no defined inputs or outputs.*accepted: one image input"),
        (_huge_fixed_input, r"input_size = \[100000, 100000\] is invalid \(accepted: .*4096"),
        (_huge_stride, r"multiple_of = 4096 is invalid \(accepted: an integer 1\.\.1024\)"),
    ],
    ids=["two-inputs", "two-outputs", "100-channels", "shrinking-output", "dict-output",
         "classifier",
         "unbuilt-sequential", "huge-input", "huge-stride"],
)
def test_unsupported_model_says_what_is_accepted(tmp_path: Path, marker: Path, build,  # noqa: ANN001
                                                 expected: str) -> None:
    import warnings

    path = tmp_path / f"{build.__name__.strip('_')}.keras"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "saving a model that has not yet been built"
        build().save(path)
    message = refused(path, marker, ModelSpecError)
    assert re.search(expected, message), message

