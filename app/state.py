"""The dashboard's session state: one key per control, model defaults applied once.

Every control that outlives a page has exactly ONE session-state key, which is also its widget
key (:data:`CONTROLS`), so the value a control shows is the value in use. Nothing is copied
between keys. Two rules keep it that way:

* :func:`sync_model`, called by the sidebar before any page draws, applies the card's
  defaults (threshold, minimum area, padding, TTA, mask inversion) to those keys once, when
  the model in use changes, and never again for that model;
* every carried widget is created with ``persist_state="session"``, so Streamlit keeps its
  value while the user is on a page that does not draw it (no copies, no re-assignments,
  which would echo stale values back to a control the user is moving).

The image in use (``image_key``) carries over between pages and models, but an image that
belongs to another domain than the model's is not scored silently: :func:`image_fits_model`
says so and the page asks first (:func:`confirm_image`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import streamlit as st

from app.sources import ImageItem, remember
from unet_core.model import ModelCard

#: The model-bound controls: session key -> what it is. Each is also its widget's key.
CONTROLS: dict[str, str] = {
    "threshold": "Threshold (foreground is probability > threshold)",
    "min_area": "Minimum area in pixels (0 = off)",
    "padding": "Padding mode",
    "tta": "Test-time augmentation",
    "invert_masks": "Masks mark the other class",
    "class_index": "Class (of a K-class model) shown, thresholded and scored",
}


def model_defaults(card: ModelCard) -> dict[str, Any]:
    """The control values a model card recommends."""
    return {"threshold": round(float(card.threshold), 2), "min_area": int(card.min_area),
            "padding": str(card.padding_mode), "tta": bool(card.tta),
            "invert_masks": bool(card.truth_inverted), "class_index": int(card.default_class)}


def sync_model(model_key: str, card: ModelCard) -> bool:
    """Apply ``card``'s defaults to the controls when the model in use changes (``model_key``
    names the file *and* its card: applying an edited card applies its defaults too).

    Returns True when they were applied (a new model), False when the model is the same (the
    user's values stay)."""
    ss = st.session_state
    if ss.get("model_key") == model_key:
        for key, value in model_defaults(card).items():
            ss.setdefault(key, value)
        return False
    ss["model_key"] = model_key
    for key, value in model_defaults(card).items():
        ss[key] = value
    for key in ("act_layer", "filters_layer"):
        ss.pop(key, None)
    return True


def control(key: str, default: Any) -> Any:
    """The value of control ``key`` (set to ``default`` first if missing)."""
    return st.session_state.setdefault(key, default)


# --------------------------------------------------------------------------- the image


def recent_images() -> OrderedDict[str, ImageItem]:
    """This session's recent uploaded / opened images (oldest first)."""
    return st.session_state.setdefault("recent_images", OrderedDict())


def use_image(item: ImageItem) -> None:
    """Make ``item`` the image in use (and remember it when it is not a bundled sample)."""
    remember(recent_images(), item)
    st.session_state["image_key"] = item.key


UNKNOWN_DOMAINS = ("", "unknown")


def image_fits_model(item: ImageItem, model_key: str, card: ModelCard) -> bool:
    """True when ``item`` may be scored with this model without asking: its domain is the
    model's, either is unknown (a cardless model says nothing of its images), or the user
    confirmed it for this model."""
    model_domain = card.domain.lower().strip()
    if not item.domain or model_domain in UNKNOWN_DOMAINS \
            or item.domain.lower().strip() == model_domain:
        return True
    return (item.key, model_key) in st.session_state.get("confirmed_images", set())


def confirm_image(item: ImageItem, model_key: str) -> None:
    """Record that the user wants ``item`` scored with this model anyway."""
    st.session_state.setdefault("confirmed_images", set()).add((item.key, model_key))
