"""Look inside a U-Net: its layers, its convolution filters and its activation maps.

Everything here takes a ``keras.Model`` (or anything with a ``.model`` attribute holding one,
such as :class:`unet_core.model.LoadedModel` or :class:`unet_core.inference.Segmenter`), or an
ONNX model (:class:`unet_core.onnx_graph.OnnxGraph`, or a LoadedModel / Segmenter holding one),
whose nodes are its layers: the ONNX work is done by :mod:`unet_core.onnx_introspect`, with the
same return types.

* :func:`layer_table` / :func:`format_layer_table`: one row per layer (type, output shape,
  parameters, kernel shape).
* :func:`get_kernels` / :func:`weight_histogram`: a conv layer's kernels, always with axes
  ``(kh, kw, in, out)`` (Keras stores ``Conv2DTranspose`` kernels as ``(kh, kw, out, in)``; they
  are transposed here), with per-filter statistics.
* :class:`ActivationProbe`: ONE multi-output model over the chosen layers, built once; one call
  is one forward pass that returns the maps of every chosen layer, so looking at another layer
  costs no extra pass. It takes the network's C input channels (gray, RGB, BGR, N bands) as
  :meth:`unet_core.inference.Segmenter.prepare` returns them. :func:`crop_activation` crops a
  layer's maps to the original image (dropping the padding), at that layer's resolution.
* :func:`model_flops`: floating-point operations of one forward pass at a given input size.

No Streamlit here: the dashboard and the CLI both use these functions.
"""

from __future__ import annotations

import logging
import math
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UnetCoreError
from .onnx_graph import is_onnx
from .padding import PadBox

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_MAX_BYTES: int = 4 * 2**30
"""Default cap (4 GiB) on the float32 activation maps one :meth:`ActivationProbe.run` may
return. For scale: all 86 layer outputs of a 16-filter, depth-4 U-Net on a 1024x1024 input take
about 2.3 GiB; on a 128x128 input about 37 MiB."""

_CONV_TYPES: tuple[str, ...] = ("Conv2D", "Conv2DTranspose", "DepthwiseConv2D", "SeparableConv2D")
_KERNEL_ATTRS: tuple[str, ...] = ("kernel", "depthwise_kernel", "pointwise_kernel")
_LIST_NAMES = 6  # layer names quoted in an error message before "... (N in all)"

log = logging.getLogger(__name__)


# -- helpers -------------------------------------------------------------------------------------
def _keras_model(model: Any) -> Any:
    """The keras.Model itself, unwrapping a LoadedModel / Segmenter (``.model``)."""
    if hasattr(model, "layers"):
        return model
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "layers"):
        return inner
    raise UnetCoreError(
        f"expected a Keras model, got {type(model).__name__}; accepted: keras.Model, "
        "LoadedModel or Segmenter")


def _name_list(names: Sequence[str]) -> str:
    """'a, b, c, ... (12 in all)' for error messages; 'none' when empty."""
    if not names:
        return "none"
    shown = ", ".join(names[:_LIST_NAMES])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _LIST_NAMES else "")


def _layer_output(layer: Any) -> Any:
    """The layer's single symbolic output tensor, or None (multiple outputs, shared layer...)."""
    try:
        out = layer.output
    except (AttributeError, ValueError, RuntimeError):
        return None
    if isinstance(out, (list, tuple)):
        return None
    return out if hasattr(out, "shape") else None


def _output_shape(layer: Any) -> tuple:
    """Static output shape with None for unknown dims, e.g. (None, None, None, 16); () if none."""
    out = _layer_output(layer)
    if out is None:
        return ()
    return tuple(None if d is None else int(d) for d in out.shape)


def _is_input_layer(layer: Any) -> bool:
    return type(layer).__name__ == "InputLayer"


def _kernel_vars(layer: Any) -> dict[str, Any]:
    """{attribute: variable} of the layer's kernels ('kernel', 'depthwise_kernel', ...)."""
    found: dict[str, Any] = {}
    for attr in _KERNEL_ATTRS:
        try:
            var = getattr(layer, attr, None)
        except (AttributeError, ValueError):
            var = None
        if var is not None and hasattr(var, "shape"):
            found[attr] = var
    return found


def _is_conv(layer: Any) -> bool:
    """A 2-D convolution whose (spatial) kernel can be shown as 2-D filters."""
    import keras

    classes = tuple(getattr(keras.layers, n) for n in _CONV_TYPES)
    if not isinstance(layer, classes):
        return False
    kernels = _kernel_vars(layer)
    var = kernels.get("depthwise_kernel", kernels.get("kernel"))
    return var is not None and len(var.shape) == 4


