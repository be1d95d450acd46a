"""Exceptions raised by unet_core.

Every error a user can cause (bad file, bad folder, bad model, bad argument) is a
:class:`UnetCoreError`. Its message is one line that says what was wrong and what is
accepted, so the CLI and the dashboard can show it as-is instead of a traceback.
"""

from __future__ import annotations


class UnetCoreError(ValueError):
    """Base class for every user-facing error of the engine."""


class ImageReadError(UnetCoreError):
    """A file could not be read as an image (not an image, truncated, too big, NaN...)."""


class MaskError(UnetCoreError):
    """A mask is unusable: wrong size for its image, unreadable, ..."""


class DataSetError(UnetCoreError):
    """A folder or archive of image/mask pairs is unusable (empty, missing masks, ...)."""


class ModelLoadError(UnetCoreError):
    """A file is not a usable Keras segmentation model."""


class ModelSpecError(UnetCoreError):
    """A model loads but does not fit what the engine supports (input channels, outputs)."""
