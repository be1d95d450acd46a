"""Estimate what a model will cost from its config, before Keras builds anything.

A ``.keras`` archive of a few KB can declare a layer with billions of parameters; Keras would
allocate them all while loading. :func:`estimate_config` reads the config (Keras 3 JSON, Keras 2
``model_config`` or ``model.to_json()`` text) and propagates channel counts through the
functional graph (``inbound_nodes``): convolutions, dense, normalisation and embedding layers
add parameters, ``Concatenate`` sums channels, other layers pass them through, nested models
are counted recursively. It also records each layer's resolution relative to the input
(strides, pooling, upsampling) and channels, so :meth:`Estimate.activation_bytes` gives the
float32 activation memory of a forward pass for an image size.

Limits (environment overrides): ``UNET_MAX_PARAMS`` (default 100,000,000 parameters),
``UNET_MAX_LAYERS`` (default 1,500 layers), ``UNET_MAX_FORWARD_MB`` (default 4,096 MB of
activations per forward pass).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError, UnetCoreError

__all__ = ["Estimate", "estimate_config", "check_config", "h5_weight_count", "max_params",
           "max_layers", "max_forward_mb", "check_forward"]

DEFAULT_MAX_PARAMS = 100_000_000
DEFAULT_MAX_LAYERS = 1500
DEFAULT_MAX_FORWARD_MB = 4096
_MAX_DEPTH = 32  # nesting of models inside models
_MAX_NODES = 200_000  # config entries walked (a bound on the walk itself)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip().replace("_", "").replace(",", "")
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise UnetCoreError(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise UnetCoreError(f"{name}={raw!r} must be positive")
    return value


def max_params() -> int:
    """``UNET_MAX_PARAMS`` or 100,000,000."""
    return _env_int("UNET_MAX_PARAMS", DEFAULT_MAX_PARAMS)


def max_layers() -> int:
    """``UNET_MAX_LAYERS`` or 1,500."""
    return _env_int("UNET_MAX_LAYERS", DEFAULT_MAX_LAYERS)


def max_forward_mb() -> int:
    """``UNET_MAX_FORWARD_MB`` or 4,096."""
    return _env_int("UNET_MAX_FORWARD_MB", DEFAULT_MAX_FORWARD_MB)


@dataclass
class Estimate:
    """What a config declares: parameters, layers, and per-layer maps.

    ``maps``: one (height scale, width scale, channels) per layer output, the scales relative
    to the network input (0.5 after a 2x pooling); a negative scale is an absolute size in
    pixels (after a ``Resizing`` layer, -256.0 is 256 pixels whatever the input).
    """

    params: int = 0
    layers: int = 0
    maps: list[tuple[float, float, int]] = field(default_factory=list)
    ops: list[int] = field(default_factory=list)  # per layer: operations per output pixel

    def activation_bytes(self, height: int, width: int, batch: int = 1) -> int:
        """float32 bytes of all layer outputs of one forward pass at ``height`` x ``width``."""
        total = 0
        for sy, sx, c in self.maps:
            total += _side(height, sy) * _side(width, sx) * c
        return 4 * batch * total

    def flops(self, height: int, width: int) -> int:
        """Operations of one forward pass (a multiply-add counts 2; convolutions and dense
        layers only), from the config: an estimate that needs no graph."""
        total = 0
        for (sy, sx, _c), ops in zip(self.maps, self.ops, strict=True):
            if ops:
                total += _side(height, sy) * _side(width, sx) * ops
        return total


def _side(size: int, scale: float) -> int:
    """A layer's side for an input side ``size``: relative (scale > 0) or absolute (< 0)."""
    if scale < 0:
        return max(1, math.ceil(-scale))
    return max(1, math.ceil(size * scale))


class _Walk:
    def __init__(self) -> None:
        self.nodes = 0
        self.params = 0
        self.layers = 0
        self.maps: list[tuple[float, float, int]] = []
        self.ops: list[int] = []


def _int(v: Any, default: int = 0) -> int:
    if isinstance(v, bool):
        return default
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return int(v)
    return default


def _ints(v: Any, n: int, default: int = 1) -> list[int]:
    if isinstance(v, list | tuple):
        vals = [_int(x, default) for x in v][:n]
        return vals + [vals[-1] if vals else default] * (n - len(vals))
    return [_int(v, default)] * n


