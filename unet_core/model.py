"""Building and loading U-Nets, with the model card that says how to feed them.

A model card is a JSON file next to the model (``models/salt.keras`` -> ``models/salt.json``)
holding what a user needs to use the model honestly: what it segments, the input it expects,
its input normalisation and padding mode, the recommended threshold, the training data and its
terms, and validation metrics. A model without a card still loads; its card is then inferred from
the network's input shape and every inferred field is listed in ``card.inferred``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import budget
from .errors import ModelLoadError, ModelSpecError
from .onnx_graph import ONNX_EXTENSIONS, OnnxGraph, onnx_card_notes, read_graph
from .padding import PAD_MODES
from .preprocess import CHANNEL_ORDERS, FITS, NORMALISATIONS

__all__ = ["CHANNEL_ORDERS", "FITS", "NORMALISATIONS", "LoadedModel", "ModelCard", "load_model"]

MAX_INPUT_CHANNELS = 64
MAX_CLASSES = 256

MODEL_EXTENSIONS: tuple[str, ...] = (".keras", ".h5", ".hdf5", ".onnx")
KERAS_EXTENSIONS: tuple[str, ...] = (".keras", ".h5", ".hdf5")
_ACCEPTED_FILES = ".keras (Keras 3), .h5 (legacy Keras), arch .json + weights .h5, or .onnx"


@dataclass
class ModelCard:
    """How to use a segmentation model. Every field has a documented default.

    Attributes:
        name: short model name (the file stem by default).
        domain: e.g. "seismic", "microscopy", or "unknown".
        description: what the model segments, in one sentence.
        foreground: what a mask value of 1 means (e.g. "salt", "nucleus").
        input_size: fixed (height, width) the network needs, or None for a fully convolutional
            network that accepts any size that is a multiple of ``multiple_of``.
        multiple_of: the network's total stride; inputs are padded up to a multiple of it.
        min_size: smaller images are padded up to at least this size (the training size; e.g. 128
            for TGS, so 101x101 goes to 128x128 with 14 before / 13 after).
        channels: input channels the network takes (1 gray, 3 colour, 4 or N bands); images
            are mapped to them (:func:`unet_core.preprocess.map_channels`).
        channel_order: ``rgb`` or ``bgr`` (OpenCV-trained models) for 3+ channel inputs.
        normalisation: value scaling, one of :data:`NORMALISATIONS` (formulas in
            :mod:`unet_core.preprocess`): unit, raw, minmax, percentile, zscore, meanstd.
        mean, std: per-channel statistics on the 0..1 scale for ``meanstd`` (e.g. ImageNet's).
        percentiles: (low, high) percentiles for ``percentile`` (default 1, 99).
        fit: how an image meets the network: ``pad`` (pad to the stride, or tile a fixed-size
            network over the full-resolution image) or ``resize`` (resize the whole image to
            ``input_size`` bilinearly, predict, resize the probabilities back). None (default):
            chosen from the network when the card is loaded: resize for a fixed input size,
            pad for a fully convolutional network (the reason goes to ``notes``).
        padding_mode: default padding mode (see :mod:`unet_core.padding`).
        threshold: recommended probability threshold (foreground is ``prob > threshold``).
        min_area: minimum-area rule in pixels (0 = off): a thresholded mask with fewer
            foreground pixels is emptied as a whole (see :mod:`unet_core.metrics`); training
            picks it on validation together with the threshold.
        output: "probability" (sigmoid/softmax applied inside the model) or "logits" (the
            engine applies sigmoid to one output channel, softmax to K >= 2).
        classes: names of the K >= 2 softmax classes, index order ([] for one sigmoid channel).
        class_index: the class shown and thresholded by default (None: 1 for a softmax, the
            first class after the background, else 0).
        select_metric: metric that picks the best threshold in evaluation ("tgs_metric",
            "mean_iou", "mean_dice"; None: the one training used, else TGS for seismic and
            mean IoU otherwise, see :attr:`selection_metric`).
        layout: ``nchw`` or ``nhwc``: the axis order of an ONNX graph's image input (None:
            read from the graph, see :mod:`unet_core.onnx_graph`; Keras models are NHWC).
        tta: average the prediction with that of the horizontally flipped image.
        truth_inverted: the model's training data marks the *other* class in its masks (e.g. ISBI
            2012 EM masks mark cell interiors, the model segments membranes); evaluation then
            inverts ground-truth masks by default.
        architecture, training, metrics: free-form records written by training.
        inferred: names of fields that were guessed because no card was found.
        notes: why an inferred field has its value (field -> one sentence), e.g. the fit.
    """

    name: str = "model"
    domain: str = "unknown"
    description: str = ""
    foreground: str = "foreground"
    input_size: list[int] | None = None
    multiple_of: int = 1
    min_size: int = 0
    channels: int = 1
    channel_order: str = "rgb"
    normalisation: str = "unit"
    mean: list[float] | None = None
    std: list[float] | None = None
    percentiles: list[float] = field(default_factory=lambda: [1.0, 99.0])
    fit: str | None = None
    padding_mode: str = "reflect"
    threshold: float = 0.5
    min_area: int = 0
    output: str = "probability"
    classes: list[str] = field(default_factory=list)
    class_index: int | None = None
    select_metric: str | None = None
    layout: str | None = None
    tta: bool = False
    truth_inverted: bool = False
    architecture: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    inferred: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the card as pretty JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Build a card from a dict, ignoring unknown keys."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def n_classes(self) -> int:
        """Output channels: 1 for one sigmoid map, K for a K-class softmax."""
        return len(self.classes) if len(self.classes) >= 2 else 1

    @property
    def default_class(self) -> int:
        """The class shown and thresholded unless another is picked."""
        if self.class_index is not None:
            return int(self.class_index)
        return 1 if self.n_classes >= 2 else 0

    @property
    def foreground_name(self) -> str:
        """Name of the default class (``foreground`` for a sigmoid model)."""
        return self.class_name(self.default_class)

    def class_name(self, index: int) -> str:
        """Name of class ``index`` (the card's ``foreground`` for a one-channel model)."""
        return self.classes[index] if self.n_classes >= 2 else self.foreground

    @property
    def selection_metric(self) -> str:
        """Metric that picks the best threshold: ``select_metric``, else the one training
        recorded, else ``tgs_metric`` for seismic and ``mean_iou`` otherwise."""
        chosen = self.select_metric or self.metrics.get("selected_by")
        if isinstance(chosen, str) and chosen in ("tgs_metric", "mean_iou", "mean_dice"):
            return chosen
        return "tgs_metric" if self.domain == "seismic" else "mean_iou"

    @property
    def preprocessing(self) -> str:
        """One line: channels, order, scaling and fit, e.g. '3 channels (BGR), raw values,
        resized to 128x128 (bilinear)'."""
        ch = f"{self.channels} channel{'s' if self.channels != 1 else ''}"
        if self.channels >= 3:
            ch += f" ({self.channel_order.upper()})"
        scale = {
            "unit": "values / full scale (0..1)", "raw": "raw values (no scaling)",
            "minmax": "per-image min-max to 0..1",
            "percentile": (f"per-image {self.percentiles[0]:g}-{self.percentiles[1]:g} "
                           "percentile to 0..1"),
            "zscore": "per-image z-score", "meanstd": (f"(x/full scale - mean {self.mean}) / std "
                                                       f"{self.std}"),
        }.get(self.normalisation, self.normalisation)
        if self.fit == "resize" and self.input_size:
            fit = (f"resized to {self.input_size[0]}x{self.input_size[1]} (bilinear) and the "
                   "probabilities resized back")
        elif self.input_size:
            fit = f"padded to {self.input_size[0]}x{self.input_size[1]}, tiled when larger"
        else:
            fit = f"padded to a multiple of {self.multiple_of}"
        return f"{ch}, {scale}, {fit}"

    @property
    def input_spec(self) -> str:
        """Human-readable input spec, e.g. '128x128', 'any multiple of 16' or '256x256 (NCHW)'
        (the axis order is named for ONNX graphs)."""
        tail = f" ({self.layout.upper()})" if isinstance(self.layout, str) else ""
        if self.input_size:
            return f"{self.input_size[0]}x{self.input_size[1]}{tail}"
        spec = f"any multiple of {self.multiple_of}"
        if self.min_size:
            spec += f" (smaller images padded to {self.min_size})"
        return spec + tail


def card_path_for(model_path: str | os.PathLike) -> Path:
    """``models/salt.keras`` -> ``models/salt.json``; an architecture ``arch.json`` (loaded with
    its weights) -> ``arch.card.json``."""
    p = Path(model_path)
    return p.with_suffix(".card.json") if p.suffix.lower() == ".json" else p.with_suffix(".json")


def build_unet(
    input_channels: int = 1,
    base_filters: int = 16,
    depth: int = 4,
    residual: bool = True,
    batch_norm: bool = True,
    dropout: float = 0.2,
    kernel_size: int = 3,
    output_activation: str = "sigmoid",
    input_size: tuple[int, int] | None = None,
    name: str = "unet",
    n_classes: int = 1,
):
    """A U-Net as a short loop over filter widths ``base_filters * 2**level``.

    Args:
        input_channels: channels of the input image (1 for grayscale).
        base_filters: filters of the first level; level ``i`` has ``base_filters * 2**i``.
        depth: number of 2x downsamplings; the network's stride is ``2**depth``.
        residual: use residual blocks (two 3x3 convs + 1x1 projection shortcut).
        batch_norm: batch normalisation after each convolution.
        dropout: dropout rate at the bottleneck (0 disables).
        kernel_size: convolution kernel size.
        output_activation: "sigmoid" (one map) or "softmax" (K classes) for probabilities,
            "linear" for logits.
        input_size: fixed (H, W), or None for a fully convolutional network (any multiple of
            the stride).
        name: Keras model name.
        n_classes: output channels: 1 (one map) or K >= 2 classes.

    Returns:
        keras.Model mapping (N, H, W, input_channels) float32 to (N, H, W, n_classes) float32.
    """
    import keras
    from keras import layers

    def conv_bn_relu(x, filters: int, tag: str):
        x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=not batch_norm,
                          kernel_initializer="he_normal", name=f"{tag}_conv")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{tag}_bn")(x)
        return layers.Activation("relu", name=f"{tag}_relu")(x)

    def block(x, filters: int, tag: str):
        shortcut = x
        y = conv_bn_relu(x, filters, f"{tag}a")
        y = conv_bn_relu(y, filters, f"{tag}b")
        if residual:
            if shortcut.shape[-1] != filters:
                shortcut = layers.Conv2D(filters, 1, padding="same", name=f"{tag}_proj")(shortcut)
            y = layers.Add(name=f"{tag}_add")([y, shortcut])
        return y

    h, w = input_size if input_size else (None, None)
    inputs = keras.Input(shape=(h, w, input_channels), name="image")
    x = inputs
    skips = []
    for level in range(depth):
        x = block(x, base_filters * 2**level, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = block(x, base_filters * 2**depth, "bottleneck")
    if dropout > 0:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
        x = block(x, filters, f"dec{level}")
    outputs = layers.Conv2D(n_classes, 1, activation=output_activation, name="mask")(x)
    return keras.Model(inputs, outputs, name=name)


@dataclass
class LoadedModel:
    """A loaded model (Keras, or an ONNX graph) with its card and where it came from."""

    model: Any  # keras.Model, or an unet_core.onnx_graph.OnnxGraph for a .onnx file
    card: ModelCard
    path: Path | None = None
    card_found: bool = False
    weights_path: Path | None = None  # the weights of an architecture .json
    trusted: bool = False  # loaded with safe_mode=False (Python code in the file may have run)

    @property
    def name(self) -> str:
        return self.card.name


def _sniff(path: Path) -> str:
    """Classify a model file by its magic bytes: 'zip', 'hdf5', 'pickle' or 'unknown'."""
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(b"PK"):
        return "zip"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head[:1] == b"\x80" and len(head) > 1 and head[1:2] in b"\x02\x03\x04\x05":
        return "pickle"
    return "unknown"


UNSAFE_H5_CLASSES: tuple[str, ...] = ("Lambda", "TFOpLambda", "SlicingOpLambda")
# TFSMLayer loads a TensorFlow SavedModel (a graph) from a path outside the file
_UNSAFE_CLASSES: frozenset[str] = frozenset({*UNSAFE_H5_CLASSES, "__lambda__", "TFSMLayer"})
_MAX_CONFIG_BYTES = 64 << 20  # a U-Net's config.json is ~100 KB
_MAX_ZIP_RATIO = 100.0  # Keras stores members uncompressed (ratio ~1); same limit as Keras's
_MIN_RATIO_CHECK_BYTES = 64 << 10  # members this big or bigger must not be over _MAX_ZIP_RATIO
MAX_ARCHIVE_MEMBERS = 64  # a .keras holds 3 (config, metadata, weights)
DEFAULT_MAX_UNPACKED_MB = 2048


def max_unpacked_bytes() -> int:
    """Largest total uncompressed size of a .keras archive: ``UNET_MAX_MODEL_UNPACKED_MB``
    (default 2048) MB."""
    return budget._env_int("UNET_MAX_MODEL_UNPACKED_MB", DEFAULT_MAX_UNPACKED_MB) << 20
_REFUSED_CODE = ("such layers and classes hold or import Python code that would run on load. "
                 "Accepted: models built from standard Keras layers")


def _unsafe_entries(config: Any, skip_root_compile: bool = False) -> list[str]:
    """Lambda layers, serialised lambdas and non-Keras classes named anywhere in a config.

    Walks iteratively (a hostile config can be nested deeper than Python's recursion limit).
    ``skip_root_compile`` skips the top-level ``compile_config`` of a .keras config, which
    Keras drops when loading with compile=False (a trained model's custom loss lives there);
    nested ones are deserialised, so they are checked.
    """
    found: set[str] = set()
    if skip_root_compile and isinstance(config, dict):
        config = {k: v for k, v in config.items() if k != "compile_config"}
    stack: list[Any] = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            cls = node.get("class_name")
            if isinstance(cls, str) and cls in _UNSAFE_CLASSES:
                found.add(cls)
            module = node.get("module")
            if isinstance(module, str) and not (module == "keras" or module.startswith("keras.")):
                found.add(f"{cls} (module {module})")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return sorted(found)


def _parse_config(raw: Any, what: str) -> Any:
    """json.loads with every failure (bad type, bad JSON, too deep) as ModelLoadError."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        raise ModelLoadError(f"{what} is not a JSON string (found {type(raw).__name__})")
    try:
        return json.loads(raw)
    except RecursionError:
        raise ModelLoadError(f"{what} is not valid JSON (too deeply nested)") from None
    except ValueError:
        raise ModelLoadError(f"{what} is not valid JSON") from None


def check_legacy_h5(path: Path, *, allow_code: bool = False) -> None:
    """Refuse a legacy .h5 model whose config holds Lambda layers or custom (non-Keras) classes.

    Legacy HDF5 models store Lambda layers as marshalled Python bytecode, which runs on load.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(
            f"{path.name}: not a readable HDF5 model file ({_one_line(exc)})") from None
    if raw is None:
        raise ModelLoadError(
            f"{path.name}: HDF5 file holds weights only (no model config); give its "
            "architecture too: --model arch.json --weights "
            f"{path.name} (arch.json from model.to_json()), or save the whole model with "
            "model.save('model.keras')"
        )
    config = _parse_config(raw, f"{path.name}: HDF5 model config")
    found = [] if allow_code else _unsafe_entries(config)
    if found:
        raise ModelLoadError(
            f"{path.name}: refused: legacy .h5 model contains {', '.join(found)}; such "
            "layers hold Python code that would run on load; accepted: models built from "
            f"standard Keras layers; {TRUST_HINT}"
        )
    budget.check_config(config, path.name, extra_params=_h5_weights(path, path.name))


def _h5_weights(path: Path, label: str) -> int:
    """Weights declared by the datasets of an HDF5 file (shapes only, no data read)."""
    try:
        return budget.h5_weight_count(path)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{label}: {exc}") from None
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(
            f"{label}: not a readable HDF5 weights file ({_one_line(exc)})") from None


def check_keras_zip(path: Path, name: str | None = None, *, allow_code: bool = False) -> None:
    """Refuse a ``.keras`` archive that is malformed, a zip bomb, or (unless ``allow_code``)
    whose config.json names Lambda layers, serialised lambdas or non-Keras classes. Runs
    before Keras reads the archive, so a refusal never depends on how Keras handles it.
    """
    path = Path(path)
    label = name or path.name
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if len(names) != len(set(names)):
                dup = sorted({n for n in names if names.count(n) > 1})
                raise ModelLoadError(
                    f"{label}: refused: the archive holds duplicate members {dup[:3]} "
                    "(accepted: a .keras file written by model.save)")
            if len(infos) > MAX_ARCHIVE_MEMBERS:
                raise ModelLoadError(
                    f"{label}: refused: the archive holds {len(infos):,} members (accepted: up "
                    f"to {MAX_ARCHIVE_MEMBERS}; a .keras file written by model.save holds 3)")
            total = sum(i.file_size for i in infos)
            limit = max_unpacked_bytes()
            if total > limit:
                raise ModelLoadError(
                    f"{label}: refused: the archive unpacks to {total / 2**20:,.0f} MB (limit "
                    f"{limit >> 20:,} MB, UNET_MAX_MODEL_UNPACKED_MB)")
            for info in infos:
                ratio = info.file_size / max(info.compress_size, 1)
                if info.file_size >= _MIN_RATIO_CHECK_BYTES and ratio > _MAX_ZIP_RATIO:
                    raise ModelLoadError(
                        f"{label}: refused: archive member {info.filename!r} has compression "
                        f"ratio {ratio:,.0f}:1 (possible zip bomb; accepted: up to "
                        f"{_MAX_ZIP_RATIO:,.0f}:1)")
            bad = zf.testzip()  # every member's CRC (sizes bounded above)
            if bad is not None:
                raise ModelLoadError(
                    f"{label}: refused: archive member {bad!r} is damaged (its CRC does not "
                    "match; accepted: a .keras file written by model.save)")
            if "config.json" not in names:
                raise ModelLoadError(
                    f"{label}: not a Keras 3 model: the archive has no config.json")
            info = zf.getinfo("config.json")
            if info.file_size > _MAX_CONFIG_BYTES:
                raise ModelLoadError(
                    f"{label}: refused: config.json is {info.file_size:,} bytes (accepted: up "
                    f"to {_MAX_CONFIG_BYTES:,})")
            with zf.open(info) as f:
                raw = f.read(_MAX_CONFIG_BYTES + 1)
    except ModelLoadError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            NotImplementedError, RuntimeError) as exc:
        raise ModelLoadError(
            f"{label}: not a readable Keras 3 archive ({_one_line(exc)})") from None
    config = _parse_config(raw, f"{label}: config.json")
    if not isinstance(config, dict):
        raise ModelLoadError(f"{label}: config.json does not describe a model (not an object)")
    found = [] if allow_code else _unsafe_entries(config, skip_root_compile=True)
    if found:
        raise ModelLoadError(
            f"{label}: refused: model config contains {', '.join(found)}; {_REFUSED_CODE}; "
            f"{TRUST_HINT}")
    budget.check_config(config, label)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


