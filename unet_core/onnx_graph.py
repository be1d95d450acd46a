"""ONNX U-Nets (e.g. PyTorch's ``torch.onnx.export``): checking, reading and running a graph.

A ``.onnx`` file is loaded as an :class:`OnnxGraph`, which plays the part a ``keras.Model``
plays for Keras files: :func:`unet_core.model.load_model` wraps it in a ``LoadedModel`` with a
card, :mod:`unet_core.backends` runs it on ONNX Runtime, :mod:`unet_core.introspect` lists its
nodes, filters and activations.

What is read from the graph (never guessed when the graph says it):

* **Layout** of the image input: ``nhwc`` when the graph opens with a ``Transpose`` of perm
  (0, 3, 1, 2) (tf2onnx exports of Keras models) or the last input axis is the small one
  (1..64 channels, the other axes larger or dynamic); ``nchw`` when a ``Conv`` reads the input
  directly or the second axis is the small one (PyTorch). The output layout is read the same
  way from the output shape (``nchw`` (N, K, H, W), ``nhwc`` (N, H, W, K) or (N, H, W)).
* **Batch, height, width**: fixed (a number in the file) or dynamic (a name or nothing). A fixed
  batch B (an export traced with B images) is met by padding the batch with zeros to B.
* **Output kind**: walking back from the output through shape-only nodes (Reshape, Transpose,
  Squeeze, ...): a ``Sigmoid`` or ``Softmax`` means probabilities, anything else logits.
* **Shapes of every node** by ONNX shape inference with the input made concrete (the fixed size,
  or 512 x 384 for a dynamic one), which gives the stride, the per-node layouts, the layer
  table's shapes and the memory estimate of a forward pass (:class:`unet_core.budget.Estimate`).

Safety (ONNX holds no Python, but a file can point elsewhere): :func:`check_onnx` refuses, each
with one line, tensors whose data lie in external files outside the model's own folder (or
missing), operators of custom domains ONNX Runtime would need a plug-in library for, graphs over
``UNET_MAX_ONNX_NODES`` nodes (default 20,000) or ``UNET_MAX_PARAMS`` weights, tensors with
negative dimensions, more than one image input or output, non-float image inputs or outputs,
and outputs not the size of the input. :meth:`OnnxGraph.estimate` counts every tensor shape
inference sizes (constants at their absolute size, since ONNX Runtime may build them when it
loads the graph), so :func:`unet_core.budget.check_forward` refuses a graph that makes a huge
tensor (ConstantOfShape, Expand, a 1000x Resize) before it runs; a size that depends on the
data is left to :func:`unet_core.sandbox.vet_model`'s memory limit.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import budget
from .errors import ModelLoadError, ModelSpecError

ONNX_EXTENSIONS: tuple[str, ...] = (".onnx",)
KNOWN_DOMAINS: frozenset[str] = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
"""Operator domains ONNX Runtime runs without a plug-in library."""
DEFAULT_MAX_NODES = 20_000
LAYOUTS: tuple[str, ...] = ("nhwc", "nchw")
PROBE_SIZE: tuple[int, int] = (512, 384)
"""(H, W) a dynamic graph is made concrete with for shape inference (unequal, so the height and
width axes of every 4-D tensor can be told apart; multiples of 128)."""

# ops that only move values around: the output kind is read past them
_SHAPE_OPS = frozenset({"Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Flatten",
                        "Cast", "Slice", "Pad", "Crop"})
# ops whose 4-D output is NCHW whatever (the ONNX convention for images)
_NCHW_OPS = frozenset({"Conv", "ConvTranspose", "MaxPool", "AveragePool", "BatchNormalization",
                       "InstanceNormalization", "GlobalAveragePool", "GlobalMaxPool", "LpPool",
                       "DepthToSpace", "SpaceToDepth", "ConvInteger", "QLinearConv",
                       "GroupNormalization"})
_FLOAT_TYPES = {1: np.float32, 10: np.float16, 11: np.float64}  # TensorProto elem types
_TYPE_NAMES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64",
               9: "bool", 10: "float16", 11: "float64", 16: "bfloat16"}


def max_nodes() -> int:
    """``UNET_MAX_ONNX_NODES`` or 20,000 (a U-Net exported from PyTorch has 50-500)."""
    return budget._env_int("UNET_MAX_ONNX_NODES", DEFAULT_MAX_NODES)


def is_onnx(model: Any) -> bool:
    """Whether ``model`` is an :class:`OnnxGraph` (or a LoadedModel / Segmenter holding one)."""
    return isinstance(model, OnnxGraph) or isinstance(getattr(model, "model", None), OnnxGraph)


def as_graph(model: Any) -> OnnxGraph:
    """The :class:`OnnxGraph` of ``model`` (itself, or its ``.model``)."""
    return model if isinstance(model, OnnxGraph) else model.model


def _dims(value_info: Any) -> list[int | None]:
    """Static dims of a graph value (None for a named or missing dim)."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in t.shape.dim]


