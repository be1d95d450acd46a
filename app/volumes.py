"""Volumes on the dashboard: pick a SEG-Y / NIfTI / DICOM volume, browse it slice by slice, and
segment it whole.

A slice becomes an ordinary :class:`~app.sources.ImageItem` (origin ``volume``): its bytes are
the ``.npy`` of the slice *as the engine feeds it* (:func:`unet_core.volume_predict.segment_volume`
scales a SEG-Y cube with its one amplitude clip for a ``percentile`` model, windows DICOM), and
its mask the matching slice of the label volume as a PNG, so every cache of the app keys it by
content and the Segment / Activations pages work on it unchanged. A slice scaled by the cube's
clip is segmented with the card's normalisation set to ``unit`` (:func:`bundle_for`), exactly
as ``segment_volume`` does, so the numbers shown are the engine's for that slice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from app import engine, sources, uploads
from app.errors import display_text, plain, run_safely
from app.settings import ASSETS, app_max_pixels, data_root, max_upload_mb

VOLUME_SOURCE = "Volume"
UPLOAD_CHOICE = "Upload a volume…"
VOLUME_TYPES = ["sgy", "segy", "nii", "gz", "dcm"]
DATA_ROOT_LIMIT = 200  # volumes listed from the data root
PREVIEW_PX = 160
_DOMAINS = {"segy": "seismic"}


@dataclass(frozen=True)
class VolumeRef:
    """A volume on disk (file, or a folder of DICOM files) and its label volume, if any."""

    path: str
    sha: str
    label_path: str | None = None
    label_sha: str | None = None

    @property
    def name(self) -> str:
        return Path(self.path).name


# --------------------------------------------------------------------------- finding volumes


def _is_label(p: Path) -> bool:
    from unet_core.volume import volume_stem

    return volume_stem(p).lower().endswith(("_mask", "_labels", "_label"))


def label_path_for(path: Path) -> Path | None:
    """``NAME_mask.EXT`` (or ``_labels``) next to ``NAME.EXT``, if it exists."""
    from unet_core.volume import volume_stem

    stem = volume_stem(path)
    ext = path.name[len(stem):]
    for tag in ("_mask", "_labels", "_label"):
        cand = path.with_name(f"{stem}{tag}{ext}")
        if cand.exists() and cand != path:
            return cand
    return None


def path_sha(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents' hashes)."""
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in path.iterdir() if q.is_file()):
            h.update(f"{f.name}\0{engine.file_sha256(f)}\n".encode())
        return h.hexdigest()
    return engine.file_sha256(path)


def ref_for(path: Path) -> VolumeRef:
    """A :class:`VolumeRef` of ``path`` with the label volume found next to it."""
    label = label_path_for(path)
    return VolumeRef(str(path), path_sha(path), str(label) if label else None,
                     path_sha(label) if label else None)


@st.cache_data(ttl=60, show_spinner=False)
def _listed(root: str, assets: str) -> list[str]:
    from unet_core.volume import is_volume_path

    found: list[str] = []
    for base in dict.fromkeys([str(Path(assets) / "volumes"), root]):
        b = Path(base)
        if not b.is_dir():
            continue
        for p in sorted(b.rglob("*")):
            if len(found) >= DATA_ROOT_LIMIT:
                break
            try:
                single = p.is_file() and p.suffix.lower() != ".dcm" and not _is_label(p)
                if (single or p.is_dir()) and is_volume_path(p):
                    found.append(str(p))
            except OSError:
                continue
    return list(dict.fromkeys(found))


def listed_volumes() -> list[Path]:
    """The bundled volumes (assets/volumes) first, then those under the data root (label
    volumes ``*_mask`` left out: they go with their volume)."""
    return [Path(p) for p in _listed(str(data_root()), str(ASSETS))]


def _entry_label(p: Path) -> str:
    for base, tag in ((ASSETS, "bundled"), (data_root(), "data root")):
        try:
            return f"{tag} / {p.relative_to(base)}"
        except ValueError:
            continue
    return p.name


