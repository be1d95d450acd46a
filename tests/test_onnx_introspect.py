"""Tests of unet_core.introspect on ONNX U-Nets (unet_core.onnx_introspect): the layer table,
filters, activations through one cached ONNX Runtime session, checked against plain ONNX
Runtime and numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx_zoo import nchw_unet, ort_forward, save

from unet_core import onnx_introspect
from unet_core.errors import UnetCoreError
from unet_core.introspect import (
    ActivationProbe,
    Kernels,
    LayerInfo,
    activation_layers,
    conv_layers,
    crop_activation,
    format_layer_table,
    get_kernels,
    layer_activation,
    layer_table,
    model_flops,
    weight_histogram,
)
from unet_core.model import load_model
from unet_core.onnx_graph import read_graph
from unet_core.padding import pad_to_multiple

REAL = Path(__file__).resolve().parents[2] / "shared" / "realmodels"


def _graph(folder: Path, name: str):
    return read_graph(folder / name, name)


def _init(graph, name: str) -> np.ndarray:
    from onnx import numpy_helper

    return next(numpy_helper.to_array(t) for t in graph.proto.graph.initializer
                if t.name == name)


def _plain_outputs(path: Path, x: np.ndarray, tensors: list[str]) -> list[np.ndarray]:
    """The graph at ``path`` with ``tensors`` as extra outputs, run by plain ONNX Runtime on
    ``x`` in the graph's own layout (no unet_core involved)."""
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(path))
    for t in tensors:
        m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT,
                                                                 None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(tensors, {sess.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)})


# -- layer table ---------------------------------------------------------------------------------
def test_layer_table_nchw_rows_params_shapes(onnx_models):
    g = _graph(onnx_models, "nchw_logits.onnx")
    rows = layer_table(g)
    assert all(isinstance(r, LayerInfo) for r in rows)
    assert [r.name for r in rows] == [n.name for n in g.proto.graph.node]
    assert [r.index for r in rows] == list(range(len(rows)))
    assert sum(r.params for r in rows) == g.count_params()
    by = {r.name: r for r in rows}
    enc1 = by["/enc1/Conv"]
    assert (enc1.type, enc1.params, enc1.is_conv, enc1.has_kernel) == ("Conv", 3 * 8 * 9 + 8,
                                                                        True, True)
    assert enc1.kernel_shape == (3, 3, 3, 8)
    assert enc1.as_row() == {"#": 0, "name": "/enc1/Conv", "type": "Conv",
                             "output shape": "(8, H, W)", "params": 224, "kernel": "3x3x3x8"}
    assert by["/pool2/MaxPool"].shape_str == "(16, H/4, W/4)"
    assert by["/bottleneck/Relu"].shape_str == "(32, H/4, W/4)"
    up2 = by["/up2/ConvTranspose"]
    assert up2.is_conv and up2.kernel_str == "2x2x32x16"  # (kh, kw, in, out)
    assert up2.params == 32 * 16 * 4 + 16 and up2.shape_str == "(16, H/2, W/2)"
    relu = by["/enc1/Relu"]
    assert (relu.params, relu.has_kernel, relu.is_conv, relu.kernel_str) == (0, False, False, "")
    assert by["/cat1/Concat"].shape_str == "(16, H, W)"
    text = format_layer_table(g)
    assert "/up2/ConvTranspose" in text and "(16, H/2, W/2)" in text
    assert text.splitlines()[-1] == (f"{len(rows)} layers, total params: {g.count_params():,} "
                                     f"(trainable: {g.count_params():,}, non-trainable: 0)")


def test_layer_table_nhwc_and_fixed(onnx_models):
    rows = {r.name: r for r in layer_table(_graph(onnx_models, "nhwc_sigmoid4.onnx"))}
    assert rows["Transpose__in"].shape_str == "(4, H, W)"  # NCHW inside the graph
    assert rows["/enc2/Relu"].shape_str == "(16, H/2, W/2)"
    assert rows["Transpose__out"].shape_str == "(H, W, 1)"  # NHWC output
    assert rows["/enc1/Conv"].kernel_shape == (3, 3, 4, 8)
    loaded = load_model(onnx_models / "nhwc_logits3_b2.onnx")  # fixed batch 2, 32x32
    fixed = layer_table(loaded)
    assert sum(r.params for r in fixed) == loaded.model.count_params()
    by = {r.name: r for r in fixed}
    assert by["/pool1/MaxPool"].output_shape == (2, 8, 16, 16)
    assert by["/pool1/MaxPool"].shape_str == "(8, 16, 16)"
    assert by["Transpose__out"].shape_str == "(32, 32, 3)"