def _kernel_shape(layer: Any) -> tuple[int, ...] | None:
    """Kernel shape as shown to users: (kh, kw, in, out) for convs, the raw shape otherwise."""
    kernels = _kernel_vars(layer)
    if not kernels:
        return None
    if _is_conv(layer):
        kh, kw, a, b = (int(d) for d in _conv_kernel_var(layer).shape)
        cls = _conv_type(layer)
        if cls == "Conv2DTranspose":
            return (kh, kw, b, a)
        if cls in ("DepthwiseConv2D", "SeparableConv2D"):
            return (kh, kw, 1, a * b)
        return (kh, kw, a, b)
    return tuple(int(d) for d in next(iter(kernels.values())).shape)


def _conv_type(layer: Any) -> str:
    """Which of the public conv classes the layer is (subclasses map to their base)."""
    import keras

    # Most specific first: SeparableConv2D / Conv2DTranspose are not Conv2D subclasses in
    # Keras 3, but a user subclass of Conv2DTranspose is still a transposed convolution.
    for n in ("Conv2DTranspose", "SeparableConv2D", "DepthwiseConv2D", "Conv2D"):
        if isinstance(layer, getattr(keras.layers, n)):
            return n
    return type(layer).__name__


def _conv_kernel_var(layer: Any) -> Any:
    kernels = _kernel_vars(layer)
    return kernels.get("depthwise_kernel", kernels.get("kernel"))


def _resolutions(multi: Any, channels: int | None, fixed_hw: tuple
                 ) -> list[tuple[float, float]] | None:
    """Each output's (h / H, w / W) relative to the input, from one symbolic (shape-only) pass.

    ``multi`` is a keras.Model whose outputs are 4-D maps; None if it cannot be worked out.
    """
    import keras

    fh, fw = fixed_hw
    c = channels or 1
    refs = [(fh, fw)] if fh is not None and fw is not None else [(1024, 1024),
                                                                (107520, 107520)]
    for rh, rw in refs:
        try:
            specs = multi.compute_output_spec(keras.KerasTensor((1, rh, rw, c)))
        except Exception:  # any failure (e.g. size not accepted): next size, then give up
            continue
        specs = specs if isinstance(specs, (list, tuple)) else [specs]
        if all(len(s.shape) == 4 and s.shape[1] is not None and s.shape[2] is not None
               for s in specs):
            return [(s.shape[1] / rh, s.shape[2] / rw) for s in specs]
    return None


def _find_layer(model: Any, name: str) -> Any:
    for layer in model.layers:
        if layer.name == name:
            return layer
    return None


# -- layer table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerInfo:
    """One layer of a model, as listed by :func:`layer_table`.

    Attributes:
        index: position in ``model.layers``.
        name: layer name.
        type: Keras class name, e.g. "Conv2D".
        output_shape: static output shape including the batch axis, None for unknown dims,
            e.g. (None, None, None, 16); () when the layer has no single output.
        params: all parameters (trainable and not, e.g. BatchNorm moving statistics).
        trainable_params: trainable parameters.
        has_kernel: the layer has a kernel (Conv*, Dense, ...).
        is_conv: a 2-D convolution whose kernel can be shown as 2-D filters.
        kernel_shape: kernel shape, (kh, kw, in, out) for convolutions (depthwise: in = 1,
            out = channels x depth multiplier; separable: its depthwise part), the raw shape
            for other kernels (Dense: (in, out)); None without a kernel.
        resolution: (h / H, w / W) of a 4-D output relative to the network input (0.25 after
            two 2x poolings), None when unknown or not a 4-D map. Lets a fully convolutional
            model's shapes read '(H/4, W/4, 32)' instead of '(?, ?, 32)'.
        spatial_axes: the (height, width) axes of ``output_shape`` when they are not (1, 2):
            an ONNX node's NCHW output has (2, 3) and reads '(16, H/2, W/2)'. None: (1, 2)
            for a Keras layer's (N, H, W, C) output.
    """

    index: int
    name: str
    type: str
    output_shape: tuple
    params: int
    trainable_params: int
    has_kernel: bool
    is_conv: bool
    kernel_shape: tuple[int, ...] | None = None
    resolution: tuple[float, float] | None = None
    spatial_axes: tuple[int, int] | None = None

    @property
    def shape_str(self) -> str:
        """Output shape without the batch axis: '(128, 128, 16)' for a fixed-size network;
        unknown spatial dims relative to the input size H x W, '(H/4, W/4, 32)' ('(32, H/4,
        W/4)' for an NCHW ONNX node); '?' if unknown.
        """
        dims = self.output_shape[1:] if self.output_shape else ()
        if not dims:
            return "-"
        text = ["?" if d is None else str(d) for d in dims]
        if self.resolution is not None and (len(dims) == 3 or self.spatial_axes is not None):
            axes = self.spatial_axes or (1, 2)
            for sym, r, axis in zip("HW", self.resolution, axes, strict=True):
                j = axis - 1
                if 0 <= j < len(dims) and dims[j] is None:
                    text[j] = _relative(sym, r)
        return "(" + ", ".join(text) + ")"

    @property
    def kernel_str(self) -> str:
        """Kernel shape as '3x3x1x16' (conv: kh x kw x in x out), '' without a kernel."""
        if not self.kernel_shape:
            return ""
        return "x".join(str(d) for d in self.kernel_shape)

    def as_row(self) -> dict[str, Any]:
        """JSON-friendly row: {"#", "name", "type", "output shape", "params", "kernel"}."""
        return {
            "#": self.index,
            "name": self.name,
            "type": self.type,
            "output shape": self.shape_str,
            "params": self.params,
            "kernel": self.kernel_str,
        }