_KERAS_TMP_LOCK = threading.Lock()


@contextlib.contextmanager
def _keras_readable_path(p: Path) -> Iterator[Path]:
    """A link to ``p`` with a lower-case suffix (Keras only knows .keras/.h5/.hdf5) inside a
    private temporary folder where Keras also unpacks the archive; the folder is always
    removed afterwards, also when Keras fails half-way (it abandons its own folders then).
    Loads are serialised by a lock while Keras's temporary-folder function is redirected."""
    suffix = p.suffix.lower()
    with _KERAS_TMP_LOCK, tempfile.TemporaryDirectory(prefix="unet_model_",
                                                      ignore_cleanup_errors=True) as tmp:
        alias = Path(tmp) / f"model{suffix}"
        try:
            alias.symlink_to(p.resolve())
        except OSError:
            shutil.copyfile(p, alias)
        saving_lib: Any = None
        original = None
        try:
            from keras.src.saving import saving_lib

            original = getattr(saving_lib, "get_temp_dir", None)
        except ImportError:  # another Keras layout: nothing to redirect
            saving_lib = None
        if original is not None:
            def private_temp_dir() -> str:
                return tempfile.mkdtemp(dir=tmp)

            saving_lib.get_temp_dir = private_temp_dir
        try:
            yield alias
        finally:
            if original is not None:
                saving_lib.get_temp_dir = original