def test_layer_names_fall_back_to_output_names(tmp_path):
    m = nchw_unet(1, 1, "sigmoid", seed=7)
    nodes = m.graph.node
    nodes[1].name = nodes[2].name = "same"  # not unique (ONNX Runtime would refuse to run it)
    g = read_graph(save(m, tmp_path / "twice.onnx"), "twice.onnx")
    names = [r.name for r in layer_table(g)]
    assert names[:4] == ["/enc1/Conv", "/enc1/Relu_output_0", "/pool1/MaxPool_output_0",
                         "/enc2/Conv"]
    assert len(set(names)) == len(names)
    m = nchw_unet(1, 1, "sigmoid", seed=7)
    m.graph.node[0].name = m.graph.node[1].name = ""  # unnamed
    g = read_graph(save(m, tmp_path / "unnamed.onnx"), "unnamed.onnx")
    assert activation_layers(g)[:3] == ["/enc1/Conv_output_0", "/enc1/Relu_output_0",
                                        "/pool1/MaxPool"]
    assert conv_layers(g)[0] == "/enc1/Conv_output_0"
    assert get_kernels(g, "/enc1/Conv_output_0").weights.shape == (3, 3, 1, 8)
    maps = ActivationProbe(g, layers=["/enc1/Relu_output_0"]).run(np.ones((8, 8), np.float32))
    assert maps["/enc1/Relu_output_0"].shape == (8, 8, 8)
    assert layer_activation(g, "/enc1/Relu_output_0") == "relu"


def test_unread_initializer_has_its_own_row(tmp_path):
    from onnx import numpy_helper

    m = nchw_unet(1, 1, "sigmoid", seed=8)
    m.graph.initializer.append(numpy_helper.from_array(np.ones((5, 7), np.float32), "spare"))
    g = read_graph(save(m, tmp_path / "spare.onnx"), "spare.onnx")
    rows = layer_table(g)
    assert rows[-1].type == "Initializer" and rows[-1].params == 35
    assert sum(r.params for r in rows) == g.count_params()


def test_conv_activation_layers_and_activation_names(onnx_models):
    g = _graph(onnx_models, "nchw_gray.onnx")
    assert conv_layers(g) == ["/enc1/Conv", "/enc2/Conv", "/bottleneck/Conv",
                              "/up2/ConvTranspose", "/dec2/Conv", "/up1/ConvTranspose",
                              "/dec1/Conv", "/head/Conv"]
    acts = activation_layers(g)
    assert acts[:3] == ["/enc1/Conv", "/enc1/Relu", "/pool1/MaxPool"] and acts[-1] == "/Sigmoid"
    assert len(acts) == len(g.proto.graph.node)  # every node of this graph outputs a 4-D map
    assert [layer_activation(g, n) for n in ("/enc1/Relu", "/Sigmoid", "/enc1/Conv",
                                             "/pool1/MaxPool", "missing")] == [
        "relu", "sigmoid", "linear", "linear", ""]


def test_model_flops_hand_count(onnx_models):
    g = _graph(onnx_models, "nchw_logits.onnx")  # 3 -> 1, width 8
    hw = 32 * 32
    expected = (2 * 8 * 3 * 9 * hw + 2 * 16 * 8 * 9 * hw // 4 + 2 * 32 * 16 * 9 * hw // 16
                + 2 * 32 * 16 * 4 * hw // 16  # ConvTranspose: per input pixel
                + 2 * 16 * 32 * 9 * hw // 4 + 2 * 16 * 8 * 4 * hw // 4
                + 2 * 8 * 16 * 9 * hw + 2 * 1 * 8 * hw)
    assert model_flops(g, 32, 32) == expected
    assert model_flops(g, 64, 32) == 2 * expected


