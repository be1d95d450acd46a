"""Threshold view: the "Threshold" slider and everything that depends on it, redrawn in the browser.

A Streamlit Custom Component (v2: ``st.components.v2.component``, inline JS + CSS mounted in the
app's page under a shadow root, no iframe, no build step). The JS and CSS are the committed files
``threshold_view/threshold_view.js`` and ``threshold_view/threshold_view.css`` next to this module.

Two halves:

* :func:`threshold_payload` -- pure and cacheable (``st.cache_data``): from one image, its
  probability map and (optionally) its true mask it builds, once per (image, model, min_area),
  every array the browser needs: the display image, a "level" map that gives the predicted mask
  at each of the 101 slider thresholds exactly, the truth, the full-resolution foreground counts
  and the per-threshold metrics table (full resolution, minimum-area rule applied).
* :func:`threshold_view` -- mounts the component. Moving the slider redraws the overlay, the
  error map, the curve markers and the metric texts in the browser (no script rerun); Python
  hears only releases (``change`` events), and gets the last released threshold back.

Mounting, e.g. on the Segment page (inside or outside a fragment)::

    @st.cache_data(max_entries=8)
    def payload(image, prob, truth, min_area):
        return threshold_payload(image, prob, truth, min_area=min_area)

    t = threshold_view(payload(image, prob, mask, min_area), threshold=card.threshold,
                       min_area=min_area, card_threshold=card.threshold, key="seg_tv")

Colours (Okabe-Ito, colour-blind safe): the predicted mask / truth outline pair is sky blue /
yellow, or blue / orange when sky blue or yellow has too little luminance contrast (< 1.5:1)
with the image's mean luminance along the masks' edges (a member still below is replaced by
black or white): computed by :func:`app.viz.overlay_colors`. So on dark or mid-grey seismic
the mask is sky blue and the truth yellow. The predicted mask is filled (with a 1 px edge) or
outlined 2 px *inside* its edge; the truth is outlined 2 px *outside* its edge, so the two never
cover each other. Error map: TP bluish green #009E73, FP orange #E69F00, FN reddish purple
#CC79A7. Curves: IoU solid blue #0072B2, Dice dashed vermillion #D55E00.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app import viz
from app.components import mount_command
from unet_core.metrics import DEFAULT_THRESHOLDS, SweepAccumulator, check_min_area

__all__ = ["COMPONENT_NAME", "threshold_payload", "threshold_view"]

#: Registered name of the component (unique in the app).
COMPONENT_NAME = "unet_explorer_threshold_view"
#: Version of the payload layout read by threshold_view.js.
PAYLOAD_VERSION = 1
ASSETS = Path(__file__).resolve().with_name("threshold_view")

RGB = tuple[int, int, int]
METRIC_KEYS = ("iou", "dice", "precision", "recall", "tgs")
STYLES = ("fill", "contour")


# ------------------------------------------------------------------------------- helpers


def _png_b64(array: np.ndarray) -> str:
    """Base64 (ASCII) of the PNG of a uint8 (H, W) or (H, W, 3) array."""
    return base64.b64encode(viz.png_bytes(array)).decode("ascii")


def _image_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) of a gray / RGB image (float in [0, 1], or integer 0..255)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"image must be (H, W) gray or (H, W, 3) RGB, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(arr, 0, 255).astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"image must be a float or uint8 array, got dtype {arr.dtype}")
    v = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(v * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _hex(color: RGB) -> str:
    return "#{:02X}{:02X}{:02X}".format(*color)


# ------------------------------------------------------------------------------- payload


def threshold_payload(image: np.ndarray, prob: np.ndarray, truth: np.ndarray | None, *,
                      min_area: int = 0, max_side: int = 1024) -> dict:
    """Everything the browser needs to redraw the threshold-dependent views (pure, cacheable).

    Args:
        image: float (H, W) in [0, 1] or uint8 RGB (H, W, 3) (uint8 gray and float RGB work too).
        prob: float (H, W) probabilities in [0, 1] (compared in float64, as the engine does).
        truth: bool (H, W) true mask (already inverted if the user inverts it), or None.
        min_area: minimum-area rule of the metrics table (pixels; 0 = off).
        max_side: longest side of the display arrays (decimated by an integer stride).

    Returns a JSON-serialisable dict:

    * ``height``, ``width`` (full image), ``stride``, ``display_height``, ``display_width``;
    * ``image_png`` (base64 PNG of the display image, gray or RGB), ``level_png`` (base64 PNG,
      uint8 (h, w)): the number of grid thresholds ``t_k = k/100`` strictly below the pixel's
      probability (``np.searchsorted(thresholds, prob, "left")``), so the pixel is foreground
      at grid index k iff ``level > k`` -- exact at every slider value; ``truth_png`` (0/255)
      or None;
    * ``thresholds`` (101 floats) and ``counts`` (101 ints, full-resolution pixels with
      ``prob > t_k``, before the minimum-area rule), ``min_area``;
    * ``metrics``: None, or {"iou", "dice", "precision", "recall", "tgs"} -> 101 floats each,
      at full resolution with the minimum-area rule (:class:`unet_core.metrics.SweepAccumulator`),
      ``best_index`` (highest IoU, ties nearest 0.5 then lower), ``truth_count``;
    * ``colors``: {"pred", "truth"} hex and names (see the module docstring), ``id`` (a digest).

    Raises ValueError on arrays of the wrong shape, dtype or range.
    """
    min_area = check_min_area(min_area)
    if isinstance(max_side, bool) or not isinstance(max_side, int | np.integer) or max_side < 1:
        raise ValueError(f"max_side must be a positive int, got {max_side!r}")
    p = np.asarray(prob)
    if p.ndim != 2 or p.size == 0:
        raise ValueError(f"prob must be a non-empty (H, W) array, got shape {p.shape}")
    if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)) \
            or p.dtype == np.bool_:
        raise ValueError(f"prob must be a float array in [0, 1], got dtype {p.dtype}")
    p64 = p.astype(np.float64, copy=False)
    if np.isnan(p64).any() or float(p64.min()) < 0.0 or float(p64.max()) > 1.0:
        raise ValueError("prob must hold probabilities in [0, 1] (no NaN)")
    height, width = p.shape
    img = _image_uint8(image)
    if img.shape[:2] != (height, width):
        raise ValueError(f"image {img.shape[:2]} and prob {p.shape} must have the same H, W")
    t = None
    if truth is not None:
        t = np.asarray(truth)
        if t.dtype != np.bool_:
            raise ValueError(f"truth must be a bool array, got dtype {t.dtype}")
        if t.shape != p.shape:
            raise ValueError(f"truth {t.shape} and prob {p.shape} must have the same shape")

    thresholds = np.asarray(DEFAULT_THRESHOLDS, dtype=np.float64)
    n_t = thresholds.size
    level = np.searchsorted(thresholds, p64, side="left").astype(np.uint8)  # 0 .. 101
    hist = np.bincount(level.ravel(), minlength=n_t + 1)
    counts = np.cumsum(hist[::-1])[::-1][1:]  # counts[k] = #(level > k) = #(prob > t_k)

    k = viz.display_stride((height, width), int(max_side))
    img_d = img[::k, ::k]
    level_d = level[::k, ::k]
    truth_d = t[::k, ::k] if t is not None else None

    metrics = best_index = truth_count = None
    if t is not None:
        acc = SweepAccumulator(thresholds)
        acc.add(p64, t, "image")
        res = acc.result(min_area)
        if not np.array_equal(res.thresholds, thresholds):  # pragma: no cover - engine contract
            raise RuntimeError("SweepAccumulator changed its threshold grid")
        metrics = {name: [float(v) for v in getattr(res, name)[0]] for name in METRIC_KEYS}
        iou = res.iou[0]
        tied = np.flatnonzero(iou >= iou.max() - 1e-12)
        best_index = int(tied[int(np.argmin(np.abs(thresholds[tied] - 0.5)))])
        truth_count = int(t.sum())

    colors = viz.overlay_colors(img_d, level_d > 50, truth_d)
    pred_c, truth_c = colors["pred"], colors["truth"]
    lum = viz.mean_luminance(img_d, viz.edge_band(level_d > 50, truth_d))
    image_png = _png_b64(img_d)
    level_png = _png_b64(level_d)
    truth_png = _png_b64(truth_d.astype(np.uint8) * np.uint8(255)) if truth_d is not None \
        else None
    digest = hashlib.sha1()
    for part in (image_png, level_png, truth_png or "", json.dumps(metrics),
                 counts.tobytes().hex(), str((height, width, k, min_area))):
        digest.update(part.encode("ascii"))
    return {
        "version": PAYLOAD_VERSION,
        "id": digest.hexdigest()[:16],
        "height": int(height),
        "width": int(width),
        "stride": int(k),
        "display_height": int(level_d.shape[0]),
        "display_width": int(level_d.shape[1]),
        "image_png": image_png,
        "image_channels": 3 if img_d.ndim == 3 else 1,
        "level_png": level_png,
        "truth_png": truth_png,
        "thresholds": [float(v) for v in thresholds],
        "counts": [int(c) for c in counts],
        "min_area": min_area,
        "metrics": metrics,
        "best_index": best_index,
        "truth_count": truth_count,
        "colors": {"pred": _hex(pred_c), "truth": _hex(truth_c),
                   "pred_name": viz.color_name(pred_c), "truth_name": viz.color_name(truth_c),
                   "edge_luminance": round(lum, 4)},
    }


# ------------------------------------------------------------------------------- component


#: The component's mounting command (registered on first use).
_mount = mount_command(COMPONENT_NAME, ASSETS, "threshold_view")


def _grid(value: float) -> float:
    """``value`` snapped to the slider's 0.01 grid (k / 100, the same float as the engine's)."""
    v = float(value)
    if math.isnan(v) or not 0.0 <= v <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {value!r}")
    return round(v * 100) / 100


def _released(result: Any) -> tuple[float | None, Any]:
    """(threshold, nonce) of the last release the browser reported, or (None, None)."""
    rel = result.get("release") if hasattr(result, "get") else None
    if not isinstance(rel, dict):
        return None, None
    try:
        return _grid(rel.get("t")), rel.get("n")
    except (TypeError, ValueError):
        return None, None


def _noop() -> None:
    return None


def threshold_view(payload: dict, *, threshold: float, min_area: int, card_threshold: float,
                   style: str = "fill", opacity: float = 0.45, show_truth: bool = True,
                   title: str = "", key: str, on_change: Callable[[], None] | None = None,
                   card_label: str = "card", show_tgs: bool = True,
                   file_stem: str = "image") -> float:
    """Draw the threshold view; return the threshold last *released* by the user.

    Args:
        payload: from :func:`threshold_payload` (its ``min_area`` must equal ``min_area``).
        threshold: the threshold to show. A *change* of this argument between runs (e.g. a
            "use best" button) moves the slider; otherwise the user's slider position wins.
        min_area: minimum-area rule (pixels; 0 = off), the one the payload was built with.
        card_threshold: the model card's threshold (a marker on the curve).
        style: "fill" or "contour" (case-insensitive). opacity: of the fill, 0..1.
        show_truth: outline the true mask on the overlay (when the payload has one).
        title: heading of the overlay panel (default "Prediction").
        key: Streamlit key of the component (required, stable across runs).
        on_change: called (as a widget callback) when the user releases a new threshold.
        card_label: the card marker's label on the curve.
        show_tgs: show the TGS score (the Kaggle TGS Salt metric; meaningful for seismic).
        file_stem: names the mask the view's own download button saves
            (``STEM_mask_t0.50.png``; offered when the image is shown at every pixel).

    Returns the last released threshold (grid value k/100), or ``threshold`` (snapped to the
    grid) until the user releases one, or after ``threshold`` itself changed.
    """
    import streamlit as st

    if not isinstance(payload, dict) or payload.get("version") != PAYLOAD_VERSION:
        raise ValueError("payload must come from threshold_payload()")
    if int(min_area) != payload["min_area"]:
        raise ValueError(f"the payload was built with min_area={payload['min_area']}, not "
                         f"{min_area}: rebuild it with threshold_payload(..., min_area="
                         f"{min_area})")
    style_l = str(style).lower()
    if style_l not in STYLES:
        raise ValueError(f"style must be 'fill' or 'contour', got {style!r}")
    arg = _grid(threshold)

    # What the browser shows is its own business between runs: data["view"]["threshold"] (the
    # caller's argument) is adopted by the browser on its first mount in a page and whenever
    # "gen" changes, i.e. when the caller changed `threshold`; a remount (page switch) shows
    # the user's last position, which the browser keeps per `key`. So `data` stays the same
    # string across releases and the browser never re-parses the payload for one. A release
    # is a state value {"t", "n"} (n: a nonce, so releasing the same value twice counts).
    meta_key = f"_threshold_view_meta_{key}"
    meta = st.session_state.get(meta_key)
    if not isinstance(meta, dict):
        meta = {"arg": arg, "rel_n": None, "value": arg, "gen": 0}
    elif arg != meta["arg"] and arg == meta["value"]:
        # The caller echoes the value the user released: nothing to move (moving the slider
        # to it would undo steps the user took since that release).
        meta = {**meta, "arg": arg}
    elif arg != meta["arg"]:
        meta = {**meta, "arg": arg, "value": arg, "gen": meta["gen"] + 1}
    data = {
        "payload": payload,
        "view": {"threshold": meta["arg"], "gen": meta["gen"], "key": str(key),
                 "min_area": int(min_area),
                 "card_threshold": _grid(card_threshold), "card_label": str(card_label),
                 "style": style_l, "opacity": float(min(max(float(opacity), 0.0), 1.0)),
                 "show_truth": bool(show_truth), "title": str(title),
                 "show_tgs": bool(show_tgs), "file_stem": str(file_stem)},
    }
    result = _mount()(key=key, data=data, on_release_change=on_change or _noop)
    rel_t, rel_n = _released(result)
    if rel_t is not None and rel_n is not None and rel_n != meta["rel_n"]:
        meta = {**meta, "rel_n": rel_n, "value": rel_t}
    st.session_state[meta_key] = meta
    return float(meta["value"])
