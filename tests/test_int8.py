"""The ``onnxruntime-int8`` backend: calibration, quantisation, the IoU guard and its cache.

Two small Keras models with fixed weights stand in for trained ones (a random tiny U-Net
predicts about 0.5 everywhere, where any rounding flips the mask):

* ``blur``: a 3x3 blur then ``sigmoid(12 * (blur - 0.5))``: bright blobs on a dark background
  segment cleanly, and int8 changes only a few edge pixels;
* ``cancel``: two channels ``1001 x`` and ``1000 x`` (range about 0..1000) whose difference
  ``x`` decides the mask: 8-bit steps of about 4 wipe it out, so the guard must refuse it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unet_core import quantize
from unet_core.backends import OnnxBackend, OnnxInt8Backend, make_backend
from unet_core.errors import UnetCoreError
from unet_core.metrics import threshold_mask
from unet_core.model import ModelCard, load_model


def blobs(rng: np.random.Generator, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 (size, size) image of 1-3 bright discs on a dark noisy background and its bool
    mask."""
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.integers(8, size - 8, 2)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= int(rng.integers(5, 10)) ** 2
    img = np.where(mask, 0.8, 0.2) + rng.normal(0, 0.04, mask.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), mask


def write_set(root: Path, n: int, seed: int, masks: bool = True) -> Path:
    """n generated pairs as root/images/NAME.png (+ root/masks/NAME.png)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    if masks:
        (root / "masks").mkdir()
    for i in range(n):
        img, mask = blobs(rng)
        name = f"b{seed}_{i:03d}.png"
        Image.fromarray(img).save(root / "images" / name)
        if masks:
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / name)
    return root


def save_model(folder: Path, name: str, layers: list, weights: list[list[np.ndarray]]) -> Path:
    """A Keras model of ``layers`` with fixed ``weights`` and a card (no TTA, threshold 0.5)."""
    import keras

    x = inp = keras.Input((None, None, 1))
    for layer, w in zip(layers, weights, strict=True):
        x = layer(x)
        layer.set_weights(w)
    path = folder / f"{name}.keras"
    keras.Model(inp, x, name=name).save(path)
    ModelCard(name=name, domain="test", multiple_of=1, min_size=32, threshold=0.5,
              description=f"fixed-weight {name} test model").save(path.with_suffix(".json"))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    import keras

    folder = tmp_path_factory.mktemp("int8_models")
    blur = np.full((3, 3, 1, 1), 1 / 9, np.float32)
    c1 = np.concatenate([blur * s for s in (1.0, 0.5, 2.0, 1.0)], axis=3)
    head = np.array([4.0, 4.0, 2.0, 2.0], np.float32).reshape(1, 1, 4, 1)
    L = keras.layers
    out = {"blur": save_model(folder, "blur", [
        L.Conv2D(4, 3, padding="same", activation="relu"), L.Conv2D(1, 1, activation="sigmoid")],
        [[c1, np.zeros(4, np.float32)], [head, np.array([-6.0], np.float32)]])}
    out["cancel"] = save_model(folder, "cancel", [
        L.Conv2D(2, 1), L.Conv2D(2, 1), L.Conv2D(1, 1, activation="sigmoid")],
        [[np.array([1001.0, 1000.0], np.float32).reshape(1, 1, 1, 2), np.zeros(2, np.float32)],
         [np.eye(2, dtype=np.float32).reshape(1, 1, 2, 2), np.zeros(2, np.float32)],
         [np.array([20.0, -20.0], np.float32).reshape(1, 1, 2, 1),
          np.array([-10.0], np.float32)]])
    return out


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    return write_set(tmp_path_factory.mktemp("int8_calib"), 24, seed=1)


@pytest.fixture(scope="module")
def held(tmp_path_factory) -> Path:
    return write_set(tmp_path_factory.mktemp("int8_held"), 6, seed=2)


@pytest.fixture()
def counted(monkeypatch) -> list[Path]:
    """Calls of the quantiser (their output paths)."""
    calls: list[Path] = []
    real = quantize.quantise_static_int8

    def spy(fp32_path: Path, out: Path, feeds):  # noqa: ANN001
        calls.append(out)
        return real(fp32_path, out, feeds)

    monkeypatch.setattr(quantize, "quantise_static_int8", spy)
    monkeypatch.delenv(quantize.CALIBRATION_ENV, raising=False)
    return calls


def test_int8_builds_caches_and_stays_close_to_fp32(models, calib, held, counted, tmp_path):
    loaded = load_model(models["blur"])
    b = OnnxInt8Backend(loaded, calib, folder=tmp_path)
    assert len(counted) == 1 and b.name == "onnxruntime-int8"
    info = b.info
    assert info["verdict"] == "accepted" and info["cached"] is False
    assert info["n"] == 24 and info["reference"] == "masks"
    assert info["iou_fp32"] > 0.9  # the blur model does segment the blobs
    assert abs(info["delta"]) <= quantize.MAX_IOU_DELTA
    assert abs(info["iou_int8"] - info["iou_fp32"] - info["delta"]) < 1e-12
    assert info["versions"]["onnxruntime"] and info["calibration"]["n"] == 24
    key_files = sorted(p.name for p in tmp_path.iterdir())
    assert len(key_files) == 2 and key_files[0].endswith("_int8.json") \
        and key_files[1].endswith("_int8.onnx")  # nothing half-written left behind
    assert json.loads((tmp_path / key_files[0]).read_text())["iou_int8"] == info["iou_int8"]

    again = OnnxInt8Backend(loaded, calib, folder=tmp_path)
    assert len(counted) == 1 and again.info["cached"] is True  # no second quantisation
    assert "reused from cache" in again.note

    # other calibration images -> another fingerprint -> another entry
    other = write_set(tmp_path / "other", 8, seed=5)
    OnnxInt8Backend(loaded, other, folder=tmp_path)
    assert len(counted) == 2

    # held-out images: int8 probabilities close to fp32, masks nearly identical
    fp32 = OnnxBackend(loaded)
    x = np.stack([np.asarray(Image.open(p), np.float32)[..., None] / 255
                  for p in sorted((held / "images").iterdir())])
    y8, y32 = b(x), fp32(x)
    assert y8.shape == y32.shape == (6, 48, 48, 1) and y8.dtype == np.float32
    assert float(np.abs(y8 - y32).mean()) < 0.01
    m8, m32 = threshold_mask(y8, 0.5), threshold_mask(y32, 0.5)
    assert (m8 & m32).sum() / (m8 | m32).sum() > 0.98


def test_guard_refuses_pathological_model_and_remembers(models, calib, counted, tmp_path):
    loaded = load_model(models["cancel"])
    with pytest.raises(UnetCoreError) as err:
        OnnxInt8Backend(loaded, calib, folder=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "int8 refused" in msg and "0.005" in msg and "fp32" in msg
    assert len(counted) == 1
    (meta,) = tmp_path.glob("*_int8.json")
    rec = json.loads(meta.read_text())
    assert rec["verdict"] == "refused" and rec["n"] == 24 and rec["limit"] == 0.005
    assert abs(rec["delta"]) > 0.005 and rec["iou_fp32"] > rec["iou_int8"]
    assert f"{rec['iou_int8']:.4f}" in msg and f"{rec['iou_fp32']:.4f}" in msg
    assert not list(tmp_path.glob("*_int8.onnx"))  # a refused graph is not kept

    with pytest.raises(UnetCoreError, match="int8 refused.*recorded"):
        OnnxInt8Backend(loaded, calib, folder=tmp_path)
    assert len(counted) == 1  # remembered: no second quantisation


def test_guard_without_masks_compares_with_fp32(models, tmp_path, counted):
    plain = write_set(tmp_path / "plain", 10, seed=3, masks=False)
    b = OnnxInt8Backend(load_model(models["blur"]), plain / "images", folder=tmp_path / "c")
    assert b.info["reference"] == "fp32 masks" and b.info["iou_fp32"] == 1.0
    assert b.info["n"] == 10 and 0.995 <= b.info["iou_int8"] <= 1.0


def test_no_calibration_data_is_a_one_line_refusal(models, monkeypatch, tmp_path):
    monkeypatch.delenv(quantize.CALIBRATION_ENV, raising=False)
    loaded = load_model(models["blur"])  # no blur.split.json next to it
    with pytest.raises(UnetCoreError) as err:
        make_backend(loaded, "onnxruntime-int8")
    msg = str(err.value)
    assert "\n" not in msg and "no int8 calibration data" in msg
    assert "--int8-calibration DIR" in msg and quantize.CALIBRATION_ENV in msg
    with pytest.raises(UnetCoreError, match="no such folder"):
        quantize.calibration_set(loaded, tmp_path / "missing")


def test_calibration_from_validation_split(tmp_path, monkeypatch, models):
    """NAME.split.json's validation names, images found under the card's training.data
    (relative to the model's folder), at most ``limit`` evenly spaced; the env wins."""
    data = write_set(tmp_path / "data", 12, seed=4)
    names = sorted(p.name for p in (data / "images").iterdir())
    folder = tmp_path / "models"
    folder.mkdir()
    model = folder / "m.keras"
    model.write_bytes(models["blur"].read_bytes())
    card = json.loads(models["blur"].with_suffix(".json").read_text())
    card["training"] = {"data": "../data"}
    model.with_suffix(".json").write_text(json.dumps(card))
    model.with_suffix(".split.json").write_text(json.dumps(
        {"train": names[:4], "val": names[4:10], "test": names[10:]}))
    monkeypatch.delenv(quantize.CALIBRATION_ENV, raising=False)
    loaded = load_model(model)
    s = quantize.calibration_set(loaded, limit=3)
    assert [p.name for p in s.images] == [names[4], names[6], names[8]]
    assert s.masks is not None and [p.name for p in s.masks] == [p.name for p in s.images]
    assert "m.split.json" in s.source and "3 images with masks" in s.source
    assert quantize.calibration_set(loaded, limit=3).fingerprint == s.fingerprint
    monkeypatch.setenv(quantize.CALIBRATION_ENV, str(data / "images"))
    env = quantize.calibration_set(loaded)
    assert env.n == 12 and env.masks is None and env.fingerprint != s.fingerprint


def test_auto_never_picks_int8(tiny_model_path, monkeypatch, tmp_path):
    write_set(tmp_path / "c", 2, seed=6)
    monkeypatch.setenv(quantize.CALIBRATION_ENV, str(tmp_path / "c"))
    loaded = load_model(tiny_model_path)
    assert make_backend(loaded, "auto").name == "onnxruntime"
    monkeypatch.delenv("UNET_BACKEND", raising=False)
    assert make_backend(loaded).name == "onnxruntime"


def test_cli_predict_with_int8_backend(models, calib, held, tmp_path, capsys, monkeypatch):
    from unet_core.cli import main

    monkeypatch.delenv(quantize.CALIBRATION_ENV, raising=False)
    out = tmp_path / "out"
    rc = main(["predict", "--model", str(models["blur"]), "--backend", "onnxruntime-int8",
               "--int8-calibration", str(calib), str(held / "images"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "backend onnxruntime-int8" in err and "calibration images" in err
    names = sorted(p.stem for p in (held / "images").iterdir())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}_mask.png" for n in names] + [f"{n}_prob.npy" for n in names])
    b = make_backend(load_model(models["blur"]), "onnxruntime-int8", calibration=calib)
    for n in names:
        img = np.asarray(Image.open(held / "images" / f"{n}.png"), np.float32) / 255
        prob = np.load(out / f"{n}_prob.npy")
        expect = b(img[None, ..., None])[0, ..., 0]
        np.testing.assert_allclose(prob, expect, atol=1e-6)
        mask = np.asarray(Image.open(out / f"{n}_mask.png")) > 0
        assert (mask == (prob > 0.5)).all()
    rc = main(["evaluate", "--model", str(models["blur"]), "--backend", "onnxruntime-int8",
               "--int8-calibration", str(calib), "--data", str(held), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["backend"] == "onnxruntime-int8" and res["iou"] > 0.9


def test_user_onnx_graph_is_quantised_and_checked(onnx_models, calib, counted, tmp_path):
    """A user's NCHW .onnx graph goes through the same recipe in its own layout; the record
    is written whatever the verdict (a random graph's maps sit near 0.5, so it may refuse)."""
    loaded = load_model(onnx_models / "nchw_gray.onnx")
    try:
        b = OnnxInt8Backend(loaded, calib, folder=tmp_path)
    except UnetCoreError as exc:
        assert "int8 refused" in str(exc) and "\n" not in str(exc)
        b = None
    assert len(counted) == 1
    (meta,) = tmp_path.glob("*_int8.json")
    rec = json.loads(meta.read_text())
    assert rec["n"] == 24 and rec["verdict"] in ("accepted", "refused")
    if b is not None:
        x = np.random.default_rng(0).random((2, 48, 48, 1), dtype=np.float32)
        y = b(x)
        assert y.shape == (2, 48, 48, 1) and ((y >= 0) & (y <= 1)).all()


def test_predict_files_batches_in_order_with_errors(tiny_model_path, tmp_path):
    """The predict command's loop: files decoded ahead and batched give, in input order, the
    values of predict_classes one image at a time, and a broken file its own error."""
    from unet_core.inference import Segmenter, predict_files
    from unet_core.io import read_raw

    rng = np.random.default_rng(7)
    paths = []
    for i, size in enumerate([(40, 40), (40, 40), (33, 50), (40, 40), (40, 40), (64, 32)]):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(p)
        paths.append(p)
    bad = tmp_path / "im3.png"
    bad.write_bytes(b"not a png")
    seg = Segmenter(load_model(tiny_model_path), backend="onnxruntime", batch_size=2)
    got = list(predict_files(seg, paths, prefetch=3))
    assert [p for p, _ in got] == paths
    assert isinstance(got[3][1], UnetCoreError) and "im3.png" in str(got[3][1])
    for p, probs in got:
        if p != bad:
            assert np.array_equal(probs, seg.predict_classes(read_raw(p)))
