"""Seg-Grad-CAM and gradient saliency (unet_core.explain) on constructed models whose answer is
known by hand, the Adebayo et al. sanity check, regions at borders and on padding, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from unet_core.errors import UnetCoreError
from unet_core.explain import (
    ONNX_REFUSAL,
    GradCam,
    Region,
    cam_colormap_lut,
    cam_overlay_rgb,
    explain_image,
    parse_region,
    region_mask,
)
from unet_core.model import ModelCard, from_keras

ROOT_MODELS = __import__("pathlib").Path(__file__).resolve().parents[1] / "models"


def _const(value):
    import keras

    return keras.initializers.Constant(value)


def ones_model(w: float = 2.0, b: float = -1.0, **card):
    """input -> 'feat' (1x1 conv, kernel 1, no bias) -> 'out' (1x1 sigmoid conv, w, b).

    The logit is w * x + b; d score / d feat = w at every pixel of the region, so for the
    whole image the map of 'feat' is relu(w * x) / max = x / max x.
    """
    import keras

    inp = keras.Input((None, None, 1))
    feat = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer=_const(1.0),
                               name="feat")(inp)
    out = keras.layers.Conv2D(1, 1, activation="sigmoid", kernel_initializer=_const(w),
                              bias_initializer=_const(b), name="out")(feat)
    return from_keras(keras.Model(inp, out, name="ones"),
                      ModelCard(name="ones", **{"padding_mode": "constant", **card}))


@pytest.fixture(scope="module")
def ones():
    return GradCam(ones_model())


@pytest.fixture(scope="module")
def salt():
    from unet_core.model import load_model

    path = ROOT_MODELS / "salt.keras"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return load_model(path)


@pytest.fixture(scope="module")
def salt_cam(salt):
    return GradCam(salt)


# -- 1. 1x1 convs: the map is the normalised input ------------------------------------------------
def test_one_by_one_model_map_is_normalised_input(ones):
    x = np.random.default_rng(0).uniform(0.05, 0.9, (7, 9)).astype(np.float32)
    assert ones.layers == ["feat", "out"]
    assert ones.default_layer == "feat"  # never the output conv
    e = ones.explain(x, Region("all"))["feat"]
    np.testing.assert_allclose(e.cam, x / x.max(), atol=1e-6)
    assert e.cam.dtype == np.float32 and e.cam.shape == (7, 9) and e.cam.max() == 1.0
    assert e.score == pytest.approx(float((2 * x.astype(np.float64) - 1).sum()), rel=1e-5)
    assert e.peak == pytest.approx(2 * float(x.max()), rel=1e-5)  # relu(w * x), w = 2
    assert e.method == "seg-grad-cam" and e.mask.all() and e.notes == []


def test_all_zero_image_gives_all_zero_map(ones):
    e = ones.explain(np.zeros((5, 6), np.float32), "all", layers="feat")["feat"]
    assert e.peak == 0.0 and not e.cam.any() and e.cam.shape == (5, 6)
    assert any("all zeros" in n for n in e.notes)


def test_explain_image_and_saliency_of_one_by_one_model():
    loaded = ones_model()
    x = np.random.default_rng(1).uniform(0.1, 1.0, (6, 5)).astype(np.float32)
    e = explain_image(loaded, x, "all")
    assert e.layer == "feat"
    np.testing.assert_allclose(e.cam, x / x.max(), atol=1e-6)
    # d score / d x = w * 1 at every pixel of M, 0 elsewhere: saliency is the region itself
    s = explain_image(loaded, x, "1,2,4,5", method="saliency")
    assert s.layer == "input" and s.peak == pytest.approx(2.0)
    expected = np.zeros((6, 5), np.float32)
    expected[2:5, 1:4] = 1.0
    np.testing.assert_array_equal(s.cam, expected)
    with pytest.raises(UnetCoreError, match="accepted: seg-grad-cam, saliency"):
        explain_image(loaded, x, "all", method="lime")


# -- 2. a model that only looks at the left half -------------------------------------------------
def left_half_model():
    import keras

    keras.utils.set_random_seed(3)
    inp = keras.Input((16, 16, 1))
    left = keras.layers.Cropping2D(((0, 0), (0, 8)))(inp)
    c = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="left_conv")(left)
    c = keras.layers.ZeroPadding2D(((0, 0), (0, 8)))(c)
    post = keras.layers.Conv2D(4, 1, use_bias=False, name="post")(c)
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="out")(post)
    return from_keras(keras.Model(inp, out, name="left"),
                      ModelCard(name="left", input_size=[16, 16], fit="pad"))


def test_left_half_model_gives_zero_on_the_right():
    cam = GradCam(left_half_model())
    x = np.random.default_rng(2).uniform(0.0, 1.0, (16, 16)).astype(np.float32)
    for region in ("all", "3,5", "0,0,16,16"):
        e = cam.explain(x, region, layers=["post"])["post"]
        assert e.peak > 0 and e.cam[:, :8].max() == 1.0
        assert not e.cam[:, 8:].any()  # exactly zero
        s = cam.saliency(x, region)
        assert s.peak > 0 and s.cam[:, :8].max() == 1.0
        assert not s.cam[:, 8:].any()


def test_image_the_model_would_tile_is_refused():
    cam = GradCam(left_half_model())
    with pytest.raises(UnetCoreError, match="accepted: images up to 16x16") as exc:
        cam.explain(np.zeros((20, 20), np.float32), "all")
    assert "\n" not in str(exc.value)


# -- 3. Adebayo et al.: randomised weights change the map ----------------------------------------
@pytest.mark.slow
def test_randomised_weights_change_the_map(salt, salt_cam):
    import keras

    from unet_core.model import LoadedModel
    from unet_core.synthetic import seismic_section

    keras.utils.set_random_seed(1)
    random = GradCam(LoadedModel(model=keras.models.clone_model(salt.model), card=salt.card))
    img, _ = seismic_section((101, 101), seed=0, salt=True)
    layers = ["dec0b_conv", "enc1b_conv"]
    trained = salt_cam.explain(img, "50,50", layers=layers)
    randomised = random.explain(img, "50,50", layers=layers)
    for name in layers:
        a, b = trained[name].cam.ravel(), randomised[name].cam.ravel()
        assert a.std() > 0 and b.std() > 0
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.5  # measured: |r| < 0.05
    a, b = salt_cam.saliency(img, "all").cam, random.saliency(img, "all").cam
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.5
    # the same weights give the same map (the test is not just noise)
    again = salt_cam.explain(img, "50,50", layers=layers)
    np.testing.assert_array_equal(again["dec0b_conv"].cam, trained["dec0b_conv"].cam)


# -- 4. regions at borders, on padding, fit resize -----------------------------------------------
def test_parse_region_and_key_round_trip():
    cases = {"all": Region("all"), "mask": Region("mask"), "component": Region("component"),
             "component:3,4": Region("component", x=3, y=4), "12, 40": Region("pixel", 12, 40),
             "0,10,32,21": Region("box", box=(0, 10, 32, 21))}
    for text, region in cases.items():
        assert parse_region(text) == region
        assert parse_region(region.key()) == region
    assert Region("box", box=(0, 10, 32, 21)).describe() == "box x 0-31, y 10-20"
    assert Region("pixel", 12, 40).describe() == "pixel (12, 40)"
    for bad in ("", "al", "1,2,3", "1;2", "-1,2", "component:1", "3,3,3,5"):
        with pytest.raises(UnetCoreError, match="accepted") as exc:
            parse_region(bad)
        assert "\n" not in str(exc.value)


def test_region_mask_borders_and_clipping():
    m = region_mask(Region("pixel", 8, 6), (7, 9))  # (W-1, H-1)
    assert m.sum() == 1 and m[6, 8]
    with pytest.raises(UnetCoreError, match=r"\(9, 6\) is outside the image \(x 0..8, y 0..6\)"):
        region_mask(Region("pixel", 9, 6), (7, 9))
    box = region_mask(parse_region("5,4,50,50"), (7, 9))  # partly outside: clipped
    assert box.sum() == (9 - 5) * (7 - 4) and box[4:, 5:].all()
    assert region_mask(parse_region("0,0,9,7"), (7, 9)).all()  # touching every edge
    with pytest.raises(UnetCoreError, match=r"outside the image \(x 0..8, y 0..6\)"):
        region_mask(parse_region("9,0,12,3"), (7, 9))


def test_region_mask_from_probabilities():
    prob = np.zeros((6, 8), np.float32)
    prob[0:2, 0:2] = 0.9  # 4 px
    prob[3:6, 4:8] = 0.8  # 12 px, the largest component
    assert region_mask(Region("mask"), (6, 8), prob).sum() == 16
    assert region_mask(Region("component"), (6, 8), prob).sum() == 12
    assert region_mask(parse_region("component:1,1"), (6, 8), prob).sum() == 4
    assert region_mask(Region("mask"), (6, 8), prob, 0.5, min_area=16).sum() == 16
    with pytest.raises(UnetCoreError, match="not in the predicted mask"):
        region_mask(parse_region("component:7,0"), (6, 8), prob)
    with pytest.raises(UnetCoreError, match="empty at threshold 0.95"):
        region_mask(Region("mask"), (6, 8), prob, 0.95)
    with pytest.raises(UnetCoreError, match="empty at threshold 0.5, minimum area 17 px"):
        region_mask(Region("mask"), (6, 8), prob, 0.5, 17)
    with pytest.raises(UnetCoreError, match="needs the probability map"):
        region_mask(Region("mask"), (6, 8))


def test_padded_image_map_is_exactly_the_image_and_padding_is_never_scored():
    loaded = ones_model(multiple_of=4, min_size=8)
    cam = GradCam(loaded)
    x = np.random.default_rng(4).uniform(0.1, 0.9, (13, 10)).astype(np.float32)
    net, box = cam.segmenter.prepare(x)
    assert net.shape[:2] == (16, 12) and box.height == 13  # padded (zeros: constant mode)
    e = cam.explain(x, "all", layers="feat")["feat"]
    assert e.cam.shape == (13, 10) and e.mask.sum() == 130
    np.testing.assert_allclose(e.cam, x / x.max(), atol=1e-6)
    # padded pixels (x = 0, logit -1) would lower the score if they were in M
    assert e.score == pytest.approx(float((2 * x.astype(np.float64) - 1).sum()), rel=1e-5)
    corner = cam.explain(x, "9,12", layers="feat")["feat"]  # pixel (W-1, H-1)
    assert corner.score == pytest.approx(2 * float(x[12, 9]) - 1, rel=1e-5)
    # one channel: alpha = mean gradient = w / (16 * 12) > 0 only scales the map, so a pixel
    # region gives the same map as the whole image
    assert corner.peak == pytest.approx(2 / (16 * 12) * float(x.max()), rel=1e-5)
    np.testing.assert_allclose(corner.cam, x / x.max(), atol=1e-6)
    with pytest.raises(UnetCoreError, match=r"\(10, 12\) is outside the image \(x 0..9, y 0"):
        cam.explain(x, "10,12")  # a padded pixel
    clipped = cam.explain(x, "6,10,40,40", layers="feat")["feat"]
    assert clipped.mask.sum() == 4 * 3
    assert clipped.score == pytest.approx(float((2 * x[10:, 6:].astype(np.float64) - 1).sum()),
                                          rel=1e-5)


def test_fit_resize_model_regions(own_models):
    from unet_core.model import load_model

    cam = GradCam(load_model(own_models / "three.keras"))  # 32x32 RGB softmax, fit resize
    rng = np.random.default_rng(5)
    small = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    e = cam.explain(small, "29,19")  # pixel (W-1, H-1)
    assert set(e) == set(cam.layers)
    one = e[cam.default_layer]
    assert one.cam.shape == (20, 30) and one.cam.dtype == np.float32
    assert one.cam.min() >= 0.0 and one.cam.max() <= 1.0 and one.mask.sum() == 1
    # a pixel of a larger image that no nearest sample hits still scores its own network pixel
    big = rng.integers(0, 256, (100, 90, 3), dtype=np.uint8)
    z = cam.logits(big)[..., one.class_index]
    for x, y in ((0, 0), (89, 99), (44, 50)):
        s = cam.saliency(big, f"{x},{y}")
        assert s.score == pytest.approx(float(z[y * 32 // 100, x * 32 // 90]), rel=1e-4,
                                        abs=1e-5)
        assert s.cam.shape == (100, 90)


# -- 5. softmax: the class logit, and the background ---------------------------------------------
def softmax_model():
    """feat = (x, -x); logits = feat @ W; with zscore input x has both signs.

    For class k, alpha = W[:, k] and the map is relu((W0k - W1k) x): where x > 0 for a class
    with W0k > W1k, and exactly the other pixels for its background (the score negated).
    """
    import keras

    inp = keras.Input((None, None, 1))
    feat = keras.layers.Conv2D(2, 1, use_bias=False, name="feat",
                               kernel_initializer=_const(np.array([[[[1.0, -1.0]]]])))(inp)
    w = np.array([[[[0.5, 2.0, -1.0], [0.1, -0.5, 1.0]]]])
    out = keras.layers.Conv2D(3, 1, activation="softmax", name="out",
                              kernel_initializer=_const(w),
                              bias_initializer=_const(np.array([0.0, 0.3, -0.2])))(feat)
    card = ModelCard(name="soft", classes=["bg", "a", "b"], normalisation="zscore")
    return from_keras(keras.Model(inp, out, name="soft"), card), w


def test_softmax_class_logit_and_background():
    loaded, w = softmax_model()
    cam = GradCam(loaded)
    img = np.random.default_rng(6).uniform(0.0, 1.0, (8, 8)).astype(np.float32)
    x = cam.segmenter.prepare(img)[0][..., 0].astype(np.float64)
    assert (x > 0).any() and (x < 0).any()
    fg = cam.explain(img, "all", layers="feat")["feat"]  # default class 1 ("a")
    assert fg.class_index == 1
    logit = (w[0, 0, 0, 1] - w[0, 0, 1, 1]) * x + 0.3  # 2.5 x + 0.3
    assert fg.score == pytest.approx(float(logit.sum()), rel=1e-5, abs=1e-4)
    np.testing.assert_allclose(fg.cam, np.maximum(x, 0) / x.max(), atol=1e-6)
    bg = cam.explain(img, "all", layers="feat", background=True)["feat"]
    assert bg.score == pytest.approx(-fg.score, rel=1e-6) and bg.background
    np.testing.assert_allclose(bg.cam, np.maximum(-x, 0) / (-x).max(), atol=1e-6)
    assert not (fg.cam * bg.cam).any()  # complementary supports
    other = cam.explain(img, "all", layers="feat", class_index=2)["feat"]  # relu(-2 x)
    np.testing.assert_allclose(other.cam, bg.cam, atol=1e-6)
    with pytest.raises(UnetCoreError, match="class 3 is not a class of soft"):
        cam.explain(img, "all", class_index=3)


# -- 6. the logit is the true pre-activation; the default layer is the bottleneck ----------------
def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


def test_logit_from_activation_layer_and_from_logits_card():
    import keras

    keras.utils.set_random_seed(7)
    inp = keras.Input((None, None, 1))
    c = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="c1")(inp)
    z = keras.layers.Conv2D(1, 1, name="head")(c)
    act = keras.layers.Activation("sigmoid", name="act")(z)
    model = keras.Model(inp, act)
    img = np.random.default_rng(8).uniform(0.0, 1.0, (12, 12)).astype(np.float32)
    cam = GradCam(from_keras(model, ModelCard(name="act")))
    assert cam.exact_logit and "input of its sigmoid layer 'act'" in cam.logit_source
    x = cam.segmenter.prepare(img)[0][None]
    np.testing.assert_allclose(_sigmoid(cam.logits(img)), model(x).numpy()[0], atol=1e-5)
    assert cam.default_layer == "c1"  # not the output conv 'head'
    logits = keras.Model(inp, z)
    lcam = GradCam(from_keras(logits, ModelCard(name="lg", output="logits")))
    np.testing.assert_allclose(lcam.logits(img), logits(x).numpy()[0], atol=1e-6)


def test_logit_of_conv_with_sigmoid(ones):
    img = np.random.default_rng(9).uniform(0.0, 1.0, (5, 5)).astype(np.float32)
    np.testing.assert_allclose(ones.logits(img)[..., 0], 2 * img - 1, atol=1e-6)
    assert "'out' recomputed without its sigmoid" in ones.logit_source


def test_logit_found_behind_shape_only_layers():
    import keras

    keras.utils.set_random_seed(10)
    inp = keras.Input((None, None, 1))
    c = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="c1")(inp)
    y = keras.layers.Conv2D(1, 1, activation="sigmoid", name="head")(c)
    y = keras.layers.Dropout(0.3)(y)
    y = keras.layers.Activation("linear", name="lin")(y)
    model = keras.Model(inp, y)
    cam = GradCam(from_keras(model, ModelCard(name="deep")))
    assert cam.exact_logit and cam.default_layer == "c1"
    img = np.random.default_rng(11).uniform(0.0, 1.0, (9, 9)).astype(np.float32)
    x = cam.segmenter.prepare(img)[0][None]
    np.testing.assert_allclose(_sigmoid(cam.logits(img)), model(x).numpy()[0], atol=1e-5)


def test_averaging_ensemble_falls_back_to_log_odds_and_says_so():
    import keras

    inp = keras.Input((None, None, 1))
    outs = []
    for i, w in enumerate((1.0, 3.0)):
        outs.append(keras.layers.Conv2D(1, 1, activation="sigmoid", name=f"m{i}",
                                        kernel_initializer=_const(w))(inp))
    mean = keras.layers.Average(name="ensemble_mean")(outs)
    cam = GradCam(from_keras(keras.Model(inp, mean), ModelCard(name="ens")))
    assert not cam.exact_logit
    img = np.full((4, 4), 0.5, np.float32)
    p = (_sigmoid(np.float32(0.5)) + _sigmoid(np.float32(1.5))) / 2
    np.testing.assert_allclose(cam.logits(img), np.log(p / (1 - p)), atol=1e-5)
    e = cam.explain(img, "all", layers="m0")["m0"]
    assert any("log-odds" in n for n in e.notes)


def test_salt_model_logit_and_bottleneck(salt, salt_cam):
    from unet_core.synthetic import seismic_section

    assert salt_cam.default_layer == "bottleneckb_conv"
    assert salt_cam.layer_resolution("bottleneckb_conv") == (16, 16)
    assert salt_cam.layer_resolution("mask") == (1, 1) and salt_cam.default_layer != "mask"
    img, _ = seismic_section((101, 101), seed=2, salt=True)
    x = salt_cam.segmenter.prepare(img)[0][None]
    p = salt.model(x, training=False).numpy()[0]
    np.testing.assert_allclose(_sigmoid(salt_cam.logits(img)), p, atol=1e-5)
    with pytest.raises(UnetCoreError, match="accepted: conv layers enc0a_conv") as exc:
        salt_cam.explain(img, "all", layers=["nope"])
    assert "\n" not in str(exc.value)


# -- 7. ONNX is refused ---------------------------------------------------------------------------
def test_onnx_model_is_refused(onnx_models):
    from unet_core.model import load_model

    with pytest.raises(UnetCoreError) as exc:
        GradCam(load_model(onnx_models / "nchw_gray.onnx"))
    assert str(exc.value) == ONNX_REFUSAL


def test_nested_model_is_refused():
    import keras

    inp = keras.Input((None, None, 1))
    inner = keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(inp), name="inner")
    outer_in = keras.Input((None, None, 1))
    outer = keras.Model(outer_in, inner(outer_in), name="outer")
    with pytest.raises(UnetCoreError, match="no convolution layer at the model's top level"):
        GradCam(from_keras(outer, ModelCard(name="outer")))


# -- overlay ---------------------------------------------------------------------------------------
def test_cam_overlay_rgb():
    lut = cam_colormap_lut()
    assert lut.shape == (256, 3) and tuple(lut[0]) == (68, 1, 84)
    assert tuple(lut[255]) == (253, 231, 37)
    img = np.array([[0, 255], [128, 64]], np.uint8)
    cam = np.array([[0.0, 1.0], [0.5, 0.0]], np.float32)
    only = cam_overlay_rgb(img, cam, alpha=0.0)
    np.testing.assert_array_equal(only, np.repeat(img[..., None], 3, axis=2))
    full = cam_overlay_rgb(img, cam, alpha=1.0)
    assert tuple(full[0, 1]) == (253, 231, 37) and tuple(full[0, 0]) == (68, 1, 84)
    half = cam_overlay_rgb(np.zeros((2, 2, 3), np.uint16), cam)
    assert half.dtype == np.uint8 and tuple(half[0, 1]) == (126, 116, 18)  # 0.5 * lut
    with pytest.raises(UnetCoreError, match="image's size"):
        cam_overlay_rgb(img, np.zeros((3, 3)))


# -- 8. CLI ---------------------------------------------------------------------------------------
def _run(capsys, *argv: str) -> tuple[int, str, str]:
    from unet_core.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    from unet_core.io import write_image_png
    from unet_core.synthetic import seismic_section

    path = tmp_path_factory.mktemp("explain_img") / "sect.png"
    write_image_png(path, seismic_section((37, 45), seed=4, salt=True)[0])
    return path


def test_cli_explain_writes_map_and_overlay(capsys, tiny_model_path, image_file, tmp_path):
    from PIL import Image

    out = tmp_path / "out"
    code, text, err = _run(capsys, "explain", "--model", str(tiny_model_path), str(image_file),
                           "--out", str(out))
    assert code == 0, err
    cam = np.load(out / "sect_cam.npy")
    assert cam.shape == (37, 45) and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() == pytest.approx(1.0)
    png = np.asarray(Image.open(out / "sect_cam.png"))
    assert png.shape == (37, 45, 3) and png.dtype == np.uint8
    assert text.splitlines()[0].startswith("layer: ")
    assert "(default: the bottleneck, stride 4)" in text.splitlines()[0]
    assert "region: whole image (1,665 px)" in text and "wrote " in text
    assert sorted(p.name for p in out.iterdir()) == ["sect_cam.npy", "sect_cam.png"]
    code, text, err = _run(capsys, "explain", "--model", str(tiny_model_path), str(image_file),
                           "--out", str(out), "--method", "saliency", "--region", "44,36",
                           "--background")
    assert code == 0, err
    assert "layer: input" in text and "pixel (44, 36)" in text and "negated" in text


def test_cli_explain_bad_input_is_one_line(capsys, tiny_model_path, image_file, tmp_path,
                                           onnx_models):
    base = ("explain", "--model", str(tiny_model_path), str(image_file), "--out",
            str(tmp_path / "o"))
    code, _, err = _run(capsys, *base, "--layer", "nope")
    assert code == 2 and err.count("\n") == 1
    assert "no layer named 'nope'" in err and "accepted: conv layers" in err
    code, _, err = _run(capsys, *base, "--region", "1,2,3")
    assert code == 2 and err.count("\n") == 1 and "accepted: all, mask" in err
    code, _, err = _run(capsys, *base, "--region", "45,0")
    assert code == 2 and err.count("\n") == 1 and "outside the image (x 0..44, y 0..36)" in err
    code, _, err = _run(capsys, *base, "--region", "mask", "--threshold", "1")
    assert code == 2 and err.count("\n") == 1
    assert "the predicted mask is empty at threshold 1; accepted:" in err
    code, _, err = _run(capsys, "explain", "--model", str(onnx_models / "nchw_gray.onnx"),
                        str(image_file), "--out", str(tmp_path / "o"))
    assert code == 2 and err.strip() == f"error: {ONNX_REFUSAL}"
    assert not (tmp_path / "o").exists()


# -- the bundled salt model on a real TGS image ---------------------------------------------------
@pytest.mark.slow
def test_salt_model_on_a_real_tgs_image(salt, salt_cam):
    from conftest import shared_dataset

    from unet_core.io import read_mask, read_raw

    root = shared_dataset("tgs_salt")
    # a held-out image with a good share of salt (first in name order with 30-70 % coverage)
    names = (ROOT_MODELS / "salt.heldout.txt").read_text().split()
    for name in names:
        truth = read_mask(root / "masks" / name)
        if 0.3 < truth.mean() < 0.7:
            break
    image = read_raw(root / "images" / name)
    e = salt_cam.explain(image, "mask")[salt_cam.default_layer]
    assert e.cam.shape == (101, 101) and e.peak > 0 and e.score > 0
    assert e.mass_inside > 0.5  # the map sits mostly on the predicted salt
