"""Tiny ONNX U-Nets written with ``onnx.helper``, the way PyTorch exports them, and a plain
ONNX Runtime reference that does not use :mod:`unet_core`.

:func:`nchw_unet` builds a two-level U-Net (Conv, Relu, MaxPool, ConvTranspose, Concat, 1x1 Conv)
in NCHW with a chosen number of input channels, classes and head (``sigmoid``, ``logits``,
``softmax``), a fixed or dynamic batch and a fixed or dynamic size. :func:`nhwc_wrap` turns any
such graph into an NHWC one the way tf2onnx does (a Transpose in, a Transpose out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _conv(name: str, x: str, cin: int, cout: int, k: int, rng: np.random.Generator,
          nodes: list, inits: list, transpose: bool = False) -> str:
    import onnx
    from onnx import helper, numpy_helper

    if transpose:
        w = rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cin, cout, k, k)).astype(np.float32)
        attrs = {"kernel_shape": [k, k], "strides": [k, k]}
        op = "ConvTranspose"
    else:
        w = rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k)).astype(np.float32)
        attrs = {"kernel_shape": [k, k], "pads": [k // 2] * 4}
        op = "Conv"
    b = rng.normal(0, 0.1, cout).astype(np.float32)
    inits += [numpy_helper.from_array(w, f"{name}.weight"),
              numpy_helper.from_array(b, f"{name}.bias")]
    out = f"/{name}/{op}_output_0"
    nodes.append(helper.make_node(op, [x, f"{name}.weight", f"{name}.bias"], [out],
                                  name=f"/{name}/{op}", **attrs))
    del onnx
    return out


def _relu(name: str, x: str, nodes: list) -> str:
    from onnx import helper

    out = f"/{name}/Relu_output_0"
    nodes.append(helper.make_node("Relu", [x], [out], name=f"/{name}/Relu"))
    return out


def nchw_unet(channels: int = 3, classes: int = 1, head: str = "logits",
              batch: int | None = None, size: int | None = None, width: int = 8,
              seed: int = 0, opset: int = 17) -> Any:
    """An ``onnx.ModelProto``: input ``input`` (N, C, H, W) float32 -> ``output`` (N, K, H, W).

    ``head``: ``logits`` (the last Conv), ``sigmoid`` (K = 1) or ``softmax`` (over axis 1).
    ``batch`` / ``size``: fixed values, or None for dynamic ("batch", "height", "width").
    Stride 4 (two 2x MaxPools); parameters ~ 1-3k for width 8.
    """
    import onnx
    from onnx import helper

    rng = np.random.default_rng(seed)
    nodes: list = []
    inits: list = []
    f = width
    e1 = _relu("enc1", _conv("enc1", "input", channels, f, 3, rng, nodes, inits), nodes)
    nodes.append(helper.make_node("MaxPool", [e1], ["/pool1/MaxPool_output_0"],
                                  name="/pool1/MaxPool", kernel_shape=[2, 2], strides=[2, 2]))
    e2 = _relu("enc2", _conv("enc2", "/pool1/MaxPool_output_0", f, 2 * f, 3, rng, nodes, inits),
               nodes)
    nodes.append(helper.make_node("MaxPool", [e2], ["/pool2/MaxPool_output_0"],
                                  name="/pool2/MaxPool", kernel_shape=[2, 2], strides=[2, 2]))
    bott = _relu("bottleneck", _conv("bottleneck", "/pool2/MaxPool_output_0", 2 * f, 4 * f, 3,
                                     rng, nodes, inits), nodes)
    u2 = _conv("up2", bott, 4 * f, 2 * f, 2, rng, nodes, inits, transpose=True)
    nodes.append(helper.make_node("Concat", [u2, e2], ["/cat2/Concat_output_0"],
                                  name="/cat2/Concat", axis=1))
    d2 = _relu("dec2", _conv("dec2", "/cat2/Concat_output_0", 4 * f, 2 * f, 3, rng, nodes,
                             inits), nodes)
    u1 = _conv("up1", d2, 2 * f, f, 2, rng, nodes, inits, transpose=True)
    nodes.append(helper.make_node("Concat", [u1, e1], ["/cat1/Concat_output_0"],
                                  name="/cat1/Concat", axis=1))
    d1 = _relu("dec1", _conv("dec1", "/cat1/Concat_output_0", 2 * f, f, 3, rng, nodes, inits),
               nodes)
    head_out = _conv("head", d1, f, classes, 1, rng, nodes, inits)
    if head == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", [head_out], ["output"], name="/Sigmoid"))
    elif head == "softmax":
        nodes.append(helper.make_node("Softmax", [head_out], ["output"], name="/Softmax", axis=1))
    elif head == "logits":
        nodes.append(helper.make_node("Identity", [head_out], ["output"], name="/Identity"))
    else:
        raise ValueError(head)
    n = batch if batch is not None else "batch"
    h = size if size is not None else "height"
    w = size if size is not None else "width"
    graph = helper.make_graph(
        nodes, "tiny_unet",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [n, channels, h, w])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [n, classes, h, w])],
        inits)
    model = helper.make_model(graph, producer_name="pytorch", producer_version="2.2.1",
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def nhwc_wrap(model: Any) -> Any:
    """The same network with an NHWC input ``args_0`` and an NHWC output, as tf2onnx writes it:
    a Transpose (0, 3, 1, 2) first and a Transpose (0, 2, 3, 1) last."""
    import onnx
    from onnx import helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    old_in, old_out = g.input[0], g.output[0]
    n, c, h, w = [d.dim_value or d.dim_param for d in old_in.type.tensor_type.shape.dim]
    k = old_out.type.tensor_type.shape.dim[1].dim_value
    for node in g.node:
        node.input[:] = ["nchw_in" if i == "input" else i for i in node.input]
        node.output[:] = ["nchw_out" if o == "output" else o for o in node.output]
    g.node.insert(0, helper.make_node("Transpose", ["args_0"], ["nchw_in"], perm=[0, 3, 1, 2],
                                      name="Transpose__in"))
    g.node.append(helper.make_node("Transpose", ["nchw_out"], ["output"], perm=[0, 2, 3, 1],
                                   name="Transpose__out"))
    del g.input[:]
    del g.output[:]
    g.input.append(helper.make_tensor_value_info("args_0", onnx.TensorProto.FLOAT, [n, h, w, c]))
    g.output.append(helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [n, h, w, k]))
    onnx.checker.check_model(m)
    return m


def save(model: Any, path: Path) -> Path:
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def ort_forward(path: Path, x: np.ndarray) -> np.ndarray:
    """Plain ONNX Runtime on the graph's own input layout: x as the graph takes it (e.g.
    (1, C, H, W) float32) -> the raw output."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)})[0]
