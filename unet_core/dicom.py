"""DICOM images and series read with ``pydicom`` as volumes (axes ``slice``, ``row``, ``column``).

:func:`read_dicom` accepts a single file (one frame), a multi-frame file, or a folder whose
files form ONE series. Slices are ordered by their position along the slice normal
(ImagePositionPatient projected on the cross product of the ImageOrientationPatient
directions), never by file name. In a folder, files that are not DICOM (or DICOM without pixel
data, e.g. a DICOMDIR) are skipped and counted in ``notes``; a folder mixing
SeriesInstanceUIDs is refused (one line naming the count).

Pixel values: the modality LUT (RescaleSlope/Intercept, e.g. CT to HU) is applied with
``pydicom.pixels.apply_modality_lut`` per slice; ``data`` is float32. The display/model window
is not applied to ``data``: it is recorded in ``stats["window"]`` (the file's WindowCenter /
WindowWidth or VOI LUT, a window the user sets, or the data range when the file has none) and
:func:`windowed` maps values to [0, 1] exactly as ``pydicom.pixels.apply_voi_lut`` does, divided
by its output range. RGB DICOM keeps its 3 channels (``data`` (S, R, C, 3)).

``meta["affine"]`` maps (slice, row, column) voxel indices to NIfTI RAS+ millimetres (DICOM's
LPS with x and y negated), so :func:`write_dicom_as_nifti` writes results as ``.nii.gz``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import UnetCoreError
from .volume import AXES, READERS, WRITERS, Volume, check_voxels

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _pydicom():
    import pydicom

    return pydicom


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _floats(value: Any, n: int) -> np.ndarray | None:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.size == n and np.all(np.isfinite(arr)) else None


def _seq_item(ds: Any, *names: str) -> Any:
    """Follow nested one-item sequences, e.g. ('PlanePositionSequence',)."""
    cur = ds
    for nm in names:
        seq = cur.get(nm) if cur is not None else None
        if not seq:
            return None
        cur = seq[0]
    return cur


def _window_of(ds: Any, index: int = 0) -> dict[str, Any] | None:
    """The VOI window (or LUT) a dataset carries, as :func:`windowed` takes it."""
    voi = ds.get("VOILUTSequence")
    if voi and voi[0].get("LUTDescriptor") is not None and voi[0].get("LUTData") is not None:
        item = voi[min(index, len(voi) - 1)]
        desc = [int(v) for v in item.LUTDescriptor]
        data = item.LUTData
        lut = [int(v) for v in data] if hasattr(data, "__iter__") else [int(data)]
        return {"lut": {"descriptor": desc, "data": lut}, "source": "file VOI LUT"}
    center = ds.get("WindowCenter")
    width = ds.get("WindowWidth")
    if center is None or width is None:
        return None

    def pick(v: Any) -> float:
        try:
            return float(v[index] if len(v) > index else v[0])  # multi-valued
        except TypeError:
            return float(v)

    return {"center": pick(center), "width": pick(width),
            "function": str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper(),
            "source": "file"}


def windowed(volume_or_array: Volume | np.ndarray, ds_or_window: Any = None) -> np.ndarray:
    """Values after the modality LUT mapped through a VOI window to float32 in [0, 1].

    Args:
        volume_or_array: a DICOM :class:`Volume` (its ``data``) or an array of values after
            the modality LUT.
        ds_or_window: a ``pydicom`` Dataset (its VOI LUT or WindowCenter/WindowWidth, index
            0), ``(center, width)`` (LINEAR), a dict ``{"center", "width", "function"}`` or
            ``{"lut": {"descriptor", "data"}}``, or None: the volume's ``stats["window"]``
            (an array without one: its own min..max).

    Returns:
        float32 in [0, 1]: ``pydicom.pixels.apply_voi_lut``'s result minus its lowest output,
        divided by its output range (LINEAR, LINEAR_EXACT and SIGMOID follow PS3.3 C.11.2 as
        pydicom does; a VOI LUT is divided by 2**bits - 1). MONOCHROME1 (``"invert": True``)
        is inverted afterwards so that bright is dense, which pydicom does not do. An RGB
        volume is divided by its maximum sample value.
    """
    if isinstance(volume_or_array, Volume):
        arr = np.asarray(volume_or_array.data)
        window = ds_or_window if ds_or_window is not None else (
            volume_or_array.stats.get("window"))
    else:
        arr = np.asarray(volume_or_array)
        window = ds_or_window
    if window is not None and hasattr(window, "dir") and hasattr(window, "get"):  # Dataset
        found = _window_of(window)
        window = found
    if window is None:
        lo, hi = (float(np.min(arr)), float(np.max(arr))) if arr.size else (0.0, 1.0)
        window = {"center": (lo + hi) / 2, "width": max(hi - lo, 1e-6),
                  "function": "LINEAR_EXACT"}
    if isinstance(window, (tuple, list)):
        if len(window) != 2:
            raise UnetCoreError(
                f"a window of {len(window)} numbers; accepted: (center, width)")
        window = {"center": float(window[0]), "width": float(window[1]), "function": "LINEAR"}
    window = dict(window)
    if window.get("rgb"):
        out = arr.astype(np.float32) / np.float32(window.get("max", 255))
        return np.clip(out, 0.0, 1.0)
    if "lut" in window:
        pydicom = _pydicom()
        from pydicom.dataset import Dataset
        from pydicom.pixels import apply_voi

        ds = Dataset()
        item = Dataset()
        item.LUTDescriptor = list(window["lut"]["descriptor"])
        item.LUTData = list(window["lut"]["data"])
        ds.VOILUTSequence = pydicom.Sequence([item])
        bits = int(item.LUTDescriptor[2])
        out = apply_voi(np.rint(arr).astype(np.int64), ds).astype(np.float64) / (2**bits - 1)
    else:
        center = float(window["center"])
        width = float(window["width"])
        func = str(window.get("function", "LINEAR")).upper()
        x = arr.astype(np.float64)
        if func in ("LINEAR", "LINEAR_EXACT"):
            if func == "LINEAR":
                if width < 1:
                    raise UnetCoreError(
                        f"window width {width} is below 1; accepted: a LINEAR window of width "
                        ">= 1")
                center -= 0.5
                width -= 1
            elif width <= 0:
                raise UnetCoreError(f"window width {width}; accepted: a width > 0")
            if width == 0:  # LINEAR width 1: a threshold
                out = (x > center).astype(np.float64)
            else:
                out = np.clip((x - center) / width + 0.5, 0.0, 1.0)
                out[x <= center - width / 2] = 0.0
                out[x > center + width / 2] = 1.0
        elif func == "SIGMOID":
            if width <= 0:
                raise UnetCoreError(f"window width {width}; accepted: a width > 0")
            out = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
        else:
            raise UnetCoreError(
                f"VOI LUT function {func!r} is not supported; accepted: LINEAR, LINEAR_EXACT, "
                "SIGMOID")
    if window.get("invert"):
        out = 1.0 - out
    return out.astype(np.float32)


def _geometry(ds: Any, frame: int | None = None) -> tuple[
        np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(position (3,), orientation (6,), pixel spacing (2,)) of a file or of one frame of an
    enhanced multi-frame file (per-frame then shared functional groups, then top level)."""
    pos = ori = sp = None
    if frame is not None:
        per = ds.get("PerFrameFunctionalGroupsSequence")
        groups = [per[frame]] if per and frame < len(per) else []
        shared = ds.get("SharedFunctionalGroupsSequence")
        if shared:
            groups.append(shared[0])
        for g in groups:
            if pos is None:
                it = _seq_item(g, "PlanePositionSequence")
                if it is not None:
                    pos = _floats(it.get("ImagePositionPatient", []), 3)
            if ori is None:
                it = _seq_item(g, "PlaneOrientationSequence")
                if it is not None:
                    ori = _floats(it.get("ImageOrientationPatient", []), 6)
            if sp is None:
                it = _seq_item(g, "PixelMeasuresSequence")
                if it is not None:
                    sp = _floats(it.get("PixelSpacing", []), 2)
    if pos is None:
        pos = _floats(ds.get("ImagePositionPatient", []), 3)
    if ori is None:
        ori = _floats(ds.get("ImageOrientationPatient", []), 6)
    if sp is None:
        sp = _floats(ds.get("PixelSpacing", []), 2)
    return pos, ori, sp


