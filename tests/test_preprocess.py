"""unet_core.preprocess on hand-computed cases: channel mapping, every value scaling, the
bilinear resize (against tf.image.resize) and the display image."""

from __future__ import annotations

import numpy as np
import pytest

from unet_core.errors import UnetCoreError
from unet_core.model import ModelCard
from unet_core.preprocess import (
    display_image,
    image_channels,
    map_channels,
    model_input,
    resize_bilinear,
    scale_values,
    unit_scale,
)

# -- channels ---------------------------------------------------------------------------------


def test_gray_is_replicated_to_three_channels():
    gray = np.array([[0, 10], [20, 255]], np.uint8)
    out = map_channels(gray, 3)
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], [[0, 10], [20, 255]])
    gray_alpha = np.stack([gray, np.full_like(gray, 7)], axis=-1)  # alpha ignored
    np.testing.assert_array_equal(map_channels(gray_alpha, 3), out)
    np.testing.assert_array_equal(map_channels(gray, 3, "bgr"), out)  # all channels alike
    np.testing.assert_array_equal(map_channels(gray, 1)[..., 0], gray)


def test_rgb_to_one_channel_is_luma():
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 10, 10]]], np.uint8)
    out = map_channels(rgb, 1)
    assert out.shape == (2, 2, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], [[76.245, 149.685], [29.07, 10.0]], atol=1e-4)
    rgba = np.concatenate([rgb, np.full((2, 2, 1), 128, np.uint8)], axis=-1)
    np.testing.assert_allclose(map_channels(rgba, 1), out, atol=1e-6)


def test_rgba_to_three_drops_alpha_and_four_bands_are_kept():
    px = np.array([[[1, 2, 3, 4]]], np.uint16)
    np.testing.assert_array_equal(map_channels(px, 3), [[[1, 2, 3]]])
    np.testing.assert_array_equal(map_channels(px, 4), [[[1, 2, 3, 4]]])


def test_bgr_reverses_the_first_three_channels():
    px = np.array([[[1, 2, 3]]], np.uint8)
    np.testing.assert_array_equal(map_channels(px, 3, "bgr"), [[[3, 2, 1]]])
    np.testing.assert_array_equal(map_channels(np.array([[[1, 2, 3, 4]]]), 4, "bgr"),
                                  [[[3, 2, 1, 4]]])
    np.testing.assert_array_equal(map_channels(np.array([[[1, 2, 3, 4]]]), 3, "bgr"),
                                  [[[3, 2, 1]]])  # RGBA: alpha dropped, then reversed
    five = np.arange(5, dtype=np.float32).reshape(1, 1, 5)
    np.testing.assert_array_equal(map_channels(five, 5, "bgr"), [[[2, 1, 0, 3, 4]]])


@pytest.mark.parametrize(("shape", "channels", "found"), [
    ((4, 4, 5), 3, "5 channels but the model takes 3"),
    ((4, 4, 3), 5, "3 channels but the model takes 5"),
    ((4, 4, 4), 2, "4 channels but the model takes 2"),
])
def test_unmappable_channels_are_one_line_errors(shape, channels, found):
    with pytest.raises(UnetCoreError) as exc:
        map_channels(np.zeros(shape, np.uint8), channels)
    msg = str(exc.value)
    assert found in msg and "accepted" in msg and "\n" not in msg


def test_bad_images_and_orders():
    with pytest.raises(UnetCoreError, match="channel order"):
        map_channels(np.zeros((2, 2)), 1, "hsv")
    with pytest.raises(UnetCoreError, match="NaN"):
        map_channels(np.array([[np.nan, 0.0]]), 1)
    with pytest.raises(UnetCoreError, match="empty"):
        map_channels(np.zeros((0, 3)), 1)
    with pytest.raises(UnetCoreError, match="shape"):
        map_channels(np.zeros((2, 2, 2, 2)), 1)
    assert image_channels(np.zeros((3, 3))) == 1 and image_channels(np.zeros((3, 3, 4))) == 4


# -- value scaling ----------------------------------------------------------------------------


def card(**kw) -> ModelCard:
    return ModelCard(**kw)


