"""Where images and data sets come from: bundled samples, uploads, recent images, server
folders and uploaded zips. Pure helpers plus small cached decoders; no widgets here.

An :class:`ImageItem` is the raw bytes of an image (and of its mask, if any) with a content
hash, so every cache downstream is keyed by content, never by object identity.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from app.settings import ASSETS, DOMAIN_SAMPLES, app_max_pixels, domain_of_sample_set
from unet_core.errors import DataSetError, MaskError, UnetCoreError
from unet_core.io import Pair, find_pairs, read_label_mask, read_mask, read_raw
from unet_core.model import MODEL_EXTENSIONS, card_path_for
from unet_core.preprocess import display_image

RECENT_LIMIT = 4
RECENT_MAX_BYTES = 32 * 2**20


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- image items


@dataclass(frozen=True)
class ImageItem:
    """One image (raw file bytes) and optionally its mask, with a stable key.

    ``origin`` is 'sample', 'upload' or 'eval' (opened from an evaluation); ``domain`` the
    model-card domain the image belongs to, when known (bundled samples know theirs).
    """

    key: str
    name: str
    data: bytes = field(repr=False)
    sha: str
    mask_data: bytes | None = field(default=None, repr=False)
    mask_name: str | None = None
    mask_sha: str | None = None
    origin: str = "sample"
    domain: str = ""

    @property
    def stem(self) -> str:
        return Path(self.name).stem


def make_item(origin: str, name: str, data: bytes, mask_name: str | None = None,
              mask_data: bytes | None = None, key: str | None = None,
              domain: str = "") -> ImageItem:
    """Build an :class:`ImageItem`, hashing its bytes."""
    sha = sha256_bytes(data)
    return ImageItem(key=key or f"{origin}:{sha[:16]}:{name}", name=name, data=data, sha=sha,
                     mask_data=mask_data, mask_name=mask_name,
                     mask_sha=sha256_bytes(mask_data) if mask_data is not None else None,
                     origin=origin, domain=domain)


@st.cache_data(max_entries=4, show_spinner=False)
def _sample_items(root: str) -> list[ImageItem]:
    items: list[ImageItem] = []
    base = Path(root)
    if not base.is_dir():
        return items
    for folder in sorted(p for p in base.iterdir() if (p / "images").is_dir()):
        try:
            pairs = find_pairs(folder, require_masks=False)
        except UnetCoreError:
            continue
        for pair in pairs:
            mask = pair.mask_path.read_bytes() if pair.mask_path else None
            items.append(make_item(
                "sample", pair.name, pair.image_path.read_bytes(),
                pair.mask_path.name if pair.mask_path else None, mask,
                key=f"sample:{folder.name}/{pair.name}",
                domain=domain_of_sample_set(folder.name)))
    return items


def sample_set_of(item: ImageItem) -> str:
    """The bundled sample set of a sample ('seismic'), '' for other items."""
    if item.origin != "sample":
        return ""
    return item.key.split(":", 1)[1].split("/")[0]


def sample_sets() -> list[str]:
    """Names of the bundled sample sets (assets/<set>/images)."""
    if not ASSETS.is_dir():
        return []
    return sorted(p.name for p in ASSETS.iterdir() if (p / "images").is_dir())


def ordered_sets(domain: str) -> list[str]:
    """Bundled sample sets with the model domain's set first."""
    sets = sample_sets()
    first = DOMAIN_SAMPLES.get(domain.lower().strip(), "")
    return sorted(sets, key=lambda s: (s != first, s))


def ordered_samples(domain: str) -> list[ImageItem]:
    """Every bundled sample, those of the model's domain first."""
    order = {s: i for i, s in enumerate(ordered_sets(domain))}
    items = _sample_items(str(ASSETS))
    return sorted(items, key=lambda it: (order.get(sample_set_of(it), 99), it.key))


def sample_label(item: ImageItem) -> str:
    """'seismic / seismic_000.png' for a sample."""
    return f"{sample_set_of(item) or item.origin} / {item.name}"


