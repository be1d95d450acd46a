"""Evaluate page: score the model on a data set, sweep thresholds, find the worst images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app import common, viz
from unet_core.evaluate import Evaluation, evaluate_pairs
from unet_core.io import find_pairs, read_image, read_mask

SOURCES = ["Bundled samples", "Folder on the server", "Upload a .zip"]
THUMB_SIDE = 160

ss = st.session_state
bundle = common.require_model()
card = bundle.card
st.title("Evaluate")
st.caption(f"Model **{bundle.label}** · every image needs a mask · thresholds 0.00 … 1.00")


@st.cache_data(max_entries=128, show_spinner=False)
def _thumbnail(image_path: str, mask_path: str | None, mtime_ns: int) -> np.ndarray:
    """Small uint8 RGB of an image with its true mask outlined (display only)."""
    image = read_image(image_path, max_pixels=common.app_max_pixels())
    k = viz.display_stride(image.shape, THUMB_SIDE)
    small = image[::k, ::k]
    rgb = viz.gray_to_rgb(small)
    if mask_path:
        mask = read_mask(mask_path, max_pixels=common.app_max_pixels())[::k, ::k]
        if mask.shape == small.shape:
            rgb = viz.blend(rgb, viz.boundary(mask), viz.TRUTH_COLOR, 0.9)
    return viz.to_uint8(rgb)


def _run(folder: Path, label: str, extra: str, padding: str, tta: bool, invert: bool,
         holder: common.ExtractedZip | None) -> common.EvalState:
    """Evaluate the pairs of ``folder`` (cached per model, data, padding, TTA)."""
    pairs = find_pairs(folder, require_masks=True)
    fingerprint = common.pairs_fingerprint(pairs, extra, with_mtime=holder is None)
    store = common.evaluation_store()
    seg = common.get_segmenter(bundle, bool(tta))
    cache_key = (bundle.key, fingerprint, padding, bool(tta), seg.backend.name, bool(invert))
    evaluation = store.get(cache_key)
    if evaluation is None:
        bar = st.progress(0.0, text=f"Evaluating {len(pairs)} images…")

        def progress(done: int, total: int) -> None:
            bar.progress(done / max(total, 1), text=f"Evaluated {done} / {total} images")

        evaluation = evaluate_pairs(seg, pairs, padding_mode=padding, progress=progress,
                                    max_pixels=common.app_max_pixels(), invert_masks=invert)
        bar.empty()
        store.put(cache_key, evaluation)
    return common.EvalState(bundle.key, label, pairs, evaluation, fingerprint, holder)


# ---------------------------------------------------------------- data source
c_src, c_opts = st.columns([2, 1])
folder: Path | None = None
label = ""
extra = ""
zip_upload = None
with c_src:
    source = st.radio("Data source", SOURCES, horizontal=True, key="eval_source")
    if source == "Bundled samples":
        sets = common.ordered_sets(card.domain)
        if sets:
            chosen = st.selectbox("Sample set", sets, key="eval_sample_set")
            folder, label = common.ASSETS / chosen, f"bundled samples: {chosen}"
        else:
            st.warning(f"No bundled samples in {common.ASSETS}.")
    elif source == "Folder on the server":
        root = common.data_root()
        candidates = common.data_folder_candidates(root)
        text = st.text_input("Folder path", key="eval_folder",
                             placeholder=candidates[0] if candidates else str(root),
                             help="A folder holding images/ and masks/ (same file names). "
                             "Relative paths are inside the data root.")
        st.caption(f"Allowed data root: `{root}`"
                   + (f" · e.g. {', '.join(candidates[:6])}" if candidates else ""))
        if text.strip():
            with common.run_safely(what="folder path"):
                folder = common.resolve_data_folder(text, root)
                label = f"folder: {folder}"
    else:
        zip_upload = st.file_uploader(
            "Upload a .zip of images/ + masks/", type=["zip"], key="eval_zip",
            help=f"Up to {common.max_upload_mb()} MB. Layout: images/NAME + masks/NAME (masks "
            "matched by file name); one top folder is fine.")
        if zip_upload is not None:
            label = f"zip: {zip_upload.name}"
with c_opts:
    padding = common.padding_select("eval_padding", card.padding_mode)
    tta = common.tta_checkbox("eval_tta", card.tta)
    invert = common.invert_truth_checkbox("eval_invert", card.truth_inverted, card.foreground)
    ready = folder is not None or zip_upload is not None
    clicked = st.button("Run evaluation", type="primary", key="eval_run", disabled=not ready)

if clicked:
    with common.run_safely(what="evaluation"):
        holder = None
        if zip_upload is not None and source == "Upload a .zip":
            data = zip_upload.getvalue()
            old = ss.get("evaluation")
            if old is not None and old.holder is not None and old.holder.sha == common.sha256_bytes(
                    data):
                holder = old.holder
            else:
                with st.spinner(f"Extracting {zip_upload.name}…"):
                    holder = common.ExtractedZip(data, zip_upload.name)
            folder, extra = holder.path, f"zip:{holder.sha}"
        if folder is not None:
            state = _run(folder, label + (" (masks inverted)" if invert else ""), extra,
                         padding, tta, invert, holder)
            old = ss.get("evaluation")
            if old is not None and old.holder is not None and old.holder is not holder:
                old.holder.close()
            ss["evaluation"] = state

# ---------------------------------------------------------------- results
state: common.EvalState | None = ss.get("evaluation")
if state is None:
    st.info("Choose a data source and press **Run evaluation**.")
    st.stop()
if state.model_key != bundle.key:
    st.info(f"The last evaluation ({state.source}) was for another model: press "
            "**Run evaluation** to score this one.")
    st.stop()

st.subheader(f"Results · {state.source} · {len(state.evaluation.sweep.names)} images")
c_t, c_a = st.columns([3, 1])
threshold = common.threshold_slider("eval_threshold", card.threshold, container=c_t)
min_area = common.min_area_input("eval_min_area", card.min_area, container=c_a)
# Another minimum area is re-derived from the stored counts: no image is predicted again.
ev = Evaluation(state.evaluation.sweep.with_min_area(min_area), state.evaluation.threshold,
                state.evaluation.select_metric)
sweep = ev.sweep
summary = ev.summary()
best = float(summary["best_threshold"])
m1, m2, m3, m4 = st.columns(4)
m1.metric("Best threshold", f"{best:.2f}", help="Maximises the TGS metric (mean over images "
          "of the mean of [IoU > s], s = 0.50 … 0.95).")
m2.metric("TGS metric at best", f"{summary['best_tgs_metric']:.3f}")
m3.metric(f"TGS metric at card {summary['threshold']:.2f}", f"{summary['tgs_metric']:.3f}",
          help="At the threshold recommended by the model card.")
m4.metric(f"Mean IoU at {threshold:.2f}", f"{sweep.summary_at(threshold)['iou']:.3f}")

g1, g2 = st.columns([3, 2])
g1.plotly_chart(viz.curves_figure(
    sweep.thresholds, {"mean IoU": sweep.mean_iou, "mean Dice": sweep.mean_dice,
                       "TGS metric": sweep.tgs_metric},
    current=threshold, best=best, reference=card.threshold, title="Scores vs threshold"),
    width="stretch", key="eval_fig_curves")
rows = []
for name, t in (("card threshold", card.threshold), ("best threshold", best),
                ("current threshold", threshold)):
    s = sweep.summary_at(t)
    rows.append({"at": f"{name} {s['threshold']:.2f}", "mean IoU": s["iou"], "mean Dice": s["dice"],
                 "precision": s["precision"], "recall": s["recall"],
                 "TGS metric": s["tgs_metric"], "pooled IoU": s["pooled_iou"]})
g2.markdown("**Summary**")
g2.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%.3f")
                            for c in rows[0] if c != "at"})
g2.caption("Means over images; pooled IoU pools all pixels of all images. Empty mask and empty "
           "prediction count as a perfect 1."
           + (f" Every figure uses the minimum area {min_area} px: predicted masks with fewer "
              "foreground pixels are emptied." if min_area else ""))

# ---------------------------------------------------------------- per image
per_image = pd.DataFrame(sweep.per_image(threshold)).rename(
    columns={"iou": "IoU", "dice": "Dice", "tgs_score": "TGS score"})
per_image = per_image[["name", "coverage", "IoU", "Dice", "TGS score", "precision", "recall"]]
st.markdown(f"**Per image at threshold {threshold:.2f}** (click a column to sort; coverage = "
            "fraction of true foreground pixels)")
st.dataframe(per_image, hide_index=True, width="stretch", height=280,
             column_config={c: st.column_config.NumberColumn(format="%.3f")
                            for c in per_image.columns if c != "name"})
st.download_button("Download per-image CSV", per_image.to_csv(index=False).encode(),
                   file_name=f"per_image_t{threshold:.2f}_a{min_area}.csv", mime="text/csv",
                   key="eval_dl_csv")

# ---------------------------------------------------------------- worst cases
st.markdown("**Worst images at this threshold** (lowest IoU; true mask outlined in yellow)")
n_show = len(per_image)
if n_show > 1:
    n_show = int(st.slider("Worst cases shown", 1, min(24, n_show), min(8, n_show),
                           key="eval_n_worst"))
k = sweep.index_of(threshold)
order = np.lexsort((sweep.tgs[:, k], sweep.iou[:, k]))[:n_show]
by_name = {p.name: p for p in state.pairs}
cols = st.columns(4)
for slot, idx in enumerate(order):
    name = sweep.names[int(idx)]
    pair = by_name.get(name)
    with cols[slot % 4]:
        if pair is None:
            continue
        with common.run_safely(what="thumbnail"):
            st.image(_thumbnail(str(pair.image_path), str(pair.mask_path or ""),
                                pair.image_path.stat().st_mtime_ns),
                     caption=f"{name} · IoU {sweep.iou[idx, k]:.3f}")
        if st.button("Open in Segment", key=f"eval_open_{int(idx)}"):
            with common.run_safely(what="open in segment"):
                common.open_in_segment(common.item_from_pair(pair))
