"""Calibration: pick a trained model's threshold and minimum-area rule on its validation split.

Training does this at its end (:func:`unet_core.train.train`); :func:`calibrate_model` does it
again for a model that already exists -- after the selection rule changed, or to pick by another
metric -- without retraining. It needs the training split (``NAME.split.json``, which train and
ensemble write next to the model), so the threshold is chosen on the validation images and the
held-out test images are scored once at it, never tuned on.

The model file is never touched; only its card (``NAME.json``) is rewritten, atomically, with
the previous threshold, minimum area and validation figures kept under
``training["calibration"]["previous"]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UnetCoreError
from .evaluate import evaluate_pairs
from .inference import Segmenter
from .io import find_pairs
from .metrics import MIN_AREA_CANDIDATES, SweepResult, check_select_metric, select_threshold
from .model import LoadedModel, ModelCard, card_path_for, load_model
from .onnx_graph import is_onnx


def read_split(path: str | Path) -> dict[str, list[str]]:
    """A training run's ``split.json`` -> {"train"|"val"|"test": [names]}, checked."""
    try:
        split = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: JSON and UTF-8 decoding errors
        raise UnetCoreError(f"{path}: not a readable split file ({exc}); accepted: the "
                            "split.json a training run writes in its run folder") from None
    if not isinstance(split, dict) or not all(
            isinstance(split.get(k), list) for k in ("train", "val", "test")):
        raise UnetCoreError(f"{path}: a split file holds lists 'train', 'val' and 'test'")
    if not split["val"]:
        raise UnetCoreError(f"{path}: the validation list is empty; the threshold is chosen on it")
    return split


def check_held_out(models: Sequence[LoadedModel], split: dict[str, list[str]]) -> None:
    """Each model's held-out list (NAME.heldout.txt next to it), if any, must be the split's
    test list; otherwise the model may have trained on images it would be scored on."""
    test = set(split["test"])
    for m in models:
        name = (m.card.training or {}).get("held_out_names")
        if not name or m.path is None:
            continue
        path = m.path.parent / name
        if not path.is_file():
            continue
        held = {line.strip() for line in path.read_text().splitlines() if line.strip()}
        if held != test:
            raise UnetCoreError(
                f"{m.path.name}: its held-out images ({path.name}, {len(held)}) are not this "
                f"split's test images ({len(test)}); accepted: models trained on one split, the "
                "one in this split.json (same split_seed and fractions)")


def split_sweeps(seg: Segmenter, data: str | Path, split: dict[str, list[str]], *,
                 invert: bool, select_metric: str) -> tuple[SweepResult, SweepResult | None]:
    """Sweeps (minimum area 0, counts kept) of the split's validation and test images."""
    pairs = {p.name: p for p in find_pairs(data, require_masks=True)}

    def sweep(names: Sequence[str]) -> SweepResult:
        missing = [n for n in names if n not in pairs]
        if missing:
            raise UnetCoreError(f"{len(missing)} split images are not in {data} (first: "
                                f"{missing[0]}); accepted: the folder the model trained on")
        return evaluate_pairs(seg, [pairs[n] for n in names], invert_masks=invert,
                              select_metric=select_metric, min_area=0).sweep

    return sweep(split["val"]), (sweep(split["test"]) if split["test"] else None)


def split_metrics(val: SweepResult, test: SweepResult | None, select_metric: str,
                  min_areas: Sequence[int] = MIN_AREA_CANDIDATES
                  ) -> tuple[float, int, dict[str, Any]]:
    """The threshold (a 0.01 grid value) and minimum area picked together on validation
    (:func:`~unet_core.metrics.select_threshold`; ``min_areas=(0,)`` picks the threshold alone)
    and the card's metrics record: validation and held-out test summaries with both, the
    test's own best threshold, and -- when an area was picked -- the figures without it."""
    t, area, val_k = select_threshold(val, select_metric, min_areas)
    threshold = round(t, 2)
    metrics: dict[str, Any] = {"selected_by": select_metric, "min_area": area,
                               "validation": {**val_k.summary_at(threshold), "n": len(val.names)}}
    test_k = test.with_min_area(area) if test is not None else None
    if test_k is not None:
        metrics["test"] = {**test_k.summary_at(threshold), "n": len(test_k.names),
                           "best_threshold_on_test": test_k.best_threshold(select_metric)}
    if area:
        val_0 = val.with_min_area(0)
        t0 = round(val_0.best_threshold(select_metric), 2)
        metrics["without_min_area"] = {"threshold": t0, "validation": val_0.summary_at(t0)}
        if test is not None:
            metrics["without_min_area"]["test"] = test.with_min_area(0).summary_at(t0)
    return threshold, area, metrics


