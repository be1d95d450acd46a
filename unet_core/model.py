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
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError, ModelSpecError
from .padding import PAD_MODES

NORMALISATIONS: tuple[str, ...] = ("unit", "minmax", "percentile")
"""Input normalisation rules, applied to the [0, 1] image that :func:`unet_core.io.read_image`
returns: ``unit`` uses it as is; ``minmax`` stretches the image's own min..max to 0..1;
``percentile`` stretches its 1st..99th percentile to 0..1 and clips."""

MODEL_EXTENSIONS: tuple[str, ...] = (".keras", ".h5", ".hdf5")


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
        channels: input channels (always 1 for U-Net Explorer models).
        normalisation: one of :data:`NORMALISATIONS`.
        padding_mode: default padding mode (see :mod:`unet_core.padding`).
        threshold: recommended probability threshold (foreground is ``prob > threshold``).
        min_area: minimum-area rule in pixels (0 = off): a thresholded mask with fewer
            foreground pixels is emptied as a whole (see :mod:`unet_core.metrics`); training
            picks it on validation together with the threshold.
        output: "probability" (sigmoid applied inside the model) or "logits".
        tta: average the prediction with that of the horizontally flipped image.
        truth_inverted: the model's training data marks the *other* class in its masks (e.g. ISBI
            2012 EM masks mark cell interiors, the model segments membranes); evaluation then
            inverts ground-truth masks by default.
        architecture, training, metrics: free-form records written by training.
        inferred: names of fields that were guessed because no card was found.
    """

    name: str = "model"
    domain: str = "unknown"
    description: str = ""
    foreground: str = "foreground"
    input_size: list[int] | None = None
    multiple_of: int = 1
    min_size: int = 0
    channels: int = 1
    normalisation: str = "unit"
    padding_mode: str = "reflect"
    threshold: float = 0.5
    min_area: int = 0
    output: str = "probability"
    tta: bool = False
    truth_inverted: bool = False
    architecture: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    inferred: list[str] = field(default_factory=list)

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
    def input_spec(self) -> str:
        """Human-readable input spec, e.g. '128x128' or 'any multiple of 16'."""
        if self.input_size:
            return f"{self.input_size[0]}x{self.input_size[1]}"
        spec = f"any multiple of {self.multiple_of}"
        if self.min_size:
            spec += f" (smaller images padded to {self.min_size})"
        return spec


def card_path_for(model_path: str | os.PathLike) -> Path:
    """``models/salt.keras`` -> ``models/salt.json``."""
    return Path(model_path).with_suffix(".json")


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
        output_activation: "sigmoid" for probabilities, "linear" for logits.
        input_size: fixed (H, W), or None for a fully convolutional network (any multiple of
            the stride).
        name: Keras model name.

    Returns:
        keras.Model mapping (N, H, W, input_channels) float32 to (N, H, W, 1) float32.
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
    outputs = layers.Conv2D(1, 1, activation=output_activation, name="mask")(x)
    return keras.Model(inputs, outputs, name=name)


@dataclass
class LoadedModel:
    """A loaded Keras model with its card and where it came from."""

    model: Any
    card: ModelCard
    path: Path | None = None
    card_found: bool = False

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
_UNSAFE_CLASSES: frozenset[str] = frozenset({*UNSAFE_H5_CLASSES, "__lambda__"})
_MAX_CONFIG_BYTES = 64 << 20  # a U-Net's config.json is ~100 KB
_MAX_ZIP_RATIO = 100.0  # Keras stores members uncompressed (ratio ~1); same limit as Keras's
_MIN_RATIO_CHECK_BYTES = 1 << 20
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


def check_legacy_h5(path: Path) -> None:
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
            f"{path.name}: HDF5 file holds no model config (weights-only files are not "
            "accepted; save the whole model with model.save('model.keras'))"
        )
    config = _parse_config(raw, f"{path.name}: HDF5 model config")
    found = _unsafe_entries(config)
    if found:
        raise ModelLoadError(
            f"{path.name}: refused: legacy .h5 model contains {', '.join(found)}; such "
            "layers hold Python code that would run on load. Accepted: models built from "
            "standard Keras layers, ideally saved as .keras"
        )


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
            for info in infos:
                ratio = info.file_size / max(info.compress_size, 1)
                if info.file_size >= _MIN_RATIO_CHECK_BYTES and ratio > _MAX_ZIP_RATIO:
                    raise ModelLoadError(
                        f"{label}: refused: archive member {info.filename!r} has compression "
                        f"ratio {ratio:,.0f}:1 (possible zip bomb; accepted: up to "
                        f"{_MAX_ZIP_RATIO:,.0f}:1)")
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
            f"{label}: refused: model config contains {', '.join(found)}; {_REFUSED_CODE}")


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _keras_readable_path(p: Path) -> Iterator[Path]:
    """``p``, or a link to it with a lower-case suffix (Keras only knows .keras/.h5/.hdf5)."""
    suffix = p.suffix.lower()
    if p.suffix == suffix:
        yield p
        return
    with tempfile.TemporaryDirectory(prefix="unet_model_") as tmp:
        alias = Path(tmp) / f"model{suffix}"
        try:
            alias.symlink_to(p.resolve())
        except OSError:
            shutil.copyfile(p, alias)
        yield alias


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
    """
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


