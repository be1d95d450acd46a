"""Model page (home): the model card for a person, the layer table and how to use the app.

The card table states the input spec (size, channels and their order, the value scaling with
its formula, the fit with its interpolation, the output and the classes), marks inferred
fields and says why each was chosen (``card.notes``). **Edit the card** sets the fields a
network cannot tell (channel order, scaling, fit, class names, default class, threshold):
applying it re-checks the card against the network and every page then uses it (the caches
key on the card); **Download card** saves it under the name the engine looks for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import engine
from app.context import PageContext
from app.errors import display_text, one_line, plain, run_safely
from unet_core.errors import ModelSpecError, UnetCoreError
from unet_core.model import ModelCard
from unet_core.onnx_graph import as_graph, is_onnx
from unet_core.preprocess import CHANNEL_ORDERS, FITS, NORMALISATIONS

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
    return DATASET_NAMES.get(stem, plain(stem.replace("_", " ")))


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
        rows.append({"field": TRAINING_NAMES.get(key, plain(key.replace("_", " ").capitalize())),
                     "value": plain(value)})
    return pd.DataFrame(rows, columns=["field", "value"])


def architecture_text(arch: dict[str, Any]) -> str:
    """One line: type, size and, for an ensemble, its members."""
    if not arch:
        return "—"
    parts = [plain(arch.get("type", "network"))]
    if arch.get("base_filters") and arch.get("depth"):
        parts.append(plain(f"{arch['base_filters']} base filters, depth {arch['depth']}"))
    if isinstance(arch.get("parameters"), int):
        parts.append(f"{arch['parameters'] / 1e6:.2f} M parameters")
    members = arch.get("members")
    if isinstance(members, list) and members:
        parts.append("members " + ", ".join(plain(m.get("name", "?")) for m in members
                                             if isinstance(m, dict)))
    return "; ".join(parts)


#: Short formula of each value scaling (unet_core.preprocess), x = the image as decoded.
NORMALISATION_TEXT: dict[str, str] = {
    "unit": "x / full scale (255 for 8-bit, 65535 for 16-bit images): 0..1",
    "raw": "x as decoded (e.g. 0..255), unscaled: the model scales inside itself",
    "minmax": "(x − min) / (max − min) over the whole image: 0..1",
    "percentile": "(x − p_lo) / (p_hi − p_lo) clipped to 0..1, p_lo / p_hi the image's "
                  "{lo:g}th / {hi:g}th percentiles",
    "zscore": "(x − mean) / (std + 1e-7), one mean and std over all pixels and channels",
    "meanstd": "(x / full scale − mean_c) / std_c per channel c; mean {mean}, std {std}",
}
#: Card fields the editor sets (the rest of the card is kept).
EDITABLE = ("channel_order", "normalisation", "mean", "std", "percentiles", "fit", "classes",
            "foreground", "class_index", "threshold")


def normalisation_text(card: ModelCard) -> str:
    """'zscore: (x − mean) / (std + 1e-7), one mean …' for the card's value scaling."""
    rule = card.normalisation
    lo, hi = (card.percentiles or [1.0, 99.0])[:2]
    text = NORMALISATION_TEXT.get(rule, "").format(lo=lo, hi=hi, mean=card.mean, std=card.std)
    return f"{rule}: {text}" if text else rule


def fit_text(card: ModelCard) -> str:
    """How an image meets the network, in words (with the interpolation for ``resize``)."""
    if card.fit == "resize" and card.input_size:
        h, w = card.input_size
        return (f"resize: the whole image is resized to {h}x{w} (bilinear, half-pixel centres, "
                "no antialiasing, as OpenCV INTER_LINEAR), predicted in one pass, and the "
                "probabilities are resized back to the image's size (bilinear)")
    if card.input_size:
        h, w = card.input_size
        return (f"pad: images up to {h}x{w} are padded to it ({card.padding_mode}), larger ones "
                "tiled at full resolution with overlap; never resized")
    least = f", at least {card.min_size}x{card.min_size}" if card.min_size else ""
    return (f"pad: padded ({card.padding_mode}) to a multiple of {card.multiple_of}{least}, "
            "output cropped back; never resized")