def write_card_atomically(card: ModelCard, path: Path) -> None:
    """Write ``card`` to ``path`` through a temporary file, so a failure leaves the old card."""
    tmp = path.with_name(path.name + ".tmp")
    card.save(tmp)
    os.replace(tmp, path)


def split_path_for(model_path: str | Path) -> Path:
    """``models/salt.keras`` -> ``models/salt.split.json`` (written by train and ensemble)."""
    return Path(model_path).with_suffix(".split.json")


def calibrate_model(model_path: str | Path, data: str | Path,
                    split_path: str | Path | None = None, *,
                    select_metric: str | None = None, select_min_area: bool = True,
                    command: str = "") -> tuple[ModelCard, ModelCard]:
    """Re-pick ``model_path``'s threshold (and minimum area) on the split's validation images,
    score its test images at them, and rewrite the model's card. Returns (old, new) cards.

    Args:
        model_path: a ``.keras``/``.h5``/``.onnx`` model with its card (``NAME.json``).
        data: the images/ + masks/ folder it trained on.
        split_path: the training split (``NAME.split.json`` next to the model, the default,
            or the run's ``RUN_DIR/split.json``).
        select_metric: ``tgs_metric``, ``mean_iou`` or ``mean_dice`` (default: the metric
            that picked the card's threshold, ``metrics["selected_by"]``, else ``tgs_metric``).
        select_min_area: also pick a minimum area from
            :data:`~unet_core.metrics.MIN_AREA_CANDIDATES` (False: the rule is turned off).
        command: the command line, recorded in the card.
    """
    if select_metric is not None:
        check_select_metric(select_metric)
    loaded = load_model(model_path)
    if not loaded.card_found:
        raise UnetCoreError(f"{model_path}: no model card ({card_path_for(model_path).name}) "
                            "next to it; calibrate rewrites a trained model's card")
    if select_metric is None:
        select_metric = (loaded.card.metrics or {}).get("selected_by") or "tgs_metric"
        check_select_metric(select_metric)
    if split_path is None:
        split_path = split_path_for(model_path)
        if not split_path.is_file():
            raise UnetCoreError(f"{model_path}: no --split given and no {split_path.name} next "
                                "to it; accepted: the training run's split.json")
    split = read_split(split_path)
    check_held_out([loaded], split)
    old = loaded.card
    # a Keras model runs in TensorFlow (no export for one sweep); an ONNX file as it is
    seg = Segmenter(loaded, batch_size=32,
                    backend="onnxruntime" if is_onnx(loaded) else "tensorflow")
    val, test = split_sweeps(seg, data, split, invert=bool(old.truth_inverted),
                             select_metric=select_metric)
    new = ModelCard.from_dict(old.to_dict())
    new.threshold, new.min_area, new.metrics = split_metrics(
        val, test, select_metric, MIN_AREA_CANDIDATES if select_min_area else (0,))
    previous: dict[str, Any] = {"threshold": old.threshold, "min_area": old.min_area,
                                "validation": (old.metrics or {}).get("validation"),
                                "test": (old.metrics or {}).get("test")}
    new.training = {**(old.training or {}),
                    "calibration": {"command": command, "split": str(split_path),
                                    "previous": previous}}
    if Path(split_path).resolve() == split_path_for(model_path).resolve():
        new.training["split_names"] = Path(split_path).name
    write_card_atomically(new, card_path_for(model_path))
    return old, new
