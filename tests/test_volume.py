"""Volumes: slice/put_slice round trips, slice-by-slice segmentation equal to the image path,
volume evaluation by hand, read/write dispatch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from unet_core import volume as vol
from unet_core.errors import UnetCoreError
from unet_core.inference import Segmenter
from unet_core.model import load_model
from unet_core.volume import AXES, Volume
from unet_core.volume_predict import evaluate_volume, mask_volume, segment_volume


@pytest.fixture(scope="module")
def seg(tiny_model_path) -> Segmenter:
    return Segmenter(load_model(tiny_model_path))


def make_volume(fmt: str, data: np.ndarray, **kw) -> Volume:
    return Volume(data=data, format=fmt, axes=AXES[fmt], source=Path(f"cube.{fmt}"), **kw)


def crops(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth uint8 image crops (blobs) of one size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 12)
        img = 60 + 150 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r) + rng.normal(0, 10, (h, w))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


@pytest.mark.parametrize("fmt", ["segy", "nifti", "dicom"])
def test_slice_put_slice_round_trip_odd_shapes(fmt):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 7, 3)).astype(np.float32)
    v = make_volume(fmt, data)
    for axis in v.axes:
        out = np.zeros_like(data)
        for i in range(v.n_slices(axis)):
            s = v.slice(axis, i)
            assert s.shape == v.slice_shape(axis)
            v.put_slice(out, axis, i, s)
        np.testing.assert_array_equal(out, data)


def test_slice_errors_are_one_line():
    v = make_volume("segy", np.zeros((3, 4, 5), np.float32))
    with pytest.raises(UnetCoreError, match="accepted: inline, crossline, depth"):
        v.slice("axial", 0)
    with pytest.raises(UnetCoreError, match="accepted: 0..2"):
        v.slice("inline", 3)
    with pytest.raises(UnetCoreError, match="does not fit"):
        v.put_slice(np.zeros((3, 4, 5)), "inline", 0, np.zeros((4, 5)))


@pytest.mark.parametrize("fmt,axis", [("nifti", "axial"), ("segy", "inline"),
                                      ("dicom", "slice")])
def test_segment_volume_equals_image_path(seg, fmt, axis):
    """A volume whose slices are image crops segments exactly as the crops do."""
    images = crops(5, 40, 36)
    a = AXES[fmt].index(axis)
    rest = [i for i in range(3) if i != a]
    for hw in ((40, 36), (36, 40)):  # the geometry whose displayed slices are 40x36
        shape = [0, 0, 0]
        shape[a], shape[rest[0]], shape[rest[1]] = len(images), *hw
        v = make_volume(fmt, np.zeros(shape, np.uint8))
        if v.slice_shape(axis) == (40, 36):
            break
    for i, im in enumerate(images):
        v.put_slice(v.data, axis, i, im)
    for i, im in enumerate(images):
        np.testing.assert_array_equal(v.slice(axis, i), im)
    calls = []
    probs = segment_volume(seg, v, axis, batch_size=2, progress=lambda d, n: calls.append(d))
    assert probs.shape == v.shape and probs.dtype == np.float32
    assert calls == [2, 4, 5]
    pv = make_volume(fmt, probs)
    for i, im in enumerate(images):
        np.testing.assert_allclose(pv.slice(axis, i), seg.predict_proba(im), rtol=0, atol=1e-6)
    every = segment_volume(seg, v, axis, all_classes=True)
    assert every.shape == v.shape + (1,)
    np.testing.assert_allclose(every[..., 0], probs, atol=1e-6)


def test_percentile_card_uses_the_cube_clip(seg):
    """A percentile card on a SEG-Y cube with an amplitude clip: every slice scaled with the one
    clip and fed as unit; without a clip each slice is scaled by its own percentiles."""
    rng = np.random.default_rng(3)
    data = rng.normal(0, 1, (3, 32, 40)).astype(np.float32)
    data[1] *= 5  # a loud inline: its own percentiles would hide it
    pct = Segmenter(seg.loaded)
    pct.card = dataclasses.replace(seg.card, normalisation="percentile")
    unit = Segmenter(seg.loaded)
    clip = [-2.0, 2.0]
    v = make_volume("segy", data, stats={"clip": clip})
    got = segment_volume(pct, v, "inline")
    for i in range(3):
        scaled = np.clip((v.slice("inline", i) + 2.0) / 4.0, 0, 1).astype(np.float32)
        np.testing.assert_allclose(make_volume("segy", got).slice("inline", i),
                                   unit.predict_proba(scaled), atol=1e-6)
    from unet_core.volume_predict import scaling_note

    assert "one amplitude clip -2..2" in scaling_note(pct, v)
    plain = make_volume("segy", data)  # no clip: per-slice percentile
    got2 = segment_volume(pct, plain, "inline")
    np.testing.assert_allclose(make_volume("segy", got2).slice("inline", 1),
                               pct.predict_proba(plain.slice("inline", 1)), atol=1e-6)


class FakeSeg:
    """Stands in for a Segmenter: probabilities are the slice values themselves."""

    n_classes = 1

    def __init__(self, threshold=0.5, min_area=0):
        self.card = type("Card", (), {"threshold": threshold, "min_area": min_area,
                                      "normalisation": "unit",
                                      "class_name": staticmethod(lambda k: "fg")})()

    def _class(self, k):
        return 0

    def predict_batch_classes(self, images, padding_mode=None):
        return [np.asarray(im, np.float32)[..., None] for im in images]


def test_evaluate_volume_by_hand():
    # 2 slices along "slice" of 2x2: slice 0 pred {a,b}, truth {a}; slice 1 both empty
    probs = np.zeros((2, 2, 2), np.float32)
    probs[0, 0, 0] = probs[0, 0, 1] = 0.9
    truth = np.zeros((2, 2, 2), np.uint8)
    truth[0, 0, 0] = 1
    v = make_volume("dicom", probs)
    lab = make_volume("dicom", truth)
    r = evaluate_volume(FakeSeg(), v, lab, "slice")
    assert [s["iou"] for s in r["slices"]] == [0.5, 1.0]
    assert r["slices"][0]["dice"] == pytest.approx(2 / 3)
    assert r["slices"][1]["dice"] == 1.0
    assert r["iou"] == 0.5 and r["dice"] == pytest.approx(2 / 3)
    assert r["mean_slice_iou"] == 0.75
    assert (r["truth_voxels"], r["pred_voxels"]) == (1, 2)
    # along another axis: same 3-D figures, other per-slice rows
    r2 = evaluate_volume(FakeSeg(), v, lab, "row")
    assert r2["iou"] == 0.5 and [s["iou"] for s in r2["slices"]] == [0.5, 1.0]
    r3 = evaluate_volume(FakeSeg(), v, lab, "column")
    assert [s["iou"] for s in r3["slices"]] == [1.0, 0.0]
    # minimum-area rule per slice empties the 2-voxel slice
    r4 = evaluate_volume(FakeSeg(min_area=3), v, lab, "slice")
    assert r4["slices"][0]["iou"] == 0.0 and r4["pred_voxels"] == 0


def test_evaluate_volume_refuses_other_geometry():
    v = make_volume("dicom", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(UnetCoreError, match="same geometry"):
        evaluate_volume(FakeSeg(), v, make_volume("dicom", np.zeros((2, 4, 3))), "slice")
    with pytest.raises(UnetCoreError, match="same format"):
        evaluate_volume(FakeSeg(), v, make_volume("nifti", np.zeros((2, 3, 4))), "slice")


def test_mask_volume_labels_for_classes():
    v = make_volume("dicom", np.zeros((2, 2, 2)))
    p = np.zeros((2, 2, 2, 3), np.float32)
    p[..., 2] = 1.0
    lab = mask_volume(v, p, "slice", 0.5)
    assert lab.dtype == np.uint8 and (lab == 2).all()
    m = mask_volume(v, np.full((2, 2, 2), 0.7, np.float32), "row", 0.5)
    assert m.dtype == np.uint8 and m.all()


def test_dispatch_by_path(tmp_path):
    assert vol.volume_format("a.SGY") == "segy"
    assert vol.volume_format("a.segy") == "segy"
    assert vol.volume_format("a.nii.gz") == "nifti"
    assert vol.volume_format("a.nii") == "nifti"
    assert vol.volume_format("a.dcm") == "dicom"
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "1.dcm").write_bytes(b"")
    assert vol.volume_format(tmp_path / "series") == "dicom"
    with pytest.raises(UnetCoreError, match="accepted"):
        vol.volume_format("a.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnetCoreError, match="without .dcm"):
        vol.volume_format(tmp_path / "empty")
    with pytest.raises(UnetCoreError, match="no such file"):
        vol.read_volume(tmp_path / "missing.sgy")
    assert vol.volume_stem("cube.nii.gz") == "cube" and vol.volume_stem("x.sgy") == "x"


def test_read_volume_passes_only_its_format_options(tmp_path, monkeypatch):
    seen = {}

    def fake_reader(path, **options):
        seen.update(options)
        return make_volume("segy", np.zeros((2, 2, 2), np.float32))

    monkeypatch.setitem(vol.READERS, "segy", fake_reader)
    f = tmp_path / "c.sgy"
    f.write_bytes(b"x")
    vol.read_volume(f, inline_byte=9, crossline_byte=21)
    assert seen == {"inline_byte": 9, "crossline_byte": 21}
    with pytest.raises(UnetCoreError, match="time index is for 4-D NIfTI"):
        vol.read_volume(f, time_index=1)
    with pytest.raises(UnetCoreError, match="window is for DICOM"):
        vol.read_volume(f, window=(40, 400))


def test_missing_format_module_is_one_line(tmp_path, monkeypatch):
    import importlib

    def no_nibabel(name, *args):
        raise ModuleNotFoundError("No module named 'nibabel'", name="nibabel")

    monkeypatch.delitem(vol.READERS, "nifti", raising=False)
    monkeypatch.setattr(importlib, "import_module", no_nibabel)
    f = tmp_path / "a.nii.gz"
    f.write_bytes(b"x")
    with pytest.raises(UnetCoreError, match=r"need the nibabel package; install it with "
                       r"`pip install nibabel`"):
        vol.read_volume(f)

    def no_module(name, *args):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(importlib, "import_module", no_module)
    with pytest.raises(UnetCoreError, match="no module unet_core.nifti"):
        vol.read_volume(f)


def test_write_volume_names_and_atomic(tmp_path, monkeypatch):
    written = []

    def writer(volume, array, path, kind):
        Path(path).write_bytes(b"ok")
        written.append(Path(path).name)
        return Path(path)

    def broken(volume, array, path, kind):
        Path(path).write_bytes(b"half")
        raise UnetCoreError("disk full")

    monkeypatch.setitem(vol.WRITERS, "segy", writer)
    monkeypatch.setitem(vol.WRITERS, "nifti", writer)
    monkeypatch.delitem(vol.WRITERS, "dicom", raising=False)
    arr = np.zeros((2, 3, 4), np.float32)
    s = make_volume("segy", arr)
    assert vol.write_volume(s, arr, tmp_path, "cube", "prob") == tmp_path / "cube_prob.sgy"
    assert written[-1].endswith("cube_prob.sgy") and written[-1].startswith(".tmp-")
    n = make_volume("nifti", arr)
    assert vol.write_volume(n, arr, tmp_path, "b", "mask").name == "b_mask.nii.gz"
    d = make_volume("dicom", arr)
    assert vol.write_volume(d, arr, tmp_path, "ser", "prob").name == "ser_prob.nii.gz"
    with pytest.raises(UnetCoreError, match="does not fit"):
        vol.write_volume(s, np.zeros((2, 2, 2)), tmp_path, "x", "prob")
    with pytest.raises(UnetCoreError, match="accepted: prob, mask"):
        vol.write_volume(s, arr, tmp_path, "x", "labels")
    monkeypatch.setitem(vol.WRITERS, "segy", broken)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UnetCoreError, match="disk full"):
        vol.write_volume(s, arr, tmp_path, "y", "prob")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_segment_volume_bounds_its_output(seg, monkeypatch):
    v = make_volume("dicom", np.zeros((2, 32, 32), np.uint8))
    monkeypatch.setenv("UNET_MAX_VOXELS", "1000")
    with pytest.raises(UnetCoreError, match="UNET_MAX_VOXELS"):
        segment_volume(seg, v, "slice")
    with pytest.raises(UnetCoreError, match="accepted: slice, row, column"):
        segment_volume(seg, v, "inline")
