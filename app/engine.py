"""Cached engine calls of the dashboard: every cache of the app lives here.

All keyed by content hashes, never by object identity:

* :func:`load_model_cached` (``st.cache_resource``, 3 entries): one LoadedModel per (file
  path, sha256 of the model file + its weights + its card, trusted or not).
  :func:`get_segmenter` (``st.cache_resource``): one Segmenter per (model key, TTA, backend).
  A :class:`ModelBundle`'s ``key`` names the file *and the card in use*: a card edited on the
  Model page (:func:`with_card`) gives every result cache below new entries;
  ``network_key`` (the file only) keys what the card cannot change (layers, kernels, probe).
* :func:`class_probabilities` (``st.cache_data``, 32 entries / 192 MB): the network's output,
  all K classes, per (model key, image sha256, padding mode, TTA, backend). Moving the
  threshold or switching the class never runs the network: the Segment page sends one class's
  map once to the browser, which re-thresholds it.
* :func:`threshold_payload` (``st.cache_data``): what the browser needs for an instant
  threshold (display image, in colour when it has colour, threshold levels, per-threshold
  metrics table), per class.
* :func:`get_probe` / :func:`activation_maps` (``st.cache_resource``, 1 model / 2 images):
  ONE forward pass per (model, image, padding) holding every layer's maps, so switching
  layers or pages costs no pass. (``cache_resource``: the maps of all layers can be tens to
  hundreds of MB, and ``cache_data`` would unpickle a copy on every rerun.)
* Evaluations: a bounded in-process LRU (:func:`evaluation_store`).
* Page caches: layer table, FLOP count, conv layers, kernels, thumbnails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from app.settings import (
    LOG,
    activation_max_bytes,
    app_max_pixels,
    default_model,
    models_dir,
    trusted_models_dir,
)
from app.sources import ImageItem, sha256_bytes
from unet_core.errors import ModelSpecError
from unet_core.model import (
    MODEL_EXTENSIONS,
    LoadedModel,
    ModelCard,
    card_from_dict,
    card_path_for,
    load_model,
    reconcile_card,
)

# --------------------------------------------------------------------------- hashing


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
    """A model file found in the models folder (or in the trusted models folder)."""

    label: str
    path: Path
    has_card: bool
    trusted: bool = False


@dataclass
class ModelBundle:
    """The model in use: its cache keys, the loaded model and how it is labelled.

    ``key`` identifies the model file *and the card in use* (every result cache keys on it, so
    an edited card gives new results); ``network_key`` only the file (layer table, kernels,
    activation probe); ``edited``: the card is one the user applied on the Model page, not
    the file's (or the inferred) one.
    """

    key: str
    loaded: LoadedModel
    label: str
    uploaded: bool = False
    network_key: str = ""
    edited: bool = False

    def __post_init__(self) -> None:
        self.network_key = self.network_key or self.key

    @property
    def card(self) -> ModelCard:
        return self.loaded.card

    @property
    def trusted(self) -> bool:
        """Loaded with Keras ``safe_mode=False`` (from ``UNET_TRUSTED_MODELS_DIR``)."""
        return bool(self.loaded.trusted)

    @property
    def card_file_name(self) -> str:
        """The name of this model's card file, where the engine looks for it ('salt.json' for
        salt.keras, 'arch.card.json' for an architecture arch.json + weights)."""
        path = self.loaded.path
        return card_path_for(path).name if path is not None else f"{self.card.name}.json"


def discover_models(folder: Path, trusted: bool = False) -> list[ModelEntry]:
    """``*.keras`` / ``*.h5`` / ``*.onnx`` files of ``folder``, labelled by their card's name:
    the default model (:func:`~app.settings.default_model`) first, then models with a card,
    then by file name. ``trusted``: the folder is ``UNET_TRUSTED_MODELS_DIR`` (its models load with
    ``safe_mode=False``)."""
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
                       has_card=has_card, trusted=trusted) for name, path, has_card in found]


TRUSTED_SUFFIX = " (trusted)"


def model_entries() -> list[ModelEntry]:
    """The models the sidebar offers: the bundled folder's, then the trusted folder's (labelled
    '… (trusted)'); a trusted folder that is the bundled one makes its models trusted."""
    bundled = models_dir()
    trusted_dir = trusted_models_dir()
    same = trusted_dir is not None and trusted_dir.resolve() == bundled.resolve()
    entries = [] if same else discover_models(bundled)
    if trusted_dir is not None:
        entries += [dataclasses.replace(e, label=e.label + TRUSTED_SUFFIX)
                    for e in discover_models(trusted_dir, trusted=True)]
    return entries


def model_fingerprint(path: Path, weights: Path | None = None) -> str:
    """sha256 of the model file, combined with its weights' and its card's when there are."""
    digest = file_sha256(path)
    for extra in (weights, card_path_for(path)):
        if extra is not None and extra != path and extra.is_file():
            digest = sha256_bytes((digest + file_sha256(extra)).encode())
    return digest


def make_model_key(path: Path, fingerprint: str) -> str:
    """Short stable id of a (model file, content): 'salt@1a2b3c4d5e6f'."""
    digest = sha256_bytes(f"{path}|{fingerprint}".encode())[:12]
    return f"{path.stem}@{digest}"


@st.cache_resource(max_entries=3, show_spinner=False)
def load_model_cached(path: str, fingerprint: str, display_name: str, trusted: bool = False,
                      weights: str | None = None) -> LoadedModel:
    """``load_model(path, safe_mode=not trusted, weights=...)``, cached per (path, sha256 of
    the file, its weights and card, trust)."""
    LOG.info("loading model %s (%s)%s", path, fingerprint[:12], " trusted" if trusted else "")
    return load_model(path, safe_mode=not trusted, name=display_name,
                      weights=Path(weights) if weights else None)


def open_model(path: Path, display_name: str, label: str, uploaded: bool = False, *,
               trusted: bool = False, weights: Path | None = None) -> ModelBundle:
    """Load (cached) the model at ``path`` (an architecture .json with ``weights``) and wrap it
    with its key and label. ``trusted`` loads with ``safe_mode=False``: only for files of
    ``UNET_TRUSTED_MODELS_DIR``, never for uploads."""
    if trusted and uploaded:
        raise ValueError("uploaded models are never trusted")
    fp = model_fingerprint(path, weights)
    loaded = load_model_cached(str(path), fp, display_name, bool(trusted),
                               str(weights) if weights else None)
    key = make_model_key(path, fp + (":trusted" if trusted else ""))
    return ModelBundle(key, loaded, label, uploaded=uploaded)


@st.cache_data(max_entries=256, show_spinner=False)
def _vet_result(fingerprint: str, path: str, weights: str | None, name: str
                ) -> tuple[bool, Any]:
    """(True, vet_model's dict) or (False, its one-line reason), per model content hash: a
    file is vetted once, and a refused file stays refused without a second child."""
    try:
        from unet_core.sandbox import vet_model  # type: ignore[import-not-found]
    except ImportError:  # the sandbox is not there yet: load as before
        return True, None
    from unet_core.errors import UnetCoreError

    LOG.info("vetting model %s (%s) in a child process", path, fingerprint[:12])
    try:
        return True, vet_model(Path(path), weights=Path(weights) if weights else None,
                               name=name)
    except UnetCoreError as exc:
        LOG.info("model %s refused: %s", path, exc)
        return False, " ".join(str(exc).split())


def vet_upload(path: Path, weights: Path | None = None, name: str | None = None
               ) -> dict[str, Any] | None:
    """Load and first-run an *uploaded* model in a child process before the server loads it
    (:func:`unet_core.sandbox.vet_model`: memory limit, timeout, ONNX export built there and
    cached), cached by the content hash of the file, its weights and its card. Raises
    ModelLoadError with the child's one-line reason; returns its figures (None when the
    engine has no sandbox). Bundled and trusted models are not vetted."""
    from unet_core.errors import ModelLoadError

    ok, result = _vet_result(model_fingerprint(path, weights), str(path),
                             str(weights) if weights else None, name or path.name)
    if not ok:
        raise ModelLoadError(str(result))
    return result


def card_digest(card: ModelCard) -> str:
    """Short sha256 of a card's content (what an edited card's cache keys carry)."""
    return sha256_bytes(json.dumps(card.to_dict(), sort_keys=True, default=str).encode())[:10]


def edited_card(bundle: ModelBundle, data: dict[str, Any]) -> ModelCard:
    """The card ``data`` checked against the network of ``bundle`` (the same checks as a card
    file: field types and values, channels and classes agreeing with the network).

    Raises ModelSpecError with a one-line message naming the first bad field."""
    name = f"{bundle.label}: edited card"
    card = card_from_dict(dict(data), name, ModelSpecError)
    return reconcile_card(card, bundle.loaded.model, name, error=ModelSpecError)


def with_card(bundle: ModelBundle, data: dict[str, Any] | None) -> ModelBundle:
    """``bundle`` with its card replaced by the edited card ``data`` (None: unchanged); the
    new bundle's ``key`` carries the card's digest, so the segmenter, probability and
    evaluation caches hold its own results."""
    if data is None:
        return bundle
    card = edited_card(bundle, data)
    loaded = dataclasses.replace(bundle.loaded, card=card)
    return ModelBundle(f"{bundle.network_key}~{card_digest(card)}", loaded, bundle.label,
                       uploaded=bundle.uploaded, network_key=bundle.network_key, edited=True)


@st.cache_resource(max_entries=6, show_spinner=False)
def _segmenter(model_key: str, tta: bool, backend: str, _loaded: LoadedModel) -> Any:
    LOG.info("segmenter: model %s tta %s backend %s", model_key, tta, backend)
    from app.settings import app_network_pixels
    from unet_core.inference import Segmenter

    # One tile per forward pass: the engine's default batches up to 4 M pixels (7 tiles of
    # 768x768 at once, +1 GB for a 2048x2048 image); one at a time keeps the peak ~250 MB.
    pixels = app_network_pixels()
    return Segmenter(_loaded, tta=tta, backend=backend, max_network_pixels=pixels,
                     max_batch_pixels=pixels)


def get_segmenter(bundle: ModelBundle, tta: bool, backend: str) -> Any:
    """One :class:`~unet_core.inference.Segmenter` per (model, card, TTA, backend). The ONNX
    export it may build is cached on disk (per model file, whatever the card)."""
    return _segmenter(bundle.key, bool(tta), backend, bundle.loaded)


# --------------------------------------------------------------------------- inference


#: Images above this many pixels are predicted one at a time in the whole server (their
#: forward passes hold up to ~1 GB of activations each for a while): sessions that upload
#: large images at once wait in turn instead of adding their peaks up.
LARGE_PASS_PIXELS = 1024 * 1024
_LARGE_PASS_LOCK = threading.Lock()


@st.cache_data(max_entries=32, max_size="192MB", show_spinner=False)
def _class_probabilities(model_key: str, image_sha: str, padding: str, tta: bool, backend: str,
                         _segmenter: Any, _image: np.ndarray) -> np.ndarray:
    LOG.info("forward pass: model %s image %s padding %s tta %s backend %s", model_key,
             image_sha[:12], padding, tta, backend)
    if int(_image.shape[0]) * int(_image.shape[1]) <= LARGE_PASS_PIXELS:
        return _segmenter.predict_classes(_image, padding)
    with _LARGE_PASS_LOCK:
        probs = _segmenter.predict_classes(_image, padding)
    _release_freed_memory()  # the pass's buffers back to the system, not kept by malloc
    return probs


def class_probabilities(bundle: ModelBundle, item: ImageItem, image: np.ndarray, padding: str,
                        tta: bool, backend: str) -> np.ndarray:
    """Class probabilities (float32 (H, W, K); K = 1 for one sigmoid map) of an image as
    decoded (:func:`app.sources.decode_image`), cached per (model and card, image sha256,
    padding, TTA, backend): switching the class shown never runs the network."""
    seg = get_segmenter(bundle, bool(tta), backend)
    return _class_probabilities(bundle.key, item.sha, padding, bool(tta), seg.backend.name, seg,
                                image)


def class_map(probs: np.ndarray, class_index: int) -> np.ndarray:
    """One class's probability map, float32 (H, W), of class probabilities (H, W, K)."""
    return np.ascontiguousarray(probs[..., int(class_index)])