def _own_stride(layer: Any) -> int:
    """Downsampling factor of one layer (x axis): pooling size or conv stride; a nested model's
    own total stride."""
    if hasattr(layer, "layers") and hasattr(layer, "inputs"):
        return _downsampling_stride(layer)
    cfg = layer.get_config() if hasattr(layer, "get_config") else {}
    cls = type(layer).__name__
    if cls in ("MaxPooling2D", "AveragePooling2D"):
        ps = cfg.get("strides") or cfg.get("pool_size") or (2, 2)
        return int(ps[0] if isinstance(ps, (list, tuple)) else ps)
    if cls in ("Conv2D", "SeparableConv2D", "DepthwiseConv2D"):
        s = cfg.get("strides", (1, 1))
        return int(s[0] if isinstance(s, (list, tuple)) else s)
    return 1


def _downsampling_stride(model: Any) -> int:
    """Total stride of the network (x axis): the largest product of downsampling factors along
    any path from the input, so parallel branches (e.g. the members of an ensemble) are not
    multiplied together. Falls back to the product over all layers if the graph is unreadable.
    An ONNX graph's stride comes from its inferred shapes.
    """
    if isinstance(model, OnnxGraph):
        return model.stride()
    reached: dict[int, int] = {}
    try:
        for layer in model.layers:
            parents = [t._keras_history.operation for node in layer._inbound_nodes
                       for t in node.input_tensors]
            before = max((reached.get(id(p), 1) for p in parents), default=1)
            reached[id(layer)] = before * _own_stride(layer)
        return max([1, *reached.values()])
    except (AttributeError, TypeError):
        stride = 1
        for layer in model.layers:
            stride *= _own_stride(layer)
        return max(1, stride)


