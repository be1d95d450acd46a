"""ONNX models in the engine: cards read from the graph, predictions equal to plain ONNX Runtime
with the same preprocessing written here in numpy, fixed batches, float16, a Keras export, cards
that state or contradict the graph, and the safety checks on crafted files (one-line refusals).

The references below use onnxruntime directly (tests/onnx_zoo.ort_forward or a session made
here), never :mod:`unet_core`'s padding, resizing, tiling or output handling. Memory bombs run
only inside :func:`unet_core.sandbox.vet_model` (a child process under a memory limit) or are
refused before anything runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import OWN_CLASSES
from onnx import TensorProto, helper, numpy_helper
from onnx_zoo import nchw_unet, nhwc_wrap, ort_forward, save

from unet_core import budget
from unet_core.backends import make_backend
from unet_core.errors import ModelLoadError, ModelSpecError, UnetCoreError
from unet_core.inference import Segmenter
from unet_core.model import ModelCard, load_model
from unet_core.sandbox import vet_model


# -- independent references (numpy + plain onnxruntime) -------------------------------------------
def ref_pad(x: np.ndarray, m: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad (H, W, C) to multiples of ``m``, the larger half first -> (padded, (top,
    left))."""
    h, w = x.shape[:2]
    th, tw = -(-h // m) * m, -(-w // m) * m
    top, left = (th - h + 1) // 2, (tw - w + 1) // 2
    return np.pad(x, ((top, th - h - top), (left, tw - w - left), (0, 0)), "reflect"), (top, left)


def ref_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with half-pixel centres, no antialiasing (tf.image.resize bilinear):
    (H, W, C) -> (h, w, C) float64."""
    x = np.asarray(x, np.float64)

    def axis(n_in: int, n_out: int):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(pos).astype(int)
        return i0, np.minimum(i0 + 1, n_in - 1), pos - i0

    r0, r1, fr = axis(x.shape[0], size[0])
    c0, c1, fc = axis(x.shape[1], size[1])
    rows = x[r0] * (1 - fr)[:, None, None] + x[r1] * fr[:, None, None]
    return rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]


def ref_activate(y: np.ndarray, logits: bool) -> np.ndarray:
    """(..., K) logits -> probabilities: sigmoid for K = 1, softmax over K otherwise."""
    y = np.asarray(y, np.float64)
    if not logits:
        return y
    if y.shape[-1] == 1:
        return 1.0 / (1.0 + np.exp(-y))
    e = np.exp(y - y.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ref_net(path: Path, x: np.ndarray, nchw: bool, batch: int | None = None) -> np.ndarray:
    """Plain ONNX Runtime on one (H, W, C) network input -> raw (H, W, K); a fixed-batch graph
    gets the image followed by zero images."""
    b = x[None].astype(np.float32)
    if batch:
        b = np.concatenate([b, np.zeros((batch - 1, *x.shape), np.float32)])
    y = ort_forward(path, b.transpose(0, 3, 1, 2) if nchw else b)[0]
    return y.transpose(1, 2, 0) if nchw else y


def unit(image: np.ndarray) -> np.ndarray:
    """A uint8 image as (H, W, C) float64 / 255."""
    x = image.astype(np.float64) / 255.0
    return x[..., None] if x.ndim == 2 else x


def ref_pad_predict(path: Path, image: np.ndarray, nchw: bool, logits: bool, m: int = 4
                    ) -> np.ndarray:
    padded, (top, left) = ref_pad(unit(image), m)
    y = ref_activate(ref_net(path, padded, nchw), logits)
    h, w = image.shape[:2]
    return y[top:top + h, left:left + w]


def ref_resize_predict(path: Path, image: np.ndarray, size: tuple[int, int], nchw: bool,
                       logits: bool, batch: int | None) -> np.ndarray:
    x = ref_resize(unit(image), size)
    y = ref_activate(ref_net(path, x, nchw, batch), logits)
    return np.clip(ref_resize(y, image.shape[:2]), 0, 1)


def image(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """A uint8 test image (H, W) for c = 1, else (H, W, C): smooth shapes plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 80 * np.sin(xx / 7.0 + seed) * np.cos(yy / 5.0)
    planes = [base + 30 * k + rng.normal(0, 20, (h, w)) for k in range(c)]
    arr = np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8)
    return arr[..., 0] if c == 1 else arr


