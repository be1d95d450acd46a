"""Segment page: one image in, probability map and mask out; scored when a mask is given.

The threshold lives in the browser: the probability map is sent once (as exact threshold
levels) with the per-threshold metrics table, and a custom component redraws the mask, the
overlay, the error map and the numbers on every move without re-running Python. Python hears
the threshold when the user releases it (for the downloads).

Images go to the network as decoded (native dtype, channels kept: the card's preprocessing
does the rest) and are shown in colour when they have colour. A K-class model (softmax) shows
the probability of the class picked (one ``class_index`` control for every page) in the
threshold view, and its argmax label map with a legend of the classes; a label mask (pixel
values = class indices, or a palette PNG) is scored per class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import engine, sources, state, viz, volumes, widgets
from app.components.threshold_view import threshold_view
from app.context import PageContext
from app.errors import display_text, plain, run_safely
from unet_core.inference import labels_from_probs
from unet_core.metrics import ClassAccumulator, threshold_mask
from unet_core.model import ModelCard

IMAGE_MAX_SIDE = 1024  # display images are decimated to this (masks and metrics use all pixels)
VIEW_KEY = "segment_threshold_view"


def render(ctx: PageContext) -> None:
    """Draw the Segment page for the model in ``ctx``."""
    ss = st.session_state
    bundle = ctx.bundle
    card = bundle.card
    what = (f"{card.n_classes} classes" if card.n_classes >= 2 else plain(card.foreground))
    widgets.page_header("Segment", bundle, f"segments {what} in {plain(card.domain)} images · "
                        "input "
                        f"{card.input_spec}, {card.channels} channel"
                        f"{'s' if card.channels != 1 else ''}")

    item = widgets.image_picker_ui(card, upload_key="seg_upload", with_masks=True,
                                   fresh_visit=ctx.fresh_visit)
    padding, tta = ctx.settings.padding, ctx.settings.tta
    invert, min_area = ctx.settings.invert_masks, ctx.settings.min_area
    if item is None:
        return
    class_index = widgets.class_ui(card)

    state.use_image(item)
    if not widgets.domain_gate_ui(item, bundle):
        return
    whole = bundle  # a volume is segmented whole with the model as it is (the engine scales)
    ctx = volumes.slice_context(item, ctx)  # a clipped slice: the card's "unit" twin
    if ctx is None:
        return
    bundle = ctx.bundle

    image = probs = None
    with run_safely(what="reading the image"):
        image = sources.decode_image(item)
    if image is None:
        return
    mask, labels_truth, mask_note = _truth(item, image.shape, card, class_index, invert)
    with run_safely(what="running the network"), st.spinner("Running the network…"):
        probs = engine.class_probabilities(bundle, item, image, padding, tta, ctx.backend)
    if probs is None:
        return
    prob = engine.class_map(probs, class_index)
    name = card.class_name(class_index)

    # ------------------------------------------------------------ network output (fixed)
    h, w = image.shape[:2]
    shown, k = sources.display(image, IMAGE_MAX_SIDE)
    f1, f2, f3 = st.columns([1, 1, 2])
    f1.image(viz.to_uint8(shown), width="stretch",
             caption=viz.fit_title(f"Input · {display_text(item.name)} ({h}x{w}"
                                   + (f", {image.shape[2]} channels" if image.ndim == 3 else "")
                                   + ")", 60))
    f2.image(viz.colormap_rgb(prob[::k, ::k], 0.0, 1.0, "viridis"), width="stretch",
             caption=f"Probability of {display_text(name)} (dark 0 … yellow 1, viridis)")
    seg = engine.get_segmenter(bundle, tta, ctx.backend)
    notes = [widgets.backend_caption(seg), f"Input: {plain(card.preprocessing, 1000)}"]
    if k > 1:
        notes.append(f"Display only: this {h}x{w} image is shown at every {viz.ordinal(k)} "
                     "pixel; masks, downloads and metrics use every pixel.")
    if mask_note:
        notes.append(mask_note)
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
    with run_safely(what="drawing the threshold view"):
        payload = engine.threshold_payload(
            bundle, item, image, prob, mask, padding=padding, tta=tta, backend=ctx.backend,
            min_area=min_area, invert_masks=invert and labels_truth is None,
            class_index=class_index)
    if payload is None:
        return
    # The browser owns the threshold while it moves; the released value is the control's.
    stem = sources.safe_filename(item.stem, "image")
    title = display_text(item.name if card.n_classes < 2 else f"{name} · {item.name}")
    threshold = threshold_view(payload, threshold=float(ss.get("threshold", card.threshold)),
                               min_area=min_area, card_threshold=float(card.threshold),
                               style=style.lower(), opacity=float(opacity),
                               show_truth=bool(show_truth) and mask is not None,
                               title=viz.fit_title(title, 40), key=VIEW_KEY,
                               show_tgs=card.domain.lower() == "seismic",
                               file_stem=stem)
    ss["threshold"] = threshold
    if mask is None:
        st.info("Add a mask (Upload masks, same file name) to score this image: IoU, Dice, "
                "precision, recall, the error map and its IoU-vs-threshold curve"
                + (" (a label mask, pixel value = class index or a palette PNG, is scored "
                   "for every class)." if card.n_classes >= 2 else "."))

    labels = None
    if card.n_classes >= 2:
        labels = labels_from_probs(probs, card.threshold)
        _label_map(card, labels, labels_truth, k, item.name)

    # ------------------------------------------------------------ downloads
    # The view saves the mask it shows when it holds every pixel; a larger image's full mask
    # comes from here, at the threshold last released (the file name says which).
    # Deferred (callables): the files are made when a button is pressed, not on every rerun,
    # and the callables hold keys (the item, the settings), not arrays: a session keeps no
    # copy of the probabilities (they come from the shared cache when a button is pressed).
    row = st.container(horizontal=True)
    outputs = _Outputs(bundle, item, padding, tta, ctx.backend)
    if payload["stride"] > 1:
        row.download_button(f"Download full mask at {threshold:.2f} (PNG)",
                            outputs.mask_png(class_index, threshold, min_area),
                            file_name=f"{stem}_mask_t{threshold:.2f}.png",
                            mime="image/png", key="seg_dl_mask", on_click="ignore",
                            help="At the threshold you released last, with the minimum-area "
                            "rule, at full resolution.")
    suffix = "" if card.n_classes < 2 else f"_class{class_index}"
    row.download_button("Download probabilities (.npy)" if card.n_classes < 2 else
                        f"Download {plain(name, 60)} probabilities (.npy)",
                        outputs.npy(class_index),
                        file_name=f"{stem}_prob{suffix}.npy",
                        mime="application/octet-stream", key="seg_dl_prob", on_click="ignore")
    if labels is not None:
        row.download_button(f"Download all {card.n_classes} classes (.npy, HxWx"
                            f"{card.n_classes})", outputs.npy(None),
                            file_name=f"{stem}_probs.npy", mime="application/octet-stream",
                            key="seg_dl_probs", on_click="ignore")
        row.download_button("Download label map (PNG)", outputs.label_png(card.threshold),
                            file_name=f"{stem}_labels.png", mime="image/png",
                            key="seg_dl_labels", on_click="ignore",
                            help="A palette PNG: pixel value = class index, coloured as "
                            "the legend.")
    if item.origin == "volume":
        volumes.whole_volume_ui(whole, padding=padding, tta=tta, backend=ctx.backend,
                                threshold=float(threshold), min_area=int(min_area),
                                class_index=int(class_index))


class _Outputs:
    """Download builders that hold only keys: each call re-reads the (cached) decoded image and
    class probabilities, so a session's download buttons keep no arrays alive."""

    def __init__(self, bundle: Any, item: sources.ImageItem, padding: str, tta: bool,
                 backend: str) -> None:
        self.bundle, self.item = bundle, item
        self.padding, self.tta, self.backend = padding, bool(tta), backend

    def _probs(self) -> np.ndarray:
        image = sources.decode_image(self.item)
        return engine.class_probabilities(self.bundle, self.item, image, self.padding,
                                          self.tta, self.backend)

    def npy(self, class_index: int | None) -> Any:
        def build() -> bytes:
            probs = self._probs()
            return viz.npy_bytes(probs if class_index is None
                                 else engine.class_map(probs, class_index))
        return build

    def mask_png(self, class_index: int, threshold: float, min_area: int) -> Any:
        def build() -> bytes:
            prob = engine.class_map(self._probs(), class_index)
            return viz.mask_png_bytes(threshold_mask(prob, threshold, min_area))
        return build

    def label_png(self, threshold: float) -> Any:
        def build() -> bytes:
            return viz.label_png_bytes(labels_from_probs(self._probs(), threshold))
        return build