# --------------------------------------------------------------------------- reading


@st.cache_resource(max_entries=2, show_spinner=False)
def _read(path: str, sha: str) -> Any:
    from unet_core.volume import read_volume

    return read_volume(path)


def load(ref: VolumeRef) -> Any:
    """The :class:`~unet_core.volume.Volume` of ``ref`` (cached by content, 2 volumes)."""
    return _read(ref.path, ref.sha)


def load_labels(ref: VolumeRef) -> Any:
    """The label volume of ``ref``, or None."""
    if ref.label_path is None:
        return None
    return _read(ref.label_path, ref.label_sha or "")


def scaler(card: Any, volume: Any) -> tuple[bool, Any]:
    """(whether the card's normalisation becomes ``unit``, the per-slice scaler or None): the
    rule of :func:`unet_core.volume_predict.segment_volume`, taken from the engine."""
    from unet_core.volume_predict import slice_scaling

    normalisation, scale = slice_scaling(card, volume)
    return normalisation is not None, scale


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr.astype(np.uint8))).save(buf, format="PNG")
    return buf.getvalue()


@st.cache_data(max_entries=8, show_spinner=False)
def _slice_payload(sha: str, label_sha: str | None, axis: str, index: int, normalisation: str,
                   labels_as_classes: bool, _volume: Any, _labels: Any, _card: Any
                   ) -> tuple[bool, bytes, bytes | None]:
    """(scaled to unit?, the slice as fed (.npy bytes), the label slice (.png bytes) or None),
    cached by content hash, axis, index and the card's scaling (not re-encoded per rerun)."""
    unit, scale = scaler(_card, _volume)
    image = np.asarray(_volume.slice(axis, index))
    if scale is not None:
        image = scale(image)
    mask_data = None
    if _labels is not None:
        lab = np.asarray(_labels.slice(axis, index))
        mask_data = _png(np.clip(np.rint(lab), 0, 255) if labels_as_classes else (lab > 0) * 255)
    return unit, _npy(image), mask_data


def slice_item(ref: VolumeRef, volume: Any, labels: Any, card: Any, axis: str, index: int
               ) -> sources.ImageItem:
    """The slice ``index`` along ``axis`` as an image item (see the module docstring)."""
    from unet_core.volume import volume_stem

    h, w = volume.slice_shape(axis)
    if h * w > app_max_pixels():
        from unet_core.errors import UnetCoreError

        raise UnetCoreError(f"{ref.name}: a {axis} slice is {h}x{w} pixels, over the "
                            f"dashboard's limit of {app_max_pixels():,} (UNET_MAX_PIXELS)")
    unit, data, mask_data = _slice_payload(
        ref.sha, ref.label_sha if labels is not None else None, axis, int(index),
        card.normalisation, card.n_classes >= 2, volume, labels, card)
    stem = sources.safe_filename(volume_stem(ref.path), "volume")
    name = f"{stem}_{axis}_{int(index):04d}.npy"
    mask_name = None if mask_data is None else f"{stem}_mask_{axis}_{int(index):04d}.png"
    return sources.make_item(
        "volume", name, data, mask_name, mask_data,
        key=f"volume:{ref.sha[:16]}:{axis}:{int(index)}:{'unit' if unit else 'asis'}",
        domain=_DOMAINS.get(volume.format, ""))


def bundle_for(item: sources.ImageItem, bundle: engine.ModelBundle) -> engine.ModelBundle:
    """The bundle a slice item is segmented with: the card's normalisation set to ``unit``
    when the slice was scaled by its cube's clip (as ``segment_volume`` does), else
    ``bundle``."""
    if item.origin != "volume" or not item.key.endswith(":unit") \
            or bundle.card.normalisation == "unit":
        return bundle
    data = bundle.card.to_dict()
    data["normalisation"] = "unit"
    unit = engine.with_card(bundle, data)
    unit.edited = bundle.edited
    return unit