def probability_map(bundle: ModelBundle, item: ImageItem, image: np.ndarray, padding: str,
                    tta: bool, backend: str, class_index: int | None = None) -> np.ndarray:
    """Probability map (float32 (H, W)) of one class (default: the card's), from the cached
    :func:`class_probabilities`."""
    k = bundle.card.default_class if class_index is None else int(class_index)
    return class_map(class_probabilities(bundle, item, image, padding, tta, backend), k)


@st.cache_data(max_entries=32, max_size="96MB", show_spinner=False)
def _threshold_payload(model_key: str, image_sha: str, truth_key: str, padding: str, tta: bool,
                       backend: str, min_area: int, class_index: int, _image: np.ndarray,
                       _prob: np.ndarray, _truth: np.ndarray | None) -> dict[str, Any]:
    from app.components.threshold_view import threshold_payload as build
    from unet_core.preprocess import display_image

    return build(display_image(_image), _prob, _truth, min_area=min_area)


def threshold_payload(bundle: ModelBundle, item: ImageItem, image: np.ndarray,
                      prob: np.ndarray, truth: np.ndarray | None, *, padding: str, tta: bool,
                      backend: str, min_area: int, invert_masks: bool,
                      class_index: int = 0) -> dict[str, Any]:
    """What the browser needs to re-threshold ``prob`` (class ``class_index``) by itself
    (cached per content). ``image`` is as decoded (shown in colour when it has colour).

    ``truth`` is the mask as scored (already inverted when ``invert_masks``; for a label
    mask, the pixels of the class)."""
    truth_key = "" if truth is None else (item.mask_sha or "") + (":inv" if invert_masks else "")
    return _threshold_payload(bundle.key, item.sha, truth_key, padding, bool(tta), backend,
                              int(min_area), int(class_index), image, prob, truth)


