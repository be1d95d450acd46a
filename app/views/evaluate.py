"""Evaluate page: score the model on a data set, sweep thresholds, find the worst images."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import engine, sources, viz, widgets
from app.context import InferenceSettings, PageContext
from app.errors import display_text, plain, run_safely
from app.settings import app_max_pixels
from unet_core.errors import DataSetError, UnetCoreError
from unet_core.evaluate import Evaluation, evaluate_classes, evaluate_pairs
from unet_core.io import Pair, find_pairs
from unet_core.metrics import ClassResult
from unet_core.model import ModelCard

SOURCES = widgets.DATA_SOURCES
#: How the masks of a K-class model's data set are read (radio ``eval_masks``).
MASK_KINDS = {"auto": "Auto (from the first mask)",
              "binary": "Binary: white = the class picked",
              "labels": "Labels: pixel value (or palette index) = class"}
METRIC_NAMES = {"tgs_metric": "TGS metric", "mean_iou": "mean IoU", "mean_dice": "mean Dice"}
TGS_HELP = ("TGS metric (Kaggle TGS Salt): per image, the mean over IoU cut-offs 0.50, 0.55, …, "
            "0.95 of [IoU > cut-off] (an empty truth scores 1 only for an empty prediction); "
            "then the mean over images.")


@dataclass
class EvalState:
    """An evaluation shown on the Evaluate page (kept in session state).

    ``evaluation`` is a threshold sweep of class ``class_index`` against binary masks, or
    (``kind == "labels"``) the per-class scores of the label maps against label masks."""

    model_key: str
    source: str
    pairs: list[Pair]
    evaluation: Evaluation | ClassResult
    settings: InferenceSettings  # min_area 0: every rule is re-derived from the counts
    holder: sources.ExtractedZip | None = None
    kind: str = "binary"
    class_index: int = 0


def select_metric_for(card: ModelCard) -> str:
    """The metric that picks the best threshold: the card's ``select_metric``, else what
    picked its threshold in training, else the TGS metric for seismic and mean IoU for the
    rest (:attr:`unet_core.model.ModelCard.selection_metric`)."""
    return card.selection_metric


def mask_kind(pairs: list[Pair], card: ModelCard, choice: str) -> str:
    """'binary' or 'labels': how this data set's masks are read (``choice`` 'auto' looks at
    the first mask, see :func:`app.sources.mask_holds_labels`). One-map models: binary."""
    if card.n_classes < 2:
        return "binary"
    if choice in ("binary", "labels"):
        return choice
    first = next((p.mask_path for p in pairs if p.mask_path is not None), None)
    if first is None:
        return "binary"
    return "labels" if sources.mask_holds_labels(first.read_bytes(), card.n_classes) \
        else "binary"


_CANCEL_FLAG = "eval_cancel_requested"


class EvaluationCancelled(UnetCoreError):
    """The user pressed Cancel during an evaluation."""


def _request_cancel() -> None:
    st.session_state[_CANCEL_FLAG] = True


def _evaluate(ctx: PageContext, folder: Path, label: str, extra: str, settings: InferenceSettings,
              holder: sources.ExtractedZip | None, class_index: int, masks: str) -> EvalState:
    """Evaluate the pairs of ``folder`` (cached per model and card, data, settings, class and
    mask kind)."""
    bundle = ctx.bundle
    pairs = holder.pairs() if holder is not None else find_pairs(folder, require_masks=True)
    kind = mask_kind(pairs, bundle.card, masks)
    fingerprint = sources.pairs_fingerprint(pairs, extra, with_mtime=holder is None)
    store = engine.evaluation_store()
    seg = engine.get_segmenter(bundle, settings.tta, ctx.backend)
    cache_key = (bundle.key, fingerprint, settings.padding, settings.tta,
                 seg.backend.name, settings.invert_masks, kind,
                 class_index if kind == "binary" else None)
    evaluation = store.get(cache_key)
    if evaluation is None:
        running = st.empty()
        with running.container():
            bar = st.progress(0.0, text=f"Evaluating {len(pairs)} images…")
            # Pressing Cancel makes Streamlit stop this run at its next page update, i.e.
            # after the batch in progress (and rerun, where the page says so); the flag
            # covers a run that is not interrupted (checked between batches too).
            st.button("Cancel", key="eval_cancel", on_click=_request_cancel,
                      help="Stop after the batch in progress; nothing is kept.")
        st.session_state.pop(_CANCEL_FLAG, None)

        def progress(done: int, total: int) -> None:
            if st.session_state.get(_CANCEL_FLAG):
                raise EvaluationCancelled(f"evaluation cancelled after {done} of {total} images")
            bar.progress(done / max(total, 1), text=f"Evaluated {done} / {total} images")

        try:
            if kind == "labels":
                evaluation = evaluate_classes(seg, pairs, padding_mode=settings.padding,
                                              progress=progress, max_pixels=app_max_pixels())
            else:
                evaluation = evaluate_pairs(seg, pairs, padding_mode=settings.padding,
                                            progress=progress, max_pixels=app_max_pixels(),
                                            invert_masks=settings.invert_masks,
                                            select_metric=select_metric_for(bundle.card),
                                            class_index=class_index)
        except Exception:  # failed or cancelled: no progress bar or Cancel button left
            running.empty()
            raise
        running.empty()
        store.put(cache_key, evaluation)
    return EvalState(bundle.key, label, pairs, evaluation, settings, holder, kind, class_index)


def _run(ctx: PageContext, folder: Path | None, label: str, zip_upload: Any,
         settings: InferenceSettings, class_index: int, masks: str) -> None:
    ss = st.session_state
    old: EvalState | None = ss.get("evaluation")
    stored = False
    try:
        stored = _run_inner(ctx, folder, label, zip_upload, settings, class_index, masks, old)
    finally:
        if not stored:  # failed, cancelled or interrupted: nothing of this run is kept
            ss.pop("evaluation", None)
            st.session_state.pop(_CANCEL_FLAG, None)
            for h in (ss.pop("_eval_new_holder", None), old.holder if old is not None else None):
                if h is not None:
                    h.close()
        ss.pop("_eval_new_holder", None)


def _run_inner(ctx: PageContext, folder: Path | None, label: str, zip_upload: Any,
               settings: InferenceSettings, class_index: int, masks: str,
               old: EvalState | None) -> bool:
    """The evaluation of :func:`_run`; True when its result was stored."""
    ss = st.session_state
    holder = None
    extra = ""
    with run_safely(what="evaluating"):
        if zip_upload is not None:
            data = zip_upload.getvalue()
            if old is not None and old.holder is not None and \
                    old.holder.sha == sources.sha256_bytes(data):
                holder = old.holder
            else:
                with st.spinner(f"Extracting {plain(zip_upload.name)}…"):
                    holder = sources.ExtractedZip(data, zip_upload.name)
                ss["_eval_new_holder"] = holder
            folder, extra = holder.path, f"zip:{holder.sha}"
        if folder is None:
            return True
        suffix = " (masks inverted)" if settings.invert_masks else ""
        try:
            ss["evaluation"] = _evaluate(ctx, folder, label + suffix, extra, settings, holder,
                                         class_index, masks)
        except UnetCoreError as exc:  # name the uploaded zip, never the server's temp folder
            if holder is None:
                raise
            text = str(exc).replace(str(holder.path), holder.name)
            raise DataSetError(text if holder.name in text else f"{holder.name}: {text}"
                               ) from None
        if old is not None and old.holder is not None and old.holder is not holder:
            old.holder.close()
        return True
    # Failed: drop the previous results so they are not shown under the new source.
    return False


def render(ctx: PageContext) -> None:
    """Draw the Evaluate page for the model in ``ctx``."""
    ss = st.session_state
    bundle = ctx.bundle
    card = bundle.card
    widgets.page_header("Evaluate", bundle, "every image needs a mask · thresholds 0.00 … 1.00")

    c_src, c_opts = st.columns([2, 1])
    with c_src:
        folder, label, zip_upload = widgets.data_source_ui(card)
    # What the evaluation depends on: the sidebar's settings but the minimum area, which is
    # re-derived from the stored counts.
    settings = dataclasses.replace(ctx.settings, min_area=0)
    with c_opts:
        class_index = widgets.class_ui(card)
        masks = "binary"
        if card.n_classes >= 2:
            masks = widgets.select_ui(
                "Masks", list(MASK_KINDS), "eval_masks", "auto", format_func=MASK_KINDS.get,
                help="Binary masks score the class picked (IoU, Dice and a threshold sweep); "
                "label masks (pixel value = class index, or a palette PNG) score every class "
                "of the argmax label map (IoU and Dice per class and their mean).")
        ready = folder is not None or zip_upload is not None
        clicked = st.button("Run evaluation", type="primary", key="eval_run",
                            disabled=not ready)
    if ss.get("eval_cancel"):  # pressed during the last run, which stopped there
        st.info("Evaluation cancelled: nothing was kept. Press **Run evaluation** to start "
                "again.")
    if clicked:
        _run(ctx, folder, label, zip_upload, settings, class_index, masks)

    result: EvalState | None = ss.get("evaluation")
    if result is None:
        st.info("Choose a data source and press **Run evaluation**.")
        return
    if result.model_key != bundle.key:
        st.info(f"The last evaluation ({plain(result.source)}) was for another model: press "
                "**Run evaluation** to score this one.")
        return
    if result.settings != settings:
        st.info("Padding, test-time augmentation or mask inversion changed since this "
                "evaluation: press **Run evaluation** to score with them. Shown: the "
                "evaluation with padding {padding}, TTA {tta}, masks inverted "
                "{invert_masks}.".format(**dataclasses.asdict(result.settings)))
    if result.kind == "labels":
        _class_results(ctx, result)
        return
    if card.n_classes >= 2 and result.class_index != class_index:
        st.info(f"This evaluation scored class "
                f"{plain(widgets.class_label(card, result.class_index))}: press **Run "
                f"evaluation** to score {plain(widgets.class_label(card, class_index))}.")
    _results(ctx, result)


def _results(ctx: PageContext, result: EvalState) -> None:
    bundle = ctx.bundle
    card = bundle.card
    assert isinstance(result.evaluation, Evaluation)
    n = len(result.evaluation.sweep.names)
    of = (f" · class {plain(widgets.class_label(card, result.class_index))}"
          if card.n_classes >= 2 else "")
    st.subheader(f"Results · {plain(result.source)} · {n} images{of}")
    threshold = widgets.threshold_ui(card)
    min_area = ctx.settings.min_area
    # Another minimum area is re-derived from the stored counts: no image is predicted again.
    ev = Evaluation(result.evaluation.sweep.with_min_area(min_area),
                    float(card.threshold), result.evaluation.select_metric)
    sweep = ev.sweep
    summary = ev.summary()
    best = float(summary["best_threshold"])
    by = METRIC_NAMES.get(ev.select_metric, ev.select_metric)
    seismic = card.domain.lower() == "seismic"
    now = sweep.summary_at(threshold)
    m1, m2, m3 = st.columns(3)
    m1.metric("Best threshold", f"{best:.2f}", help=f"Maximises the {by} over these images "
              "(ties: the one closest to 0.50).")
    key = "tgs_metric" if seismic else "iou"
    name = "TGS metric" if seismic else "Mean IoU"
    m2.metric(f"{name}, best", f"{sweep.summary_at(best)[key]:.3f}",
              help=TGS_HELP if seismic else "Mean over images of the IoU at the best threshold.")
    m3.metric(f"{name} at {threshold:.2f}", f"{now[key]:.3f}",
              help="At the threshold of the slider above.")

    series = {"mean IoU": sweep.mean_iou, "mean Dice": sweep.mean_dice}
    if seismic:
        series["TGS metric"] = sweep.tgs_metric
    st.plotly_chart(viz.curves_figure(sweep.thresholds, series, current=threshold, best=best,
                                      reference=card.threshold, title="Scores vs threshold"),
                    width="stretch", key="eval_fig_curves")
    rows: dict[str, dict[str, float]] = {}
    for col, t in ((f"card {card.threshold:.2f}", card.threshold), (f"best {best:.2f}", best),
                   (f"now {threshold:.2f}", threshold)):
        s = sweep.summary_at(t)
        rows[col] = {"mean IoU": s["iou"], "mean Dice": s["dice"],
                     "mean precision": s["precision"], "mean recall": s["recall"],
                     "pooled IoU": s["pooled_iou"]}
        if seismic:
            rows[col]["TGS metric"] = s["tgs_metric"]
    table = pd.DataFrame(rows).map(lambda v: f"{v:.3f}")
    st.markdown("**Summary** at the card's, the best and the current threshold")
    st.table(table)
    st.caption("Means over images; pooled IoU pools all pixels of all images. An empty mask "
               "with an empty prediction counts as a perfect 1. " + (TGS_HELP if seismic else "")
               + (f" Every figure uses the minimum area {min_area} px: predicted masks with "
                  "fewer foreground pixels are emptied." if min_area else ""))

    per_image = pd.DataFrame(sweep.per_image(threshold)).rename(
        columns={"iou": "IoU", "dice": "Dice", "tgs_score": "TGS score"})
    cols = ["name", "coverage", "IoU", "Dice"] + (["TGS score"] if seismic else []) + \
        ["precision", "recall"]
    per_image = per_image[cols]
    st.markdown(f"**Per image at threshold {threshold:.2f}** (click a column to sort; coverage = "
                "fraction of true foreground pixels)")
    config: dict[str, Any] = {c: st.column_config.NumberColumn(format="%.3f", width="small")
                              for c in per_image.columns if c != "name"}
    config["name"] = st.column_config.TextColumn(width="medium", pinned=True)
    st.dataframe(per_image, hide_index=True, width="stretch", height=280, column_config=config)
    st.download_button("Download per-image CSV", per_image.to_csv(index=False).encode(),
                       file_name=f"per_image_t{threshold:.2f}_a{min_area}.csv", mime="text/csv",
                       key="eval_dl_csv")
    _worst_cases(ctx, result, sweep, threshold, min_area)


def _worst_cases(ctx: PageContext, result: EvalState, sweep: Any, threshold: float,
                 min_area: int) -> None:
    bundle = ctx.bundle
    st.markdown(f"**Worst images at {threshold:.2f}** (lowest IoU) · "
                f"{viz.outline_legend()}")
    k = sweep.index_of(threshold)
    settings = result.settings

    def thumb(pair: Pair) -> np.ndarray:
        return engine.worst_case_thumbnail(
            pair.image_path, pair.mask_path, bundle, padding=settings.padding,
            tta=settings.tta, backend=ctx.backend, threshold=threshold,
            min_area=min_area, invert_masks=settings.invert_masks,
            class_index=result.class_index)

    _gallery_ui(ctx, result, list(sweep.names),
                np.lexsort((sweep.tgs[:, k], sweep.iou[:, k])),
                [f"IoU {v:.3f}" for v in sweep.iou[:, k]], thumb)


def _gallery_ui(ctx: PageContext, result: EvalState, names: list[str], order: np.ndarray,
                scores: list[str], thumbnail: Any) -> None:
    """Worst-case tiles: a count slider, then for the first images of ``order`` (indices into
    ``names``, worst first) a thumbnail from ``thumbnail(pair)`` captioned with its score and
    an "Open in Segment" button."""
    total = len(names)
    n_show = min(8, total)
    if total > 1:
        n_show = int(st.slider("Worst cases shown", 1, min(24, total), min(8, total),
                               key="eval_n_worst"))
    by_name = {p.name: p for p in result.pairs}
    gallery = st.container(horizontal=True, gap="medium")
    for idx in order[:n_show]:
        name = names[int(idx)]
        pair = by_name.get(name)
        if pair is None:
            continue
        tile = gallery.container(width=180)
        with tile, run_safely(what="drawing a thumbnail"):
            st.image(thumbnail(pair), width=160,
                     caption=f"{viz.fit_title(display_text(name), 22)} · {scores[int(idx)]}")
        if tile.button("Open in Segment", key=f"eval_open_{int(idx)}"):
            widgets.open_in_segment(ctx, pair)


def _class_results(ctx: PageContext, result: EvalState) -> None:
    """Per-class scores of the label maps against label masks (a K-class model)."""
    card = ctx.bundle.card
    res = result.evaluation
    assert isinstance(res, ClassResult)
    n = len(res.names)
    st.subheader(f"Results · {plain(result.source)} · {n} images · label masks, {res.n_classes} "
                 "classes")
    m1, m2, m3 = st.columns(3)
    m1.metric("Mean IoU over classes", f"{res.mean_iou:.3f}",
              help="Mean over all classes (background included) of each class's mean IoU "
              "over images; a class absent from both truth and prediction scores 1.")
    m2.metric("Mean Dice over classes", f"{res.mean_dice:.3f}")
    m3.metric("Pixel accuracy", f"{res.pixel_accuracy:.3f}",
              help="Pixels of the right class / all pixels, pooled over the set.")
    rows = []
    for c in res.per_class():
        rows.append({"class": c["index"], "name": plain(c["name"], 100),
                     "colour": viz.label_color_name(c["index"]), "IoU": c["iou"],
                     "Dice": c["dice"], "pooled IoU": c["pooled_iou"],
                     "pooled Dice": c["pooled_dice"], "images": c["images"]})
    st.markdown("**Per class** (IoU and Dice: mean over images; pooled: all pixels of all "
                "images together; images: how many truths hold the class)")
    st.table(widgets.legend_style(pd.DataFrame(rows), res.n_classes))
    per_image = pd.DataFrame(res.per_image())
    st.markdown("**Per image** (click a column to sort)")
    config: dict[str, Any] = {c: st.column_config.NumberColumn(format="%.3f", width="small")
                              for c in per_image.columns if c != "name"}
    config["name"] = st.column_config.TextColumn(width="medium", pinned=True)
    st.dataframe(per_image, hide_index=True, width="stretch", height=280, column_config=config)
    st.download_button("Download per-image CSV", per_image.to_csv(index=False).encode(),
                       file_name="per_image_classes.csv", mime="text/csv", key="eval_dl_csv")
    st.caption(f"The prediction is the argmax over the {card.n_classes} classes (no threshold). "
               f"Means over {res.summary()['mean_over']}.")

    st.markdown("**Worst images** (lowest mean IoU over classes) · predicted classes blended "
                "over the image, edges between the true classes in white")
    def thumb(pair: Pair) -> np.ndarray:
        return engine.label_thumbnail(pair.image_path, pair.mask_path, ctx.bundle,
                                      padding=result.settings.padding,
                                      tta=result.settings.tta, backend=ctx.backend)

    mean_iou = res.iou.mean(axis=1)
    _gallery_ui(ctx, result, list(res.names), np.argsort(mean_iou, kind="stable"),
                [f"mean IoU {v:.3f}" for v in mean_iou], thumb)