def _layer_activation(layer: Any, depth: int = 0) -> str:
    """The activation a layer's output has passed through last ("" when unknown).

    An averaging/merging layer (Average, Maximum, Minimum, e.g. an ensemble's mean) has its
    inputs' activation when they all agree; Activation/Softmax layers name theirs.
    """
    cls = type(layer).__name__
    if cls == "Softmax":
        return "softmax"
    if cls in ("Average", "Maximum", "Minimum") and depth < 8:
        try:
            parents = [t._keras_history.operation for node in layer._inbound_nodes
                       for t in node.input_tensors]
        except (AttributeError, TypeError):
            return ""
        acts = {_layer_activation(p, depth + 1) for p in parents}
        return acts.pop() if len(acts) == 1 else ""
    if hasattr(layer, "layers") and hasattr(layer, "outputs") and depth < 8:
        try:  # a nested model: its own last layer
            return _layer_activation(layer.layers[-1], depth + 1)
        except (AttributeError, IndexError, TypeError):
            return ""
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", "") or ""


def _last_activation(model: Any) -> str:
    """Name of the final activation ("sigmoid", "softmax", "linear", ...) or ""."""
    if isinstance(model, OnnxGraph):
        return {"Sigmoid": "sigmoid", "Softmax": "softmax"}.get(model.last_op,
                                                                model.last_op.lower())
    try:
        return _layer_activation(model.layers[-1])
    except (AttributeError, IndexError, TypeError):
        return ""


def network_io(model: Any) -> tuple[tuple, tuple]:
    """(input shape, output shape) of a validated model, e.g. ((None, 128, 128, 3),
    (None, 128, 128, 6)); NHWC terms for an ONNX graph whatever its layout."""
    if isinstance(model, OnnxGraph):
        return model.network_io()
    return tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)