# -- crafted graphs ----------------------------------------------------------------------------
def graph_model(nodes, inputs, outputs, inits=(), opset: int = 17, domains=()) -> onnx.ModelProto:
    g = helper.make_graph(list(nodes), "crafted", list(inputs), list(outputs), list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset),
                                            *[helper.make_opsetid(d, 1) for d in domains]])
    m.ir_version = 8
    return m


def vi(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def const(name: str, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip(), msg
    return msg


@pytest.fixture(scope="module")
def models(onnx_models, tmp_path_factory) -> Path:
    """The session's ONNX models, with the card of ``nhwc_logits3_b2`` written as a user would
    (only the fields it means: name, classes, description; the rest comes from the graph)."""
    folder = tmp_path_factory.mktemp("onnx_cards")
    for p in onnx_models.glob("*.onnx"):
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "nhwc_logits3_b2.json").write_text(json.dumps(
        {"name": "nhwc_logits3_b2", "classes": OWN_CLASSES,
         "description": "tiny untrained 3-class NHWC ONNX U-Net"}))
    return folder


# -- cards inferred from the graph ----------------------------------------------------------------
CARDS = {  # file: (layout, batch, input_size, channels, K, output, stride, fit)
    "nchw_logits.onnx": ("nchw", None, None, 3, 1, "logits", 4, "pad"),
    "nchw_gray.onnx": ("nchw", None, None, 1, 1, "probability", 4, "pad"),
    "nchw_softmax_b4.onnx": ("nchw", 4, [64, 64], 1, 4, "probability", 4, "resize"),
    "nhwc_sigmoid4.onnx": ("nhwc", None, None, 4, 1, "probability", 4, "pad"),
    "nhwc_logits3_b2.onnx": ("nhwc", 2, [32, 32], 3, 3, "logits", 4, "resize"),
}


@pytest.mark.parametrize("name", sorted(CARDS))
def test_card_read_from_the_graph(models, name):
    layout, batch, size, channels, k, output, stride, fit = CARDS[name]
    loaded = load_model(models / name)
    g, card = loaded.model, loaded.card
    assert (g.layout, g.batch, g.channels, g.classes) == (layout, batch, channels, k)
    assert (card.layout, card.input_size, card.channels, card.n_classes, card.output,
            card.multiple_of, card.fit) == (layout, size, channels, k, output, stride, fit)
    assert g.stride() == stride and g.input_dtype == np.float32
    if name == "nhwc_logits3_b2.onnx":  # its card names the classes; the rest is inferred
        assert loaded.card_found and card.classes == OWN_CLASSES
    else:
        assert not loaded.card_found and "layout" in card.inferred
        assert layout.upper() in card.notes["layout"]
        assert ("dynamic batch" if batch is None else f"fixed batch of {batch}") in \
            card.notes["layout"]
    assert ("Transpose" if layout == "nhwc" else "convolution") in g.layout_reason


# -- predictions against plain ONNX Runtime --------------------------------------------------------
@pytest.mark.parametrize("name,nchw,logits,c", [
    ("nchw_logits.onnx", True, True, 3), ("nchw_gray.onnx", True, False, 1),
    ("nhwc_sigmoid4.onnx", False, False, 4)])
def test_pad_fit_equals_plain_onnxruntime(models, name, nchw, logits, c):
    seg = Segmenter(load_model(models / name))
    for h, w in ((37, 53), (64, 48)):
        img = image(h, w, c, seed=h)
        got = seg.predict_classes(img)
        want = ref_pad_predict(models / name, img, nchw, logits)
        assert got.shape == (h, w, 1) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("name,nchw,logits,c,size,batch", [
    ("nchw_softmax_b4.onnx", True, False, 1, (64, 64), 4),
    ("nhwc_logits3_b2.onnx", False, True, 3, (32, 32), 2)])
def test_resize_fit_equals_plain_onnxruntime(models, name, nchw, logits, c, size, batch):
    seg = Segmenter(load_model(models / name))
    assert seg.fit == "resize"
    img = image(50, 70, c, seed=3)
    got = seg.predict_classes(img)
    want = ref_resize_predict(models / name, img, size, nchw, logits, batch)
    assert got.shape == (50, 70, seg.n_classes)
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-4)  # softmax probabilities


