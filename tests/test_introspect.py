"""Tests of unet_core.introspect on tiny models with hand-set weights."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from keras import layers

from unet_core.errors import UnetCoreError
from unet_core.introspect import (
    ActivationProbe,
    ChannelStats,
    Kernels,
    LayerInfo,
    activation_layers,
    channel_stats,
    conv_layers,
    crop_activation,
    format_layer_table,
    get_kernels,
    layer_activation,
    layer_table,
    weight_histogram,
)
from unet_core.model import LoadedModel, ModelCard, build_unet
from unet_core.padding import PadBox, pad_to_multiple


@pytest.fixture(scope="module")
def unet():
    keras.utils.set_random_seed(0)
    return build_unet(base_filters=4, depth=2)


@pytest.fixture(scope="module")
def toy():
    """Sequential with every conv type, a Dense on maps, then a non-4-D head."""
    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((None, None, 2)),
        layers.Conv2D(3, 3, padding="same", name="conv"),
        layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="up"),
        layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw"),
        layers.SeparableConv2D(5, 3, padding="same", name="sep"),
        layers.Dense(6, name="dense_maps"),
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(2, name="head"),
    ], name="toy")


# -- layer table ---------------------------------------------------------------------------------
def test_layer_table_rows_and_params(unet):
    rows = layer_table(unet)
    assert [r.name for r in rows] == [layer.name for layer in unet.layers]
    assert [r.index for r in rows] == list(range(len(unet.layers)))
    assert all(isinstance(r, LayerInfo) for r in rows)
    assert sum(r.params for r in rows) == unet.count_params()
    trainable = sum(int(np.prod(w.shape)) for w in unet.trainable_weights)
    assert sum(r.trainable_params for r in rows) == trainable
    by = {r.name: r for r in rows}
    assert by["enc0a_conv"].type == "Conv2D"
    assert by["enc0a_conv"].output_shape == (None, None, None, 4)
    assert by["enc0a_conv"].has_kernel and by["enc0a_conv"].is_conv
    assert by["enc0a_bn"].params == 16 and by["enc0a_bn"].trainable_params == 8
    assert not by["enc0a_bn"].has_kernel and not by["enc0a_bn"].is_conv
    assert by["dec0_up"].type == "Conv2DTranspose" and by["dec0_up"].is_conv
    row = by["bottlenecka_conv"].as_row()
    assert set(row) == {"#", "name", "type", "output shape", "params", "kernel"}
    assert row["output shape"] == "(H/4, W/4, 16)"
    assert row["kernel"] == "3x3x8x16"
    assert by["dec1_up"].as_row()["kernel"] == "2x2x16x8"  # (kh, kw, in, out)
    assert by["image"].as_row()["output shape"] == "(H, W, 1)"


def test_layer_table_fixed_size_and_wrapper(toy):
    fixed = build_unet(base_filters=2, depth=1, input_size=(16, 24))
    row = {r.name: r for r in layer_table(LoadedModel(fixed, ModelCard()))}["enc0_pool"]
    assert row.output_shape == (None, 8, 12, 2)
    assert row.as_row()["output shape"] == "(8, 12, 2)"
    rows = {r.name: r for r in layer_table(toy)}
    assert rows["head"].output_shape == (None, 2) and rows["head"].as_row()["output shape"] == "(2)"
    assert rows["dense_maps"].has_kernel and not rows["dense_maps"].is_conv
    assert rows["dense_maps"].as_row()["kernel"] == "5x6"
    assert rows["dw"].as_row()["kernel"] == "3x3x1x8"
    assert rows["up"].as_row()["output shape"] == "(2H, 2W, 4)"


def test_format_layer_table(unet):
    text = format_layer_table(unet)
    lines = text.splitlines()
    assert lines[0].split() == ["#", "name", "type", "output", "shape", "params", "kernel"]
    assert len(lines) == len(unet.layers) + 4
    assert f"total params: {unet.count_params():,}" in lines[-1]
    assert any("enc0a_conv" in line and "3x3x1x4" in line for line in lines)


def test_conv_and_activation_layers(unet, toy):
    expected = [lyr.name for lyr in unet.layers
                if type(lyr).__name__ in ("Conv2D", "Conv2DTranspose")]
    assert conv_layers(unet) == expected
    assert "dec1_up" in expected and "mask" in expected
    acts = activation_layers(unet)
    assert acts == [lyr.name for lyr in unet.layers[1:]]  # every layer but the InputLayer
    assert "image" not in acts
    assert conv_layers(toy) == ["conv", "up", "dw", "sep"]
    assert activation_layers(toy) == ["conv", "up", "dw", "sep", "dense_maps"]


# -- kernels -------------------------------------------------------------------------------------
def test_get_kernels_conv2d(toy):
    k = get_kernels(toy, "conv")
    assert isinstance(k, Kernels)
    assert k.type == "Conv2D" and k.weights.dtype == np.float32
    assert k.weights.shape == (3, 3, 2, 3)
    assert (k.in_channels, k.out_channels) == (2, 3)
    np.testing.assert_array_equal(k.weights, toy.get_layer("conv").kernel.numpy())
    assert k.bias is not None and k.bias.shape == (3,)
    assert len(k.stats) == 3
    assert k.filter(2, 1).shape == (3, 3)
    np.testing.assert_array_equal(k.filter(2, 1), k.weights[:, :, 1, 2])


def test_get_kernels_conv2d_transpose_axes(toy):
    layer = toy.get_layer("up")
    raw = layer.kernel.numpy()
    assert raw.shape == (3, 3, 4, 3)  # Keras: (kh, kw, out, in)
    k = get_kernels(toy, "up")
    assert k.weights.shape == (3, 3, 3, 4)  # ours: (kh, kw, in, out)
    assert (k.in_channels, k.out_channels) == (3, 4)
    for o in range(4):
        for i in range(3):
            np.testing.assert_array_equal(k.filter(o, i), raw[:, :, o, i])


def test_conv2d_transpose_axes_mean_what_they_say():
    """An impulse on input channel i yields weights[:, :, i, o] in output channel o."""
    layer = layers.Conv2DTranspose(2, 3, padding="valid", use_bias=False, name="tr")
    model = keras.Sequential([keras.Input((1, 1, 3)), layer])
    layer.kernel.assign(np.arange(3 * 3 * 2 * 3, dtype=np.float32).reshape(3, 3, 2, 3))
    k = get_kernels(model, "tr")
    assert k.bias is None
    for i in range(3):
        x = np.zeros((1, 1, 1, 3), np.float32)
        x[..., i] = 1.0
        y = model(x, training=False).numpy()[0]  # (3, 3, 2)
        for o in range(2):
            np.testing.assert_allclose(y[:, :, o], k.filter(o, i))


def test_get_kernels_depthwise_and_separable(toy):
    raw = toy.get_layer("dw").kernel.numpy()  # (3, 3, C=4, m=2)
    k = get_kernels(toy, "dw")
    assert k.weights.shape == (3, 3, 1, 8)
    for c in range(4):
        for j in range(2):
            np.testing.assert_array_equal(k.filter(c * 2 + j, 0), raw[:, :, c, j])
    assert k.bias is not None and k.bias.shape == (8,)
    s = get_kernels(toy, "sep")
    assert s.weights.shape == (3, 3, 1, 8) and s.bias is None
    assert s.type == "SeparableConv2D"


def test_filter_stats_hand_checked():
    layer = layers.Conv2D(3, 3, name="c")
    model = keras.Sequential([keras.Input((8, 8, 2)), layer])
    w = np.zeros((3, 3, 2, 3), np.float32)
    w[..., 0] = 1.0
    w[..., 1] = np.arange(18, dtype=np.float32).reshape(3, 3, 2) - 9.0  # -9..8
    w[..., 2] = -2.0
    layer.kernel.assign(w)
    layer.bias.assign(np.array([0.5, 0.0, -1.0], np.float32))
    k = get_kernels(model, "c")
    s0, s1, s2 = k.stats
    assert s0["filter"] == 0
    assert s0["mean"] == pytest.approx(1.0) and s0["std"] == pytest.approx(0.0)
    assert s0["min"] == 1.0 and s0["max"] == 1.0
    assert s0["l2_norm"] == pytest.approx(math.sqrt(3 * 3 * 2))
    assert s0["abs_mean"] == pytest.approx(1.0)
    vals = np.arange(18) - 9.0
    assert s1["mean"] == pytest.approx(-0.5)
    assert s1["std"] == pytest.approx(float(np.std(vals)))
    assert (s1["min"], s1["max"]) == (-9.0, 8.0)
    assert s1["l2_norm"] == pytest.approx(math.sqrt(float((vals**2).sum())))
    assert s1["abs_mean"] == pytest.approx(float(np.abs(vals).mean()))
    assert s2["mean"] == pytest.approx(-2.0) and s2["abs_mean"] == pytest.approx(2.0)
    assert s2["l2_norm"] == pytest.approx(2.0 * math.sqrt(18))
    np.testing.assert_array_equal(k.bias, [0.5, 0.0, -1.0])


def test_kernel_errors(toy, unet):
    with pytest.raises(UnetCoreError, match=r"no layer named 'nope'.*accepted: conv layers conv"):
        get_kernels(toy, "nope")
    with pytest.raises(UnetCoreError, match=r"'dense_maps' \(Dense\) has no 2-D spatial kernel"):
        get_kernels(toy, "dense_maps")
    with pytest.raises(UnetCoreError, match=r"\(BatchNormalization\).*accepted: conv layers"):
        get_kernels(unet, "enc0a_bn")
    msg = str(pytest.raises(UnetCoreError, get_kernels, unet, "x").value)
    assert "\n" not in msg and "(18 in all)" in msg
    k = get_kernels(toy, "conv")
    with pytest.raises(UnetCoreError, match=r"output filter index 3 .*accepted: 0\.\.2"):
        k.filter(3, 0)
    with pytest.raises(UnetCoreError, match=r"input channel index 2 .*accepted: 0\.\.1"):
        k.filter(0, 2)
    with pytest.raises(UnetCoreError, match=r"accepted: 0\.\.2"):
        k.filter(-1, 0)
    with pytest.raises(UnetCoreError, match="not an integer"):
        k.filter(1.5, 0)  # type: ignore[arg-type]


def test_weight_histogram(toy, unet):
    counts, edges = weight_histogram(unet, "enc1b_conv", bins=10)
    kernel = unet.get_layer("enc1b_conv").kernel.numpy()
    assert counts.shape == (10,) and edges.shape == (11,)
    assert counts.sum() == kernel.size
    assert edges[0] == pytest.approx(kernel.min()) and edges[-1] == pytest.approx(kernel.max())
    counts, _ = weight_histogram(toy, "sep")  # both kernels of a separable conv
    layer = toy.get_layer("sep")
    assert counts.shape == (50,)
    assert counts.sum() == layer.depthwise_kernel.numpy().size + layer.pointwise_kernel.numpy().size
    assert weight_histogram(toy, "dense_maps", bins=4)[0].sum() == 5 * 6
    with pytest.raises(UnetCoreError, match="accepted: layers with kernels"):
        weight_histogram(unet, "enc0a_relu")
    with pytest.raises(UnetCoreError, match="bins"):
        weight_histogram(unet, "mask", bins=0)


# -- activations ---------------------------------------------------------------------------------
def _slow_maps(model, name, x):
    sub = keras.Model(model.inputs[0], model.get_layer(name).output)
    batch = (x[..., None] if x.ndim == 2 else x)[None].astype(np.float32)
    return sub(batch, training=False).numpy()[0]


def test_probe_matches_per_layer_models(unet):
    rng = np.random.default_rng(0)
    x = rng.random((32, 40), dtype=np.float32)
    probe = ActivationProbe(unet)
    assert probe.layer_names == activation_layers(unet)
    maps = probe.run(x)
    assert list(maps) == probe.layer_names
    assert probe.forward_passes == 1
    for m in maps.values():
        assert m.dtype == np.float32
        assert m.ndim == 3
    assert maps["enc0a_conv"].shape == (32, 40, 4)
    assert maps["bottleneck_add"].shape == (8, 10, 16)
    assert maps["mask"].shape == (32, 40, 1)
    for name in ("enc0a_relu", "enc1_pool", "bottleneck_dropout", "dec1_up", "dec0_concat",
                 "mask"):
        np.testing.assert_allclose(maps[name], _slow_maps(unet, name, x), atol=1e-5, rtol=1e-5)


def test_probe_one_pass_per_run_no_retrace(unet):
    probe = ActivationProbe(unet, layers=["dec0_add", "enc0a_relu", "enc0a_relu"])
    assert probe.layer_names == ["enc0a_relu", "dec0_add"]  # model order, no duplicates
    rng = np.random.default_rng(1)
    a = probe.run(rng.random((16, 16), dtype=np.float32))
    b = probe.run(rng.random((24, 32), dtype=np.float32))
    assert probe.forward_passes == 2
    _ = a["enc0a_relu"], a["dec0_add"], b["dec0_add"], b["enc0a_relu"]  # switching layers
    assert probe.forward_passes == 2
    assert b["dec0_add"].shape == (24, 32, 4)
    assert probe._forward.experimental_get_tracing_count() == 1


def test_probe_errors_and_max_bytes(unet):
    with pytest.raises(UnetCoreError, match=r"cannot probe layer\(s\) 'image'.*accepted"):
        ActivationProbe(unet, layers=["image"])
    with pytest.raises(UnetCoreError, match="no layers to probe"):
        ActivationProbe(unet, layers=[])
    probe = ActivationProbe(unet, layers=["enc0a_conv", "enc1_pool", "dec1_up"])
    with pytest.raises(UnetCoreError, match=r"accepted: one prepared image \(Hp, Wp\)"):
        probe.run(np.zeros((2, 16, 16), np.float32))
    x = np.zeros((32, 32), np.float32)
    maps = probe.run(x)
    assert probe.estimate_bytes(32, 32) == sum(m.nbytes for m in maps.values())
    small = ActivationProbe(unet, layers=["enc0a_conv"], max_bytes=32 * 32 * 4 * 4 - 1)
    with pytest.raises(UnetCoreError, match="MiB limit; accepted: a smaller image or fewer"):
        small.run(x)
    assert small.forward_passes == 0
    assert ActivationProbe(unet, layers=["enc0a_conv"], max_bytes=None).run(x)["enc0a_conv"].size


def test_probe_sequential_and_fixed_size(toy):
    probe = ActivationProbe(toy)
    assert probe.layer_names == ["conv", "up", "dw", "sep", "dense_maps"]
    maps = probe.run(np.ones((5, 7, 2), np.float32))
    assert maps["conv"].shape == (5, 7, 3) and maps["dense_maps"].shape == (10, 14, 6)
    assert probe.estimate_bytes(5, 7) == sum(m.nbytes for m in maps.values())
    np.testing.assert_allclose(maps["sep"], _slow_maps(toy, "sep", np.ones((5, 7, 2))), atol=1e-5)
    fixed = build_unet(base_filters=2, depth=1, input_size=(16, 16), dropout=0.0)
    fprobe = ActivationProbe(fixed, layers=["enc0_pool"])
    assert fprobe.run(np.zeros((16, 16), np.float32))["enc0_pool"].shape == (8, 8, 2)
    with pytest.raises(UnetCoreError, match="accepted: the network's fixed size 16x16"):
        fprobe.run(np.zeros((32, 32), np.float32))


def test_channel_stats_hand_checked():
    maps = np.zeros((2, 2, 3), np.float32)
    maps[..., 1] = [[1.0, 2.0], [3.0, 4.0]]
    maps[..., 2] = [[0.0, -1.0], [0.0, 1.0]]
    s = channel_stats(maps)
    assert all(isinstance(c, ChannelStats) for c in s)
    assert s[0].zero_fraction == 1.0 and s[0].std == 0.0
    assert (s[1].mean, s[1].min, s[1].max, s[1].zero_fraction) == (2.5, 1.0, 4.0, 0.0)
    assert s[1].std == pytest.approx(float(np.std([1, 2, 3, 4])))
    assert s[2].zero_fraction == 0.5 and s[2].channel == 2
    with pytest.raises(UnetCoreError, match=r"accepted: \(H, W, C\)"):
        channel_stats(np.zeros((4, 4)))


def test_channel_stats_on_relu(unet):
    rng = np.random.default_rng(2)
    relu = ActivationProbe(unet, layers=["enc0a_relu"]).run(
        rng.random((32, 32), dtype=np.float32))["enc0a_relu"]
    stats = channel_stats(relu)
    assert len(stats) == 4
    for c, st in enumerate(stats):
        assert st.zero_fraction == pytest.approx(float((relu[..., c] == 0).mean()))
        assert st.min >= 0.0
    assert any(st.zero_fraction > 0 for st in stats)


# -- cropping ------------------------------------------------------------------------------------
def test_crop_activation_101_in_128():
    _, box = pad_to_multiple(np.zeros((101, 101), np.float32), 128)
    assert box == PadBox(14, 14, 101, 101)
    full = np.arange(128 * 128 * 2, dtype=np.float32).reshape(128, 128, 2)
    np.testing.assert_array_equal(crop_activation(full, box, (128, 128)), full[14:115, 14:115])
    quarter = np.arange(32 * 32 * 3, dtype=np.float32).reshape(32, 32, 3)
    out = crop_activation(quarter, box, (128, 128))
    # rows 14..114 at stride 4: floor(14/4)=3 .. ceil(115/4)=29 (exclusive)
    np.testing.assert_array_equal(out, quarter[3:29, 3:29])
    # non-square, asymmetric box; 2-D maps accepted
    box2 = PadBox(top=0, left=5, height=64, width=50)
    out2 = crop_activation(np.ones((16, 16)), box2, (64, 64))
    assert out2.shape == (16, 13)  # cols floor(5/4)=1 .. ceil(55/4)=14 (exclusive)


def test_crop_activation_with_probe(unet):
    rng = np.random.default_rng(3)
    padded, box = pad_to_multiple(rng.random((101, 101), dtype=np.float32), 128)
    maps = ActivationProbe(unet, layers=["enc0a_conv", "bottleneck_add"]).run(padded)
    assert crop_activation(maps["enc0a_conv"], box, padded.shape).shape == (101, 101, 4)
    assert crop_activation(maps["bottleneck_add"], box, padded.shape).shape == (26, 26, 16)
    with pytest.raises(UnetCoreError, match="does not fit the padded size"):
        crop_activation(maps["enc0a_conv"], PadBox(20, 0, 120, 10), (128, 128))


def test_model_flops_matches_hand_count():
    import keras

    from unet_core.introspect import model_flops

    inp = keras.Input((None, None, 1))
    out = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inp)
    conv = keras.Model(inp, out)
    # 8x8 outputs x 4 filters x (3x3x1) multiply-adds x 2 operations each
    assert model_flops(conv, 8, 8) == 8 * 8 * 4 * 9 * 2
    assert model_flops(conv, 16, 8) == 2 * model_flops(conv, 8, 8)


def test_layer_activation_names_what_a_layer_ends_with():
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        keras.Input((None, None, 1)),
        layers.Conv2D(2, 3, padding="same", activation="relu", name="c_relu"),
        layers.Conv2D(2, 3, padding="same", name="c_linear"),
        layers.ReLU(name="relu_layer"),
        layers.Conv2D(1, 1, activation="sigmoid", name="c_sigmoid"),
        layers.Activation("softmax", name="act_softmax"),
    ])
    assert [layer_activation(model, n) for n in
            ("c_relu", "c_linear", "relu_layer", "c_sigmoid", "act_softmax")] == [
        "relu", "linear", "relu", "sigmoid", "softmax"]
    assert layer_activation(model, "missing") == ""