def items_from_uploads(images: Sequence[tuple[str, bytes]],
                       masks: Sequence[tuple[str, bytes]] = (), domain: str = ""
                       ) -> tuple[list[ImageItem], list[str]]:
    """Pair uploaded images with uploaded masks (pure; no decoding).

    Masks match by file name, else by stem (``a.jpg`` + ``a.png``). Returns the items, in upload
    order, and notes about masks that match no image or duplicate names.
    """
    notes: list[str] = []
    by_name: dict[str, tuple[str, bytes]] = {}
    by_stem: dict[str, tuple[str, bytes]] = {}
    for mname, mdata in masks:
        if mname in by_name:
            notes.append(f"{mname}: uploaded twice as a mask; the first one is used")
            continue
        by_name[mname] = (mname, mdata)
        by_stem.setdefault(Path(mname).stem, (mname, mdata))
    items: list[ImageItem] = []
    seen: set[str] = set()
    used: set[str] = set()
    for name, data in images:
        if name in seen:
            notes.append(f"{name}: uploaded twice; the first one is used")
            continue
        seen.add(name)
        match = by_name.get(name) or by_stem.get(Path(name).stem)
        if match is not None:
            used.add(match[0])
        items.append(make_item("upload", name, data, match[0] if match else None,
                               match[1] if match else None, domain=domain))
    for mname in by_name:
        if mname not in used:
            notes.append(f"{mname}: mask matches no uploaded image (masks are matched by file "
                         "name, or by name without extension)")
    return items, notes


@st.cache_data(max_entries=32, max_size="96MB", show_spinner=False)
def _decode_image(sha: str, name: str, max_pixels: int, _data: bytes) -> np.ndarray:
    return read_raw(_data, name=name, max_pixels=max_pixels)


@st.cache_data(max_entries=32, max_size="32MB", show_spinner=False)
def _decode_mask(sha: str, name: str, max_pixels: int, _data: bytes) -> np.ndarray:
    return read_mask(_data, name=name, max_pixels=max_pixels)


@st.cache_data(max_entries=32, max_size="32MB", show_spinner=False)
def _decode_labels(sha: str, name: str, max_pixels: int, n_classes: int, _data: bytes
                   ) -> np.ndarray:
    return read_label_mask(_data, n_classes, name=name, max_pixels=max_pixels)


def decode_image(item: ImageItem) -> np.ndarray:
    """The item's image *as decoded* (:func:`unet_core.io.read_raw`): (H, W) or (H, W, C) in
    its native dtype, what the engine takes (a ``raw`` model sees 0..255, a BGR model gets its
    channels swapped by the card); raises the engine's ImageReadError."""
    if item.origin == "volume":  # a volume's slice as the engine feeds it (app.volumes)
        return _decode_npy(item.sha, item.data)
    return _decode_image(item.sha, item.name, app_max_pixels(), item.data)


@st.cache_data(max_entries=32, max_size="96MB", show_spinner=False)
def _decode_npy(sha: str, _data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(_data), allow_pickle=False)