# --------------------------------------------------------------------------- widgets


def _upload_ui() -> VolumeRef | None:
    ups = st.file_uploader(
        "Upload a volume", type=VOLUME_TYPES, accept_multiple_files=True, key="vol_upload",
        help="One SEG-Y (.sgy/.segy), NIfTI (.nii/.nii.gz) or DICOM file, or the .dcm files of "
        f"one DICOM series together; up to {max_upload_mb()} MB each.")
    lab = st.file_uploader("Label volume (optional, same geometry)", type=VOLUME_TYPES,
                           accept_multiple_files=True, key="vol_upload_labels")
    files = [(f.name, f.getvalue()) for f in (ups or [])]
    if not files:
        st.info("Upload a volume: .sgy/.segy, .nii/.nii.gz, a .dcm file or the .dcm files of "
                "one series.")
        return None
    main = _save(files)
    if main is None:
        return None
    label_files = [(f.name, f.getvalue()) for f in (lab or [])]
    label = _save(label_files) if label_files else None
    return VolumeRef(str(main), path_sha(main), str(label) if label else None,
                     path_sha(label) if label else None)


def _save(files: list[tuple[str, bytes]]) -> Path | None:
    """Write uploaded files under this session's folder (budgeted); the path to read: the file,
    or the folder of a DICOM series."""
    with run_safely(what="saving the upload"):
        from unet_core.errors import UnetCoreError

        names = [sources.safe_filename(n, "volume") for n, _ in files]
        dcm = all(n.lower().endswith(".dcm") for n in names)
        if len(files) > 1 and not dcm:
            raise UnetCoreError("upload one volume file, or the .dcm files of one DICOM "
                                f"series; got {', '.join(names[:6])}")
        digest = sources.sha256_bytes(b"".join(sources.sha256_bytes(d).encode()
                                               for _, d in sorted(files)))[:16]
        folder = uploads.session_dir() / "volumes" / digest
        if not folder.is_dir():
            uploads.reserve(sum(len(d) for _, d in files), names[0])
            tmp = folder.with_name(folder.name + ".tmp")
            tmp.mkdir(parents=True, exist_ok=True)
            for n, (_, d) in zip(names, files, strict=True):
                (tmp / n).write_bytes(d)
            tmp.replace(folder)
        return folder if len(files) > 1 else folder / names[0]
    return None


@st.cache_data(max_entries=16, show_spinner=False)
def _orthogonal_cached(sha: str, axis: str, index: int, _volume: Any
                       ) -> list[tuple[np.ndarray, str]]:
    """:func:`_orthogonal` cached by the volume's content hash (not redrawn on every rerun)."""
    return _orthogonal(_volume, axis, index)


