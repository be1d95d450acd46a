"""Settings of the dashboard: folders, limits and labels, read from the environment.

Every function here is cheap and pure (no Streamlit state), so pages and tests can call it on
every run. Environment variables (all optional):

* ``UNET_MODELS_DIR``: folder of the bundled models (default ``<repo>/models``);
* ``UNET_TRUSTED_MODELS_DIR``: a folder of *trusted* models, listed with the bundled ones and
  loaded with Keras ``safe_mode=False`` (Lambda layers allowed; their code runs on load). Only
  files an administrator put there: uploads are never trusted. (``.onnx`` files in either
  folder load like uploaded ones: an ONNX graph holds no code to trust.);
* ``UNET_DEFAULT_MODEL``: file stem of the model selected first (default ``salt``);
* ``UNET_DATA_ROOT``: folder that server-side data sets must lie in;
* ``UNET_MAX_PIXELS``: pixel limit of one image (default 4096 x 4096 in the dashboard);
* ``UNET_ACTIVATION_MAX_MB``: cap on one image's activation maps (MiB, default 1024).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from unet_core.io import IMAGE_EXTENSIONS, get_max_pixels
from unet_core.model import MODEL_EXTENSIONS

LOG = logging.getLogger("unet_explorer")
if not LOG.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    LOG.addHandler(_handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
IMAGE_TYPES: list[str] = [ext.lstrip(".") for ext in IMAGE_EXTENSIONS]
MODEL_TYPES: list[str] = [ext.lstrip(".") for ext in MODEL_EXTENSIONS]
#: What the model uploader takes: a model file, or an architecture .json with its weights .h5
#: (and, in both cases, an optional model card .json).
MODEL_UPLOAD_TYPES: list[str] = [*MODEL_TYPES, "json"]
#: The sidebar's model uploader label (scripts and browser tests find the widget by it).
MODEL_UPLOAD_LABEL = "Upload a model (.keras, .h5 or .onnx; or architecture .json + weights .h5)"
#: Default pixel limit of the dashboard (4096 x 4096); $UNET_MAX_PIXELS overrides it. Images
#: whose padded size exceeds APP_NETWORK_PIXELS are predicted in overlapping tiles, so a
#: forward pass stays bounded whatever the image size.
APP_MAX_PIXELS = 4096 * 4096
#: Largest image a fully convolutional network sees in one pass in the dashboard (768 x 768;
#: the engine's default is 1024 x 1024): a server holding several models and sessions keeps
#: its peak under 1.5 GB. $UNET_APP_NETWORK_PIXELS overrides it.
APP_NETWORK_PIXELS = 768 * 768
#: The bundled sample set of each model-card domain.
DOMAIN_SAMPLES: dict[str, str] = {"seismic": "seismic", "microscopy": "nuclei",
                                  "electron microscopy": "membranes"}
#: Default cap on the activation maps of one image (MiB).
ACTIVATION_MAX_MB = 1024
#: Tiles per page in the Filters and Activations grids.
PER_PAGE = 16
BACKEND_LABELS: dict[str, str] = {"auto": "Auto (fastest available)",
                                  "onnxruntime": "ONNX Runtime", "tensorflow": "TensorFlow"}


def models_dir() -> Path:
    """Folder of the bundled models: ``$UNET_MODELS_DIR`` or ``<repo>/models``."""
    value = os.environ.get("UNET_MODELS_DIR", "").strip()
    return Path(value).expanduser() if value else ROOT / "models"


def trusted_models_dir() -> Path | None:
    """Folder of trusted models (``$UNET_TRUSTED_MODELS_DIR``), or None when unset."""
    value = os.environ.get("UNET_TRUSTED_MODELS_DIR", "").strip()
    return Path(value).expanduser() if value else None


def default_model() -> str:
    """File stem of the model selected first: ``$UNET_DEFAULT_MODEL``, default ``salt``."""
    return os.environ.get("UNET_DEFAULT_MODEL", "").strip() or "salt"


def data_root() -> Path:
    """Folder that server-side data set paths must lie in.

    ``$UNET_DATA_ROOT``, else ``<repo>/../shared/data`` if it exists, else ``<repo>/assets``.
    """
    value = os.environ.get("UNET_DATA_ROOT", "").strip()
    if value:
        return Path(value).expanduser().resolve()
    shared = ROOT.parent / "shared" / "data"
    return shared.resolve() if shared.is_dir() else ASSETS.resolve()


def app_max_pixels() -> int:
    """Pixel limit for images read by the dashboard (``$UNET_MAX_PIXELS`` or 4096 x 4096)."""
    if os.environ.get("UNET_MAX_PIXELS", "").strip():
        return get_max_pixels()
    return APP_MAX_PIXELS


def app_network_pixels() -> int:
    """Pixels of one forward pass in the dashboard (``$UNET_APP_NETWORK_PIXELS`` or
    :data:`APP_NETWORK_PIXELS`); larger padded images are tiled."""
    try:
        value = int(os.environ.get("UNET_APP_NETWORK_PIXELS", "") or APP_NETWORK_PIXELS)
    except ValueError:
        value = APP_NETWORK_PIXELS
    return max(64 * 64, value)


def activation_max_bytes() -> int:
    """Cap on one image's activation maps (``$UNET_ACTIVATION_MAX_MB`` MiB, default 1024)."""
    try:
        mb = int(os.environ.get("UNET_ACTIVATION_MAX_MB", "") or ACTIVATION_MAX_MB)
    except ValueError:
        mb = ACTIVATION_MAX_MB
    return max(1, mb) * 2**20


def max_upload_mb() -> int:
    """Streamlit's ``server.maxUploadSize`` (MB)."""
    try:
        import streamlit as st

        return int(st.get_option("server.maxUploadSize"))
    except Exception:  # option missing in some test harnesses
        return 200


def domain_of_sample_set(set_name: str) -> str:
    """The model-card domain a bundled sample set belongs to ('' when none does)."""
    for domain, name in DOMAIN_SAMPLES.items():
        if name == set_name:
            return domain
    return ""