def output_text(card: ModelCard) -> str:
    """'probability (softmax over 3 classes)', 'logits (the engine applies sigmoid)' …"""
    act = "sigmoid" if card.n_classes == 1 else f"softmax over {card.n_classes} classes"
    if card.output == "logits":
        return f"logits: no final activation; the engine applies {act}"
    return f"probability ({act} in the model)"


def classes_text(card: ModelCard) -> str:
    """'one map: salt (probability > threshold)' or '3: 0 background, 1 liver, 2 tumour;
    default 1 · liver'."""
    if card.n_classes < 2:
        return f"one map: {plain(card.foreground)} (foreground is probability > threshold)"
    names = ", ".join(f"{i} {plain(n)}" for i, n in enumerate(card.classes))
    return (f"{card.n_classes}: {names}; shown by default: {card.default_class} · "
            f"{plain(card.class_name(card.default_class))} (the label map is the argmax)")


def channels_text(card: ModelCard) -> str:
    """'3 (RGB)', '3 (BGR: OpenCV order)', '1 (gray; colour images as luma)', '4'."""
    c = card.channels
    if c == 1:
        return "1 (grayscale; colour images are converted to luma 0.299 R + 0.587 G + 0.114 B)"
    if c >= 3:
        order = card.channel_order.upper() + (", OpenCV's order" if card.channel_order == "bgr"
                                              else "")
        return f"{c} ({order}); grayscale images are replicated"
    return f"{c} (grayscale images are replicated)"


def layout_text(card: ModelCard) -> str:
    """The axis order of an ONNX model's input in words ('NCHW (batch, channels, height,
    width): images are transposed to it'); '' for a Keras model's card (no ``layout``)."""
    if card.layout == "nchw":
        return "NCHW (batch, channels, height, width): images are transposed to it"
    if card.layout == "nhwc":
        return "NHWC (batch, height, width, channels): images go in as they are"
    return ""


def spec_rows(card: ModelCard) -> list[tuple[str, str, str]]:
    """(field label, card field, value) of the input and output spec, in reading order (the
    axis order only for an ONNX model, whose card has a ``layout``)."""
    size = (f"{card.input_size[0]}x{card.input_size[1]} (fixed)" if card.input_size
            else card.input_spec)
    layout = [("Layout", "layout", layout_text(card))] if layout_text(card) else []
    return [
        ("Input size", "input_size", size),
        *layout,
        ("Channels", "channels", channels_text(card)),
        ("Normalisation", "normalisation", normalisation_text(card)),
        ("Fit", "fit", fit_text(card)),
        ("Output", "output", output_text(card)),
        ("Classes", "classes", classes_text(card)),
    ]


def _dims_text(value_info: Any) -> str:
    """'[1, 3, 256, 256]' or '[batch, 3, height, width]' (named dims by name, unknown '?'),
    as plain text (dim names come from the file)."""
    dims = [d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?")
            for d in value_info.type.tensor_type.shape.dim]
    return plain("[" + ", ".join(dims) + "]", 300)


def _tensor_text(graph: Any, name: str) -> str:
    """'input [1, 3, 256, 256]' of a graph input or output named ``name``."""
    for vi in [*graph.proto.graph.input, *graph.proto.graph.output]:
        if vi.name == name:
            return f"{plain(name, 100)} {_dims_text(vi)}"
    return plain(name, 100)


ENDS_WITH_PROBABILITY = ("Sigmoid", "Softmax")


def output_kind_text(graph: Any, card: ModelCard) -> str:
    """What the graph's last op makes (logits or probabilities), why, and what the engine
    does with it (per the card)."""
    act = "sigmoid" if card.n_classes == 1 else "softmax"
    last = plain(graph.last_op or "?", 60)
    if graph.last_op in ENDS_WITH_PROBABILITY:
        said = f"probabilities: the graph ends with {last}"
    else:
        said = f"logits: the graph ends with {last}, no Sigmoid or Softmax"
    said += (f"; the engine applies {act}" if card.output == "logits"
             else "; used as they are (the card says probability)")
    return said


def card_contradicts_graph(graph: Any, card: ModelCard) -> bool:
    """True when the card says probability but the graph ends in logits (or the reverse):
    the maps shown would not be probabilities."""
    ends_prob = graph.last_op in ENDS_WITH_PROBABILITY
    return (card.output == "probability") != ends_prob


