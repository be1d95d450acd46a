"""Inference backends: ONNX Runtime export, its cache and its agreement with TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unet_core.backends import (
    BACKENDS,
    OnnxBackend,
    TensorFlowBackend,
    cache_dir,
    check_backend,
    make_backend,
    model_key,
)
from unet_core.errors import UnetCoreError
from unet_core.inference import Segmenter
from unet_core.model import ModelCard, build_unet, from_keras, load_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def loaded(tiny_model_path):
    return load_model(tiny_model_path)


def test_auto_picks_onnxruntime_for_a_model_file(loaded):
    seg = Segmenter(loaded)
    assert seg.backend.name == "onnxruntime"
    assert seg.backend.max_abs_diff < 1e-5
    assert "max |ONNX - Keras|" in seg.backend.note


@pytest.mark.parametrize("tta", [False, True])
def test_onnx_and_tensorflow_agree_on_odd_sizes(loaded, tta):
    onnx = Segmenter(loaded, backend="onnxruntime", tta=tta)
    tf = Segmenter(loaded, backend="tensorflow", tta=tta)
    assert isinstance(onnx.backend, OnnxBackend) and isinstance(tf.backend, TensorFlowBackend)
    rng = np.random.default_rng(5)
    imgs = [rng.random(s, dtype=np.float32) for s in [(101, 101), (37, 50), (1, 9), (64, 64)]]
    for a, b in zip(onnx.predict_batch(imgs), tf.predict_batch(imgs), strict=True):
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_export_is_cached_and_keyed_by_file_content(tmp_path, loaded):
    folder = tmp_path / "cache"
    first = OnnxBackend(loaded, folder)
    assert not first.info["cached"] and first.path.parent == folder
    second = OnnxBackend(loaded, folder)
    assert second.info["cached"] and second.path == first.path
    meta = json.loads(first.path.with_suffix(".json").read_text())
    assert meta["max_abs_diff"] == pytest.approx(first.max_abs_diff)
    # Same architecture, other weights, same file name: a new export, not the stale one.
    import keras

    keras.utils.set_random_seed(99)
    other = tmp_path / "tiny.keras"
    build_unet(base_filters=4, depth=2, dropout=0.0, name="tiny").save(other)
    ModelCard(name="tiny", multiple_of=4, min_size=32).save(other.with_suffix(".json"))
    changed = load_model(other)
    assert model_key(changed) != model_key(loaded)
    third = OnnxBackend(changed, folder)
    assert third.path != first.path and not third.info["cached"]
    x = np.random.default_rng(0).random((1, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(third(x), TensorFlowBackend(changed)(x), atol=1e-5)


def test_damaged_cache_entries_are_rebuilt(tmp_path, loaded):
    folder = tmp_path / "cache"
    first = OnnxBackend(loaded, folder)
    first.path.write_bytes(b"not an onnx file")
    again = OnnxBackend(loaded, folder)
    assert not again.info["cached"]
    first.path.with_suffix(".json").write_text("{broken")
    assert not OnnxBackend(loaded, folder).info["cached"]


def test_in_memory_models_use_tensorflow_by_default():
    model = build_unet(base_filters=4, depth=2, dropout=0.0)
    seg = Segmenter(from_keras(model, ModelCard(multiple_of=4, min_size=32)))
    assert seg.backend.name == "tensorflow" and "in-memory" in seg.backend.note


def test_unwritable_cache_falls_back_or_says_why(loaded, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("UNET_CACHE_DIR", str(blocker))  # a file: the cache cannot be made
    assert cache_dir() == blocker / "onnx"
    fallback = make_backend(loaded, "auto")
    assert fallback.name == "tensorflow" and fallback.note
    with pytest.raises(UnetCoreError, match="UNET_CACHE_DIR"):
        make_backend(loaded, "onnxruntime")


def test_backend_names_and_env(loaded, monkeypatch):
    assert BACKENDS == ("auto", "onnxruntime", "tensorflow", "onnxruntime-int8")
    with pytest.raises(UnetCoreError,
                       match="accepted: auto, onnxruntime, tensorflow, onnxruntime-int8"):
        check_backend("torch")
    monkeypatch.setenv("UNET_BACKEND", "tensorflow")
    assert make_backend(loaded).name == "tensorflow"
    monkeypatch.setenv("UNET_BACKEND", "cuda")
    with pytest.raises(UnetCoreError, match="unknown backend 'cuda'"):
        make_backend(loaded)


def test_logits_models_get_a_sigmoid_in_both_backends(tmp_path):
    import keras

    keras.utils.set_random_seed(3)
    path = tmp_path / "logits.keras"
    inp = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    keras.Model(inp, keras.layers.Conv2D(1, 1)(x), name="logits").save(path)  # no sigmoid
    ModelCard(name="logits", multiple_of=4, min_size=32, output="logits").save(
        path.with_suffix(".json"))
    lm = load_model(path)
    x = np.random.default_rng(1).random((1, 32, 32, 1), dtype=np.float32)
    a, b = make_backend(lm, "onnxruntime")(x), make_backend(lm, "tensorflow")(x)
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_cli_backend_option(tiny_model_path, seismic_pairs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = {}
    for backend in ("tensorflow", "onnxruntime"):
        r = subprocess.run([sys.executable, "-m", "unet_core", "evaluate", "--model",
                            str(tiny_model_path), "--data", str(seismic_pairs), "--json",
                            "--backend", backend], capture_output=True, text=True, cwd=ROOT,
                           env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        out[backend] = json.loads(r.stdout)
        assert out[backend]["backend"] == backend
    assert out["tensorflow"]["iou"] == pytest.approx(out["onnxruntime"]["iou"], abs=1e-4)
    r = subprocess.run([sys.executable, "-m", "unet_core", "evaluate", "--model",
                        str(tiny_model_path), "--data", str(seismic_pairs), "--backend", "gpu"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 2 and "invalid choice: 'gpu'" in r.stderr


@pytest.mark.parametrize(("value", "arena"), [(None, True), ("1", True), ("0", False)])
def test_memory_arena_follows_env(loaded, monkeypatch, value, arena):
    """UNET_ORT_ARENA=0 (the dashboard's setting) runs sessions without a memory arena."""
    import onnxruntime as ort

    from unet_core import backends

    seen: list[bool] = []
    original = ort.InferenceSession

    def recording(path, sess_options=None, **kwargs):
        seen.append(sess_options.enable_cpu_mem_arena)
        return original(path, sess_options=sess_options, **kwargs)

    if value is None:
        monkeypatch.delenv("UNET_ORT_ARENA", raising=False)
    else:
        monkeypatch.setenv("UNET_ORT_ARENA", value)
    monkeypatch.setattr(ort, "InferenceSession", recording)
    path, _ = backends.export_onnx(loaded)  # may open a session to check the export
    seen.clear()
    backends._session(path)
    assert seen == [arena]
