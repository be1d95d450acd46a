"""Evaluate page: score the model on a data set, sweep thresholds, find the worst images."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import engine, sources, state, viz, widgets
from app.context import InferenceSettings, PageContext
from app.errors import run_safely
from app.settings import ASSETS, app_max_pixels, data_root, domain_of_sample_set
from unet_core.errors import DataSetError, UnetCoreError
from unet_core.evaluate import Evaluation, evaluate_pairs
from unet_core.io import Pair, find_pairs
from unet_core.metrics import SELECT_METRICS
from unet_core.model import ModelCard

SOURCES = ["Bundled samples", "Folder on the server", "Upload a .zip"]
METRIC_NAMES = {"tgs_metric": "TGS metric", "mean_iou": "mean IoU", "mean_dice": "mean Dice"}
TGS_HELP = ("TGS metric (Kaggle TGS Salt): per image, the mean over IoU cut-offs 0.50, 0.55, …, "
            "0.95 of [IoU > cut-off] (an empty truth scores 1 only for an empty prediction); "
            "then the mean over images.")


@dataclass
class EvalState:
    """An evaluation shown on the Evaluate page (kept in session state)."""

    model_key: str
    source: str
    pairs: list[Pair]
    evaluation: Evaluation
    settings: InferenceSettings  # min_area 0: every rule is re-derived from the counts
    holder: sources.ExtractedZip | None = None


def select_metric_for(card: ModelCard) -> str:
    """The metric that picks the best threshold: the card's own (what picked its threshold),
    else the TGS metric for seismic and mean IoU for everything else."""
    chosen = str((card.metrics or {}).get("selected_by") or "")
    if chosen in SELECT_METRICS:
        return chosen
    return "tgs_metric" if card.domain.lower() == "seismic" else "mean_iou"


def _evaluate(ctx: PageContext, folder: Path, label: str, extra: str, settings: InferenceSettings,
              holder: sources.ExtractedZip | None) -> EvalState:
    """Evaluate the pairs of ``folder`` (cached per model, data and settings)."""
    bundle = ctx.bundle
    pairs = holder.pairs() if holder is not None else find_pairs(folder, require_masks=True)
    fingerprint = sources.pairs_fingerprint(pairs, extra, with_mtime=holder is None)
    store = engine.evaluation_store()
    seg = engine.get_segmenter(bundle, settings.tta, ctx.backend)
    cache_key = (bundle.key, fingerprint, settings.padding, settings.tta,
                 seg.backend.name, settings.invert_masks)
    evaluation = store.get(cache_key)
    if evaluation is None:
        bar = st.progress(0.0, text=f"Evaluating {len(pairs)} images…")

        def progress(done: int, total: int) -> None:
            bar.progress(done / max(total, 1), text=f"Evaluated {done} / {total} images")

        evaluation = evaluate_pairs(seg, pairs, padding_mode=settings.padding,
                                    progress=progress, max_pixels=app_max_pixels(),
                                    invert_masks=settings.invert_masks,
                                    select_metric=select_metric_for(bundle.card))
        bar.empty()
        store.put(cache_key, evaluation)
    return EvalState(bundle.key, label, pairs, evaluation, settings, holder)


def _source_ui(card: ModelCard) -> tuple[Path | None, str, Any]:
    """The data source controls; returns (folder, label, uploaded zip)."""
    if st.session_state.get("eval_source") not in SOURCES:
        st.session_state["eval_source"] = SOURCES[0]
    source = st.radio("Data source", SOURCES, key="eval_source", horizontal=True,
                      persist_state="session")
    if source == SOURCES[0]:
        sets = sources.ordered_sets(card.domain)
        if not sets:
            st.warning(f"No bundled samples in {ASSETS}.")
            return None, "", None
        chosen = widgets.select_ui("Sample set", sets, "eval_sample_set", sets[0])
        domain = domain_of_sample_set(chosen)
        if domain and domain != card.domain.lower():
            st.warning(f"The {chosen} samples are {domain} images; this model segments "
                       f"{card.foreground} in {card.domain} images.")
        return ASSETS / chosen, f"bundled samples: {chosen}", None
    if source == SOURCES[1]:
        root = data_root()
        candidates = sources.data_folder_candidates(root)
        text = st.text_input("Folder path", key="eval_folder", persist_state="session",
                             placeholder=candidates[0] if candidates else str(root),
                             help="A folder holding images/ and masks/ (same file names). "
                             "Relative paths are inside the data root.")
        st.caption(f"Allowed data root: `{root}`"
                   + (f" · e.g. {', '.join(candidates[:6])}" if candidates else ""))
        if text.strip():
            with run_safely(what="folder path"):
                folder = sources.resolve_data_folder(text, root)
                return folder, f"folder: {folder.relative_to(root.resolve())}", None
        return None, "", None
    up = st.file_uploader(
        "Upload a .zip of images/ + masks/", type=["zip"], key="eval_zip",
        help="Layout: images/NAME + masks/NAME (masks matched by file name); one top folder "
        "is fine.")
    return None, (f"zip: {up.name}" if up is not None else ""), up


def _run(ctx: PageContext, folder: Path | None, label: str, zip_upload: Any,
         settings: InferenceSettings) -> None:
    ss = st.session_state
    old: EvalState | None = ss.get("evaluation")
    holder = None
    extra = ""
    with run_safely(what="evaluation"):
        if zip_upload is not None:
            data = zip_upload.getvalue()
            if old is not None and old.holder is not None and \
                    old.holder.sha == sources.sha256_bytes(data):
                holder = old.holder
            else:
                with st.spinner(f"Extracting {zip_upload.name}…"):
                    holder = sources.ExtractedZip(data, zip_upload.name)
            folder, extra = holder.path, f"zip:{holder.sha}"
        if folder is None:
            return
        suffix = " (masks inverted)" if settings.invert_masks else ""
        try:
            ss["evaluation"] = _evaluate(ctx, folder, label + suffix, extra, settings, holder)
        except UnetCoreError as exc:  # name the uploaded zip, never the server's temp folder
            if holder is None:
                raise
            text = str(exc).replace(str(holder.path), holder.name)
            raise DataSetError(text if holder.name in text else f"{holder.name}: {text}"
                               ) from None
        if old is not None and old.holder is not None and old.holder is not holder:
            old.holder.close()
        return
    # Failed: drop the previous results so they are not shown under the new source.
    ss.pop("evaluation", None)
    for h in (holder, old.holder if old is not None else None):
        if h is not None:
            h.close()


def render(ctx: PageContext) -> None:
    """Draw the Evaluate page for the model in ``ctx``."""
    ss = st.session_state
    bundle = ctx.bundle
    card = bundle.card
    widgets.page_header("Evaluate", bundle, "every image needs a mask · thresholds 0.00 … 1.00")

    c_src, c_opts = st.columns([2, 1])
    with c_src:
        folder, label, zip_upload = _source_ui(card)
    # What the evaluation depends on: the sidebar's settings but the minimum area, which is
    # re-derived from the stored counts.
    settings = dataclasses.replace(ctx.settings, min_area=0)
    with c_opts:
        ready = folder is not None or zip_upload is not None
        clicked = st.button("Run evaluation", type="primary", key="eval_run",
                            disabled=not ready)
    if clicked:
        _run(ctx, folder, label, zip_upload, settings)

    result: EvalState | None = ss.get("evaluation")
    if result is None:
        st.info("Choose a data source and press **Run evaluation**.")
        return
    if result.model_key != bundle.key:
        st.info(f"The last evaluation ({result.source}) was for another model: press "
                "**Run evaluation** to score this one.")
        return
    if result.settings != settings:
        st.info("Padding, test-time augmentation or mask inversion changed since this "
                "evaluation: press **Run evaluation** to score with them. Shown: the "
                "evaluation with padding {padding}, TTA {tta}, masks inverted "
                "{invert_masks}.".format(**dataclasses.asdict(result.settings)))
    _results(ctx, result)


def _results(ctx: PageContext, result: EvalState) -> None:
    bundle = ctx.bundle
    card = bundle.card
    n = len(result.evaluation.sweep.names)
    st.subheader(f"Results · {result.source} · {n} images")
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
    total = len(sweep.names)
    n_show = min(8, total)
    if total > 1:
        n_show = int(st.slider("Worst cases shown", 1, min(24, total), min(8, total),
                               key="eval_n_worst"))
    k = sweep.index_of(threshold)
    order = np.lexsort((sweep.tgs[:, k], sweep.iou[:, k]))[:n_show]
    by_name = {p.name: p for p in result.pairs}
    settings = result.settings
    gallery = st.container(horizontal=True, gap="medium")
    for idx in order:
        name = sweep.names[int(idx)]
        pair = by_name.get(name)
        if pair is None:
            continue
        tile = gallery.container(width=180)
        with tile, run_safely(what="thumbnail"):
            thumb = engine.worst_case_thumbnail(
                pair.image_path, pair.mask_path, bundle, padding=settings.padding,
                tta=settings.tta, backend=ctx.backend, threshold=threshold,
                min_area=min_area, invert_masks=settings.invert_masks)
            st.image(thumb, width=160, caption=f"{viz.fit_title(name, 22)} · IoU "
                     f"{sweep.iou[idx, k]:.3f}")
        if tile.button("Open in Segment", key=f"eval_open_{int(idx)}"):
            with run_safely(what="open in segment"):
                item = sources.item_from_pair(pair, domain=bundle.card.domain)
                state.use_image(item)
                st.session_state["image_source"] = widgets.RECENT_SOURCE
                st.session_state["recent_pick"] = item.key
                st.switch_page(ctx.pages["segment"])
