"""Model page (home): the model card for a person, the layer table and how to use the app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from app import engine
from app.context import PageContext
from app.errors import run_safely

#: Card metric keys -> the names a person reads.
METRIC_NAMES: dict[str, str] = {
    "n": "Images", "threshold": "Threshold", "min_area": "Minimum area (px)",
    "iou": "Mean IoU", "dice": "Mean Dice", "precision": "Mean precision",
    "recall": "Mean recall", "tgs_metric": "TGS metric", "pooled_iou": "Pooled IoU"}
SPLIT_NAMES: dict[str, str] = {"validation": "Validation", "test": "Held-out test"}
#: Data set folder names -> their public names.
DATASET_NAMES: dict[str, str] = {
    "tgs_salt": "TGS Salt Identification (Kaggle 2018)",
    "dsb2018_nuclei": "2018 Data Science Bowl nuclei (stage 1 train)",
    "isbi2012_em_membrane": "ISBI 2012 EM segmentation challenge"}
#: Training record keys -> row labels (others keep their key, with '_' as spaces).
TRAINING_NAMES: dict[str, str] = {
    "pairs": "Labelled images", "epochs_run": "Epochs run", "best_epoch": "Best epoch",
    "weights": "Weights shipped", "loss": "Loss", "crop": "Training crop (px)",
    "batch_size": "Batch size", "wall_time_s": "Training time", "command": "Reproduce with",
    "note": "Notes", "invert_masks": "Masks inverted for training"}
HIDDEN_TRAINING = {"data", "terms", "split", "augmentation", "calibration", "held_out_names",
                   "split_names"}


def dataset_name(value: Any) -> str:
    """A data set's public name from a card's ``training.data`` (never a machine's path)."""
    if not value:
        return "—"
    stem = Path(str(value)).name
    return DATASET_NAMES.get(stem, stem.replace("_", " "))


def metrics_table(metrics: dict[str, Any]) -> pd.DataFrame | None:
    """Rows = metrics with plain names, one column per split; when the card picked a minimum
    area, more columns give the splits without it. Each column is at its own threshold, shown
    in its first rows."""
    splits = {SPLIT_NAMES[s]: v for s, v in metrics.items()
              if s in SPLIT_NAMES and isinstance(v, dict)}
    without = metrics.get("without_min_area")
    if isinstance(without, dict):
        splits.update({f"{SPLIT_NAMES.get(s, s)}, no minimum area": v
                       for s, v in without.items() if isinstance(v, dict)})
    cols = {name: {METRIC_NAMES[k]: v[k] for k in METRIC_NAMES if k in v}
            for name, v in splits.items()}
    if not cols:
        return None
    rows = [n for n in METRIC_NAMES.values() if any(n in c for c in cols.values())]
    df = pd.DataFrame(cols).reindex(rows)

    def fmt(row: str, v: Any) -> str:
        if pd.isna(v):
            return "—"
        if row in ("Images", "Minimum area (px)"):
            return f"{int(v)}"
        return f"{v:.2f}" if row == "Threshold" else f"{v:.3f}"

    return df.apply(lambda col: [fmt(r, v) for r, v in col.items()])


def training_table(training: dict[str, Any]) -> pd.DataFrame:
    """The training record as rows a person reads (field, value)."""
    rows = []
    for key, value in training.items():
        if key in HIDDEN_TRAINING or isinstance(value, dict | list):
            continue
        if key == "wall_time_s" and isinstance(value, int | float):
            value = f"{value / 60:.0f} min"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        rows.append({"field": TRAINING_NAMES.get(key, key.replace("_", " ").capitalize()),
                     "value": str(value)})
    return pd.DataFrame(rows, columns=["field", "value"])


def architecture_text(arch: dict[str, Any]) -> str:
    """One line: type, size and, for an ensemble, its members."""
    if not arch:
        return "—"
    parts = [str(arch.get("type", "network"))]
    if arch.get("base_filters") and arch.get("depth"):
        parts.append(f"{arch['base_filters']} base filters, depth {arch['depth']}")
    if isinstance(arch.get("parameters"), int):
        parts.append(f"{arch['parameters'] / 1e6:.2f} M parameters")
    members = arch.get("members")
    if isinstance(members, list) and members:
        parts.append("members " + ", ".join(str(m.get("name", "?")) for m in members
                                             if isinstance(m, dict)))
    return "; ".join(parts)


def render(ctx: PageContext) -> None:
    """Draw the Model page for the model in ``ctx``."""
    bundle = ctx.bundle
    loaded = bundle.loaded
    card = loaded.card
    st.title(f"Model: {card.name}")
    st.caption(card.description or "No description in the model card.")
    if not loaded.card_found:
        st.warning(
            f"No model card was found next to "
            f"{loaded.path.name if loaded.path else 'this model'}: the fields "
            f"{', '.join(card.inferred)} are *inferred* from the network. Check the "
            "normalisation, padding and threshold before trusting any number.")

    left, right = st.columns([3, 2])
    training = card.training or {}
    with left:
        st.subheader("Model card")
        fields = [
            ("Segments", f"{card.foreground} in {card.domain} images"),
            ("Input", f"{card.input_spec}, {card.channels} channel(s)"),
            ("Normalisation", card.normalisation),
            ("Padding", card.padding_mode),
            ("Recommended threshold", f"{card.threshold:.2f}"),
            ("Minimum area", f"{card.min_area} px: smaller predicted masks are emptied"
             if card.min_area else "off (any predicted mask is kept)"),
            ("Output", card.output),
            ("Test-time augmentation", "yes (flip)" if card.tta else "no"),
            ("Architecture", architecture_text(card.architecture or {})),
            ("Training data", dataset_name(training.get("data"))),
            ("Data terms", str(training.get("terms") or "—")),
        ]
        if card.truth_inverted:
            fields.insert(-2, ("Ground-truth masks", "mark the other class; inverted before "
                               f"scoring (the model's foreground is {card.foreground})"))
        inferred = set(card.inferred)
        keys = {"Input": "input_size", "Normalisation": "normalisation",
                "Padding": "padding_mode", "Recommended threshold": "threshold",
                "Output": "output"}
        table = pd.DataFrame(
            [{"field": k + (" (inferred)" if keys.get(k) in inferred else ""), "value": str(v)}
             for k, v in fields])
        st.table(table.set_index("field"))
    with right:
        st.subheader("How to use")
        st.markdown(
            "1. Pick a model in the sidebar (or upload a `.keras` / `.h5`).\n"
            "2. **Segment**: run it on a bundled sample or your own images; move the threshold "
            "(instant, in the browser); add a mask to get IoU, Dice and the error map.\n"
            "3. **Evaluate**: score a whole data set (bundled, a server folder, or a .zip of "
            "`images/` + `masks/`), find the best threshold and the worst images.\n"
            "4. **Filters** and **Activations**: look at the learned kernels and at what each "
            "layer responds to.")
        st.page_link(ctx.pages["segment"], label="Go to Segment")
        st.page_link(ctx.pages["evaluate"], label="Go to Evaluate")
        st.download_button("Download card (JSON)", json.dumps(card.to_dict(), indent=2),
                           file_name=f"{card.name}.json", mime="application/json",
                           key="model_card_download")

    st.subheader("Validation and held-out figures")
    metrics = metrics_table(card.metrics or {})
    if metrics is not None:
        st.table(metrics)
        selected = (card.metrics or {}).get("selected_by")
        area = (card.metrics or {}).get("min_area") or 0
        st.caption(
            "Each column is scored at the threshold in its first rows. "
            + (f"The threshold was picked on validation by "
               f"{METRIC_NAMES.get(str(selected), str(selected)).lower()}"
               + (f" together with the minimum area ({area} px); the last columns are "
                  "the same images without it, at their own best threshold."
                  if area else ".") if selected else "")
            + " TGS metric: mean over IoU cut-offs 0.50 … 0.95 of [IoU > cut-off], the "
            "Kaggle TGS Salt score.")
    else:
        st.caption("The card records no metrics.")

    if training:
        st.subheader("Training record")
        st.table(training_table(training).set_index("field"))

    st.subheader("Layers")
    with run_safely(what="layer table"):
        rows, total, trainable = engine.layer_rows(bundle.key, loaded)
        fh, fw = card.input_size or (max(card.min_size, 128),) * 2
        flops = ""
        with run_safely(what="FLOP count"):
            flops = (f" · **{engine.gflop(bundle.key, loaded, fh, fw):.2f}** GFLOP per {fh}x{fw} "
                     "image (multiply-add = 2)")
        st.markdown(f"**{total:,}** parameters ({trainable:,} trainable) · **{len(rows):,}** "
                    f"layers{flops}")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", height=360)
        st.caption("Output shapes read H x W relative to the input (a fully convolutional "
                   "network accepts any size that pads to its stride).")