def onnx_rows(graph: Any, card: ModelCard) -> list[tuple[str, str]]:
    """(field, value) rows of what an ONNX graph says: format, layout and why, batch, size,
    input and output tensors, output kind and why, how it runs."""
    proto = graph.proto
    opsets = plain(", ".join(f"{o.domain or 'ai.onnx'} {o.version}"
                             for o in proto.opset_import), 300)
    producer = " ".join(p for p in (proto.producer_name, proto.producer_version) if p)
    fmt = f"ONNX IR {proto.ir_version}, opset {opsets}" + (
        f", written by {plain(producer, 100)}" if producer else "")
    layout = graph.layout.upper() + f": {plain(graph.layout_reason, 400)}"
    if graph.output_layout != graph.layout:
        layout += f"; the output is {graph.output_layout.upper()}"
    if graph.batch is None:
        batch = "dynamic: any number of images per run"
    elif graph.batch == 1:
        batch = "fixed at 1: one image (or tile) per run"
    else:
        batch = (f"fixed at {graph.batch}: {graph.batch} images (or tiles) per run, a shorter "
                 "batch padded with empty images")
    if graph.height and graph.width:
        size = f"fixed {graph.height}x{graph.width}"
    else:
        size = (f"dynamic height and width: images are padded to a multiple of its stride "
                f"({graph.stride()})")
    return [
        ("Format", fmt),
        ("Layout", layout),
        ("Batch", batch),
        ("Input size", size),
        ("Input", _tensor_text(graph, graph.input_name)
         + f", {np.dtype(graph.input_dtype).name}, {graph.channels} channel"
         + ("s" if graph.channels != 1 else "")),
        ("Output", _tensor_text(graph, graph.output_name)
         + f", {graph.classes} channel" + ("s" if graph.classes != 1 else "")),
        ("Output kind", output_kind_text(graph, card)),
        ("Runs on", "ONNX Runtime: the file as it is (no export, no TensorFlow)"),
    ]


def onnx_section(loaded: Any, card: ModelCard) -> None:
    """The 'ONNX graph' table of an ONNX model (nothing for a Keras one), with a warning when
    the card's output kind contradicts the graph's last op."""
    if not is_onnx(loaded):
        return
    graph = as_graph(loaded)
    st.subheader("ONNX graph")
    st.table(pd.DataFrame([{"field": f, "value": v} for f, v in onnx_rows(graph, card)]
                          ).set_index("field"))
    if card_contradicts_graph(graph, card):
        st.warning(
            f"The card says the output is **{card.output}** but the graph ends with "
            f"{plain(graph.last_op or '?', 60)}: "
            + ("if that makes logits, the maps shown are not probabilities (set output to "
               "logits in the card file)" if card.output == "probability" else
               "the engine applies sigmoid or softmax a second time (set output to "
               "probability in the card file)") + ".")