def _relative(sym: str, ratio: float) -> str:
    """'H', 'H/4', '2H' for a ratio of 1, 0.25, 2; '?' for anything else."""
    if ratio <= 0:
        return "?"
    if abs(ratio - 1.0) < 1e-9:
        return sym
    if ratio < 1 and abs(1 / ratio - round(1 / ratio)) < 1e-6:
        return f"{sym}/{round(1 / ratio)}"
    if ratio > 1 and abs(ratio - round(ratio)) < 1e-6:
        return f"{round(ratio)}{sym}"
    return "?"


def _table_resolutions(model: Any) -> dict[str, tuple[float, float]]:
    """{layer: (h / H, w / W)} for the 4-D outputs of a model with unknown spatial input dims."""
    import keras

    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1 or len(inputs[0].shape) != 4:
        return {}
    shape = tuple(inputs[0].shape)
    if shape[1] is not None and shape[2] is not None:
        return {}  # static shapes already say it all
    names = activation_layers(model)
    if not names:
        return {}
    try:
        multi = keras.Model(inputs[0], [_layer_output(model.get_layer(n)) for n in names])
    except Exception:  # unusual graphs: shapes stay '?'
        return {}
    res = _resolutions(multi, shape[-1], (None, None))
    return dict(zip(names, res, strict=True)) if res else {}


def layer_table(model: Any) -> list[LayerInfo]:
    """One :class:`LayerInfo` per entry of ``model.layers`` (the InputLayer included if listed).

    The ``params`` column sums to ``model.count_params()``. An ONNX model gets one row per
    node (:func:`unet_core.onnx_introspect.layer_table`).
    """
    if is_onnx(model):
        from . import onnx_introspect

        return onnx_introspect.layer_table(model)
    model = _keras_model(model)
    try:
        return _layer_table(model)
    except RecursionError:
        raise UnetCoreError(
            f"model {_safe_name(model)}: its layers are nested too deeply to list") from None


def _safe_name(model: Any) -> str:
    name = str(getattr(model, "name", "model"))
    return repr(name if len(name) <= 60 else name[:57] + "...")


def _layer_table(model: Any) -> list[LayerInfo]:
    res = _table_resolutions(model)
    rows: list[LayerInfo] = []
    for i, layer in enumerate(model.layers):
        params = int(sum(int(np.prod(w.shape)) for w in layer.weights))
        trainable = int(sum(int(np.prod(w.shape)) for w in layer.trainable_weights))
        rows.append(LayerInfo(
            index=i,
            name=layer.name,
            type=type(layer).__name__,
            output_shape=_output_shape(layer),
            params=params,
            trainable_params=trainable,
            has_kernel=bool(_kernel_vars(layer)),
            is_conv=_is_conv(layer),
            kernel_shape=_kernel_shape(layer),
            resolution=res.get(layer.name, (1.0, 1.0) if _is_input_layer(layer) else None),
        ))
    return rows


def format_layer_table(model: Any) -> str:
    """Fixed-width text table of :func:`layer_table` with a total-parameters footer."""
    infos = layer_table(model)
    rows = [r.as_row() for r in infos]
    headers = ["#", "name", "type", "output shape", "params", "kernel"]
    right = {"#", "params"}
    cells = [[f"{r[h]:,}" if h == "params" else str(r[h]) for h in headers] for r in rows]
    widths = [max([len(h)] + [len(c[j]) for c in cells]) for j, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if h in right else v.ljust(w)
                 for v, w, h in zip(values, widths, headers, strict=True)]
        return "  ".join(parts).rstrip()

    rule = "-" * len(line(["-" * w for w in widths]))
    out = [line(headers), rule] + [line(c) for c in cells] + [rule]
    total = sum(r["params"] for r in rows)
    trainable = sum(r.trainable_params for r in infos)
    out.append(f"{len(rows)} layers, total params: {total:,} (trainable: {trainable:,}, "
               f"non-trainable: {total - trainable:,})")
    return "\n".join(out)


