"""Tiny models of every shape the product accepts, and independent reference pipelines.

The references here never import :mod:`unet_core.preprocess`: images are resized with
``tf.image.resize(..., "bilinear")`` (half-pixel centres, no antialiasing, the rule of OpenCV's
``INTER_LINEAR``), scaled by formulas written out in each test, and fed to ``model(x)`` in Keras
directly, so a test compares the engine with a second, separate implementation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------
# images


def smooth_image(h: int, w: int, c: int | None = None, dtype: Any = np.uint8,
                 seed: int = 0) -> np.ndarray:
    """A deterministic image with structure at several scales: (h, w) or (h, w, c).

    Integer dtypes span their full range (uint8 0..255, uint16 0..65535); floats lie in [0, 1].
    Each channel has its own pattern, so channel order matters to a model.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = []
    for _ in range(c or 1):
        v = np.zeros((h, w))
        for _ in range(4):
            fy, fx = rng.uniform(0.02, 0.25, 2)
            v += np.sin(fy * yy + rng.uniform(0, 6)) * np.cos(fx * xx + rng.uniform(0, 6))
        v += 0.3 * rng.standard_normal((h, w))
        planes.append((v - v.min()) / (v.max() - v.min()))
    x = np.stack(planes, axis=-1) if c else planes[0]
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        return np.round(x * np.iinfo(dt).max).astype(dt)
    return x.astype(dt)


# ---------------------------------------------------------------------------------------------
# reference pipeline pieces (independent of unet_core.preprocess)


def tf_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) -> float32 (h, w, C) by ``tf.image.resize`` bilinear (no antialiasing)."""
    import tensorflow as tf

    x = np.asarray(x, dtype=np.float32)
    if tuple(x.shape[:2]) == tuple(size):
        return x.copy()
    return tf.image.resize(x, size, method="bilinear", antialias=False).numpy()


def cv2_resize_uint8(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What ``cv2.resize(uint8_image, (w, h))`` (INTER_LINEAR) returns: bilinear, rounded to
    uint8 (OpenCV keeps the input's dtype). (H, W, C) uint8 -> (h, w, C) uint8."""
    if tuple(x.shape[:2]) == tuple(size):
        return np.asarray(x).copy()
    return np.clip(np.round(tf_resize(x, size)), 0, 255).astype(np.uint8)


def keras_forward(model: Any, x: np.ndarray) -> np.ndarray:
    """``model(x)`` on one (H, W, C) image -> float32 (H, W, K)."""
    with warnings.catch_warnings():  # Keras 3 on Keras 2 files: "structure of `inputs`..."
        warnings.simplefilter("ignore", UserWarning)
        return np.asarray(model(np.asarray(x, np.float32)[None], training=False))[0]


def sigmoid(y: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-y))


