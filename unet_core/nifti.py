"""NIfTI volumes (``.nii`` / ``.nii.gz``) read with ``nibabel`` and written back.

:func:`read_nifti` returns a :class:`~unet_core.volume.Volume` in the canonical RAS+
orientation (axes ``sagittal`` = x, ``coronal`` = y, ``axial`` = z), the same reorientation as
``nibabel.as_closest_canonical`` but applied only to the one 3-D volume read (a 4-D file is read
at one time index, default 0). The shape is checked against ``UNET_MAX_VOXELS`` from the header
before any data are read; an affine that is not invertible is refused.

:func:`write_nifti` writes a result computed in canonical orientation back in the input's own
voxel order, affine and shape (``.nii.gz``; float32 for ``prob``, uint8 for ``mask``), through a
temporary file in the target folder renamed when complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UnetCoreError
from .volume import AXES, READERS, WRITERS, Volume, check_voxels

NIFTI_EXTENSIONS = (".nii", ".nii.gz")
KINDS = {"prob": np.float32, "mask": np.uint8}


def _nib():
    import nibabel as nib

    return nib


def _is_nifti_name(path: Path) -> bool:
    return any(path.name.lower().endswith(ext) for ext in NIFTI_EXTENSIONS)


def _spatial_shape(shape: tuple[int, ...], name: str) -> tuple[tuple[int, int, int], int]:
    """(x, y, z) and the number of time points of a header shape (trailing 1s dropped)."""
    dims = [int(s) for s in shape]
    while len(dims) > 4 and dims[-1] == 1:
        dims.pop()
    if len(dims) == 2:
        dims.append(1)
    if len(dims) not in (3, 4):
        raise UnetCoreError(
            f"{name}: a NIfTI of shape {tuple(shape)} is not a volume; accepted: 3-D (x, y, z) "
            "or 4-D (x, y, z, t)")
    n_t = dims[3] if len(dims) == 4 else 1
    return (dims[0], dims[1], dims[2]), n_t


def read_nifti(path: str | Path, *, time_index: int | None = None) -> Volume:
    """Read a NIfTI file as a canonical RAS+ volume.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        time_index: the volume of a 4-D file to read (default 0, said in ``notes``); out of
            range is a one-line error; for a 3-D file only 0 (or none) is accepted.

    Returns:
        A :class:`Volume` (format "nifti") whose ``data`` is float/int as stored after the
        NIfTI scaling (``scl_slope``/``scl_inter``), and whose ``meta`` holds ``affine`` (the
        file's), ``shape`` (the file's spatial shape), ``header`` (a copy), ``ornt`` (the
        nibabel orientation transform file -> canonical), ``canonical_affine``,
        ``time_index`` and ``n_times``.
    """
    nib = _nib()
    p = Path(path)
    name = p.name
    if not p.is_file():
        raise UnetCoreError(f"{name}: no such NIfTI file; accepted: an existing .nii or .nii.gz")
    try:
        img = nib.load(str(p))
    except Exception as exc:  # nibabel raises many kinds on bad files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnetCoreError(
            f"{name}: not a readable NIfTI file ({first}); accepted: .nii or .nii.gz") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise UnetCoreError(
            f"{name}: a {type(img).__name__} is not a NIfTI image; accepted: .nii or .nii.gz")
    header_shape = tuple(int(s) for s in img.shape)
    spatial, n_t = _spatial_shape(header_shape, name)
    check_voxels(spatial, name)
    if img.get_data_dtype().fields is not None:
        raise UnetCoreError(
            f"{name}: RGB/structured NIfTI voxels ({img.get_data_dtype()}) are not supported; "
            "accepted: one scalar per voxel")
    affine = np.asarray(img.affine, dtype=np.float64)
    if (not np.all(np.isfinite(affine))
            or abs(float(np.linalg.det(affine[:3, :3]))) < 1e-12):
        raise UnetCoreError(
            f"{name}: the affine is not invertible (voxel-to-world matrix with determinant 0 or "
            "not finite); accepted: a NIfTI with a valid qform or sform")
    notes: dict[str, str] = {}
    if n_t > 1 or len(header_shape) >= 4:
        if time_index is None:
            time_index = 0
            notes["time_index"] = (
                f"4-D NIfTI with {n_t} time points: time index 0 read (choose with time_index)")
        if not 0 <= int(time_index) < n_t:
            raise UnetCoreError(
                f"{name}: time index {time_index} is outside the volume's {n_t} time points; "
                f"accepted: 0..{n_t - 1}")
    elif time_index not in (None, 0):
        raise UnetCoreError(
            f"{name}: time index {time_index} given for a 3-D NIfTI; accepted: 0 or none")
    t = int(time_index or 0)
    try:
        if len(header_shape) >= 4:
            idx: tuple[Any, ...] = (slice(None),) * 3 + (t,) + (0,) * (len(header_shape) - 4)
            data = np.asanyarray(img.dataobj[idx])
        else:
            data = np.asanyarray(img.dataobj)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnetCoreError(
            f"{name}: the voxel data could not be read ({first}); accepted: a complete NIfTI "
            "file") from None
    data = np.asarray(data).reshape(spatial)
    ornt_file = nib.orientations.io_orientation(affine)
    ornt = nib.orientations.ornt_transform(ornt_file, nib.orientations.axcodes2ornt("RAS"))
    canon = nib.orientations.apply_orientation(data, ornt)
    canon_affine = affine @ nib.orientations.inv_ornt_aff(ornt, spatial)
    codes = "".join(nib.orientations.aff2axcodes(affine))
    if codes != "RAS":
        notes["orientation"] = f"stored as {codes}, reoriented to canonical RAS+"
    meta = {
        "affine": affine,
        "canonical_affine": canon_affine,
        "shape": spatial,
        "header": img.header.copy(),
        "ornt": ornt,
        "axcodes": codes,
        "time_index": t,
        "n_times": n_t,
    }
    return Volume(data=np.ascontiguousarray(canon), format="nifti", axes=AXES["nifti"],
                  source=p, meta=meta, notes=notes)


def _cast(array: np.ndarray, kind: str, label: str) -> np.ndarray:
    if kind not in KINDS:
        raise UnetCoreError(f"unknown output kind {kind!r}; accepted: {', '.join(KINDS)}")
    arr = np.asarray(array)
    if kind == "mask" and arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0
                                        or arr.max() > 255):
        raise UnetCoreError(
            f"{label}: mask values span {arr.min()}..{arr.max()}; accepted: finite 0..255")
    return arr.astype(KINDS[kind])


def save_nifti(array: np.ndarray, affine: np.ndarray, path: str | Path, kind: str,
               header: Any = None) -> Path:
    """Write ``array`` (x, y, z in the affine's voxel order) as NIfTI-1 with ``affine``,
    atomically (a temporary name in the target folder, then ``os.replace``)."""
    nib = _nib()
    out = Path(path)
    if not _is_nifti_name(out):
        raise UnetCoreError(f"{out.name}: not a NIfTI file name; accepted: .nii.gz or .nii")
    data = _cast(array, kind, out.name)
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    if header is not None:
        try:
            img.header.set_xyzt_units(*header.get_xyzt_units())
            sform_code = int(header["sform_code"])
            qform_code = int(header["qform_code"])
            img.set_sform(affine, code=sform_code or 2)
            img.set_qform(affine, code=qform_code or 1)
        except Exception:  # an Analyze-like header: keep nibabel's defaults
            pass
    img.header.set_data_dtype(KINDS[kind])
    img.header.set_slope_inter(1.0, 0.0)
    suffix = ".nii.gz" if out.name.lower().endswith(".nii.gz") else ".nii"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}{suffix}"
    try:
        nib.save(img, str(tmp))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def write_nifti(volume: Volume, array: np.ndarray, path: str | Path, kind: str) -> Path:
    """Write ``array`` (``volume.shape``, canonical RAS+) to ``path`` (``.nii.gz``) in the
    input's own voxel order, affine and spatial shape; ``kind`` "prob" -> float32, "mask" ->
    uint8."""
    nib = _nib()
    arr = np.asarray(array)
    if arr.shape != volume.shape:
        raise UnetCoreError(
            f"a result of shape {arr.shape} does not fit {volume.source.name}; accepted: "
            f"{volume.shape}")
    back = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), nib.orientations.io_orientation(
            volume.meta["affine"]))
    orig = nib.orientations.apply_orientation(arr, back)
    if tuple(orig.shape) != tuple(volume.meta["shape"]):  # pragma: no cover - defensive
        raise UnetCoreError(
            f"{volume.source.name}: internal orientation mismatch {orig.shape} vs "
            f"{volume.meta['shape']}")
    return save_nifti(orig, volume.meta["affine"], path, kind, header=volume.meta.get("header"))


READERS["nifti"] = read_nifti
WRITERS["nifti"] = write_nifti