# --------------------------------------------------------------------------- activations


@st.cache_resource(max_entries=1, show_spinner=False)
def get_probe(model_key: str, _loaded: LoadedModel) -> Any:
    """One :class:`~unet_core.introspect.ActivationProbe` over every 4-D layer of the model
    (one model at a time: a probe is a second Keras model over the same weights, or for an
    ONNX model a session over the graph with every probed output added)."""
    from unet_core.introspect import ActivationProbe

    return ActivationProbe(_loaded, max_bytes=activation_max_bytes())


#: Longest side of the activation maps kept for display (the statistics use every value).
ACTIVATION_DISPLAY_SIDE = 256

_PASSES: dict[tuple[str, str, str], int] = {}
_PASSES_LOCK = threading.Lock()


@dataclass(frozen=True)
class LayerMaps:
    """One layer's activation maps for one image, summarised for the page.

    ``display`` is float16 (h', w', C): the maps cropped to the image (padding removed) and
    decimated by ``stride`` so the longer side is at most :data:`ACTIVATION_DISPLAY_SIDE`;
    ``shape`` is (h, w, C) of the cropped maps at the layer's own resolution; ``stats`` and
    ``low`` / ``high`` (min / max over every channel) are computed on the full float32 maps.
    """

    display: np.ndarray
    stride: int
    shape: tuple[int, int, int]
    stats: list[Any]
    low: float
    high: float


