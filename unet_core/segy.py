"""SEG-Y cubes in and out, with ``segyio``.

:func:`read_segy` reads a post-stack 3-D cube into a :class:`~unet_core.volume.Volume` of
float32 amplitudes shaped (n_inlines, n_crosslines, n_samples), axes (inline, crossline,
depth). The inline and crossline numbers are taken from the trace headers at the byte
positions ``inline_byte``/``crossline_byte`` (defaults 189/193, the SEG-Y rev 1 positions);
the traces may come in any order (inline- or crossline-sorted) but must form a complete
grid: every (inline, crossline) pair exactly once.

* A file whose traces all carry the same inline/crossline numbers (e.g. all zero: no geometry
  in the headers) is *unstructured*: it is read as one 2-D section of traces, a cube with a
  single inline, in file order, and ``notes["geometry"]`` says so.
* Anything else that is not a complete grid (missing or repeated traces, a pre-stack
  gather) is refused in one line, as are a truncated file, a file that is not SEG-Y, and a
  cube over the voxel limit (``UNET_MAX_VOXELS``, checked from the headers before any trace is
  read).

Amplitudes are signed floats of any scale. ``stats`` records, once per cube, the clip that
maps them to [0, 1] (:func:`scale_amplitudes`): ``c`` = the upper percentile (default 99 %)
of ``|amplitude|`` over a seeded random sample of ``sample_traces`` traces (all of them if the
cube has fewer), and ``stats["clip"] = [-c, c]``; an amplitude ``x`` maps to
``clip((x + c) / (2 c), 0, 1)``, so zero amplitude is mid-grey. The lower percentile of
``|amplitude|`` is recorded too (``stats["abs_low"]``) but does not enter the symmetric clip.

:func:`write_segy` writes an array of the cube's shape (probabilities or a 0/1 mask) as SEG-Y
with the input's text, binary and trace headers copied from the source file (so the same
inline/crossline numbers, sample count and interval), samples as 4-byte IEEE floats (format 5),
written to a temporary name in the target folder and renamed when complete.
:func:`write_cube` writes a plain array as a new SEG-Y cube (used by the synthetic data).

Both register themselves in :data:`unet_core.volume.READERS` / ``WRITERS`` under ``"segy"``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UnetCoreError
from .volume import AXES, READERS, WRITERS, Volume, check_voxels

__all__ = ["read_segy", "scale_amplitudes", "write_cube", "write_segy"]

#: SEG-Y sample format codes segyio reads, and their names
_FORMATS = {1: "4-byte IBM float", 2: "4-byte signed integer", 3: "2-byte signed integer",
            5: "4-byte IEEE float", 8: "1-byte signed integer", 10: "4-byte unsigned integer",
            11: "2-byte unsigned integer", 16: "1-byte unsigned integer"}
_CLIP_SEED = 0


def _segyio() -> Any:
    try:
        import segyio
    except ImportError as exc:  # pragma: no cover - segyio is a dependency
        raise UnetCoreError("reading SEG-Y needs the segyio package (pip install segyio)") from exc
    return segyio


def _open(path: Path) -> Any:
    """Open ``path`` with segyio without geometry inference, or a one-line error."""
    segyio = _segyio()
    if not path.is_file():
        raise UnetCoreError(f"{path.name}: no such SEG-Y file; accepted: a .sgy/.segy file")
    size = path.stat().st_size
    if size < 3600 + 240:
        raise UnetCoreError(
            f"{path.name}: not a SEG-Y file ({size} bytes, shorter than the 3600-byte file "
            "header and one trace header); accepted: a SEG-Y rev 0/1/2 file")
    try:
        return segyio.open(str(path), "r", ignore_geometry=True)
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "inconsistent with file size" in msg:
            raise UnetCoreError(
                f"{path.name}: truncated or damaged SEG-Y: the file size ({size:,} bytes) is not "
                "the headers plus a whole number of traces; accepted: a complete SEG-Y file"
            ) from exc
        raise UnetCoreError(
            f"{path.name}: not a readable SEG-Y file ({msg}); accepted: a SEG-Y rev 0/1/2 file "
            "with 4-byte IBM/IEEE, integer or 1-byte samples") from exc
    except (OSError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnetCoreError(
            f"{path.name}: not a readable SEG-Y file ({msg}); accepted: a SEG-Y rev 0/1/2 "
            "file") from exc


def _check_byte(value: int, name: str) -> int:
    b = int(value)
    if not 1 <= b <= 237:
        raise UnetCoreError(f"{name} {value} is not a trace header byte; accepted: 1..237 "
                            "(SEG-Y rev 1: inline 189, crossline 193)")
    return b


def _geometry(name: str, il: np.ndarray, xl: np.ndarray, inline_byte: int,
              crossline_byte: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """(inlines, crosslines, il_index, xl_index, unstructured) of the traces, or a refusal."""
    n = il.size
    if n and (il == il[0]).all() and (xl == xl[0]).all() and n > 1:
        # no geometry in the headers: one 2-D section in file order
        return (il[:1].copy(), np.arange(1, n + 1, dtype=np.int64), np.zeros(n, np.int64),
                np.arange(n, dtype=np.int64), True)
    inlines, il_idx = np.unique(il, return_inverse=True)
    crosslines, xl_idx = np.unique(xl, return_inverse=True)
    cells = inlines.size * crosslines.size
    seen = np.zeros(cells, dtype=np.int64)
    np.add.at(seen, il_idx * crosslines.size + xl_idx, 1)
    if cells != n or (seen != 1).any():
        missing, repeated = int((seen == 0).sum()), int((seen > 1).sum())
        raise UnetCoreError(
            f"{name}: irregular geometry: {n:,} traces over {inlines.size} inlines x "
            f"{crosslines.size} crosslines (bytes {inline_byte}/{crossline_byte}), "
            f"{missing:,} grid positions missing and {repeated:,} repeated; accepted: a "
            "post-stack cube with every inline/crossline pair once (set inline_byte/"
            "crossline_byte if the numbers are elsewhere)")
    return inlines, crosslines, il_idx.astype(np.int64), xl_idx.astype(np.int64), False


def clip_stats(data: np.ndarray, *, clip_percentiles: Sequence[float] = (1, 99),
               sample_traces: int = 2000, seed: int = _CLIP_SEED) -> dict[str, Any]:
    """The amplitude clip of a cube ``data`` (..., n_samples): see the module docstring.

    Traces are drawn without replacement with ``numpy.random.default_rng(seed)`` (all of them
    when there are no more than ``sample_traces``)."""
    lo_p, hi_p = (float(p) for p in clip_percentiles)
    if not 0 <= lo_p < hi_p <= 100:
        raise UnetCoreError(f"clip percentiles {clip_percentiles!r} are not 0 <= low < high "
                            "<= 100; accepted: e.g. (1, 99)")
    traces = data.reshape(-1, data.shape[-1])
    n = traces.shape[0]
    k = max(1, min(int(sample_traces), n))
    if k < n:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
        traces = traces[rows]
    mag = np.abs(traces.astype(np.float64, copy=False))
    finite = mag[np.isfinite(mag)]
    low, c = (np.percentile(finite, [lo_p, hi_p]) if finite.size else (0.0, 0.0))
    return {"clip": [-float(c), float(c)], "abs_low": float(low), "percentiles": [lo_p, hi_p],
            "traces_sampled": int(k), "seed": int(seed)}


def scale_amplitudes(x: np.ndarray, stats: dict[str, Any]) -> np.ndarray:
    """Map signed amplitudes to float32 [0, 1] with the cube's clip ``stats["clip"]``:
    ``clip((x - lo) / (hi - lo), 0, 1)``; with ``[lo, hi] = [-c, c]`` that is
    ``clip((x + c) / (2 c), 0, 1)``. A zero clip (an all-zero cube) gives 0.5 everywhere."""
    clip = stats["clip"]
    lo, hi = (float(-clip), float(clip)) if np.isscalar(clip) else (float(clip[0]),
                                                                    float(clip[1]))
    arr = np.asarray(x, dtype=np.float32)
    if not hi > lo:
        return np.full(arr.shape, 0.5, dtype=np.float32)
    out = (arr - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(np.nan_to_num(out, nan=0.5), 0.0, 1.0).astype(np.float32, copy=False)


def read_segy(path: str | os.PathLike, *, inline_byte: int = 189, crossline_byte: int = 193,
              clip_percentiles: Sequence[float] = (1, 99), sample_traces: int = 2000,
              **_: Any) -> Volume:
    """Read a post-stack SEG-Y cube (or an unstructured file as a 2-D section); see the module
    docstring. Returns a ``Volume`` of format ``"segy"`` with float32 amplitudes."""
    segyio = _segyio()
    p = Path(path)
    ib, xb = _check_byte(inline_byte, "inline_byte"), _check_byte(crossline_byte,
                                                                   "crossline_byte")
    with _open(p) as f:
        n_traces, ns = int(f.tracecount), int(len(f.samples))
        if n_traces < 1 or ns < 1:
            raise UnetCoreError(f"{p.name}: a SEG-Y file with {n_traces} traces of {ns} samples; "
                                "accepted: at least one trace of at least one sample")
        code = int(f.bin[segyio.BinField.Format])
        il = np.asarray(f.attributes(ib)[:], dtype=np.int64)
        xl = np.asarray(f.attributes(xb)[:], dtype=np.int64)
        inlines, crosslines, il_idx, xl_idx, unstructured = _geometry(p.name, il, xl, ib, xb)
        shape = (int(inlines.size), int(crosslines.size), ns)
        check_voxels(shape, p.name)
        data = np.empty(shape, dtype=np.float32)
        # trace by trace keeps the peak at one copy of the cube
        for i in range(n_traces):
            data[il_idx[i], xl_idx[i]] = f.trace.raw[i]
        samples = np.asarray(f.samples, dtype=np.float64)
        interval_us = int(f.bin[segyio.BinField.Interval])
        ext = int(f.ext_headers)
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise UnetCoreError(f"{p.name}: {bad:,} samples are NaN or infinite; accepted: finite "
                            "amplitudes")
    notes: dict[str, str] = {}
    if unstructured:
        notes["geometry"] = (
            f"unstructured SEG-Y (all {n_traces} traces carry inline {int(inlines[0])} and the "
            f"same crossline at bytes {ib}/{xb}): read as a 2-D section of traces, one inline "
            f"whose crosslines are the trace numbers 1..{n_traces}")
    else:
        notes["geometry"] = (f"post-stack cube: {shape[0]} inlines {int(inlines[0])}.."
                             f"{int(inlines[-1])} x {shape[1]} crosslines "
                             f"{int(crosslines[0])}..{int(crosslines[-1])} x {ns} samples")
    stats = clip_stats(data, clip_percentiles=clip_percentiles, sample_traces=sample_traces)
    notes["clip"] = (f"amplitudes clipped to +-{stats['clip'][1]:.6g} (the "
                     f"{stats['percentiles'][1]:g}th percentile of |amplitude| over "
                     f"{stats['traces_sampled']} traces) for display and segmentation")
    meta = {
        "inlines": [int(v) for v in inlines], "crosslines": [int(v) for v in crosslines],
        "inline_byte": ib, "crossline_byte": xb, "n_samples": ns, "n_traces": n_traces,
        "samples": [float(v) for v in samples], "sample_interval_us": interval_us,
        "format": code, "format_name": _FORMATS.get(code, f"code {code}"),
        "ext_headers": ext, "unstructured": bool(unstructured), "source": str(p.resolve()),
    }
    return Volume(data=data, format="segy", axes=AXES["segy"], source=p, meta=meta,
                  stats=stats, notes=notes)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _copy_trace_headers(src: Path, dst: Path, n: int, ns: int, ext: int) -> None:
    """Copy the 240-byte trace headers of ``src`` into ``dst`` (float32 samples) byte for byte
    (segyio's header-by-header copy is ~100 us a trace); the trace stride of ``src`` follows
    from its size, which segyio has already checked against its trace count."""
    offset = 3600 + 3200 * ext
    stride = (src.stat().st_size - offset) // n
    s = np.memmap(src, dtype=np.uint8, mode="r", offset=offset, shape=(n, stride))
    d = np.memmap(dst, dtype=np.uint8, mode="r+", offset=offset, shape=(n, 240 + 4 * ns))
    step = 65536
    for a in range(0, n, step):
        d[a:a + step, :240] = s[a:a + step, :240]
    d.flush()
    del s, d


def write_segy(volume: Volume, array: np.ndarray, path: str | os.PathLike,
               kind: str = "prob") -> Path:
    """Write ``array`` (the cube's shape: probabilities or a 0/1 / label mask) as SEG-Y with
    the source file's text, binary and trace headers, float32 IEEE samples (format 5).

    The traces are written in the source's order, each at its own inline/crossline. The file
    is written to a hidden temporary name beside ``path`` and renamed when complete; on any
    failure nothing is left. Returns ``path``."""
    segyio = _segyio()
    if kind not in ("prob", "mask"):
        raise UnetCoreError(f"write kind {kind!r} is unknown; accepted: prob, mask")
    out = Path(path)
    meta = volume.meta
    arr = np.asarray(array)
    if arr.shape != volume.shape:
        raise UnetCoreError(f"a result of shape {arr.shape} does not fit the cube "
                            f"{volume.source.name}; accepted: {volume.shape}")
    src = Path(meta.get("source", volume.source))
    if not src.is_file():
        raise UnetCoreError(f"{src.name}: the source SEG-Y is gone, so its headers cannot be "
                            "copied; accepted: writing while the input file is still there")
    data = arr.astype(np.float32, copy=False)
    tmp = _tmp_name(out)
    try:
        with _open(src) as f:
            ns = int(len(f.samples))
            if int(f.tracecount) != int(meta["n_traces"]) or ns != int(meta["n_samples"]):
                raise UnetCoreError(f"{src.name}: the source SEG-Y changed since it was read "
                                    f"({f.tracecount} traces of {ns} samples); accepted: the "
                                    "file as read")
            if meta.get("unstructured"):
                il_idx = np.zeros(f.tracecount, dtype=np.int64)
                xl_idx = np.arange(f.tracecount, dtype=np.int64)
            else:
                il = np.asarray(f.attributes(meta["inline_byte"])[:], dtype=np.int64)
                xl = np.asarray(f.attributes(meta["crossline_byte"])[:], dtype=np.int64)
                inl, crl = np.asarray(meta["inlines"]), np.asarray(meta["crosslines"])
                il_idx, xl_idx = np.searchsorted(inl, il), np.searchsorted(crl, xl)
                ok = ((il_idx < inl.size) & (xl_idx < crl.size))
                ok &= (inl[np.minimum(il_idx, inl.size - 1)] == il)
                ok &= (crl[np.minimum(xl_idx, crl.size - 1)] == xl)
                if not ok.all():
                    raise UnetCoreError(f"{src.name}: the source SEG-Y changed since it was "
                                        "read (inline/crossline numbers differ); accepted: the "
                                        "file as read")
            spec = segyio.spec()
            spec.format = 5
            spec.samples = list(f.samples)
            spec.tracecount = int(f.tracecount)
            spec.ext_headers = int(f.ext_headers)
            spec.endian = "big"
            with segyio.create(str(tmp), spec) as g:
                g.text[0] = f.text[0]
                for i in range(1, int(f.ext_headers) + 1):
                    g.text[i] = f.text[i]
                g.bin = f.bin
                g.bin.update({segyio.BinField.Format: 5})
                for i in range(int(f.tracecount)):
                    g.trace[i] = data[il_idx[i], xl_idx[i]]
            n, ext = int(f.tracecount), int(f.ext_headers)
        _copy_trace_headers(src, tmp, n, ns, ext)
        os.replace(tmp, out)
    except UnetCoreError:
        tmp.unlink(missing_ok=True)
        raise
    except (OSError, RuntimeError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnetCoreError(f"{out.name}: could not write the SEG-Y ({msg})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def write_cube(path: str | os.PathLike, data: np.ndarray, *, first_inline: int = 1,
               first_crossline: int = 1, sample_interval_us: int = 4000,
               inline_byte: int = 189, crossline_byte: int = 193, text: str = "") -> Path:
    """Write a (n_inlines, n_crosslines, n_samples) array as a new inline-sorted SEG-Y cube:
    float32 IEEE samples, inline/crossline numbers counting up from ``first_inline`` /
    ``first_crossline`` at the given header bytes (also in CDP_X/CDP_Y as a 25 m grid), sample
    interval ``sample_interval_us`` microseconds, ``text`` on the first line of the textual
    header. Temporary name, renamed when complete."""
    segyio = _segyio()
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise UnetCoreError(f"a SEG-Y cube needs a 3-D array (inline, crossline, sample); got "
                            f"shape {arr.shape}")
    n_il, n_xl, ns = arr.shape
    out = Path(path)
    tmp = _tmp_name(out)
    spec = segyio.spec()
    spec.iline, spec.xline = int(inline_byte), int(crossline_byte)
    spec.ilines = list(range(first_inline, first_inline + n_il))
    spec.xlines = list(range(first_crossline, first_crossline + n_xl))
    spec.samples = list(np.arange(ns) * sample_interval_us / 1000.0)
    spec.format = 5
    spec.sorting = segyio.TraceSortingFormat.INLINE_SORTING
    try:
        with segyio.create(str(tmp), spec) as f:
            if text:
                f.text[0] = segyio.tools.create_text_header({1: text[:76]})
            f.bin.update({segyio.BinField.Interval: int(sample_interval_us),
                          segyio.BinField.Samples: ns, segyio.BinField.Format: 5})
            t = 0
            for i, il in enumerate(spec.ilines):
                for j, xl in enumerate(spec.xlines):
                    f.header[t] = {
                        inline_byte: il, crossline_byte: xl,
                        segyio.TraceField.TRACE_SEQUENCE_LINE: t + 1,
                        segyio.TraceField.TRACE_SEQUENCE_FILE: t + 1,
                        segyio.TraceField.CDP: t + 1,
                        segyio.TraceField.CDP_X: 25 * i, segyio.TraceField.CDP_Y: 25 * j,
                        segyio.TraceField.TRACE_SAMPLE_COUNT: ns,
                        segyio.TraceField.TRACE_SAMPLE_INTERVAL: int(sample_interval_us),
                    }
                    f.trace[t] = arr[i, j]
                    t += 1
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


READERS["segy"] = read_segy
WRITERS["segy"] = write_segy