def softmax(y: np.ndarray) -> np.ndarray:
    e = np.exp(y - y.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def reflect_pad(x: np.ndarray, th: int, tw: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad (H, W, C) to (th, tw) by mirroring, the larger half before -> (padded, (top, left))."""
    h, w = x.shape[:2]
    top, left = (th - h + 1) // 2, (tw - w + 1) // 2
    return np.pad(x, ((top, th - h - top), (left, tw - w - left), (0, 0)), mode="reflect"), (
        top, left)


def reference(model: Any, image: np.ndarray, scale: Callable[[np.ndarray], np.ndarray], *,
              resize_to: tuple[int, int] | None = None, pad_to: tuple[int, int] | None = None,
              logits: str | None = None) -> np.ndarray:
    """The pipeline written out: ``scale`` (image -> float (H, W, C) network values, channels
    mapped by hand), optional whole-image resize to ``resize_to`` or mirror padding to
    ``pad_to``, ``model(x)``, ``sigmoid``/``softmax`` for logits, then the probabilities
    resized back (or cropped) to the image's size. Returns float32 (H, W, K)."""
    x = np.asarray(scale(image), dtype=np.float32)
    h, w = x.shape[:2]
    box = (0, 0)
    if resize_to is not None:
        x = tf_resize(x, resize_to)
    elif pad_to is not None:
        x, box = reflect_pad(x, *pad_to)
    y = keras_forward(model, x)
    if logits == "sigmoid":
        y = sigmoid(y)
    elif logits == "softmax":
        y = softmax(y)
    if resize_to is not None:
        return tf_resize(y, (h, w))
    return np.asarray(y[box[0]:box[0] + h, box[1]:box[1] + w], np.float32)


def mae(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two arrays of the same shape."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).mean())


# ---------------------------------------------------------------------------------------------
# tiny models


def tiny_unet(channels: int, n_classes: int, activation: str,
              input_size: tuple[int, int] | None = None, seed: int = 0) -> Any:
    """``build_unet(base_filters=4, depth=2)``: stride 4, (N, H, W, channels) -> (N, H, W, K)."""
    import keras

    from unet_core.model import build_unet

    keras.utils.set_random_seed(seed)
    return build_unet(input_channels=channels, base_filters=4, depth=2, dropout=0.0,
                      output_activation=activation, input_size=input_size,
                      n_classes=n_classes, name=f"zoo_c{channels}_k{n_classes}_{activation}")


def rescaling_unet(channels: int = 3, seed: int = 0) -> Any:
    """A fully convolutional U-Net that normalises inside itself (``Rescaling(1/255)`` first),
    as Keras 2 code often does: fed raw 0-255 values; sigmoid output."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, None, channels), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inp)
    a = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    b = layers.MaxPooling2D(2)(a)
    b = layers.Conv2D(8, 3, padding="same", activation="relu")(b)
    b = layers.UpSampling2D(2)(b)
    x = layers.Concatenate()([a, b])
    out = layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    return keras.Model(inp, out, name="zoo_rescaling")


def pointwise_net(channels: int = 3, n_classes: int = 3, input_size: tuple[int, int] = (32, 32),
                  seed: int = 0) -> Any:
    """A fixed-size network of 1x1 convolutions only (softmax): each output pixel depends on
    its own input pixel alone, so tiling a larger image must give exactly the per-pixel result
    (an independent reference for the ``pad`` fit's tiling, see :func:`pointwise_reference`)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((*input_size, channels), name="image")
    x = layers.Conv2D(8, 1, activation="relu", name="pw1")(inp)
    out = layers.Conv2D(n_classes, 1, activation="softmax", name="pw2")(x)
    return keras.Model(inp, out, name="zoo_pointwise")


def pointwise_reference(model: Any, x: np.ndarray) -> np.ndarray:
    """The pointwise network in numpy on a whole (H, W, C) image of any size: float32 (H, W, K)."""
    w1, b1 = model.get_layer("pw1").get_weights()
    w2, b2 = model.get_layer("pw2").get_weights()
    hidden = np.maximum(np.asarray(x, np.float64) @ w1[0, 0] + b1, 0.0)
    return softmax(hidden @ w2[0, 0] + b2).astype(np.float32)


def strided_output_net(input_size: tuple[int, int] | None) -> Any:
    """A network whose last convolution has stride 2: its output is half the input's size."""
    import keras
    from keras import layers

    h, w = input_size or (None, None)
    inp = keras.Input((h, w, 1), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    out = layers.Conv2D(1, 3, strides=2, padding="same", activation="sigmoid")(x)
    return keras.Model(inp, out, name="zoo_strided")


#: name -> (builder, kwargs): the saved models the shape tests share (one ONNX export each).
ZOO: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "gray_sigmoid_fcn": (tiny_unet, {"channels": 1, "n_classes": 1, "activation": "sigmoid"}),
    "rgb_softmax4_fixed32": (tiny_unet, {"channels": 3, "n_classes": 4, "activation": "softmax",
                                         "input_size": (32, 32)}),
    "rgba_logits1_fcn": (tiny_unet, {"channels": 4, "n_classes": 1, "activation": "linear"}),
    "band5_logits4_fcn": (tiny_unet, {"channels": 5, "n_classes": 4, "activation": "linear"}),
    "rgb_softmax2_fcn": (tiny_unet, {"channels": 3, "n_classes": 2, "activation": "softmax"}),
    "raw_rescaling_fcn": (rescaling_unet, {"channels": 3}),
    "pointwise_softmax3_fixed32": (pointwise_net, {"channels": 3, "n_classes": 3}),
}


def build_zoo(folder: Path) -> dict[str, tuple[Path, Any]]:
    """Build and save every :data:`ZOO` model as ``folder/NAME.keras`` (no card next to it)
    -> name -> (path, Keras model)."""
    out: dict[str, tuple[Path, Any]] = {}
    for name, (builder, kwargs) in ZOO.items():
        model = builder(**kwargs)
        path = Path(folder) / f"{name}.keras"
        model.save(path)
        out[name] = (path, model)
    return out