def display(image: np.ndarray, max_side: int | None = None) -> tuple[np.ndarray, int]:
    """A decoded image for showing: float32 (h, w) gray or (h, w, 3) RGB in [0, 1]
    (:func:`unet_core.preprocess.display_image`), every k-th pixel so it fits ``max_side``
    (None: every pixel). Returns (image, k)."""
    k = 1
    if max_side is not None:
        side = max(int(image.shape[0]), int(image.shape[1]), 1)
        k = max(1, -(-side // int(max_side)))
    return display_image(image[::k, ::k] if k > 1 else image), k


def _check_mask_size(mask: np.ndarray, name: str, item: ImageItem, shape: tuple[int, ...]
                     ) -> np.ndarray:
    if mask.shape != tuple(shape[:2]):
        mh, mw = mask.shape
        ih, iw = shape[:2]
        raise MaskError(f"{name}: mask is {mh}x{mw} (HxW) but image {item.name} is {ih}x{iw}; "
                        "masks must match their image's size")
    return mask


def decode_mask(item: ImageItem, shape: tuple[int, ...]) -> np.ndarray | None:
    """The item's mask as bool (H, W), or None; MaskError if unreadable or of another size
    than ``shape`` (the image's; its channels are ignored)."""
    if item.mask_data is None or item.mask_sha is None:
        return None
    name = item.mask_name or item.name
    mask = _decode_mask(item.mask_sha, name, app_max_pixels(), item.mask_data)
    return _check_mask_size(mask, name, item, shape)


@st.cache_data(max_entries=64, show_spinner=False)
def _item_mask_holds_labels(mask_sha: str, n_classes: int, _data: bytes) -> bool:
    return mask_holds_labels(_data, n_classes)


def item_mask_holds_labels(item: ImageItem, n_classes: int) -> bool:
    """:func:`mask_holds_labels` of an item's mask, cached by the mask's content hash (the
    Segment page asks on every rerun)."""
    if item.mask_data is None or item.mask_sha is None:
        return False
    return _item_mask_holds_labels(item.mask_sha, int(n_classes), item.mask_data)


def mask_holds_labels(data: bytes, n_classes: int) -> bool:
    """Whether a mask file of a K-class model (K >= 2) is a *label* mask (pixel values or
    palette indices = class indices) rather than a binary mask of one class.

    A palette PNG is a label mask; a gray mask whose values are whole numbers below K is one
    (0/1 reads the same either way for class 1); anything else (0/255, colour, soft values) is
    a binary mask. One-map models (K = 1) always take binary masks."""
    if n_classes < 2:
        return False
    with contextlib.suppress(Exception), Image.open(io.BytesIO(data)) as im:
        if im.mode in ("P", "PA"):
            return True
        if im.mode not in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F"):
            return False
        arr = np.asarray(im, dtype=np.float64)
        return bool(arr.size) and bool(np.all(arr == np.round(arr))) \
            and float(arr.min()) >= 0 and float(arr.max()) < n_classes
    return False


def decode_labels(item: ImageItem, shape: tuple[int, ...], n_classes: int) -> np.ndarray | None:
    """The item's mask as a label mask (uint8 (H, W) class indices, see
    :func:`unet_core.io.read_label_mask`), or None; MaskError if unreadable, of another size
    or holding classes the model does not have."""
    if item.mask_data is None or item.mask_sha is None:
        return None
    name = item.mask_name or item.name
    labels = _decode_labels(item.mask_sha, name, app_max_pixels(), int(n_classes),
                            item.mask_data)
    return _check_mask_size(labels, name, item, shape)


def remember(recent: OrderedDict[str, ImageItem], item: ImageItem, limit: int = RECENT_LIMIT,
             max_bytes: int = RECENT_MAX_BYTES) -> None:
    """Put a non-sample ``item`` first in ``recent`` (bounded to ``limit`` items)."""
    if item.origin in ("sample", "volume") \
            or len(item.data) + len(item.mask_data or b"") > max_bytes:
        return
    recent[item.key] = item
    recent.move_to_end(item.key)
    while len(recent) > limit:
        recent.popitem(last=False)


# --------------------------------------------------------------------------- uploaded models


def safe_filename(name: str, default: str = "upload") -> str:
    """A plain file name: no folders, only letters, digits, '.', '_', '-' (max 100 chars)."""
    base = Path(str(name).replace("\\", "/")).name
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")
    if not clean:
        return default
    stem, dot, ext = clean.rpartition(".")
    if dot and len(clean) > 100:
        clean = stem[: 99 - len(ext)] + "." + ext
    return clean[:100]


@dataclass(frozen=True)
class ModelUpload:
    """What the model uploader received, written to disk: ``path`` is the model file (or the
    architecture JSON, whose ``weights`` come with it), ``name`` the uploaded file's name."""

    path: Path
    name: str
    weights: Path | None = None
    has_card: bool = False


UPLOAD_ACCEPTED = ("accepted: one .keras, .h5 or .onnx model, or an architecture .json "
                   "(model.to_json()) with its weights .h5; plus, optionally, a model card .json")


def _json_kind(name: str, data: bytes) -> str:
    """'architecture' (``model.to_json()`` text) or 'card' for an uploaded .json file."""
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, RecursionError, json.JSONDecodeError) as exc:
        raise UnetCoreError(f"{name}: not valid JSON ({type(exc).__name__}); "
                            f"{UPLOAD_ACCEPTED}") from None
    if not isinstance(parsed, dict):
        raise UnetCoreError(f"{name}: a JSON {type(parsed).__name__}, not an object; "
                            f"{UPLOAD_ACCEPTED}")
    return "architecture" if "class_name" in parsed and "config" in parsed else "card"


def model_upload_dir(files: Sequence[tuple[str, bytes]], folder: Path) -> Path:
    """The folder :func:`save_model_upload` writes these files to: ``folder/<sha of them>``
    (the same upload is written once)."""
    return folder / sha256_bytes(b"".join(d for _, d in sorted(files)))[:16]


def save_model_upload(files: Sequence[tuple[str, bytes]], folder: Path) -> ModelUpload:
    """Sort the files of one model upload and write them under ``folder/<sha>/``.

    Accepted: one ``.keras`` / ``.h5`` / ``.onnx`` model, or an architecture ``.json`` (the
    text of ``model.to_json()``) with its weights ``.h5``; a ``.json`` that is not an
    architecture is the model card, written where :func:`unet_core.model.load_model` looks for it
    (:func:`unet_core.model.card_path_for`: ``NAME.json`` next to a model, ``NAME.card.json``
    next to an architecture ``NAME.json``). Raises UnetCoreError (one line) otherwise.
    """
    models: list[tuple[str, bytes]] = []
    archs: list[tuple[str, bytes]] = []
    cards: list[tuple[str, bytes]] = []
    for name, data in files:
        ext = Path(name).suffix.lower()
        if ext in MODEL_EXTENSIONS:
            models.append((name, data))
        elif ext == ".json":
            (archs if _json_kind(name, data) == "architecture" else cards).append((name, data))
        else:
            raise UnetCoreError(f"{name}: not a model file; {UPLOAD_ACCEPTED}")
    listed = ", ".join(name for name, _ in files) or "nothing"
    if len(cards) > 1 or len(archs) > 1 or (archs and len(models) != 1) or \
            (not archs and len(models) != 1):
        what = ("an architecture .json needs exactly one weights .h5" if archs and not models
                else f"got {listed}")
        raise UnetCoreError(f"upload one model: {what}; {UPLOAD_ACCEPTED}")
    if archs and Path(models[0][0]).suffix.lower() not in (".h5", ".hdf5"):
        raise UnetCoreError(f"{models[0][0]}: the weights of an architecture .json must be an "
                            f".h5 file (from save_weights); {UPLOAD_ACCEPTED}")
    card = cards[0][1] if cards else None
    target = model_upload_dir(files, folder)
    target.mkdir(parents=True, exist_ok=True)
    mname, mdata = models[0]
    ext = Path(mname).suffix.lower()
    mfile = target / safe_filename(mname, f"model{ext}")
    if mfile.suffix.lower() != ext:  # e.g. 'é.onnx' -> 'onnx': keep what the file is
        mfile = mfile.with_name(f"{mfile.name}{ext}")
    if not mfile.exists():
        mfile.write_bytes(mdata)
    if not archs:
        if card is not None and not card_path_for(mfile).exists():
            card_path_for(mfile).write_bytes(card)
        return ModelUpload(mfile, mname, None, card is not None)
    aname, adata = archs[0]
    afile = target / safe_filename(aname, "model.json")
    if afile.suffix.lower() != ".json":
        afile = afile.with_suffix(".json")
    if not afile.exists():
        afile.write_bytes(adata)
    if card is not None and not card_path_for(afile).exists():
        card_path_for(afile).write_bytes(card)
    return ModelUpload(afile, aname, mfile, card is not None)


# --------------------------------------------------------------------------- data sets


#: Largest total a zip may unpack to (bytes), whatever the session's budget.
ZIP_MAX_UNPACKED = 1_000_000_000


class ExtractedZip:
    """A zip extracted (with the checks of :func:`unet_core.io.open_dataset`: no absolute or
    ``..`` paths, no symlinks, member count, sizes and compression ratio) into the session's
    upload folder (:mod:`app.uploads`), kept until :meth:`close`.

    The folder lives as long as the results that point into it (the worst-case gallery reads
    its images); :meth:`close` removes it, and so does the sweep of ended sessions (never
    ``__del__``). It may unpack to no more than the session's remaining disk budget. Errors
    name the uploaded file, never the server's folder.
    """

    def __init__(self, data: bytes, name: str, folder: Path | None = None) -> None:
        from app import uploads
        from unet_core.io import _extract_zip

        self.name = name
        self.sha = sha256_bytes(data)
        base = folder if folder is not None else uploads.reserve(len(data), name)
        left = uploads.remaining_bytes() if folder is None else ZIP_MAX_UNPACKED
        target = base / f"zip-{self.sha[:16]}-{id(self):x}"
        target.mkdir(parents=True, exist_ok=False)
        self._cm: Any = target
        self.path: Path = target
        try:
            limit = max(0, min(ZIP_MAX_UNPACKED, left))
            _extract_zip(io.BytesIO(data), target, name, limit, 100_000, 200.0)
        except UnetCoreError as exc:
            uploads.remove(target)
            self._cm = None
            text = str(exc).replace(str(target), name)
            if limit < ZIP_MAX_UNPACKED and "unpack" in text.lower():
                text += (f" (this session may write {limit / 1e6:,.0f} MB more: "
                         "UNET_SESSION_DISK_MB)")
            raise DataSetError(text) from None
        except BaseException:
            uploads.remove(target)
            self._cm = None
            raise

    def pairs(self) -> list[Pair]:
        """The zip's image/mask pairs; a DataSetError names the zip, not the temp folder."""
        try:
            return find_pairs(self.path, require_masks=True)
        except UnetCoreError as exc:
            text = str(exc).replace(str(self.path), self.name)
            raise DataSetError(text) from None

    def close(self) -> None:
        """Remove the extracted files (idempotent)."""
        from app import uploads

        if self._cm is not None:
            target, self._cm = self._cm, None
            uploads.remove(target)


def resolve_data_folder(text: str, root: Path) -> Path:
    """Resolve a user-typed folder and require it to lie inside ``root``.

    Relative paths are taken relative to ``root``. Symlinks are resolved before the check.
    """
    raw = str(text).strip()
    if not raw:
        raise DataSetError(f"no folder given; accepted: a folder inside {root}")
    if "\x00" in raw:
        raise DataSetError("folder path contains a NUL character")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = root / path
    resolved = path.resolve()
    root_resolved = root.resolve()
    if not resolved.is_relative_to(root_resolved):
        raise DataSetError(
            f"{raw}: outside the allowed data root; accepted: folders inside {root_resolved} "
            "(set UNET_DATA_ROOT to change it)")
    if not resolved.is_dir():
        raise DataSetError(f"{raw}: no such folder inside {root_resolved}")
    return resolved


def data_folder_candidates(root: Path, limit: int = 12) -> list[str]:
    """Folders under ``root`` (depth <= 2) that hold an images/ folder, relative to it."""
    found: list[str] = []
    if not root.is_dir():
        return found
    with contextlib.suppress(OSError):
        for first in sorted(p for p in root.iterdir() if p.is_dir()):
            if (first / "images").is_dir():
                found.append(first.name)
            else:
                found.extend(f"{first.name}/{second.name}"
                             for second in sorted(q for q in first.iterdir() if q.is_dir())
                             if (second / "images").is_dir())
            if len(found) >= limit:
                break
    return found[:limit]


def pairs_fingerprint(pairs: Sequence[Pair], extra: str = "", with_mtime: bool = True) -> str:
    """sha256 over (name, size[, mtime]) of every image and mask of a data set.

    ``extra`` is mixed in (e.g. a zip's own sha256, in which case mtimes, which change with
    every extraction, are left out with ``with_mtime=False``).
    """
    h = hashlib.sha256(extra.encode())
    for p in pairs:
        for path in (p.image_path, p.mask_path):
            if path is None:
                h.update(b"-")
                continue
            st_ = path.stat()
            mtime = st_.st_mtime_ns if with_mtime else 0
            h.update(f"{p.name}\0{path.name}\0{st_.st_size}\0{mtime}\n".encode())
    return h.hexdigest()


def item_from_pair(pair: Pair, origin: str = "eval", domain: str = "") -> ImageItem:
    """An :class:`ImageItem` with the bytes of a data set pair (image and mask)."""
    mask = pair.mask_path.read_bytes() if pair.mask_path is not None else None
    return make_item(origin, pair.name, pair.image_path.read_bytes(),
                     pair.mask_path.name if pair.mask_path else None, mask, domain=domain)