def test_big_image_tiled_on_a_fixed_size_graph(onnx_models):
    """A fixed 64x64 graph with fit pad: a 150x100 image goes through in 64x64 tiles that
    overlap by 16 pixels, blended with linear ramps (written out here)."""
    path = onnx_models / "nchw_softmax_b4.onnx"
    seg = Segmenter(load_model(path), fit="pad")
    h, w, t, overlap = 150, 100, 64, 16
    assert seg.network_size(h, w) is None and seg.tile_size(h, w) == (t, t)
    img = image(h, w, 1, seed=5)
    got = seg.predict_classes(img)

    def starts(n: int) -> list[int]:
        return sorted({*range(0, n - t, t - overlap), n - t})

    ramp = np.ones(t)
    ramp[:overlap] = (np.arange(overlap) + 1.0) / (overlap + 1.0)
    ramp[t - overlap:] = ramp[:overlap][::-1]
    win = np.outer(ramp, ramp)[..., None]
    x = unit(img)
    acc, wsum = np.zeros((h, w, 4)), np.zeros((h, w, 1))
    for y0 in starts(h):
        for x0 in starts(w):
            p = ref_net(path, x[y0:y0 + t, x0:x0 + t], True, batch=4)
            acc[y0:y0 + t, x0:x0 + t] += p * win
            wsum[y0:y0 + t, x0:x0 + t] += win
    np.testing.assert_allclose(got, acc / wsum, atol=2e-5)


def test_fixed_batch_4_takes_1_5_and_9_images(onnx_models):
    path = onnx_models / "nchw_softmax_b4.onnx"
    loaded = load_model(path)
    backend = make_backend(loaded)
    assert backend.name == "onnxruntime" and "fixed batch 4" in backend.note
    rng = np.random.default_rng(1)
    for n in (1, 5, 9):
        x = rng.random((n, 64, 64, 1), dtype=np.float32)
        y = backend(x)
        assert y.shape == (n, 64, 64, 4)
        for i in range(n):
            np.testing.assert_allclose(y[i], ref_net(path, x[i], True, batch=4), atol=1e-6)
    imgs = [image(64, 64, 1, seed=s) for s in range(9)]
    seg = Segmenter(loaded, batch_size=16)
    for img, probs in zip(imgs, seg.predict_batch_classes(imgs), strict=True):
        want = ref_net(path, unit(img), True, batch=4)
        np.testing.assert_allclose(probs, want, atol=2e-5)


def test_float16_graph(tmp_path):
    """A graph that takes and returns float16 (Cast in, Cast out around a float32 U-Net)."""
    m = nchw_unet(3, 1, "sigmoid", seed=7)
    g = m.graph
    for n in g.node:
        n.input[:] = ["x32" if i == "input" else i for i in n.input]
        n.output[:] = ["y32" if o == "output" else o for o in n.output]
    g.node.insert(0, helper.make_node("Cast", ["input"], ["x32"], to=TensorProto.FLOAT))
    g.node.append(helper.make_node("Cast", ["y32"], ["output"], to=TensorProto.FLOAT16))
    g.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    g.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    path = save(m, tmp_path / "fp16.onnx")
    loaded = load_model(path)
    assert loaded.model.input_dtype == np.float16 and loaded.card.output == "probability"
    assert loaded.model.layout == "nchw"  # (N, 3, H, W): the second axis is the small one
    img = image(40, 44, 3, seed=2)
    got = Segmenter(loaded).predict_classes(img)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    padded, (top, left) = ref_pad(unit(img), 4)
    y = sess.run(None, {"input": padded.transpose(2, 0, 1)[None].astype(np.float16)})[0]
    want = y[0].transpose(1, 2, 0).astype(np.float64)[top:top + 40, left:left + 44]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-3)