# -- filters -------------------------------------------------------------------------------------
def test_get_kernels_conv_and_conv_transpose_by_hand(onnx_models):
    g = _graph(onnx_models, "nchw_logits.onnx")
    k = get_kernels(g, "/enc1/Conv")
    w = _init(g, "enc1.weight")  # (out 8, in 3, 3, 3)
    assert isinstance(k, Kernels) and k.type == "Conv" and k.weights.dtype == np.float32
    assert k.weights.shape == (3, 3, 3, 8) and (k.in_channels, k.out_channels) == (3, 8)
    for ky, kx, i, o in [(0, 0, 0, 0), (2, 1, 1, 5), (1, 2, 2, 7)]:
        assert k.weights[ky, kx, i, o] == w[o, i, ky, kx]
    np.testing.assert_array_equal(k.filter(5, 1), w[5, 1])
    np.testing.assert_array_equal(k.bias, _init(g, "enc1.bias"))
    assert len(k.stats) == 8
    assert k.stats[3]["mean"] == pytest.approx(float(w[3].astype(np.float64).mean()))
    t = get_kernels(g, "/up2/ConvTranspose")
    wt = _init(g, "up2.weight")  # (in 32, out 16, 2, 2)
    assert t.type == "ConvTranspose" and t.weights.shape == (2, 2, 32, 16)
    for ky, kx, i, o in [(0, 0, 0, 0), (1, 0, 31, 2), (0, 1, 7, 15)]:
        assert t.weights[ky, kx, i, o] == wt[i, o, ky, kx]
    np.testing.assert_array_equal(t.filter(2, 31), wt[31, 2])


def test_kernel_and_histogram_errors(onnx_models):
    g = _graph(onnx_models, "nchw_logits.onnx")
    with pytest.raises(UnetCoreError, match=r"no layer named 'nope' in model .*accepted: conv "
                                            r"layers /enc1/Conv, /enc2/Conv"):
        get_kernels(g, "nope")
    with pytest.raises(UnetCoreError, match=r"layer '/enc1/Relu' \(Relu\) has no 2-D spatial "
                                            "kernel; accepted: conv layers /enc1/Conv"):
        get_kernels(g, "/enc1/Relu")
    counts, edges = weight_histogram(g, "/enc2/Conv", bins=10)
    assert counts.sum() == 16 * 8 * 9 and len(edges) == 11  # kernel only, bias excluded
    assert edges[0] == pytest.approx(float(_init(g, "enc2.weight").min()))
    with pytest.raises(UnetCoreError, match="has no kernel weights; accepted: layers with"):
        weight_histogram(g, "/enc1/Relu")
    with pytest.raises(UnetCoreError, match="bins=0 is not valid"):
        weight_histogram(g, "/enc2/Conv", bins=0)


