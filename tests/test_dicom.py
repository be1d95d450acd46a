"""DICOM volumes: modality LUT, windows as pydicom applies them, series sorting, refusals,
and the NIfTI written from a series."""

from __future__ import annotations

import copy
import random

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence

from unet_core.dicom import read_dicom, windowed, write_dicom_as_nifti
from unet_core.errors import UnetCoreError
from unet_core.volume import READERS, WRITERS


def _testfile(name):
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not in this pydicom wheel")
    return path


CT = _testfile("CT_small.dcm")
MR = _testfile("MR_small.dcm")


def _series(folder, n=4, step=5.0, series_uid=None, seed=0):
    """n copies of CT_small 'step' mm apart along z, pixel values + 10*k, shuffled names."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(CT)
    uid = series_uid or base.SeriesInstanceUID
    names = [f"img{j:02d}.dcm" for j in range(n)]
    random.Random(seed).shuffle(names)
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.ImagePositionPatient = [-158.135803, -179.035797, -75.699997 + step * k]
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = f"{base.SOPInstanceUID}.{k + 1}"
        ds.InstanceNumber = n - k  # misleading on purpose: position decides
        ds.PixelData = (base.pixel_array + 10 * k).astype(base.pixel_array.dtype).tobytes()
        ds.save_as(folder / names[k])
    return folder


def test_registered():
    assert READERS["dicom"] is read_dicom
    assert WRITERS["dicom"] is write_dicom_as_nifti


def test_ct_hounsfield_units_and_window_like_pydicom():
    ds = pydicom.dcmread(CT)
    vol = read_dicom(CT)
    assert vol.format == "dicom" and vol.axes == ("slice", "row", "column")
    assert vol.shape == (1, 128, 128) and vol.data.dtype == np.float32
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(vol.data[0], hu)
    assert vol.data.min() < -800  # air in HU, not raw stored values
    # CT_small has no window: the data range is used, and said so
    assert vol.stats["window"]["source"] == "data range" and "window" in vol.notes
    w = windowed(vol)
    assert w.dtype == np.float32 and w.min() == 0.0 and w.max() == 1.0
    # a user window (soft tissue) equals pydicom's LINEAR windowing, rescaled to [0, 1]
    user = read_dicom(CT, window=(40, 400))
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ref = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    bits = int(ds.BitsStored)
    y_min = -(2 ** (bits - 1)) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    y_max = (2 ** (bits - 1) - 1) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expect = (ref - y_min) / (y_max - y_min)
    got = windowed(user)[0]
    np.testing.assert_allclose(got, expect, atol=1e-6)
    assert np.mean((got > 0) & (got < 1)) > 0  # some values inside the window
    np.testing.assert_allclose(windowed(vol, ds)[0], expect, atol=1e-6)  # window from a ds
    np.testing.assert_allclose(windowed(vol.data, (40, 400))[0], expect, atol=1e-6)


def test_mr_file_window_like_pydicom():
    ds = pydicom.dcmread(MR)
    vol = read_dicom(MR)
    assert vol.shape == (1, 64, 64)
    assert vol.stats["window"] == {"center": 600.0, "width": 1600.0, "function": "LINEAR",
                                   "source": "file"}
    ref = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float64)
    got = windowed(vol)[0].astype(np.float64)
    mm = (ref - ref.min()) / (ref.max() - ref.min())
    np.testing.assert_allclose((got - got.min()) / (got.max() - got.min()), mm, atol=1e-6)
    for func in ("LINEAR_EXACT", "SIGMOID"):
        ds.VOILUTFunction = func
        ref = apply_voi_lut(ds.pixel_array.astype(np.float64), ds)
        y_min, y_max = -(2 ** 15), 2 ** 15 - 1
        win = dict(vol.stats["window"], function=func)
        np.testing.assert_allclose(windowed(vol, win)[0], (ref - y_min) / (y_max - y_min),
                                   atol=1e-6)


def test_single_file_affine_in_ras():
    ds = pydicom.dcmread(MR)
    aff = read_dicom(MR).meta["affine"]
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    np.testing.assert_allclose(aff[:3, 3], [-ipp[0], -ipp[1], ipp[2]])  # LPS -> RAS
    # row index moves along the column direction (LPS y -> RAS -y), by the row spacing
    np.testing.assert_allclose(aff[:3, 1], [0, -0.3125, 0], atol=1e-9)
    np.testing.assert_allclose(aff[:3, 2], [-0.3125, 0, 0], atol=1e-9)
    np.testing.assert_allclose(aff[:3, 0], [0, 0, 0.8], atol=1e-9)  # slice thickness


def test_folder_series_sorted_by_position_and_nifti_affine(tmp_path):
    folder = _series(tmp_path / "series", n=4, step=5.0)
    (folder / "notes.txt").write_text("not dicom")
    vol = read_dicom(folder)
    assert vol.shape == (4, 128, 128)
    base = apply_modality_lut(pydicom.dcmread(CT).pixel_array, pydicom.dcmread(CT))
    for k in range(4):  # position order, not file-name or InstanceNumber order
        np.testing.assert_array_equal(vol.data[k], base + 10 * k)
    zs = [float(p[2]) for p in vol.meta["positions"]]
    assert zs == sorted(zs)
    assert "skipped" in vol.notes and "1 file" in vol.notes["skipped"]
    assert vol.slice("slice", 2).shape == (128, 128)
    # results written as NIfTI reopen with the series' geometry
    out = write_dicom_as_nifti(vol, (vol.data > 0).astype(np.uint8), tmp_path / "s_mask.nii.gz",
                               "mask")
    img = nib.load(str(out))
    assert img.shape == (4, 128, 128) and img.get_data_dtype() == np.uint8
    expect = np.array([
        [0, 0, -0.661468, 158.135803],
        [0, -0.661468, 0, 179.035797],
        [5.0, 0, 0, -75.699997],
        [0, 0, 0, 1],
    ])
    np.testing.assert_allclose(img.affine, expect, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.dataobj), (vol.data > 0).astype(np.uint8))
    # voxel (k, 0, 0) lies at slice k's ImagePositionPatient (RAS)
    for k in range(4):
        world = img.affine @ np.array([k, 0, 0, 1.0])
        np.testing.assert_allclose(world[:3], [158.135803, 179.035797, -75.699997 + 5 * k],
                                   atol=1e-4)
    prob = write_dicom_as_nifti(vol, np.zeros(vol.shape), tmp_path / "s_prob.nii.gz", "prob")
    assert nib.load(str(prob)).get_data_dtype() == np.float32


def test_folder_mixing_series_refused(tmp_path):
    folder = _series(tmp_path / "mixed", n=2)
    _series(tmp_path / "other", n=2, series_uid="1.2.3.4.5")
    for f in (tmp_path / "other").iterdir():
        f.rename(folder / f"b_{f.name}")
    with pytest.raises(UnetCoreError, match="mixes 2 series") as err:
        read_dicom(folder)
    assert "\n" not in str(err.value)


def test_duplicate_positions_and_bad_inputs_refused(tmp_path):
    folder = _series(tmp_path / "dup", n=3, step=0.0)
    with pytest.raises(UnetCoreError, match="same position"):
        read_dicom(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    with pytest.raises(UnetCoreError, match="no DICOM image files"):
        read_dicom(empty)
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"nothing here")
    with pytest.raises(UnetCoreError, match="not a readable DICOM"):
        read_dicom(bad)


def test_voxel_limit_refused(tmp_path, monkeypatch):
    folder = _series(tmp_path / "big", n=3)
    monkeypatch.setenv("UNET_MAX_VOXELS", str(2 * 128 * 128))
    with pytest.raises(UnetCoreError, match="UNET_MAX_VOXELS"):
        read_dicom(folder)
    with pytest.raises(UnetCoreError, match="UNET_MAX_VOXELS"):
        monkeypatch.setenv("UNET_MAX_VOXELS", "100")
        read_dicom(CT)


def test_enhanced_multiframe_sorted_by_per_frame_position(tmp_path):
    base = pydicom.dcmread(CT)
    ds = copy.deepcopy(base)
    zs = [10.0, 0.0, 5.0]  # stored out of order
    frames = [(base.pixel_array + int(z)).astype(base.pixel_array.dtype) for z in zs]
    ds.NumberOfFrames = 3
    ds.PixelData = np.stack(frames).tobytes()
    del ds.ImagePositionPatient
    shared = Dataset()
    ori = Dataset()
    ori.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    meas = Dataset()
    meas.PixelSpacing = [0.5, 0.5]
    meas.SliceThickness = 5.0
    shared.PlaneOrientationSequence = Sequence([ori])
    shared.PixelMeasuresSequence = Sequence([meas])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    for z in zs:
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, z]
        item.PlanePositionSequence = Sequence([pos])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    path = tmp_path / "multi.dcm"
    ds.save_as(path)
    vol = read_dicom(path)
    assert vol.shape == (3, 128, 128)
    hu = base.pixel_array.astype(np.float32) - 1024
    for k, z in enumerate([0.0, 5.0, 10.0]):
        np.testing.assert_array_equal(vol.data[k], hu + z)
    np.testing.assert_allclose(vol.meta["affine"][:3, 0], [0, 0, 5.0])
    np.testing.assert_allclose(vol.meta["affine"][:3, 1], [0, -0.5, 0])


def test_rgb_multiframe_keeps_channels():
    path = _testfile("SC_rgb_rle_2frame.dcm")
    ds = pydicom.dcmread(path)
    vol = read_dicom(path)
    assert vol.data.shape == (2, 100, 100, 3) and vol.channels == 3
    np.testing.assert_array_equal(vol.data, ds.pixel_array.astype(np.float32))
    w = windowed(vol)
    np.testing.assert_allclose(w, ds.pixel_array / 255.0, atol=1e-6)
    assert vol.slice("slice", 1).shape == (100, 100, 3)
    assert "geometry" in vol.notes  # a secondary capture has no patient geometry


def test_voi_lut_sequence_like_pydicom():
    ds = pydicom.dcmread(MR)
    arr = apply_modality_lut(ds.pixel_array, ds)
    first, n = int(arr.min()), int(arr.max() - arr.min() + 1)
    item = Dataset()
    item.LUTDescriptor = [n, first, 12]
    item.LUTData = [int(v) for v in np.linspace(0, 4095, n)]
    ds.VOILUTSequence = Sequence([item])
    ref = apply_voi_lut(arr, ds).astype(np.float64) / 4095
    np.testing.assert_allclose(windowed(arr, ds), ref, atol=1e-6)  # LUT preferred, as pydicom
    assert ref.min() == 0.0 and ref.max() == 1.0


def test_one_file_folder_monochrome1_and_mask_range(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    ds = pydicom.dcmread(MR)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(folder / "IM0001")  # no extension: read by content
    (folder / "readme.txt").write_text("x")
    vol = read_dicom(folder)
    assert vol.source == folder and vol.shape == (1, 64, 64)
    assert "skipped" in vol.notes and "invert" in vol.notes
    plain = windowed(read_dicom(MR))
    np.testing.assert_allclose(windowed(vol), 1.0 - plain, atol=1e-6)
    with pytest.raises(UnetCoreError, match="mask values"):
        write_dicom_as_nifti(vol, np.full(vol.shape, 300), tmp_path / "m.nii.gz", "mask")
    assert not list(tmp_path.glob("*.nii.gz"))