def _truth(item: sources.ImageItem, shape: tuple[int, ...], card: ModelCard,
           class_index: int, invert: bool
           ) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(bool truth of the class shown or None, label mask or None, a note on how the mask
    was read). A K-class model reads a label mask (class indices or a palette PNG) as such,
    its truth for the class shown being ``labels == class``; any other mask is binary, the
    pixels of the class shown (inverted when ``invert``)."""
    if item.mask_data is None:
        return None, None, ""
    name = card.class_name(class_index)
    if sources.item_mask_holds_labels(item, card.n_classes):
        labels = None
        with run_safely(what="reading the label mask"):
            labels = sources.decode_labels(item, shape, card.n_classes)
        if labels is None:
            return None, None, ""
        return labels == class_index, labels, (f"{plain(item.mask_name)}: a label mask (class "
                                               f"indices); scored for {plain(name)} and per "
                                               "class")
    mask = None
    with run_safely(what="reading the mask"):
        mask = sources.decode_mask(item, shape)
        if mask is not None and invert:
            mask = ~mask
    note = (f"{plain(item.mask_name)}: a binary mask, scored as {plain(name)}"
            if card.n_classes >= 2 else "")
    return mask, None, note if mask is not None else ""


def class_table(card: ModelCard, labels: np.ndarray, truth: np.ndarray | None,
                name: str = "image") -> pd.DataFrame:
    """One row per class: index, name, colour name, share of pixels predicted (argmax) and,
    with a label mask, the share in the truth and the class's IoU and Dice on this image."""
    n = card.n_classes
    total = max(1, labels.size)
    pred_share = np.bincount(labels.ravel().astype(np.intp), minlength=n)[:n] / total
    rows: list[dict[str, Any]] = [
        {"class": i, "name": plain(card.class_name(i), 100), "colour": viz.label_color_name(i),
         "predicted": float(pred_share[i])} for i in range(n)]
    if truth is not None:
        acc = ClassAccumulator(n, [card.class_name(i) for i in range(n)])
        acc.add(labels, truth, name)
        for row, got in zip(rows, acc.result().per_class(), strict=True):
            row.update({"true": got["truth_pixels"] / total, "IoU": got["iou"],
                        "Dice": got["dice"]})
    return pd.DataFrame(rows)