def _elem_type(value_info: Any) -> int:
    return int(value_info.type.tensor_type.elem_type)


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


@dataclass
class TensorFacts:
    """One 4-D image-like tensor of the graph after shape inference at :data:`PROBE_SIZE` (or
    the fixed size): its layout, its resolution relative to the network input and channels."""

    name: str
    layout: str  # "nchw" or "nhwc"
    scale: tuple[float, float]  # (h / H, w / W)
    channels: int
    shape: tuple[int, ...]  # (N, ., ., .) at the concrete size


@dataclass
class OnnxGraph:
    """A checked ONNX segmentation graph (weights left where they are) and what it says.

    Attributes:
        proto: the ``onnx.ModelProto`` (external data not loaded).
        path: the file.
        input_name, output_name: the image input and the output.
        layout, output_layout: ``nchw`` or ``nhwc`` (see the module docstring).
        batch: the fixed batch size, or None when dynamic.
        height, width: the fixed input size, or None when dynamic.
        channels: C input channels; classes: K output channels (1 = one map).
        input_dtype: numpy dtype the input takes (float32, float16 or float64).
        last_op: the op that makes the output (past shape-only ops), e.g. "Sigmoid", "Conv".
        layout_reason: how the layout was told, one sentence.
        tensors: 4-D tensors by name (see :class:`TensorFacts`).
        shapes: every tensor's shape at the concrete size (None dims unknown).
        types: every tensor's ONNX element type (1 float32, 10 float16, ...).
    """

    proto: Any
    path: Path
    input_name: str
    output_name: str
    layout: str
    output_layout: str
    batch: int | None
    height: int | None
    width: int | None
    channels: int
    classes: int
    input_dtype: Any
    last_op: str
    layout_reason: str
    tensors: dict[str, TensorFacts] = field(default_factory=dict)
    shapes: dict[str, tuple] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)
    _key: str | None = None
    _live: frozenset[str] | None = None

    @property
    def name(self) -> str:
        return self.proto.graph.name or self.path.stem

    @property
    def nodes(self) -> list[Any]:
        return list(self.proto.graph.node)

    @property
    def n_layers(self) -> int:
        """Number of nodes."""
        return len(self.proto.graph.node)

    def count_params(self) -> int:
        """Elements of float initializers (weights and biases; shape constants not counted)."""
        return int(sum(_numel(t) for t in self.proto.graph.initializer
                       if int(t.data_type) in _FLOAT_TYPES))

    def network_io(self) -> tuple[tuple, tuple]:
        """(input, output) shapes in NHWC terms: ((N, H, W, C), (N, H, W, K)), None = dynamic."""
        return ((self.batch, self.height, self.width, self.channels),
                (self.batch, self.height, self.width, self.classes))

    @property
    def key(self) -> str:
        """SHA-256 (32 hex digits) of the file and of any external data files it names."""
        if self._key is None:
            h = hashlib.sha256()
            for p in [self.path, *external_files(self.proto, self.path.parent)]:
                with open(p, "rb") as f:
                    for block in iter(lambda f=f: f.read(1 << 20), b""):
                        h.update(block)
            self._key = h.hexdigest()[:32]
        return self._key

    def stride(self) -> int:
        """Total downsampling: network input side / smallest 4-D tensor side (a power of two
        when the pools halve), 1 when unknown."""
        live = self.input_dependent()
        smallest = min((min(f.scale) for f in self.tensors.values() if f.name in live),
                       default=1.0)
        if smallest <= 0 or smallest >= 1:
            return 1
        return max(1, int(round(1.0 / smallest)))

    def input_dependent(self) -> frozenset[str]:
        """Names of the tensors computed from the image input (the others are constants that
        ONNX Runtime may fold when it loads the graph)."""
        if self._live is None:
            live = {self.input_name}
            for n in self.proto.graph.node:
                if any(i in live for i in n.input):
                    live.update(o for o in n.output if o)
            self._live = frozenset(live)
        return self._live

    def estimate(self) -> budget.Estimate:
        """Parameters, nodes and the size of every node output, with convolution operations per
        output pixel (a multiply-add counts 2).

        A 4-D image tensor computed from the input has its maps relative to the input (scales);
        any other tensor whose shape inference gave a size counts too, so a graph that makes a
        huge tensor (ConstantOfShape, Expand, Tile, a 1000x Resize) is refused before it runs:
        one that does not depend on the input at its absolute size (ONNX Runtime may build it
        when it loads the graph), one that does in proportion to the input's area (its size at
        :data:`PROBE_SIZE` or the fixed size)."""
        producers = {o: n for n in self.proto.graph.node for o in n.output}
        inits = {t.name: t for t in self.proto.graph.initializer}
        live = self.input_dependent()
        maps: list[tuple[float, float, int]] = []
        ops: list[int] = []
        for facts in self.tensors.values():
            if facts.name == self.input_name:
                continue
            if facts.name in live:
                maps.append((facts.scale[0], facts.scale[1], facts.channels))
            else:
                maps.append((-float(facts.shape[0] * facts.shape[1]),
                             -float(facts.shape[2] * facts.shape[3]), 1))
            node = producers.get(facts.name)
            ops.append(_conv_ops(node, inits) if node is not None else 0)
        hh, ww = (self.height, self.width) if self.height and self.width else PROBE_SIZE
        per = max(1, self.batch or 1)
        for name, shape in self.shapes.items():
            if (name in self.tensors or name == self.input_name or name in inits
                    or not shape or any(d is None for d in shape)):
                continue
            numel = math.prod(int(d) for d in shape)
            # float32-sized elements: int64 / float64 tensors count double
            numel *= 2 if self.types.get(name) in (7, 11) else 1
            if numel < 4096:
                continue
            if name in live:
                maps.append((1.0, numel / per / (hh * ww), 1))
            else:
                maps.append((-float(numel), -1.0, 1))
            ops.append(0)
        return budget.Estimate(params=self.count_params(), layers=self.n_layers, maps=maps,
                               ops=ops)

    def to_input(self, x: np.ndarray) -> np.ndarray:
        """(N, H, W, C) float32 -> the graph's layout and dtype."""
        if self.layout == "nchw":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=self.input_dtype)

    def run(self, session: Any, x: np.ndarray, outputs: list[str] | None = None
            ) -> list[np.ndarray]:
        """Run ``session`` on (N, H, W, C) float32 ``x`` -> the ``outputs`` (default: the image
        output) for the N images, batch-padded to a fixed batch and split into chunks of it."""
        names = outputs or [self.output_name]
        feed = self.to_input(x)
        n = len(feed)
        b = self.batch
        if b is None or b == n:
            return [np.asarray(y) for y in session.run(names, {self.input_name: feed})]
        parts: list[list[np.ndarray]] = []
        for i in range(0, n, b):
            chunk = feed[i:i + b]
            if len(chunk) < b:
                pad = np.zeros((b - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            ys = session.run(names, {self.input_name: chunk})
            parts.append([np.asarray(y)[:min(b, n - i)] for y in ys])
        return [np.concatenate([p[j] for p in parts]) for j in range(len(names))]

    def output_nhwk(self, y: np.ndarray) -> np.ndarray:
        """The image output as (N, H, W, K) float32."""
        y = np.asarray(y)
        if y.ndim == 4 and self.output_layout == "nchw":
            y = y.transpose(0, 2, 3, 1)
        elif y.ndim == 3:
            y = y[..., None]
        return y.astype(np.float32, copy=False)


def _numel(t: Any) -> int:
    """Elements of a TensorProto by its dims (exact, no int64 overflow)."""
    return math.prod(int(d) for d in t.dims)


def _conv_ops(node: Any, inits: dict[str, Any]) -> int:
    """Operations per output pixel (all output channels) of a Conv/ConvTranspose node."""
    if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2:
        return 0
    w = inits.get(node.input[1])
    if w is None or len(w.dims) != 4:
        return 0
    d = [int(v) for v in w.dims]
    if node.op_type == "Conv":  # (out, in/groups, kh, kw)
        return 2 * d[0] * d[1] * d[2] * d[3]
    strides = _attr(node, "strides", [1, 1]) or [1, 1]
    # (in, out/groups, kh, kw): 2 d0 d1 kh kw per input pixel, stride^2 output pixels each
    return max(1, 2 * d[0] * d[1] * d[2] * d[3] // max(1, int(np.prod(strides))))


# -- external data --------------------------------------------------------------------------------
def _tensors_with_data(proto: Any) -> list[Any]:
    """Every TensorProto that may carry data: initializers, sparse ones, Constant attributes
    (in the graph, its subgraphs and local functions)."""
    import onnx

    out: list[Any] = []

    def graph_tensors(g: Any) -> None:
        out.extend(g.initializer)
        for s in g.sparse_initializer:
            out.extend([s.values, s.indices])
        for n in g.node:
            node_tensors(n)

    def node_tensors(n: Any) -> None:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                out.append(a.t)
            elif a.type == onnx.AttributeProto.TENSORS:
                out.extend(a.tensors)
            elif a.type == onnx.AttributeProto.GRAPH:
                graph_tensors(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    graph_tensors(g)

    graph_tensors(proto.graph)
    for f in proto.functions:
        for n in f.node:
            node_tensors(n)
    return out


def external_files(proto: Any, folder: Path) -> list[Path]:
    """The distinct external data files the graph names (checked by :func:`check_onnx`)."""
    seen: dict[Path, None] = {}
    for t in _tensors_with_data(proto):
        if t.data_location == 1:  # TensorProto.EXTERNAL
            loc = {e.key: e.value for e in t.external_data}.get("location", "")
            seen[(folder / loc).resolve()] = None
    return list(seen)


def _check_external(proto: Any, folder: Path, label: str) -> None:
    root = folder.resolve()
    sizes: dict[Path, int] = {}
    for t in _tensors_with_data(proto):
        if t.data_location != 1:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        target = (root / loc).resolve() if loc else root
        accepted = ("accepted: weights inside the .onnx file, or external data files next to "
                    "it (onnx.save_model(..., save_as_external_data=True, location='NAME.data'))")
        if not loc or os.path.isabs(loc) or not target.is_relative_to(root) or target == root:
            raise ModelLoadError(
                f"{label}: refused: tensor {t.name!r} points at external data "
                f"{loc!r} outside the model's own folder; {accepted}")
        if not target.is_file():
            raise ModelLoadError(
                f"{label}: tensor {t.name!r} keeps its data in {loc!r}, which is not next to the "
                f"model (upload or copy it into the same folder); {accepted}")
        size = sizes.setdefault(target, target.stat().st_size)
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info.get("length", 0) or 0)
        except ValueError:
            raise ModelLoadError(f"{label}: tensor {t.name!r} has a malformed external data "
                                 "offset or length") from None
        need = 4 * _numel(t)
        if offset < 0 or length < 0 or offset + (length or 0) > size or (
                length == 0 and offset + need > size and int(t.data_type) == 1):
            raise ModelLoadError(
                f"{label}: tensor {t.name!r} reads past the end of its external data file "
                f"{loc!r} (truncated?)")


def _node_domains(proto: Any) -> list[tuple[str, str, str]]:
    """(domain, op type, node name) of every node, subgraphs and local functions included."""
    import onnx

    local = {(f.domain, f.name) for f in proto.functions}
    out: list[tuple[str, str, str]] = []

    def walk(nodes: Any) -> None:
        for n in nodes:
            if (n.domain, n.op_type) not in local:
                out.append((n.domain, n.op_type, n.name))
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g.node)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for g in a.graphs:
                        walk(g.node)

    walk(proto.graph.node)
    for f in proto.functions:
        walk(f.node)
    return out


def check_onnx(proto: Any, folder: Path, label: str) -> None:
    """Refuse an unsafe or unsupported graph with one line (see the module docstring)."""
    nodes = _node_domains(proto)
    limit = max_nodes()
    if len(nodes) > limit:
        raise ModelLoadError(
            f"{label}: refused: the graph has {len(nodes):,} nodes (limit {limit:,}, "
            "UNET_MAX_ONNX_NODES); accepted: a U-Net of a few hundred nodes")
    for domain, op, name in nodes:
        if domain not in KNOWN_DOMAINS:
            raise ModelLoadError(
                f"{label}: refused: node {name or op!r} uses operator {op!r} of the custom "
                f"domain {domain!r}, which needs a plug-in library; accepted: standard ONNX "
                f"operators ({', '.join(sorted(d or 'ai.onnx' for d in KNOWN_DOMAINS if d))})")
    tensors = _tensors_with_data(proto)
    bad = next((t for t in tensors if any(int(d) < 0 for d in t.dims)), None)
    if bad is not None:
        raise ModelLoadError(
            f"{label}: refused: tensor {bad.name!r} has a negative dimension "
            f"{tuple(int(d) for d in bad.dims)} (a malformed or crafted file)")
    params = sum(_numel(t) for t in tensors)
    if params > budget.max_params():
        raise ModelLoadError(
            f"{label}: refused: the graph holds {params:,} weights (limit "
            f"{budget.max_params():,}, UNET_MAX_PARAMS)")
    _check_external(proto, folder, label)


# -- reading the graph -------------------------------------------------------------------------
def _image_input(proto: Any, label: str) -> Any:
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    accepted = "one image input (N, C, H, W) or (N, H, W, C) and one output of the same size"
    if len(inputs) != 1:
        raise ModelSpecError(f"{label}: the graph has {len(inputs)} inputs; accepted: {accepted}")
    if len(proto.graph.output) != 1:
        raise ModelSpecError(
            f"{label}: the graph has {len(proto.graph.output)} outputs; accepted: {accepted}")
    return inputs[0]


def _input_layout(proto: Any, name: str, dims: list[int | None], card_layout: str | None
                  ) -> tuple[str, str]:
    """(layout, reason) of the image input ``name`` of shape ``dims``; a layout the card
    states wins, and the reason then also says what the graph alone reads."""
    if card_layout in LAYOUTS:
        detected, why = _input_layout(proto, name, dims, None)
        return card_layout, (f"stated in the model card (the graph alone reads "
                             f"{detected.upper()}: {why})")
    readers = [n for n in proto.graph.node if name in n.input]
    for n in readers:
        if n.op_type == "Transpose" and list(_attr(n, "perm", []) or []) == [0, 3, 1, 2]:
            return "nhwc", "the graph opens with a Transpose from NHWC to NCHW (a tf2onnx export)"
    if any(n.op_type in _NCHW_OPS for n in readers):
        return "nchw", "a convolution reads the input directly (ONNX convolutions are NCHW)"
    _, d1, _, d3 = dims

    def small(d: int | None) -> bool:
        return d is not None and 1 <= d <= 64

    if small(d3) and not small(d1):
        return "nhwc", f"the input's last axis ({d3}) is the channel axis"
    if small(d1) and not small(d3):
        return "nchw", f"the input's second axis ({d1}) is the channel axis"
    return "nchw", "NCHW assumed (the ONNX convention); set layout nhwc in the card if wrong"


def _last_op(proto: Any, output: str) -> str:
    producers = {o: n for n in proto.graph.node for o in n.output}
    name, seen = output, 0
    while name in producers and seen < 64:
        node = producers[name]
        if node.op_type not in _SHAPE_OPS:
            return node.op_type
        name, seen = node.input[0] if node.input else "", seen + 1
    return ""


def _concrete_shapes(proto: Any, input_name: str, dims: list[int]
                     ) -> tuple[dict[str, tuple], dict[str, int]]:
    """Shapes and element types of every tensor after ONNX shape inference with the input
    fixed to ``dims``."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    for i in m.graph.input:
        if i.name == input_name:
            for d, v in zip(i.type.tensor_type.shape.dim, dims, strict=True):
                d.Clear()
                d.dim_value = int(v)
    for o in m.graph.output:  # a stale fixed output shape would contradict inference
        o.type.tensor_type.ClearField("shape")
    del m.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort: shapes stay unknown
        return {}, {}
    out: dict[str, tuple] = {}
    types: dict[str, int] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = _elem_type(vi)
            if vi.type.tensor_type.HasField("shape"):
                out[vi.name] = tuple(_dims(vi))
    return out, types


def _tensor_layouts(proto: Any, graph_in: tuple[str, str], graph_out: tuple[str, str],
                    shapes: dict[str, tuple], types: dict[str, int], size: tuple[int, int]
                    ) -> dict[str, TensorFacts]:
    """Layout, scale and channels of every 4-D float tensor, in node order (the input first).

    A tensor is NCHW after a convolution-family op, takes a Transpose's permuted layout, and
    otherwise inherits its first 4-D input's layout (a Reshape that moves the channel axis flips
    it); the graph's output has the output layout; when a concrete shape tells the spatial axes
    apart (H != W), the shape wins.
    """
    name_in, layout_in = graph_in
    hh, ww = size
    layouts: dict[str, str] = {name_in: layout_in}
    facts: dict[str, TensorFacts] = {}

    def add(name: str, layout: str) -> None:
        shape = shapes.get(name)
        if types.get(name, 1) not in _FLOAT_TYPES:
            return
        if not shape or len(shape) != 4 or any(v is None for v in shape[1:]):
            return
        _, a, b, c = shape
        fits_nchw = abs(b / hh - c / ww) < 1e-9 if hh != ww else False
        fits_nhwc = abs(a / hh - b / ww) < 1e-9 if hh != ww else False
        if fits_nchw != fits_nhwc:
            layout = "nchw" if fits_nchw else "nhwc"
        layouts[name] = layout
        h, w, ch = (b, c, a) if layout == "nchw" else (a, b, c)
        facts[name] = TensorFacts(name=name, layout=layout, scale=(h / hh, w / ww),
                                  channels=int(ch), shape=tuple(int(v) for v in shape))

    add(name_in, layout_in)
    for n in proto.graph.node:
        if n.op_type in _NCHW_OPS:
            guess = "nchw"
        elif n.op_type == "Transpose" and n.input and n.input[0] in layouts:
            perm = list(_attr(n, "perm", []) or [])
            src = layouts[n.input[0]]
            guess = ({"nhwc": {(0, 3, 1, 2): "nchw"}, "nchw": {(0, 2, 3, 1): "nhwc"}}
                     [src].get(tuple(perm), src))
        else:
            guess = next((layouts[i] for i in n.input if i in layouts), "nchw")
            if n.op_type == "Reshape" and n.input and n.input[0] in layouts and n.output:
                src, dst = shapes.get(n.input[0]), shapes.get(n.output[0])
                if src and dst and len(src) == 4 and tuple(dst) != tuple(src):
                    flip = {"nchw": "nhwc", "nhwc": "nchw"}[layouts[n.input[0]]]
                    moved = ((src[0], src[2], src[3], src[1]) if flip == "nhwc"
                             else (src[0], src[3], src[1], src[2]))
                    guess = flip if tuple(dst) == moved else guess
        for o in n.output:
            add(o, graph_out[1] if o == graph_out[0] else guess)
    return facts


def read_graph(path: Path, label: str, card_layout: str | None = None) -> OnnxGraph:
    """Load and check ``path`` -> :class:`OnnxGraph` (ModelLoadError / ModelSpecError)."""
    import onnx

    from .model import MAX_CLASSES, MAX_INPUT_CHANNELS, max_unpacked_bytes

    size = path.stat().st_size
    if size > max_unpacked_bytes():
        raise ModelLoadError(
            f"{label}: refused: the ONNX file is {size / 2**20:,.0f} MB (limit "
            f"{max_unpacked_bytes() / 2**20:,.0f} MB, UNET_MAX_MODEL_UNPACKED_MB)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors of all kinds
        raise ModelLoadError(
            f"{label}: not an ONNX model ({type(exc).__name__}); accepted: a .onnx file from "
            "torch.onnx.export, tf2onnx or onnx.save") from None
    if not proto.graph.node:
        raise ModelLoadError(f"{label}: not an ONNX model (the graph has no nodes); accepted: a "
                             ".onnx file from torch.onnx.export, tf2onnx or onnx.save")
    check_onnx(proto, path.parent, label)
    inp = _image_input(proto, label)
    out = proto.graph.output[0]
    dims = _dims(inp)
    if len(dims) != 4:
        raise ModelSpecError(
            f"{label}: the graph's input {inp.name!r} has shape {_shape_text(dims)}; accepted: "
            "an image batch (N, C, H, W) or (N, H, W, C)")
    etype = _elem_type(inp)
    if etype not in _FLOAT_TYPES:
        raise ModelSpecError(
            f"{label}: the graph's input is {_TYPE_NAMES.get(etype, etype)}; accepted: a float "
            "input (float32, float16 or float64), e.g. an image scaled to 0..1")
    otype = _elem_type(out)
    if otype not in _FLOAT_TYPES and otype != 0:
        raise ModelSpecError(
            f"{label}: the graph's output is {_TYPE_NAMES.get(otype, otype)} (class labels?); "
            "accepted: probabilities or logits (float), one map or K class maps")
    layout, reason = _input_layout(proto, inp.name, dims, card_layout)
    batch = dims[0]
    h, w, c = (dims[2], dims[3], dims[1]) if layout == "nchw" else (dims[1], dims[2], dims[3])
    if c is None or not 1 <= c <= MAX_INPUT_CHANNELS:
        count = "a dynamic number of" if c is None else str(c)
        hint = (f"; the card states layout {layout}: remove it or state the other one"
                if card_layout in LAYOUTS else "")
        raise ModelSpecError(
            f"{label}: read as {layout.upper()}, the graph's input {_shape_text(dims)} has "
            f"{count} channels; accepted: 1 to {MAX_INPUT_CHANNELS} channels{hint}")
    if (h is None) != (w is None):
        raise ModelSpecError(
            f"{label}: the graph's input fixes one side only ({_shape_text(dims)}); accepted: "
            "a fixed H x W or both dynamic")
    concrete = (h, w) if h is not None and w is not None else PROBE_SIZE
    shape_in = [1, c, *concrete] if layout == "nchw" else [1, *concrete, c]
    if batch is not None:
        shape_in[0] = batch
    shapes, types = _concrete_shapes(proto, inp.name, shape_in)
    oshape = list(shapes.get(out.name) or _dims(out))
    out_layout, k = _output_layout(oshape, concrete, layout)
    if k is None or not 1 <= k <= MAX_CLASSES:
        raise ModelSpecError(
            f"{label}: the graph's output has shape {_shape_text(oshape)}; accepted: one map or "
            f"K <= {MAX_CLASSES} class maps the size of the input ((N, K, H, W) or (N, H, W, K))")
    spatial = (oshape[1:3] if len(oshape) == 3 else
               oshape[2:4] if out_layout == "nchw" else oshape[1:3])
    if all(v is not None for v in spatial) and tuple(spatial) != tuple(concrete):
        at = "" if h is not None else " (shape inference at that size)"
        hint = (f"; if the input is not {layout.upper()}, state \"layout\": "
                f"\"{'nhwc' if layout == 'nchw' else 'nchw'}\" in the model card"
                if card_layout is None else "")
        raise ModelSpecError(
            f"{label}: the graph's output is {spatial[0]}x{spatial[1]} for a "
            f"{concrete[0]}x{concrete[1]} input{at} read as {layout.upper()}; accepted: an "
            f"output of the input's height and width (a segmentation network){hint}")
    tensors = _tensor_layouts(proto, (inp.name, layout), (out.name, out_layout), shapes,
                              types, concrete)
    return OnnxGraph(proto=proto, path=path, input_name=inp.name, output_name=out.name,
                     layout=layout, output_layout=out_layout, batch=batch, height=h, width=w,
                     channels=int(c), classes=int(k), input_dtype=_FLOAT_TYPES[etype],
                     last_op=_last_op(proto, out.name), layout_reason=reason,
                     tensors=tensors, shapes=shapes, types=types)


def _output_layout(shape: list[int | None], size: tuple[int, int], layout: str
                   ) -> tuple[str, int | None]:
    """(layout, K) of the output: (N, K, H, W), (N, H, W, K) or (N, H, W) -> K = 1."""
    hh, ww = size
    if len(shape) == 3:
        return layout, 1
    if len(shape) != 4:
        return layout, None
    _, a, b, c = shape
    nchw = (b, c) == (hh, ww)
    nhwc = (a, b) == (hh, ww)
    if nchw and not nhwc:
        return "nchw", a
    if nhwc and not nchw:
        return "nhwc", c
    if nchw and nhwc:
        return layout, a if layout == "nchw" else c
    if b is None and c is None and a is not None:
        return "nchw", a
    if a is None and b is None and c is not None:
        return "nhwc", c
    return layout, (a if layout == "nchw" else c)


def _shape_text(dims: list[int | None]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def onnx_card_notes(graph: OnnxGraph) -> dict[str, str]:
    """Why the graph-derived card fields have their values (field -> one sentence)."""
    batch = ("a dynamic batch" if not graph.batch else "a fixed batch of 1 (one image per run)"
             if graph.batch == 1 else
             f"a fixed batch of {graph.batch} (a shorter batch is padded with zeros)")
    size = (f"a fixed {graph.height}x{graph.width} input" if graph.height else
            "a dynamic height and width")
    return {"layout": f"{graph.layout.upper()}: {graph.layout_reason}; {batch}, {size}"}


def session_for(path: Path | str | bytes) -> Any:
    """An ONNX Runtime session with the engine's options (see :mod:`unet_core.backends`) on a
    file, or on a serialised graph (e.g. :func:`model_bytes_with_outputs`)."""
    from .backends import _session

    return _session(path if isinstance(path, bytes) else Path(path))


def model_bytes_with_outputs(graph: OnnxGraph, outputs: list[str]) -> bytes:
    """The graph serialised with ``outputs`` added as graph outputs (external data loaded into
    the copy, so ONNX Runtime can load it from memory)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(graph.proto)
    if external_files(m, graph.path.parent):
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(m, str(graph.path.parent))
    have = {o.name for o in m.graph.output}
    for name in outputs:
        if name not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(
                name, graph.types.get(name, onnx.TensorProto.FLOAT), None))
    return m.SerializeToString()


def ceil_side(size: int, scale: float) -> int:
    """A tensor's side for an input side ``size`` at relative ``scale``."""
    return max(1, math.ceil(size * scale))