@pytest.mark.parametrize(("image", "expected"), [
    (np.array([[0, 51, 255]], np.uint8), [[0.0, 0.2, 1.0]]),
    (np.array([[0, 13107, 65535]], np.uint16), [[0.0, 0.2, 1.0]]),
    (np.array([[0, 13107, 65535]], np.int32), [[0.0, 0.2, 1.0]]),  # fits 0..65535
    (np.array([[0.0, 0.25, 1.0]], np.float32), [[0.0, 0.25, 1.0]]),
    (np.array([[-1.0, 1.0, 3.0]], np.float64), [[0.0, 0.5, 1.0]]),  # outside [0, 1]: min-max
    (np.array([[False, True, True]]), [[0.0, 1.0, 1.0]]),
])
def test_unit_divides_by_the_dtype_full_scale(image, expected):
    out = model_input(image, card(normalisation="unit"))
    assert out.dtype == np.float32 and out.shape == (1, 3, 1)
    np.testing.assert_allclose(out[..., 0], expected, atol=1e-6)


def test_unit_scale_offsets():
    assert unit_scale(np.zeros(3, np.uint8)) == (0.0, 255.0)
    assert unit_scale(np.zeros(3, np.uint16)) == (0.0, 65535.0)
    assert unit_scale(np.array([-2.0, 6.0])) == (-2.0, 8.0)
    assert unit_scale(np.array([70000, 70000], np.int64)) == (70000.0, 1.0)  # constant


def test_raw_keeps_the_values():
    img = np.array([[[0, 128, 255]]], np.uint8)
    out = model_input(img, card(channels=3, normalisation="raw"))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[[0.0, 128.0, 255.0]]])
    out = model_input(img, card(channels=3, normalisation="raw", channel_order="bgr"))
    np.testing.assert_array_equal(out, [[[255.0, 128.0, 0.0]]])


def test_minmax_over_the_whole_image():
    img = np.array([[[2, 4], [6, 10]]], np.uint8).transpose(1, 2, 0)  # (2, 2, 1)
    np.testing.assert_allclose(model_input(img, card(normalisation="minmax"))[..., 0],
                               [[0.0, 0.25], [0.5, 1.0]])
    # over all channels together, not per channel
    rgb = np.array([[[0, 50, 100], [100, 150, 200]]], np.uint8)
    np.testing.assert_allclose(model_input(rgb, card(channels=3, normalisation="minmax")),
                               [[[0.0, 0.25, 0.5], [0.5, 0.75, 1.0]]])
    assert not model_input(np.full((3, 3), 9, np.uint8), card(normalisation="minmax")).any()


def test_percentile_clips_to_the_card_percentiles():
    x = np.arange(101, dtype=np.float32).reshape(1, 101)  # percentile p of 0..100 is p
    out = model_input(x, card(normalisation="percentile", percentiles=[10, 90]))[0, :, 0]
    np.testing.assert_allclose(out[[0, 10, 50, 90, 100]], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    out = model_input(x, card(normalisation="percentile"))[0, :, 0]  # default 1, 99
    np.testing.assert_allclose(out[[1, 50, 99]], [0.0, 0.5, 1.0], atol=1e-6)
    assert not model_input(np.ones((4, 4)), card(normalisation="percentile")).any()  # flat


def test_zscore_with_eps():
    x = np.array([[1, 2, 3, 4]], np.uint8)
    sd = np.sqrt(1.25)
    np.testing.assert_allclose(model_input(x, card(normalisation="zscore"))[0, :, 0],
                               (np.array([1, 2, 3, 4]) - 2.5) / (sd + 1e-7), rtol=1e-6)
    # std 1e-7: the eps 1e-7 halves the result, (x - mean) / (1e-7 + 1e-7) = +-0.5
    tiny = np.array([[0.0, 2e-7]], np.float64)
    np.testing.assert_allclose(scale_values(tiny[..., None], "zscore")[0, :, 0], [-0.5, 0.5],
                               rtol=1e-3)
    assert not scale_values(np.full((2, 2, 1), 5.0), "zscore").any()
    # one mean and std over all pixels and channels
    rgb = np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8)
    np.testing.assert_allclose(model_input(rgb, card(channels=3, normalisation="zscore")),
                               [[[-1.0] * 3, [1.0] * 3]], atol=1e-6)