def _summarise(maps: np.ndarray, box: Any, padded_shape: tuple[int, int]) -> LayerMaps:
    from app import viz
    from unet_core.introspect import channel_stats, crop_activation

    cropped = crop_activation(maps, box, padded_shape)
    shown, k = viz.decimate(cropped, ACTIVATION_DISPLAY_SIDE)
    display = np.ascontiguousarray(shown).astype(np.float16)
    display.setflags(write=False)  # shared between sessions: read-only
    finite = cropped[np.isfinite(cropped)]
    low = float(finite.min()) if finite.size else 0.0
    high = float(finite.max()) if finite.size else 1.0
    h, w, c = cropped.shape
    return LayerMaps(display, k, (h, w, c), channel_stats(cropped), low, high)


@st.cache_resource(max_entries=2, show_spinner=False)
def _activation_maps(model_key: str, image_sha: str, padding: str, _probe: Any,
                     _padded: np.ndarray, _box: Any) -> dict[str, LayerMaps]:
    maps = _probe.run(_padded)
    summary = {}
    for name in list(maps):
        summary[name] = _summarise(maps.pop(name), _box, _padded.shape[:2])
    del maps
    _release_freed_memory()
    with _PASSES_LOCK:
        key = (model_key, image_sha, padding)
        _PASSES[key] = _PASSES.get(key, 0) + 1
    return summary


def _release_freed_memory() -> None:
    """Hand memory freed by a large computation back to the system (glibc ``malloc_trim``);
    a no-op elsewhere."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def activation_maps(bundle: ModelBundle, item: ImageItem, padding: str, probe: Any,
                    padded: np.ndarray, box: Any) -> dict[str, LayerMaps]:
    """Every probed layer's maps for one image, summarised: ONE forward pass, cached."""
    return _activation_maps(bundle.key, item.sha, padding, probe, padded, box)