def _slice_gap(ds: Any) -> float | None:
    for tag in ("SpacingBetweenSlices", "SliceThickness"):
        v = ds.get(tag)
        if v is None:
            shared = _seq_item(ds, "SharedFunctionalGroupsSequence", "PixelMeasuresSequence")
            v = shared.get(tag) if shared is not None else None
        try:
            if v is not None and float(v) > 0:
                return float(v)
        except (TypeError, ValueError):
            continue
    return None


def _affine(positions: list[np.ndarray] | None, ori: np.ndarray | None,
            spacing: np.ndarray | None, gap: float | None) -> tuple[np.ndarray, str | None]:
    """RAS affine of (slice, row, column) indices, and a note when geometry was missing."""
    note = None
    if ori is None or positions is None or spacing is None:
        note = ("no complete patient geometry (ImagePositionPatient / ImageOrientationPatient / "
                "PixelSpacing): the NIfTI affine is a unit-spacing placeholder")
        ori = np.array([1.0, 0, 0, 0, 1.0, 0])
        spacing = spacing if spacing is not None else np.array([1.0, 1.0])
        positions = [np.array([0.0, 0.0, float(k) * (gap or 1.0)]) for k in
                     range(len(positions) if positions else 1)]
    row_dir = ori[:3]  # direction along a row: increasing column index
    col_dir = ori[3:]  # direction down a column: increasing row index
    normal = np.cross(row_dir, col_dir)
    n = len(positions)
    step = (positions[-1] - positions[0]) / (n - 1) if n > 1 else normal * (gap or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = step
    lps[:3, 1] = col_dir * spacing[0]  # PixelSpacing = (row spacing, column spacing)
    lps[:3, 2] = row_dir * spacing[1]
    lps[:3, 3] = positions[0]
    return LPS_TO_RAS @ lps, note


def _list_folder(folder: Path) -> tuple[list[tuple[Path, Any]], int]:
    """(path, header dataset) of the DICOM image files in ``folder``; and how many skipped."""
    pydicom = _pydicom()
    found: list[tuple[Path, Any]] = []
    skipped = 0
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.name.startswith("."):
            continue
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:
            skipped += 1
            continue
        if "Rows" not in ds or "Columns" not in ds:  # e.g. DICOMDIR, structured report
            skipped += 1
            continue
        found.append((f, ds))
    return found, skipped


def _pixels(ds: Any, label: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise UnetCoreError(
            f"{label}: the pixel data could not be decoded ({_first_line(exc)}); accepted: "
            "uncompressed, RLE, or a transfer syntax with an installed decoder") from None
    if int(ds.get("SamplesPerPixel", 1)) == 1:
        arr = apply_modality_lut(arr, ds)
    return np.asarray(arr, dtype=np.float32)


def read_dicom(path: str | Path, *,
               window: tuple[float, float] | None = None) -> Volume:
    """Read a DICOM file, multi-frame file or one-series folder (see the module docstring).

    Args:
        path: a ``.dcm`` file or a folder of DICOM files of one series.
        window: ``(center, width)`` to use instead of the file's window (LINEAR).

    Returns:
        A :class:`Volume` (format "dicom", axes slice, row, column; float32 after the
        modality LUT; (S, R, C, 3) for RGB). ``meta``: ``affine`` (RAS, 4x4), ``files``
        (the sorted files), ``positions`` (LPS mm per slice), ``orientation``,
        ``pixel_spacing``, ``modality``, ``photometric``. ``stats["window"]``: what
        :func:`windowed` uses by default.
    """
    pydicom = _pydicom()
    p = Path(path)
    name = p.name
    notes: dict[str, str] = {}
    if p.is_dir():
        found, skipped = _list_folder(p)
        if skipped:
            notes["skipped"] = (f"{skipped} file(s) in the folder are not DICOM images and were "
                                "skipped")
        if not found:
            raise UnetCoreError(
                f"{name}: no DICOM image files in the folder; accepted: a folder of DICOM files "
                "of one series, a .dcm file")
        series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in found}
        if len(series) > 1:
            raise UnetCoreError(
                f"{name}: the folder mixes {len(series)} series (SeriesInstanceUID); accepted: a "
                "folder holding one series")
        sizes = {(int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1)))
                 for _, ds in found}
        if len(sizes) > 1:
            raise UnetCoreError(
                f"{name}: the series' images differ in size {sorted(sizes)}; accepted: one "
                "series of equal rows x columns")
        rows, cols, spp = sizes.pop()
        frames = sum(int(ds.get("NumberOfFrames", 1) or 1) for _, ds in found)
        if len(found) > 1 and frames != len(found):
            raise UnetCoreError(
                f"{name}: the folder holds multi-frame files among {len(found)} files; "
                "accepted: one multi-frame file, or a folder of single-frame files")
        if len(found) == 1:
            single = read_dicom(found[0][0], window=window)
            single.source = p
            single.notes.update(notes)
            return single
        check_voxels((len(found), rows, cols) + ((spp,) if spp > 1 else ()), name)
        geos = [_geometry(ds) for _, ds in found]
        oris = [g[1] for g in geos]
        ori = oris[0]
        if ori is not None and any(o is None or np.abs(o - ori).max() > 1e-3 for o in oris):
            raise UnetCoreError(
                f"{name}: the series' slices differ in ImageOrientationPatient; accepted: "
                "parallel slices")
        positions = [g[0] for g in geos]
        if ori is not None and all(pos is not None for pos in positions):
            normal = np.cross(ori[:3], ori[3:])
            keys = [float(np.dot(pos, normal)) for pos in positions]
            order = sorted(range(len(found)), key=lambda i: keys[i])
            sk = np.array([keys[i] for i in order])
            if np.any(np.diff(sk) < 1e-4):
                raise UnetCoreError(
                    f"{name}: two or more slices lie at the same position along the slice "
                    "normal; accepted: one image per position")
            gaps = np.diff(sk)
            if gaps.size and gaps.max() - gaps.min() > 0.01 * max(gaps.mean(), 1e-6) + 1e-3:
                notes["spacing"] = (f"irregular slice spacing ({gaps.min():.4g}.."
                                    f"{gaps.max():.4g} mm): the affine uses the mean")
        else:
            order = sorted(range(len(found)),
                           key=lambda i: (int(found[i][1].get("InstanceNumber", 0) or 0), i))
            notes["order"] = ("no ImagePositionPatient/ImageOrientationPatient: slices ordered "
                              "by InstanceNumber")
        files = [found[i][0] for i in order]
        first = pydicom.dcmread(str(files[0]))
        slices = [_pixels(first, files[0].name)]
        for f in files[1:]:
            slices.append(_pixels(pydicom.dcmread(str(f)), f.name))
        data = np.stack(slices)
        pos_sorted = [positions[i] for i in order]
        if any(pos is None for pos in pos_sorted):
            pos_sorted = None
        spacing = geos[order[0]][2]
        ds0 = first
        frame_positions = pos_sorted
    else:
        if not p.is_file():
            raise UnetCoreError(
                f"{name}: no such DICOM file or folder; accepted: a .dcm file or a folder of "
                "one series")
        try:
            hdr = pydicom.dcmread(str(p), stop_before_pixels=True)
        except Exception as exc:
            raise UnetCoreError(
                f"{name}: not a readable DICOM file ({_first_line(exc)}); accepted: a DICOM "
                "image file") from None
        if "Rows" not in hdr or "Columns" not in hdr:
            raise UnetCoreError(
                f"{name}: a DICOM file without an image (no Rows/Columns); accepted: a DICOM "
                "image file")
        n_frames = int(hdr.get("NumberOfFrames", 1) or 1)
        spp = int(hdr.get("SamplesPerPixel", 1))
        check_voxels((n_frames, int(hdr.Rows), int(hdr.Columns)) + ((spp,) if spp > 1 else ()),
                     name)
        try:
            ds0 = pydicom.dcmread(str(p))
        except Exception as exc:
            raise UnetCoreError(
                f"{name}: not a readable DICOM file ({_first_line(exc)}); accepted: a complete "
                "DICOM image file") from None
        if "PixelData" not in ds0 and "FloatPixelData" not in ds0:
            raise UnetCoreError(
                f"{name}: the DICOM file has no pixel data; accepted: a DICOM image file")
        files = [p]
        if n_frames > 1:
            arr = _pixels_multiframe(ds0, name, n_frames)
            geos = [_geometry(ds0, k) for k in range(n_frames)]
            ori = geos[0][1]
            per_pos = [g[0] for g in geos]
            have_per_frame = bool(ds0.get("PerFrameFunctionalGroupsSequence"))
            if ori is not None and have_per_frame and all(q is not None for q in per_pos):
                normal = np.cross(ori[:3], ori[3:])
                order = sorted(range(n_frames), key=lambda k: float(np.dot(per_pos[k], normal)))
                arr = arr[order]
                frame_positions = [per_pos[k] for k in order]
            elif ori is not None and per_pos[0] is not None:
                gap = _slice_gap(ds0) or 1.0
                normal = np.cross(ori[:3], ori[3:])
                frame_positions = [per_pos[0] + k * gap * normal for k in range(n_frames)]
                notes["frames"] = ("multi-frame file without per-frame positions: frames kept "
                                   f"in stored order, {gap:g} mm apart along the normal")
            else:
                frame_positions = None
            data = arr
            spacing = geos[0][2]
        else:
            data = _pixels(ds0, name)[None]
            pos, ori, spacing = _geometry(ds0)
            frame_positions = [pos] if pos is not None else None
    affine, geo_note = _affine(frame_positions, ori, spacing, _slice_gap(ds0))
    if geo_note:
        notes["geometry"] = geo_note
    photometric = str(ds0.get("PhotometricInterpretation", "MONOCHROME2"))
    spp = int(ds0.get("SamplesPerPixel", 1))
    stats: dict[str, Any] = {}
    if spp > 1:
        bits = int(ds0.get("BitsStored", 8) or 8)
        stats["window"] = {"rgb": True, "max": float(2**bits - 1), "source": "RGB samples"}
        if spp != 3:
            raise UnetCoreError(
                f"{name}: {spp} samples per pixel; accepted: 1 (grey) or 3 (RGB)")
    elif window is not None:
        if len(window) != 2 or float(window[1]) < 1:
            raise UnetCoreError(
                f"{name}: window {window!r}; accepted: (center, width) with width >= 1")
        stats["window"] = {"center": float(window[0]), "width": float(window[1]),
                           "function": "LINEAR", "source": "user"}
    else:
        found_w = _window_of(ds0)
        if found_w is None:
            lo, hi = float(data.min()), float(data.max())
            found_w = {"center": (lo + hi) / 2, "width": max(hi - lo, 1e-6),
                       "function": "LINEAR_EXACT", "source": "data range"}
            notes["window"] = ("no window in the file: the data range "
                               f"{lo:g}..{hi:g} is mapped to [0, 1]")
        stats["window"] = found_w
    if photometric == "MONOCHROME1" and spp == 1:
        stats["window"]["invert"] = True
        notes["invert"] = "MONOCHROME1: windowed values are inverted (bright = dense)"
    meta = {
        "affine": affine,
        "files": files,
        "positions": frame_positions,
        "orientation": ori,
        "pixel_spacing": spacing,
        "modality": str(ds0.get("Modality", "")),
        "photometric": photometric,
        "series_uid": str(ds0.get("SeriesInstanceUID", "")),
    }
    return Volume(data=np.ascontiguousarray(data, dtype=np.float32), format="dicom",
                  axes=AXES["dicom"], source=p, meta=meta, stats=stats, notes=notes)


