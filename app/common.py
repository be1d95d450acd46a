"""Shared pieces of the U-Net Explorer pages: model picker, caches, errors, pickers, state.

Caching (all keyed by content hashes, never by object identity):

* :func:`load_model_cached` (``st.cache_resource``): one LoadedModel per (file path, sha256 of
  the model file + its card). :func:`get_segmenter` (``st.cache_resource``): one Segmenter per
  (model key, TTA, backend: see :func:`sidebar_backend_picker`).
* :func:`probability_map` (``st.cache_data``, 64 entries / 512 MB): the network's output per
  (model key, image sha256, padding mode, TTA). Moving the threshold only re-thresholds this
  array; the network never runs again for it.
* :func:`get_probe` (``st.cache_resource``): one ActivationProbe per model;
  :func:`activation_maps` (``st.cache_resource``, 2 entries): ONE forward pass per (model key,
  image sha256, padding mode) holding every layer's maps, so switching layers or pages costs no
  pass. (``cache_resource`` rather than ``cache_data`` on purpose: the maps of all layers can be
  tens to hundreds of MB, and ``cache_data`` would unpickle a full copy on every rerun.)
* Evaluations: a bounded in-process LRU (:func:`evaluation_store`) keyed by (model key, data
  set fingerprint, padding, TTA).

Session state keys carried across pages: ``model_key``, ``image_key``, ``threshold`` (plus
``padding`` and ``tta``). Page widgets have their own keys and are re-seeded from these.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from unet_core.backends import BACKENDS, default_backend
from unet_core.errors import DataSetError, MaskError, UnetCoreError
from unet_core.io import IMAGE_EXTENSIONS, Pair, find_pairs, get_max_pixels, read_image, read_mask
from unet_core.model import MODEL_EXTENSIONS, LoadedModel, ModelCard, card_path_for, load_model
from unet_core.padding import PAD_MODES

LOG = logging.getLogger("unet_explorer")
if not LOG.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    LOG.addHandler(_handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
UPLOAD_OPTION = "Upload a model…"
IMAGE_TYPES: list[str] = [ext.lstrip(".") for ext in IMAGE_EXTENSIONS]
MODEL_TYPES: list[str] = [ext.lstrip(".") for ext in MODEL_EXTENSIONS]
#: Default pixel limit of the dashboard (4096 x 4096); $UNET_MAX_PIXELS overrides it. Images
#: whose padded size exceeds the engine's MAX_NETWORK_PIXELS (1024 x 1024) are predicted in
#: overlapping tiles, so a forward pass stays bounded whatever the image size.
APP_MAX_PIXELS = 4096 * 4096
#: Which bundled sample set goes first for a model card's domain.
DOMAIN_SAMPLES: dict[str, str] = {"seismic": "seismic", "microscopy": "nuclei",
                                  "electron microscopy": "membranes"}
#: Default cap on the activation maps of one image (MiB); $UNET_ACTIVATION_MAX_MB overrides it.
ACTIVATION_MAX_MB = 1024
PER_PAGE = 16
BACKEND_LABELS: dict[str, str] = {"auto": "Auto (fastest available)",
                                  "onnxruntime": "ONNX Runtime", "tensorflow": "TensorFlow"}

# Page widgets re-seeded from the card when another model is picked.
_MODEL_BOUND_WIDGETS = ("seg_threshold", "eval_threshold", "seg_min_area", "eval_min_area",
                        "seg_padding", "eval_padding", "act_padding", "seg_tta", "eval_tta",
                        "seg_invert", "eval_invert")


# --------------------------------------------------------------------------- settings


def models_dir() -> Path:
    """Folder of the bundled models: ``$UNET_MODELS_DIR`` or ``<repo>/models``."""
    value = os.environ.get("UNET_MODELS_DIR", "").strip()
    return Path(value).expanduser() if value else ROOT / "models"


def default_model() -> str:
    """File stem of the model selected first: ``$UNET_DEFAULT_MODEL``, default ``salt``."""
    return os.environ.get("UNET_DEFAULT_MODEL", "").strip() or "salt"


def data_root() -> Path:
    """Folder that server-side data set paths must lie in.

    ``$UNET_DATA_ROOT``, else ``<repo>/../shared/data`` if it exists, else ``<repo>/assets``.
    """
    value = os.environ.get("UNET_DATA_ROOT", "").strip()
    if value:
        return Path(value).expanduser().resolve()
    shared = ROOT.parent / "shared" / "data"
    return shared.resolve() if shared.is_dir() else ASSETS.resolve()


def app_max_pixels() -> int:
    """Pixel limit for images read by the dashboard (``$UNET_MAX_PIXELS`` or 4096 x 4096)."""
    if os.environ.get("UNET_MAX_PIXELS", "").strip():
        return get_max_pixels()
    return APP_MAX_PIXELS


def activation_max_bytes() -> int:
    """Cap on one image's activation maps (``$UNET_ACTIVATION_MAX_MB`` MiB, default 1024)."""
    try:
        mb = int(os.environ.get("UNET_ACTIVATION_MAX_MB", "") or ACTIVATION_MAX_MB)
    except ValueError:
        mb = ACTIVATION_MAX_MB
    return max(1, mb) * 2**20