def _orthogonal(volume: Any, axis: str, index: int) -> list[tuple[np.ndarray, str]]:
    """The two other cuts (through their middle) with a red line where the slice lies."""
    from app import viz
    from unet_core.preprocess import display_image
    from unet_core.volume import Volume

    a = volume.axis_index(axis)
    marker = np.zeros(volume.shape[a], bool)
    marker[index] = True
    shape = [1, 1, 1]
    shape[a] = volume.shape[a]
    where = Volume(np.broadcast_to(marker.reshape(shape), volume.shape), volume.format,
                   volume.axes, volume.source)
    out = []
    for other in volume.axes:
        if other == axis:
            continue
        mid = volume.n_slices(other) // 2
        cut = np.asarray(volume.slice(other, mid))
        k = max(1, -(-max(cut.shape[:2]) // 256))
        gray = display_image(np.asarray(cut, np.float32)[::k, ::k])
        rgb = viz.to_uint8(gray if gray.ndim == 3 else np.repeat(gray[..., None], 3, -1))
        line = np.asarray(where.slice(other, mid))[::k, ::k]
        rgb = rgb.copy()
        rgb[line] = (230, 40, 40)
        out.append((rgb, f"{other} {mid}"))
    return out


def volume_picker_ui(card: Any) -> sources.ImageItem | None:
    """Pick a volume, an axis and a slice; returns the slice as an image item (None if none).
    Remembers the volume in session key ``volume_ref`` (for :func:`whole_volume_ui`)."""
    ss = st.session_state
    entries = listed_volumes()
    by_key = {str(p): _entry_label(p) for p in entries}
    options = list(by_key) + [UPLOAD_CHOICE]
    if ss.get("vol_pick") not in options:
        ss["vol_pick"] = options[0]
    pick = st.selectbox("Volume", options, key="vol_pick",
                        format_func=lambda k: display_text(by_key.get(k, k), 200))
    ref: VolumeRef | None = None
    if pick == UPLOAD_CHOICE:
        ref = _upload_ui()
    else:
        with run_safely(what="finding the volume"):
            ref = ref_for(Path(pick))
    ss.pop("volume_ref", None)
    if ref is None:
        return None
    volume = labels = None
    with run_safely(what="reading the volume"), st.spinner("Reading the volume…"):
        volume = load(ref)
        labels = load_labels(ref)
    if volume is None:
        return None
    if ss.get("vol_axis") not in volume.axes:
        ss["vol_axis"] = volume.axes[0]
    c1, c2 = st.columns([2, 3])
    axis = c1.radio("Axis", list(volume.axes), key="vol_axis", horizontal=True,
                    help="The direction the volume is cut in; each slice is one image.")
    n = volume.n_slices(axis)
    skey = f"vol_slice_{axis}"
    if not isinstance(ss.get(skey), int) or not 0 <= ss[skey] < n:
        ss[skey] = n // 2
    index = int(c1.slider("Slice", 0, max(n - 1, 1) if n > 1 else 1, key=skey,
                          disabled=n < 2, help=f"{n} slices along {axis}"))
    index = min(index, n - 1)
    facts = [f"{ref.name}: {volume.format.upper()} "
             f"{'x'.join(str(s) for s in volume.shape)} ({', '.join(volume.axes)})"]
    facts += [str(v) for v in volume.notes.values()]
    if labels is not None:
        facts.append(f"labels: {Path(ref.label_path or '').name}")
    with run_safely(what="describing the scaling"):
        from unet_core.volume_predict import scaling_note

        facts.append(scaling_note(types.SimpleNamespace(card=card), volume))  # type: ignore
    c1.caption(plain(" · ".join(facts), 1000))
    with c2:
        cuts = _orthogonal_cached(ref.sha, axis, index, volume)
        with st.container(horizontal=True):
            for rgb, _cap in cuts:
                h, w = rgb.shape[:2]  # fit a PREVIEW_PX box (a tall section stays small)
                st.image(rgb, width=max(24, round(PREVIEW_PX * min(1.0, w / max(h, 1)))))
        st.caption(f"Middle cuts {cuts[0][1]} (left) and {cuts[1][1]} (right); red: where "
                   f"{axis} {index} lies.")
    item = None
    with run_safely(what="cutting the slice"):
        if labels is not None and labels.shape != volume.shape:
            st.warning(plain(f"{Path(ref.label_path or '').name}: label volume of shape "
                             f"{labels.shape} does not match {volume.shape}; not scored"))
            labels = None
        item = slice_item(ref, volume, labels, card, axis, index)
    if item is not None:
        ss["volume_ref"] = ref
    return item


def whole_volume_ui(bundle: engine.ModelBundle, *, padding: str, tta: bool, backend: str,
                    threshold: float, min_area: int, class_index: int) -> None:
    """'Segment the whole volume': every slice along the chosen axis through
    :func:`unet_core.volume_predict.segment_volume` with a progress bar, then the
    probabilities and the mask for download in the input's format (written under this
    session's upload folder, within its disk budget; served from disk)."""
    from unet_core.metrics import dice, iou
    from unet_core.volume import write_volume
    from unet_core.volume_predict import mask_volume, segment_volume

    ss = st.session_state
    ref: VolumeRef | None = ss.get("volume_ref")
    if ref is None:
        return
    axis = str(ss.get("vol_axis"))
    st.subheader("Whole volume")
    run_key = (ref.sha, bundle.key, axis, padding, bool(tta), backend, round(threshold, 4),
               int(min_area), int(class_index))
    done = ss.get("vol_outputs")
    if done is not None and done["key"] != run_key:
        done = None
    if st.button("Segment the whole volume", key="vol_run", type="primary",
                 help=f"Every slice along {axis}, at threshold {threshold:.2f} (released last) "
                 "with the minimum-area rule per slice; outputs in the input's own format."):
        with run_safely(what="segmenting the volume"):
            volume = load(ref)
            # the outputs (float32 + uint8 per voxel) must fit this session's disk budget:
            # refused before any slice is run
            nvox = int(np.prod(volume.shape))
            folder = uploads.reserve(5 * nvox, ref.name) / "volume_outputs"
            bar = st.progress(0.0, text="Segmenting…")
            # a click reruns the page, which stops the run at its next batch (nothing written)
            stop = st.empty()
            stop.button("Stop", key="vol_stop", help="Stops after the current batch of "
                        "slices; nothing is written.")

            def progress(i: int, n: int) -> None:
                bar.progress(i / max(n, 1), text=f"Segmenting: {i} of {n} {axis} slices")

            seg = engine.get_segmenter(bundle, bool(tta), backend)
            probs = segment_volume(seg, volume, axis, progress=progress,
                                   class_index=class_index, padding_mode=padding)
            mask = mask_volume(volume, probs, axis, threshold, min_area)
            uploads.remove(folder)
            folder.mkdir(parents=True, exist_ok=True)
            from unet_core.volume import volume_stem

            stem = sources.safe_filename(volume_stem(ref.path), "volume")
            paths = [write_volume(volume, probs, folder, stem, "prob"),
                     write_volume(volume, mask, folder, stem, "mask")]
            scores = None
            labels = load_labels(ref)
            if labels is not None and labels.shape == volume.shape:
                truth = (np.asarray(labels.data) > 0 if bundle.card.n_classes < 2
                         else np.asarray(labels.data) == class_index)
                scores = (iou(mask > 0, truth), dice(mask > 0, truth))
            done = {"key": run_key, "paths": [str(p) for p in paths], "scores": scores,
                    "fg": float((mask > 0).mean())}
            ss["vol_outputs"] = done
            stop.empty()
            bar.progress(1.0, text=f"Done: {volume.n_slices(axis)} {axis} slices")
            del probs, mask
    if done is None:
        st.caption("Segments every slice along the axis chosen above and offers the "
                   "probabilities and the mask in the volume's own format.")
        return
    line = f"Foreground: {done['fg']:.1%} of the voxels"
    if done["scores"] is not None:
        line += (f" · against the label volume (3-D): IoU {done['scores'][0]:.3f}, "
                 f"Dice {done['scores'][1]:.3f}")
    st.caption(line)
    row = st.container(horizontal=True)
    for i, p in enumerate(done["paths"]):
        path = Path(p)
        if not path.exists():
            continue
        row.download_button(f"Download {path.name}", _reader(path), file_name=path.name,
                            mime="application/octet-stream", key=f"vol_dl_{i}",
                            on_click="ignore")


def _reader(path: Path) -> Any:
    def build() -> bytes:
        return path.read_bytes()
    return build


def slice_context(item: Any, ctx: Any) -> Any | None:
    """The page context for a volume slice ``item``: its bundle swapped for the card's ``unit``
    twin when the slice was scaled by its cube's clip (see :func:`bundle_for`); ``ctx``
    unchanged for any other image; None (the error already shown) when that fails."""
    if getattr(item, "origin", None) != "volume":
        return ctx
    with run_safely(what="preparing the slice"):
        return dataclasses.replace(ctx, bundle=bundle_for(item, ctx.bundle))
    return None