@pytest.fixture(scope="module")
def keras_export(tmp_path_factory):
    """A tiny Keras U-Net (unet_core.model.build_unet) and its ``model.export(format="onnx")``."""
    from unet_core.model import build_unet

    model = build_unet(3, base_filters=4, depth=2, dropout=0.0, name="tiny_keras")
    model(np.zeros((1, 32, 32, 3), np.float32))  # Keras exports only a called model
    path = tmp_path_factory.mktemp("keras_onnx") / "tiny_keras.onnx"
    model.export(str(path), format="onnx", verbose=False)
    return model, path


@pytest.mark.slow  # the export (tf2onnx) with TensorFlow's import: ~8 s
def test_keras_export_loads_as_nhwc_and_matches_keras(keras_export):
    model, path = keras_export
    loaded = load_model(path)
    g = loaded.model
    assert g.layout == "nhwc" and g.output_layout == "nhwc" and "Transpose" in g.layout_reason
    assert (g.channels, g.classes, g.batch, g.height) == (3, 1, None, None)
    assert loaded.card.output == "probability" and loaded.card.multiple_of == 4
    x = np.random.default_rng(0).random((2, 32, 48, 3), dtype=np.float32)
    y = make_backend(loaded)(x)
    np.testing.assert_allclose(y, np.asarray(model(x, training=False)), atol=1e-4)
    img = image(30, 41, 3, seed=4)
    padded, (top, left) = ref_pad(unit(img), 4)
    want = np.asarray(model(padded[None].astype(np.float32), training=False))[0]
    got = Segmenter(loaded).predict_classes(img)
    np.testing.assert_allclose(got, want[top:top + 30, left:left + 41], atol=1e-4)


def _mul_first_nhwc(tmp_path: Path) -> Path:
    """A fixed (1, 32, 32, 3) NHWC graph that scales its input (Mul) before the Transpose: the
    layout cannot be read from the graph (both inner axes are small)."""
    m = nhwc_wrap(nchw_unet(3, 1, "sigmoid", batch=1, size=32, seed=8))
    g = m.graph
    for n in g.node:
        n.input[:] = ["scaled" if i == "args_0" else i for i in n.input]
    g.node.insert(0, helper.make_node("Mul", ["args_0", "one"], ["scaled"], name="scale"))
    g.initializer.append(const("one", 1.0))
    return save(m, tmp_path / "mul_first.onnx")


def test_card_layout_overrides_detection(tmp_path):
    path = _mul_first_nhwc(tmp_path)
    with pytest.raises(ModelSpecError) as exc:  # read as NCHW (1, 32, 32, 3): 32 channels
        load_model(path)
    assert '"layout": "nhwc"' in one_line(exc)
    (tmp_path / "mul_first.json").write_text(json.dumps({"name": "mul_first", "layout": "nhwc"}))
    loaded = load_model(path)
    g = loaded.model
    assert (g.layout, g.channels, g.classes) == ("nhwc", 3, 1)
    assert g.layout_reason.startswith("stated in the model card (the graph alone reads NCHW")
    assert loaded.card.layout == "nhwc" and loaded.card.input_size == [32, 32]
    img = image(32, 32, 3, seed=9)
    got = Segmenter(loaded).predict_classes(img)
    np.testing.assert_allclose(got, ref_net(path, unit(img), False), atol=2e-5)