def infer_card(model: Any, name: str) -> ModelCard:
    """Card with defaults inferred from the network's input shape (fields listed in inferred)."""
    shape = tuple(model.inputs[0].shape)
    h, w = shape[1], shape[2]
    last = model.layers[-1]
    act = getattr(getattr(last, "activation", None), "__name__", "")
    card = ModelCard(
        name=name,
        description="No model card was found; settings below are inferred from the network.",
        input_size=[int(h), int(w)] if h is not None and w is not None else None,
        multiple_of=_downsampling_stride(model),
        output="probability" if act in ("sigmoid", "softmax") else "logits",
    )
    card.inferred = ["input_size", "multiple_of", "normalisation", "padding_mode", "threshold",
                     "output"]
    return card


def validate_model(model: Any, name: str) -> None:
    """Raise ModelSpecError unless the model maps one single-channel image to one 1-channel map."""
    try:
        inputs = list(model.inputs)
        outputs = list(model.outputs)
    except (AttributeError, TypeError, ValueError):
        raise ModelSpecError(
            f"{name}: model has no defined inputs or outputs (e.g. a Sequential saved before it "
            "was built); accepted: a model with one image input (N, H, W, 1)") from None
    if len(inputs) != 1:
        raise ModelSpecError(
            f"{name}: model has {len(inputs)} inputs; accepted: one image input "
            "(N, H, W, 1)")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ModelSpecError(
            f"{name}: model input has shape {shape}; accepted: (N, H, W, 1) images")
    if shape[-1] != 1:
        raise ModelSpecError(
            f"{name}: model expects input {shape} with {shape[-1]} channels; U-Net Explorer "
            "feeds single-channel (grayscale) images, shape (N, H, W, 1)")
    if len(outputs) != 1:
        raise ModelSpecError(
            f"{name}: model has {len(outputs)} outputs; accepted: one mask output "
            "(N, H, W, 1)")
    try:
        structure = model.output
    except (AttributeError, TypeError, ValueError):
        structure = None
    if isinstance(structure, dict):
        raise ModelSpecError(
            f"{name}: model returns a dict of outputs ({', '.join(map(str, structure))}); "
            "accepted: one mask output (N, H, W, 1)")
    out = tuple(outputs[0].shape)
    if len(out) != 4 or out[-1] != 1:
        raise ModelSpecError(
            f"{name}: model output has shape {out}; accepted: one probability map "
            "(N, H, W, 1) (binary segmentation)")


