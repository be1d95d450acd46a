"""Look inside an ONNX U-Net: its nodes, its convolution filters and its activation maps.

The functions of :mod:`unet_core.introspect` hand an ONNX model (an
:class:`~unet_core.onnx_graph.OnnxGraph`, or a LoadedModel / Segmenter holding one) to this
module; the results have the same types as for a Keras model:

* **Layers are nodes.** A node's layer name is its node name when that is non-empty and
  unique, else its first output tensor's name. :func:`layer_table` lists every node with its op
  type, its first output's shape from ONNX shape inference (in the graph's own axis order,
  dynamic sides relative to the input: '(16, H/2, W/2)' for an NCHW node), the elements of the
  float initializers it is the first node to read (so the column sums to
  ``graph.count_params()``) and its kernel shape (kh x kw x in x out for Conv/ConvTranspose).
* **Filters** (:func:`get_kernels`) come from the weight initializer of a Conv (ONNX
  (out, in/groups, kh, kw)) or ConvTranspose ((in, out/groups, kh, kw)), transposed to
  (kh, kw, in, out) like Keras kernels.
* **Activations** (:class:`OnnxActivationProbe`, which ``ActivationProbe(model, ...)`` returns
  for an ONNX model): the chosen nodes' output tensors are added as graph outputs to a copy of
  the graph, and ONE ONNX Runtime session over that copy runs the image once and returns every
  chosen map as (h, w, c). Sessions come from a module-level cache keyed by the model file's
  hash and the chosen outputs, bounded by ``UNET_MAX_PROBE_SESSIONS`` (default 4, least
  recently used dropped first); :func:`probe_sessions_created` counts the sessions built.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import budget
from .errors import UnetCoreError
from .introspect import (
    DEFAULT_MAX_BYTES,
    ActivationProbe,
    Kernels,
    LayerInfo,
    _name_list,
    filter_stats,
    histogram_of,
    probe_failure,
    select_layers,
    unknown_layer,
)
from .onnx_graph import _FLOAT_TYPES, OnnxGraph, _concrete_shapes, as_graph

log = logging.getLogger(__name__)

CONV_OPS: tuple[str, ...] = ("Conv", "ConvTranspose")
DEFAULT_MAX_PROBE_SESSIONS = 4
SECOND_SIZE: tuple[int, int] = (256, 640)
"""(H, W) of a second shape inference of a dynamic graph: a dim that differs from the one at
:data:`~unet_core.onnx_graph.PROBE_SIZE` depends on the input size and is shown relative."""

#: Activation functions by op type (what :func:`layer_activation` names).
_ACTIVATIONS: dict[str, str] = {
    "Relu": "relu", "LeakyRelu": "leaky_relu", "PRelu": "prelu", "Elu": "elu", "Selu": "selu",
    "Celu": "celu", "Sigmoid": "sigmoid", "HardSigmoid": "hard_sigmoid", "Softmax": "softmax",
    "LogSoftmax": "log_softmax", "Tanh": "tanh", "Softplus": "softplus",
    "Softsign": "softsign", "Gelu": "gelu", "Mish": "mish", "HardSwish": "hard_swish",
    "ThresholdedRelu": "thresholded_relu", "Clip": "clip",
}
_UNREAD = "(initializers no node reads)"


def max_probe_sessions() -> int:
    """``UNET_MAX_PROBE_SESSIONS`` or 4: probe sessions kept at once (each holds a copy of a
    model's weights)."""
    return budget._env_int("UNET_MAX_PROBE_SESSIONS", DEFAULT_MAX_PROBE_SESSIONS)


# -- the graph's nodes as layers -----------------------------------------------------------------
@dataclass
class _Node:
    index: int
    name: str  # layer name
    proto: Any

    @property
    def op(self) -> str:
        return str(self.proto.op_type)


class _Index:
    """The nodes of a graph with their layer names and the constant tensors they read."""

    def __init__(self, graph: OnnxGraph) -> None:
        self.graph = graph
        nodes = list(graph.proto.graph.node)
        counts: dict[str, int] = {}
        for n in nodes:
            counts[n.name] = counts.get(n.name, 0) + 1
        used: set[str] = set()
        self.nodes: list[_Node] = []
        for i, n in enumerate(nodes):
            name = n.name if n.name and counts[n.name] == 1 else (
                n.output[0] if n.output and n.output[0] else f"node {i}")
            if name in used:
                name = f"{name} #{i}"
            used.add(name)
            self.nodes.append(_Node(i, name, n))
        self.by_name = {n.name: n for n in self.nodes}
        self.inits = {t.name: t for t in graph.proto.graph.initializer}
        self.consts: dict[str, Any] = {}  # Constant node outputs holding a tensor value
        self.identity: dict[str, str] = {}  # Identity output -> its input
        for n in nodes:
            if n.op_type == "Constant" and n.output:
                for a in n.attribute:
                    if a.name == "value" and a.HasField("t"):
                        self.consts[n.output[0]] = a.t
            elif n.op_type == "Identity" and n.input and n.output:
                self.identity[n.output[0]] = n.input[0]

    def const(self, name: str) -> Any:
        """The TensorProto behind tensor ``name`` (an initializer, a Constant node's value, or
        either through Identity nodes), or None when it is computed."""
        for _ in range(16):
            if name in self.inits:
                return self.inits[name]
            if name in self.consts:
                return self.consts[name]
            if name not in self.identity:
                return None
            name = self.identity[name]
        return None

    def array(self, tensor: Any) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(tensor, base_dir=str(self.graph.path.parent))

    def output(self, node: _Node) -> str | None:
        """The node's first 4-D float output tensor (one of ``graph.tensors``), or None."""
        return next((o for o in node.proto.output if o in self.graph.tensors), None)

    def weight(self, node: _Node) -> Any:
        """A Conv/ConvTranspose node's 4-D float weight tensor, or None."""
        if node.op not in CONV_OPS or len(node.proto.input) < 2:
            return None
        w = self.const(node.proto.input[1])
        if w is None or len(w.dims) != 4 or int(w.data_type) not in _FLOAT_TYPES:
            return None
        return w

    def kernels(self, node: _Node) -> list[Any]:
        """The node's float constant inputs of 2 or more dims (weights; biases excluded)."""
        if node.op in CONV_OPS:
            w = self.weight(node)
            return [w] if w is not None else []
        out = []
        for i in node.proto.input:
            t = self.const(i) if i else None
            if t is not None and len(t.dims) >= 2 and int(t.data_type) in _FLOAT_TYPES:
                out.append(t)
        return out

    def find(self, name: str) -> _Node | None:
        return self.by_name.get(name)


def _index(model: Any) -> _Index:
    return _Index(as_graph(model))


def _conv_kernel_shape(op: str, dims: Sequence[int]) -> tuple[int, int, int, int]:
    """(kh, kw, in, out) of a Conv weight (out, in/g, kh, kw) or a ConvTranspose weight
    (in, out/g, kh, kw)."""
    a, b, kh, kw = (int(d) for d in dims)
    return (kh, kw, b, a) if op == "Conv" else (kh, kw, a, b)


def _dynamic_shapes(graph: OnnxGraph) -> dict[str, tuple]:
    """Every tensor's shape with the dims that depend on the input's dynamic sides (or batch)
    as None: shapes from a second inference at :data:`SECOND_SIZE` (batch 2) compared with
    ``graph.shapes``."""
    if graph.height is not None and graph.batch is not None:
        return dict(graph.shapes)
    h, w = (graph.height, graph.width) if graph.height is not None else SECOND_SIZE
    b = graph.batch if graph.batch is not None else 2
    dims = [b, graph.channels, h, w] if graph.layout == "nchw" else [b, h, w, graph.channels]
    other, _ = _concrete_shapes(graph.proto, graph.input_name, dims)
    out: dict[str, tuple] = {}
    for name, shape in graph.shapes.items():
        second = other.get(name)
        if second is None or len(second) != len(shape):
            out[name] = tuple(None for _ in shape)
        else:
            out[name] = tuple(a if a == b2 else None for a, b2 in zip(shape, second, strict=True))
    return out


def layer_table(model: Any) -> list[LayerInfo]:
    """One :class:`LayerInfo` per node, in graph order (see the module docstring); float
    initializers no node reads (e.g. only a subgraph's) get a last row of their own, so the
    ``params`` column sums to ``graph.count_params()``. BatchNormalization's running mean and
    variance count as non-trainable."""
    idx = _index(model)
    graph = idx.graph
    shapes = _dynamic_shapes(graph)
    float_inits = {k: t for k, t in idx.inits.items() if int(t.data_type) in _FLOAT_TYPES}
    seen: set[str] = set()
    rows: list[LayerInfo] = []
    for node in idx.nodes:
        params = trainable = 0
        for j, name in enumerate(node.proto.input):
            t = float_inits.get(name)
            if t is None or name in seen:
                continue
            seen.add(name)
            n = _numel(t)
            params += n
            if not (node.op == "BatchNormalization" and j in (3, 4)):
                trainable += n
        out = node.proto.output[0] if node.proto.output else ""
        facts = graph.tensors.get(idx.output(node) or "")
        if facts is not None:
            out = facts.name
        shape = tuple(shapes.get(out, ()))
        spatial = None
        if facts is not None and len(shape) == 4:
            spatial = (2, 3) if facts.layout == "nchw" else (1, 2)
        kernels = idx.kernels(node)
        weight = idx.weight(node)
        if weight is not None:
            kshape: tuple[int, ...] | None = _conv_kernel_shape(node.op, weight.dims)
        elif kernels:
            kshape = tuple(int(d) for d in kernels[0].dims)
        else:
            kshape = None
        rows.append(LayerInfo(
            index=node.index, name=node.name, type=node.op, output_shape=shape, params=params,
            trainable_params=trainable, has_kernel=bool(kernels), is_conv=weight is not None,
            kernel_shape=kshape, resolution=facts.scale if facts is not None else None,
            spatial_axes=spatial))
    unread = [t for k, t in float_inits.items() if k not in seen]
    if unread:
        n = sum(_numel(t) for t in unread)
        rows.append(LayerInfo(index=len(idx.nodes), name=_UNREAD, type="Initializer",
                              output_shape=(), params=n, trainable_params=n, has_kernel=False,
                              is_conv=False))
    return rows


def _numel(t: Any) -> int:
    return int(np.prod([int(d) for d in t.dims], dtype=np.int64)) if len(t.dims) else 1


def conv_layers(model: Any) -> list[str]:
    """Conv/ConvTranspose nodes with a 4-D constant weight (an initializer), in graph order."""
    idx = _index(model)
    return [n.name for n in idx.nodes if idx.weight(n) is not None]


def activation_layers(model: Any) -> list[str]:
    """Nodes with a 4-D float output (shape inference), in graph order."""
    idx = _index(model)
    return [n.name for n in idx.nodes if idx.output(n) is not None]


def _resolve(idx: _Index, name: str, accepted: list[str], what: str) -> _Node:
    node = idx.find(name)
    if node is None:
        raise unknown_layer(name, idx.graph.name, accepted, what)
    return node


def get_kernels(model: Any, layer_name: str) -> Kernels:
    """A Conv/ConvTranspose node's weights as :class:`Kernels` (float32 (kh, kw, in, out)).

    Conv weights (out, in/groups, kh, kw) are transposed (2, 3, 1, 0); ConvTranspose weights
    (in, out/groups, kh, kw) are transposed (2, 3, 0, 1). A depthwise Conv (groups = channels)
    gives in = 1 like a Keras DepthwiseConv2D. The bias is the node's third input, if constant.
    """
    idx = _index(model)
    convs = [n.name for n in idx.nodes if idx.weight(n) is not None]
    node = _resolve(idx, layer_name, convs, "conv layers")
    weight = idx.weight(node)
    if weight is None:
        why = ("its weight is computed in the graph, not stored" if node.op in CONV_OPS
               else "has no 2-D spatial kernel")
        raise UnetCoreError(
            f"layer {layer_name!r} ({node.op}) {why}; accepted: conv layers {_name_list(convs)}")
    raw = np.asarray(idx.array(weight), dtype=np.float32)
    perm = (2, 3, 1, 0) if node.op == "Conv" else (2, 3, 0, 1)
    weights = np.ascontiguousarray(raw.transpose(perm), dtype=np.float32)
    bias = None
    if len(node.proto.input) > 2 and node.proto.input[2]:
        b = idx.const(node.proto.input[2])
        if b is not None and int(b.data_type) in _FLOAT_TYPES:
            bias = np.asarray(idx.array(b), dtype=np.float32).reshape(-1)
    return Kernels(layer=node.name, type=node.op, weights=weights, bias=bias,
                   stats=filter_stats(weights))


def weight_histogram(model: Any, layer_name: str, bins: int = 50
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of a node's weights (its constant inputs of 2+ dims; biases excluded)."""

    idx = _index(model)
    with_kernel = [n.name for n in idx.nodes if idx.kernels(n)]
    node = _resolve(idx, layer_name, with_kernel, "layers with kernels")
    kernels = idx.kernels(node)
    if not kernels:
        raise UnetCoreError(
            f"layer {layer_name!r} ({node.op}) has no kernel weights; accepted: layers with "
            f"kernels {_name_list(with_kernel)}")
    return histogram_of([idx.array(t) for t in kernels], bins)


def layer_activation(model: Any, layer_name: str) -> str:
    """'relu' for a Relu node, 'sigmoid', 'softmax', ... for the other activation ops,
    'linear' for any other node, '' for a name that is not a node."""
    node = _index(model).find(layer_name)
    if node is None:
        return ""
    return _ACTIVATIONS.get(node.op, "linear")


def model_flops(model: Any, height: int, width: int) -> int:
    """Operations of one forward pass on an (height, width) input, counted from the graph's
    convolutions (:meth:`unet_core.onnx_graph.OnnxGraph.estimate`; a multiply-add counts 2)."""
    return as_graph(model).estimate().flops(height, width)


# -- activations ---------------------------------------------------------------------------------
_SESSIONS: OrderedDict[tuple[str, tuple[str, ...]], Any] = OrderedDict()
_SESSIONS_LOCK = threading.Lock()
_CREATED = 0


def probe_sessions_created() -> int:
    """How many probe sessions this process has built (the cache's misses)."""
    return _CREATED


def probe_sessions_cached() -> int:
    """How many probe sessions the cache holds now."""
    with _SESSIONS_LOCK:
        return len(_SESSIONS)


def clear_probe_sessions() -> None:
    """Drop every cached probe session."""
    with _SESSIONS_LOCK:
        _SESSIONS.clear()


def probe_session(graph: OnnxGraph, outputs: Sequence[str]) -> Any:
    """The cached ONNX Runtime session over ``graph`` with ``outputs`` added as graph outputs,
    built on a miss (one at a time) and kept among the :func:`max_probe_sessions` most
    recently used."""
    from .onnx_graph import model_bytes_with_outputs, session_for

    global _CREATED
    key = (graph.key, tuple(outputs))
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is not None:
            _SESSIONS.move_to_end(key)
            return session
        try:
            session = session_for(model_bytes_with_outputs(graph, list(outputs)))
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime refuses the copy: one line
            log.exception("probe session for %s failed", graph.path.name)
            raise UnetCoreError(
                f"{graph.path.name}: ONNX Runtime cannot build the activation probe "
                f"({type(exc).__name__}; details in the server log)") from None
        _CREATED += 1
        _SESSIONS[key] = session
        while len(_SESSIONS) > max_probe_sessions():
            _SESSIONS.popitem(last=False)
        return session


class OnnxActivationProbe(ActivationProbe):
    """The activation probe of an ONNX model: ``ActivationProbe(model, layers, max_bytes)``
    returns one for an OnnxGraph (or a LoadedModel / Segmenter holding one).

    Same interface as the Keras probe (``layer_names``, ``estimate_bytes``, ``run``,
    ``forward_passes``): a :meth:`run` is ONE ONNX Runtime pass over the graph with every chosen
    node's output added as a graph output; the session comes from :func:`probe_session`, so
    two probes over the same model and layers share it. Layers are node names
    (:func:`activation_layers`).
    """

    def __init__(self, model: Any, layers: Sequence[str] | None = None,
                 max_bytes: int | None = DEFAULT_MAX_BYTES) -> None:
        idx = _index(model)
        graph = idx.graph
        self.model = graph
        accepted = [n.name for n in idx.nodes if idx.output(n) is not None]
        self._names = select_layers(accepted, layers, graph.name,
                                    "nodes with 4-D float outputs")
        self._tensors = [idx.output(idx.by_name[n]) or "" for n in self._names]
        facts = [graph.tensors[t] for t in self._tensors]
        self._layouts = [f.layout for f in facts]
        self._out_channels = [int(f.channels) for f in facts]
        self._scales = [tuple(f.scale) for f in facts]
        self._channels = graph.channels
        self._fixed_hw = (graph.height, graph.width)
        self.max_bytes = max_bytes
        self.forward_passes = 0
        probe_session(graph, self._tensors)  # built (or found) now: errors show up here

    def _check_budget(self, arr: np.ndarray) -> None:
        """As for Keras, with a fixed batch B counted B times: ONNX Runtime computes the maps of
        the zero images the batch is padded with too."""
        batch = self.model.batch or 1
        if self.max_bytes is None or batch == 1:
            super()._check_budget(arr)
            return
        need = self.estimate_bytes(arr.shape[0], arr.shape[1]) * batch
        if need > self.max_bytes:
            raise UnetCoreError(
                f"activation maps of {len(self._names)} layers for a {arr.shape[0]}x"
                f"{arr.shape[1]} input, run in the graph's fixed batch of {batch}, would take "
                f"about {need / 2**20:,.0f} MiB, over the {self.max_bytes / 2**20:,.0f} MiB "
                "limit; accepted: fewer layers (ActivationProbe(model, layers=[...]))")

    @property
    def tensor_names(self) -> list[str]:
        """The output tensor of each probed layer, in the order of :attr:`layer_names`."""
        return list(self._tensors)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """One forward pass: a prepared input float32 (Hp, Wp, C) (a 1-channel network also
        takes (Hp, Wp)) -> {layer: float32 (h, w, channels of that layer)}, whatever the
        graph's layout. Raises UnetCoreError if the maps would exceed ``max_bytes``."""
        arr = self._check_input(x)
        self._check_budget(arr)
        graph: OnnxGraph = self.model
        session = probe_session(graph, self._tensors)
        try:
            outs = graph.run(session, arr[None], list(self._tensors))
        except Exception as exc:  # noqa: BLE001 - one line; details in the log
            raise probe_failure(graph.path.name, arr.shape, exc) from None
        self.forward_passes += 1
        maps: dict[str, np.ndarray] = {}
        for i, (name, layout) in enumerate(zip(self._names, self._layouts, strict=True)):
            y = np.asarray(outs[i])
            outs[i] = None  # type: ignore[call-overload]  # free each raw map once converted
            if y.ndim != 4:
                raise UnetCoreError(
                    f"layer {name!r} gave maps of shape {y.shape}; accepted: 4-D maps")
            one = y[0].transpose(1, 2, 0) if layout == "nchw" else y[0]
            maps[name] = np.ascontiguousarray(one, dtype=np.float32)
        return maps