def forward_pass_count(bundle: ModelBundle, item: ImageItem, padding: str) -> int:
    """How many activation forward passes this (model, image, padding) has cost so far."""
    with _PASSES_LOCK:
        return _PASSES.get((bundle.key, item.sha, padding), 0)


# --------------------------------------------------------------------------- introspection


@st.cache_data(max_entries=8, show_spinner=False)
def layer_rows(model_key: str, _loaded: Any) -> tuple[list[dict[str, Any]], int, int]:
    """The layer table's rows (without '#'), total and trainable parameter counts."""
    from unet_core.introspect import layer_table

    infos = layer_table(_loaded)
    rows = [{k: v for k, v in info.as_row().items() if k != "#"} for info in infos]
    return rows, sum(i.params for i in infos), sum(i.trainable_params for i in infos)


@st.cache_data(max_entries=8, show_spinner=False)
def gflop(model_key: str, _loaded: Any, height: int, width: int) -> float:
    """GFLOP of one forward pass at (height, width)."""
    from unet_core.introspect import model_flops

    return model_flops(_loaded.model, height, width) / 1e9


@st.cache_data(max_entries=8, show_spinner=False)
def conv_layers(model_key: str, _loaded: Any) -> list[tuple[str, str]]:
    """(name, 'name · 3x3, 16→32 · Conv2D') of every conv layer."""
    from unet_core.introspect import layer_table

    return [(i.name, f"{i.name} · {i.kernel_shape[0]}x{i.kernel_shape[1]}, "
             f"{i.kernel_shape[2]}→{i.kernel_shape[3]} · {i.type}")
            for i in layer_table(_loaded) if i.is_conv and i.kernel_shape]


@st.cache_data(max_entries=32, show_spinner=False)
def kernels(model_key: str, layer: str, _loaded: Any) -> Any:
    """The kernel of a conv layer (see :func:`unet_core.introspect.get_kernels`)."""
    from unet_core.introspect import get_kernels

    return get_kernels(_loaded, layer)


# --------------------------------------------------------------------------- evaluation


def approx_nbytes(obj: Any, _depth: int = 0) -> int:
    """Rough size of ``obj`` in bytes: its numpy arrays (through dataclasses, objects, dicts,
    lists and tuples, 4 levels deep) plus a small constant per object."""
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if _depth > 4 or obj is None or isinstance(obj, int | float | bool | str | bytes):
        return len(obj) if isinstance(obj, str | bytes) else 64
    if isinstance(obj, dict):
        items: Any = list(obj.values())
    elif isinstance(obj, list | tuple | set | frozenset):
        items = list(obj)
    elif hasattr(obj, "__dict__"):
        items = list(vars(obj).values())
    elif dataclasses.is_dataclass(obj):
        items = [getattr(obj, f.name, None) for f in dataclasses.fields(obj)]
    else:
        return 64
    return 64 + sum(approx_nbytes(v, _depth + 1) for v in items[:100_000])


class LRU:
    """A small thread-safe LRU dict, bounded by entries and (when ``max_bytes``) by the
    :func:`approx_nbytes` of its values; the newest entry always stays."""

    def __init__(self, size: int, max_bytes: int | None = None) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._bytes: dict[Any, int] = {}
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(self._bytes.values())

    def get(self, key: Any) -> Any:
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: Any, value: Any) -> None:
        size = approx_nbytes(value) if self.max_bytes is not None else 0
        with self._lock:
            self._data[key] = value
            self._bytes[key] = size
            self._data.move_to_end(key)
            while len(self._data) > 1 and (
                    len(self._data) > self.size or (
                        self.max_bytes is not None
                        and sum(self._bytes.values()) > self.max_bytes)):
                old, _ = self._data.popitem(last=False)
                self._bytes.pop(old, None)


@st.cache_resource(show_spinner=False)
def evaluation_store() -> LRU:
    """Process-wide cache of Evaluations by (model key, data fingerprint, padding, TTA, ...):
    8 entries, 128 MB."""
    return LRU(8, max_bytes=EVALUATION_CACHE_BYTES)


