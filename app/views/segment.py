"""Segment page: one image in, probability map and mask out; scored when a mask is given.

The threshold lives in the browser: the probability map is sent once (as exact threshold
levels) with the per-threshold metrics table, and a custom component redraws the mask, the
overlay, the error map and the numbers on every move without re-running Python. Python hears
the threshold when the user releases it (for the downloads).
"""

from __future__ import annotations

import streamlit as st

from app import engine, sources, state, viz, widgets
from app.components.threshold_view import threshold_view
from app.context import PageContext
from app.errors import run_safely
from unet_core.metrics import threshold_mask

IMAGE_MAX_SIDE = 1024  # display images are decimated to this (masks and metrics use all pixels)
VIEW_KEY = "segment_threshold_view"


def render(ctx: PageContext) -> None:
    """Draw the Segment page for the model in ``ctx``."""
    ss = st.session_state
    bundle = ctx.bundle
    card = bundle.card
    widgets.page_header("Segment", bundle, f"segments {card.foreground} in {card.domain} "
                        f"images · input {card.input_spec}")

    item = widgets.image_picker_ui(card, upload_key="seg_upload", with_masks=True,
                                   fresh_visit=ctx.fresh_visit)
    padding, tta = ctx.settings.padding, ctx.settings.tta
    invert, min_area = ctx.settings.invert_masks, ctx.settings.min_area
    if item is None:
        return

    state.use_image(item)
    if not widgets.domain_gate_ui(item, bundle):
        return

    image = mask = prob = None
    with run_safely(what="read image"):
        image = sources.decode_image(item)
    if image is None:
        return
    with run_safely(what="read mask"):
        mask = sources.decode_mask(item, image.shape)
        if mask is not None and invert:
            mask = ~mask
    with run_safely(what="predict"), st.spinner("Running the network…"):
        prob = engine.probability_map(bundle, item, image, padding, tta, ctx.backend)
    if prob is None:
        return

    # ------------------------------------------------------------ network output (fixed)
    h, w = image.shape
    image_d, k = viz.decimate(image, IMAGE_MAX_SIDE)
    f1, f2, f3 = st.columns([1, 1, 2])
    f1.image(viz.to_uint8(image_d), width="stretch",
             caption=viz.fit_title(f"Input · {item.name} ({h}x{w})", 60))
    f2.image(viz.colormap_rgb(prob[::k, ::k], 0.0, 1.0, "viridis"), width="stretch",
             caption="Probability of " + card.foreground + " (dark 0 … yellow 1, viridis)")
    seg = engine.get_segmenter(bundle, tta, ctx.backend)
    notes = [widgets.backend_caption(seg)]
    if k > 1:
        notes.append(f"Display only: this {h}x{w} image is shown at every {viz.ordinal(k)} "
                     "pixel; masks, downloads and metrics use every pixel.")
    with f3:  # how the overlay below is drawn, then what produced the map
        style = st.radio("Overlay style", ["Fill", "Contour"], horizontal=True,
                         key="overlay_style", persist_state="session")
        state.control("overlay_opacity", 0.45)
        opacity = st.slider("Overlay opacity", 0.0, 1.0, step=0.05, key="overlay_opacity",
                            disabled=style == "Contour", persist_state="session")
        state.control("show_truth", True)
        show_truth = st.toggle("Truth outline", key="show_truth", disabled=mask is None,
                               persist_state="session")
        st.caption(" · ".join(notes))

    # ------------------------------------------------------------ threshold (in the browser)
    payload = None
    with run_safely(what="threshold view"):
        payload = engine.threshold_payload(bundle, item, image, prob, mask, padding=padding,
                                           tta=tta, backend=ctx.backend, min_area=min_area,
                                           invert_masks=invert)
    if payload is None:
        return
    # The browser owns the threshold while it moves; the released value is the control's.
    threshold = threshold_view(payload, threshold=float(ss.get("threshold", card.threshold)),
                               min_area=min_area, card_threshold=float(card.threshold),
                               style=style.lower(), opacity=float(opacity),
                               show_truth=bool(show_truth) and mask is not None,
                               title=viz.fit_title(item.name, 40), key=VIEW_KEY,
                               show_tgs=card.domain.lower() == "seismic",
                               file_stem=item.stem)
    ss["threshold"] = threshold
    if mask is None:
        st.info("Add a mask (Upload masks, same file name) to score this image: IoU, Dice, "
                "precision, recall, the error map and its IoU-vs-threshold curve.")

    # ------------------------------------------------------------ downloads
    # The view saves the mask it shows when it holds every pixel; a larger image's full mask
    # comes from here, at the threshold last released (the file name says which).
    # Deferred (callables): the files are made when a button is pressed, not on every rerun.
    row = st.container(horizontal=True)
    if payload["stride"] > 1:
        row.download_button(f"Download full mask at {threshold:.2f} (PNG)",
                            lambda: viz.mask_png_bytes(threshold_mask(prob, threshold, min_area)),
                            file_name=f"{item.stem}_mask_t{threshold:.2f}.png",
                            mime="image/png", key="seg_dl_mask", on_click="ignore",
                            help="At the threshold you released last, with the minimum-area "
                            "rule, at full resolution.")
    row.download_button("Download probabilities (.npy)", lambda: viz.npy_bytes(prob),
                        file_name=f"{item.stem}_prob.npy", mime="application/octet-stream",
                        key="seg_dl_prob", on_click="ignore")