def test_card_layout_that_leaves_no_channel_axis_says_so(onnx_models, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes((onnx_models / "nchw_logits.onnx").read_bytes())  # (?, 3, ?, ?)
    (tmp_path / "m.json").write_text(json.dumps({"name": "m", "layout": "nhwc"}))
    with pytest.raises(ModelSpecError) as exc:
        load_model(model)
    msg = one_line(exc)
    assert "read as NHWC" in msg and "a dynamic number of channels" in msg
    assert "the card states layout nhwc: remove it" in msg


@pytest.mark.parametrize(("name", "output", "note"), [
    ("nchw_logits.onnx", "probability", "it says probability, but the network's last op is conv"),
    ("nchw_gray.onnx", "logits", "already ends in sigmoid, so the engine applies it a second"),
    ("nchw_gray.onnx", "probability", None),
])
def test_card_output_kind_checked_against_the_last_op(onnx_models, tmp_path, name, output,
                                                      note):
    model = tmp_path / name
    model.write_bytes((onnx_models / name).read_bytes())
    (tmp_path / name).with_suffix(".json").write_text(json.dumps({"name": "m", "output": output}))
    card = load_model(model).card
    assert card.output == output  # the card is used as written, and flagged
    if note is None:
        assert "output" not in card.notes
    else:
        assert note in card.notes["output"] and card.notes["output"].startswith("check the card")


@pytest.mark.parametrize("card,words", [
    ({"channels": 4}, "channels = 4 but the network takes 3"),
    ({"classes": ["a", "b"]}, "names 2 classes but the network outputs 3"),
])
def test_card_contradicting_the_graph_is_refused(models, tmp_path, card, words):
    model = tmp_path / "m.onnx"
    model.write_bytes((models / "nhwc_logits3_b2.onnx").read_bytes())
    (tmp_path / "m.json").write_text(json.dumps({"name": "m", **card}))
    with pytest.raises(ModelSpecError) as exc:
        load_model(model)
    assert words in one_line(exc)
    with pytest.raises(ModelSpecError) as exc:  # the same card given as an object
        load_model(models / "nhwc_logits3_b2.onnx",
                   card=ModelCard(name="m", **{"classes": OWN_CLASSES, **card}))
    assert words in one_line(exc)


def test_tensorflow_backend_refused(onnx_models):
    loaded = load_model(onnx_models / "nchw_gray.onnx")
    with pytest.raises(UnetCoreError) as exc:
        make_backend(loaded, "tensorflow")
    assert "ONNX Runtime" in one_line(exc) and "onnxruntime" in str(exc.value)
    with pytest.raises(UnetCoreError):
        Segmenter(loaded, backend="tensorflow")
    assert make_backend(loaded, "onnxruntime").name == make_backend(loaded, "auto").name


# -- safety: crafted files, one-line refusals ------------------------------------------------------
def _external(tmp_path: Path, location: str, write_to: Path | None) -> Path:
    """nchw_unet with ``enc1.weight`` kept in external data at ``location`` (its bytes written
    to ``write_to`` when given)."""
    m = nchw_unet(1, 1, "sigmoid", seed=2)
    t = next(i for i in m.graph.initializer if i.name == "enc1.weight")
    raw = numpy_helper.to_array(t).tobytes()
    if write_to is not None:
        write_to.parent.mkdir(parents=True, exist_ok=True)
        write_to.write_bytes(raw)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    for k, v in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        t.external_data.add(key=k, value=v)
    folder = tmp_path / "upload"
    folder.mkdir(exist_ok=True)
    return save(m, folder / "model.onnx")


def test_external_data_outside_the_folder_refused(tmp_path):
    outside = tmp_path / "x.bin"
    for loc in ("../x.bin", str(outside)):  # relative escape, absolute path
        path = _external(tmp_path, loc, outside)
        with pytest.raises(ModelLoadError) as exc:
            load_model(path)
        assert "refused" in one_line(exc) and "outside the model's own folder" in str(exc.value)
    # a link inside the folder that leads outside it
    (tmp_path / "upload").mkdir(exist_ok=True)
    (tmp_path / "upload" / "link.bin").symlink_to(outside)
    with pytest.raises(ModelLoadError) as exc:
        load_model(_external(tmp_path, "link.bin", None))
    assert "outside the model's own folder" in one_line(exc)


def test_external_data_missing_refused(tmp_path):
    with pytest.raises(ModelLoadError) as exc:
        load_model(_external(tmp_path, "weights.bin", None))
    assert "weights.bin" in one_line(exc) and "not next to the model" in str(exc.value)
    path = _external(tmp_path, "short.bin", None)
    (path.parent / "short.bin").write_bytes(b"\0" * 16)  # shorter than the tensor
    with pytest.raises(ModelLoadError) as exc:
        load_model(path)
    assert "past the end" in one_line(exc)


def test_external_data_inside_the_folder_runs(tmp_path):
    path = _external(tmp_path, "weights.bin", tmp_path / "upload" / "weights.bin")
    loaded = load_model(path)
    img = image(24, 36, 1, seed=1)
    got = Segmenter(loaded).predict_classes(img)
    np.testing.assert_allclose(got, ref_pad_predict(path, img, True, False), atol=2e-5)
    # onnx's own writer (all weights in one file next to the model)
    folder = tmp_path / "saved"
    folder.mkdir()
    onnx.save_model(nchw_unet(3, 1, "logits", seed=3), str(folder / "m.onnx"),
                    save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.data", size_threshold=0)
    loaded = load_model(folder / "m.onnx")
    img = image(20, 28, 3, seed=2)
    np.testing.assert_allclose(Segmenter(loaded).predict_classes(img),
                               ref_pad_predict(folder / "m.onnx", img, True, True), atol=2e-5)
    before = loaded.model.key
    (folder / "m.onnx.data").write_bytes((folder / "m.onnx.data").read_bytes()[::-1])
    assert load_model(folder / "m.onnx").model.key != before  # the key covers the data file


def test_custom_domain_refused(tmp_path):
    m = graph_model([helper.make_node("Backdoor", ["x"], ["y"], domain="com.example.evil",
                                      name="evil")],
                    [vi("x", [1, 1, "h", "w"])], [vi("y", [1, 1, "h", "w"])],
                    domains=["com.example.evil"])
    with pytest.raises(ModelLoadError) as exc:
        load_model(save(m, tmp_path / "custom.onnx"))
    assert "com.example.evil" in one_line(exc) and "refused" in str(exc.value)


@pytest.mark.parametrize(("var", "value", "said"), [("UNET_MAX_ONNX_NODES", "5", "18 nodes"),
                                                     ("UNET_MAX_PARAMS", "1000", "weights")])
def test_node_and_weight_caps(tmp_path, monkeypatch, var, value, said):
    path = save(nchw_unet(1, 1, "sigmoid"), tmp_path / "m.onnx")
    monkeypatch.setenv(var, value)
    with pytest.raises(ModelLoadError) as exc:
        load_model(path)
    assert var in one_line(exc) and said in str(exc.value)


def test_negative_dimension_refused(tmp_path):
    """A weight whose dims are negative (a crafted file: products of such dims overflow or
    cancel in fixed-width arithmetic and would slip under the weight cap)."""
    m = nchw_unet(1, 1, "sigmoid")
    t = m.graph.initializer[0]
    del t.dims[:]
    t.dims.extend([-(2**40), -(2**40), 1, 1])
    with pytest.raises(ModelLoadError) as exc:
        load_model(save(m, tmp_path / "neg.onnx"))
    assert "negative dimension" in one_line(exc)


def test_fixed_batch_counts_whole_batches_in_the_forward_budget(models, monkeypatch):
    """A batch-4 graph runs 4 images whatever it is given: its forward budget counts 4."""
    loaded = load_model(models / "nchw_softmax_b4.onnx")
    one = loaded.model.estimate().activation_bytes(64, 64)
    assert 2**20 < one < 2 * 2**20  # about 1.5 MB per image, 6 MB a run
    monkeypatch.setenv("UNET_MAX_FORWARD_MB", "3")
    with pytest.raises(UnetCoreError) as exc:
        make_backend(loaded)
    assert "(batch 4)" in one_line(exc) and "UNET_MAX_FORWARD_MB" in str(exc.value)
    monkeypatch.setenv("UNET_MAX_FORWARD_MB", "8")
    assert make_backend(loaded)(np.zeros((1, 64, 64, 1), np.float32)).shape == (1, 64, 64, 4)


def _conv1(x: str, y: str, cin: int = 1, cout: int = 1, name: str = "c"):
    w = const(f"{name}.w", np.ones((cout, cin, 1, 1)))
    return helper.make_node("Conv", [x, w.name], [y], name=name), w


def test_io_refusals(tmp_path):
    """Two inputs, an int64 input, an int64 (argmax) output, an output smaller than the input:
    each refused with one line."""
    n, w = _conv1("a", "c")
    two = graph_model([n, helper.make_node("Add", ["c", "b"], ["y"])],
                      [vi("a", [1, 1, 32, 32]), vi("b", [1, 1, 32, 32])],
                      [vi("y", [1, 1, 32, 32])], [w])
    n, w = _conv1("f", "y")
    int_in = graph_model([helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT), n],
                         [vi("x", [1, 1, 32, 32], TensorProto.INT64)],
                         [vi("y", [1, 1, 32, 32])], [w])
    soft = nchw_unet(1, 3, "softmax", seed=1)
    soft.graph.node.append(helper.make_node("ArgMax", ["output"], ["labels"], axis=1))
    del soft.graph.output[:]
    soft.graph.output.append(vi("labels", ["batch", 1, "height", "width"], TensorProto.INT64))
    n, w = _conv1("x", "c")
    small = [n, helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    shrink_fixed = graph_model(small, [vi("x", [1, 1, 64, 64])], [vi("y", [1, 1, 32, 32])], [w])
    shrink_dyn = graph_model(small, [vi("x", ["n", 1, "h", "w"])], [vi("y", ["n", 1, "a", "b"])],
                             [w])
    cases = [(two, ModelSpecError, "2 inputs"), (int_in, ModelSpecError, "input is int64"),
             (soft, ModelSpecError, "output is int64"),
             (shrink_fixed, ModelSpecError, "output is 32x32 for a 64x64 input read as NCHW"),
             (shrink_dyn, ModelSpecError, "output is 256x192 for a 512x384 input")]
    for i, (model, error, words) in enumerate(cases):
        with pytest.raises(error) as exc:
            load_model(save(model, tmp_path / f"m{i}.onnx"))
        assert words in one_line(exc)


def test_not_onnx_and_truncated(tmp_path, onnx_models):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf \xff\xfe" * 10)
    good = (onnx_models / "nchw_gray.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good[: len(good) // 2])
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    for path in (junk, cut, empty):
        with pytest.raises(ModelLoadError) as exc:
            load_model(path)
        assert path.name in one_line(exc)


def _resize_bomb(tmp_path: Path, factor: float = 1000.0) -> Path:
    """Dynamic (N, 1, H, W): Resize by ``factor`` then AveragePool back (same size out)."""
    k = int(factor)
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["big"], mode="nearest"),
             helper.make_node("AveragePool", ["big"], ["y"], kernel_shape=[k, k],
                              strides=[k, k])]
    m = graph_model(nodes, [vi("x", ["n", 1, "h", "w"])], [vi("y", ["n", 1, "h", "w"])],
                    [const("scales", [1, 1, factor, factor])])
    return save(m, tmp_path / "resize_bomb.onnx")


def _constant_bomb(tmp_path: Path, side: int) -> Path:
    """A (side x side) float constant made from a constant shape (ONNX Runtime may build it
    when it loads the graph), reduced and added to the input."""
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"],
                              value=numpy_helper.from_array(np.ones(1, np.float32))),
             helper.make_node("ReduceMean", ["big"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["m0"]),
             helper.make_node("Add", ["x", "m0"], ["y"])]
    m = graph_model(nodes, [vi("x", ["n", 1, "h", "w"])], [vi("y", ["n", 1, "h", "w"])],
                    [const("shape", [1, 1, side, side], np.int64), const("zero", 0.0)])
    return save(m, tmp_path / f"constant_bomb_{side}.onnx")