def conv_layers(model: Any) -> list[str]:
    """Names of layers with 2-D spatial kernels, in model order.

    Conv2D, Conv2DTranspose, DepthwiseConv2D and SeparableConv2D (its depthwise part); for an
    ONNX model, Conv and ConvTranspose nodes with a stored (initializer) weight.
    """
    if is_onnx(model):
        from . import onnx_introspect

        return onnx_introspect.conv_layers(model)
    model = _keras_model(model)
    return [layer.name for layer in model.layers if _is_conv(layer)]


def activation_layers(model: Any) -> list[str]:
    """Names of layers whose output is a 4-D (N, H, W, C) map, in model order (no InputLayer);
    for an ONNX model, the nodes with a 4-D float output (either layout)."""
    if is_onnx(model):
        from . import onnx_introspect

        return onnx_introspect.activation_layers(model)
    model = _keras_model(model)
    names = []
    for layer in model.layers:
        if _is_input_layer(layer):
            continue
        out = _layer_output(layer)
        if out is not None and len(out.shape) == 4:
            names.append(layer.name)
    return names


# -- kernels -------------------------------------------------------------------------------------
@dataclass
class Kernels:
    """A conv layer's kernels with axes always (kh, kw, in, out).

    Attributes:
        layer: layer name.
        type: Keras class name.
        weights: float32 (kh, kw, in_channels, out_channels). Conv2DTranspose kernels are
            transposed from Keras' (kh, kw, out, in). DepthwiseConv2D kernels (and the depthwise
            part of SeparableConv2D), stored as (kh, kw, C, m), become (kh, kw, 1, C*m): each
            output channel ``c*m + j`` sees only input channel ``c``. Grouped Conv2D kernels
            keep in = input channels per group.
        bias: float32 (out,), or None (no bias; SeparableConv2D's bias follows its pointwise part).
        stats: one dict per output filter: {"filter", "mean", "std", "min", "max", "l2_norm",
            "abs_mean"} over that filter's kh*kw*in weights (std: population, ddof 0).
    """

    layer: str
    type: str
    weights: np.ndarray
    bias: np.ndarray | None
    stats: list[dict[str, float]]

    @property
    def kernel_size(self) -> tuple[int, int]:
        return int(self.weights.shape[0]), int(self.weights.shape[1])

    @property
    def in_channels(self) -> int:
        return int(self.weights.shape[2])

    @property
    def out_channels(self) -> int:
        return int(self.weights.shape[3])

    def filter(self, out_index: int, in_index: int = 0) -> np.ndarray:
        """The (kh, kw) float32 kernel from input channel ``in_index`` to filter ``out_index``."""
        o = _check_index(out_index, self.out_channels, "output filter", self.layer)
        i = _check_index(in_index, self.in_channels, "input channel", self.layer)
        return self.weights[:, :, i, o]


def _check_index(value: Any, n: int, what: str, layer: str) -> int:
    """``value`` as an int in 0..n-1, else a UnetCoreError naming the valid range."""
    try:
        idx = operator.index(value)
    except TypeError:
        raise UnetCoreError(
            f"{what} index {value!r} of layer {layer!r} is not an integer; accepted: "
            f"0..{n - 1}") from None
    if not 0 <= idx < n:
        raise UnetCoreError(
            f"{what} index {idx} is out of range for layer {layer!r}; accepted: 0..{n - 1}")
    return idx


def filter_stats(weights: np.ndarray) -> list[dict[str, float]]:
    """Per-output-filter statistics of (kh, kw, in, out) weights (computed in float64)."""
    w = np.asarray(weights, dtype=np.float64)
    flat = w.reshape(-1, w.shape[-1])
    if flat.shape[0] == 0:
        raise UnetCoreError(f"kernel of shape {w.shape} is empty")
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    l2 = np.sqrt((flat**2).sum(axis=0))
    absm = np.abs(flat).mean(axis=0)
    return [
        {"filter": int(k), "mean": float(mean[k]), "std": float(std[k]), "min": float(lo[k]),
         "max": float(hi[k]), "l2_norm": float(l2[k]), "abs_mean": float(absm[k])}
        for k in range(flat.shape[1])
    ]


