"""Segment page: one image in, probability map and mask out; scored when a mask is given."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import common, viz
from unet_core.metrics import segmentation_metrics, threshold_mask

IMAGE_MAX_SIDE = 1024  # RGB figures are sent as PNG; larger images are decimated for display
HEATMAP_MAX_SIDE = 400  # heatmaps are sent as numbers: keep them small

ss = st.session_state
bundle = common.require_model()
card = bundle.card
st.title("Segment")
st.caption(f"Model **{bundle.label}** · {card.foreground} · input {card.input_spec}")

# ---------------------------------------------------------------- controls
recent = common.recent_items()
if ss.pop("_segment_open_recent", False) and recent:
    ss["seg_source"] = "Recent images"
    ss["seg_recent"] = ss.get("image_key")
sources = common.image_sources("Upload images", "seg_source", recent)

c_src, c_run = st.columns([2, 1])
item: common.ImageItem | None = None
with c_src:
    source = st.radio("Source", sources, key="seg_source", horizontal=True)
    if source == "Bundled sample":
        item = common.sample_select(card.domain, key="seg_sample")
    elif source == "Upload images":
        ups = st.file_uploader(
            "Upload images", type=common.IMAGE_TYPES, accept_multiple_files=True,
            key="seg_upload_images",
            help=f"PNG, JPEG, TIFF or BMP, up to {common.max_upload_mb()} MB each.")
        mask_ups = st.file_uploader(
            "Upload masks (same file names)", type=common.IMAGE_TYPES,
            accept_multiple_files=True, key="seg_upload_masks",
            help="Optional. A mask matches the image with the same file name (or the same "
            "name with another extension). White / 1 = foreground.")
        items, notes = common.items_from_uploads(
            [(f.name, f.getvalue()) for f in ups or []],
            [(f.name, f.getvalue()) for f in mask_ups or []])
        for note in notes:
            st.warning(note)
        good: list[common.ImageItem] = []
        for candidate in items:  # decode every upload now (cached) so bad ones are named
            with common.run_safely(what="read upload"):
                common.decode_image(candidate)
                good.append(candidate)
        if len(good) > 1:
            by_key = {it.key: it for it in good}
            pick = st.selectbox("Image", list(by_key), key="seg_upload_pick",
                                format_func=lambda k: by_key[k].name
                                + (" (+ mask)" if by_key[k].mask_data else ""))
            item = by_key[pick]
        elif good:
            item = good[0]
        elif not items:
            st.info("Upload one or more images; add masks to score them.")
    else:
        item = common.recent_select("seg_recent", recent)
with c_run:
    padding = common.padding_select("seg_padding", card.padding_mode)
    tta = common.tta_checkbox("seg_tta", card.tta)
    invert = common.invert_truth_checkbox("seg_invert", card.truth_inverted, card.foreground)

if item is None:
    st.stop()
common.remember_item(item)

# ---------------------------------------------------------------- read + predict
image = None
with common.run_safely(what="read image"):
    image = common.decode_image(item)
if image is None:
    st.stop()
mask = None
with common.run_safely(what="read mask"):
    mask = common.decode_mask(item, image.shape)
    if mask is not None and invert:
        mask = ~mask
prob = None
with common.run_safely(what="predict"), st.spinner("Running the network…"):
    prob = common.probability_map(bundle, item, image, padding, tta)
if prob is None:
    st.stop()

# ---------------------------------------------------------------- network output (fixed)
h, w = image.shape
image_d, k_img = viz.decimate(image, IMAGE_MAX_SIDE)
prob_d, k_prob = viz.decimate(prob, HEATMAP_MAX_SIDE)
mask_d = mask[::k_img, ::k_img] if mask is not None else None
f1, f2 = st.columns(2)
f1.plotly_chart(viz.image_figure(viz.to_uint8(image_d), f"Input · {item.name} ({h}x{w})"),
                width="stretch", key="seg_fig_input")
f2.plotly_chart(viz.heatmap_figure(prob_d, "Probability", zmin=0.0, zmax=1.0,
                                   colorbar_title="P"), width="stretch", key="seg_fig_prob")
notes = [common.backend_caption(common.get_segmenter(bundle, tta))]
if k_img > 1 or k_prob > 1:
    notes.append(f"Display only: large images are shown every {max(k_img, k_prob)}th pixel; "
                 "masks, downloads and metrics use every pixel.")
st.caption(" · ".join(notes))
if mask is None and item.mask_data is None:
    st.info("Add a mask (Upload masks, same file name) to score this image: IoU, Dice, "
            "precision, recall, TGS score, error map and its IoU-vs-threshold curve.")


@st.fragment
def threshold_view() -> None:
    """Everything that depends on the threshold and the overlay style.

    A fragment: moving the slider re-runs only this part of the page (the network output
    above is neither recomputed nor re-sent), and the masks are sent as small PNGs.
    """
    c_t, c_a, c_o, c_s = st.columns([2, 1, 1, 1])
    with c_t:
        threshold = common.threshold_slider("seg_threshold", card.threshold)
    with c_a:
        min_area = common.min_area_input("seg_min_area", card.min_area)
    with c_o:
        opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="seg_opacity")
    with c_s:
        style = st.radio("Overlay style", ["Fill", "Contour"], horizontal=True, key="seg_style")
    pred = threshold_mask(prob, threshold, min_area)
    emptied = min_area > 0 and not pred.any() and float(prob.max()) > threshold
    sweep = None
    if mask is not None:
        with common.run_safely(what="image sweep"):
            sweep = common.image_sweep(bundle, item, prob, mask, padding, tta, invert, min_area)
    pred_d = pred[::k_img, ::k_img]
    if mask is not None:
        m = segmentation_metrics(pred, mask)
        cols = st.columns(5)
        for col, (label, key) in zip(cols, [("IoU", "iou"), ("Dice", "dice"),
                                            ("Precision", "precision"), ("Recall", "recall"),
                                            ("TGS score", "tgs_score")], strict=True):
            col.metric(label, f"{m[key]:.3f}")
        st.caption(f"At threshold {threshold:.2f}: true foreground {m['coverage_true']:.1%}, "
                   f"predicted {m['coverage_pred']:.1%} of the pixels.")
    g1, g2, g3 = st.columns(3)
    g1.image(viz.overlay_rgb(image_d, pred_d, style, opacity), width="stretch",
             caption=f"Mask at {threshold:.2f} · {pred.mean():.1%} foreground"
             + (f" · emptied: fewer than {min_area} px above the threshold" if emptied else ""))
    if mask_d is not None:
        g2.image(viz.error_map_rgb(image_d, pred_d, mask_d), width="stretch",
                 caption="Errors at this threshold: green = found (TP) · orange = false "
                 "alarm (FP) · purple = missed (FN)")
    if sweep is not None:
        t = sweep["thresholds"]
        iou = sweep["iou"]
        tied = np.flatnonzero(iou >= iou.max() - 1e-12)
        best = float(t[tied[int(np.argmin(np.abs(t[tied] - 0.5)))]])
        g3.plotly_chart(viz.curves_figure(t, {"IoU": iou, "Dice": sweep["dice"]},
                                          current=threshold, best=best,
                                          reference=card.threshold,
                                          title=f"{item.name}: IoU vs threshold"),
                        width="stretch", key="seg_fig_curve")
    st.download_button("Download mask (PNG)", viz.mask_png_bytes(pred),
                       file_name=f"{item.stem}_mask_t{threshold:.2f}.png", mime="image/png",
                       key="seg_dl_mask", on_click="ignore")


threshold_view()
st.download_button("Download probabilities (.npy)", viz.npy_bytes(prob),
                   file_name=f"{item.stem}_prob.npy", mime="application/octet-stream",
                   key="seg_dl_prob", on_click="ignore")
