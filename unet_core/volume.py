"""Volumes: a 3-D array with named axes, sliced into the 2-D images the engine segments.

A :class:`Volume` holds ``data`` with three named axes (SEG-Y: ``inline``, ``crossline``,
``depth``; NIfTI in canonical RAS+ orientation: ``sagittal`` (x), ``coronal`` (y), ``axial``
(z); DICOM series: ``slice``, ``row``, ``column``), optionally a last channel axis (RGB DICOM),
the reader's ``meta`` needed to write results back in the input's own format and geometry, and
``stats`` computed once per volume (e.g. the SEG-Y amplitude clip).

Slicing along an axis gives the image a person expects to see (:meth:`Volume.slice`), and
:meth:`Volume.put_slice` writes a 2-D result for that slice back into an array of the volume's
spatial shape, undoing the display transform exactly, so
``put_slice(out, axis, i, v.slice(axis, i))`` rebuilds ``data``. Display transforms:

* SEG-Y: an inline or crossline section is shown with depth downwards (rows = samples); a depth
  (time) slice has rows = inlines, columns = crosslines.
* NIfTI (RAS+): axial slices have anterior at the top and the patient's right on the image's
  left (radiological convention); coronal and sagittal slices have superior at the top.
* DICOM: a ``slice`` image is the stored frame (rows, columns); ``row`` and ``column`` cuts have
  the slice axis downwards.

Limits: ``UNET_MAX_VOXELS`` (default 512 M voxels) bounds a volume before its data are read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import budget
from .errors import UnetCoreError

DEFAULT_MAX_VOXELS = 512 * 2**20

# per format: the axis names, and per axis a display transform of the 2-D cut
# (before -> shown) given as (transpose?, flip rows?, flip columns?)
_DISPLAY: dict[str, dict[str, tuple[bool, bool, bool]]] = {
    # cut of (il, xl, z): inline -> (xl, z) -> transpose -> (z, xl): depth down
    "segy": {"inline": (True, False, False), "crossline": (True, False, False),
             "depth": (False, False, False)},
    # RAS+ (x, y, z). axial cut (x, y) -> transpose (y, x) -> flip rows: anterior up;
    # columns x increase to the right of the array, i.e. patient left on the right
    "nifti": {"axial": (True, True, False), "coronal": (True, True, False),
              "sagittal": (True, True, False)},
    "dicom": {"slice": (False, False, False), "row": (False, False, False),
              "column": (False, False, False)},
}
AXES: dict[str, tuple[str, str, str]] = {
    "segy": ("inline", "crossline", "depth"),
    "nifti": ("sagittal", "coronal", "axial"),
    "dicom": ("slice", "row", "column"),
}
DEFAULT_AXIS: dict[str, str] = {"segy": "inline", "nifti": "axial", "dicom": "slice"}
VOLUME_EXTENSIONS: tuple[str, ...] = (".sgy", ".segy", ".nii", ".nii.gz", ".dcm")


def max_voxels() -> int:
    """``UNET_MAX_VOXELS`` or 512 M (a 2 GB float32 cube)."""
    return budget._env_int("UNET_MAX_VOXELS", DEFAULT_MAX_VOXELS)


def check_voxels(shape: tuple[int, ...], label: str) -> None:
    """Refuse a volume over :func:`max_voxels` before its data are read (one line)."""
    n = int(np.prod([int(s) for s in shape], dtype=object))
    if n > max_voxels():
        dims = "x".join(str(int(s)) for s in shape)
        raise UnetCoreError(
            f"{label}: refused: the volume is {dims} = {n:,} voxels (limit {max_voxels():,}, "
            "UNET_MAX_VOXELS)")


def is_volume_path(path: str | Path) -> bool:
    """Whether ``path`` names a volume file (by extension) or a folder of DICOM files."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return any(f.suffix.lower() == ".dcm" for f in p.iterdir() if f.is_file())
    return any(name.endswith(ext) for ext in VOLUME_EXTENSIONS)


