"""Tests for unet_core.synthetic and scripts/make_assets.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unet_core.errors import UnetCoreError
from unet_core.synthetic import em_membranes, fluorescence_nuclei, make_pairs, seismic_section

REPO_ROOT = Path(__file__).resolve().parent.parent
SEEDS = range(8)


def _check_pair(image: np.ndarray, mask: np.ndarray, shape: tuple[int, int]) -> None:
    assert image.shape == shape and mask.shape == shape
    assert image.dtype == np.float32
    assert mask.dtype == np.bool_
    assert np.isfinite(image).all()
    assert image.min() >= 0.0 and image.max() <= 1.0


@pytest.mark.parametrize("fn", [seismic_section, fluorescence_nuclei, em_membranes])
def test_same_seed_same_output_different_seed_differs(fn) -> None:
    a_img, a_mask = fn(seed=7)
    b_img, b_mask = fn(seed=7)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    c_img, _ = fn(seed=8)
    assert not np.array_equal(a_img, c_img)


@pytest.mark.parametrize("shape", [(101, 101), (64, 96), (128, 80)])
def test_seismic_shapes_dtypes_ranges(shape: tuple[int, int]) -> None:
    for seed in range(3):
        image, mask = seismic_section(shape, seed=seed)
        _check_pair(image, mask, shape)
        assert 0.25 < image.mean() < 0.75  # mid-grey
        assert image.std() > 0.03  # visible reflectors


def test_seismic_default_shape_and_salt_flag() -> None:
    image, mask = seismic_section(seed=0)
    _check_pair(image, mask, (101, 101))
    for seed in SEEDS:
        _, mask = seismic_section(seed=seed, salt=False)
        assert not mask.any()
        _, mask = seismic_section(seed=seed, salt=True)
        assert mask.any()
        assert 0.02 < mask.mean() < 0.98


def test_seismic_salt_random_when_none() -> None:
    has_salt = [seismic_section(seed=s)[1].any() for s in range(40)]
    assert 10 <= sum(has_salt) <= 38  # ~60%, both kinds occur
    coverages = [seismic_section(seed=s, salt=True)[1].mean() for s in range(20)]
    assert max(coverages) - min(coverages) > 0.4  # coverage varies widely


def test_seismic_salt_interior_is_quieter() -> None:
    for seed in SEEDS:
        image, mask = seismic_section(seed=seed, salt=True)
        assert image[mask].std() < image[~mask].std(), seed


@pytest.mark.parametrize("shape", [(256, 256), (320, 400), (96, 64)])
def test_nuclei_shapes_dtypes_ranges(shape: tuple[int, int]) -> None:
    image, mask = fluorescence_nuclei(shape, seed=1)
    _check_pair(image, mask, shape)


def test_nuclei_coverage_and_contrast() -> None:
    for seed in SEEDS:
        image, mask = fluorescence_nuclei(seed=seed)
        assert 0.05 <= mask.mean() <= 0.40, seed
        inside, outside = image[mask].mean(), image[~mask].mean()
        assert inside > outside + 0.2, seed
        assert outside < 0.15, seed  # dark background


def test_nuclei_count_argument() -> None:
    from scipy import ndimage

    _, mask = fluorescence_nuclei(seed=3, n_nuclei=0)
    assert not mask.any()
    _, mask = fluorescence_nuclei(seed=3, n_nuclei=5)
    _, count = ndimage.label(mask)
    assert 1 <= count <= 5  # touching nuclei merge into one component


@pytest.mark.parametrize("shape", [(256, 256), (320, 256), (48, 80)])
def test_membranes_shapes_dtypes_ranges(shape: tuple[int, int]) -> None:
    image, mask = em_membranes(shape, seed=2)
    _check_pair(image, mask, shape)
    assert mask.any() and not mask.all()


def test_membranes_fraction_contrast_and_network() -> None:
    from scipy import ndimage

    image, mask = em_membranes(seed=0)
    _check_pair(image, mask, (256, 256))  # default shape
    for seed in SEEDS:
        image, mask = em_membranes((256, 256), seed=seed)
        assert 0.12 <= mask.mean() <= 0.35, seed  # ISBI 2012: ~22% membrane
        membrane, interior = image[mask].mean(), image[~mask].mean()
        assert membrane < interior - 0.1, seed  # dark membranes, pale cells
        assert 0.3 < interior < 0.8, seed
        labels, count = ndimage.label(mask)
        sizes = np.bincount(labels.ravel())[1:]
        assert sizes.max() > 0.8 * sizes.sum(), seed  # one connected membrane network
        _, cells = ndimage.label(~mask)
        assert cells >= 15, seed  # many cells, not a few blobs


def test_make_pairs_membrane(tmp_path: Path) -> None:
    names = make_pairs(tmp_path, "membrane", 2, seed=3)
    assert names == ["membrane_000.png", "membrane_001.png"]
    for name in names:
        img = np.asarray(Image.open(tmp_path / "images" / name))
        msk = np.asarray(Image.open(tmp_path / "masks" / name))
        assert img.shape == msk.shape == (256, 256)
        assert set(np.unique(msk)) == {0, 255}
        assert img[msk == 0].mean() < img[msk == 255].mean()  # ISBI convention: 0 = membrane


def test_make_pairs_writes_readable_pairs(tmp_path: Path) -> None:
    names = make_pairs(tmp_path, "seismic", 3, seed=1)
    assert names == ["seismic_000.png", "seismic_001.png", "seismic_002.png"]
    names += make_pairs(tmp_path, "nuclei", 2, seed=1, shape=(64, 80))
    assert names[3:] == ["nuclei_000.png", "nuclei_001.png"]
    for name in names:
        with Image.open(tmp_path / "images" / name) as im:
            assert im.mode == "L"
            img = np.asarray(im)
        with Image.open(tmp_path / "masks" / name) as im:
            assert im.mode == "L"
            msk = np.asarray(im)
        assert img.shape == msk.shape == ((101, 101) if name.startswith("seismic") else (64, 80))
        assert set(np.unique(msk)) <= {0, 255}


def test_make_pairs_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    make_pairs(tmp_path / "a", "nuclei", 1, seed=5, shape=(64, 64))
    make_pairs(tmp_path / "b", "nuclei", 1, seed=5, shape=(64, 64))
    make_pairs(tmp_path / "c", "nuclei", 1, seed=6, shape=(64, 64))
    a, b, c = (tmp_path / d / "images" / "nuclei_000.png" for d in "abc")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_make_pairs_rejects_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(UnetCoreError, match="unknown synthetic kind"):
        make_pairs(tmp_path, "cats", 1)
    assert not any(tmp_path.iterdir())


def _load_make_assets():
    path = REPO_ROOT / "scripts" / "make_assets.py"
    spec = importlib.util.spec_from_file_location("make_assets", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_make_assets_is_deterministic(tmp_path: Path) -> None:
    make_assets = _load_make_assets()
    assert make_assets.main([str(tmp_path / "one")]) == 0
    (tmp_path / "two" / "seismic").mkdir(parents=True)
    (tmp_path / "two" / "seismic" / "stale.png").write_bytes(b"old")  # must be removed
    (tmp_path / "two" / "membranes" / "masks").mkdir(parents=True)
    (tmp_path / "two" / "membranes" / "masks" / "stale.png").write_bytes(b"old")
    (tmp_path / "two" / "mine").mkdir()
    (tmp_path / "two" / "mine" / "keep.txt").write_text("kept")  # not ours: left alone
    assert make_assets.main([str(tmp_path / "two")]) == 0
    one, two = _tree(tmp_path / "one"), _tree(tmp_path / "two")
    assert two.pop("mine/keep.txt") == b"kept"
    assert one == two
    assert "README.md" in one
    seismic = sorted(k for k in one if k.startswith("seismic/masks/"))
    nuclei = sorted(k for k in one if k.startswith("nuclei/images/"))
    assert len(seismic) == 6 and len(nuclei) == 5
    empty = [k for k in seismic if not np.asarray(Image.open(tmp_path / "one" / k)).any()]
    assert len(empty) >= 2
    sizes = {Image.open(tmp_path / "one" / k).size for k in nuclei}
    assert sizes == {(256, 256), (400, 320)}
    membranes = sorted(k for k in one if k.startswith("membranes/"))
    assert membranes == [
        f"membranes/{sub}/membranes_{i:03d}.png" for sub in ("images", "masks") for i in range(3)
    ]
    sizes = {Image.open(tmp_path / "one" / k).size for k in membranes}
    assert sizes == {(256, 256), (256, 320)}  # PIL: (width, height)
    for k in membranes[3:]:
        fraction = (np.asarray(Image.open(tmp_path / "one" / k)) == 0).mean()  # ISBI: 0 = membrane
        assert 0.12 <= fraction <= 0.35, k
    assert "membranes/" in one["README.md"].decode()


def test_committed_assets_match_the_generator(tmp_path: Path) -> None:
    """assets/ is what scripts/make_assets.py writes today (pixels, up to one grey level)."""
    make_assets = _load_make_assets()
    assert make_assets.main([str(tmp_path)]) == 0
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.png"))
    committed = sorted(p.relative_to(REPO_ROOT / "assets")
                       for p in (REPO_ROOT / "assets").rglob("*.png"))
    assert fresh == committed
    for rel in fresh:
        a = np.asarray(Image.open(tmp_path / rel), dtype=np.int16)
        b = np.asarray(Image.open(REPO_ROOT / "assets" / rel), dtype=np.int16)
        assert a.shape == b.shape, rel
        if "masks" in rel.parts:
            assert (a != b).mean() < 1e-3, rel
        else:
            assert np.abs(a - b).max() <= 1, rel


def test_seismic_looks_like_tgs_crops() -> None:
    """Salt reaches an edge of the crop and layers dip, as in the TGS images (whose horizontal
    gradients outside salt are about 0.85 of the vertical ones, median over the crops)."""
    from scipy import ndimage

    ratios, touches = [], []
    for seed in range(20):
        image, mask = seismic_section(seed=seed, salt=True)
        touches.append(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
        outside = ndimage.binary_erosion(~mask, iterations=4)
        if outside.sum() > 500:
            gy, gx = np.abs(ndimage.sobel(image, 0)), np.abs(ndimage.sobel(image, 1))
            ratios.append(gx[outside].mean() / gy[outside].mean())
    assert all(touches)
    assert 0.4 < float(np.median(ratios)) < 1.5
