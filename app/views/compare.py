"""Compare page: a second model (B) against the sidebar's (A), on one image and on a data set.

Each model runs as its own card says (input channels and scaling, fit, padding, TTA) at its own
threshold and minimum area, unless "One common threshold" is ticked; the models may have
different input specs but must have the same classes (:func:`unet_core.compare.check_comparable`).
The numbers come from :mod:`unet_core.compare`: per-image IoU, Dice and TGS score of each model,
the mean paired difference B - A with its bootstrap 95 % CI and the Wilcoxon p-value. A data-set
comparison is cached (both models and cards, data, thresholds, seed), so a page switch costs no
pass; what is on screen is always the comparison of the controls on screen.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import engine, sources, state, viz, volumes, widgets
from app.context import PageContext
from app.errors import display_text, plain, run_safely
from app.settings import (
    BACKEND_LABELS,
    MODEL_UPLOAD_LABEL,
    MODEL_UPLOAD_TYPES,
    app_max_pixels,
    max_upload_mb,
)
from unet_core.backends import BACKENDS, default_backend
from unet_core.compare import (
    METRIC_LABELS,
    METRICS,
    Comparison,
    ComparisonCancelled,
    check_comparable,
    compare_images,
    compare_pairs,
    reading,
)
from unet_core.errors import DataSetError, UnetCoreError
from unet_core.io import Pair, find_pairs
from unet_core.model import ModelCard
from unet_core.onnx_graph import is_onnx

IMAGE_MAX_SIDE = 1024  # the single-image view is decimated to this (metrics use all pixels)
SHOW_MIN_SIDE = 320  # a smaller image is enlarged (nearest neighbour) so the browser won't blur it
MODES = ["One image", "A data set"]
#: Disagreeing images shown per page of the gallery.
GALLERY_PER_PAGE = 8
_STOP_FLAG = "cmp_stop_requested"
_UPLOADED_B = "_cmp_uploaded_b"


@dataclass(frozen=True)
class Thresholds:
    """The thresholds and minimum areas in use: each card's, or (``common``) one threshold for
    both models (each keeping its card's minimum area)."""

    threshold_a: float
    threshold_b: float
    min_area_a: int
    min_area_b: int
    common: bool

    @property
    def common_threshold(self) -> float | None:
        """What :func:`~unet_core.compare.compare_pairs` gets as ``threshold``."""
        return self.threshold_a if self.common else None


@dataclass
class CompareState:
    """The data-set comparison shown (kept in session state): ``params`` are the controls it
    was made with (models and cards, backends, thresholds, class, mask inversion, seed)."""

    params: tuple[Any, ...]
    source: str
    pairs: list[Pair]
    comparison: Comparison
    holder: sources.ExtractedZip | None = None


# --------------------------------------------------------------------------- model B


def backend_of(bundle: engine.ModelBundle, keras_backend: str) -> str:
    """The backend a model runs on here: ONNX Runtime for an ONNX model, else the sidebar's
    choice for Keras models (kept in session key ``backend`` while an ONNX model is A)."""
    if is_onnx(bundle.loaded):
        return "onnxruntime"
    return keras_backend if keras_backend in BACKENDS else default_backend()


def model_b_ui(ctx: PageContext) -> engine.ModelBundle | None:
    """The "Second model (B)" picker: the sidebar's models (model A's own entry marked, for a
    sanity check against itself) or an upload (vetted in a child process like the sidebar's,
    never trusted). Returns model B with the card edits applied on the Model page, or None."""
    entries = engine.model_entries()
    labels = [e.label for e in entries]
    a_label = None if ctx.bundle.uploaded else ctx.bundle.label
    options = labels + [widgets.UPLOAD_OPTION]
    default = None
    if st.session_state.get("cmp_model_b") not in options:  # the default only when needed
        default = default_model_b(entries, a_label, ctx.bundle.card)
    choice = widgets.select_ui(
        "Second model (B)", options, "cmp_model_b", default,
        format_func=lambda lab: f"{display_text(lab, 120)} (= model A)" if lab == a_label
        else display_text(lab, 120),
        help="The model compared with the sidebar's (A). Each runs with its own card: input, "
        "padding, TTA, threshold and minimum area.")
    bundle: engine.ModelBundle | None = None
    if choice == widgets.UPLOAD_OPTION:
        bundle = _upload_b()
    else:
        entry = entries[labels.index(choice)]
        with run_safely(what="loading model B"), st.spinner(f"Loading {plain(entry.label)}…"):
            bundle = engine.open_model(entry.path, entry.path.name, entry.label,
                                       trusted=entry.trusted)
    if bundle is None:
        return None
    edits = widgets.card_edits().get(bundle.network_key)
    if edits is not None:
        with run_safely(what="applying model B's edited card"):
            return engine.with_card(bundle, edits)
        return None
    return bundle


def default_model_b(entries: list[engine.ModelEntry], a_label: str | None,
                    card_a: ModelCard) -> str:
    """The label of the model B offered first: another model than A, preferably one whose
    card has A's classes (one that :func:`check_comparable` accepts), then A's domain; when
    no other card has A's classes, model A itself (a sanity check that draws, rather than a
    refusal on arrival; a cardless model's classes are unknown until it loads); when A is an
    upload, a cardless model, else the upload option."""
    from unet_core.model import load_card

    def rank(entry: engine.ModelEntry) -> tuple[int, int]:
        try:
            card = load_card(entry.path)
        except (UnetCoreError, OSError, ValueError):
            return (2, 1)
        if card is None:
            return (1, 1)  # no card: its classes are not known before it loads
        try:
            check_comparable(card_a, card)
        except UnetCoreError:
            return (2, 1)
        return (0, int(card.domain.lower().strip() != card_a.domain.lower().strip()))

    others = [e for e in entries if e.label != a_label]
    best = min(others, key=rank) if others else None  # min is stable: the sidebar's order
    if best is not None and rank(best)[0] == 0:
        return best.label
    if a_label is not None:  # no other card with A's classes: A itself (never a refusal)
        return a_label
    if best is not None and rank(best)[0] == 1:  # A is an upload: a cardless model, or
        return best.label
    return widgets.UPLOAD_OPTION  # an upload


def _upload_b() -> engine.ModelBundle | None:
    """Model B from an upload (the sidebar's checks: saved to this session's folder, vetted
    in a child process, loaded with safe_mode=True); the last one stays in use after a page
    switch until another is uploaded."""
    ss = st.session_state
    c_model, c_card = st.columns([3, 2])
    ups = c_model.file_uploader(
        MODEL_UPLOAD_LABEL, type=MODEL_UPLOAD_TYPES, key="cmp_model_upload",
        accept_multiple_files=True,
        help="Model B: one .keras / .h5 model, an .onnx model, or model.to_json() + "
        "model.save_weights(); add its card .json here too if you have one. Checked in a "
        "separate process first; Keras uploads load with safe_mode=True (never trusted). Max "
        f"{max_upload_mb()} MB each.")
    card_up = c_card.file_uploader("Model card of B (.json, optional)", type=["json"],
                                   key="cmp_card_upload")
    files = [(f.name, f.getvalue()) for f in (ups or [])]
    if not files:
        kept = ss.get(_UPLOADED_B)
        if kept is not None and kept.path.is_file():
            return widgets.open_uploaded_model(kept, noun="model B")
        st.info("Upload model B: a Keras model (.keras or .h5, or architecture .json + "
                f"weights .h5) or an ONNX model (.onnx); up to {max_upload_mb()} MB each.")
        return None
    if card_up is not None:
        files.append((card_up.name, card_up.getvalue()))
    with run_safely(what="loading the uploaded model B"):
        up = widgets.save_model_files(files)
        bundle = widgets.open_uploaded_model(up, noun="model B")
        ss[_UPLOADED_B] = up
        return bundle
    return None


# --------------------------------------------------------------------------- thresholds


def thresholds_ui(card_a: ModelCard, card_b: ModelCard) -> Thresholds:
    """The "One common threshold" checkbox and its slider; returns what is used: each card's
    threshold and minimum area, or the slider's threshold for both."""
    common = bool(st.checkbox(
        "One common threshold", key="cmp_common", persist_state="session",
        help="Unticked: each model at its own card's threshold (the fair comparison of two "
        "models as shipped). Ticked: both at the threshold of the slider. Each keeps its "
        "card's minimum area."))
    if common:
        state.control("cmp_threshold", round(float(card_a.threshold), 2))
        t = float(st.slider("Common threshold", min_value=0.0, max_value=1.0, step=0.01,
                            key="cmp_threshold", persist_state="session",
                            help="Foreground is probability > threshold, for both models."))
        return Thresholds(t, t, int(card_a.min_area), int(card_b.min_area), True)
    return Thresholds(float(card_a.threshold), float(card_b.threshold), int(card_a.min_area),
                      int(card_b.min_area), False)


def _side(name: str, bundle: engine.ModelBundle, threshold: float, min_area: int) -> str:
    card = bundle.card
    what = (plain(card.class_name(card.default_class)) if card.n_classes < 2
            else f"{card.n_classes} classes")
    return (f"{name} **{plain(bundle.label)}**: {what} at {threshold:.2f}, min area "
            f"{min_area} px · input {plain(card.input_spec)}, {card.channels} channel"
            f"{'s' if card.channels != 1 else ''}, {plain(card.padding_mode)} padding"
            f"{', TTA' if card.tta else ''}")


def settings_caption(a: engine.ModelBundle, b: engine.ModelBundle, th: Thresholds,
                     backend_a: str, backend_b: str) -> str:
    """One caption naming what each model runs with (the numbers below use exactly these)."""
    how = "one common threshold" if th.common else "each model at its own card's threshold"
    text = (f"{_side('A', a, th.threshold_a, th.min_area_a)}  \n"
            f"{_side('B', b, th.threshold_b, th.min_area_b)}  \n{how.capitalize()}")
    if a.card.input_spec != b.card.input_spec or a.card.channels != b.card.channels:
        text += " · different inputs: each model is fed as its own card says"
    if backend_a != backend_b:
        text += (f" · backends: A {BACKEND_LABELS.get(backend_a, backend_a)}, B "
                 f"{BACKEND_LABELS.get(backend_b, backend_b)}")
    return text


# --------------------------------------------------------------------------- page


def render(ctx: PageContext) -> None:
    """Draw the Compare page: model A is ``ctx.bundle`` (the sidebar's)."""
    a = ctx.bundle
    widgets.page_header("Compare", a, "against a second model B, on one image or a data set")
    c_b, c_t = st.columns(2)
    with c_b:
        b = model_b_ui(ctx)
    if b is None:
        return
    with run_safely(what="checking the two models"):
        check_comparable(a.card, b.card)
        with c_t:
            class_index = widgets.class_ui(a.card)
            th = thresholds_ui(a.card, b.card)
        backend_a = ctx.backend
        backend_b = backend_of(b, str(st.session_state.get("backend", "")))
        st.caption(settings_caption(a, b, th, backend_a, backend_b))
        mode = st.radio("Compare on", MODES, key="cmp_mode", horizontal=True,
                        persist_state="session")
        if mode == MODES[0]:
            _one_image(ctx, a, b, th, class_index, backend_a, backend_b)
        else:
            _data_set(ctx, a, b, th, class_index, backend_a, backend_b)


# --------------------------------------------------------------------------- one image


def _truth(item: sources.ImageItem, shape: tuple[int, ...], card: ModelCard, class_index: int,
           invert: bool) -> np.ndarray | None:
    """The item's mask as scored: bool (H, W) of the class compared (a label mask's pixels of
    that class; a binary mask, inverted when ``invert``), or None."""
    if item.mask_data is None:
        return None
    if card.n_classes >= 2 and sources.item_mask_holds_labels(item, card.n_classes):
        labels = sources.decode_labels(item, shape, card.n_classes)
        return None if labels is None else labels == class_index
    mask = sources.decode_mask(item, shape)
    return None if mask is None else (~mask if invert else mask)


def _one_image(ctx: PageContext, a: engine.ModelBundle, b: engine.ModelBundle, th: Thresholds,
               class_index: int, backend_a: str, backend_b: str) -> None:
    """Both masks of one image side by side, their disagreement map and scores."""
    item = widgets.image_picker_ui(a.card, upload_key="cmp_upload", with_masks=True,
                                   fresh_visit=ctx.fresh_visit)
    if item is None:
        return
    state.use_image(item)
    if not widgets.domain_gate_ui(item, a):
        return
    image = sources.decode_image(item)
    truth = _truth(item, image.shape, a.card, class_index, ctx.settings.invert_masks)
    # A volume slice scaled by its cube's clip: each model's "unit" twin (as Segment does).
    a_run, b_run = volumes.bundle_for(item, a), volumes.bundle_for(item, b)
    with st.spinner("Running both networks…"):
        probs_a = engine.class_probabilities(a_run, item, image, a.card.padding_mode,
                                             a.card.tta, backend_a)
        probs_b = engine.class_probabilities(b_run, item, image, b.card.padding_mode,
                                             b.card.tta, backend_b)
    got = compare_images(engine.class_map(probs_a, class_index),
                         engine.class_map(probs_b, class_index), truth,
                         threshold_a=th.threshold_a, threshold_b=th.threshold_b,
                         min_area_a=th.min_area_a, min_area_b=th.min_area_b)
    shown, k = sources.display(image, IMAGE_MAX_SIDE)
    t_small = None if truth is None else truth[::k, ::k]
    mask_a, mask_b = got["mask_a"][::k, ::k], got["mask_b"][::k, ::k]
    colors = viz.overlay_colors(shown, mask_a | mask_b, t_small)  # one legend for both
    c1, c2, c3 = st.columns(3)
    for col, name, bundle, mask, t in ((c1, "A", a, mask_a, th.threshold_a),
                                       (c2, "B", b, mask_b, th.threshold_b)):
        col.image(viz.overlay_rgb(shown, mask, color=colors["pred"], truth=t_small,
                                  truth_color=colors["truth"], min_side=SHOW_MIN_SIDE),
                  width="stretch",
                  caption=viz.fit_title(f"{name} · {display_text(bundle.label)} at {t:.2f}", 60))
    c3.image(viz.upscale_nearest(engine.disagreement_rgb(shown, got["map"][::k, ::k]),
                                 SHOW_MIN_SIDE),
             width="stretch", caption="Where they disagree: only A, only B, both")
    legend = viz.overlay_legend(colors, truth=truth is not None)
    st.caption(f"A and B: {legend} · Disagreement: {engine.disagreement_legend()}"
               + (f" · shown at every {viz.ordinal(k)} pixel; the numbers use every pixel"
                  if k > 1 else ""))
    m1, m2 = st.columns(2)
    m1.metric("Pixels where they disagree", f"{got['disagree_fraction']:.2%}",
              help="Share of the image's pixels in exactly one of the two masks.")
    m2.metric("IoU of A with B", f"{got['iou_ab']:.3f}",
              help="Agreement of the two masks (1.000 when both are empty).")
    st.table(image_scores(got, a, b))
    if truth is None:
        st.info("Add a mask (Upload, with masks of the same file name; or a bundled sample) to "
                "score each model against the truth.")


def image_scores(got: dict[str, Any], a: engine.ModelBundle, b: engine.ModelBundle
                 ) -> pd.DataFrame:
    """The one-image table: a row per model (and B − A with a truth) with its foreground
    pixels and, with a truth, its IoU, Dice and TGS score against it (strings as shown)."""
    rows: dict[str, dict[str, str]] = {}
    for side, bundle in (("a", a), ("b", b)):
        row = {"foreground px": f"{got[f'area_{side}']:,}"}
        scores = got[f"metrics_{side}"]
        if scores is not None:
            row.update({METRIC_LABELS[m]: f"{scores[m]:.3f}" for m in METRICS})
        rows[f"{side.upper()} · {display_text(bundle.label, 60)}"] = row
    if got["metrics_a"] is not None:
        row = {"foreground px": f"{got['area_b'] - got['area_a']:+,}"}
        row.update({METRIC_LABELS[m]: _delta_text(got["metrics_b"][m] - got["metrics_a"][m],
                                                  3) for m in METRICS})
        rows["B − A"] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def _delta_text(value: float, digits: int = 4) -> str:
    """'+0.0123' / '-0.0045' / '0.0000' (no sign for an exact tie)."""
    return f"{0.0:.{digits}f}" if value == 0 else f"{value:+.{digits}f}"


# --------------------------------------------------------------------------- data set


def _params(a: engine.ModelBundle, b: engine.ModelBundle, th: Thresholds, class_index: int,
            backend_a: str, backend_b: str, invert: bool, seed: int) -> tuple[Any, ...]:
    return (a.key, b.key, backend_a, backend_b, th, int(class_index), bool(invert), int(seed))


def _request_stop() -> None:
    st.session_state[_STOP_FLAG] = True


def _data_set(ctx: PageContext, a: engine.ModelBundle, b: engine.ModelBundle, th: Thresholds,
              class_index: int, backend_a: str, backend_b: str) -> None:
    ss = st.session_state
    c_src, c_opts = st.columns([3, 2])
    with c_src:
        folder, label, zip_upload = widgets.data_source_ui(a.card)
    with c_opts:
        state.control("cmp_seed", 0)
        seed = int(st.number_input(
            "Bootstrap seed", min_value=0, max_value=2**31 - 1, step=1, key="cmp_seed",
            persist_state="session",
            help="Seeds the bootstrap of the confidence intervals: the same seed gives the "
            "same interval."))
        ready = folder is not None or zip_upload is not None
        clicked = st.button("Compare on this data set", type="primary", key="cmp_run",
                            disabled=not ready)
    invert = ctx.settings.invert_masks
    params = _params(a, b, th, class_index, backend_a, backend_b, invert, seed)
    if ss.get("cmp_stop"):  # pressed during the last run, which stopped there
        st.info("Comparison stopped: nothing was kept. Press **Compare on this data set** to "
                "start again.")
    if clicked:
        _run(a, b, th, class_index, backend_a, backend_b, invert, seed, params, folder, label,
             zip_upload)
    result: CompareState | None = ss.get("comparison")
    if result is None:
        st.info("Choose a data set (every image needs a mask) and press **Compare on this "
                "data set**.")
        return
    if result.params != params:
        st.info(f"The last comparison ({plain(result.source)}) was made with other models, "
                "thresholds, class, mask inversion or seed: press **Compare on this data "
                "set** to compare with the settings above.")
        return
    _results(ctx, a, b, result)


def _run(a: engine.ModelBundle, b: engine.ModelBundle, th: Thresholds, class_index: int,
         backend_a: str, backend_b: str, invert: bool, seed: int, params: tuple[Any, ...],
         folder: Path | None, label: str, zip_upload: Any) -> None:
    """Compare on the data set (cached per params and data); on failure or Stop nothing is
    kept (the error is one line)."""
    ss = st.session_state
    old: CompareState | None = ss.pop("comparison", None)
    holder: sources.ExtractedZip | None = None
    new: CompareState | None = None
    try:
        with run_safely(what="comparing the models"):
            extra = ""
            if zip_upload is not None:
                data = zip_upload.getvalue()
                if old is not None and old.holder is not None \
                        and old.holder.sha == sources.sha256_bytes(data):
                    holder = old.holder
                else:
                    with st.spinner(f"Extracting {plain(zip_upload.name)}…"):
                        holder = sources.ExtractedZip(data, zip_upload.name)
                folder, extra = holder.path, f"zip:{holder.sha}"
            if folder is None:
                return
            try:
                new = _compare(a, b, th, class_index, backend_a, backend_b, invert, seed,
                               params, folder, label, extra, holder)
            except UnetCoreError as exc:  # name the uploaded zip, not the server's folder
                if holder is None or isinstance(exc, ComparisonCancelled):
                    raise
                text = str(exc).replace(str(holder.path), holder.name)
                raise DataSetError(text if holder.name in text else f"{holder.name}: {text}"
                                   ) from None
    finally:
        ss.pop(_STOP_FLAG, None)
        if new is not None:
            ss["comparison"] = new
        for h in {id(x): x for x in (holder, old.holder if old else None) if x}.values():
            if new is None or h is not new.holder:
                h.close()


def _compare(a: engine.ModelBundle, b: engine.ModelBundle, th: Thresholds, class_index: int,
             backend_a: str, backend_b: str, invert: bool, seed: int, params: tuple[Any, ...],
             folder: Path, label: str, extra: str, holder: sources.ExtractedZip | None
             ) -> CompareState:
    pairs = holder.pairs() if holder is not None else find_pairs(folder, require_masks=True)
    fingerprint = sources.pairs_fingerprint(pairs, extra, with_mtime=holder is None)
    store = engine.comparison_store()
    key = (*params, fingerprint)
    comparison = store.get(key)
    if comparison is None:
        seg_a = engine.get_segmenter(a, a.card.tta, backend_a)
        seg_b = engine.get_segmenter(b, b.card.tta, backend_b)
        running = st.empty()
        with running.container():
            bar = st.progress(0.0, text=f"Comparing on {len(pairs)} images…")
            st.button("Stop", key="cmp_stop", on_click=_request_stop,
                      help="Stop after the batch in progress; nothing is kept.")
        st.session_state.pop(_STOP_FLAG, None)

        def progress(done: int, total: int) -> None:
            bar.progress(done / max(total, 1), text=f"Both models on {done} / {total} images")

        try:
            comparison = compare_pairs(
                seg_a, seg_b, pairs, threshold=th.common_threshold, min_area=None,
                class_index=class_index, seed=seed, progress=progress,
                cancel=lambda: bool(st.session_state.get(_STOP_FLAG)), invert_masks=invert,
                max_pixels=app_max_pixels())
        finally:  # done, failed or stopped: no progress bar or Stop button left
            running.empty()
        store.put(key, comparison)
    return CompareState(params, label, pairs, comparison, holder)


METRIC_HELP = ("Per image, each model's mask against the truth (an empty truth with an empty "
               "prediction scores 1); then the mean over images. B − A is the mean of the "
               "per-image differences; its 95 % CI is a paired bootstrap (BCa, the seed above); "
               "p: Wilcoxon signed-rank test of the differences (two-sided).")


def _results(ctx: PageContext, a: engine.ModelBundle, b: engine.ModelBundle,
             result: CompareState) -> None:
    cmp = result.comparison
    n = cmp.n
    of = (f" · class {plain(widgets.class_label(a.card, cmp.class_index))}"
          if a.card.n_classes >= 2 else "")
    st.subheader(f"Results · {plain(result.source)} · {n} images{of}")
    iou = cmp.metrics["iou"]
    sentence = reading(cmp, "iou")
    st.markdown(f"**{plain(sentence[:1].upper() + sentence[1:])}**"
                + ("." if iou.excludes_zero or cmp.shared_predictions or n == 1
                   or iou.p_value < 0.05  # the reading already says what the ranks show
                   else f": on these {n} images the difference could be chance."))
    rows = []
    for m in METRICS:
        s = cmp.metrics[m]
        rows.append({"metric": METRIC_LABELS[m], "mean A": f"{s.a:.4f}", "mean B": f"{s.b:.4f}",
                     "mean B − A": _delta_text(s.delta),
                     "95 % CI": f"[{_delta_text(s.ci95[0])}, {_delta_text(s.ci95[1])}]",
                     "Wilcoxon p": f"{s.p_value:.3g}"})
    st.table(pd.DataFrame(rows).set_index("metric"))
    notes = [METRIC_HELP] + [plain(x) for x in cmp.notes] + sorted(
        {plain(x) for m in METRICS for x in cmp.metrics[m].notes})
    if cmp.soft_masks:
        notes.append(f"{len(cmp.soft_masks)} masks were not cleanly two-level and were "
                     "thresholded at half their range.")
    if cmp.invert_masks:
        notes.append("Masks inverted (they mark the other class).")
    st.caption(" ".join(notes))
    w1, w2, w3 = st.columns(3)
    w1.metric("B better (IoU)", f"{cmp.wins}", help="Images where B's IoU is higher than A's.")
    w2.metric("Ties", f"{cmp.ties}", help="Images where both IoUs are equal.")
    w3.metric("A better (IoU)", f"{cmp.losses}", help="Images where A's IoU is higher.")
    f1, f2 = st.columns(2)
    f1.plotly_chart(difference_histogram(cmp), width="stretch", key="cmp_fig_hist")
    f2.plotly_chart(iou_scatter(cmp), width="stretch", key="cmp_fig_scatter")
    st.caption("Right of the dashed line at 0, above the diagonal: images where B scores the "
               "higher IoU (hover a point for its image).")
    _most_disagreeing(ctx, a, b, result)


def difference_histogram(cmp: Comparison) -> go.Figure:
    """Histogram of the per-image IoU difference B − A, with a line at 0."""
    d = cmp.delta("iou")
    fig = go.Figure(go.Histogram(x=d, nbinsx=min(40, max(5, d.size)),
                                 marker={"color": viz.rgb_hex(viz.BLUE)},
                                 hovertemplate="B − A %{x}: %{y} images<extra></extra>"))
    fig.add_vline(x=0.0, line={"color": "#888888", "dash": "dash", "width": 1})
    fig.update_layout(title={"text": "IoU B − IoU A, per image",
                             "font": {"size": 14}},
                      height=340, bargap=0.05, margin={"l": 56, "r": 10, "t": 40, "b": 44},
                      xaxis={"title": {"text": "IoU B − IoU A"}},
                      yaxis={"title": {"text": "images"}})
    return fig


def iou_scatter(cmp: Comparison) -> go.Figure:
    """Per-image IoU of A (x) against B (y), with the diagonal (above it: B better)."""
    names = [html.escape(display_text(n, 60)) for n in cmp.names]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", hoverinfo="skip",
                             line={"color": "#888888", "dash": "dash", "width": 1},
                             showlegend=False))
    fig.add_trace(go.Scatter(x=cmp.per_image["iou_a"], y=cmp.per_image["iou_b"],
                             mode="markers", text=names, showlegend=False,
                             marker={"color": viz.rgb_hex(viz.ORANGE), "size": 8,
                                     "line": {"color": "#333333", "width": 0.5}},
                             hovertemplate="%{text}<br>IoU A %{x:.3f} · B %{y:.3f}"
                             "<extra></extra>"))
    fig.update_layout(title={"text": "IoU per image, A vs B",
                             "font": {"size": 14}},
                      height=340, margin={"l": 56, "r": 10, "t": 40, "b": 44},
                      xaxis={"title": {"text": "IoU A"}, "range": [-0.03, 1.03],
                             "constrain": "domain"},
                      yaxis={"title": {"text": "IoU B"}, "range": [-0.03, 1.03],
                             "scaleanchor": "x", "scaleratio": 1, "constrain": "domain"})
    return fig