@dataclass
class Volume:
    """A volume and what is needed to write results back (see the module docstring).

    Attributes:
        data: (D0, D1, D2) or (D0, D1, D2, C) array as read (native dtype; SEG-Y float32
            amplitudes, NIfTI/DICOM after the modality rescale).
        format: "segy", "nifti" or "dicom".
        axes: the names of D0, D1, D2 (see :data:`AXES`).
        source: the file or folder read.
        meta: reader-specific facts for the writer (trace headers, affine, ...).
        stats: statistics computed once per volume (e.g. {"clip": [lo, hi]} for SEG-Y).
        notes: what the reader decided and why (e.g. "unstructured SEG-Y read as a 2-D
            section"), one sentence per key.
    """

    data: np.ndarray
    format: str
    axes: tuple[str, str, str]
    source: Path
    meta: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The spatial shape (D0, D1, D2)."""
        return tuple(int(s) for s in self.data.shape[:3])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        """Channels per voxel (1, or 3 for RGB DICOM)."""
        return 1 if self.data.ndim == 3 else int(self.data.shape[3])

    def axis_index(self, axis: str) -> int:
        """Position of ``axis`` in :attr:`axes`, or a one-line error naming the accepted ones."""
        if axis not in self.axes:
            raise UnetCoreError(
                f"{self.source.name}: no axis {axis!r} in a {self.format} volume; accepted: "
                f"{', '.join(self.axes)}")
        return self.axes.index(axis)

    def n_slices(self, axis: str) -> int:
        """Number of slices along ``axis``."""
        return self.shape[self.axis_index(axis)]

    def _cut(self, arr: np.ndarray, axis: str, index: int) -> np.ndarray:
        a = self.axis_index(axis)
        n = self.shape[a]
        if not 0 <= int(index) < n:
            raise UnetCoreError(
                f"{self.source.name}: slice {index} is outside the {axis} axis; accepted: "
                f"0..{n - 1}")
        return np.take(arr, int(index), axis=a)

    def _display(self, axis: str) -> tuple[bool, bool, bool]:
        return _DISPLAY[self.format][axis]

    def slice(self, axis: str, index: int) -> np.ndarray:
        """The ``index``-th slice along ``axis`` as shown: (H, W) or (H, W, C), ``data``'s
        dtype (a view where possible)."""
        cut = self._cut(self.data, axis, index)
        transpose, flip_r, flip_c = self._display(axis)
        if transpose:
            cut = np.swapaxes(cut, 0, 1)
        if flip_r:
            cut = cut[::-1]
        if flip_c:
            cut = cut[:, ::-1]
        return cut

    def slice_shape(self, axis: str) -> tuple[int, int]:
        """(H, W) of a displayed slice along ``axis``."""
        a = self.axis_index(axis)
        rest = [s for i, s in enumerate(self.shape) if i != a]
        return (rest[1], rest[0]) if self._display(axis)[0] else (rest[0], rest[1])

    def put_slice(self, out: np.ndarray, axis: str, index: int, image: np.ndarray) -> None:
        """Write a displayed (H, W) result for slice ``index`` along ``axis`` into ``out``
        (shape :attr:`shape`), undoing the display transform."""
        arr = np.asarray(image)
        if arr.shape[:2] != self.slice_shape(axis):
            raise UnetCoreError(
                f"a slice result of shape {arr.shape[:2]} does not fit the {axis} axis of "
                f"{self.source.name}; accepted: {self.slice_shape(axis)}")
        transpose, flip_r, flip_c = self._display(axis)
        if flip_c:
            arr = arr[:, ::-1]
        if flip_r:
            arr = arr[::-1]
        if transpose:
            arr = np.swapaxes(arr, 0, 1)
        a = self.axis_index(axis)
        idx: list[Any] = [slice(None)] * out.ndim
        idx[a] = int(index)
        out[tuple(idx)] = arr


#: format -> reader(path, **options) -> Volume; filled by the format modules
READERS: dict[str, Callable[..., Volume]] = {}
#: format -> writer(volume, array (D0, D1, D2), path, kind) -> Path
WRITERS: dict[str, Callable[..., Path]] = {}


# --------------------------------------------------------------------------- dispatch

#: format -> (engine module, the package it needs, how to install it, what the format is called)
_MODULES: dict[str, tuple[str, str, str]] = {
    "segy": ("segy", "segyio", "SEG-Y"),
    "nifti": ("nifti", "nibabel", "NIfTI"),
    "dicom": ("dicom", "pydicom", "DICOM"),
}
#: the file suffix of each output format
_OUT_SUFFIX: dict[str, str] = {"segy": ".sgy", "nifti": ".nii.gz", "dicom": ".nii.gz"}
#: the format results are written in, per input format (DICOM input -> NIfTI output)
OUTPUT_FORMAT: dict[str, str] = {"segy": "segy", "nifti": "nifti", "dicom": "nifti"}
KINDS: tuple[str, ...] = ("prob", "mask")


def volume_format(path: str | Path) -> str:
    """The format of a volume path: ``segy`` (.sgy, .segy), ``nifti`` (.nii, .nii.gz) or
    ``dicom`` (.dcm, or a folder holding .dcm files); else a one-line error."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        if is_volume_path(p):
            return "dicom"
        raise UnetCoreError(f"{p.name}: a folder without .dcm files; accepted volumes: "
                            ".sgy/.segy, .nii/.nii.gz, .dcm or a folder of .dcm files")
    if name.endswith((".sgy", ".segy")):
        return "segy"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".dcm"):
        return "dicom"
    raise UnetCoreError(f"{p.name}: not a volume; accepted: .sgy/.segy (SEG-Y), .nii/.nii.gz "
                        "(NIfTI), .dcm or a folder of .dcm files (DICOM)")