def load_card(model_path: Path) -> ModelCard | None:
    """Read the card next to ``model_path`` if there is one."""
    cpath = card_path_for(model_path)
    if not cpath.is_file():
        return None
    try:
        data = json.loads(cpath.read_text())
    except RecursionError:
        raise ModelLoadError(
            f"{cpath.name}: model card is not valid JSON (too deeply nested)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"{cpath.name}: model card is not valid JSON ({_one_line(exc)})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{cpath.name}: model card must be a JSON object")
    card = ModelCard.from_dict(data)
    check_card(card, cpath.name)
    return card


MAX_CARD_SIDE = 16384
"""Largest ``input_size`` side / ``min_size`` a card may ask for (every image is padded to it)."""


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
        raise bad("input_size", f"null or [height, width] with sides 1..{MAX_CARD_SIDE}")
    if not is_int(card.multiple_of) or not 1 <= card.multiple_of <= 1024:
        raise bad("multiple_of", "an integer 1..1024")
    if not is_int(card.min_size) or not 0 <= card.min_size <= MAX_CARD_SIDE:
        raise bad("min_size", f"an integer 0..{MAX_CARD_SIDE}")
    if not is_int(card.channels) or card.channels < 1:
        raise bad("channels", "a positive integer")
    if card.normalisation not in NORMALISATIONS:
        raise bad("normalisation", ", ".join(NORMALISATIONS))
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


def load_model(path: str | os.PathLike, *, safe_mode: bool = True,
               card: ModelCard | None = None, name: str | None = None) -> LoadedModel:
    """Load a Keras 3 ``.keras`` or legacy ``.h5`` segmentation model and its card.

    ``safe_mode=True`` (the default) refuses Lambda layers that would deserialise Python code.
    A legacy ``.h5`` is refused if it holds Lambda layers or custom classes. Pickles are refused.
    Raises ModelLoadError (not a usable model file) or ModelSpecError (wrong input/outputs).
    """
    p = Path(path)
    label = name or p.name
    if not p.is_file():
        raise ModelLoadError(f"{label}: model file not found")
    try:
        if p.stat().st_size == 0:
            raise ModelLoadError(f"{label}: model file is empty (0 bytes)")
        kind = _sniff(p)
    except OSError as exc:
        raise ModelLoadError(f"{label}: cannot read model file ({_one_line(exc)})") from None
    if kind == "pickle" or p.suffix.lower() in (".pkl", ".pickle"):
        raise ModelLoadError(
            f"{label}: pickle files are refused (they run code when loaded); accepted: "
            ".keras (Keras 3) or .h5 (legacy Keras)")
    suffix = p.suffix.lower()
    if suffix not in MODEL_EXTENSIONS:
        raise ModelLoadError(
            f"{label}: not a Keras model file; accepted: .keras (Keras 3) or .h5 (legacy Keras)")
    if suffix == ".keras":
        if kind != "zip" or not zipfile.is_zipfile(p):
            raise ModelLoadError(f"{label}: not a Keras 3 model (a .keras file is a zip archive)")
        check_keras_zip(p, label, allow_code=not safe_mode)
    if suffix in (".h5", ".hdf5"):
        if kind != "hdf5":
            raise ModelLoadError(f"{label}: not an HDF5 file (legacy Keras models are HDF5)")
        check_legacy_h5(p)

    import keras

    try:
        with _keras_readable_path(p) as readable:
            model = keras.models.load_model(readable, compile=False, safe_mode=safe_mode)
    except Exception as exc:  # Keras raises many types; report one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Lambda" in msg or "safe_mode" in msg:
            raise ModelLoadError(
                f"{label}: refused: the model contains a Lambda layer (Python code); loading it "
                "would run that code. Accepted: models of standard Keras layers") from None
        raise ModelLoadError(f"{label}: could not load as a Keras model: {msg[:300]}") from None
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"{label}: file holds a {type(model).__name__}, not a Keras model")
    validate_model(model, label)
    found = card is not None
    if card is None:
        card = load_card(p)
        found = card is not None
    if card is None:
        card = infer_card(model, p.stem)
        # a network can declare a huge fixed input or stride: every image would be padded to it
        check_card(card, f"{label} (settings inferred from the network)", ModelSpecError)
    return LoadedModel(model=model, card=card, path=p, card_found=found)


def from_keras(model: Any, card: ModelCard | None = None, name: str = "model") -> LoadedModel:
    """Wrap an in-memory Keras model (e.g. one just built in a notebook) as a LoadedModel."""
    validate_model(model, name)
    return LoadedModel(model=model, card=card or infer_card(model, name), path=None,
                       card_found=card is not None)
