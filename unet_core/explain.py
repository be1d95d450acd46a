"""Why did the network call this region salt? Seg-Grad-CAM and gradient saliency.

Seg-Grad-CAM (Vinogradova, Dibrov & Myers, AAAI 2020) explains a *region* M of a segmentation
output. The score is the sum over M of the **pre-sigmoid logit** z of the chosen class (for a
softmax model that class's logit; its negative to explain the background):

    score = sum_{(i, j) in M} z_ij                        (background: -score)

For a convolution layer with feature maps A^k (k = 1..K channels), each channel's weight is
the mean over positions of the score's gradient, alpha_k = mean_ij d score / d A^k_ij, and the
map is ReLU(sum_k alpha_k A^k): the channels whose increase raises the score, weighted by how
much. The map (at the layer's resolution) is resized bilinearly to the network input, cropped to
exactly the image (the padding dropped; a resized input is resized back to H x W) and divided by
its maximum (a map that is all zeros stays zeros).

Getting the logit right matters (tf-keras-vis's ``BinaryScore`` scores probabilities, whose
gradients vanish where the network is sure): a card that says ``logits`` means the output is
the logit; otherwise the last sigmoid/softmax is undone structurally: an ``Activation`` layer's
input is taken, and a layer with an ``activation`` setting (``Conv2D(..., activation=
"sigmoid")``) is cloned with a linear activation and the same weights. Only when neither is
possible (e.g. an ensemble averaging probabilities) the log-odds log p - log(1 - p) of the
clipped probabilities are used, and the explanation's ``notes`` say so.

The default layer is the bottleneck: the convolution with the lowest spatial resolution (the
deepest one on ties), never the final output convolution (a 1x1 output conv's map is just the
prediction again, the mistake tf-keras-vis makes). :class:`GradCam` builds ONE gradient model
per Keras model, outputting every selectable conv layer and the logits; one
``tf.GradientTape`` pass computes the maps of all requested layers.

Gradient saliency |d score / d input| (maximum over the input channels) is given for
comparison (:meth:`GradCam.saliency`).

Regions are given in image coordinates (:class:`Region`, :func:`parse_region`): the whole
image, the predicted mask at the threshold, one connected component of it, one pixel or a box.
They are mapped to the network's input: placed in the pad box (padded pixels are never in M) or,
for a resized input, resized to it (nearest neighbour).

ONNX models are refused (ONNX Runtime computes no gradients). No Streamlit here.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import UnetCoreError
from .introspect import (
    _is_conv,
    _is_input_layer,
    _keras_model,
    _layer_output,
    _name_list,
    _resolutions,
    conv_layers,
    unknown_layer,
)
from .metrics import check_min_area, threshold_mask
from .model import LoadedModel
from .onnx_graph import is_onnx
from .padding import PadBox
from .preprocess import display_image, resize_bilinear

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger(__name__)

REGION_KINDS: tuple[str, ...] = ("all", "mask", "component", "pixel", "box")
METHODS: tuple[str, ...] = ("seg-grad-cam", "saliency")
ONNX_REFUSAL = "Explain needs a Keras model (.keras / .h5): ONNX Runtime computes no gradients"
REGION_ACCEPTED = ("all, mask, component, component:X,Y, X,Y (a pixel) or X0,Y0,X1,Y1 (a box, "
                   "X1 and Y1 exclusive)")

#: Probabilities are clipped to [EPS, 1 - EPS] before the log-odds fallback.
LOGIT_EPS = 1e-6

#: Layers that only move values around (an elementwise activation commutes with them), walked
#: back through from the model's output to find the layer that applies the sigmoid/softmax.
_SHAPE_ONLY = ("Cropping2D", "Reshape", "Permute", "Identity", "Dropout", "SpatialDropout2D",
               "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization")

#: Plotly's "Viridis" stops (the app's legend uses the same scale).
_VIRIDIS = ("#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779",
            "#6ece58", "#b5de2b", "#fde725")
CAM_COLORMAP = "viridis"


# -- regions -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Region:
    """A region M of the output, in image pixel coordinates.

    Attributes:
        kind: one of :data:`REGION_KINDS`: ``all`` (every image pixel), ``mask`` (the
            predicted mask at the threshold), ``component`` (one connected component of it,
            8-connected), ``pixel``, ``box``.
        x, y: the pixel's column / row; for ``component`` the seed pixel (None: the largest
            component).
        box: (x0, y0, x1, y1) with x1 / y1 exclusive, for ``box``.
    """

    kind: str
    x: int | None = None
    y: int | None = None
    box: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in REGION_KINDS:
            raise UnetCoreError(f"unknown region kind {self.kind!r}; accepted: "
                                f"{', '.join(REGION_KINDS)}")
        if self.kind == "pixel" and (self.x is None or self.y is None):
            raise UnetCoreError("a pixel region needs x and y; accepted: Region('pixel', x, y)")
        if self.kind == "box":
            if self.box is None or len(self.box) != 4:
                raise UnetCoreError("a box region needs box=(x0, y0, x1, y1)")
            x0, y0, x1, y1 = self.box
            if x1 <= x0 or y1 <= y0:
                raise UnetCoreError(f"box {x0},{y0},{x1},{y1} is empty; accepted: X0,Y0,X1,Y1 "
                                    "with X1 > X0 and Y1 > Y0 (X1, Y1 exclusive)")

    def describe(self) -> str:
        """'whole image', 'predicted mask', 'pixel (12, 40)', 'box x 0-31, y 10-20', ..."""
        if self.kind == "all":
            return "whole image"
        if self.kind == "mask":
            return "predicted mask"
        if self.kind == "component":
            if self.x is None or self.y is None:
                return "largest component of the predicted mask"
            return f"component of the predicted mask at ({self.x}, {self.y})"
        if self.kind == "pixel":
            return f"pixel ({self.x}, {self.y})"
        x0, y0, x1, y1 = self.box  # type: ignore[misc]
        return f"box x {x0}-{x1 - 1}, y {y0}-{y1 - 1}"

    def key(self) -> str:
        """Stable text for cache keys; :func:`parse_region` reads it back to this region."""
        if self.kind in ("all", "mask"):
            return self.kind
        if self.kind == "component":
            return "component" if self.x is None or self.y is None else \
                f"component:{self.x},{self.y}"
        if self.kind == "pixel":
            return f"{self.x},{self.y}"
        return ",".join(str(v) for v in self.box)  # type: ignore[union-attr]


_INT = r"\s*(-?\d+)\s*"


def parse_region(text: str) -> Region:
    """A region from its text: ``all`` | ``mask`` | ``component`` | ``component:X,Y`` |
    ``X,Y`` (a pixel) | ``X0,Y0,X1,Y1`` (a box, X1 and Y1 exclusive); image pixels."""
    raw = str(text)
    t = raw.strip().lower()
    if t in ("all", "mask", "component"):
        return Region(t)
    seed = None
    if t.startswith("component:"):
        seed = t[len("component:"):]
        m = re.fullmatch(_INT + "," + _INT, seed)
    else:
        m = re.fullmatch(_INT + "," + _INT + "(?:," + _INT + "," + _INT + ")?", t)
    if m is None:
        raise UnetCoreError(f"region {raw[:60]!r} is not valid; accepted: {REGION_ACCEPTED}")
    nums = [int(g) for g in m.groups() if g is not None]
    if any(v < 0 for v in nums):
        raise UnetCoreError(f"region {raw[:60]!r} has a negative coordinate; accepted: "
                            f"pixel coordinates >= 0 ({REGION_ACCEPTED})")
    if seed is not None:
        return Region("component", x=nums[0], y=nums[1])
    if len(nums) == 2:
        return Region("pixel", x=nums[0], y=nums[1])
    return Region("box", box=(nums[0], nums[1], nums[2], nums[3]))


def _as_region(region: Region | str) -> Region:
    if isinstance(region, Region):
        return region
    if isinstance(region, str):
        return parse_region(region)
    raise UnetCoreError(f"region of type {type(region).__name__}; accepted: a Region, its "
                        f"text ({REGION_ACCEPTED}) or a bool (H, W) mask")


def region_mask(region: Region, shape: tuple[int, int], prob: np.ndarray | None = None,
                threshold: float = 0.5, min_area: int = 0) -> np.ndarray:
    """The region's pixels: bool (H, W) for an image of ``shape`` (H, W).

    ``prob`` (float (H, W) in [0, 1], the explained class's probabilities) is needed for
    ``mask`` and ``component``, thresholded as ``prob > threshold`` with the minimum-area rule.
    A box that only overlaps the image is clipped to it. Raises a one-line UnetCoreError for a
    pixel or box outside the image, an empty predicted mask, or a seed outside the mask.
    """
    region = _as_region(region)
    h, w = (int(v) for v in shape[:2])
    out = np.zeros((h, w), dtype=bool)
    size = f"the image (x 0..{w - 1}, y 0..{h - 1})"
    if region.kind == "all":
        out[...] = True
        return out
    if region.kind == "pixel":
        x, y = int(region.x), int(region.y)  # type: ignore[arg-type]
        if not (0 <= x < w and 0 <= y < h):
            raise UnetCoreError(f"pixel ({x}, {y}) is outside {size}; accepted: a pixel "
                                "inside the image")
        out[y, x] = True
        return out
    if region.kind == "box":
        x0, y0, x1, y1 = (int(v) for v in region.box)  # type: ignore[union-attr]
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if cx1 <= cx0 or cy1 <= cy0:
            raise UnetCoreError(f"box x {x0}-{x1 - 1}, y {y0}-{y1 - 1} is outside {size}; "
                                "accepted: a box that overlaps the image")
        out[cy0:cy1, cx0:cx1] = True
        return out
    if prob is None:
        raise UnetCoreError(f"region {region.key()} needs the probability map; accepted: "
                            "prob=(H, W) probabilities of the explained class")
    p = np.asarray(prob)
    if p.shape != (h, w):
        raise UnetCoreError(f"probability map has shape {p.shape}; accepted: ({h}, {w}), the "
                            "image's size")
    mask = threshold_mask(p, threshold, min_area)
    rule = f"threshold {threshold:g}" + (f", minimum area {min_area} px" if min_area else "")
    if not mask.any():
        raise UnetCoreError(f"the predicted mask is empty at {rule}; accepted: a lower "
                            "threshold, or a region all, X,Y (a pixel) or X0,Y0,X1,Y1 (a box)")
    if region.kind == "mask":
        return mask
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if region.x is None or region.y is None:
        counts = np.bincount(labels.ravel(), minlength=n + 1)
        counts[0] = 0
        return labels == int(np.argmax(counts))
    x, y = int(region.x), int(region.y)
    if not (0 <= x < w and 0 <= y < h):
        raise UnetCoreError(f"component seed ({x}, {y}) is outside {size}; accepted: a pixel "
                            "inside the image")
    if labels[y, x] == 0:
        raise UnetCoreError(f"pixel ({x}, {y}) is not in the predicted mask ({rule}); "
                            "accepted: a seed inside the mask, or component for the largest")
    return labels == labels[y, x]


# -- results -------------------------------------------------------------------------------------
@dataclass
class Explanation:
    """One explanation map.

    Attributes:
        cam: float32 (H, W) in [0, 1], exactly the image's size (all zeros stays zeros).
        layer: the conv layer's name, or "input" for saliency.
        method: "seg-grad-cam" or "saliency".
        region: the region explained.
        mask: bool (H, W): the region M actually scored (image pixels).
        class_index: the explained class.
        background: True: the score's negative (explains the background).
        score: sum over M of the pre-sigmoid logit (negated for the background).
        peak: max of ReLU(sum_k alpha_k A^k) (saliency: of |gradient|) over the image before
            normalisation; 0.0 means an all-zero map.
        notes: caveats in plain words (e.g. the log-odds fallback).
    """

    cam: np.ndarray
    layer: str
    method: str
    region: Region
    mask: np.ndarray
    class_index: int
    background: bool
    score: float
    peak: float
    notes: list[str] = field(default_factory=list)

    @property
    def mass_inside(self) -> float:
        """Share of the map's total inside the region M (nan for an all-zero map)."""
        total = float(self.cam.sum(dtype=np.float64))
        if total <= 0:
            return float("nan")
        return float(self.cam[self.mask].sum(dtype=np.float64)) / total


# -- the gradient model --------------------------------------------------------------------------
def _producer(tensor: Any) -> tuple[Any, list[Any]]:
    """(layer that made ``tensor``, that call's input tensors)."""
    hist = tensor._keras_history
    op = hist.operation
    node = op._inbound_nodes[hist.node_index]
    return op, list(node.input_tensors)


def _activation_name(layer: Any) -> str:
    cls = type(layer).__name__
    if cls == "Softmax":
        return "softmax"
    if cls == "Sigmoid":
        return "sigmoid"
    act = getattr(layer, "activation", None)
    return str(getattr(act, "__name__", "") or "").lower()


def _linear_clone(layer: Any) -> Any:
    """A copy of ``layer`` (same class and settings) with a linear activation; its weights are
    set after it is called on the original's input."""
    cfg = dict(layer.get_config())
    cfg["activation"] = "linear"
    cfg["name"] = f"{layer.name}_logit"
    clone = type(layer).from_config(cfg)
    return clone


def _logit_tensor(model: Any, output_kind: str) -> tuple[Any, Any, str]:
    """(logit tensor (N, Hn, Wn, K) or None, the head layer that applies the activation or
    None, how it was found)."""
    out = model.outputs[0]
    if output_kind == "logits":
        try:
            head, _ = _producer(out)
        except (AttributeError, IndexError, TypeError):
            head = None
        return out, head, "the card says the model outputs logits"
    try:
        tensor, chain = out, []
        for _ in range(32):
            layer, inputs = _producer(tensor)
            cls = type(layer).__name__
            linear_act = cls == "Activation" and _activation_name(layer) == "linear"
            up_nearest = (cls == "UpSampling2D"
                          and getattr(layer, "interpolation", "nearest") == "nearest")
            if (cls in _SHAPE_ONLY or linear_act or up_nearest) and len(inputs) == 1:
                chain.append(layer)
                tensor = inputs[0]
                continue
            break
        act = _activation_name(layer)
        if cls in ("Average", "Maximum", "Minimum", "Add"):
            return None, None, (f"its last layer {layer.name!r} ({cls}) combines probabilities "
                                "(e.g. an ensemble), so there is no single pre-sigmoid logit")
        if act not in ("sigmoid", "softmax") or len(inputs) != 1:
            return None, None, f"its last layer {layer.name!r} applies no sigmoid/softmax itself"
        if cls in ("Activation", "Softmax", "Sigmoid"):
            pre, how = inputs[0], f"the input of its {act} layer {layer.name!r}"
        else:
            clone = _linear_clone(layer)
            pre = clone(inputs[0])
            clone.set_weights(layer.get_weights())
            how = f"layer {layer.name!r} recomputed without its {act}"
        for shaper in reversed(chain):
            pre = shaper(pre)
        return pre, layer, how
    except Exception as exc:  # noqa: BLE001 - unusual graphs: the log-odds fallback
        log.info("logit of %s not found structurally", model.name, exc_info=True)
        return None, None, f"its graph could not be read ({type(exc).__name__})"


def _depths(model: Any) -> dict[str, int]:
    """{layer name: longest path (in layers) from the input}; {} when unreadable."""
    depth: dict[int, int] = {}
    names: dict[str, int] = {}
    try:
        for layer in model.layers:
            parents = [t._keras_history.operation for node in layer._inbound_nodes
                       for t in node.input_tensors]
            d = 1 + max((depth.get(id(p), 0) for p in parents), default=0)
            depth[id(layer)] = d
            names[layer.name] = d
    except (AttributeError, TypeError):
        return {}
    return names


def _output_convs(model: Any, max_steps: int = 16) -> set[str]:
    """Names of the conv layers that make the output: reached from it backwards through
    layers that are not convolutions (activations, shape-only layers, an ensemble's mean)."""
    found: set[str] = set()
    frontier = list(model.outputs)
    for _ in range(max_steps):
        nxt = []
        for tensor in frontier:
            try:
                layer, inputs = _producer(tensor)
            except (AttributeError, IndexError, TypeError):
                continue
            if _is_conv(layer):
                found.add(layer.name)
            elif not _is_input_layer(layer):
                nxt.extend(inputs)
        if not nxt:
            break
        frontier = nxt
    return found


class GradCam:
    """Seg-Grad-CAM over one Keras model: ONE cached gradient model outputting every selectable
    conv layer's maps and the pre-activation logits (N, Hn, Wn, K).

    Args:
        loaded: the model and its card (ONNX models are refused with a one-line
            UnetCoreError: Explain needs a Keras model).
        padding_mode: how images are padded (None: the card's).

    Attributes:
        layers: the selectable conv layers, model order.
        default_layer: the bottleneck (lowest-resolution conv, deepest on ties), never the
            final output conv.
        logit_source: how the logit was found (one sentence).
        exact_logit: False when the log-odds fallback is used.
        head_layer: the layer that applies the final sigmoid/softmax (None when unknown).
        notes: caveats every explanation of this model carries (e.g. the log-odds fallback).
        segmenter: the :class:`~unet_core.inference.Segmenter` that prepares images (no TTA).

    The pass is a ``tf.function`` traced once (for any input size) on first use; the weights
    of a cloned output layer are copied at construction (build a new GradCam after changing
    the model's weights).
    """

    def __init__(self, loaded: LoadedModel, *, padding_mode: str | None = None) -> None:
        import keras

        from .inference import Segmenter

        if is_onnx(loaded):
            raise UnetCoreError(ONNX_REFUSAL)
        self.loaded = loaded
        self.card = loaded.card
        model = _keras_model(loaded.model)
        self.model = model
        inputs = getattr(model, "inputs", None)
        outputs = getattr(model, "outputs", None)
        if not inputs or len(inputs) != 1 or not outputs or len(outputs) != 1:
            raise UnetCoreError(f"{loaded.name}: Explain needs a model with one image input and "
                                "one output; accepted: a functional Keras U-Net")
        convs = conv_layers(model)
        if not convs:
            raise UnetCoreError(f"{loaded.name}: no convolution layer at the model's top level "
                                "(a model nested inside another is not unpacked); accepted: a "
                                "flat Keras model with Conv2D layers")
        self.segmenter = Segmenter(loaded, padding_mode=padding_mode, tta=False,
                                   backend="tensorflow")
        logit, head, how = _logit_tensor(model, self.card.output)
        self.exact_logit = logit is not None
        self.logit_source = how
        self.notes: list[str] = []
        if logit is None:
            self.notes.append(f"the score uses the log-odds log p - log(1 - p) of the clipped "
                              f"probabilities: {how}")
        conv_tensors = [_layer_output(model.get_layer(n)) for n in convs]
        keep = [i for i, t in enumerate(conv_tensors) if t is not None and len(t.shape) == 4]
        self.layers: list[str] = [convs[i] for i in keep]
        conv_tensors = [conv_tensors[i] for i in keep]
        if not self.layers:
            raise UnetCoreError(f"{loaded.name}: no conv layer with a single (N, H, W, C) "
                                "output; accepted: a flat Keras model with Conv2D layers")
        last = logit if logit is not None else outputs[0]
        try:
            self._grad_model = keras.Model(inputs=inputs[0], outputs=[*conv_tensors, last],
                                           name=f"{model.name}_gradcam")
        except Exception as exc:  # noqa: BLE001 - one line; details in the log
            log.error("gradient model of %s failed", model.name, exc_info=exc)
            raise UnetCoreError(f"{loaded.name}: cannot build a gradient model over its conv "
                                f"layers ({type(exc).__name__}; details in the server log)"
                                ) from None
        shape = tuple(inputs[0].shape)
        self._channels = shape[-1]
        try:
            multi = keras.Model(inputs[0], conv_tensors)
            res = _resolutions(multi, shape[-1], (shape[1], shape[2]))
        except Exception:  # noqa: BLE001 - unknown resolutions: depth decides
            res = None
        self._res: dict[str, tuple[float, float]] = (
            dict(zip(self.layers, res, strict=True)) if res else {})
        self.head_layer: str | None = getattr(head, "name", None)
        self.default_layer: str = self._bottleneck()
        self._traced: dict[str, Any] | None = None  # tf.functions, made on first use
        self._eager = False

    # -- layers ----------------------------------------------------------------------------------
    def _bottleneck(self) -> str:
        depths = _depths(self.model)
        heads = _output_convs(self.model)
        candidates = [n for n in self.layers if n not in heads] or list(self.layers)
        order = {n: i for i, n in enumerate(self.layers)}

        def rank(name: str) -> tuple[float, int, int]:
            rh, rw = self._res.get(name, (1.0, 1.0))
            return (-(rh * rw), depths.get(name, 0), order[name])

        return max(candidates, key=rank)

    def layer_resolution(self, name: str) -> tuple[int, int] | None:
        """The layer's stride relative to the network input, e.g. (16, 16); None if unknown
        (or not a whole number, e.g. an upsampling layer gives (1, 1) only at full size)."""
        self._check_layers([name])
        r = self._res.get(name)
        if r is None or r[0] <= 0 or r[1] <= 0:
            return None
        sh, sw = 1.0 / r[0], 1.0 / r[1]
        if abs(sh - round(sh)) > 1e-6 or abs(sw - round(sw)) > 1e-6:
            return None
        return round(sh), round(sw)

    def _check_layers(self, layers: Sequence[str] | str | None) -> list[str]:
        if layers is None:
            return list(self.layers)
        if isinstance(layers, str):
            layers = [layers]
        wanted = list(dict.fromkeys(layers))
        for name in wanted:
            if name not in self.layers:
                raise unknown_layer(name, self.model.name, self.layers, "conv layers")
        if not wanted:
            raise UnetCoreError(f"no layer chosen; accepted: conv layers "
                                f"{_name_list(self.layers)}")
        return wanted

    # -- one pass --------------------------------------------------------------------------------
    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, PadBox, tuple[int, int]]:
        seg = self.segmenter
        arr = np.asarray(image)
        if arr.ndim not in (2, 3) or arr.size == 0:
            raise UnetCoreError(f"image has shape {arr.shape}; accepted: (H, W) or (H, W, C)")
        h, w = int(arr.shape[0]), int(arr.shape[1])
        if seg.network_size(h, w) is None:
            raise UnetCoreError(f"a {h}x{w} image is too large to explain in one pass "
                                f"(the model would tile it); accepted: {self._largest()}")
        x, box = seg.prepare(arr)
        return x, box, (h, w)

    def _largest(self) -> str:
        seg = self.segmenter
        if self.card.input_size:
            th, tw = self.card.input_size
            return f"images up to {th}x{tw} pixels (the network's input)"
        pixels = seg._pixel_budget(None)
        m = max(1, self.card.multiple_of)
        side = (int(np.sqrt(pixels)) // m) * m if pixels else 0
        return f"images up to {pixels:,} pixels once padded (e.g. {side}x{side})"

    def _to_image(self, net_map: np.ndarray, box: PadBox, hw: tuple[int, int]) -> np.ndarray:
        """A map at the network input's size (Hn, Wn) -> the image's (H, W)."""
        if self.segmenter.fit == "resize":
            return resize_bilinear(net_map, hw)
        return np.ascontiguousarray(box.crop(net_map), dtype=np.float32)

    def _net_mask(self, mask: np.ndarray, box: PadBox, net_hw: tuple[int, int]) -> np.ndarray:
        """Region M (image pixels) -> float32 (Hn, Wn) in network coordinates."""
        hn, wn = net_hw
        if self.segmenter.fit != "resize":
            out = np.zeros((hn, wn), dtype=np.float32)
            out[box.top:box.top + box.height, box.left:box.left + box.width] = mask
            return out
        h, w = mask.shape
        rows = np.minimum(((np.arange(hn) + 0.5) * h / hn).astype(np.intp), h - 1)
        cols = np.minimum(((np.arange(wn) + 0.5) * w / wn).astype(np.intp), w - 1)
        out = mask[rows][:, cols].astype(np.float32)
        if not out.any():  # a small region between the sample points: its own network pixels
            ys, xs = np.nonzero(mask)
            out[np.minimum(ys * hn // h, hn - 1), np.minimum(xs * wn // w, wn - 1)] = 1.0
        return out

    def _resolve(self, class_index: int | None, threshold: float | None,
                 min_area: int | None) -> tuple[int, float, int]:
        k = self.segmenter._class(class_index)
        t = self.card.threshold if threshold is None else float(threshold)
        if not 0.0 <= t <= 1.0:
            raise UnetCoreError(f"threshold {t:g} is outside 0..1; accepted: 0..1")
        a = self.card.min_area if min_area is None else check_min_area(min_area)
        return k, t, int(a)

    def _pass(self, image: np.ndarray, region: Region | str | np.ndarray, layers: list[str],
              *, class_index: int | None, background: bool, prob: np.ndarray | None,
              threshold: float | None, min_area: int | None, saliency: bool
              ) -> dict[str, Any]:
        """One forward + backward pass; returns the raw pieces for the public methods."""
        k, t, a = self._resolve(class_index, threshold, min_area)
        x, box, hw = self._prepare(image)
        notes = list(self.notes)
        if isinstance(region, np.ndarray):
            given = np.asarray(region)
            if given.shape != hw or given.dtype != np.bool_:
                raise UnetCoreError(f"region mask has shape {given.shape} and dtype "
                                    f"{given.dtype}; accepted: bool {hw}, the image's size")
            if not given.any():
                raise UnetCoreError("region mask is empty; accepted: a mask with at least one "
                                    "pixel")
            reg, mask_fixed = Region("mask"), given
            notes.append(f"region: a mask given by the caller ({int(given.sum())} px)")
        else:
            reg, mask_fixed = _as_region(region), None
            if reg.kind in ("all", "pixel", "box"):
                mask_fixed = region_mask(reg, hw)
        if prob is not None:
            p = np.asarray(prob, dtype=np.float32)
            if p.shape != hw:
                raise UnetCoreError(f"probability map has shape {p.shape}; accepted: {hw}, "
                                    "the image's size")
        xt = x[None].astype(np.float32, copy=False)
        try:
            if mask_fixed is None:
                if prob is None:
                    last = self._run("forward", xt).numpy()[0]
                    p = self._probabilities(last)[..., k]
                    p = np.clip(self._to_image(p, box, hw), 0.0, 1.0)
                    if self.card.tta:
                        notes.append("mask from one pass without the card's flip TTA")
                mask = region_mask(reg, hw, p, t, a)
            else:
                mask = mask_fixed
            net_mask = self._net_mask(mask, box, x.shape[:2])
            maps, grads, score = self._run("step", xt, net_mask, np.int32(k),
                                           np.float32(-1.0 if background else 1.0))
        except UnetCoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - one line; details in the log
            log.error("gradient pass of %s failed", self.model.name, exc_info=exc)
            raise UnetCoreError(f"{self.loaded.name}: the gradient pass failed on a "
                                f"{x.shape[0]}x{x.shape[1]} input ({type(exc).__name__}; "
                                "details in the server log)") from None
        idx = [self.layers.index(n) for n in layers]
        return {"maps": [maps[i] for i in idx], "grads": [grads[i] for i in idx],
                "input_grad": grads[-1], "box": box, "hw": hw, "net_hw": x.shape[:2],
                "mask": mask, "region": reg, "k": k, "score": float(score.numpy()),
                "notes": notes}

    def _step(self, x: Any, net_mask: Any, k: Any, sign: Any) -> tuple[Any, Any, Any]:
        """The pass itself (TensorFlow): x (1, Hn, Wn, C), net_mask (Hn, Wn) float32, class k,
        sign +-1 -> (every conv layer's maps, their gradients + the input's, score)."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            outs = self._grad_model(x, training=False)
            zk = tf.gather(outs[-1][0], k, axis=-1)
            if not self.exact_logit:
                zk = tf.clip_by_value(zk, LOGIT_EPS, 1.0 - LOGIT_EPS)
                zk = tf.math.log(zk) - tf.math.log(1.0 - zk)
            score = sign * tf.reduce_sum(zk * net_mask)
        maps = list(outs[:-1])
        grads = tape.gradient(score, [*maps, x],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return maps, grads, score

    def _run(self, which: str, *args: Any) -> Any:
        """``forward`` (the network's last output) or ``step`` (:meth:`_step`), traced once as a
        ``tf.function`` for any input size; run eagerly if tracing fails (e.g. layer names a
        TensorFlow graph refuses)."""
        import tensorflow as tf

        if self._traced is None:
            c = self._channels
            x_spec = tf.TensorSpec([1, None, None, c], tf.float32)
            gm = self._grad_model
            self._traced = {
                "forward": tf.function(lambda x: gm(x, training=False)[-1],
                                       input_signature=[x_spec]),
                "step": tf.function(self._step, input_signature=[
                    x_spec, tf.TensorSpec([None, None], tf.float32),
                    tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32)]),
            }
        tensors = [tf.convert_to_tensor(a) for a in args]
        if not self._eager:
            try:
                return self._traced[which](*tensors)
            except Exception:  # noqa: BLE001 - any trace failure: eager from now on
                log.info("gradient pass of %s: graph trace failed, running eagerly",
                         self.model.name, exc_info=True)
                self._eager = True
        if which == "forward":
            return self._grad_model(tensors[0], training=False)[-1]
        return self._step(*tensors)

    def _probabilities(self, last: np.ndarray) -> np.ndarray:
        """Network output (Hn, Wn, K) of the gradient model -> probabilities."""
        if not self.exact_logit:
            return last.astype(np.float32)
        from .backends import to_probabilities

        return to_probabilities(last[None])[0]

    def _finish(self, net_map: np.ndarray, box: PadBox, hw: tuple[int, int]
                ) -> tuple[np.ndarray, float]:
        cam = self._to_image(net_map, box, hw)
        cam = np.maximum(cam, 0.0)
        peak = float(cam.max()) if cam.size else 0.0
        if not np.isfinite(peak) or peak <= 0:
            return np.zeros(hw, dtype=np.float32), 0.0
        return np.clip(cam / peak, 0.0, 1.0).astype(np.float32), peak

    # -- public ----------------------------------------------------------------------------------
    def explain(self, image: np.ndarray, region: Region | str | np.ndarray, *,
                layers: Sequence[str] | str | None = None, class_index: int | None = None,
                background: bool = False, prob: np.ndarray | None = None,
                threshold: float | None = None, min_area: int | None = None
                ) -> dict[str, Explanation]:
        """Seg-Grad-CAM of ``region`` for each of ``layers`` (None: all) in ONE forward and
        backward pass -> {layer: :class:`Explanation`}.

        Args:
            image: (H, W) or (H, W, C) as decoded (:func:`unet_core.io.read_raw`).
            region: a :class:`Region`, its text, or a bool (H, W) mask.
            class_index: the class explained (None: the card's default).
            background: explain the background (the score's negative).
            prob: float (H, W) probabilities of that class for the mask / component regions
                (None: from this pass, without TTA).
            threshold, min_area: the mask rule (None: the card's).
        """
        names = self._check_layers(layers)
        r = self._pass(image, region, names, class_index=class_index, background=background,
                       prob=prob, threshold=threshold, min_area=min_area, saliency=False)
        hn, wn = r["net_hw"]
        result: dict[str, Explanation] = {}
        for name, a_map, grad in zip(names, r["maps"], r["grads"], strict=True):
            notes = list(r["notes"])
            a = a_map.numpy()[0].astype(np.float64)
            g = grad.numpy()[0].astype(np.float64)
            alpha = g.mean(axis=(0, 1))
            raw = np.maximum((a * alpha).sum(axis=-1), 0.0).astype(np.float32)
            up = raw if raw.shape == (hn, wn) else resize_bilinear(raw, (hn, wn))
            cam, peak = self._finish(up, r["box"], r["hw"])
            if peak == 0.0:
                notes.append("the map is all zeros: no channel of this layer raises the score")
            result[name] = Explanation(cam=cam, layer=name, method="seg-grad-cam",
                                       region=r["region"], mask=r["mask"], class_index=r["k"],
                                       background=background, score=r["score"], peak=peak,
                                       notes=notes)
        return result

    def saliency(self, image: np.ndarray, region: Region | str | np.ndarray, *,
                 class_index: int | None = None, background: bool = False,
                 prob: np.ndarray | None = None, threshold: float | None = None,
                 min_area: int | None = None) -> Explanation:
        """Gradient saliency |d score / d input|, maximum over the input channels, cropped to
        the image and divided by its maximum; ``layer`` is "input". Arguments as
        :meth:`explain`."""
        r = self._pass(image, region, [], class_index=class_index, background=background,
                       prob=prob, threshold=threshold, min_area=min_area, saliency=True)
        notes = list(r["notes"])
        g = np.abs(r["input_grad"].numpy()[0]).max(axis=-1).astype(np.float32)
        sal, peak = self._finish(g, r["box"], r["hw"])
        if peak == 0.0:
            notes.append("the map is all zeros: the score does not depend on the input")
        return Explanation(cam=sal, layer="input", method="saliency", region=r["region"],
                           mask=r["mask"], class_index=r["k"], background=background,
                           score=r["score"], peak=peak, notes=notes)

    def logits(self, image: np.ndarray) -> np.ndarray:
        """The pre-activation logits the score sums: float32 (Hn, Wn, K) at the network input
        (the log-odds of the fallback when :attr:`exact_logit` is False)."""
        x, _, _ = self._prepare(image)
        last = self._run("forward", x[None].astype(np.float32, copy=False)).numpy()[0]
        if self.exact_logit:
            return last.astype(np.float32)
        p = np.clip(last.astype(np.float64), LOGIT_EPS, 1.0 - LOGIT_EPS)
        return (np.log(p) - np.log1p(-p)).astype(np.float32)


def explain_image(loaded: LoadedModel, image: np.ndarray, region: Region | str | np.ndarray, *,
                  layer: str | None = None, method: str = "seg-grad-cam",
                  padding_mode: str | None = None, **kw: Any) -> Explanation:
    """One explanation of one image (builds a :class:`GradCam`; keep one for many calls).

    ``layer``: the conv layer (None: the bottleneck); ``method``: ``seg-grad-cam`` or
    ``saliency``; other keywords as :meth:`GradCam.explain`.
    """
    if method not in METHODS:
        raise UnetCoreError(f"unknown method {method!r}; accepted: {', '.join(METHODS)}")
    cam = GradCam(loaded, padding_mode=padding_mode)
    if method == "saliency":
        return cam.saliency(image, region, **kw)
    name = layer or cam.default_layer
    return cam.explain(image, region, layers=[name], **kw)[name]


# -- display -------------------------------------------------------------------------------------
def cam_colormap_lut() -> np.ndarray:
    """(256, 3) uint8 lookup table of :data:`CAM_COLORMAP` (viridis, as Plotly's stops)."""
    stops = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in _VIRIDIS],
                     dtype=np.float64)
    pos = np.linspace(0.0, 1.0, len(stops))
    x = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(x, pos, stops[:, i]) for i in range(3)], axis=1)
    return np.rint(lut).astype(np.uint8)


def cam_overlay_rgb(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The map in viridis blended over the image: uint8 (H, W, 3).

    ``image``: (H, W) grey or (H, W, C) as decoded, any dtype (scaled for display like
    :func:`unet_core.preprocess.display_image`); ``cam``: float (H, W) in [0, 1];
    ``alpha``: the map's weight, 0 (image only) .. 1 (map only).
    """
    base = display_image(image)
    c = np.asarray(cam, dtype=np.float32)
    if c.shape != base.shape[:2]:
        raise UnetCoreError(f"map has shape {c.shape}; accepted: {base.shape[:2]}, the "
                            "image's size")
    if not 0.0 <= float(alpha) <= 1.0:
        raise UnetCoreError(f"alpha {alpha} is outside 0..1; accepted: 0..1")
    if base.ndim == 2:
        base = np.repeat(base[..., None], 3, axis=2)
    idx = np.rint(np.clip(np.nan_to_num(c), 0.0, 1.0) * 255).astype(np.intp)
    colour = cam_colormap_lut()[idx].astype(np.float32) / 255.0
    out = (1.0 - alpha) * base + alpha * colour
    return np.rint(np.clip(out, 0.0, 1.0) * 255).astype(np.uint8)


__all__ = [
    "CAM_COLORMAP",
    "METHODS",
    "ONNX_REFUSAL",
    "REGION_KINDS",
    "Explanation",
    "GradCam",
    "Region",
    "cam_colormap_lut",
    "cam_overlay_rgb",
    "explain_image",
    "parse_region",
    "region_mask",
]