def _most_disagreeing(ctx: PageContext, a: engine.ModelBundle, b: engine.ModelBundle,
                      result: CompareState) -> None:
    """The images where the two IoUs differ most (largest |B − A| first), paged, each with its
    disagreement thumbnail and an "Open in Segment" button."""
    cmp = result.comparison
    st.markdown(f"**Where they disagree most** (largest |IoU B − IoU A| first) · "
                f"{engine.disagreement_legend()}")
    order = cmp.disagreement_order()
    start, stop = widgets.pager_ui(len(order), "cmp_page", "images", per_page=GALLERY_PER_PAGE)
    by_name = {p.name: p for p in result.pairs}
    backend_a, backend_b = result.params[2], result.params[3]
    gallery = st.container(horizontal=True, gap="medium")
    for idx in order[start:stop]:
        i = int(idx)
        pair = by_name.get(cmp.names[i])
        if pair is None:
            continue
        ia, ib = cmp.per_image["iou_a"][i], cmp.per_image["iou_b"][i]
        tile = gallery.container(width=180)
        with tile, run_safely(what="drawing a thumbnail"):
            st.image(engine.disagreement_thumbnail(
                pair.image_path, a, b, backend_a=backend_a, backend_b=backend_b,
                threshold_a=cmp.threshold_a, threshold_b=cmp.threshold_b,
                min_area_a=cmp.min_area_a, min_area_b=cmp.min_area_b,
                class_index=cmp.class_index), width=160,
                caption=f"{viz.fit_title(display_text(cmp.names[i]), 22)} · IoU A {ia:.3f} · "
                f"B {ib:.3f}")
        if tile.button("Open in Segment", key=f"cmp_open_{i}"):
            widgets.open_in_segment(ctx, pair)