#: Byte bound of the evaluation cache.
EVALUATION_CACHE_BYTES = 128 * 2**20


@st.cache_data(max_entries=32, max_size="48MB", show_spinner=False)
def _file_probability(image_path: str, mtime_ns: int, model_key: str, padding: str, tta: bool,
                      backend: str, _bundle: ModelBundle) -> tuple[np.ndarray, np.ndarray]:
    from unet_core.io import read_raw
    from unet_core.preprocess import display_image

    image = read_raw(image_path, max_pixels=app_max_pixels())
    seg = get_segmenter(_bundle, tta, backend)
    return display_image(image), seg.predict_classes(image, padding)


def _truth_of(mask_path: Path | None, n_classes: int | None) -> np.ndarray | None:
    """A data set mask: bool (H, W), or uint8 class indices with ``n_classes``."""
    from unet_core.io import read_label_mask, read_mask

    if mask_path is None:
        return None
    if n_classes is not None:
        return read_label_mask(mask_path, n_classes, max_pixels=app_max_pixels())
    return read_mask(mask_path, max_pixels=app_max_pixels())


def worst_case_thumbnail(image_path: Path, mask_path: Path | None, bundle: ModelBundle, *,
                         padding: str, tta: bool, backend: str, threshold: float,
                         min_area: int, invert_masks: bool, class_index: int | None = None
                         ) -> np.ndarray:
    """uint8 RGB thumbnail of an evaluated image (in colour when it has colour) with the
    prediction of class ``class_index`` (default: the card's) and its truth outlined.

    Thumbnails are cached per (files and their times, model and card, settings, threshold,
    class); the class probabilities under them per (file, model and card, padding, TTA,
    backend), so moving the threshold or switching the class only re-thresholds them."""
    k = bundle.card.default_class if class_index is None else int(class_index)
    mask_key = (str(mask_path), mask_path.stat().st_mtime_ns) if mask_path else None
    return _worst_case_thumbnail(str(image_path), image_path.stat().st_mtime_ns, mask_key,
                                 bundle.key, padding, bool(tta), backend, float(threshold),
                                 int(min_area), bool(invert_masks), k, bundle)


@st.cache_data(max_entries=64, max_size="16MB", show_spinner=False)
def _worst_case_thumbnail(image_path: str, mtime_ns: int, mask_key: tuple[str, int] | None,
                          model_key: str, padding: str, tta: bool, backend: str,
                          threshold: float, min_area: int, invert_masks: bool, k: int,
                          _bundle: ModelBundle) -> np.ndarray:
    from app import viz
    from unet_core.metrics import threshold_mask

    image, probs = _file_probability(image_path, mtime_ns, model_key, padding, tta, backend,
                                     _bundle)
    pred = threshold_mask(class_map(probs, k), threshold, min_area)
    truth = _truth_of(Path(mask_key[0]) if mask_key else None, None)
    if truth is not None and invert_masks:
        truth = ~truth
    if truth is not None and truth.shape != image.shape[:2]:
        truth = None
    return viz.thumbnail_rgb(image, pred, truth)


def label_thumbnail(image_path: Path, mask_path: Path | None, bundle: ModelBundle, *,
                    padding: str, tta: bool, backend: str, max_side: int = 160) -> np.ndarray:
    """uint8 RGB thumbnail of an image with its predicted label map (argmax) blended over it
    and the edges between the true classes outlined in white (for label-mask evaluations);
    cached like :func:`worst_case_thumbnail`."""
    mask_key = (str(mask_path), mask_path.stat().st_mtime_ns) if mask_path else None
    return _label_thumbnail(str(image_path), image_path.stat().st_mtime_ns, mask_key,
                            bundle.key, padding, bool(tta), backend, int(max_side), bundle)


@st.cache_data(max_entries=64, max_size="16MB", show_spinner=False)
def _label_thumbnail(image_path: str, mtime_ns: int, mask_key: tuple[str, int] | None,
                     model_key: str, padding: str, tta: bool, backend: str, max_side: int,
                     _bundle: ModelBundle) -> np.ndarray:
    from app import viz
    from unet_core.inference import labels_from_probs

    bundle = _bundle
    image, probs = _file_probability(image_path, mtime_ns, model_key, padding, tta, backend,
                                     bundle)
    labels = labels_from_probs(probs, bundle.card.threshold)
    truth = _truth_of(Path(mask_key[0]) if mask_key else None, max(2, bundle.card.n_classes))
    if truth is not None and truth.shape != image.shape[:2]:
        truth = None
    return viz.label_thumbnail_rgb(image, labels, truth, max(2, bundle.card.n_classes),
                                   max_side=max_side)


