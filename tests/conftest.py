"""Shared fixtures: tiny models built on the fly and small generated data sets."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# ONNX exports made by the tests go to a throw-away cache, never the user's ~/.cache.
os.environ.setdefault("UNET_CACHE_DIR", tempfile.mkdtemp(prefix="unet_test_cache_"))

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_dataset(name: str) -> Path:
    """Path of a real data set under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not (path / "images").is_dir():
        pytest.skip(f"real data {path} is absent (only on the project's own machines)")
    return path


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A small fully convolutional U-Net (stride 4) saved as .keras with a card."""
    import keras

    from unet_core.model import ModelCard, build_unet

    keras.utils.set_random_seed(0)
    model = build_unet(base_filters=4, depth=2, dropout=0.0, name="tiny")
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    model.save(path)
    ModelCard(name="tiny", domain="test", multiple_of=4, min_size=32, threshold=0.5,
              description="tiny test U-Net").save(path.with_suffix(".json"))
    return path


#: Class names of the 3-class model in :func:`own_models`.
OWN_CLASSES = ["background", "road", "car"]


@pytest.fixture(scope="session")
def own_models(tmp_path_factory) -> Path:
    """A folder with two models a user might bring, each with its card (tiny, untrained):

    * ``rgb.keras``: 3-channel sigmoid U-Net fed raw BGR 0..255 (as OpenCV code does);
    * ``three.keras``: 3-class softmax U-Net (:data:`OWN_CLASSES`) with a fixed 32x32 RGB
      input, fit resize.
    """
    import keras

    from unet_core.model import ModelCard, build_unet

    folder = tmp_path_factory.mktemp("own_models")
    keras.utils.set_random_seed(0)
    build_unet(input_channels=3, base_filters=4, depth=2, dropout=0.0,
               name="rgb").save(folder / "rgb.keras")
    ModelCard(name="rgb", domain="roads", foreground="lane", channels=3, channel_order="bgr",
              normalisation="raw", multiple_of=4, min_size=32, threshold=0.5,
              description="tiny untrained RGB U-Net (raw BGR input)").save(folder / "rgb.json")
    build_unet(input_channels=3, n_classes=3, output_activation="softmax", input_size=(32, 32),
               base_filters=4, depth=2, dropout=0.0, name="three").save(folder / "three.keras")
    ModelCard(name="three", domain="roads", classes=OWN_CLASSES, channels=3, fit="resize",
              input_size=[32, 32], description="tiny untrained 3-class U-Net"
              ).save(folder / "three.json")
    return folder


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory) -> Path:
    """A folder of tiny ONNX U-Nets as PyTorch and tf2onnx write them (tests/onnx_zoo.py):

    * ``nchw_logits.onnx``: NCHW, 3 channels, dynamic batch and size, logits (1 map);
    * ``nchw_gray.onnx``: NCHW, 1 channel, dynamic, sigmoid in the graph;
    * ``nchw_softmax_b4.onnx``: NCHW, 1 channel, 4-class softmax, fixed batch 4, fixed 64x64;
    * ``nhwc_sigmoid4.onnx``: NHWC (Transpose in and out), 4 channels, dynamic, sigmoid;
    * ``nhwc_logits3_b2.onnx``: NHWC, 3 channels, 3-class logits, fixed batch 2, fixed 32x32,
      with a card naming its classes (:data:`OWN_CLASSES`).
    """
    from onnx_zoo import nchw_unet, nhwc_wrap, save

    from unet_core.model import ModelCard

    folder = tmp_path_factory.mktemp("onnx_models")
    save(nchw_unet(3, 1, "logits", seed=1), folder / "nchw_logits.onnx")
    save(nchw_unet(1, 1, "sigmoid", seed=2), folder / "nchw_gray.onnx")
    save(nchw_unet(1, 4, "softmax", batch=4, size=64, seed=3), folder / "nchw_softmax_b4.onnx")
    save(nhwc_wrap(nchw_unet(4, 1, "sigmoid", seed=4)), folder / "nhwc_sigmoid4.onnx")
    save(nhwc_wrap(nchw_unet(3, 3, "logits", batch=2, size=32, seed=5)),
         folder / "nhwc_logits3_b2.onnx")
    ModelCard(name="nhwc_logits3_b2", classes=OWN_CLASSES, channels=3, fit="resize",
              input_size=[32, 32], multiple_of=4, output="logits", layout="nhwc",
              description="tiny untrained 3-class NHWC ONNX U-Net"
              ).save(folder / "nhwc_logits3_b2.json")
    return folder


@pytest.fixture(scope="session")
def seismic_pairs(tmp_path_factory) -> Path:
    """12 synthetic seismic pairs (101x101) in DIR/images + DIR/masks."""
    from unet_core.synthetic import make_pairs

    root = tmp_path_factory.mktemp("seismic")
    make_pairs(root, "seismic", 12, seed=3)
    return root


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium driven by Playwright (never `playwright install`), one per test
    module (module scope: a sync Playwright left running would break the async load test);
    a missing chromium fails the test with how to install it."""
    from tools.browser import BrowserError, chromium_browser

    try:
        with chromium_browser() as b:
            yield b
    except BrowserError as exc:
        pytest.fail(str(exc))