def _pixels_multiframe(ds: Any, label: str, n_frames: int) -> np.ndarray:
    """All frames after the modality LUT (top-level, or shared/per-frame Pixel Value
    Transformation)."""
    from pydicom.pixels import apply_modality_lut

    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:
        raise UnetCoreError(
            f"{label}: the pixel data could not be decoded ({_first_line(exc)}); accepted: "
            "uncompressed, RLE, or a transfer syntax with an installed decoder") from None
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        return arr.astype(np.float32)
    if "RescaleSlope" in ds or "ModalityLUTSequence" in ds:
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    out = arr.astype(np.float32)
    per = ds.get("PerFrameFunctionalGroupsSequence")
    shared = _seq_item(ds, "SharedFunctionalGroupsSequence")
    for k in range(n_frames):
        item = None
        if per and k < len(per):
            item = _seq_item(per[k], "PixelValueTransformationSequence")
        if item is None and shared is not None:
            item = _seq_item(shared, "PixelValueTransformationSequence")
        if item is not None and "RescaleSlope" in item:
            out[k] = out[k] * float(item.RescaleSlope) + float(item.get("RescaleIntercept", 0))
    return out


def write_dicom_as_nifti(volume: Volume, array: np.ndarray, path: str | Path,
                         kind: str) -> Path:
    """Write ``array`` (``volume.shape``: slice, row, column) as ``.nii.gz`` with the series'
    RAS affine (``meta["affine"]``); "prob" -> float32, "mask" -> uint8."""
    from .nifti import save_nifti

    arr = np.asarray(array)
    if arr.shape != volume.shape:
        raise UnetCoreError(
            f"a result of shape {arr.shape} does not fit {volume.source.name}; accepted: "
            f"{volume.shape}")
    return save_nifti(arr, volume.meta["affine"], path, kind)


READERS["dicom"] = read_dicom
WRITERS["dicom"] = write_dicom_as_nifti