def render(ctx: PageContext) -> None:
    """Draw the Model page for the model in ``ctx``."""
    bundle = ctx.bundle
    loaded = bundle.loaded
    card = loaded.card
    st.title(f"Model: {plain(card.name)}")
    st.caption(plain(card.description, 2000) if card.description
               else "No description in the model card.")
    if bundle.trusted:
        st.info(f"**Trusted model**: {plain(loaded.path.name if loaded.path else card.name)} "
                "is in the "
                "trusted models folder (UNET_TRUSTED_MODELS_DIR), so it was loaded with Keras "
                "safe_mode=False: its Lambda layers and custom code ran. Uploads are never "
                "trusted.")
    if bundle.edited:
        st.info("The card below is the one you applied in **Edit the card**: every page uses "
                "it. Download it and put it next to the model file to keep it.")
    elif not loaded.card_found:
        st.warning(
            f"No model card was found next to "
            f"{plain(loaded.path.name) if loaded.path else 'this model'}: the fields "
            f"{', '.join(card.inferred)} are *inferred* from the network. Check the "
            "normalisation, fit, classes and threshold (Edit the card, below) before trusting "
            "any number.")

    left, right = st.columns([3, 2])
    training = card.training or {}
    inferred = set(card.inferred)
    with left:
        st.subheader("Model card")
        what = (f"{card.n_classes} classes in {plain(card.domain)} images"
                if card.n_classes >= 2
                else f"{plain(card.foreground)} in {plain(card.domain)} images")
        fields: list[tuple[str, str, str]] = [("Segments", "", what)]
        fields += spec_rows(card)
        fields += [
            ("Preprocessing", "", plain(card.preprocessing, 2000)),
            ("Padding", "padding_mode", card.padding_mode),
            ("Recommended threshold", "threshold", f"{card.threshold:.2f}"),
            ("Minimum area", "", f"{card.min_area} px: smaller predicted masks are emptied"
             if card.min_area else "off (any predicted mask is kept)"),
            ("Test-time augmentation", "", "yes (flip)" if card.tta else "no"),
            ("Loaded", "", loaded_text(bundle)),
            ("Architecture", "", architecture_text(card.architecture or {})),
            ("Training data", "", dataset_name(training.get("data"))),
            ("Data terms", "", plain(training.get("terms") or "—")),
        ]
        if card.truth_inverted:
            fields.insert(-2, ("Ground-truth masks", "", "mark the other class; inverted "
                               "before scoring (the model's foreground is "
                               f"{plain(card.foreground)})"))
        table = pd.DataFrame(
            [{"field": label + (" (inferred)" if key and key in inferred else ""),
              "value": str(value)} for label, key, value in fields])
        st.table(table.set_index("field"))
        notes = {k: v for k, v in (card.notes or {}).items() if isinstance(v, str)}
        if notes and inferred:
            st.markdown("**Why the inferred values**\n" + "\n".join(
                f"- *{plain(field)}*: {plain(text, 1000)}" for field, text in notes.items()
                if field in inferred))
        onnx_section(loaded, card)
    with right:
        st.subheader("How to use")
        st.markdown(
            "1. Pick a model in the sidebar (or upload a `.keras` / `.h5`, an `.onnx` "
            "(e.g. from `torch.onnx.export`), or an architecture `.json` with its weights "
            "`.h5`).\n"
            "2. Check its card here (input channels, normalisation, fit, classes) and edit it "
            "if it is wrong.\n"
            "3. **Segment**: run it on a bundled sample or your own images; move the threshold "
            "(instant, in the browser); add a mask to get IoU, Dice and the error map.\n"
            "4. **Evaluate**: score a whole data set (bundled, a server folder, or a .zip of "
            "`images/` + `masks/`), find the best threshold and the worst images.\n"
            "5. **Filters** and **Activations**: look at the learned kernels and at what each "
            "layer responds to.")
        st.page_link(ctx.pages["segment"], label="Go to Segment")
        st.page_link(ctx.pages["evaluate"], label="Go to Evaluate")
        st.download_button("Download card (JSON)", card_json(card),
                           file_name=bundle.card_file_name, mime="application/json",
                           key="model_card_download",
                           help=f"Save it as {plain(bundle.card_file_name)} next to the model file "
                           "and the model loads with it.")

    card_editor_ui(bundle)

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

    onnx = is_onnx(loaded)
    st.subheader("Layers (graph nodes)" if onnx else "Layers")
    with run_safely(what="building the layer table"):
        rows, total, trainable = engine.layer_rows(bundle.network_key, loaded)
        fh, fw = card.input_size or (max(card.min_size, 128),) * 2
        flops = ""
        with run_safely(what="counting FLOPs"):
            flops = (f" · **{engine.gflop(bundle.network_key, loaded, fh, fw):.2f}** GFLOP per "
                     f"{fh}x{fw} image (multiply-add = 2)")
        st.markdown(f"**{total:,}** parameters ({trainable:,} trainable) · **{len(rows):,}** "
                    f"{'nodes' if onnx else 'layers'}{flops}")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", height=360)
        st.caption("Output shapes read H x W relative to the input (a fully convolutional "
                   "network accepts any size that pads to its stride)."
                   + (" One row per node of the ONNX graph: output shapes from ONNX shape "
                      "inference in the graph's own axis order (channels first for an NCHW "
                      "node), parameters from its weight initializers." if onnx else ""))


def loaded_text(bundle: engine.ModelBundle) -> str:
    """How the model file was loaded, in words (the 'Loaded' row of the card table)."""
    if is_onnx(bundle.loaded):
        return ("ONNX graph, checked (external data only from its own folder, no custom "
                "operator domains, node and weight caps) and run as it is on ONNX Runtime: "
                "an ONNX file holds no Python code")
    if bundle.trusted:
        return "trusted: safe_mode=False (UNET_TRUSTED_MODELS_DIR)"
    return "safe_mode=True (no Lambda layers or custom code)"


