import numpy as np
import pytest

from unet_core.errors import UnetCoreError
from unet_core.inference import Segmenter, normalise_input
from unet_core.model import ModelCard, build_unet, from_keras, load_model


@pytest.fixture(scope="module")
def seg(tiny_model_path):
    return Segmenter(load_model(tiny_model_path))


def test_output_is_input_size_float32(seg):
    for shape in [(101, 101), (37, 50), (1, 9), (9, 1), (200, 64)]:
        img = np.random.default_rng(0).random(shape).astype(np.float32)
        prob = seg.predict_proba(img)
        assert prob.shape == shape and prob.dtype == np.float32
        assert prob.min() >= 0 and prob.max() <= 1


def test_101_goes_to_128_with_min_size(tiny_model_path):
    loaded = load_model(tiny_model_path)
    loaded.card.min_size = 128
    s = Segmenter(loaded)
    padded, box = s.prepare(np.zeros((101, 101), np.float32))
    assert padded.shape == (128, 128, 1) and (box.top, box.left) == (14, 14)


def test_batch_equals_single(seg):
    rng = np.random.default_rng(1)
    imgs = [rng.random(s).astype(np.float32) for s in [(40, 40), (40, 40), (33, 70), (40, 40)]]
    batch = seg.predict_batch(imgs)
    for img, prob in zip(imgs, batch, strict=True):
        np.testing.assert_allclose(prob, seg.predict_proba(img), atol=1e-5)


def test_padding_mode_changes_border_only(seg):
    img = np.random.default_rng(2).random((30, 30)).astype(np.float32)
    a = seg.predict_proba(img, "reflect")
    b = seg.predict_proba(img, "constant")
    assert a.shape == b.shape == (30, 30)
    with pytest.raises(UnetCoreError, match="accepted"):
        seg.predict_proba(img, "bogus")


def test_tta_averages_flips(tiny_model_path):
    loaded = load_model(tiny_model_path)
    plain, tta = Segmenter(loaded, tta=False), Segmenter(loaded, tta=True)
    img = np.random.default_rng(3).random((32, 32)).astype(np.float32)
    expected = 0.5 * (plain.predict_proba(img) + plain.predict_proba(img[:, ::-1])[:, ::-1])
    np.testing.assert_allclose(tta.predict_proba(img), expected, atol=1e-5)


def test_fixed_size_model_tiles_large_images():
    import keras

    keras.utils.set_random_seed(0)
    model = build_unet(base_filters=4, depth=2, input_size=(64, 64))
    card = ModelCard(name="fixed", input_size=[64, 64], multiple_of=4, fit="pad")
    s = Segmenter(from_keras(model, card), tile_overlap=16)
    small = np.random.default_rng(4).random((50, 60)).astype(np.float32)
    big = np.random.default_rng(5).random((150, 130)).astype(np.float32)
    assert s.predict_proba(small).shape == (50, 60)
    assert s.network_size(150, 130) is None
    assert s.predict_proba(big).shape == (150, 130)


def test_threshold_mask(seg):
    img = np.random.default_rng(6).random((20, 20)).astype(np.float32)
    prob = seg.predict_proba(img)
    np.testing.assert_array_equal(seg.predict_mask(img, 0.3), prob > 0.3)
    assert not seg.predict_mask(img, 1.0).any()


def test_bad_images_are_clear_errors(seg):
    with pytest.raises(UnetCoreError, match="5 channels but the model takes 1"):
        seg.predict_proba(np.zeros((4, 4, 5)))
    with pytest.raises(UnetCoreError, match="NaN"):
        seg.predict_proba(np.full((4, 4), np.nan))


def test_normalisations():
    x = np.linspace(0.2, 0.6, 100, dtype=np.float32).reshape(10, 10)
    assert normalise_input(x, "unit") is not None
    mm = normalise_input(x, "minmax")
    assert mm.min() == 0 and mm.max() == pytest.approx(1)
    pc = normalise_input(x, "percentile")
    assert pc.min() == 0 and pc.max() == 1
    assert not normalise_input(np.full((3, 3), 0.5, np.float32), "minmax").any()
    with pytest.raises(UnetCoreError, match="accepted"):
        normalise_input(x, "bogus")


def test_fully_convolutional_large_image_is_tiled_and_agrees(tiny_model_path):
    """Over the pixel budget a fully convolutional model runs in tiles, each within the
    budget, on its stride grid; the blended result matches the one-pass result closely."""
    from unet_core.synthetic import seismic_section

    s = Segmenter(load_model(tiny_model_path))  # multiple_of 4, min_size 32
    image, _ = seismic_section((200, 170), seed=3, salt=True)
    budget = 96 * 96
    assert s.network_size(200, 170) == (200, 172)  # default budget: one pass
    assert s.network_size(200, 170, max_pixels=budget) is None
    th, tw = s.tile_size(200, 170, max_pixels=budget)
    assert (th, tw) == (96, 96) and th * tw <= budget
    assert s.tile_overlap_for((th, tw)) % 4 == 0

    seen: list[tuple[int, ...]] = []
    forward = s.forward

    def spy(batch):
        seen.append(batch.shape)
        return forward(batch)

    s.forward = spy  # type: ignore[method-assign]
    tiled = s.predict_proba(image, max_pixels=budget)
    del s.forward
    whole = s.predict_proba(image)
    assert len(seen) >= 1 and all(h * w <= budget for _, h, w, *_ in seen), seen
    assert tiled.shape == whole.shape == (200, 170) and tiled.dtype == np.float32
    diff = np.abs(tiled - whole)
    assert diff.mean() < 0.005 and diff.max() < 0.1, (diff.mean(), diff.max())
    assert ((tiled > 0.5) != (whole > 0.5)).mean() < 0.001


def test_tile_size_respects_multiple_and_min_size(tiny_model_path):
    loaded = load_model(tiny_model_path)
    loaded.card.multiple_of, loaded.card.min_size = 16, 128
    s = Segmenter(loaded, max_network_pixels=1000)  # smaller than one min_size tile
    assert s.network_size(300, 300) is None
    assert s.tile_size(300, 300) == (128, 128)
    s = Segmenter(loaded)  # default 1024 x 1024
    assert s.max_network_pixels == 1024 * 1024
    assert s.network_size(1024, 1024) == (1024, 1024)
    assert s.network_size(4096, 4096) is None
    assert s.tile_size(4096, 4096) == (1024, 1024)
    assert s.tile_size(4096, 100) == (1024, 128)  # never wider than the padded image
    assert Segmenter(loaded, max_network_pixels=None).network_size(4096, 4096) == (4096, 4096)


def test_predict_batch_tiles_images_over_the_budget(tiny_model_path):
    s = Segmenter(load_model(tiny_model_path), max_network_pixels=64 * 64)
    rng = np.random.default_rng(5)
    imgs = [rng.random((40, 40)).astype(np.float32), rng.random((150, 90)).astype(np.float32)]
    out = s.predict_batch(imgs)
    assert [o.shape for o in out] == [(40, 40), (150, 90)]
    np.testing.assert_allclose(out[1], s.predict_proba(imgs[1]), atol=1e-5)
