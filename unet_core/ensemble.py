"""Ensembles: several trained U-Nets as one model that averages their outputs.

Members trained on the *same* train/validation/test split (``TrainConfig.split_seed``) with
different initialisations and augmentation orders make different mistakes; the mean of their
probability maps is usually better than any one of them. The ensemble is a single, flat Keras
model (each member's layers prefixed ``m1_``, ``m2_``, ...; a final ``ensemble_mean`` layer), so
it loads, exports to ONNX and is introspected like any other model; its card records every
member's card and training command.

The recommended threshold (and minimum-area rule) is chosen on the members' validation split, and
the held-out test split is scored once, exactly as :func:`unet_core.train.train` does for a single
model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .calibrate import (
    check_held_out,
    read_split,
    split_metrics,
    split_sweeps,
    write_card_atomically,
)
from .errors import UnetCoreError
from .inference import Segmenter
from .metrics import MIN_AREA_CANDIDATES, check_select_metric
from .model import ModelCard, from_keras, load_model

# Card fields that must agree for members to be averaged (how they are fed and read).
MATCHING_FIELDS: tuple[str, ...] = ("input_size", "multiple_of", "min_size", "channels",
                                    "normalisation", "padding_mode", "output", "truth_inverted")


def ensemble_model(models: Sequence[Any], name: str = "ensemble") -> Any:
    """One flat Keras model averaging the outputs of ``models`` (two or more).

    Every member must map (N, H, W, C) float32 to (N, H, W, 1) float32 with the same C. The
    members' weights are copied; the members themselves are left unchanged. Layer names are
    prefixed ``m1_``, ``m2_``, ... in the order given.
    """
    import keras

    if len(models) < 2:
        raise UnetCoreError(f"an ensemble needs at least 2 members, got {len(models)}")
    channels = {int(m.input_shape[-1]) for m in models}
    if len(channels) != 1:
        raise UnetCoreError(f"members take different input channels {sorted(channels)}; "
                            "accepted: members with the same input")
    shapes = {tuple(m.input_shape[1:3]) for m in models}
    spatial = shapes.pop() if len(shapes) == 1 else (None, None)
    image = keras.Input((*spatial, channels.pop()), name="image")
    outputs = []
    for k, member in enumerate(models, start=1):
        prefix = f"m{k}_"

        def rename(layer: Any, prefix: str = prefix) -> Any:
            cfg = layer.get_config()
            cfg["name"] = prefix + layer.name
            return layer.__class__.from_config(cfg)

        clone = keras.models.clone_model(member, input_tensors=image, clone_function=rename)
        for layer in member.layers:
            if layer.weights:
                clone.get_layer(prefix + layer.name).set_weights(layer.get_weights())
        out = clone.output
        outputs.append(out[0] if isinstance(out, list | tuple) else out)
    mean = keras.layers.Average(name="ensemble_mean")(outputs)
    return keras.Model(image, mean, name=name)


def check_members(cards: Sequence[ModelCard], labels: Sequence[str]) -> None:
    """Raise UnetCoreError naming every card field in :data:`MATCHING_FIELDS` that differs."""
    bad = []
    for key in MATCHING_FIELDS:
        values = [getattr(c, key) for c in cards]
        if any(v != values[0] for v in values[1:]):
            bad.append(f"{key} (" + ", ".join(f"{lab}: {v}" for lab, v in
                                              zip(labels, values, strict=True)) + ")")
    if bad:
        raise UnetCoreError("members are fed or read differently, so their outputs cannot be "
                            "averaged: " + "; ".join(bad))


def build_ensemble(member_paths: Sequence[str | Path], out: str | Path, data: str | Path,
                   split_path: str | Path, *, name: str | None = None,
                   select_metric: str = "tgs_metric", select_min_area: bool = True,
                   command: str = "") -> ModelCard:
    """Average trained members into one model; pick its threshold on validation, score the
    held-out test split, and write ``out`` (.keras), its card and ``NAME.heldout.txt``.

    Args:
        member_paths: two or more ``.keras`` models with cards, trained on one split.
        out: output model path; the card goes next to it (``.json``).
        data: the images/ + masks/ folder the members trained on.
        split_path: the members' ``RUN_DIR/split.json``.
        name: the ensemble's name (default: the output file's stem).
        select_metric: metric that picks the threshold (``tgs_metric``, ``mean_iou``,
            ``mean_dice``).
        select_min_area: also pick a minimum-area rule on validation (see
            :func:`unet_core.metrics.select_threshold`).
        command: the command line, recorded in the card.
    """
    check_select_metric(select_metric)
    out = Path(out)
    if out.suffix != ".keras":
        raise UnetCoreError(f"{out}: the ensemble is written as a .keras file")
    if any(Path(p).resolve() == out.resolve() for p in member_paths):
        raise UnetCoreError(f"{out}: the output would overwrite a member; choose another path")
    onnx = [Path(p).name for p in member_paths if Path(p).suffix.lower() == ".onnx"]
    if onnx:
        raise UnetCoreError(f"{', '.join(onnx)}: an ensemble is built as one Keras model; "
                            "accepted: .keras or .h5 members")
    members = [load_model(p) for p in member_paths]
    labels = [Path(p).name for p in member_paths]
    check_members([m.card for m in members], labels)
    split = read_split(split_path)
    check_held_out(members, split)
    first = members[0].card
    name = name or out.stem
    model = ensemble_model([m.model for m in members], name=name)

    card = ModelCard(**{**first.to_dict(), "name": name, "inferred": []})
    card.tta = all(m.card.tta for m in members)
    seg = Segmenter(from_keras(model, card, name), batch_size=32, backend="tensorflow")
    val, test = split_sweeps(seg, data, split, invert=bool(first.truth_inverted),
                             select_metric=select_metric)
    card.threshold, card.min_area, card.metrics = split_metrics(
        val, test, select_metric, MIN_AREA_CANDIDATES if select_min_area else (0,))
    kinds = {m.card.architecture.get("type", "U-Net") for m in members}
    card.architecture = {
        "type": f"ensemble: mean of {len(members)} " + (kinds.pop() + "s" if len(kinds) == 1
                                                        else "networks"),
        "parameters": int(model.count_params()),
        "members": [{"name": m.card.name, **m.card.architecture} for m in members],
    }
    first_training = first.training or {}
    card.training = {
        "data": str(data), "terms": first_training.get("terms", ""),
        "pairs": first_training.get("pairs"),
        "split": {"train": len(split["train"]), "val": len(split["val"]),
                  "test": len(split["test"]),
                  "seed": (first_training.get("split") or {}).get("seed")},
        "members": [{"name": m.card.name, "file": lab,
                     "validation": (m.card.metrics or {}).get("validation"),
                     "test": (m.card.metrics or {}).get("test"),
                     **(m.card.training or {})} for m, lab in zip(members, labels, strict=True)],
        "command": command,
        "held_out_names": out.with_suffix(".heldout.txt").name,
        "split_names": out.with_suffix(".split.json").name,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    write_card_atomically(card, out.with_suffix(".json"))
    out.with_suffix(".heldout.txt").write_text("\n".join(split["test"]) + "\n")
    out.with_suffix(".split.json").write_text(json.dumps(split) + "\n")
    return card