def unknown_layer(layer_name: str, model_name: str, accepted: list[str], what: str
                  ) -> UnetCoreError:
    """The one-line error for a layer name the model does not have, listing ``accepted``."""
    return UnetCoreError(f"no layer named {layer_name!r} in model {model_name!r}; accepted: "
                         f"{what} {_name_list(accepted)}")


def _resolve_layer(model: Any, layer_name: str, accepted: list[str], what: str) -> Any:
    layer = _find_layer(model, layer_name)
    if layer is None:
        raise unknown_layer(layer_name, model.name, accepted, what)
    return layer


def get_kernels(model: Any, layer_name: str) -> Kernels:
    """The kernels of conv layer ``layer_name`` as :class:`Kernels` (float32, (kh, kw, in, out)).

    Raises UnetCoreError for an unknown name or a layer without a 2-D spatial kernel, listing
    the conv layers that are accepted. ONNX: :func:`unet_core.onnx_introspect.get_kernels`.
    """
    if is_onnx(model):
        from . import onnx_introspect

        return onnx_introspect.get_kernels(model, layer_name)
    model = _keras_model(model)
    convs = conv_layers(model)
    layer = _resolve_layer(model, layer_name, convs, "conv layers")
    if not _is_conv(layer):
        raise UnetCoreError(
            f"layer {layer_name!r} ({type(layer).__name__}) has no 2-D spatial kernel; "
            f"accepted: conv layers {_name_list(convs)}")
    cls = _conv_type(layer)
    raw = np.asarray(_conv_kernel_var(layer).numpy(), dtype=np.float32)
    if cls == "Conv2DTranspose":
        weights = raw.transpose(0, 1, 3, 2)
    elif cls in ("DepthwiseConv2D", "SeparableConv2D"):
        kh, kw, c, m = raw.shape
        weights = raw.reshape(kh, kw, 1, c * m)
    else:
        weights = raw
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    bias = None
    bias_var = getattr(layer, "bias", None)
    if cls != "SeparableConv2D" and bias_var is not None:
        bias = np.asarray(bias_var.numpy(), dtype=np.float32).reshape(-1)
    return Kernels(layer=layer.name, type=type(layer).__name__, weights=weights, bias=bias,
                   stats=filter_stats(weights))


