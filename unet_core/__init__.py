"""U-Net Explorer engine: read images, pad, segment, score, and look inside U-Nets.

Importable from a notebook without Streamlit. TensorFlow is imported lazily, by the modules that
need it (model loading, inference, introspection, training).
"""

from .errors import (
    DataSetError,
    ImageReadError,
    MaskError,
    ModelLoadError,
    ModelSpecError,
    UnetCoreError,
)

__version__ = "0.1.0"

__all__ = [
    "DataSetError",
    "ImageReadError",
    "MaskError",
    "ModelLoadError",
    "ModelSpecError",
    "UnetCoreError",
    "__version__",
]
