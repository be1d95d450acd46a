"""Model page (home): the model card, the layer table and how to use the explorer."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from app import common

METRIC_COLUMNS = ("n", "threshold", "iou", "dice", "precision", "recall", "tgs_metric",
                  "pooled_iou")


@st.cache_data(max_entries=8, show_spinner=False)
def _layer_rows(model_key: str, _loaded: Any) -> tuple[list[dict[str, Any]], int, int]:
    from unet_core.introspect import layer_table

    infos = layer_table(_loaded)
    rows = [{k: v for k, v in info.as_row().items() if k != "#"} for info in infos]
    return rows, sum(i.params for i in infos), sum(i.trainable_params for i in infos)


def _metrics_table(metrics: dict[str, Any]) -> pd.DataFrame | None:
    """One row per metric, one column per split (fits a narrow column); when the card picked a
    minimum area, two more columns give the splits without it (at their own threshold)."""
    splits = {split: vals for split, vals in metrics.items()
              if split in ("validation", "test") and isinstance(vals, dict)}
    without = metrics.get("without_min_area")
    if isinstance(without, dict):
        splits.update({f"{split}, no min. area": vals for split, vals in without.items()
                       if isinstance(vals, dict)})
    cols = {split: {c: vals[c] for c in METRIC_COLUMNS if c in vals}
            for split, vals in splits.items()}
    if not cols:
        return None
    df = pd.DataFrame(cols).reindex([c for c in METRIC_COLUMNS
                                     if any(c in v for v in cols.values())])
    return df.apply(lambda col: [("—" if pd.isna(v) else f"{int(v)}" if k == "n"
                                  else f"{v:.3f}") for k, v in col.items()])


@st.cache_data(max_entries=8, show_spinner=False)
def _gflop(model_key: str, _loaded: Any, height: int, width: int) -> float:
    from unet_core.introspect import model_flops

    return model_flops(_loaded.model, height, width) / 1e9


def _architecture(arch: dict[str, Any]) -> str:
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


def _fmt(value: Any) -> str:
    if value in (None, "", [], {}):
        return "—"
    return str(value)


bundle = common.require_model()
loaded = bundle.loaded
card = loaded.card

st.title(f"Model: {card.name}")
st.caption(card.description or "No description in the model card.")

if not loaded.card_found:
    st.warning(
        f"No model card was found next to {loaded.path.name if loaded.path else 'this model'}: "
        f"the fields {', '.join(card.inferred)} are *inferred* from the network. Check the "
        "normalisation, padding and threshold before trusting any number.")

left, right = st.columns([3, 2])
with left:
    st.subheader("Model card")
    training = card.training or {}
    fields = [
        ("What it segments", f"{card.foreground} — {card.description}" if card.description
         else card.foreground),
        ("Domain", card.domain),
        ("Input", f"{card.input_spec}, {card.channels} channel(s)"),
        ("Normalisation", card.normalisation),
        ("Padding", card.padding_mode),
        ("Recommended threshold", f"{card.threshold:.2f}"),
        ("Minimum area", f"{card.min_area} px: smaller predicted masks are emptied"
         if card.min_area else "off (any predicted mask is kept)"),
        ("Output", card.output),
        ("Test-time augmentation", "yes (flip)" if card.tta else "no"),
        ("Architecture", _architecture(card.architecture or {})),
        ("Training data", _fmt(training.get("data"))),
        ("Data terms", _fmt(training.get("terms"))),
    ]
    if card.truth_inverted:
        fields.insert(-2, ("Ground-truth masks", f"mark the other class; inverted before scoring "
                           f"(the model's foreground is {card.foreground})"))
    inferred = set(card.inferred)
    keys = {"Input": "input_size", "Normalisation": "normalisation", "Padding": "padding_mode",
            "Recommended threshold": "threshold", "Output": "output"}
    table = pd.DataFrame(
        [{"field": k + (" (inferred)" if keys.get(k) in inferred else ""), "value": str(v)}
         for k, v in fields])
    st.table(table.set_index("field"))
    metrics = _metrics_table(card.metrics or {})
    st.markdown("**Validation / test metrics** (at the recommended threshold)")
    if metrics is not None:
        st.table(metrics)
        if card.metrics.get("selected_by"):
            area = card.metrics.get("min_area") or 0
            st.caption(f"Threshold selected on validation by {card.metrics['selected_by']}"
                       + (f", with the minimum area ({area} px); the last columns are the same "
                          "splits without it." if area else "."))
    else:
        st.caption("The card records no metrics.")

with right:
    st.subheader("How to use")
    st.markdown(
        "1. Pick a model in the sidebar (or upload a `.keras` / `.h5`).\n"
        "2. **Segment**: run it on a bundled sample or your own images; move the threshold "
        "(the network is not re-run); add a mask to get IoU, Dice and the error map.\n"
        "3. **Evaluate**: score a whole data set (bundled, a server folder, or a .zip of "
        "`images/` + `masks/`), find the best threshold and the worst images.\n"
        "4. **Filters** and **Activations**: look at the learned kernels and at what each "
        "layer responds to.")
    st.page_link("views/segment.py", label="Go to Segment")
    st.page_link("views/evaluate.py", label="Go to Evaluate")
    with st.expander("Training record and architecture"):
        st.json({"architecture": card.architecture, "training": card.training}, expanded=False)
    st.download_button("Download model card (JSON)", json.dumps(card.to_dict(), indent=2),
                       file_name=f"{card.name}.json", mime="application/json",
                       key="model_card_download")

st.subheader("Layers")
with common.run_safely(what="layer table"):
    rows, total, trainable = _layer_rows(bundle.key, loaded)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Total parameters", f"{total:,}")
    c2.metric("Trainable", f"{trainable:,}")
    c3.metric("Layers", f"{len(rows):,}")
    fh, fw = card.input_size or (max(card.min_size, 128),) * 2
    with common.run_safely(c4, "FLOP count"):
        c4.metric(f"GFLOP per {fh}x{fw} image", f"{_gflop(bundle.key, loaded, fh, fw):.2f}",
                  help="Floating-point operations of one forward pass (multiply-add = 2), "
                  "counted by TensorFlow's profiler.")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", height=360)
    st.caption("Output shapes read H x W relative to the input (a fully convolutional network "
               "accepts any size that pads to its stride).")