def weight_histogram(model: Any, layer_name: str, bins: int = 50
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of all kernel weights of a layer (bias excluded; SeparableConv2D: both parts).

    Any layer with a kernel is accepted (Conv*, Dense). Non-finite weights are left out.
    Returns counts int64 (bins,) and edges float64 (bins + 1,).
    """
    if is_onnx(model):
        from . import onnx_introspect

        return onnx_introspect.weight_histogram(model, layer_name, bins)
    model = _keras_model(model)
    with_kernel = [layer.name for layer in model.layers if _kernel_vars(layer)]
    layer = _resolve_layer(model, layer_name, with_kernel, "layers with kernels")
    kernels = _kernel_vars(layer)
    if not kernels:
        raise UnetCoreError(
            f"layer {layer_name!r} ({type(layer).__name__}) has no kernel weights; accepted: "
            f"layers with kernels {_name_list(with_kernel)}")
    return histogram_of([v.numpy() for v in kernels.values()], bins)


def histogram_of(arrays: Sequence[np.ndarray], bins: Any) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of the finite values of ``arrays`` (any shapes, flattened together) ->
    counts int64 (bins,), edges float64 (bins + 1,); all-NaN or empty input gives zero counts
    over [0, 1]. ``bins`` must be an integer >= 1."""
    try:
        nbins = operator.index(bins)
    except TypeError:
        nbins = 0
    if nbins < 1:
        raise UnetCoreError(f"bins={bins!r} is not valid; accepted: an integer >= 1")
    values = np.concatenate([np.asarray(a, dtype=np.float32).reshape(-1) for a in arrays])
    values = values[np.isfinite(values)]
    if values.size == 0:
        counts, edges = np.histogram(values, bins=nbins, range=(0.0, 1.0))
    else:
        counts, edges = np.histogram(values, bins=nbins)
    return counts.astype(np.int64), edges.astype(np.float64)


# -- activations ---------------------------------------------------------------------------------
@dataclass
class ChannelStats:
    """Statistics of one channel of a layer's activation maps.

    ``zero_fraction`` is the share of values that are exactly 0 (a dead ReLU channel has 1.0).
    """

    channel: int
    mean: float
    std: float
    min: float
    max: float
    zero_fraction: float


def channel_stats(maps: np.ndarray) -> list[ChannelStats]:
    """Per-channel statistics of (H, W, C) maps (computed in float64), one per channel."""
    arr = np.asarray(maps)
    if arr.ndim != 3:
        raise UnetCoreError(
            f"activation maps have shape {arr.shape}; accepted: (H, W, C) maps of one image")
    if arr.shape[0] * arr.shape[1] == 0:
        raise UnetCoreError(f"activation maps of shape {arr.shape} are empty")
    flat = arr.reshape(-1, arr.shape[2])
    f64 = flat.astype(np.float64)
    mean, std = f64.mean(axis=0), f64.std(axis=0)
    lo, hi = f64.min(axis=0), f64.max(axis=0)
    zero = (flat == 0).mean(axis=0)
    return [ChannelStats(channel=c, mean=float(mean[c]), std=float(std[c]), min=float(lo[c]),
                         max=float(hi[c]), zero_fraction=float(zero[c]))
            for c in range(flat.shape[1])]


def layer_activation(model: Any, layer_name: str) -> str:
    """The activation function a layer ends with: 'relu', 'sigmoid', 'softmax', 'linear', ...

    Read from the layer's ``activation`` setting (Conv2D, Dense, Activation) or its class
    (ReLU, LeakyReLU, Softmax, ...); 'linear' when it applies none, '' when unknown (e.g.
    a name that is not a layer of the model). ONNX: 'relu' for a Relu node, and so on.
    """
    if is_onnx(model):
        from . import onnx_introspect

        return onnx_introspect.layer_activation(model, layer_name)
    layer = _find_layer(_keras_model(model), layer_name)
    if layer is None:
        return ""
    by_class = {"ReLU": "relu", "LeakyReLU": "leaky_relu", "Softmax": "softmax",
                "ELU": "elu", "PReLU": "prelu"}
    cls = type(layer).__name__
    if cls in by_class:
        return by_class[cls]
    act = getattr(layer, "activation", None)
    if act is None:
        return "linear"
    name = getattr(act, "__name__", "") or str(act)
    return str(name).lower()


def select_layers(accepted: list[str], layers: Sequence[str] | str | None, model_name: str,
                  what: str) -> list[str]:
    """The layers a probe takes: all ``accepted`` for None, else ``layers`` in model order
    without duplicates; UnetCoreError for a name not accepted or none at all (``what``
    describes the accepted ones, e.g. "layers with (N, H, W, C) outputs")."""
    if layers is None:
        names = list(accepted)
    else:
        if isinstance(layers, str):
            layers = [layers]
        wanted = list(dict.fromkeys(layers))
        bad = [n for n in wanted if n not in accepted]
        if bad:
            raise UnetCoreError(
                f"cannot probe layer(s) {', '.join(repr(b) for b in bad)}; accepted: {what} "
                f"{_name_list(accepted)}")
        keep = set(wanted)
        names = [n for n in accepted if n in keep]
    if not names:
        raise UnetCoreError(
            f"no layers to probe in model {model_name!r}; accepted: {what} "
            f"{_name_list(accepted)}")
    return names


class ActivationProbe:
    """ONE multi-output keras.Model over the selected layers, built once per probe and cached.

    A :meth:`run` is ONE forward pass that returns every selected layer's maps, so switching the
    displayed layer costs no forward pass (unlike keract, or building a model per layer per
    call). The pass goes through a ``tf.function`` with input signature (None, None, None, C),
    traced once for any input size.

    Args:
        model: keras.Model (or LoadedModel / Segmenter) with one 4-D image input.
        layers: layer names to probe (default: all :func:`activation_layers`), kept in model
            order, duplicates dropped.
        max_bytes: refuse a run whose float32 maps would exceed this many bytes (estimated
            from each layer's resolution relative to the input before running); None: no cap.

    Attributes:
        forward_passes: number of network passes run so far (one per :meth:`run`).

    For an ONNX model the constructor returns an
    :class:`~unet_core.onnx_introspect.OnnxActivationProbe` (a subclass, same interface) whose
    ONNX Runtime session over the graph and the chosen outputs is cached per model and set of
    layers.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> ActivationProbe:
        model = args[0] if args else kwargs.get("model")
        if cls is ActivationProbe and is_onnx(model):
            from .onnx_introspect import OnnxActivationProbe

            return super().__new__(OnnxActivationProbe)  # its __init__ runs next
        return super().__new__(cls)

    def __init__(self, model: Any, layers: Sequence[str] | None = None,
                 max_bytes: int | None = DEFAULT_MAX_BYTES) -> None:
        import keras
        import tensorflow as tf

        self.model = _keras_model(model)
        inputs = getattr(self.model, "inputs", None)
        if not inputs or len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise UnetCoreError(
                f"model {self.model.name!r} cannot be probed: accepted: a built model with one "
                "image input (N, H, W, C)")
        accepted = activation_layers(self.model)
        names = select_layers(accepted, layers, self.model.name,
                              "layers with (N, H, W, C) outputs")
        self._names = names
        self.max_bytes = max_bytes
        self.forward_passes = 0
        in_shape = tuple(inputs[0].shape)
        self._channels = in_shape[-1]
        self._fixed_hw = (in_shape[1], in_shape[2])
        outputs = [_layer_output(self.model.get_layer(n)) for n in names]
        self._probe = keras.Model(inputs=inputs[0], outputs=outputs,
                                  name=f"{self.model.name}_probe")
        self._out_channels = [int(o.shape[-1]) for o in outputs]
        self._scales = _resolutions(self._probe, self._channels, self._fixed_hw) or [
            (1.0, 1.0)] * len(names)  # unknown: assume full resolution
        probe = self._probe
        spec = tf.TensorSpec([None, None, None, self._channels], tf.float32)

        @tf.function(input_signature=[spec], reduce_retracing=True)
        def forward(x: Any) -> Any:
            return probe(x, training=False)

        self._forward = forward

    @property
    def layer_names(self) -> list[str]:
        """Names of the probed layers, in model order."""
        return list(self._names)

    def estimate_bytes(self, height: int, width: int) -> int:
        """Estimated bytes of the float32 maps that :meth:`run` returns for an (H, W) input."""
        total = 0
        for (sh, sw), c in zip(self._scales, self._out_channels, strict=True):
            total += math.ceil(height * sh) * math.ceil(width * sw) * c * 4
        return total

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        arr = np.asarray(x)
        c = self._channels
        if arr.ndim == 2 and c == 1:
            arr = arr[..., None]
        bad_c = c is not None and arr.ndim == 3 and arr.shape[-1] != c
        if arr.ndim != 3 or bad_c or arr.shape[0] == 0 or arr.shape[1] == 0:
            want = "(Hp, Wp)" if c == 1 else f"(Hp, Wp, {c})"
            raise UnetCoreError(
                f"probe input has shape {arr.shape}; accepted: one prepared image {want} "
                "(see Segmenter.prepare)")
        fh, fw = self._fixed_hw
        if (fh is not None and arr.shape[0] != fh) or (fw is not None and arr.shape[1] != fw):
            raise UnetCoreError(
                f"probe input is {arr.shape[0]}x{arr.shape[1]}; accepted: the network's fixed "
                f"size {fh}x{fw} (pad it with Segmenter.prepare)")
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _check_budget(self, arr: np.ndarray) -> None:
        """Refuse (UnetCoreError) an input whose maps would exceed ``max_bytes``."""
        if self.max_bytes is None:
            return
        need = self.estimate_bytes(arr.shape[0], arr.shape[1])
        if need > self.max_bytes:
            raise UnetCoreError(
                f"activation maps of {len(self._names)} layers for a {arr.shape[0]}x"
                f"{arr.shape[1]} input would take about {need / 2**20:,.0f} MiB, over the "
                f"{self.max_bytes / 2**20:,.0f} MiB limit; accepted: a smaller image or "
                "fewer layers (ActivationProbe(model, layers=[...]))")

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """One forward pass: a prepared input float32 (Hp, Wp, C) as
        :meth:`Segmenter.prepare <unet_core.inference.Segmenter.prepare>` returns it (C the
        network's input channels; a 1-channel network also takes (Hp, Wp)) ->
        {layer: float32 (h, w, channels of that layer)}.

        Every probed layer's maps come back (batch axis removed; h, w at that layer's
        resolution, e.g. Hp / 4 after two 2x poolings). Raises UnetCoreError if the maps would
        exceed ``max_bytes``.
        """
        arr = self._check_input(x)
        self._check_budget(arr)
        try:
            outs = self._forward(arr[None])
        except Exception:  # noqa: BLE001 - e.g. layer names a TF graph refuses: run eagerly
            log.info("probe of %s: graph trace failed, running eagerly", self.model.name,
                     exc_info=True)
            try:
                outs = self._probe(arr[None], training=False)
            except RecursionError:
                raise UnetCoreError("the model is nested too deeply to probe") from None
            except Exception as exc:  # noqa: BLE001 - one line; details in the log
                raise probe_failure(self.model.name, arr.shape, exc) from None
        self.forward_passes += 1
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        return {name: np.asarray(o.numpy()[0]).astype(np.float32, copy=False)
                for name, o in zip(self._names, outs, strict=True)}


def probe_failure(model_name: str, shape: tuple[int, ...], exc: BaseException
                  ) -> UnetCoreError:
    """Log a failed probe pass (with its traceback) and return its one-line error."""
    log.error("probe of %s failed", model_name, exc_info=exc)
    return UnetCoreError(
        f"the activation probe could not run this model on a {shape[0]}x{shape[1]} input "
        f"({type(exc).__name__}; details in the server log)")


def crop_activation(maps: np.ndarray, box: PadBox, padded_shape: tuple[int, int]
                    ) -> np.ndarray:
    """Crop a layer's (h, w[, C]) maps to the part that shows the original image.

    ``box`` (top, left, height, width in padded-input pixels, from Segmenter.prepare) is scaled
    by h / Hp and w / Wp and rounded outward, so a 101x101 image padded to 128 (top 14) keeps
    rows 14..114 at stride 1 and rows 3..28 (of 32) at stride 4. Returns a view of ``maps``.
    """
    arr = np.asarray(maps)
    if arr.ndim not in (2, 3):
        raise UnetCoreError(
            f"activation maps have shape {arr.shape}; accepted: (h, w) or (h, w, C)")
    try:
        hp, wp = (int(v) for v in padded_shape)
    except (TypeError, ValueError):
        raise UnetCoreError(
            f"padded_shape {padded_shape!r} is not valid; accepted: (Hp, Wp)") from None
    if not (box.top >= 0 and box.left >= 0 and box.height > 0 and box.width > 0
            and box.top + box.height <= hp and box.left + box.width <= wp):
        raise UnetCoreError(
            f"pad box {box} does not fit the padded size {hp}x{wp}; accepted: the box and "
            "padded shape returned together by Segmenter.prepare")
    h, w = arr.shape[:2]

    def span(start: int, length: int, size: int, padded: int) -> tuple[int, int]:
        lo = (start * size) // padded
        hi = -(-((start + length) * size) // padded)
        lo, hi = max(0, min(lo, size)), max(0, min(hi, size))
        if hi <= lo:  # keep at least one row/column
            lo = min(lo, size - 1)
            hi = lo + 1
        return lo, hi

    t, b = span(box.top, box.height, h, hp)
    left, r = span(box.left, box.width, w, wp)
    return arr[t:b, left:r]


#: Models with more layers than this get their FLOPs estimated from the config (no graph).
MAX_PROFILED_LAYERS = 300


def model_flops(model: Any, height: int, width: int) -> int:
    """Floating-point operations of one forward pass on a (1, height, width, C) input.

    Counted by TensorFlow's profiler on the frozen graph of the pass (a multiply-add counts as
    2 operations; convolutions dominate). Divide by a machine's FLOP/s for the time floor.
    A model over :data:`MAX_PROFILED_LAYERS` layers or over ``UNET_MAX_PARAMS`` parameters,
    or one whose graph the profiler cannot build (e.g. layer names a TF graph refuses), is
    counted from its config instead (:meth:`unet_core.budget.Estimate.flops`: convolutions
    and dense layers), so the count never builds a huge graph. An ONNX model is counted from
    its graph's convolutions (:meth:`unet_core.onnx_graph.OnnxGraph.estimate`).
    """
    if is_onnx(model):
        from . import onnx_introspect

        return onnx_introspect.model_flops(model, height, width)
    from . import budget

    keras_model = _keras_model(model)
    est = budget.model_estimate(keras_model)
    try:
        n_layers = len(keras_model.layers)
        params = int(keras_model.count_params())
    except Exception:  # noqa: BLE001 - unbuilt or odd models
        n_layers, params = 0, 0
    big = n_layers > MAX_PROFILED_LAYERS or params > budget.max_params()
    if est is not None and big:
        return est.flops(height, width)
    try:
        return _profiled_flops(keras_model, height, width)
    except RecursionError:
        if est is not None:
            return est.flops(height, width)
        raise UnetCoreError("the model is nested too deeply to count its operations") from None
    except Exception as exc:  # noqa: BLE001 - the profiler's graph failed: estimate instead
        log.info("FLOP profile of %s failed; estimating from the config", keras_model.name,
                 exc_info=True)
        if est is not None:
            return est.flops(height, width)
        raise UnetCoreError(
            f"cannot count the operations of this model ({type(exc).__name__}; details in "
            "the server log)") from None


def _profiled_flops(keras_model: Any, height: int, width: int) -> int:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )
    from tensorflow.python.profiler.model_analyzer import profile
    from tensorflow.python.profiler.option_builder import ProfileOptionBuilder

    channels = keras_model.inputs[0].shape[-1] or 1
    spec = tf.TensorSpec([1, height, width, channels], tf.float32)
    concrete = tf.function(lambda x: keras_model(x, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    opts = (ProfileOptionBuilder(ProfileOptionBuilder.float_operation())
            .with_empty_output().build())
    return int(profile(frozen.graph, options=opts).total_float_ops)