# -- activations ---------------------------------------------------------------------------------
def _conv3x3_same(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W, Cin) x ONNX weight (Cout, Cin, 3, 3) -> (H, W, Cout), zero padding 1, in numpy."""
    h, wd, _ = x.shape
    xp = np.pad(x.astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((h, wd, w.shape[0]))
    for ky in range(3):
        for kx in range(3):
            out += xp[ky:ky + h, kx:kx + wd] @ w[:, :, ky, kx].T.astype(np.float64)
    return out + b


def test_probe_nchw_matches_numpy_and_plain_ort(onnx_models):
    path = onnx_models / "nchw_logits.onnx"
    g = read_graph(path, "nchw_logits.onnx")
    x = np.random.default_rng(0).random((32, 48, 3), dtype=np.float32)
    probe = ActivationProbe(g, layers=["/bottleneck/Relu", "/enc1/Relu", "/enc2/Relu"])
    assert isinstance(probe, onnx_introspect.OnnxActivationProbe)
    assert isinstance(probe, ActivationProbe)
    assert probe.layer_names == ["/enc1/Relu", "/enc2/Relu", "/bottleneck/Relu"]  # graph order
    maps = probe.run(x)
    assert probe.forward_passes == 1
    assert {n: m.shape for n, m in maps.items()} == {
        "/enc1/Relu": (32, 48, 8), "/enc2/Relu": (16, 24, 16), "/bottleneck/Relu": (8, 12, 32)}
    assert all(m.dtype == np.float32 for m in maps.values())
    assert probe.estimate_bytes(32, 48) == sum(m.nbytes for m in maps.values())
    first = np.maximum(_conv3x3_same(x, _init(g, "enc1.weight"), _init(g, "enc1.bias")), 0)
    np.testing.assert_allclose(maps["/enc1/Relu"], first, atol=1e-5)
    tensors = ["/enc2/Relu_output_0", "/bottleneck/Relu_output_0"]
    ref = _plain_outputs(path, x.transpose(2, 0, 1)[None], tensors)
    np.testing.assert_allclose(maps["/enc2/Relu"], ref[0][0].transpose(1, 2, 0), atol=1e-5)
    np.testing.assert_allclose(maps["/bottleneck/Relu"], ref[1][0].transpose(1, 2, 0),
                               atol=1e-5)


def test_probe_nhwc_graph_maps_are_hwc(onnx_models):
    path = onnx_models / "nhwc_sigmoid4.onnx"
    loaded = load_model(path)
    x = np.random.default_rng(1).random((16, 24, 4), dtype=np.float32)
    probe = ActivationProbe(loaded, layers=["Transpose__in", "/enc1/Relu", "Transpose__out"])
    maps = probe.run(x)
    np.testing.assert_array_equal(maps["Transpose__in"], x)  # the input, back as (h, w, c)
    np.testing.assert_allclose(maps["Transpose__out"], ort_forward(path, x[None])[0], atol=1e-6)
    (relu,) = _plain_outputs(path, x[None], ["/enc1/Relu_output_0"])
    assert maps["/enc1/Relu"].shape == (16, 24, 8)
    np.testing.assert_allclose(maps["/enc1/Relu"], relu[0].transpose(1, 2, 0), atol=1e-6)


def test_probe_fixed_batch_and_fixed_size(onnx_models):
    path = onnx_models / "nhwc_logits3_b2.onnx"  # batch 2, 32x32
    g = read_graph(path, "nhwc_logits3_b2.onnx")
    x = np.random.default_rng(2).random((32, 32, 3), dtype=np.float32)
    maps = ActivationProbe(g, layers=["/pool1/MaxPool", "Transpose__out"]).run(x)
    assert maps["/pool1/MaxPool"].shape == (16, 16, 8)
    batch = np.concatenate([x[None], np.zeros_like(x)[None]])  # padded to the fixed batch
    np.testing.assert_allclose(maps["Transpose__out"], ort_forward(path, batch)[0], atol=1e-5)
    probe = ActivationProbe(g, layers=["/pool1/MaxPool"])
    with pytest.raises(UnetCoreError, match="accepted: the network's fixed size 32x32"):
        probe.run(np.zeros((64, 64, 3), np.float32))
    assert probe.forward_passes == 0
    one_image = probe.estimate_bytes(32, 32)  # 16 x 16 x 8 float32
    tight = ActivationProbe(g, layers=["/pool1/MaxPool"], max_bytes=2 * one_image - 1)
    with pytest.raises(UnetCoreError, match="fixed batch of 2, would take"):
        tight.run(x)  # the padded batch's maps count too
    assert ActivationProbe(g, layers=["/pool1/MaxPool"], max_bytes=2 * one_image).run(x)
    b4 = _graph(onnx_models, "nchw_softmax_b4.onnx")  # 1 channel, batch 4, 64x64
    out = ActivationProbe(b4, layers=["/Softmax"]).run(np.ones((64, 64), np.float32))
    assert out["/Softmax"].shape == (64, 64, 4)
    np.testing.assert_allclose(out["/Softmax"].sum(axis=-1), 1.0, atol=1e-5)


def test_crop_activation_with_onnx_maps(onnx_models):
    from unet_core.inference import Segmenter

    loaded = load_model(onnx_models / "nchw_gray.onnx")
    image = np.random.default_rng(3).random((101, 101), dtype=np.float32)
    padded, box = pad_to_multiple(image[..., None], 128)
    maps = ActivationProbe(loaded, layers=["/enc1/Relu", "/bottleneck/Relu"]).run(padded)
    assert crop_activation(maps["/enc1/Relu"], box, padded.shape[:2]).shape == (101, 101, 8)
    assert crop_activation(maps["/bottleneck/Relu"], box, padded.shape[:2]).shape == (26, 26,
                                                                                      32)
    seg = Segmenter(loaded)
    prepared, pbox = seg.prepare((image * 255).astype(np.uint8))
    got = ActivationProbe(seg, layers=["/enc1/Relu"]).run(prepared)["/enc1/Relu"]
    assert got.shape == (*prepared.shape[:2], 8)
    assert crop_activation(got, pbox, prepared.shape[:2]).shape == (101, 101, 8)


def test_external_data_weights(tmp_path):
    import onnx

    folder = tmp_path / "ext"
    folder.mkdir()
    m = nchw_unet(1, 1, "sigmoid", seed=9)
    w = next(onnx.numpy_helper.to_array(t) for t in m.graph.initializer
             if t.name == "enc1.weight")
    onnx.save_model(m, str(folder / "ext.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.data", size_threshold=0)
    g = read_graph(folder / "ext.onnx", "ext.onnx")
    assert g.proto.graph.initializer[0].data_location == 1  # weights left in ext.data
    k = get_kernels(g, "/enc1/Conv")
    np.testing.assert_array_equal(k.weights, w.transpose(2, 3, 1, 0))
    assert sum(r.params for r in layer_table(g)) == g.count_params()
    x = np.random.default_rng(6).random((16, 16), dtype=np.float32)
    maps = ActivationProbe(g, layers=["/Sigmoid"]).run(x)
    np.testing.assert_allclose(maps["/Sigmoid"], ort_forward(folder / "ext.onnx",
                                                             x[None, None])[0, 0][..., None],
                               atol=1e-6)


def test_one_cached_session_per_model_and_layers(onnx_models, monkeypatch):
    onnx_introspect.clear_probe_sessions()
    g = _graph(onnx_models, "nchw_gray.onnx")
    loaded = load_model(onnx_models / "nchw_gray.onnx")  # another object, the same file
    before = onnx_introspect.probe_sessions_created()
    a = ActivationProbe(g, layers=["/enc1/Relu", "/enc2/Relu"])
    b = ActivationProbe(loaded, layers=["/enc2/Relu", "/enc1/Relu"], max_bytes=None)
    x = np.random.default_rng(4).random((32, 32), dtype=np.float32)
    first = a.run(x)
    a.run(x)
    second = b.run(x)
    assert onnx_introspect.probe_sessions_created() - before == 1
    assert (a.forward_passes, b.forward_passes) == (2, 1)
    np.testing.assert_array_equal(first["/enc2/Relu"], second["/enc2/Relu"])
    ActivationProbe(g, layers=["/enc1/Relu"]).run(x)  # another set of outputs
    assert onnx_introspect.probe_sessions_created() - before == 2
    monkeypatch.setenv("UNET_MAX_PROBE_SESSIONS", "2")
    ActivationProbe(g, layers=["/pool1/MaxPool"])  # a third set: the first is dropped
    assert onnx_introspect.probe_sessions_created() - before == 3
    assert onnx_introspect.probe_sessions_cached() == 2
    a.run(x)  # evicted: built again
    assert onnx_introspect.probe_sessions_created() - before == 4
    assert onnx_introspect.probe_sessions_cached() == 2
    onnx_introspect.clear_probe_sessions()
    assert onnx_introspect.probe_sessions_cached() == 0


def test_probe_errors_and_max_bytes(onnx_models):
    g = _graph(onnx_models, "nchw_logits.onnx")
    with pytest.raises(UnetCoreError, match=r"cannot probe layer\(s\) 'nope'; accepted: nodes "
                                            "with 4-D float outputs /enc1/Conv"):
        ActivationProbe(g, layers=["nope"])
    with pytest.raises(UnetCoreError, match="no layers to probe"):
        ActivationProbe(g, layers=[])
    probe = ActivationProbe(g, layers=["/enc1/Conv"], max_bytes=16 * 16 * 8 * 4 - 1)
    with pytest.raises(UnetCoreError, match=r"MiB limit; accepted: a smaller image or fewer"):
        probe.run(np.zeros((16, 16, 3), np.float32))
    with pytest.raises(UnetCoreError, match=r"accepted: one prepared image \(Hp, Wp, 3\)"):
        probe.run(np.zeros((16, 16, 1), np.float32))
    assert probe.forward_passes == 0
    assert probe.run(np.zeros((8, 8, 3), np.float32))["/enc1/Conv"].shape == (8, 8, 8)


# -- real exports (skipped when absent) ------------------------------------------------------------
@pytest.mark.parametrize("name, first_conv, encoder", [
    ("apple_unet_256.onnx", "/block1/block1.0/Conv", "/block2/block2.2/Relu"),
    ("disaster_nhwc_unet.onnx", "functional_1/conv2d_1/BiasAdd", "functional_1/conv2d_2_1/Relu"),
])
def test_real_onnx_exports(name, first_conv, encoder):
    path = REAL / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    loaded = load_model(path)
    g = loaded.model
    rows = layer_table(loaded)
    assert len(rows) == g.n_layers
    assert sum(r.params for r in rows) == g.count_params()
    assert conv_layers(loaded)[0] == first_conv
    k = get_kernels(loaded, first_conv)
    assert k.in_channels == 3 and k.kernel_size == (3, 3)
    row = {r.name: r for r in rows}[first_conv]
    assert row.kernel_shape == k.weights.shape and row.shape_str == f"({k.out_channels}, 256, 256)"
    x = np.random.default_rng(5).random((256, 256, 3), dtype=np.float32)
    maps = ActivationProbe(loaded, layers=[encoder]).run(x)
    assert maps[encoder].shape[:2] == (128, 128)  # after the first 2x pooling
    assert maps[encoder].min() >= 0.0 and maps[encoder].max() > 0.0  # a ReLU that fires
    assert layer_activation(loaded, encoder) == "relu"