def card_json(card: ModelCard) -> str:
    """The card as the pretty JSON a card file holds."""
    return json.dumps(card.to_dict(), indent=2) + "\n"


# --------------------------------------------------------------------------- card editor

_EDIT_ERROR = "ce_error"


def _numbers(text: str, field: str) -> list[float] | None:
    """'0.485, 0.456, 0.406' -> [0.485, 0.456, 0.406]; '' -> None; ModelSpecError otherwise."""
    parts = [p for p in str(text).replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    if not parts:
        return None
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise ModelSpecError(f"{field} = {text.strip()!r} is not a list of numbers (accepted: "
                             "one number per channel, separated by commas, on the 0..1 "
                             "scale)") from None


def edited_dict(card: ModelCard, values: dict[str, Any]) -> dict[str, Any]:
    """The whole card as a dict with the editor's ``values`` applied (text fields parsed);
    the fields set are no longer listed as inferred. Raises ModelSpecError on unparseable
    text (the card's own checks come after, in :func:`app.engine.edited_card`)."""
    data = card.to_dict()
    data["channel_order"] = values["channel_order"]
    data["normalisation"] = values["normalisation"]
    if values["normalisation"] == "meanstd":
        data["mean"] = _numbers(values.get("mean", ""), "mean")
        data["std"] = _numbers(values.get("std", ""), "std")
    if values["normalisation"] == "percentile":
        data["percentiles"] = [float(values["p_lo"]), float(values["p_hi"])]
    data["fit"] = values["fit"]
    data["threshold"] = round(float(values["threshold"]), 4)
    if card.n_classes >= 2:
        names = [n.strip() for n in str(values["classes"]).splitlines() if n.strip()]
        data["classes"] = names
        data["class_index"] = int(values["class_index"])
    else:
        data["foreground"] = str(values["foreground"]).strip() or card.foreground
    data["inferred"] = [f for f in card.inferred if f not in EDITABLE]
    data["notes"] = {k: v for k, v in (card.notes or {}).items() if k not in EDITABLE}
    return data


def _editor_values(card: ModelCard) -> dict[str, Any]:
    """The editor's widget values for ``card`` (session keys ``ce_<field>``)."""
    lo, hi = (card.percentiles or [1.0, 99.0])[:2]
    return {
        "ce_channel_order": card.channel_order, "ce_normalisation": card.normalisation,
        "ce_mean": ", ".join(f"{v:g}" for v in card.mean or []),
        "ce_std": ", ".join(f"{v:g}" for v in card.std or []),
        "ce_p_lo": float(lo), "ce_p_hi": float(hi), "ce_fit": card.fit,
        "ce_classes": "\n".join(card.classes), "ce_foreground": card.foreground,
        "ce_class_index": int(card.default_class),
        "ce_threshold": round(float(card.threshold), 2),
    }


def _apply(bundle: engine.ModelBundle) -> None:
    """Apply button: check the edited card against the network and make it the card in use."""
    from app.widgets import card_edits

    ss = st.session_state
    values = {k[3:]: v for k, v in ss.items() if isinstance(k, str) and k.startswith("ce_")}
    try:
        data = edited_dict(bundle.card, values)
        card = engine.edited_card(bundle, data)
    except UnetCoreError as exc:
        ss[_EDIT_ERROR] = one_line(str(exc))
        return
    ss.pop(_EDIT_ERROR, None)
    card_edits()[bundle.network_key] = card.to_dict()


def _reset(bundle: engine.ModelBundle) -> None:
    """Reset button: back to the card the model file came with (or the inferred one)."""
    from app.widgets import card_edits

    card_edits().pop(bundle.network_key, None)
    st.session_state.pop(_EDIT_ERROR, None)


def card_editor_ui(bundle: engine.ModelBundle) -> None:
    """'Edit the card': the input spec, classes and threshold of the model in use.

    Channels are read from the network (read-only). **Apply** checks the card against the
    network (:func:`app.engine.edited_card`: a one-line error names a bad value) and makes it
    the card of every page; caches key on the card, so results follow it."""
    ss = st.session_state
    card = bundle.card
    if ss.get("ce_for") != bundle.key:  # a new model or card: the editor starts from it
        ss["ce_for"] = bundle.key
        ss.update(_editor_values(card))
    else:  # keys dropped while the page was not drawn
        for key, value in _editor_values(card).items():
            ss.setdefault(key, value)
    with st.expander("Edit the card" + (" (edited)" if bundle.edited else ""),
                     expanded=not bundle.loaded.card_found or bundle.edited):
        st.caption("Describe how the model was trained to be fed; **Apply** re-checks the card "
                   "against the network, and every page then uses it. Channels come from the "
                   "network.")
        c1, c2, c3 = st.columns(3)
        c1.number_input("Input channels", value=int(card.channels), disabled=True,
                        key=f"ce_channels_{bundle.network_key}",
                        help="Read from the network's input layer; images are mapped to them.")
        c2.selectbox("Channel order", list(CHANNEL_ORDERS), key="ce_channel_order",
                     format_func=str.upper, disabled=card.channels < 3,
                     help="BGR for models trained on OpenCV (cv2.imread) images.")
        fits = list(FITS) if card.input_size else ["pad"]
        if ss.get("ce_fit") not in fits:
            ss["ce_fit"] = fits[0]
        c3.selectbox("Fit", fits, key="ce_fit",
                     format_func=lambda f: {"pad": "pad (tile / pad, never resize)",
                                            "resize": "resize (bilinear, to the input size)"}[f],
                     help="resize: the whole image resized to the fixed input (bilinear) and the "
                     "probabilities resized back; pad: images padded to the stride, a fixed-size "
                     "network tiled over the full-resolution image."
                     + ("" if card.input_size else " This network is fully convolutional: "
                        "pad only."))
        n1, n2 = st.columns([1, 2])
        rule = n1.selectbox("Normalisation", list(NORMALISATIONS), key="ce_normalisation",
                            help="How pixel values are scaled before the network.")
        n2.caption(f"**{rule}**: " + NORMALISATION_TEXT[rule].format(
            lo=ss.get("ce_p_lo", 1.0), hi=ss.get("ce_p_hi", 99.0), mean="mean_c", std="std_c"))
        if rule == "meanstd":
            m1, m2 = st.columns(2)
            m1.text_input("Mean per channel (0..1 scale)", key="ce_mean",
                          placeholder="0.485, 0.456, 0.406")
            m2.text_input("Std per channel (0..1 scale)", key="ce_std",
                          placeholder="0.229, 0.224, 0.225")
        if rule == "percentile":
            p1, p2 = st.columns(2)
            p1.number_input("Low percentile", 0.0, 100.0, step=0.5, key="ce_p_lo")
            p2.number_input("High percentile", 0.0, 100.0, step=0.5, key="ce_p_hi")
        k1, k2, k3 = st.columns([2, 1, 1])
        if card.n_classes >= 2:
            k1.text_area(f"Class names ({card.n_classes}, one per line, in output order)",
                         key="ce_classes", height=68 + 22 * min(card.n_classes, 6))
            names = [n.strip() for n in str(ss.get("ce_classes", "")).splitlines() if n.strip()]
            if ss.get("ce_class_index") not in range(card.n_classes):
                ss["ce_class_index"] = int(card.default_class)
            k2.selectbox("Default class", list(range(card.n_classes)), key="ce_class_index",
                         format_func=lambda i: f"{i} · {display_text(names[i])}" if i < len(names)
                         else str(i),
                         help="The class shown, thresholded and scored by default.")
        else:
            k1.text_input("Foreground name", key="ce_foreground",
                          help="What the one output map marks (e.g. 'lane', 'nucleus').")
        k3.number_input("Threshold", 0.0, 1.0, step=0.01, key="ce_threshold",
                        help="Recommended threshold: foreground is probability > threshold.")
        row = st.container(horizontal=True)
        row.button("Apply", key="ce_apply", type="primary", on_click=_apply, args=(bundle,))
        row.button("Reset to the file's card", key="ce_reset", on_click=_reset, args=(bundle,),
                   disabled=not bundle.edited)
        error = ss.get(_EDIT_ERROR)
        if error:
            st.error(plain(error))