# --------------------------------------------------------------------------- compare


@st.cache_resource(show_spinner=False)
def comparison_store() -> LRU:
    """Process-wide cache of Comparisons (two models on a data set) by (both model keys, data
    fingerprint, backends, thresholds, minimum areas, class, mask inversion, seed): 8 entries,
    64 MB."""
    return LRU(8, max_bytes=COMPARISON_CACHE_BYTES)


#: Byte bound of the comparison cache.
COMPARISON_CACHE_BYTES = 64 * 2**20

#: Colours of the disagreement map (Okabe-Ito: orange and blue differ in hue and lightness for
#: colour-blind readers, light gray is neutral): only A, only B, both; neither is the image.
ONLY_A_COLOR = (230, 159, 0)
ONLY_B_COLOR = (0, 114, 178)
BOTH_COLOR = (221, 221, 221)


def disagreement_legend() -> str:
    """The caption of :func:`disagreement_rgb` images."""
    return ("orange = only A · blue = only B · light gray = both · the dimmed image = neither")


def disagreement_rgb(image: np.ndarray, dmap: np.ndarray, max_side: int | None = None
                     ) -> np.ndarray:
    """uint8 (h, w, 3): the image (gray or colour, as decoded) dimmed, with the pixels of a
    disagreement map (uint8 (H, W): 0 neither, 1 only A, 2 only B, 3 both;
    :func:`unet_core.compare.disagreement_map`) painted in :data:`ONLY_A_COLOR`,
    :data:`ONLY_B_COLOR` and :data:`BOTH_COLOR`. ``max_side``: shown at every k-th pixel so it
    fits (a small image is enlarged by an integer factor up to it). Display only."""
    from app import viz
    from unet_core.preprocess import display_image

    img = display_image(np.asarray(image))
    k = 1 if max_side is None else viz.display_stride(img.shape, max_side)
    small, d = img[::k, ::k], np.asarray(dmap)[::k, ::k]
    if max_side is not None:
        factor = max(1, int(max_side) // max(small.shape[0], small.shape[1], 1))
        if factor > 1:
            small = np.repeat(np.repeat(small, factor, axis=0), factor, axis=1)
            d = np.repeat(np.repeat(d, factor, axis=0), factor, axis=1)
    out = viz.as_rgb(small) * 0.45
    for value, color in ((1, ONLY_A_COLOR), (2, ONLY_B_COLOR), (3, BOTH_COLOR)):
        out[d == value] = np.asarray(color, dtype=np.float32) / 255.0
    return viz.to_uint8(out)


def disagreement_thumbnail(image_path: Path, bundle_a: ModelBundle, bundle_b: ModelBundle, *,
                           backend_a: str, backend_b: str, threshold_a: float,
                           threshold_b: float, min_area_a: int, min_area_b: int,
                           class_index: int, max_side: int = 160) -> np.ndarray:
    """uint8 RGB thumbnail of a data-set image with the disagreement map of two models
    (:func:`disagreement_rgb`), each run as its card says (padding, TTA) at its threshold and
    minimum area. Cached per (file and its time, both models and cards, settings); the class
    probabilities under it per (file, model, padding, TTA, backend)."""
    return _disagreement_thumbnail(
        str(image_path), image_path.stat().st_mtime_ns, bundle_a.key, bundle_b.key,
        backend_a, backend_b, float(threshold_a), float(threshold_b), int(min_area_a),
        int(min_area_b), int(class_index), int(max_side), bundle_a, bundle_b)


@st.cache_data(max_entries=64, max_size="16MB", show_spinner=False)
def _disagreement_thumbnail(image_path: str, mtime_ns: int, key_a: str, key_b: str,
                            backend_a: str, backend_b: str, threshold_a: float,
                            threshold_b: float, min_area_a: int, min_area_b: int, k: int,
                            max_side: int, _a: ModelBundle, _b: ModelBundle) -> np.ndarray:
    from unet_core.compare import disagreement_map
    from unet_core.metrics import threshold_mask

    masks = []
    image = None
    for bundle, key, backend, t, area in ((_a, key_a, backend_a, threshold_a, min_area_a),
                                          (_b, key_b, backend_b, threshold_b, min_area_b)):
        card = bundle.card
        image, probs = _file_probability(image_path, mtime_ns, key, card.padding_mode,
                                         bool(card.tta), backend, bundle)
        masks.append(threshold_mask(class_map(probs, k), t, area))
    return disagreement_rgb(image, disagreement_map(masks[0], masks[1]), max_side)


# --------------------------------------------------------------------------- explain


@st.cache_resource(max_entries=1, show_spinner=False)
def get_grad_cam(model_key: str, padding: str, _loaded: LoadedModel) -> Any:
    """One :class:`~unet_core.explain.GradCam` (one gradient model over the Keras model's
    weights, outputting every selectable conv layer's maps and the logits) at a time. Keyed
    on the bundle's ``key`` (file *and* card: the card says how images are scaled) and the
    padding mode (a GradCam prepares images with its own); one model at a time, like
    :func:`get_probe`."""
    from unet_core.explain import GradCam

    LOG.info("gradient model: %s padding %s", model_key, padding)
    return GradCam(_loaded, padding_mode=padding)


_EXPLAIN_PASSES: dict[tuple[str, str, str], int] = {}


@st.cache_resource(max_entries=2, show_spinner=False)  # every layer's full-size map each
def _explanations(model_key: str, image_sha: str, padding: str, region_key: str,
                  class_index: int, background: bool, method: str, mask_key: str,
                  _grad_cam: Any, _image: np.ndarray, _region: Any, _prob: np.ndarray | None,
                  _threshold: float | None, _min_area: int | None) -> dict[str, Any]:
    LOG.info("gradient pass: model %s image %s padding %s region %s class %d%s method %s",
             model_key, image_sha[:12], padding, region_key, class_index,
             " (background)" if background else "", method)
    kw = dict(class_index=class_index, background=background, prob=_prob,
              threshold=_threshold, min_area=_min_area)
    if method == "saliency":
        out = {"input": _grad_cam.saliency(_image, _region, **kw)}
    else:
        out = dict(_grad_cam.explain(_image, _region, **kw))
    for exp in out.values():  # shared between sessions: read-only
        exp.cam.setflags(write=False)
        exp.mask.setflags(write=False)
    with _PASSES_LOCK:
        key = (model_key, image_sha, padding)
        _EXPLAIN_PASSES[key] = _EXPLAIN_PASSES.get(key, 0) + 1
    return out


def explanations(bundle: ModelBundle, item: ImageItem, image: np.ndarray, padding: str,
                 grad_cam: Any, region: Any, *, class_index: int, background: bool,
                 method: str, prob: np.ndarray | None, threshold: float, min_area: int,
                 tta: bool, backend: str) -> dict[str, Any]:
    """Every layer's :class:`~unet_core.explain.Explanation` of ``region`` (method
    "seg-grad-cam"; {"input": …} for "saliency") from ONE gradient pass, cached per (model
    and card, image sha256, padding, region, class, background, method) and, for the
    predicted-mask regions, the threshold, minimum area and the probabilities' TTA and
    backend: switching layers costs no pass.

    ``prob``: float32 (H, W) probability map of ``class_index`` (the Segment page's, from
    :func:`class_probabilities`): the predicted mask / component regions are cut from it.
    A region that is empty or outside the image raises its one-line UnetCoreError before
    any pass."""
    from unet_core.explain import region_mask

    masked = region.kind in ("mask", "component")
    # A region that is empty or outside the image is refused here, in one line, at no pass.
    region_mask(region, image.shape[:2], prob if masked else None, threshold, min_area)
    mask_key = f"t{float(threshold):.4f}:a{int(min_area)}:tta{bool(tta)}:{backend}" \
        if masked else ""
    return _explanations(bundle.key, item.sha, padding, region.key(), int(class_index),
                         bool(background), str(method), mask_key, grad_cam, image, region,
                         prob if masked else None, float(threshold) if masked else None,
                         int(min_area) if masked else None)


def explain_pass_count(bundle: ModelBundle, item: ImageItem, padding: str) -> int:
    """How many gradient passes this (model and card, image, padding) has cost so far."""
    with _PASSES_LOCK:
        return _EXPLAIN_PASSES.get((bundle.key, item.sha, padding), 0)