def _prod(vals: list[int]) -> int:
    out = 1
    for v in vals:
        out *= max(0, v)
    return out


def _shape_channels(shape: Any) -> int | None:
    if isinstance(shape, list | tuple) and shape:
        c = _int(shape[-1], -1)
        return c if c >= 0 else None
    return None


def _tensor_refs(obj: Any, out: list[tuple[str, int | None]], depth: int = 0) -> None:
    """(layer name, declared channels) of every tensor an inbound node refers to."""
    if depth > 16 or len(out) > 10_000:
        return
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            cfg = obj.get("config") if isinstance(obj.get("config"), dict) else {}
            hist = cfg.get("keras_history")
            name = hist[0] if isinstance(hist, list) and hist and isinstance(hist[0], str) else ""
            out.append((name, _shape_channels(cfg.get("shape"))))
            return
        for v in obj.values():
            _tensor_refs(v, out, depth + 1)
    elif isinstance(obj, list):
        if (len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int)
                and isinstance(obj[2], int)):  # Keras 2: [name, node, tensor, kwargs]
            out.append((obj[0], None))
            return
        for v in obj:
            _tensor_refs(v, out, depth + 1)


def _layer_list(config: Any) -> list:
    if isinstance(config, list):  # very old Sequential: config is the layer list
        return config
    if isinstance(config, dict) and isinstance(config.get("layers"), list):
        return config["layers"]
    return []


def _is_model(class_name: str, config: Any) -> bool:
    return class_name in ("Functional", "Model", "Sequential") or (
        isinstance(config, dict) and isinstance(config.get("layers"), list))


def _declared_input_channels(entry: dict) -> int | None:
    cfg = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    for key in ("batch_shape", "batch_input_shape", "shape", "input_shape"):
        c = _shape_channels(cfg.get(key))
        if c is not None:
            return c
    build = entry.get("build_config")
    if isinstance(build, dict):
        return _shape_channels(build.get("input_shape"))
    return None