def test_meanstd_per_channel_on_the_unit_scale():
    px = np.array([[[255, 0, 51]]], np.uint8)
    c = card(channels=3, normalisation="meanstd", mean=[0.5, 0.5, 0.5], std=[0.5, 0.25, 0.2])
    np.testing.assert_allclose(model_input(px, c), [[[1.0, -2.0, -1.5]]], atol=1e-6)
    one = card(channels=3, normalisation="meanstd", mean=[0.2], std=[0.4])  # one for all
    np.testing.assert_allclose(model_input(px, one), [[[2.0, -0.5, 0.0]]], atol=1e-6)
    bgr = card(channels=3, normalisation="meanstd", channel_order="bgr",
               mean=[0.5, 0.5, 0.5], std=[0.5, 0.25, 0.2])  # statistics in network order
    np.testing.assert_allclose(model_input(px, bgr), [[[(0.2 - 0.5) / 0.5, -2.0, 2.5]]],
                               atol=1e-6)
    u16 = np.array([[[65535, 0, 13107]]], np.uint16)
    np.testing.assert_allclose(model_input(u16, c), [[[1.0, -2.0, -1.5]]], atol=1e-6)


def test_unknown_rule():
    with pytest.raises(UnetCoreError, match="accepted: unit, raw, minmax"):
        scale_values(np.zeros((2, 2, 1)), "imagenet")


# -- resize -----------------------------------------------------------------------------------


def test_resize_bilinear_by_hand():
    row = np.array([[0.0, 1.0]], np.float32)  # (1, 2) -> (1, 4): half-pixel centres
    np.testing.assert_allclose(resize_bilinear(row, (1, 4)), [[0.0, 0.25, 0.75, 1.0]])
    np.testing.assert_allclose(resize_bilinear(np.array([[0.0, 1.0, 2.0, 3.0]]), (1, 2)),
                               [[0.5, 2.5]])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    same = resize_bilinear(x, (2, 3))
    np.testing.assert_array_equal(same, x)
    assert same is not x


@pytest.mark.parametrize(("shape", "size"), [
    ((8, 8), (16, 16)),  # 2x up
    ((16, 16), (5, 7)),  # down, non-integer ratios
    ((13, 17, 3), (29, 10)),  # up in one axis, down in the other
    ((100, 3, 2), (7, 50)),
    ((31, 37, 5), (128, 128)),
    ((1104, 736, 3), (128, 128)),  # a photo to a network input
])
def test_resize_bilinear_matches_tf_image_resize(shape, size):
    import tensorflow as tf

    x = np.random.default_rng(sum(shape)).random(shape).astype(np.float32)
    ref = tf.image.resize(x if x.ndim == 3 else x[..., None], size, method="bilinear",
                          antialias=False).numpy()
    out = resize_bilinear(x, size)
    assert out.dtype == np.float32 and out.shape == (*size, *shape[2:])
    assert np.abs(out - (ref if x.ndim == 3 else ref[..., 0])).max() < 1e-5


def test_resize_keeps_probability_sums():
    p = np.random.default_rng(0).random((9, 11, 4)).astype(np.float32)
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(resize_bilinear(p, (40, 23)).sum(-1), 1.0, atol=1e-5)


# -- display ----------------------------------------------------------------------------------


def test_display_image():
    gray = np.array([[0, 51], [255, 102]], np.uint8)
    out = display_image(gray)
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_allclose(out, [[0.0, 0.2], [1.0, 0.4]], atol=1e-6)
    rgb = np.array([[[255, 0, 51]]], np.uint8)
    np.testing.assert_allclose(display_image(rgb), [[[1.0, 0.0, 0.2]]], atol=1e-6)
    rgba = np.array([[[255, 0, 51, 9]]], np.uint8)
    np.testing.assert_allclose(display_image(rgba), [[[1.0, 0.0, 0.2]]], atol=1e-6)
    gray_alpha = np.array([[[51, 255]]], np.uint8)
    np.testing.assert_allclose(display_image(gray_alpha), [[0.2]], atol=1e-6)
    bands = np.array([[[13107, 1, 2, 3, 4]]], np.uint16)  # 5 bands: the first one
    np.testing.assert_allclose(display_image(bands), [[0.2]], atol=1e-6)
    wide = np.array([[-1.0, 3.0]])  # float outside [0, 1]: min-max
    np.testing.assert_allclose(display_image(wide), [[0.0, 1.0]])
