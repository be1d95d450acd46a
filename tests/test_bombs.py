"""Tiny files that DECLARE huge models, archives or inputs: each is refused with one line
before anything is allocated, and good models still load.

Nothing here builds a bomb in this process: the checks that refuse them run before Keras,
and the one end-to-end try goes through :func:`unet_core.sandbox.vet_model` (a child under a
memory limit), so a broken check kills a child, not the test run.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from unet_core import budget
from unet_core.errors import ModelLoadError, UnetCoreError
from unet_core.model import (
    MAX_CARD_SIDE,
    ModelCard,
    card_from_dict,
    check_keras_zip,
    check_legacy_h5,
    load_model,
)

keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")


def one_line(exc: pytest.ExceptionInfo, start: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    assert msg.startswith(start), msg
    return msg


def tiny() -> object:
    inp = keras.Input((None, None, 1), name="image")
    x = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="conv")(inp)
    return keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x))


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    path = tmp_path_factory.mktemp("clean") / "clean.keras"
    tiny().save(path)  # type: ignore[attr-defined]
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def write_zip(path: Path, files: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def with_layer(members: dict[str, bytes], layer: str, **changes: object) -> dict[str, bytes]:
    config = json.loads(members["config.json"])
    for entry in config["config"]["layers"]:
        if entry["name"] == layer:
            entry["config"].update(changes)
    return {**members, "config.json": json.dumps(config).encode()}


# ------------------------------------------------------------------------ parameter bombs
def test_conv_parameter_bomb_is_refused(members: dict[str, bytes], tmp_path: Path) -> None:
    path = write_zip(tmp_path / "big.keras", with_layer(members, "conv", filters=2_000_000_000))
    assert path.stat().st_size < 100_000
    with pytest.raises(ModelLoadError) as exc:
        check_keras_zip(path)
    msg = one_line(exc, "big.keras: refused: its config declares ")
    assert msg.endswith("parameters (limit 100,000,000, UNET_MAX_PARAMS)")


def test_dense_bomb_message(tmp_path: Path) -> None:
    inp = keras.Input((None, None, 4), name="image")
    model = keras.Model(inp, keras.layers.Dense(1, name="d")(inp))
    config = json.loads(model.to_json())
    for entry in config["config"]["layers"]:
        if entry["name"] == "d":
            entry["config"]["units"] = 1_000_000_000
    with pytest.raises(ModelLoadError) as exc:
        budget.check_config(config, "big.keras")
    assert str(exc.value) == ("big.keras: refused: its config declares 5,000,000,000 parameters "
                              "(limit 100,000,000, UNET_MAX_PARAMS)")


def test_limits_follow_the_environment(members: dict[str, bytes], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_zip(tmp_path / "m.keras", members)
    check_keras_zip(path)  # 23 parameters
    monkeypatch.setenv("UNET_MAX_PARAMS", "10")
    with pytest.raises(ModelLoadError, match=r"limit 10, UNET_MAX_PARAMS\)$"):
        check_keras_zip(path)
    monkeypatch.setenv("UNET_MAX_PARAMS", "1000")
    monkeypatch.setenv("UNET_MAX_LAYERS", "2")
    with pytest.raises(ModelLoadError, match=r"declares 3 layers \(limit 2, UNET_MAX_LAYERS\)$"):
        check_keras_zip(path)


def test_too_many_layers(members: dict[str, bytes], tmp_path: Path) -> None:
    config = json.loads(members["config.json"])
    layers = config["config"]["layers"]
    prev = "image"
    for i in range(2000):
        layers.append({"module": "keras.layers", "class_name": "Activation", "name": f"a{i}",
                       "config": {"name": f"a{i}", "activation": "relu"},
                       "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__", "config": {
                           "shape": [None, None, None, 1], "keras_history": [prev, 0, 0]}}],
                           "kwargs": {}}]})
        prev = f"a{i}"
    path = write_zip(tmp_path / "wide.keras",
                     {**members, "config.json": json.dumps(config).encode()}, zipfile.ZIP_DEFLATED)
    with pytest.raises(ModelLoadError) as exc:
        check_keras_zip(path)
    assert one_line(exc, "wide.keras: refused: its config declares 2,").endswith(
        "layers (limit 1,500, UNET_MAX_LAYERS)")


def test_estimate_matches_keras_for_a_unet() -> None:
    from unet_core.model import build_unet

    model = build_unet(base_filters=8, depth=3, input_channels=3, n_classes=4)
    est = budget.estimate_config(json.loads(model.to_json()))
    assert est.params == model.count_params()
    assert est.layers == len(model.layers)
    # activations: 86-layer 16-filter depth-4 U-Net at 128x128 is ~37 MiB; this one is smaller
    assert 5 * 2**20 < est.activation_bytes(128, 128) < 40 * 2**20


def legacy_h5(path: Path, declared: int, config: dict) -> Path:
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.15.0"
        g = f.create_group("model_weights").create_group("conv").create_group("conv")
        g.create_dataset("kernel:0", shape=(declared,), dtype="float32")  # never written
    return path


def test_legacy_h5_declaring_3g_weights(tmp_path: Path) -> None:
    config = json.loads(tiny().to_json())  # type: ignore[attr-defined]
    path = legacy_h5(tmp_path / "w3g.h5", 3_000_000_000, config)
    assert path.stat().st_size < 100_000
    with pytest.raises(ModelLoadError) as exc:
        check_legacy_h5(path)
    assert str(exc.value) == ("w3g.h5: refused: its weights declare 3,000,000,000 parameters "
                              "(limit 100,000,000, UNET_MAX_PARAMS)")


def test_architecture_json_bomb(tmp_path: Path) -> None:
    model = tiny()
    weights = tmp_path / "w.weights.h5"
    model.save_weights(weights)  # type: ignore[attr-defined]
    config = json.loads(model.to_json())  # type: ignore[attr-defined]
    config["config"]["layers"][1]["config"]["filters"] = 10**12
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as exc:
        load_model(arch, weights=weights)
    one_line(exc, "arch.json: refused: its config declares ")
    big = legacy_h5(tmp_path / "big_weights.h5", 500_000_000,
                    json.loads(model.to_json()))  # type: ignore[attr-defined]
    arch.write_text(model.to_json())  # type: ignore[attr-defined]
    with pytest.raises(ModelLoadError) as exc:
        load_model(arch, weights=big)
    one_line(exc, "big_weights.h5: refused: it declares 500,000,000 weights")


def test_bomb_through_the_sandbox(members: dict[str, bytes], tmp_path: Path) -> None:
    from unet_core.sandbox import vet_model

    path = write_zip(tmp_path / "big.keras", with_layer(members, "conv", filters=2_000_000_000))
    with pytest.raises(ModelLoadError) as exc:
        vet_model(path, memory_mb=2500, timeout_s=120)
    one_line(exc, "big.keras: refused: its config declares ")


# ------------------------------------------------------------------------ archive / disk bombs
def test_too_many_members(members: dict[str, bytes], tmp_path: Path) -> None:
    extra = {f"junk/{i}.bin": b"x" for i in range(100)}
    path = write_zip(tmp_path / "many.keras", {**members, **extra})
    with pytest.raises(ModelLoadError) as exc:
        check_keras_zip(path)
    assert str(exc.value).startswith("many.keras: refused: the archive holds 103 members")


def test_unpacked_size_limit(members: dict[str, bytes], tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNET_MAX_MODEL_UNPACKED_MB", "1")
    rng = np.random.default_rng(0)
    path = write_zip(tmp_path / "fat.keras",
                     {**members, "pad.bin": rng.bytes(1_200_000)})
    with pytest.raises(ModelLoadError) as exc:
        check_keras_zip(path)
    assert str(exc.value) == ("fat.keras: refused: the archive unpacks to 1 MB (limit 1 MB, "
                              "UNET_MAX_MODEL_UNPACKED_MB)")


def test_compression_ratio_of_small_members(members: dict[str, bytes], tmp_path: Path) -> None:
    path = write_zip(tmp_path / "ratio.keras", {**members, "z.bin": bytes(500_000)},
                     zipfile.ZIP_DEFLATED)
    with pytest.raises(ModelLoadError) as exc:
        check_keras_zip(path)
    one_line(exc, "ratio.keras: refused: archive member 'z.bin' has compression ratio")


def test_crc_of_every_member(members: dict[str, bytes], tmp_path: Path) -> None:
    data = {**members, "a.bin": b"A" * 1000, "b.bin": b"B" * 1000}
    raw = bytearray(io.BytesIO(write_zip(tmp_path / "x.keras", data).read_bytes()).getvalue())
    at = raw.find(b"B" * 1000)
    raw[at + 10] = ord("C")
    path = tmp_path / "crc.keras"
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelLoadError) as exc:
        check_keras_zip(path)
    assert str(exc.value).startswith("crc.keras: refused: archive member 'b.bin' is damaged")


def test_keras_unpacks_into_a_private_folder_that_is_removed(
        members: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    # more than three members: Keras extracts the archive to a temporary folder
    path = write_zip(tmp_path / "four.keras", {**members, "assets/readme.txt": b"hello"})
    loaded = load_model(path)
    assert loaded.model.count_params() == 23
    assert list(tmp.iterdir()) == []
    # a member Keras cannot use: it fails after unpacking, the folder still goes
    bad = write_zip(tmp_path / "bad.keras", {**members, "model.weights.h5": b"not hdf5"})
    with pytest.raises(ModelLoadError):
        load_model(bad)
    assert list(tmp.iterdir()) == []


# ------------------------------------------------------------------------ cards and inputs
def test_card_sides_are_bounded() -> None:
    assert MAX_CARD_SIDE == 4096
    with pytest.raises(ModelLoadError) as exc:
        card_from_dict({"min_size": 8192}, "big.json")
    one_line(exc, "big.json: model card field min_size = 8192 is invalid")
    with pytest.raises(ModelLoadError):
        card_from_dict({"input_size": [16384, 16384]}, "big.json")
    card_from_dict({"min_size": 4096}, "ok.json")


def test_good_models_still_load(tiny_model_path: Path) -> None:
    loaded = load_model(tiny_model_path)
    assert isinstance(loaded.card, ModelCard)
    with pytest.raises(UnetCoreError):
        budget.check_forward(budget.model_estimate(loaded.model), 200_000, 200_000, "x")
    budget.check_forward(budget.model_estimate(loaded.model), 512, 512, "x")


# ------------------------------------------------------------------------ inference bounds
def fixed_model(side: int, nan: bool = False) -> object:
    from unet_core.model import build_unet, from_keras

    model = build_unet(base_filters=2, depth=1, dropout=0.0, input_size=(side, side))
    if nan:
        model.set_weights([np.full(w.shape, np.nan, np.float32) for w in model.get_weights()])
    return from_keras(model, name=f"fixed{side}")


def test_tiny_fixed_input_is_refused() -> None:
    from unet_core.inference import Segmenter

    with pytest.raises(UnetCoreError) as exc:
        Segmenter(fixed_model(8), fit="pad", backend="tensorflow")
    one_line(exc, "fixed8: refused: the network's fixed input is 8x8 pixels; accepted: at least")


def test_too_many_tiles_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from unet_core.inference import Segmenter

    s = Segmenter(fixed_model(16), fit="pad", backend="tensorflow", tile_overlap=32)
    monkeypatch.setenv("UNET_MAX_TILES", "50")
    with pytest.raises(UnetCoreError) as exc:
        s.predict_proba(np.zeros((200, 200), np.float32))
    # the overlap is capped to a quarter of the tile (4 px): 17 x 17 tiles
    assert str(exc.value) == ("fixed16: refused: a 200x200 image needs 289 tiles of 16x16 "
                              "(limit 50, UNET_MAX_TILES)")


def test_forward_memory_limit(tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unet_core.inference import Segmenter

    monkeypatch.setenv("UNET_MAX_FORWARD_MB", "8")
    loaded = load_model(tiny_model_path)
    whole = Segmenter(loaded, backend="tensorflow", max_network_pixels=None)
    with pytest.raises(UnetCoreError) as exc:
        whole.predict_proba(np.zeros((600, 600), np.float32))
    msg = one_line(exc, "tiny.keras: refused: a forward pass at 600x600 needs about ")
    assert msg.endswith("MB of activations (limit 8 MB, UNET_MAX_FORWARD_MB)")
    tiled = Segmenter(loaded, backend="tensorflow")  # tiles shrink to fit the limit
    assert tiled.forward_pixels is not None and tiled.forward_pixels < 600 * 600
    prob = tiled.predict_proba(np.random.default_rng(0).random((600, 600), np.float32))
    assert prob.shape == (600, 600) and np.isfinite(prob).all()


def test_nan_weights_give_one_line() -> None:
    from unet_core.inference import Segmenter

    s = Segmenter(fixed_model(32, nan=True), backend="tensorflow")
    with pytest.raises(UnetCoreError) as exc:
        s.predict_proba(np.zeros((32, 32), np.float32))
    one_line(exc, "fixed32: the model's output holds NaN (its weights may be NaN)")


def test_runtime_errors_become_one_line(tiny_model_path: Path) -> None:
    from unet_core.inference import Segmenter

    s = Segmenter(load_model(tiny_model_path), backend="tensorflow")

    class Failing:
        name = "onnxruntime"

        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def __call__(self, x: np.ndarray) -> np.ndarray:
            raise self.exc

    s.backend = Failing(RuntimeError("[ONNXRuntimeError] : 6 : Failed to allocate 34 GB\n  at"))
    with pytest.raises(UnetCoreError) as exc:
        s.predict_proba(np.zeros((64, 64), np.float32))
    assert str(exc.value) == ("tiny.keras: ran out of memory predicting a 64x64 input; try a "
                              "smaller image")
    s.backend = Failing(ValueError("in user code:\n File \"/srv/x.py\", line 596"))
    with pytest.raises(UnetCoreError) as exc:
        s.predict_proba(np.zeros((64, 64), np.float32))
    assert str(exc.value) == ("tiny.keras: the model failed on a 64x64 input (ValueError in "
                              "the onnxruntime runtime; details in the server log)")


def test_check_sample_is_bounded(tiny_model_path: Path) -> None:
    from unet_core.backends import check_sample

    loaded = load_model(tiny_model_path)
    assert check_sample(loaded).shape == (2, 64, 64, 1)
    loaded.card.min_size = 8192  # a card that skipped check_card
    with pytest.raises(UnetCoreError, match=r"limit 4096 per side, UNET_MAX_INPUT_SIDE"):
        check_sample(loaded)


# ------------------------------------------------------------------------ introspection
@pytest.mark.parametrize("name", ["é ü 日本", "x" * 300, "a:b", "[a] (b)"])
def test_odd_layer_names(name: str) -> None:
    from unet_core.introspect import ActivationProbe, layer_table, model_flops

    inp = keras.Input((None, None, 1), name="image")
    x = keras.layers.Conv2D(2, 3, padding="same", use_bias=False, name=name)(inp)
    model = keras.Model(inp, keras.layers.Conv2D(1, 1, use_bias=False, name="mask")(x))
    assert [r.name for r in layer_table(model)][1] == name
    assert model_flops(model, 8, 8) == 8 * 8 * (2 * 9 * 2 + 2 * 2)
    maps = ActivationProbe(model).run(np.zeros((8, 8, 1), np.float32))
    assert maps[name].shape == (8, 8, 2)


def test_flops_of_a_huge_graph_come_from_the_config() -> None:
    from unet_core import introspect

    inp = keras.Input((None, None, 1), name="image")
    x = inp
    for i in range(introspect.MAX_PROFILED_LAYERS + 5):
        x = keras.layers.Activation("relu", name=f"r{i}")(x)
    model = keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same", use_bias=False)(x))
    assert introspect.model_flops(model, 10, 10) == 10 * 10 * 9 * 2


def test_tfsm_layer_is_named(members: dict[str, bytes], tmp_path: Path) -> None:
    config = json.loads(members["config.json"])
    config["config"]["layers"][1].update(class_name="TFSMLayer", module="keras.layers")
    path = write_zip(tmp_path / "tfsm.keras",
                     {**members, "config.json": json.dumps(config).encode()})
    with pytest.raises(ModelLoadError) as exc:
        check_keras_zip(path)
    msg = one_line(exc, "tfsm.keras: refused: model config contains TFSMLayer")
    assert "Lambda" not in msg


def test_keras2_functional_config_is_counted() -> None:
    def conv(name: str, filters: int, k: int, inbound: list) -> dict:
        return {"class_name": "Conv2D", "name": name, "inbound_nodes": [inbound],
                "config": {"name": name, "filters": filters, "kernel_size": [k, k],
                           "strides": [1, 1], "use_bias": True}}

    config = {"class_name": "Model", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "name": "in", "inbound_nodes": [],
         "config": {"batch_input_shape": [None, None, None, 3], "name": "in"}},
        conv("c1", 8, 3, [["in", 0, 0, {}]]),
        {"class_name": "Concatenate", "name": "cat", "config": {"axis": -1, "name": "cat"},
         "inbound_nodes": [[["c1", 0, 0, {}], ["in", 0, 0, {}]]]},
        conv("out", 1, 1, [["cat", 0, 0, {}]]),
    ]}}
    est = budget.estimate_config(config)
    assert est.params == (3 * 9 * 8 + 8) + (11 * 1 + 1)
    assert est.layers == 4


def test_deeply_nested_models_are_refused() -> None:
    inner: dict = {"class_name": "Conv2D", "config": {"filters": 1, "kernel_size": 1}}
    for _ in range(40):
        inner = {"class_name": "Sequential", "config": {"layers": [inner]}}
    with pytest.raises(ModelLoadError) as exc:
        budget.check_config(inner, "deep.keras")
    assert str(exc.value) == "deep.keras: refused: models nested more than 32 deep"


def test_resizing_to_a_huge_map_is_counted() -> None:
    inp = keras.Input((None, None, 1), name="image")
    x = keras.layers.Resizing(50_000, 50_000, name="big")(inp)
    x = keras.layers.MaxPooling2D(2)(x)
    model = keras.Model(inp, keras.layers.Conv2D(1, 1)(x))
    est = budget.model_estimate(model)
    assert est is not None
    # 50000^2 + 25000^2 (twice: the pooling and the conv) float32 maps, whatever the input
    assert est.activation_bytes(64, 64) == 4 * (64 * 64 + 50_000**2 + 2 * 25_000**2)
    with pytest.raises(UnetCoreError, match=r"^m: refused: a forward pass at 64x64 needs"):
        budget.check_forward(est, 64, 64, "m")


# ------------------------------------------------------------------------ through the CLI
def run_guarded(args: list[str], limit_mb: int = 2048, timeout: float = 120.0
                ) -> tuple[int | None, str, float]:
    """``python -m unet_core ARGS`` under an RSS watchdog: (exit code or None if killed,
    stderr, peak RSS in MB). A broken check kills the child, never this test run."""
    import os
    import subprocess
    import sys
    import time

    from unet_core.sandbox import _rss_kb

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "unet_core", *args], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    peak, t0 = 0.0, time.monotonic()
    while proc.poll() is None:
        peak = max(peak, _rss_kb(proc.pid) / 1024)
        if peak > limit_mb or time.monotonic() - t0 > timeout:
            proc.kill()
            proc.wait()
            return None, f"killed at {peak:.0f} MB after {time.monotonic() - t0:.0f} s", peak
        time.sleep(0.05)
    return proc.returncode, proc.stderr.read(), peak


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_cli_refuses_parameter_bombs_in_one_line(members: dict[str, bytes], tmp_path: Path,
                                                 kind: str) -> None:
    """The CLI on an 18 KB .keras declaring 2 G conv filters / a legacy .h5 declaring 3 G
    weights (each took 3.7-23 GB unguarded): exit 2, one error line, little memory."""
    if kind == "keras":
        path = write_zip(tmp_path / "big.keras",
                         with_layer(members, "conv", filters=2_000_000_000))
    else:
        path = legacy_h5(tmp_path / "big.h5", 3_000_000_000, json.loads(members["config.json"]))
    code, err, peak = run_guarded(["inspect", "--model", str(path)])
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err[-500:]
    assert len(lines) == 1 and "refused:" in lines[0] and "UNET_MAX_PARAMS" in lines[0], err[-500:]
    assert peak < 1500, f"the refusal took {peak:.0f} MB"