def _hidden_bomb(tmp_path: Path, side: int) -> Path:
    """A (side x side) float tensor whose shape comes from the input's values at run time, so
    no shape inference can see it."""
    nodes = [helper.make_node("ReduceMax", ["x"], ["mx"], keepdims=0),
             helper.make_node("Mul", ["mx", "zero"], ["z"]),
             helper.make_node("Add", ["z", "side"], ["s"]),
             helper.make_node("Cast", ["s"], ["si"], to=TensorProto.INT64),
             helper.make_node("Unsqueeze", ["si", "axes"], ["s1"]),
             helper.make_node("Concat", ["ones", "s1", "s1"], ["shape"], axis=0),
             helper.make_node("ConstantOfShape", ["shape"], ["big"],
                              value=numpy_helper.from_array(np.ones(1, np.float32))),
             helper.make_node("ReduceMean", ["big"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["m0"]),
             helper.make_node("Add", ["x", "m0"], ["y"])]
    m = graph_model(nodes, [vi("x", ["n", 1, "h", "w"])], [vi("y", ["n", 1, "h", "w"])],
                    [const("zero", 0.0), const("side", float(side)),
                     const("axes", [0], np.int64), const("ones", [1, 1], np.int64)])
    return save(m, tmp_path / "hidden_bomb.onnx")


def test_resize_bomb_refused_before_it_runs(tmp_path):
    path = _resize_bomb(tmp_path)
    graph = load_model(path).model  # reading the graph runs nothing
    with pytest.raises(UnetCoreError) as exc:
        budget.check_forward(graph.estimate(), 64, 64, "resize_bomb.onnx")
    assert "UNET_MAX_FORWARD_MB" in one_line(exc)
    with pytest.raises(ModelLoadError) as exc:  # vetting refuses it by the same estimate
        vet_model(path, memory_mb=1024, timeout_s=60)
    assert "UNET_MAX_FORWARD_MB" in one_line(exc) and "activations" in str(exc.value)


def test_constant_bomb_refused_before_onnxruntime_loads_it(tmp_path, monkeypatch):
    """A 2048x2048 constant (16 MB) against a 4 MB forward limit: the backend refuses it before
    ONNX Runtime (which may fold constants) opens the graph; the bomb is small enough that
    nothing bad happens if it ever did not."""
    loaded = load_model(_constant_bomb(tmp_path, 2048))
    monkeypatch.setenv("UNET_MAX_FORWARD_MB", "4")
    with pytest.raises(UnetCoreError) as exc:
        make_backend(loaded)
    assert "UNET_MAX_FORWARD_MB" in one_line(exc)
    monkeypatch.delenv("UNET_MAX_FORWARD_MB")
    assert make_backend(loaded)(np.ones((1, 8, 8, 1), np.float32)).shape == (1, 8, 8, 1)
    big = _constant_bomb(tmp_path, 40_000)  # 6.4 GB: refused by the estimate inside vetting
    with pytest.raises(ModelLoadError) as exc:
        vet_model(big, memory_mb=1024, timeout_s=60)
    assert "UNET_MAX_FORWARD_MB" in one_line(exc)


def test_hidden_bomb_killed_by_the_vetting_memory_limit(tmp_path):
    """A tensor the estimate cannot see (its size comes from the data) is stopped by the
    child's memory watchdog: 3.6 GB asked for (filling it takes longer than the watchdog's
    50 ms poll), 400 MB allowed."""
    path = _hidden_bomb(tmp_path, 30_000)
    graph = load_model(path).model
    budget.check_forward(graph.estimate(), 64, 64, "hidden")  # invisible to the estimate
    with pytest.raises(ModelLoadError) as exc:
        vet_model(path, memory_mb=400, timeout_s=60)
    assert "UNET_VET_MEMORY_MB" in one_line(exc) and "400 MB" in str(exc.value)


def test_vet_model_accepts_onnx(onnx_models):
    info = vet_model(onnx_models / "nhwc_logits3_b2.onnx", timeout_s=60)
    assert info["backend"] == "onnxruntime" and info["layers"] == 20 and info["params"] > 1000
