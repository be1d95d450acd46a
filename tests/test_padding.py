import numpy as np
import pytest

from unet_core.errors import UnetCoreError
from unet_core.padding import (
    PAD_MODES,
    pad_to,
    pad_to_multiple,
    predict_tiled,
    round_up,
    split_padding,
    tile_starts,
)


def test_tgs_101_to_128_pads_14_before_13_after():
    assert split_padding(101, 128) == (14, 13)
    img = np.arange(101 * 101, dtype=np.float32).reshape(101, 101)
    padded, box = pad_to(img, 128, 128, "reflect")
    assert padded.shape == (128, 128)
    assert (box.top, box.left, box.height, box.width) == (14, 14, 101, 101)
    np.testing.assert_array_equal(box.crop(padded), img)
    # reflect mirrors without repeating the edge pixel
    np.testing.assert_array_equal(padded[13, 14:115], img[1])


@pytest.mark.parametrize("mode", PAD_MODES)
def test_every_mode_round_trips(mode):
    img = np.random.default_rng(0).random((37, 50)).astype(np.float32)
    padded, box = pad_to_multiple(img, 16, mode)
    assert padded.shape == (48, 64)
    np.testing.assert_array_equal(box.crop(padded), img)


def test_mode_values():
    row = np.array([[1.0, 2.0, 3.0]])
    assert pad_to(row, 1, 5, "constant")[0].tolist() == [[0, 1, 2, 3, 0]]
    assert pad_to(row, 1, 5, "edge")[0].tolist() == [[1, 1, 2, 3, 3]]
    assert pad_to(row, 1, 5, "reflect")[0].tolist() == [[2, 1, 2, 3, 2]]
    assert pad_to(row, 1, 5, "symmetric")[0].tolist() == [[1, 1, 2, 3, 3]]
    assert pad_to(row, 1, 5, "wrap")[0].tolist() == [[3, 1, 2, 3, 1]]


def test_one_pixel_wide_images_pad_in_mirror_modes():
    col = np.ones((7, 1), dtype=np.float32)
    padded, box = pad_to_multiple(col, 16, "reflect")
    assert padded.shape == (16, 16)
    assert box.crop(padded).shape == (7, 1)


def test_bad_mode_and_shrink_are_clear_errors():
    with pytest.raises(UnetCoreError, match="accepted: constant"):
        pad_to(np.zeros((4, 4)), 8, 8, "mirror")
    with pytest.raises(UnetCoreError, match="cannot pad"):
        split_padding(10, 8)


def test_round_up_and_tiles():
    assert round_up(101, 16) == 112
    assert round_up(1, 16) == 16
    assert tile_starts(300, 128, 32) == [0, 96, 172]
    assert tile_starts(100, 128, 32) == [0]


def test_predict_tiled_identity_is_exact():
    img = np.random.default_rng(1).random((300, 230)).astype(np.float32)
    out = predict_tiled(lambda b: b.copy(), img, (128, 128), overlap=32)
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, img, atol=1e-6)