def infer_card(model: Any, name: str) -> ModelCard:
    """Card inferred from the network (fields listed in ``inferred``, reasons in ``notes``).

    Channels from the input, classes from the output channels (one sigmoid map, or K >= 2
    softmax classes named "class 0".. "class K-1"; a 2-class softmax is background/foreground),
    logits when the last layer has no sigmoid/softmax, and the fit: a fixed-size network is
    fed whole images resized to its input (what training code for such networks does), a
    fully convolutional one padded images.
    """
    shape, out = network_io(model)
    h, w, channels = shape[1], shape[2], int(shape[3])
    k = int(out[-1])
    act = _last_activation(model)
    fixed = h is not None and w is not None
    card = ModelCard(
        name=name,
        description="No model card was found; settings below are inferred from the network.",
        input_size=[int(h), int(w)] if fixed else None,
        multiple_of=_downsampling_stride(model),
        channels=channels,
        output="probability" if act in ("sigmoid", "softmax") else "logits",
        fit="resize" if fixed else "pad",
    )
    if k == 2:
        card.classes = ["background", "foreground"]
    elif k > 2:
        card.classes = [f"class {i}" for i in range(k)]
    card.inferred = ["input_size", "multiple_of", "channels", "channel_order", "normalisation",
                     "fit", "padding_mode", "threshold", "output", "classes"]
    if isinstance(model, OnnxGraph):
        card.layout = model.layout
        card.inferred.append("layout")
    card.notes = {
        "channels": f"the network's input has {channels} channel{'s' if channels != 1 else ''}",
        "channel_order": "RGB assumed; set bgr for a model trained on OpenCV (cv2.imread) images",
        "normalisation": "unit (values / full scale, 0..1) assumed; set raw, minmax, percentile, "
                         "zscore or meanstd to match how the model was trained",
        "fit": (f"resize: the network takes a fixed {h}x{w} input, and code for such networks "
                "resizes whole images to it; set pad to tile full-resolution images instead"
                if fixed else "pad: the network is fully convolutional, so images are padded "
                f"to a multiple of its stride ({card.multiple_of}), never resized"),
        "output": (f"the last layer applies {act}" if act in ("sigmoid", "softmax") else
                   f"the last layer has no sigmoid or softmax ({act or 'unknown'}): its outputs "
                   f"are logits, the engine applies {'sigmoid' if k == 1 else 'softmax'}"),
        **(onnx_card_notes(model) if isinstance(model, OnnxGraph) else {}),
        "classes": ("one output channel: a binary map" if k == 1 else
                    f"{k} output channels; class names unknown, name them in the card"),
    }
    return card


def validate_model(model: Any, name: str) -> None:
    """Raise ModelSpecError unless the model maps one (N, H, W, C) image to one (N, H, W, K) map.

    Accepted: C in 1..64 input channels, K in 1..256 output channels (one sigmoid map or K
    classes), and an output of the input's spatial size when both are fixed.
    """
    accepted = "one image input (N, H, W, C) and one output (N, H, W, K) of the same size"
    try:
        inputs = list(model.inputs)
        outputs = list(model.outputs)
    except (AttributeError, TypeError, ValueError):
        raise ModelSpecError(
            f"{name}: model has no defined inputs or outputs (e.g. a Sequential saved before it "
            f"was built); accepted: {accepted}") from None
    if len(inputs) != 1:
        raise ModelSpecError(f"{name}: model has {len(inputs)} inputs; accepted: {accepted}")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ModelSpecError(f"{name}: model input has shape {shape}; accepted: {accepted}")
    if shape[-1] is None or not 1 <= int(shape[-1]) <= MAX_INPUT_CHANNELS:
        raise ModelSpecError(
            f"{name}: model input {shape} has {shape[-1]} channels; accepted: 1 to "
            f"{MAX_INPUT_CHANNELS} channels, last axis (channels_last)")
    if len(outputs) != 1:
        raise ModelSpecError(f"{name}: model has {len(outputs)} outputs; accepted: {accepted}")
    try:
        structure = model.output
    except (AttributeError, TypeError, ValueError):
        structure = None
    if isinstance(structure, dict):
        raise ModelSpecError(
            f"{name}: model returns a dict of outputs ({', '.join(map(str, structure))}); "
            f"accepted: {accepted}")
    out = tuple(outputs[0].shape)
    if len(out) != 4 or out[-1] is None or not 1 <= int(out[-1]) <= MAX_CLASSES:
        raise ModelSpecError(
            f"{name}: model output has shape {out}; accepted: one map (N, H, W, 1) or K class "
            f"maps (N, H, W, K), K <= {MAX_CLASSES}")
    if all(v is not None for v in (*shape[1:3], *out[1:3])) and out[1:3] != shape[1:3]:
        raise ModelSpecError(
            f"{name}: model output is {out[1]}x{out[2]} for a {shape[1]}x{shape[2]} input; "
            "accepted: an output of the input's height and width (a segmentation network)")


_NETWORK_FIELDS = ("channels", "input_size", "multiple_of", "output", "fit", "layout")


def stated_fields(card: ModelCard) -> set[str]:
    """Fields a card *object* states: all but the network-shape fields (channels, input_size,
    multiple_of, fit) it leaves at their defaults, which the network then fills."""
    defaults = ModelCard().to_dict()
    return {k for k, v in card.to_dict().items()
            if k not in ("channels", "input_size", "multiple_of", "fit", "layout")
            or v != defaults.get(k)}


def reconcile_card(card: ModelCard, model: Any, name: str, given: set[str] | None = None,
                   error: type[Exception] = ModelLoadError) -> ModelCard:
    """Fill the fields a card leaves out from the network, check it, and check it agrees.

    ``given``: the field names the card file states (None: all of them). Channels, input size,
    stride and output kind not stated are taken from the network; a 2-class softmax without
    class names becomes background / ``foreground``. A bad field value raises ``error``
    (:func:`check_card`); a card that contradicts the network (channels, class count) or
    names no classes for K >= 3 raises ModelSpecError.
    """
    inferred = infer_card(model, card.name if isinstance(card.name, str) else "model")
    given = set(card.to_dict()) if given is None else given
    for key in _NETWORK_FIELDS:
        if key not in given or (key in ("fit", "layout") and getattr(card, key) is None):
            setattr(card, key, getattr(inferred, key))
            if key in inferred.notes and isinstance(card.notes, dict):
                card.notes.setdefault(key, inferred.notes[key])
    shape, out = network_io(model)
    c, k = int(shape[-1]), int(out[-1])
    if k == 2 and card.classes == []:
        card.classes = ["background", card.foreground if isinstance(card.foreground, str)
                        else "foreground"]
    check_card(card, name, error)
    _note_output_kind(card, model)
    if card.channels != c:
        raise ModelSpecError(
            f"{name}: the card says channels = {card.channels} but the network takes {c}; "
            f"accepted: channels = {c}")
    if k == 1 and card.classes:
        raise ModelSpecError(
            f"{name}: the card names {len(card.classes)} classes but the network has one output "
            "channel (a binary map); accepted: no classes (use foreground to name it)")
    if k > 2 and not card.classes:
        raise ModelSpecError(
            f"{name}: the network has a {k}-class output but its card names no classes; "
            f"accepted: \"classes\": [{k} names in output order] in the card")
    if k >= 2 and len(card.classes) != k:
        raise ModelSpecError(
            f"{name}: the card names {len(card.classes)} classes but the network outputs {k}; "
            f"accepted: {k} class names in output order")
    return card