def _label_map(card: ModelCard, labels: np.ndarray, truth: np.ndarray | None, k: int,
               image_name: str) -> None:
    """The argmax label map of a K-class model with its legend (and per-class scores)."""
    st.subheader("Classes (argmax)")
    every = f" (every {viz.ordinal(k)} pixel shown)" if k > 1 else ""
    c1, c2, _ = st.columns(3)
    c1.image(viz.label_rgb(labels[::k, ::k], card.n_classes), width="stretch",
             caption=f"Predicted: the most probable of {card.n_classes} classes per pixel{every}")
    if truth is not None:
        c2.image(viz.label_rgb(truth[::k, ::k], card.n_classes), width="stretch",
                 caption="True: the label mask")
    table = class_table(card, labels, truth, image_name)
    st.table(widgets.legend_style(table, card.n_classes))
    if truth is not None:
        st.caption(f"Against the label mask: mean IoU {table['IoU'].mean():.3f}, mean Dice "
                   f"{table['Dice'].mean():.3f} over all {card.n_classes} classes (background "
                   "included; a class absent from both scores 1). Pixel accuracy "
                   f"{(labels == truth).mean():.3f}.")
    else:
        st.caption("Colours as in the label PNGs the command line writes. The threshold above "
                   "applies to the class picked only; the label map is the argmax over all "
                   "classes.")