def _ensure_module(fmt: str) -> None:
    """Import the format module of ``fmt`` (it registers its reader and writer), or a one-line
    error saying what to install."""
    import importlib

    module, package, label = _MODULES[fmt]
    try:
        importlib.import_module(f"{__package__}.{module}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == package:
            raise UnetCoreError(f"{label} volumes need the {package} package; install it with "
                                f"`pip install {package}`") from None
        raise UnetCoreError(f"{label} volumes are not supported by this copy of unet_core (no "
                            f"module unet_core.{module}); install the full engine") from None


def _registered(registry: dict[str, Callable[..., Any]], fmt: str, what: str
                ) -> Callable[..., Any]:
    if fmt not in registry:
        _ensure_module(fmt)
    if fmt not in registry:
        raise UnetCoreError(f"no {what} for {_MODULES[fmt][2]} volumes is registered; "
                            f"accepted formats: {', '.join(sorted(registry)) or 'none'}")
    return registry[fmt]


def read_volume(path: str | Path, *, inline_byte: int = 189, crossline_byte: int = 193,
                time_index: int | None = None, window: tuple[float, float] | None = None
                ) -> Volume:
    """Read a volume, dispatching on the path (:func:`volume_format`).

    Options go to the reader of their format only: ``inline_byte``/``crossline_byte`` (SEG-Y
    trace-header byte positions), ``time_index`` (the volume of a 4-D NIfTI), ``window``
    (DICOM (centre, width) instead of the file's VOI LUT). An option given for another format
    is a one-line error. The format module is imported on first use; a missing package is a
    one-line error saying what to install.
    """
    p = Path(path)
    if not p.exists():
        raise UnetCoreError(f"{p.name}: no such file or folder")
    fmt = volume_format(p)
    options: dict[str, Any] = {}
    if fmt == "segy":
        options = {"inline_byte": int(inline_byte), "crossline_byte": int(crossline_byte)}
    elif (inline_byte, crossline_byte) != (189, 193):
        raise UnetCoreError(f"{p.name}: inline/crossline byte positions are for SEG-Y input; "
                            f"this is {_MODULES[fmt][2]}")
    if time_index is not None:
        if fmt != "nifti":
            raise UnetCoreError(f"{p.name}: a time index is for 4-D NIfTI input; this is "
                                f"{_MODULES[fmt][2]}")
        options["time_index"] = int(time_index)
    if window is not None:
        if fmt != "dicom":
            raise UnetCoreError(f"{p.name}: a display window is for DICOM input; this is "
                                f"{_MODULES[fmt][2]}")
        options["window"] = (float(window[0]), float(window[1]))
    reader = _registered(READERS, fmt, "reader")
    return reader(p, **options)


def output_name(volume: Volume, name: str, kind: str) -> str:
    """``NAME_prob.sgy``/``NAME_mask.sgy`` for SEG-Y, ``NAME_KIND.nii.gz`` for NIfTI and DICOM."""
    if kind not in KINDS:
        raise UnetCoreError(f"unknown output kind {kind!r}; accepted: {', '.join(KINDS)}")
    return f"{name}_{kind}{_OUT_SUFFIX[volume.format]}"


def volume_stem(path: str | Path) -> str:
    """An input's NAME for its outputs: the file name without .sgy/.segy/.nii/.nii.gz/.dcm, or
    the folder name of a DICOM series."""
    p = Path(path)
    name = p.name
    for ext in (".nii.gz", ".segy", ".sgy", ".nii", ".dcm"):
        if name.lower().endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name


def write_volume(volume: Volume, array: np.ndarray, out_dir: str | Path, name: str,
                 kind: str) -> Path:
    """Write a result cube in the input's own format and geometry; returns its path.

    ``array`` is (D0, D1, D2) (:attr:`Volume.shape`): float32 probabilities (``kind="prob"``)
    or uint8 0/1 / class labels (``kind="mask"``). SEG-Y input gives ``OUT/NAME_KIND.sgy``,
    NIfTI and DICOM input ``OUT/NAME_KIND.nii.gz``. The file is written under a temporary name
    in ``out_dir`` and renamed when complete, so a failure leaves nothing half-written.
    """
    import os
    import secrets

    arr = np.asarray(array)
    if arr.shape != volume.shape:
        raise UnetCoreError(f"a result of shape {arr.shape} does not fit {volume.source.name}; "
                            f"accepted: {volume.shape}")
    target_name = output_name(volume, name, kind)
    writer = _registered(WRITERS, volume.format, "writer") if volume.format in WRITERS else \
        _registered(WRITERS, OUTPUT_FORMAT[volume.format], "writer")
    out = Path(out_dir)
    target = out / target_name
    tmp = out / f".tmp-{secrets.token_hex(4)}-{target_name}"
    try:
        writer(volume, arr, tmp, kind)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