def _layer(walk: _Walk, entry: dict, cin: list[int], scale: tuple[float, float],
           depth: int) -> tuple[int, tuple[float, float]]:
    """Add one layer's parameters and map; return its output (channels, scale)."""
    cls = entry.get("class_name") if isinstance(entry.get("class_name"), str) else ""
    cfg = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    declared = _declared_input_channels(entry)
    c = max(cin) if cin else (declared or 0)
    if declared is not None and not cin:
        c = declared
    elif declared is not None:  # a build_config that claims more than the graph gives
        c = max(c, declared)
    sy, sx = scale
    walk.layers += 1
    if _is_model(cls, cfg):
        if depth >= _MAX_DEPTH:
            raise ModelLoadError("refused: models nested more than 32 deep")
        out_c, out_scale = _graph(walk, cfg, c, scale, depth + 1)
        return out_c, out_scale
    if cls in ("Bidirectional", "TimeDistributed") and isinstance(cfg.get("layer"), dict):
        before = walk.params
        inner_c, _ = _layer(walk, cfg["layer"], [c], scale, depth + 1)
        walk.layers -= 1
        if cls == "Bidirectional":  # a forward and a backward copy of the inner layer
            walk.params += walk.params - before
            return inner_c * 2, scale
        return inner_c, scale
    p = 0
    ops = 0
    out = c
    if cls in ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
               "Conv3DTranspose", "Convolution2D", "Deconvolution2D"):
        n = 1 if "1D" in cls else 3 if "3D" in cls else 2
        k = _prod(_ints(cfg.get("kernel_size"), n))
        f = _int(cfg.get("filters"))
        groups = max(1, _int(cfg.get("groups"), 1))
        p = k * (c // groups if "Transpose" not in cls else c) * f
        ops = 2 * p
        p += f if cfg.get("use_bias", True) else 0
        out = f
        st = _ints(cfg.get("strides"), n)
        if "Transpose" in cls:
            ops //= max(1, st[0] * st[-1])  # per output pixel
            sy, sx = sy * max(1, st[0]), sx * max(1, st[-1])
        else:
            sy, sx = sy / max(1, st[0]), sx / max(1, st[-1])
    elif cls in ("SeparableConv1D", "SeparableConv2D", "DepthwiseConv1D", "DepthwiseConv2D"):
        n = 1 if "1D" in cls else 2
        k = _prod(_ints(cfg.get("kernel_size"), n))
        dm = max(1, _int(cfg.get("depth_multiplier"), 1))
        bias = cfg.get("use_bias", True)
        if cls.startswith("Separable"):
            f = _int(cfg.get("filters"))
            p = k * c * dm + c * dm * f + (f if bias else 0)
            ops = 2 * (k * c * dm + c * dm * f)
            out = f
        else:
            p = k * c * dm + (c * dm if bias else 0)
            ops = 2 * k * c * dm
            out = c * dm
        st = _ints(cfg.get("strides"), n)
        sy, sx = sy / max(1, st[0]), sx / max(1, st[-1])
    elif cls == "Dense":
        u = _int(cfg.get("units"))
        p = c * u + (u if cfg.get("use_bias", True) else 0)
        ops = 2 * c * u
        out = u
    elif cls == "EinsumDense":
        shape = cfg.get("output_shape")
        u = _prod(_ints(shape, len(shape))) if isinstance(shape, list) else _int(shape)
        p = c * u
        out = _shape_channels(shape) or u
    elif cls in ("BatchNormalization", "LayerNormalization", "GroupNormalization",
                 "UnitNormalization", "SyncBatchNormalization"):
        p = (4 if "Batch" in cls else 2) * c
    elif cls == "Embedding":
        d = _int(cfg.get("output_dim"))
        p = _int(cfg.get("input_dim")) * d
        out = d
    elif cls in ("LSTM", "GRU", "SimpleRNN", "ConvLSTM2D"):
        u = _int(cfg.get("units") or cfg.get("filters"))
        gates = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1, "ConvLSTM2D": 4}[cls]
        k = _prod(_ints(cfg.get("kernel_size"), 2)) if cls == "ConvLSTM2D" else 1
        p = gates * (k * (c + u) * u + u)
        out = u
    elif cls == "MultiHeadAttention":
        p = 4 * c * max(1, _int(cfg.get("num_heads"), 1)) * max(1, _int(cfg.get("key_dim"), 1))
    elif cls in ("MaxPooling2D", "AveragePooling2D", "MaxPooling1D", "AveragePooling1D",
                 "MaxPool2D", "AvgPool2D"):
        st = _ints(cfg.get("strides") or cfg.get("pool_size") or 2, 2)
        sy, sx = sy / max(1, st[0]), sx / max(1, st[-1])
    elif cls == "UpSampling2D":
        st = _ints(cfg.get("size") or 2, 2)
        sy, sx = sy * max(1, st[0]), sx * max(1, st[-1])
    elif cls == "Resizing":
        sy = -float(max(1, _int(cfg.get("height"), 1)))
        sx = -float(max(1, _int(cfg.get("width"), 1)))
    elif cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
        sy, sx = 0.0, 0.0
    elif cls in ("Concatenate", "concatenate"):
        axis = _int(cfg.get("axis"), -1)
        out = sum(cin) if axis in (-1, 3) and cin else c
    elif cls == "Reshape":
        out = _shape_channels(cfg.get("target_shape")) or c
    elif cls == "Dot":
        out = c
    walk.params += max(0, p)
    walk.maps.append((sy, sx, max(0, out)))
    walk.ops.append(max(0, ops))
    return max(0, out), (sy, sx)


def _graph(walk: _Walk, config: Any, cin: int, scale: tuple[float, float],
           depth: int) -> tuple[int, tuple[float, float]]:
    """Walk a (functional or sequential) model config; return its output (channels, scale)."""
    layers = _layer_list(config)
    seen: dict[str, tuple[int, tuple[float, float]]] = {}
    last = (cin, scale)
    for entry in layers:
        walk.nodes += 1
        if walk.nodes > _MAX_NODES:
            raise ModelLoadError(f"refused: the config holds over {_MAX_NODES:,} layers")
        if not isinstance(entry, dict):
            continue
        cfg = entry.get("config") if isinstance(entry.get("config"), dict) else {}
        name = entry.get("name") if isinstance(entry.get("name"), str) else cfg.get("name")
        refs: list[tuple[str, int | None]] = []
        _tensor_refs(entry.get("inbound_nodes"), refs)
        if refs:
            cins, scales = [], []
            for ref, declared in refs:
                got = seen.get(ref)
                c = got[0] if got else (declared if declared is not None else last[0])
                if declared is not None:
                    c = max(c, declared)
                cins.append(c)
                scales.append(got[1] if got else scale)
            in_scale = scales[0] if scales else scale
            result = _layer(walk, entry, cins, in_scale, depth)
        elif entry.get("class_name") == "InputLayer":
            walk.layers += 1
            c = _declared_input_channels(entry)
            result = (cin if c is None else c, scale)
            walk.maps.append((scale[0], scale[1], result[0]))
            walk.ops.append(0)
        else:  # Sequential chain, or the first layer of one
            result = _layer(walk, entry, [last[0]] if last[0] else [], last[1], depth)
        if isinstance(name, str):
            seen[name] = result
        last = result
    return last


