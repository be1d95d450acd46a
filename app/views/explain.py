"""Explain page: which parts of the image made the network call a region foreground.

Seg-Grad-CAM (Vinogradova, Dibrov & Myers, AAAI 2020) of a region of the output: a pixel, a
box, the predicted mask, one connected component of it or the whole image; the score is the
sum over the region of the pre-sigmoid logit of the class picked (its negative for the
background). Computation lives in :mod:`unet_core.explain` (:class:`GradCam`); this page
draws the controls and the result.

The region's number inputs are the single source of truth: the picker (a click picks a pixel,
a drag a box, in image pixels) writes into them before they are drawn. One gradient pass gives
every layer's map for a (model, image, padding, region, class, background, method); it is
cached (:func:`app.engine.explanations`), so switching layers costs no pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from app import engine, sources, state, viz, volumes, widgets
from app.components.region_picker import parse_pick, pick_to_controls, region_picker
from app.context import PageContext
from app.errors import display_text, plain, run_safely
from unet_core.explain import CAM_COLORMAP, ONNX_REFUSAL, Region, cam_overlay_rgb
from unet_core.metrics import threshold_mask
from unet_core.onnx_graph import is_onnx

MAX_SIDE = 800  # longest side of the pictures sent to the browser (display only)

REGION_LABELS = {"all": "Whole image", "mask": "Predicted mask", "component": "One component",
                 "pixel": "Pixel", "box": "Box"}
METHOD_LABELS = {"seg-grad-cam": "Seg-Grad-CAM", "saliency": "Gradient saliency"}

PICKER_KEY = "exp_picker"
#: Session keys of the region controls (each also its widget's key).
KEYS = {"region": "exp_region", "x": "exp_x", "y": "exp_y", "x0": "exp_x0", "y0": "exp_y0",
        "x1": "exp_x1", "y1": "exp_y1", "seed": "exp_seed"}
LAST_PICK_KEY = "_exp_pick_n"  # nonce of the last pick written into the controls
IMAGE_KEY = "_exp_image"  # the image the coordinates were set for

ONNX_INFO = (f"{ONNX_REFUSAL}, and Seg-Grad-CAM and gradient saliency are gradients of the "
             "network's output. Pick or upload the Keras version of this model to explain its "
             "predictions.")
NO_EVIDENCE = "all zeros: no positive evidence in this layer for this region"


def render(ctx: PageContext) -> None:
    """Draw the Explain page for the model in ``ctx``."""
    bundle = ctx.bundle
    card = bundle.card
    widgets.page_header("Explain", bundle, "Seg-Grad-CAM: which parts of the image made the "
                        "network predict a region")
    if is_onnx(bundle.loaded):
        st.info(ONNX_INFO)
        return

    item = widgets.image_picker_ui(card, upload_key="exp_upload", with_masks=False,
                                   fresh_visit=ctx.fresh_visit)
    if item is None:
        return
    state.use_image(item)
    if not widgets.domain_gate_ui(item, bundle):
        return
    ctx = volumes.slice_context(item, ctx)  # a clipped slice: the card's "unit" twin
    if ctx is None:
        return
    bundle = ctx.bundle
    card = bundle.card
    image = None
    with run_safely(what="reading the image"):
        image = sources.decode_image(item)
    if image is None:
        return
    h, w = image.shape[:2]
    _reset_for_image(item.sha, h, w)
    settings = ctx.settings

    gc = None
    with run_safely(what="building the gradient model"), \
            st.spinner("Building the gradient model…"):
        gc = engine.get_grad_cam(bundle.key, settings.padding, bundle.loaded)
    if gc is None:
        return

    # ------------------------------------------------------------------ controls
    c1, c2 = st.columns(2)
    with c1:
        spec = _region_ui(h, w)
    with c2:
        method = str(st.radio("Method", list(METHOD_LABELS), key="exp_method",
                              format_func=METHOD_LABELS.get, horizontal=True,
                              persist_state="session",
                              help="Seg-Grad-CAM: where the chosen layer's features raise the "
                              "region's score (coarse, class-discriminative). Gradient "
                              "saliency: |d score / d input|, pixel by pixel."))
        threshold = widgets.threshold_ui(card)
        class_index = widgets.class_ui(card)
        background = bool(st.toggle(
            "Explain the background", key="exp_background", persist_state="session",
            help="Explain the negated score: what makes the network call the region NOT "
            f"{plain(card.class_name(class_index) if card.n_classes >= 2 else card.foreground)}"
            "."))
    labels = layer_labels(gc)
    layer = widgets.select_ui("Layer", list(gc.layers), "exp_layer", gc.default_layer,
                              format_func=labels.get,
                              help="Every convolution layer, with its resolution against the "
                              "input (1/16: one value per 16x16 pixels). Gradient saliency is "
                              "taken at the input and uses no layer.")
    if method == "saliency":
        st.caption("Gradient saliency is taken at the input: the layer is not used.")

    # ------------------------------------------------------------------ prediction
    probs = None
    with run_safely(what="running the network"), st.spinner("Running the network…"):
        probs = engine.class_probabilities(bundle, item, image, settings.padding,
                                           settings.tta, ctx.backend)
    if probs is None:
        return
    prob = engine.class_map(probs, class_index)
    pred = threshold_mask(prob, threshold, settings.min_area)

    # ------------------------------------------------------------------ explanation
    result = region = None
    with run_safely(what="computing the explanation"), \
            st.spinner("One gradient pass for every layer…"):
        region = Region(**spec)  # one line for an empty box (X1 <= X0 or Y1 <= Y0)
        result = engine.explanations(
            bundle, item, image, settings.padding, gc, region, class_index=class_index,
            background=background, method=method, prob=prob, threshold=threshold,
            min_area=settings.min_area, tta=settings.tta, backend=ctx.backend)
    shown_layer = "input" if method == "saliency" else layer
    exp = result.get(shown_layer) if result is not None else None

    # ------------------------------------------------------------------ output
    region_mask = exp.mask if exp is not None else None
    o1, o2 = st.columns(2)
    with o1:
        picture, k = _prediction_picture(
            image, pred, region_mask if spec["kind"] in ("mask", "component") else None)
        what = display_text(card.class_name(class_index) if card.n_classes >= 2
                            else card.foreground, 60)
        region_picker(
            picture, height=h, width=w, region=_outline(spec), key=PICKER_KEY,
            title=f"Prediction at {threshold:.2f} · {display_text(item.name, 60)} ({h}x{w})",
            caption=f"Sky blue: the predicted {what} mask (probability > {threshold:.2f}, "
            f"minimum area {settings.min_area} px); vermillion: the region explained"
            + (f"; shown at every {viz.ordinal(k)} pixel" if k > 1 else "") + ".",
            on_pick=_on_pick(h, w))
    if exp is None:
        return
    with o2:
        _map_view(exp, image, item, card, method)
    st.caption(explanation_caption(exp, card, method))
    passes = engine.explain_pass_count(bundle, item, settings.padding)
    st.caption(f"Gradient passes for this image: {passes} · "
               f"{len(result) if result else 0} map(s) from the last one; switching layers "
               "costs none.")


# --------------------------------------------------------------------------- controls


def _reset_for_image(sha: str, h: int, w: int) -> None:
    """Put the coordinates in the middle of a newly picked image (pixel: its centre, box: its
    central half); the values typed for an image stay while it is the one in use."""
    ss = st.session_state
    if ss.get(IMAGE_KEY) == (sha, h, w):
        return
    ss[IMAGE_KEY] = (sha, h, w)
    ss[KEYS["x"]], ss[KEYS["y"]] = w // 2, h // 2
    ss[KEYS["x0"]], ss[KEYS["y0"]] = w // 4, h // 4
    ss[KEYS["x1"]], ss[KEYS["y1"]] = max(w // 4 + 1, 3 * w // 4), max(h // 4 + 1, 3 * h // 4)
    ss[KEYS["seed"]] = False


def _on_pick(h: int, w: int) -> Any:
    """The picker's callback: write its new pick into the region controls (runs before the
    script, so before the number inputs are drawn)."""
    def apply() -> None:
        ss = st.session_state
        raw = ss.get(PICKER_KEY)
        pick = parse_pick(raw.get("pick") if hasattr(raw, "get") else None, h, w)
        if pick is not None:
            pick_to_controls(pick, ss, keys=KEYS, last_key=LAST_PICK_KEY,
                             component_kind="component")
    return apply


def _number(label: str, key: str, min_value: int, help: str) -> int:
    return int(st.number_input(label, min_value=min_value, max_value=10**6, step=1, key=key,
                               help=help, persist_state="session"))


def _region_ui(h: int, w: int) -> dict[str, Any]:
    """The 'Region' radio and its coordinates; returns what they describe as the keywords
    of a :class:`~unet_core.explain.Region` (built where its one-line errors are shown)."""
    ss = st.session_state
    if ss.get(KEYS["region"]) not in REGION_LABELS:
        ss[KEYS["region"]] = "all"
    kind = str(st.radio("Region", list(REGION_LABELS), key=KEYS["region"],
                        format_func=REGION_LABELS.get, horizontal=True, persist_state="session",
                        help="What the score sums over: the whole image, the predicted mask "
                        "at the threshold, one connected component of it, a pixel or a box. "
                        "Click the image below for a pixel, drag for a box."))
    coords = f"image pixels: x = column 0…{w - 1}, y = row 0…{h - 1}"
    if kind == "pixel":
        a, b = st.columns(2)
        with a:
            x = _number("X", KEYS["x"], 0, f"Column of the pixel ({coords}).")
        with b:
            y = _number("Y", KEYS["y"], 0, f"Row of the pixel ({coords}).")
        return {"kind": "pixel", "x": x, "y": y}
    if kind == "box":
        a, b, c, d = st.columns(4)
        with a:
            x0 = _number("X0", KEYS["x0"], 0, f"First column ({coords}).")
        with b:
            y0 = _number("Y0", KEYS["y0"], 0, f"First row ({coords}).")
        with c:
            x1 = _number("X1", KEYS["x1"], 1, "Column just AFTER the box (exclusive).")
        with d:
            y1 = _number("Y1", KEYS["y1"], 1, "Row just AFTER the box (exclusive).")
        st.caption(f"Box columns X0 … X1−1 and rows Y0 … Y1−1: X1 and Y1 are exclusive "
                   f"(the whole image is 0, 0, {w}, {h}).")
        return {"kind": "box", "box": (x0, y0, x1, y1)}
    if kind == "component":
        seeded = st.checkbox("Component at pixel X, Y", key=KEYS["seed"], persist_state="session",
                             help="Off: the largest component of the predicted mask. On: the "
                             "component containing the pixel (a click on the image sets it).")
        if seeded:
            a, b = st.columns(2)
            with a:
                x = _number("X", KEYS["x"], 0, f"Column of the seed pixel ({coords}).")
            with b:
                y = _number("Y", KEYS["y"], 0, f"Row of the seed pixel ({coords}).")
            return {"kind": "component", "x": x, "y": y}
        st.caption("The largest connected component of the predicted mask (click the image "
                   "to pick another).")
        return {"kind": "component"}
    if kind == "mask":
        st.caption("Every pixel of the predicted mask at the threshold and minimum area in use "
                   "(the mask the Segment page shows).")
    return {"kind": kind}


def layer_labels(gc: Any) -> dict[str, str]:
    """'conv2d_7 · 1/16' for each selectable layer (its stride against the input), with
    '· bottleneck (default)' on the default layer."""
    labels = {}
    for name in gc.layers:
        res = gc.layer_resolution(name)
        text = name
        if res is not None:
            sy, sx = res
            text += f" · 1/{sy}" if sy == sx else f" · 1/{sy}×1/{sx}"
        if name == gc.default_layer:
            text += " · bottleneck (default)"
        labels[name] = text
    return labels


def _outline(spec: dict[str, Any]) -> dict[str, Any]:
    """What the picker outlines as vectors (mask regions are drawn into the picture)."""
    kind = spec["kind"]
    if kind == "box":
        return {"kind": "box", "box": [int(v) for v in spec["box"]]}
    if kind in ("pixel", "component") and spec.get("x") is not None:
        return {"kind": kind, "x": int(spec["x"]), "y": int(spec["y"])}
    return {}


# --------------------------------------------------------------------------- output


def _prediction_picture(image: np.ndarray, pred: np.ndarray, region: np.ndarray | None
                        ) -> tuple[np.ndarray, int]:
    """uint8 RGB of the image with the predicted mask (sky blue, filled) and the region's
    edge (vermillion), every k-th pixel so it fits :data:`MAX_SIDE`; returns (picture, k)."""
    shown, k = sources.display(image, MAX_SIDE)
    small = pred[::k, ::k]
    rgb = viz.overlay_rgb(shown, small, "Fill", 0.35, viz.SKY_BLUE)
    if region is not None and not region.all():  # pixels and boxes: vectors in the browser
        rgb[viz.boundary(region[::k, ::k], 1)] = VERMILLION
    return rgb, k


VERMILLION = (213, 94, 0)


def _map_view(exp: Any, image: np.ndarray, item: sources.ImageItem, card: Any,
              method: str) -> None:
    """The map over the image with its colour legend and the downloads."""
    overlay = cam_overlay_rgb(image, exp.cam)
    k = viz.display_stride(overlay.shape, MAX_SIDE)
    shown = np.array(overlay[::k, ::k], copy=True)
    shown[region_edge(exp.mask[::k, ::k])] = (255, 255, 255)
    what = "Gradient saliency" if method == "saliency" else \
        f"Seg-Grad-CAM of {display_text(exp.layer, 80)}"
    st.image(shown, width="stretch", caption=f"{what} over the image"
             + ("" if exp.mask.all() else " (white: the region's edge)"))
    st.image(viz.colorbar_png(0.0, 1.0, CAM_COLORMAP, "0 = no influence … 1 = strongest",
                              width=320), width=320)
    stem = sources.safe_filename(item.stem, "image")
    layer = sources.safe_filename(exp.layer, "layer")
    row = st.container(horizontal=True)
    row.download_button("Download map (.npy, float32)", _npy(exp.cam),
                        file_name=f"{stem}_{layer}_cam.npy", mime="application/octet-stream",
                        key="exp_dl_npy", on_click="ignore",
                        help=f"The map, float32 {exp.cam.shape[0]}x{exp.cam.shape[1]} "
                        "(the image's size), values in [0, 1].")
    row.download_button("Download overlay (.png)", _png(image, exp.cam),
                        file_name=f"{stem}_{layer}_cam.png", mime="image/png",
                        key="exp_dl_png", on_click="ignore")


def region_edge(mask: np.ndarray) -> np.ndarray:
    """bool (H, W): where to outline a region on a picture: its inner edge, or for a region
    of a few pixels a diamond ring 4 pixels around it (visible when the picture is
    enlarged); nothing for the whole image."""
    m = np.asarray(mask, dtype=bool)
    if m.all() or not m.any():
        return np.zeros_like(m)
    if m.sum() <= 4:
        return viz.boundary(m, 4, side="outer") & ~viz.boundary(m, 3, side="outer")
    return viz.boundary(m, 1)


def _npy(cam: np.ndarray) -> Any:
    def build() -> bytes:
        return viz.npy_bytes(np.asarray(cam, dtype=np.float32))
    return build


def _png(image: np.ndarray, cam: np.ndarray) -> Any:
    def build() -> bytes:
        return viz.png_bytes(cam_overlay_rgb(image, cam))
    return build


def explanation_caption(exp: Any, card: Any, method: str) -> str:
    """One line: method, layer, region (and its size), class, score, and whether the map is
    all zeros."""
    what = card.class_name(exp.class_index) if card.n_classes >= 2 else card.foreground
    cls = f"class {exp.class_index} · {plain(what, 60)}" if card.n_classes >= 2 \
        else plain(what, 60)
    if exp.background:
        cls += " (background: score negated)"
    text = (f"{METHOD_LABELS[method]} · layer {plain(exp.layer, 100)} · region "
            f"{plain(exp.region.describe(), 100)} ({int(np.count_nonzero(exp.mask))} px) · "
            f"{cls} · score {exp.score:.6g} (sum of logits over the region)")
    if not np.any(exp.cam):
        text += f" · {NO_EVIDENCE}"
    else:
        text += f" · peak {exp.peak:.4g} (shown as 1)"
    for note in getattr(exp, "notes", []) or []:
        text += f" · {plain(note, 200)}"
    return text
