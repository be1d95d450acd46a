"""NIfTI volumes: canonical RAS+ reading, slices, write-back in the input's geometry, refusals."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from unet_core.errors import UnetCoreError
from unet_core.nifti import read_nifti, write_nifti
from unet_core.volume import READERS, WRITERS

# LPS-stored voxels (i -> patient left, j -> posterior, k -> superior), shear-free, with
# anisotropic spacing, and the first two axes swapped: voxel axis 0 = y (posterior), 1 = x
LPS_SWAPPED = np.array([
    [0.0, -2.0, 0.0, 30.0],
    [-1.5, 0.0, 0.0, 40.0],
    [0.0, 0.0, 3.0, -20.0],
    [0.0, 0.0, 0.0, 1.0],
])


def _write(tmp_path, data, affine, name="vol.nii.gz"):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.fixture
def lps_volume(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.random((5, 6, 7)).astype(np.float32)  # voxel order (y, x, z)
    return _write(tmp_path, data, LPS_SWAPPED), data


def test_registered():
    assert READERS["nifti"] is read_nifti
    assert WRITERS["nifti"] is write_nifti


def test_read_reorients_to_canonical_like_nibabel(lps_volume):
    path, data = lps_volume
    vol = read_nifti(path)
    canon = nib.as_closest_canonical(nib.load(str(path)))
    assert vol.format == "nifti"
    assert vol.axes == ("sagittal", "coronal", "axial")
    assert vol.shape == (6, 5, 7)  # x, y, z
    np.testing.assert_array_equal(vol.data, np.asarray(canon.dataobj))
    np.testing.assert_allclose(vol.meta["canonical_affine"], canon.affine)
    np.testing.assert_allclose(vol.meta["affine"], LPS_SWAPPED)
    assert nib.aff2axcodes(vol.meta["canonical_affine"]) == ("R", "A", "S")
    assert vol.meta["shape"] == (5, 6, 7)
    assert "orientation" in vol.notes


def test_axial_slice_has_anterior_at_top_and_right_on_the_left(tmp_path):
    # a canonical RAS volume with a marker at the anterior-right corner of slice z=1
    data = np.zeros((4, 5, 3), np.float32)
    data[0, 4, 1] = 1.0  # x = 0 (most right), y = 4 (most anterior)
    vol = read_nifti(_write(tmp_path, data, np.diag([1.0, 1.0, 1.0, 1.0])))
    img = vol.slice("axial", 1)
    assert img.shape == (5, 4) == vol.slice_shape("axial")
    assert img[0, 0] == 1.0  # top row (anterior), left column (patient right)
    assert vol.slice("coronal", 4).shape == (3, 4)  # superior up: rows = z
    assert vol.slice("sagittal", 0).shape == (3, 5)


def test_write_back_keeps_affine_shape_and_voxel_order(lps_volume, tmp_path):
    path, data = lps_volume
    vol = read_nifti(path)
    out = np.zeros(vol.shape, np.float32)
    for i in range(vol.n_slices("axial")):  # the slice path rebuilds the canonical data
        vol.put_slice(out, "axial", i, vol.slice("axial", i))
    np.testing.assert_array_equal(out, vol.data)
    prob = write_nifti(vol, out, tmp_path / "out" / "vol_prob.nii.gz", "prob")
    mask = write_nifti(vol, (out > 0.5).astype(np.uint8), tmp_path / "out" / "vol_mask.nii.gz",
                       "mask")
    p_img, m_img = nib.load(str(prob)), nib.load(str(mask))
    np.testing.assert_allclose(p_img.affine, LPS_SWAPPED, atol=1e-5)
    np.testing.assert_allclose(m_img.affine, LPS_SWAPPED, atol=1e-5)
    assert p_img.shape == m_img.shape == data.shape
    assert p_img.get_data_dtype() == np.float32 and m_img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(p_img.dataobj), data)  # original voxel order
    np.testing.assert_array_equal(np.asarray(m_img.dataobj), (data > 0.5).astype(np.uint8))
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == [
        "vol_mask.nii.gz", "vol_prob.nii.gz"]  # no temporary left


def test_writer_refusals(lps_volume, tmp_path):
    vol = read_nifti(lps_volume[0])
    with pytest.raises(UnetCoreError, match="does not fit"):
        write_nifti(vol, np.zeros((2, 2, 2)), tmp_path / "x.nii.gz", "prob")
    with pytest.raises(UnetCoreError, match="kind"):
        write_nifti(vol, np.zeros(vol.shape), tmp_path / "x.nii.gz", "logits")
    with pytest.raises(UnetCoreError, match="accepted: .nii.gz"):
        write_nifti(vol, np.zeros(vol.shape), tmp_path / "x.png", "mask")
    assert not list(tmp_path.glob("x*"))


def test_4d_time_index(tmp_path):
    data = np.stack([np.full((3, 4, 5), t, np.int16) for t in range(3)], axis=-1)
    path = _write(tmp_path, data, np.eye(4), "t.nii")
    v0 = read_nifti(path)
    assert v0.shape == (3, 4, 5) and np.all(v0.data == 0)
    assert "time index 0" in v0.notes["time_index"]
    v2 = read_nifti(path, time_index=2)
    assert np.all(v2.data == 2) and v2.meta["n_times"] == 3 and v2.meta["time_index"] == 2
    with pytest.raises(UnetCoreError, match=r"outside .* 3 time points; accepted: 0..2"):
        read_nifti(path, time_index=3)
    out = write_nifti(v2, v2.data.astype(np.float32), tmp_path / "t_prob.nii.gz", "prob")
    assert nib.load(str(out)).shape == (3, 4, 5)


def test_non_invertible_affine_refused(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((3, 3, 3))
    hdr.set_data_dtype(np.float32)
    for row in ("srow_x", "srow_y", "srow_z"):  # an all-zero sform, no qform
        hdr[row] = 0.0
    hdr["sform_code"], hdr["qform_code"] = 2, 0
    path = tmp_path / "z.nii"
    with open(path, "wb") as fh:  # header and voxels written as they are, nibabel not fixing
        hdr.write_to(fh)
        fh.write(b"\0" * (int(hdr.get_data_offset()) - fh.tell()))
        fh.write(np.zeros((3, 3, 3), np.float32).tobytes())
    assert not np.any(nib.load(str(path)).affine[:3, :3])
    with pytest.raises(UnetCoreError, match="affine is not invertible") as err:
        read_nifti(path)
    assert "\n" not in str(err.value)


def test_voxel_limit_refused_before_reading(tmp_path, monkeypatch):
    path = _write(tmp_path, np.zeros((10, 10, 10), np.uint8), np.eye(4), "big.nii.gz")
    monkeypatch.setenv("UNET_MAX_VOXELS", "999")
    with pytest.raises(UnetCoreError, match="1,000 voxels"):
        read_nifti(path)


def test_not_a_nifti_refused(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    with pytest.raises(UnetCoreError, match="not a readable NIfTI"):
        read_nifti(bad)
    with pytest.raises(UnetCoreError, match="no such NIfTI"):
        read_nifti(tmp_path / "missing.nii")