def estimate_config(config: Any) -> Estimate:
    """Parameters, layers and per-layer maps declared by a model config (see module doc)."""
    walk = _Walk()
    try:
        if isinstance(config, dict) and "config" in config and not isinstance(
                config.get("layers"), list):
            entry = config
        else:
            entry = {"class_name": "Functional", "config": config}
        cfg = entry.get("config")
        if _is_model(entry.get("class_name", "") if isinstance(entry.get("class_name"), str)
                     else "", cfg) or isinstance(cfg, list):
            _graph(walk, cfg, 0, (1.0, 1.0), 0)
        else:
            _layer(walk, entry, [], (1.0, 1.0), 0)
    except RecursionError:
        raise ModelLoadError("refused: the model config is nested too deeply") from None
    return Estimate(params=walk.params, layers=walk.layers, maps=walk.maps, ops=walk.ops)


def check_config(config: Any, label: str, extra_params: int = 0) -> Estimate:
    """Estimate ``config`` and refuse it over ``UNET_MAX_PARAMS`` / ``UNET_MAX_LAYERS``.

    ``extra_params``: parameters counted elsewhere (e.g. the weight shapes of a legacy .h5);
    the larger of the two counts is checked.
    """
    try:
        est = estimate_config(config)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{label}: {exc}") from None
    what = "its config declares" if est.params >= extra_params else "its weights declare"
    est.params = max(est.params, int(extra_params))
    limit = max_params()
    if est.params > limit:
        raise ModelLoadError(
            f"{label}: refused: {what} {est.params:,} parameters (limit "
            f"{limit:,}, UNET_MAX_PARAMS)")
    limit = max_layers()
    if est.layers > limit:
        raise ModelLoadError(
            f"{label}: refused: its config declares {est.layers:,} layers (limit {limit:,}, "
            "UNET_MAX_LAYERS)")
    return est


def h5_weight_count(path: str | os.PathLike) -> int:
    """Number of weights the datasets of an HDF5 file declare (their shapes; no data read)."""
    import h5py

    total = 0
    seen = 0

    def visit(_name: str, obj: Any) -> None:
        nonlocal total, seen
        seen += 1
        if seen > _MAX_NODES:
            raise ModelLoadError(f"refused: the file holds over {_MAX_NODES:,} objects")
        if isinstance(obj, h5py.Dataset):
            shape = obj.shape or ()
            total += _prod([int(v) for v in shape]) if shape else 1

    with h5py.File(Path(path), "r") as f:
        group = f.get("model_weights", f)
        if isinstance(group, h5py.Group):
            group.visititems(visit)
    return total


def model_estimate(model: Any) -> Estimate | None:
    """The estimate of an in-memory Keras model (from its config) or of an ONNX graph (from
    its inferred shapes), or None if unreadable."""
    estimate = getattr(model, "estimate", None)
    if callable(estimate):  # an unet_core.onnx_graph.OnnxGraph
        return estimate()
    try:
        return estimate_config({"class_name": "Functional", "config": model.get_config()})
    except Exception:  # noqa: BLE001 - subclassed or odd models: no estimate
        return None


def check_forward(estimate: Estimate | None, height: int, width: int, label: str,
                  batch: int = 1) -> None:
    """Refuse a forward pass whose activations would exceed ``UNET_MAX_FORWARD_MB``."""
    if estimate is None:
        return
    need = estimate.activation_bytes(height, width, batch)
    limit = max_forward_mb()
    if need > limit * 2**20:
        raise UnetCoreError(
            f"{label}: refused: a forward pass at {height}x{width}"
            f"{f' (batch {batch})' if batch > 1 else ''} needs about {need / 2**20:,.0f} MB of "
            f"activations (limit {limit:,} MB, UNET_MAX_FORWARD_MB)")