def _note_output_kind(card: ModelCard, model: Any) -> None:
    """When the card's ``output`` contradicts the network's last activation, say so in
    ``card.notes["output"]`` (shown by ``inspect`` and the Model page): a sigmoid applied twice,
    or logits read as probabilities, skews every threshold."""
    act = _last_activation(model)
    if not act or not isinstance(card.notes, dict):
        return
    ends = act in ("sigmoid", "softmax")
    if card.output == "logits" and ends:
        card.notes["output"] = (f"check the card: it says logits, but the network already ends "
                                f"in {act}, so the engine applies it a second time")
    elif card.output == "probability" and not ends:
        card.notes["output"] = (f"check the card: it says probability, but the network's last "
                                f"op is {act} (no sigmoid or softmax), so its outputs are "
                                "probably logits")


def _read_card_dict(model_path: Path) -> dict[str, Any] | None:
    """The card file next to ``model_path`` as a dict, or None when there is none."""
    cpath = card_path_for(model_path)
    if not cpath.is_file():
        return None
    try:
        if cpath.stat().st_size > _MAX_CARD_BYTES:
            raise ModelLoadError(
                f"{cpath.name}: model card is over {_MAX_CARD_BYTES:,} bytes; accepted: a "
                "JSON card of a few KB")
        data = json.loads(cpath.read_text())
    except RecursionError:
        raise ModelLoadError(
            f"{cpath.name}: model card is not valid JSON (too deeply nested)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"{cpath.name}: model card is not valid JSON ({_one_line(exc)})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{cpath.name}: model card must be a JSON object")
    return data


def card_from_dict(data: dict[str, Any], name: str,
                   error: type[Exception] = ModelLoadError) -> ModelCard:
    """A checked card from a dict (e.g. an uploaded or edited card); unknown keys ignored."""
    try:
        card = ModelCard.from_dict(data)
    except TypeError as exc:
        raise error(f"{name}: not a model card ({_one_line(exc)})") from None
    check_card(card, name, error)
    return card


def load_card(model_path: Path) -> ModelCard | None:
    """Read the card next to ``model_path`` if there is one (checked, not reconciled)."""
    data = _read_card_dict(Path(model_path))
    if data is None:
        return None
    return card_from_dict(data, card_path_for(model_path).name)


_MAX_CARD_BYTES = 1 << 20


MAX_CARD_SIDE = budget._env_int("UNET_MAX_INPUT_SIDE", 4096)
"""Largest ``input_size`` side / ``min_size`` a card may ask for (every image is padded to it):
``UNET_MAX_INPUT_SIDE``, default 4096."""


def check_card(card: ModelCard, name: str, error: type[Exception] = ModelLoadError) -> None:
    """Raise ``error`` naming the first card field whose type or value is unusable.

    Bounds that protect the engine: every image is padded up to ``input_size`` /
    ``min_size`` (at most :data:`MAX_CARD_SIDE`) and to a multiple of ``multiple_of``
    (at most 1024).
    """

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def bad(field_name: str, accepted: str) -> Exception:
        value = repr(getattr(card, field_name))
        value = value if len(value) <= 60 else value[:57] + "..."
        return error(
            f"{name}: model card field {field_name} = {value} is invalid (accepted: {accepted})")

    for text in ("name", "domain", "description", "foreground"):
        if not isinstance(getattr(card, text), str):
            raise bad(text, "a string")
    size = card.input_size
    if size is not None and (
        not isinstance(size, list | tuple) or len(size) != 2
        or not all(is_int(v) and 1 <= v <= MAX_CARD_SIDE for v in size)
    ):
        raise bad("input_size", f"null or [height, width] with sides 1..{MAX_CARD_SIDE} "
                                "(UNET_MAX_INPUT_SIDE)")
    if not is_int(card.multiple_of) or not 1 <= card.multiple_of <= 1024:
        raise bad("multiple_of", "an integer 1..1024")
    if not is_int(card.min_size) or not 0 <= card.min_size <= MAX_CARD_SIDE:
        raise bad("min_size", f"an integer 0..{MAX_CARD_SIDE} (UNET_MAX_INPUT_SIDE)")
    if not is_int(card.channels) or not 1 <= card.channels <= MAX_INPUT_CHANNELS:
        raise bad("channels", f"an integer 1..{MAX_INPUT_CHANNELS}")
    if card.channel_order not in CHANNEL_ORDERS:
        raise bad("channel_order", ", ".join(CHANNEL_ORDERS))
    if card.normalisation not in NORMALISATIONS:
        raise bad("normalisation", ", ".join(NORMALISATIONS))

    def is_num(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    for stat in ("mean", "std"):
        v = getattr(card, stat)
        if v is not None and (not isinstance(v, list) or len(v) not in (1, card.channels)
                              or not all(is_num(x) for x in v)):
            raise bad(stat, f"null or a list of 1 or {card.channels} numbers (one per channel)")
    if card.normalisation == "meanstd":
        if card.mean is None or card.std is None:
            raise bad("mean" if card.mean is None else "std",
                      "per-channel numbers on the 0..1 scale for meanstd, e.g. ImageNet mean "
                      "[0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]")
        if any(abs(x) > 1.5 for x in card.mean):
            raise bad("mean", "numbers on the 0..1 scale (divide 0-255 statistics by 255)")
        if any(x <= 0 for x in card.std):
            raise bad("std", "positive numbers on the 0..1 scale")
    p = card.percentiles
    if (not isinstance(p, list | tuple) or len(p) != 2 or not all(is_num(x) for x in p)
            or not 0 <= p[0] < p[1] <= 100):
        raise bad("percentiles", "[low, high] with 0 <= low < high <= 100")
    if card.fit is not None and card.fit not in FITS:
        raise bad("fit", "null (from the network), " + ", ".join(FITS))
    if card.fit == "resize" and not card.input_size:
        raise bad("fit", "pad for a network without a fixed input_size (resize needs one)")
    cls = card.classes
    if (not isinstance(cls, list) or len(cls) == 1 or len(cls) > MAX_CLASSES
            or not all(isinstance(c, str) and c.strip() for c in cls)
            or len(set(cls)) != len(cls)):
        raise bad("classes", f"[] (one sigmoid map) or 2..{MAX_CLASSES} distinct names")
    ci = card.class_index
    if ci is not None and (not is_int(ci) or not 0 <= ci < card.n_classes):
        raise bad("class_index", f"null or an integer 0..{card.n_classes - 1}")
    if card.layout is not None and card.layout not in ("nchw", "nhwc"):
        raise bad("layout", "null (from the graph), nchw or nhwc")
    if card.select_metric is not None and card.select_metric not in (
            "tgs_metric", "mean_iou", "mean_dice"):
        raise bad("select_metric", "null, tgs_metric, mean_iou or mean_dice")
    if not isinstance(card.notes, dict):
        raise bad("notes", "an object of field -> text")
    if card.padding_mode not in PAD_MODES:
        raise bad("padding_mode", ", ".join(PAD_MODES))
    t = card.threshold
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 <= t <= 1.0:
        raise bad("threshold", "a number 0..1")
    if not is_int(card.min_area) or card.min_area < 0:
        raise bad("min_area", "a whole number of pixels >= 0 (0 = off)")
    if card.output not in ("probability", "logits"):
        raise bad("output", "probability, logits")
    if not isinstance(card.tta, bool):
        raise bad("tta", "true or false")
    for record in ("architecture", "training", "metrics"):
        if not isinstance(getattr(card, record), dict):
            raise bad(record, "a JSON object")
    if not isinstance(card.inferred, list):
        raise bad("inferred", "a list of field names")


TRUST_HINT = ("if you trust this file and its author, load it with --trust-model (CLI) or put it "
              "in the folder named by UNET_TRUSTED_MODELS_DIR (dashboard)")
_RESAVE_HINT = ("re-save it with the Keras 2 that made it: open('arch.json', 'w')"
                ".write(model.to_json()); model.save_weights('weights.h5'), then load both with "
                "--model arch.json --weights weights.h5")
ARCH_EXTENSIONS: tuple[str, ...] = (".json",)


def _h5_keras_version(path: Path) -> str:
    """The ``keras_version`` attribute of a legacy HDF5 file ("" when absent/unreadable)."""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            v = f.attrs.get("keras_version", "")
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:  # noqa: BLE001 - only used to word a message
        return ""


def _check_file(p: Path, label: str) -> str:
    """Existence, emptiness and magic-bytes kind of a model file ('zip', 'hdf5', ...)."""
    if not p.is_file():
        raise ModelLoadError(f"{label}: model file not found")
    try:
        if p.stat().st_size == 0:
            raise ModelLoadError(f"{label}: model file is empty (0 bytes)")
        return _sniff(p)
    except OSError as exc:
        raise ModelLoadError(f"{label}: cannot read model file ({_one_line(exc)})") from None


def _model_from_json(p: Path, weights: Path, label: str, safe_mode: bool) -> Any:
    """Rebuild a model from ``model.to_json()`` text (Keras 3 or Keras 2) and load its
    weights (Keras 2 ``save_weights`` .h5, a whole legacy .h5 model, or Keras 3 .weights.h5)."""
    import h5py
    import keras

    if p.stat().st_size > _MAX_CONFIG_BYTES:
        raise ModelLoadError(f"{label}: architecture JSON is over {_MAX_CONFIG_BYTES:,} bytes")
    config = _parse_config(p.read_bytes(), f"{label}: architecture")
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelLoadError(
            f"{label}: not a model architecture (accepted: the JSON of model.to_json())")
    found = [] if not safe_mode else _unsafe_entries(config)
    if found:
        raise ModelLoadError(
            f"{label}: refused: architecture contains {', '.join(found)}; {_REFUSED_CODE}; "
            f"{TRUST_HINT}")
    wlabel = weights.name
    if _check_file(weights, wlabel) != "hdf5":
        raise ModelLoadError(f"{wlabel}: weights must be an HDF5 file (.h5, from save_weights)")
    budget.check_config(config, label)
    declared = _h5_weights(weights, wlabel)
    if declared > budget.max_params():
        raise ModelLoadError(
            f"{wlabel}: refused: it declares {declared:,} weights (limit "
            f"{budget.max_params():,}, UNET_MAX_PARAMS)")
    try:
        if config.get("module"):  # Keras 3 JSON names each class's module
            model = keras.models.model_from_json(json.dumps(config))
        else:  # Keras 2 JSON: class names without modules
            from keras.src.legacy.saving import saving_utils

            model = saving_utils.model_from_config(config)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types; report one line
        raise ModelLoadError(
            f"{label}: Keras 3 could not rebuild this architecture ({_one_line(exc, 200)})"
        ) from None
    try:
        if weights.name.lower().endswith(".weights.h5"):
            model.load_weights(weights)
        else:
            from keras.src.legacy.saving import legacy_h5_format

            with h5py.File(weights, "r") as f:
                group = f.get("model_weights", f)
                legacy_h5_format.load_weights_from_hdf5_group(group, model)
    except Exception as exc:  # noqa: BLE001 - mismatched weights, missing layers...
        raise ModelLoadError(
            f"{wlabel}: these weights do not fit {label} ({_one_line(exc, 200)}); accepted: "
            "the save_weights file of the same model") from None
    return model


def load_model(path: str | os.PathLike, *, safe_mode: bool = True,
               card: ModelCard | None = None, name: str | None = None,
               weights: str | os.PathLike | None = None) -> LoadedModel:
    """Load a Keras 3 ``.keras``, a legacy ``.h5``, an architecture ``.json`` + weights, or an
    ONNX graph ``.onnx`` (:mod:`unet_core.onnx_graph`; ``model`` is then an OnnxGraph).

    Args:
        path: the model file, or ``model.to_json()`` text saved as ``.json`` (then ``weights``).
        safe_mode: True (the default) refuses Lambda layers and custom classes, whose Python
            code would run on load. False trusts the file (CLI ``--trust-model``; the
            dashboard only for files in ``UNET_TRUSTED_MODELS_DIR``, never for uploads).
        card: the card to use (default: the JSON next to the model, else inferred).
        name: the name used in messages (default: the file name).
        weights: the weights ``.h5`` of an architecture ``.json``.

    Pickles are always refused. Raises ModelLoadError (not a usable model file) or
    ModelSpecError (inputs/outputs not those of a segmentation network, or a card that
    contradicts the network).
    """
    p = Path(path)
    label = name or p.name
    kind = _check_file(p, label)
    suffix = p.suffix.lower()
    if kind == "pickle" or suffix in (".pkl", ".pickle"):
        raise ModelLoadError(
            f"{label}: pickle files are refused (they run code when loaded); accepted: "
            f"{_ACCEPTED_FILES}")
    if suffix in ONNX_EXTENSIONS:
        if weights is not None:
            raise ModelLoadError(f"{label}: an ONNX file holds its weights; --weights goes with "
                                 "an architecture .json")
        return _load_onnx(p, label, card)
    if suffix in ARCH_EXTENSIONS and weights is None:
        raise ModelLoadError(
            f"{label}: an architecture JSON needs its weights: --model {p.name} --weights W.h5")
    if weights is not None and suffix not in ARCH_EXTENSIONS:
        raise ModelLoadError(
            f"{label}: --weights goes with an architecture .json (model.to_json()); accepted: "
            "--model arch.json --weights weights.h5")
    if suffix not in (*MODEL_EXTENSIONS, *ARCH_EXTENSIONS):
        raise ModelLoadError(f"{label}: not a model file; accepted: {_ACCEPTED_FILES}")
    if suffix == ".keras":
        if kind != "zip" or not zipfile.is_zipfile(p):
            raise ModelLoadError(f"{label}: not a Keras 3 model (a .keras file is a zip archive)")
        check_keras_zip(p, label, allow_code=not safe_mode)
    if suffix in (".h5", ".hdf5"):
        if kind != "hdf5":
            raise ModelLoadError(f"{label}: not an HDF5 file (legacy Keras models are HDF5)")
        check_legacy_h5(p, allow_code=not safe_mode)

    import keras

    if suffix in ARCH_EXTENSIONS:
        model = _model_from_json(p, Path(weights), label, safe_mode)  # type: ignore[arg-type]
    else:
        try:
            with _keras_readable_path(p) as readable:
                model = keras.models.load_model(readable, compile=False, safe_mode=safe_mode)
        except Exception as exc:  # Keras raises many types; report one line
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if isinstance(exc, RecursionError):
                raise ModelLoadError(
                    f"{label}: refused: the model is nested too deeply to load (Python's "
                    "recursion limit)") from None
            if "TFSMLayer" in msg:
                raise ModelLoadError(
                    f"{label}: refused: the model contains a TFSMLayer (it loads a TensorFlow "
                    f"SavedModel from a path outside the file); {TRUST_HINT}") from None
            if "Lambda" in msg or "safe_mode" in msg:
                raise ModelLoadError(
                    f"{label}: refused: the model contains a Lambda layer (Python code); "
                    f"loading it would run that code; {TRUST_HINT}") from None
            version = _h5_keras_version(p) if kind == "hdf5" else ""
            if version.startswith("2."):
                raise ModelLoadError(
                    f"{label}: Keras 3 cannot rebuild this Keras {version} model "
                    f"({_one_line(exc, 120)}); {_RESAVE_HINT}") from None
            raise ModelLoadError(f"{label}: could not load as a Keras model: {msg[:300]}") from None
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"{label}: file holds a {type(model).__name__}, not a Keras model")
    validate_model(model, label)
    return _with_card(model, p, label, card, weights=weights, trusted=not safe_mode)


def _load_onnx(p: Path, label: str, card: ModelCard | None) -> LoadedModel:
    """An ONNX graph (:mod:`unet_core.onnx_graph`) with its card; a card's ``layout`` is used
    to read the graph."""
    data = None if card is not None else _read_card_dict(p)
    stated = card.layout if card is not None else (data or {}).get("layout")
    graph = read_graph(p, label, stated if stated in ("nchw", "nhwc") else None)
    return _with_card(graph, p, label, card, data=data)


def _with_card(model: Any, p: Path, label: str, card: ModelCard | None, *,
               data: dict[str, Any] | None = None, weights: Any = None,
               trusted: bool = False) -> LoadedModel:
    """A loaded network with the given card, else the one next to the file (``data`` when
    already read), else one inferred; reconciled with the network."""
    found = card is not None
    given = None if card is None else stated_fields(card)
    card_label = label
    if card is None:
        data = data if data is not None else _read_card_dict(p)
        if data is not None:
            card_label = card_path_for(p).name
            try:
                card = ModelCard.from_dict(data)
            except TypeError as exc:
                raise ModelLoadError(f"{card_label}: not a model card ({_one_line(exc)})") from None
            given = set(data)
            found = True
    if card is None:
        card = infer_card(model, p.stem)
        # a network can declare a huge fixed input or stride: every image would be padded to it
        check_card(card, f"{label} (settings inferred from the network)", ModelSpecError)
    else:
        card = reconcile_card(card, model, card_label, given)
    return LoadedModel(model=model, card=card, path=p, card_found=found,
                       weights_path=Path(weights) if weights is not None else None,
                       trusted=trusted)


def from_keras(model: Any, card: ModelCard | None = None, name: str = "model") -> LoadedModel:
    """Wrap an in-memory Keras model (e.g. one just built in a notebook) as a LoadedModel."""
    validate_model(model, name)
    if card is None:
        return LoadedModel(model=model, card=infer_card(model, name), path=None)
    card = reconcile_card(card, model, name, stated_fields(card), ModelSpecError)
    return LoadedModel(model=model, card=card, path=None, card_found=True)