def max_upload_mb() -> int:
    """Streamlit's ``server.maxUploadSize`` (MB)."""
    try:
        return int(st.get_option("server.maxUploadSize"))
    except Exception:  # option missing in some test harnesses
        return 200


# --------------------------------------------------------------------------- errors


def one_line(text: str, limit: int = 400) -> str:
    """Collapse whitespace to one line and cap its length."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def error_message(exc: BaseException) -> str:
    """What the page shows for an exception: the engine's own line, or 'Unexpected error: ...'."""
    if isinstance(exc, UnetCoreError):
        return one_line(str(exc))
    return one_line(f"Unexpected error: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def run_safely(container: Any = None, what: str = "") -> Iterator[None]:
    """Show errors of the block as ONE ``st.error`` line; never a traceback on the page.

    A :class:`UnetCoreError` shows its message; any other exception shows
    'Unexpected error: <type>: <message>' and its traceback goes to the server log. Streamlit's
    own control flow (st.stop, st.rerun, st.switch_page) passes through. The code after the
    ``with`` block keeps running, so the rest of the page still works.
    """
    target = container if container is not None else st
    try:
        yield
    except UnetCoreError as exc:
        LOG.info("user error%s: %s", f" ({what})" if what else "", one_line(str(exc)))
        target.error(error_message(exc))
    except Exception as exc:
        LOG.exception("unexpected error%s", f" ({what})" if what else "")
        target.error(error_message(exc))


def safe_call(fn: Callable[..., Any], *args: Any, container: Any = None, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` under :func:`run_safely`; None if it failed."""
    with run_safely(container, getattr(fn, "__name__", "")):
        return fn(*args, **kwargs)
    return None


# --------------------------------------------------------------------------- hashing


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


@st.cache_data(max_entries=128, show_spinner=False)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, cached by (path, size, mtime)."""
    st_ = path.stat()
    return _file_sha256(str(path), st_.st_size, st_.st_mtime_ns)


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelEntry:
    """A model file found in the models folder."""

    label: str
    path: Path
    has_card: bool


@dataclass
class ModelBundle:
    """The model in use: its cache key, the loaded model and how it is labelled."""

    key: str
    loaded: LoadedModel
    label: str
    uploaded: bool = False

    @property
    def card(self) -> ModelCard:
        return self.loaded.card


def discover_models(folder: Path) -> list[ModelEntry]:
    """``*.keras`` / ``*.h5`` files of ``folder``, labelled by their card's name: the default
    model (:func:`default_model`) first, then models with a card, then by file name."""
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in MODEL_EXTENSIONS
                   and not p.name.startswith("."))
    found: list[tuple[str, Path, bool]] = []
    for path in files:
        name, has_card = path.stem, False
        cpath = card_path_for(path)
        if cpath.is_file():
            has_card = True
            try:
                data = json.loads(cpath.read_text())
                if isinstance(data, dict) and str(data.get("name", "")).strip():
                    name = str(data["name"]).strip()
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                pass  # load_model will report the broken card
        found.append((name, path, has_card))
    counts: dict[str, int] = {}
    for name, _, _ in found:
        counts[name] = counts.get(name, 0) + 1
    first = default_model()
    found.sort(key=lambda f: (f[1].stem != first, not f[2], f[1].name))
    return [ModelEntry(label=name if counts[name] == 1 else f"{name} ({path.name})", path=path,
                       has_card=has_card) for name, path, has_card in found]


def model_fingerprint(path: Path) -> str:
    """sha256 of the model file, combined with its card's when there is one."""
    digest = file_sha256(path)
    cpath = card_path_for(path)
    if cpath.is_file():
        digest = sha256_bytes((digest + file_sha256(cpath)).encode())
    return digest


def make_model_key(path: Path, fingerprint: str) -> str:
    """Short stable id of a (model file, content): 'salt@1a2b3c4d5e6f'."""
    digest = sha256_bytes(f"{path}|{fingerprint}".encode())[:12]
    return f"{path.stem}@{digest}"


@st.cache_resource(max_entries=4, show_spinner=False)
def load_model_cached(path: str, fingerprint: str, display_name: str) -> LoadedModel:
    """``load_model(path, safe_mode=True)``, cached per (path, file + card sha256)."""
    LOG.info("loading model %s (%s)", path, fingerprint[:12])
    return load_model(path, safe_mode=True, name=display_name)


@st.cache_resource(max_entries=8, show_spinner=False)
def _segmenter(model_key: str, tta: bool, backend: str, _loaded: LoadedModel) -> Any:
    LOG.info("segmenter: model %s tta %s backend %s", model_key, tta, backend)
    from unet_core.inference import Segmenter

    return Segmenter(_loaded, tta=tta, backend=backend)


def current_backend() -> str:
    """The inference backend picked in the sidebar (default: ``UNET_BACKEND`` or ``auto``)."""
    name = st.session_state.get("backend")
    return name if name in BACKENDS else default_backend()


def get_segmenter(bundle: ModelBundle, tta: bool, backend: str | None = None) -> Any:
    """One :class:`~unet_core.inference.Segmenter` per (model, TTA, backend); ``backend``
    defaults to the sidebar's choice. The ONNX export it may build is cached on disk."""
    return _segmenter(bundle.key, bool(tta), backend or current_backend(), bundle.loaded)


def backend_caption(seg: Any) -> str:
    """One line saying which backend runs and why (e.g. the ONNX-vs-Keras difference)."""
    label = BACKEND_LABELS.get(seg.backend.name, seg.backend.name)
    return f"Backend: {label}" + (f" · {seg.backend.note}" if seg.backend.note else "")


def sidebar_backend_picker() -> str:
    """Sidebar select box of inference backends; returns the chosen name."""
    if "backend" not in st.session_state:
        st.session_state["backend"] = default_backend()
    return st.sidebar.selectbox(
        "Inference backend", list(BACKENDS), key="backend",
        format_func=lambda b: BACKEND_LABELS.get(b, b),
        help="Auto runs ONNX Runtime on an export of the model (built once, cached on disk, "
             "checked against Keras) and falls back to TensorFlow when that is unavailable. "
             "Probabilities agree to ~1e-7.")


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


def session_upload_dir() -> Path:
    """This session's temporary folder for uploaded models.

    Held as a ``TemporaryDirectory`` in session state: it is deleted when the session ends
    (its state is garbage-collected). Loaded models stay in memory.
    """
    tmp = st.session_state.get("_upload_tmp")
    if tmp is None or not Path(tmp.name).is_dir():
        tmp = tempfile.TemporaryDirectory(prefix="unet_explorer_", ignore_cleanup_errors=True)
        st.session_state["_upload_tmp"] = tmp
    return Path(tmp.name)


def save_uploaded_model(name: str, data: bytes, card: bytes | None, folder: Path) -> Path:
    """Write an uploaded model (and optional card JSON) under ``folder/<sha>/``; returns its path.

    The file keeps a sanitised version of its name (so messages name it) and its extension.
    """
    fname = safe_filename(name, "model.keras")
    if Path(fname).suffix.lower() not in MODEL_EXTENSIONS:
        raise UnetCoreError(
            f"{name}: not a Keras model file; accepted: {', '.join(MODEL_EXTENSIONS)}")
    digest = sha256_bytes(data + (card or b""))[:16]
    target = folder / digest / fname
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.write_bytes(data)
    cpath = card_path_for(target)
    if card is not None and not cpath.exists():
        cpath.write_bytes(card)
    return target


def _on_model_change(bundle: ModelBundle) -> None:
    """Reset the model-bound settings (threshold, minimum area, padding, TTA) to the new
    card's."""
    ss = st.session_state
    if ss.get("model_key") == bundle.key:
        return
    ss["model_key"] = bundle.key
    ss["threshold"] = float(bundle.card.threshold)
    ss["min_area"] = int(bundle.card.min_area)
    ss["padding"] = bundle.card.padding_mode
    ss["tta"] = bool(bundle.card.tta)
    ss["invert_truth"] = bool(bundle.card.truth_inverted)
    for key in _MODEL_BOUND_WIDGETS:
        ss.pop(key, None)


def sidebar_model_picker() -> ModelBundle | None:
    """Render the sidebar model picker; returns the model in use (None if there is none)."""
    sb = st.sidebar
    sb.markdown("### U-Net Explorer")
    folder = models_dir()
    entries = discover_models(folder)
    labels = [e.label for e in entries] + [UPLOAD_OPTION]
    if not entries:
        sb.warning(f"No models found in {folder} (*.keras, *.h5). Upload one below.")
    choice = sb.selectbox("Model", labels, key="model_choice")
    bundle: ModelBundle | None = None
    if choice == UPLOAD_OPTION:
        bundle = _sidebar_upload(sb)
    else:
        entry = entries[labels.index(choice)]
        with run_safely(sb, "load model"), sb.spinner(f"Loading {entry.label}…"):
            fp = model_fingerprint(entry.path)
            loaded = load_model_cached(str(entry.path), fp, entry.path.name)
            bundle = ModelBundle(make_model_key(entry.path, fp), loaded, entry.label)
    if bundle is not None:
        _on_model_change(bundle)
        card = bundle.card
        sb.caption(
            f"**{card.name}** · domain {card.domain} · input {card.input_spec} · "
            f"threshold {card.threshold:.2f}"
            + ("" if bundle.loaded.card_found else " · *no card: settings inferred*"))
    st.session_state["_bundle"] = bundle
    return bundle


def _sidebar_upload(sb: Any) -> ModelBundle | None:
    up = sb.file_uploader("Upload a .keras or .h5 model", type=MODEL_TYPES, key="model_upload",
                          help=f"Loaded with safe_mode=True (no Lambda layers). "
                          f"Max {max_upload_mb()} MB.")
    card_up = sb.file_uploader("Model card (.json, optional)", type=["json"],
                               key="model_card_upload")
    if up is None:
        sb.info(f"Upload a Keras model (.keras or .h5, up to {max_upload_mb()} MB).")
        return None
    with run_safely(sb, "upload model"), sb.spinner(f"Loading {up.name}…"):
        card_bytes = card_up.getvalue() if card_up is not None else None
        path = save_uploaded_model(up.name, up.getvalue(), card_bytes, session_upload_dir())
        fp = model_fingerprint(path)
        loaded = load_model_cached(str(path), fp, up.name)
        return ModelBundle(make_model_key(path, fp), loaded, f"{loaded.card.name} (uploaded)",
                           uploaded=True)
    return None


def require_model() -> ModelBundle:
    """The model in use, or an info box and ``st.stop()`` when there is none."""
    bundle = st.session_state.get("_bundle")
    if bundle is None:
        st.info("No model loaded: pick one in the sidebar, or upload a .keras / .h5 model there.")
        st.stop()
    return bundle


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageItem:
    """One image (raw file bytes) and optionally its mask, with a stable key."""

    key: str
    name: str
    data: bytes = field(repr=False)
    sha: str
    mask_data: bytes | None = field(default=None, repr=False)
    mask_name: str | None = None
    mask_sha: str | None = None
    origin: str = "sample"

    @property
    def stem(self) -> str:
        return Path(self.name).stem


def make_item(origin: str, name: str, data: bytes, mask_name: str | None = None,
              mask_data: bytes | None = None, key: str | None = None) -> ImageItem:
    """Build an :class:`ImageItem`, hashing its bytes."""
    sha = sha256_bytes(data)
    return ImageItem(key=key or f"{origin}:{sha[:16]}:{name}", name=name, data=data, sha=sha,
                     mask_data=mask_data, mask_name=mask_name,
                     mask_sha=sha256_bytes(mask_data) if mask_data is not None else None,
                     origin=origin)


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
                key=f"sample:{folder.name}/{pair.name}"))
    return items


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
    return sorted(items, key=lambda it: (order.get(it.key.split(":", 1)[1].split("/")[0], 99),
                                         it.key))


def sample_label(item: ImageItem) -> str:
    """'seismic / seismic_000.png' for a sample key."""
    set_name = item.key.split(":", 1)[1].split("/")[0] if item.origin == "sample" else item.origin
    return f"{set_name} / {item.name}"


def seed_widget(widget_key: str, persist_key: str, default: Any,
                valid: Callable[[Any], bool] | None = None) -> None:
    """Before a widget is drawn: give its key the carried-over value (or ``default``)."""
    ss = st.session_state
    if widget_key in ss and (valid is None or valid(ss[widget_key])):
        return
    value = ss.get(persist_key, default)
    if valid is not None and not valid(value):
        value = default
    ss[widget_key] = value


def sample_select(domain: str, key: str, label: str = "Sample") -> ImageItem | None:
    """Selectbox over all bundled samples (the model's domain first); carries ``image_key``."""
    items = ordered_samples(domain)
    if not items:
        st.warning(f"No bundled samples found in {ASSETS}.")
        return None
    by_key = {it.key: it for it in items}
    seed_widget(key, "image_key", items[0].key, lambda v: v in by_key)
    chosen = st.selectbox(label, list(by_key), key=key,
                          format_func=lambda k: sample_label(by_key[k]))
    return by_key[chosen]


def image_sources(upload_label: str, widget_key: str, recent: dict[str, ImageItem]
                  ) -> list[str]:
    """Options of a page's image-source radio (bundled, upload, recent if any), seeded so the
    radio shows "Recent images" when the carried-over image is one of them."""
    sources = ["Bundled sample", upload_label] + (["Recent images"] if recent else [])
    ss = st.session_state
    if ss.get(widget_key) not in sources:
        ss[widget_key] = "Recent images" if ss.get("image_key") in recent else sources[0]
    return sources


def recent_select(key: str, recent: dict[str, ImageItem], show_mask: bool = True) -> ImageItem:
    """Selectbox "Recent image" over this session's recent images; carries ``image_key``."""
    seed_widget(key, "image_key", next(iter(recent)), lambda v: v in recent)
    pick = st.selectbox("Recent image", list(recent), key=key,
                        format_func=lambda k: recent[k].name
                        + (" (+ mask)" if show_mask and recent[k].mask_data else ""))
    return recent[pick]


def items_from_uploads(images: Sequence[tuple[str, bytes]],
                       masks: Sequence[tuple[str, bytes]] = ()
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
                               match[1] if match else None))
    for mname in by_name:
        if mname not in used:
            notes.append(f"{mname}: mask matches no uploaded image (masks are matched by file "
                         "name, or by name without extension)")
    return items, notes


@st.cache_data(max_entries=32, max_size="256MB", show_spinner=False)
def _decode_image(sha: str, name: str, max_pixels: int, _data: bytes) -> np.ndarray:
    return read_image(_data, name=name, max_pixels=max_pixels)


@st.cache_data(max_entries=32, max_size="128MB", show_spinner=False)
def _decode_mask(sha: str, name: str, max_pixels: int, _data: bytes) -> np.ndarray:
    return read_mask(_data, name=name, max_pixels=max_pixels)


def decode_image(item: ImageItem) -> np.ndarray:
    """The item's image as float32 (H, W) in [0, 1]; raises the engine's ImageReadError."""
    return _decode_image(item.sha, item.name, app_max_pixels(), item.data)


def decode_mask(item: ImageItem, shape: tuple[int, ...]) -> np.ndarray | None:
    """The item's mask as bool (H, W), or None; MaskError if unreadable or of another size."""
    if item.mask_data is None or item.mask_sha is None:
        return None
    name = item.mask_name or item.name
    mask = _decode_mask(item.mask_sha, name, app_max_pixels(), item.mask_data)
    if mask.shape != tuple(shape):
        mh, mw = mask.shape
        ih, iw = shape[:2]
        raise MaskError(f"{name}: mask is {mh}x{mw} (HxW) but image {item.name} is {ih}x{iw}; "
                        "masks must match their image's size")
    return mask


def remember_item(item: ImageItem, limit: int = 4, max_bytes: int = 32 * 2**20) -> None:
    """Keep a non-sample image in this session's 'Recent images' (bounded) and select it."""
    ss = st.session_state
    if item.origin != "sample":
        recent: OrderedDict[str, ImageItem] = ss.setdefault("recent_images", OrderedDict())
        if len(item.data) + len(item.mask_data or b"") <= max_bytes:
            recent[item.key] = item
            recent.move_to_end(item.key)
            while len(recent) > limit:
                recent.popitem(last=False)
    ss["image_key"] = item.key


def recent_items() -> dict[str, ImageItem]:
    """This session's recent uploaded / opened images, newest first."""
    recent = st.session_state.get("recent_images") or {}
    return dict(reversed(list(recent.items())))


# --------------------------------------------------------------------------- inference


@st.cache_data(max_entries=64, max_size="512MB", show_spinner=False)
def _probability_map(model_key: str, image_sha: str, padding: str, tta: bool, backend: str,
                     _segmenter: Any, _image: np.ndarray) -> np.ndarray:
    LOG.info("forward pass: model %s image %s padding %s tta %s backend %s", model_key,
             image_sha[:12], padding, tta, backend)
    return _segmenter.predict_proba(_image, padding)


def probability_map(bundle: ModelBundle, item: ImageItem, image: np.ndarray, padding: str,
                    tta: bool) -> np.ndarray:
    """Probability map (float32 (H, W)), cached per (model, image sha256, padding, TTA,
    backend)."""
    seg = get_segmenter(bundle, bool(tta))
    return _probability_map(bundle.key, item.sha, padding, bool(tta), seg.backend.name, seg,
                            image)


@st.cache_data(max_entries=64, show_spinner=False)
def _image_sweep(model_key: str, image_sha: str, mask_sha: str, padding: str, tta: bool,
                 min_area: int, _prob: np.ndarray, _mask: np.ndarray) -> dict[str, np.ndarray]:
    from unet_core.metrics import SweepAccumulator

    acc = SweepAccumulator()
    acc.add(_prob, _mask, "image")
    res = acc.result(min_area)
    return {"thresholds": res.thresholds, "iou": res.iou[0], "dice": res.dice[0],
            "tgs": res.tgs[0]}


def image_sweep(bundle: ModelBundle, item: ImageItem, prob: np.ndarray, mask: np.ndarray,
                padding: str, tta: bool, inverted: bool = False, min_area: int = 0
                ) -> dict[str, np.ndarray]:
    """This image's IoU / Dice / TGS score at every threshold 0.00..1.00 with the
    minimum-area rule ``min_area`` (cached).

    ``mask`` is the truth as scored (already inverted when ``inverted``)."""
    mask_key = (item.mask_sha or "") + (":inverted" if inverted else "")
    return _image_sweep(bundle.key, item.sha, mask_key, padding, bool(tta), int(min_area), prob,
                        mask)


# --------------------------------------------------------------------------- activations


@st.cache_resource(max_entries=2, show_spinner=False)
def get_probe(model_key: str, _loaded: LoadedModel) -> Any:
    """One :class:`~unet_core.introspect.ActivationProbe` over every 4-D layer of the model."""
    from unet_core.introspect import ActivationProbe

    return ActivationProbe(_loaded, max_bytes=activation_max_bytes())


_PASSES: dict[tuple[str, str, str], int] = {}
_PASSES_LOCK = threading.Lock()


@st.cache_resource(max_entries=2, show_spinner=False)
def _activation_maps(model_key: str, image_sha: str, padding: str, _probe: Any,
                     _padded: np.ndarray) -> dict[str, np.ndarray]:
    maps = _probe.run(_padded)
    for arr in maps.values():
        arr.setflags(write=False)  # shared between sessions: read-only
    with _PASSES_LOCK:
        key = (model_key, image_sha, padding)
        _PASSES[key] = _PASSES.get(key, 0) + 1
    return maps


def activation_maps(bundle: ModelBundle, item: ImageItem, padding: str, probe: Any,
                    padded: np.ndarray) -> dict[str, np.ndarray]:
    """Every probed layer's maps for one image: ONE forward pass, cached."""
    return _activation_maps(bundle.key, item.sha, padding, probe, padded)


def forward_pass_count(bundle: ModelBundle, item: ImageItem, padding: str) -> int:
    """How many activation forward passes this (model, image, padding) has cost so far."""
    with _PASSES_LOCK:
        return _PASSES.get((bundle.key, item.sha, padding), 0)


# --------------------------------------------------------------------------- evaluation


class _LRU:
    """A small thread-safe LRU dict."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


@st.cache_resource(show_spinner=False)
def evaluation_store() -> _LRU:
    """Process-wide cache of Evaluations by (model key, data fingerprint, padding, TTA)."""
    return _LRU(8)


class ExtractedZip:
    """A zip extracted with :func:`unet_core.io.open_dataset`, kept until :meth:`close`.

    The temporary folder lives as long as the results that point into it (the worst-case
    gallery reads its images); it is removed on close or when garbage-collected.
    """

    def __init__(self, data: bytes, name: str) -> None:
        from unet_core.io import open_dataset

        self.name = name
        self.sha = sha256_bytes(data)
        self._cm = open_dataset(data, name=name, max_unpacked_bytes=1_000_000_000)
        self.path: Path = self._cm.__enter__()

    def close(self) -> None:
        if self._cm is not None:
            cm, self._cm = self._cm, None
            with contextlib.suppress(Exception):
                cm.__exit__(None, None, None)

    def __del__(self) -> None:
        self.close()


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


@dataclass
class EvalState:
    """An evaluation shown on the Evaluate page (kept in session state)."""

    model_key: str
    source: str
    pairs: list[Pair]
    evaluation: Any
    fingerprint: str
    holder: ExtractedZip | None = None


def item_from_pair(pair: Pair, origin: str = "eval") -> ImageItem:
    """An :class:`ImageItem` with the bytes of a data set pair (image and mask)."""
    mask = pair.mask_path.read_bytes() if pair.mask_path is not None else None
    return make_item(origin, pair.name, pair.image_path.read_bytes(),
                     pair.mask_path.name if pair.mask_path else None, mask)


def open_in_segment(item: ImageItem) -> None:
    """Select ``item`` (with its mask) and switch to the Segment page."""
    remember_item(item)
    st.session_state["_segment_open_recent"] = True
    st.switch_page("views/segment.py")


# --------------------------------------------------------------------------- widgets


def threshold_slider(widget_key: str, default: float, label: str = "Threshold",
                     container: Any = None) -> float:
    """The 'Threshold' slider (0..1, step 0.01), carried across pages in ``threshold``."""
    target = container if container is not None else st
    seed_widget(widget_key, "threshold", round(float(default), 2),
                lambda v: isinstance(v, int | float) and 0.0 <= float(v) <= 1.0)
    value = float(target.slider(label, min_value=0.0, max_value=1.0, step=0.01, key=widget_key,
                                help="Foreground is probability > threshold. Moving it never "
                                "re-runs the network."))
    st.session_state["threshold"] = value
    return value


def min_area_input(widget_key: str, default: int, container: Any = None) -> int:
    """The 'Minimum area (px)' number input (0 = off), carried across pages in ``min_area``."""
    target = container if container is not None else st
    seed_widget(widget_key, "min_area", int(default),
                lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)
    value = int(target.number_input(
        "Minimum area (px)", min_value=0, max_value=10**9, step=10, key=widget_key,
        help=f"A mask with fewer foreground pixels is emptied as a whole (0 = off). The model "
        f"card recommends {int(default)}, picked on validation with the threshold."))
    st.session_state["min_area"] = value
    return value


def padding_select(widget_key: str, default: str, container: Any = None) -> str:
    """The 'Padding' selectbox over the engine's PAD_MODES, carried across pages."""
    target = container if container is not None else st
    seed_widget(widget_key, "padding", default, lambda v: v in PAD_MODES)
    value = target.selectbox("Padding", list(PAD_MODES), key=widget_key,
                             help="How images are padded up to the size the network accepts "
                             "(never resized); the output is cropped back.")
    st.session_state["padding"] = value
    return str(value)


def _carried_checkbox(widget_key: str, persist_key: str, default: bool, label: str,
                      help_text: str, container: Any = None) -> bool:
    """A checkbox seeded from ``persist_key`` (else ``default``) whose value carries over."""
    target = container if container is not None else st
    seed_widget(widget_key, persist_key, bool(default), lambda v: isinstance(v, bool))
    value = bool(target.checkbox(label, key=widget_key, help=help_text))
    st.session_state[persist_key] = value
    return value


def tta_checkbox(widget_key: str, default: bool, container: Any = None) -> bool:
    """The test-time augmentation checkbox (average with the horizontally flipped image)."""
    return _carried_checkbox(widget_key, "tta", default, "Test-time augmentation (flip)",
                             "Average the prediction with that of the mirrored image "
                             "(two forward passes).", container)


def invert_truth_checkbox(widget_key: str, default: bool, foreground: str,
                          container: Any = None) -> bool:
    """Checkbox: score against the complement of the masks (they mark the other class)."""
    return _carried_checkbox(
        widget_key, "invert_truth", default, "Masks mark the other class (invert)",
        f"Tick when white in the masks is *not* {foreground} (e.g. ISBI EM masks mark cell "
        "interiors while the membrane model segments membranes). Set from the model card.",
        container)


def pager(total: int, key: str, noun: str, per_page: int = PER_PAGE,
          container: Any = None) -> tuple[int, int]:
    """Page through ``total`` things, ``per_page`` at a time; shows 'N of M shown'.

    Returns (start, stop) indices of the page shown.
    """
    target = container if container is not None else st
    pages = max(1, -(-total // per_page))
    page = 1
    if pages > 1:
        page = int(target.number_input("Page", min_value=1, max_value=pages, value=1, step=1,
                                       key=key, help=f"{pages} pages of {per_page} {noun}"))
    start = (page - 1) * per_page
    stop = min(total, start + per_page)
    target.caption(f"{stop - start} of {total} shown ({noun} {start}–{stop - 1}, "
                   f"page {page}/{pages})")
    return start, stop
