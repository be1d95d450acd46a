"""Command line: ``python -m unet_core predict|evaluate|inspect|explain|compare|train|ensemble|
calibrate``.

Every command has ``--help``. User errors (bad file, bad folder, bad model, bad option) print one
line ``error: ...`` on stderr and exit with status 2; nothing is written over an input file.

``predict``, ``evaluate`` and ``inspect`` share the model options: ``--model`` (.keras, .h5, an
architecture .json with ``--weights W.h5``, or an ONNX graph .onnx, e.g. from
``torch.onnx.export``, run as it is on ONNX Runtime), ``--card CARD.json`` (a card kept apart
from the model), ``--trust-model`` (Keras safe_mode off) and the card overrides ``--fit``,
``--normalisation``, ``--channel-order``, ``--mean``/``--std`` and ``--class``, applied to the
model card and checked like a card file; so does ``explain`` (Seg-Grad-CAM or gradient saliency
of a region; Keras models). ``compare`` takes ``--model`` twice (each model with its own card)
and reports paired bootstrap CIs and Wilcoxon p-values of B - A.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from .backends import BACKENDS  # noqa: E402
from .errors import UnetCoreError  # noqa: E402
from .metrics import SELECT_METRICS  # noqa: E402
from .padding import PAD_MODES  # noqa: E402
from .preprocess import CHANNEL_ORDERS, FITS, NORMALISATIONS  # noqa: E402

EXIT_USER_ERROR = 2
#: the longest file name most file systems accept, in bytes
MAX_NAME_BYTES = 255
BACKEND_HELP = ("inference backend: auto (default: ONNX Runtime on a cached export, checked "
                "against Keras; TensorFlow if that is unavailable), onnxruntime, tensorflow or "
                "onnxruntime-int8 (opt-in: the export quantised to int8, calibrated on the "
                "model's validation split or --int8-calibration, refused when its IoU moves by "
                "more than 0.005); env UNET_BACKEND sets the default. A .onnx model always runs "
                "on ONNX Runtime")
INT8_CALIBRATION_HELP = ("with --backend onnxruntime-int8: a folder of calibration images (or "
                         "DIR/images + DIR/masks), at most 200 used (default: "
                         "$UNET_INT8_CALIBRATION, else the model's validation split)")


def _threshold(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; accepted: 0..1") from None
    if not 0.0 <= t <= 1.0:
        raise argparse.ArgumentTypeError(f"{t} is outside 0..1")
    return t


def _min_area(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number; accepted: pixels >= 0 (0 = off)") from None
    if k < 0:
        raise argparse.ArgumentTypeError(f"{k} is negative; accepted: pixels >= 0 (0 = off)")
    return k


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of numbers; accepted: one number per channel, comma "
            "separated, on the 0..1 scale, e.g. 0.485,0.456,0.406") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: accepted: finite numbers")
    return values


def _batch_size(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: accepted: a whole number >= 1")
    return n


def _window(text: str) -> tuple[float, float]:
    try:
        c, w = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: accepted: CENTRE,WIDTH, e.g. 40,400 (a CT soft-tissue window)") from None
    if not (math.isfinite(c) and math.isfinite(w)) or w <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: accepted: finite CENTRE and WIDTH > 0")
    return c, w


def _byte(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 237:
        raise argparse.ArgumentTypeError(
            f"{text!r}: accepted: a trace-header byte position 1..237 (e.g. 189, 193)")
    return n


def _index(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: accepted: a whole number >= 0")
    return n


def _volume_options(p: argparse.ArgumentParser) -> None:
    """Options of a volume input (SEG-Y, NIfTI, DICOM), shared by predict and evaluate."""
    g = p.add_argument_group("volume input (.sgy/.segy, .nii/.nii.gz, .dcm or a DICOM folder)")
    g.add_argument("--axis", help="slice along this axis: inline, crossline or depth (SEG-Y; "
                   "default inline), axial, coronal or sagittal (NIfTI; default axial), slice, "
                   "row or column (DICOM; default slice)")
    g.add_argument("--inline-byte", type=_byte, default=189,
                   help="SEG-Y trace-header byte of the inline number (default 189)")
    g.add_argument("--crossline-byte", type=_byte, default=193,
                   help="SEG-Y trace-header byte of the crossline number (default 193)")
    g.add_argument("--time-index", type=_index,
                   help="the volume of a 4-D NIfTI to segment (default: the only one)")
    g.add_argument("--window", type=_window, metavar="C,W",
                   help="DICOM display window centre,width (default: the file's VOI LUT)")


MIN_AREA_HELP = ("minimum-area rule: a mask with fewer foreground pixels is emptied (0 = off; "
                 "default: the model card's)")
SELECT_MIN_AREA_HELP = ("also pick a minimum-area rule on validation, 0 unless it helps "
                        "(default: on)")


def _engine_options(p: argparse.ArgumentParser, *, batch_size: bool) -> None:
    """--engine local|ray and the Ray options (unet_core.ray_engine)."""
    g = p.add_argument_group("engine (--engine ray: a Ray Data pipeline, this machine or a "
                             "cluster; pip install -r requirements-ray.txt)")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default): this process; ray: read/decode in Ray tasks, "
                   "predict in a pool of actors (each loads the model once), same outputs")
    g.add_argument("--address", metavar="auto|ray://HOST:PORT",
                   help="join this Ray cluster (default: start a local Ray with every core)")
    g.add_argument("--workers", type=_batch_size, metavar="N",
                   help="predicting actors (default: one per CPU, one CPU left for reading)")
    if batch_size:
        g.add_argument("--batch-size", type=_batch_size, default=32,
                       help="images per Ray batch (default 32)")


def _model_options(p: argparse.ArgumentParser) -> None:
    """The model options shared by predict, evaluate and inspect."""
    p.add_argument("--model", required=True,
                   help=".keras, .h5 or .onnx model (its card: NAME.json next to it), or an "
                   "architecture .json (model.to_json()) with --weights")
    p.add_argument("--weights", metavar="W.h5",
                   help="the weights of an architecture --model arch.json (Keras 2 "
                   "save_weights .h5, or Keras 3 .weights.h5)")
    p.add_argument("--card", metavar="CARD.json",
                   help="model card to use instead of the one next to the model; fields it "
                   "leaves out come from the network")
    p.add_argument("--trust-model", action="store_true",
                   help="load with Keras safe_mode off, allowing Lambda layers and custom "
                   "classes: Python code in the file may run. Only for files you trust (no "
                   "effect on a .onnx model, which holds no code)")
    g = p.add_argument_group("card overrides (applied to the model card, then checked)")
    g.add_argument("--fit", choices=FITS,
                   help="pad: pad to the stride (tile a fixed-size network); resize: resize the "
                   "whole image to the network's fixed input and the probabilities back")
    g.add_argument("--normalisation", choices=NORMALISATIONS, help="value scaling")
    g.add_argument("--channel-order", choices=CHANNEL_ORDERS,
                   help="order of the first three channels (bgr: OpenCV-trained models)")
    g.add_argument("--mean", type=_floats, metavar="A,B,C",
                   help="per-channel mean on the 0..1 scale (implies --normalisation meanstd)")
    g.add_argument("--std", type=_floats, metavar="A,B,C",
                   help="per-channel std on the 0..1 scale (implies --normalisation meanstd)")
    g.add_argument("--class", dest="class_", metavar="K",
                   help="class index or name to threshold and score (default: the card's; "
                   "for a softmax the first class after the background)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for all sub-commands."""
    p = argparse.ArgumentParser(
        prog="python -m unet_core",
        description="U-Net Explorer engine: segment images, score models, look inside them.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pr = sub.add_parser("predict", help="segment images; writes NAME_mask.png and NAME_prob.npy",
                        description="Segment image files or folders of images. For each input "
                        "NAME.ext writes OUT/NAME_prob.npy (float32 HxW probabilities of the "
                        "chosen class, or HxWxK of every class with --all-classes), "
                        "OUT/NAME_mask.png (that class at the threshold, 0/255) and, for a "
                        "K-class model, OUT/NAME_labels.png (the argmax label map: a palette "
                        "PNG whose pixel indices are class indices). Prints the preprocessing used "
                        "(and, for a model without a card, why each inferred setting was "
                        "chosen). Never overwrites an input file. Exit status 1 when an input "
                        "failed (each failure is reported and the others go on). A volume "
                        "(SEG-Y, NIfTI, DICOM) is segmented slice by slice along --axis and "
                        "written back in its own format and geometry: OUT/NAME_prob.sgy + "
                        "OUT/NAME_mask.sgy for SEG-Y, OUT/NAME_prob.nii.gz + "
                        "OUT/NAME_mask.nii.gz for NIfTI and DICOM.")
    _model_options(pr)
    pr.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    pr.add_argument("--out", required=True, help="output folder (created if missing)")
    pr.add_argument("--all-classes", action="store_true",
                    help="NAME_prob.npy holds every class: float32 HxWxK")
    pr.add_argument("--threshold", type=_threshold, help="default: the model card's")
    pr.add_argument("--min-area", type=_min_area, help=MIN_AREA_HELP)
    pr.add_argument("--padding", choices=PAD_MODES, help="default: the model card's")
    pr.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="flip test-time augmentation (default: the model card's)")
    pr.add_argument("--backend", choices=BACKENDS, default=None, help=BACKEND_HELP)
    pr.add_argument("--int8-calibration", metavar="DIR", help=INT8_CALIBRATION_HELP)
    _engine_options(pr, batch_size=True)
    _volume_options(pr)

    ev = sub.add_parser("evaluate", help="score a model on a folder (or .zip) of pairs",
                        description="Score a model on DIR/images/NAME + DIR/masks/NAME pairs (or a "
                        ".zip holding such a folder). Binary masks (default): the chosen class's "
                        "probability map, metrics at the card's threshold and a sweep of 101 "
                        "thresholds for the best one. Label masks (--labels; pixel values = "
                        "class indices, or a palette PNG): per-class IoU and Dice of the argmax "
                        "label map, their mean over all classes, and pixel accuracy.")
    _model_options(ev)
    ev.add_argument("--data", required=True, help="folder with images/ and masks/, or a .zip; "
                    "or a volume (with --labels-volume)")
    ev.add_argument("--labels", action="store_true",
                    help="masks are label masks (pixel values = class indices, or a palette "
                    "PNG): score every class")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--threshold", type=_threshold, help="default: the model card's")
    ev.add_argument("--min-area", type=_min_area, help=MIN_AREA_HELP)
    ev.add_argument("--padding", choices=PAD_MODES, help="default: the model card's")
    ev.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None)
    ev.add_argument("--names", help="text file of image names (one per line) to evaluate only")
    ev.add_argument("--select-metric", "--select", dest="select_metric", default=None,
                    choices=tuple(SELECT_METRICS),
                    help="metric that picks the best threshold (default: the card's: the one "
                    "training used, else tgs_metric for seismic and mean_iou otherwise)")
    ev.add_argument("--invert-masks", action=argparse.BooleanOptionalAction, default=None,
                    help="score against the complement of each mask (default: the model card's "
                    "truth_inverted, true for em_membrane, whose ISBI masks mark cell interiors)")
    ev.add_argument("--per-image", metavar="CSV", help="also write per-image results to CSV")
    ev.add_argument("--batch-size", type=_batch_size, default=32)
    ev.add_argument("--backend", choices=BACKENDS, default=None, help=BACKEND_HELP)
    ev.add_argument("--int8-calibration", metavar="DIR", help=INT8_CALIBRATION_HELP)
    ev.add_argument("--labels-volume", metavar="LABELS",
                    help="with a volume --data: the label volume of the same geometry (voxel "
                    "value > 0 = foreground; for a softmax model, = the scored class); reports "
                    "per-slice and whole-volume (3-D) IoU/Dice")
    ev.add_argument("--metrics", metavar="TABLE.parquet",
                    help="--engine ray: also write the per-image (per-slice) metrics as Parquet")
    _engine_options(ev, batch_size=False)
    _volume_options(ev)

    ins = sub.add_parser("inspect", help="print the model card and layer table",
                         description="Print the model's input (size, channels, order), its "
                         "preprocessing and fit, its output and classes, why each inferred "
                         "setting was chosen, and its layer table.")
    _model_options(ins)
    ins.add_argument("--json", action="store_true")

    tr = sub.add_parser("train", help="train a U-Net on a folder of pairs",
                        description="Train a fully convolutional residual U-Net on DIR/images + "
                        "DIR/masks. Checkpoints every epoch in RUN_DIR (default runs/NAME); "
                        "--resume continues. Writes the model and its card (NAME.json).")
    tr.add_argument("--data", help="folder with images/ and masks/")
    tr.add_argument("--out", help="output model path, e.g. models/salt.keras")
    tr.add_argument("--config", help="JSON file of TrainConfig fields (options override it)")
    tr.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.keras")
    for name, typ in (("run_dir", str), ("name", str), ("init_from", str), ("domain", str),
                      ("description", str),
                      ("foreground", str), ("data_terms", str), ("normalisation", str),
                      ("padding_mode", str), ("crop", int), ("base_filters", int),
                      ("depth", int), ("dropout", float), ("epochs", int),
                      ("lovasz_epochs", int), ("sym_lovasz_epochs", int), ("batch_size", int),
                      ("samples_per_epoch", int),
                      ("lr", float), ("lovasz_lr", float), ("sym_lovasz_lr", float),
                      ("patience", int), ("average_last", int),
                      ("val_fraction", float), ("test_fraction", float), ("seed", int),
                      ("split_seed", int),
                      ("scale_range", float), ("shift", int), ("elastic", float),
                      ("elastic_grid", int), ("select_metric", str),
                      ("max_images", int), ("threads", int), ("verbose", int)):
        tr.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None)
    for flag in ("invert_masks", "hflip", "vflip", "rot90", "tta", "residual",
                 "select_min_area"):
        tr.add_argument("--" + flag.replace("_", "-"), dest=flag,
                        action=argparse.BooleanOptionalAction, default=None)

    en = sub.add_parser("ensemble", help="average trained models into one",
                        description="Average the outputs of two or more models trained on one "
                        "split (same split_seed) into one flat model. Picks its threshold on the "
                        "validation split, scores the held-out test split once, and writes the "
                        "model, its card (members, their commands) and NAME.heldout.txt.")
    en.add_argument("members", nargs="+", metavar="MEMBER", help=".keras models with cards")
    en.add_argument("--out", required=True, help="output .keras path, e.g. models/salt.keras")
    en.add_argument("--data", required=True, help="the folder the members trained on")
    en.add_argument("--split", required=True,
                    help="the members' split.json (in their run folder, e.g. runs/salt)")
    en.add_argument("--name", help="model name (default: the output file's stem)")
    en.add_argument("--select", default="tgs_metric", choices=tuple(SELECT_METRICS),
                    help="metric that picks the threshold on validation")
    en.add_argument("--select-min-area", action=argparse.BooleanOptionalAction, default=True,
                    help=SELECT_MIN_AREA_HELP)

    ca = sub.add_parser("calibrate", help="re-pick a trained model's threshold on validation",
                        description="Pick a trained model's threshold (and minimum-area rule) "
                        "again on the validation images of its training split, score the "
                        "held-out test images once at them, and rewrite the model's card (the "
                        "previous values are kept in it). The model file is not changed.")
    ca.add_argument("--model", required=True, help=".keras or .h5 model with its card")
    ca.add_argument("--data", required=True, help="the folder the model trained on")
    ca.add_argument("--split", help="the training split (default: NAME.split.json next to "
                    "the model, as train writes it; or a run's split.json)")
    ca.add_argument("--select", default=None, choices=tuple(SELECT_METRICS),
                    help="metric that picks the threshold on validation (default: the one that "
                    "picked the card's, else tgs_metric)")
    ca.add_argument("--select-min-area", action=argparse.BooleanOptionalAction, default=True,
                    help=SELECT_MIN_AREA_HELP)

    ex = sub.add_parser("explain", help="Seg-Grad-CAM: which pixels made the network call a "
                        "region; writes NAME_cam.npy and NAME_cam.png",
                        description="Explain a region of one image's prediction with "
                        "Seg-Grad-CAM (Vinogradova et al. 2020): the score is the sum over the "
                        "region of the pre-sigmoid logit of the class (its negative with "
                        "--background); the map is ReLU(sum_k alpha_k A^k) of a conv layer "
                        "(alpha_k: the mean gradient of channel k), cropped to the image and "
                        "divided by its maximum. Writes OUT/NAME_cam.npy (float32 HxW in [0, 1]) "
                        "and OUT/NAME_cam.png (the map in viridis over the image). Needs a "
                        "Keras model (.keras / .h5): ONNX Runtime computes no gradients.")
    _model_options(ex)
    ex.add_argument("image", metavar="IMAGE", help="one image file")
    ex.add_argument("--out", required=True, help="output folder (created if missing)")
    ex.add_argument("--layer", metavar="NAME",
                    help="conv layer to explain (default: the bottleneck, the lowest-resolution "
                    "conv; see inspect for the names)")
    ex.add_argument("--region", default="all", metavar="REGION",
                    help="all (default), mask (the predicted mask), component (its largest "
                    "connected component), component:X,Y (the one at that pixel), X,Y (one "
                    "pixel) or X0,Y0,X1,Y1 (a box, X1 and Y1 exclusive); image pixels")
    ex.add_argument("--background", action="store_true",
                    help="explain the background: the score's negative")
    ex.add_argument("--method", choices=("seg-grad-cam", "saliency"), default="seg-grad-cam",
                    help="seg-grad-cam (default) or saliency (|d score / d input|)")
    ex.add_argument("--threshold", type=_threshold,
                    help="threshold of the mask / component regions (default: the model card's)")
    ex.add_argument("--min-area", type=_min_area, help=MIN_AREA_HELP)
    ex.add_argument("--padding", choices=PAD_MODES, help="default: the model card's")

    co = sub.add_parser("compare", help="is model B better than model A on a data set?",
                        description="Run two models on every DIR/images + DIR/masks pair (or a "
                        ".zip), each with its own card (threshold, minimum area, input "
                        "preprocessing), and score each image's IoU, Dice and TGS score for "
                        "both. For each metric: mean of A, mean of B, mean paired difference "
                        "B - A, its 95 % paired bootstrap confidence interval (BCa, seeded) and "
                        "the Wilcoxon signed-rank p-value; and how many images B wins, ties and "
                        "loses on IoU. A model compared with itself gives exactly 0.")
    co.add_argument("--model", action="append", default=[], metavar="MODEL",
                    help="give it twice: model A, then model B (.keras, .h5 or .onnx, each with "
                    "its card next to it)")
    co.add_argument("--data", required=True, help="folder with images/ and masks/, or a .zip")
    co.add_argument("--json", action="store_true",
                    help='print one JSON object: {"n", "metrics": {"iou": {"a", "b", "delta", '
                    '"ci95", "p_value"}, "dice": ..., "tgs_score": ...}, "wins", "ties", '
                    '"losses"}')
    co.add_argument("--threshold", type=_threshold,
                    help="one threshold for both models (default: each model card's)")
    co.add_argument("--min-area", type=_min_area,
                    help="one minimum-area rule for both models, pixels (0 = off; default: "
                    "each model card's)")
    co.add_argument("--class", dest="class_", metavar="K",
                    help="class index or name to score (default: model A's card's)")
    co.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    co.add_argument("--resamples", type=_batch_size, default=9999,
                    help="bootstrap resamples (default 9999)")
    co.add_argument("--per-image", metavar="CSV",
                    help="also write per-image scores of both models and B - A to CSV")
    co.add_argument("--names", help="text file of image names (one per line) to compare on "
                    "only, e.g. a model's NAME.heldout.txt")
    co.add_argument("--invert-masks", action=argparse.BooleanOptionalAction, default=None,
                    help="score against the complement of each mask (default: the cards' "
                    "truth_inverted)")
    co.add_argument("--trust-model", action="store_true",
                    help="load both models with Keras safe_mode off (only for files you trust)")
    co.add_argument("--batch-size", type=_batch_size, default=32)
    co.add_argument("--backend", choices=BACKENDS, default=None, help=BACKEND_HELP)
    return p


def _read_card_file(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        if p.stat().st_size > 1 << 20:
            raise UnetCoreError(f"--card {_dn(p.name)}: over 1 MB; accepted: a JSON model card")
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UnetCoreError(f"--card {_dn(path)}: cannot read ({exc.__class__.__name__}: "
                            f"{' '.join(str(exc).split())[:120]})") from None
    except (ValueError, RecursionError):
        raise UnetCoreError(f"--card {_dn(p.name)}: not valid JSON; accepted: a JSON model "
                            "card") from None
    if not isinstance(data, dict):
        raise UnetCoreError(f"--card {_dn(p.name)}: a model card is a JSON object")
    return data


def _card_from_file(path: str, model: Any, model_name: str):
    """A card file given with --card, completed from the network and checked."""
    from .model import ModelCard, check_card, reconcile_card

    data = _read_card_file(path)
    label = Path(path).name
    data.setdefault("name", Path(model_name).stem)
    try:
        card = ModelCard.from_dict(data)
        card = reconcile_card(card, model, label, set(data))
    except (TypeError, AttributeError) as exc:
        raise UnetCoreError(f"--card {label}: not a usable model card ({exc})") from None
    check_card(card, label, UnetCoreError)
    return card


def _resolve_class(card, text: str, label: str) -> int:
    """``--class`` (an index or a class name) as a class index of the card's model."""
    n = card.n_classes
    names = [card.class_name(i) for i in range(n)]
    accepted = ", ".join(f"{i} ({name})" for i, name in enumerate(names))
    t = text.strip()
    if t.lstrip("-").isdigit():
        k = int(t)
        if 0 <= k < n:
            return k
    else:
        exact = [i for i, name in enumerate(names) if name == t]
        loose = [i for i, name in enumerate(names) if name.casefold() == t.casefold()]
        if exact or len(loose) == 1:
            return (exact or loose)[0]
    kind = f"{n} classes" if n > 1 else "one output map"
    raise UnetCoreError(f"--class {text}: not a class of {label} ({kind}); accepted: {accepted}")


def _apply_overrides(loaded, args: argparse.Namespace) -> None:
    """Apply the card overrides of the command line to ``loaded.card`` and check it."""
    from .model import check_card

    card = loaded.card
    label = Path(args.model).name
    changes: dict[str, Any] = {}
    for key in ("fit", "normalisation", "channel_order"):
        value = getattr(args, key, None)
        if value is not None:
            changes[key] = value
    for key in ("mean", "std"):
        value = getattr(args, key, None)
        if value is not None:
            changes[key] = value
            rule = changes.setdefault("normalisation", "meanstd")
            if rule != "meanstd":
                raise UnetCoreError(f"--{key} goes with --normalisation meanstd, not {rule}")
    flags = [f"--{k.replace('_', '-')}" for k in changes]
    if getattr(args, "class_", None) is not None:
        changes["class_index"] = _resolve_class(card, args.class_, label)
        flags.append("--class")
    if not changes:
        return
    card = dataclasses.replace(card, **changes)
    card.inferred = [f for f in card.inferred if f not in changes]
    card.notes = {k: v for k, v in card.notes.items() if k not in changes}
    check_card(card, f"{label} with {' '.join(flags)}", UnetCoreError)
    loaded.card = card


def _load(args: argparse.Namespace):
    """The model of ``--model`` (+ ``--weights``, ``--card``, ``--trust-model``) with the
    card overrides applied."""
    from .model import load_model

    name = Path(args.model).name
    onnx_file = Path(args.model).suffix.lower() == ".onnx"
    if args.trust_model and onnx_file:
        print(f"--trust-model: no effect on {_dn(name)} (an ONNX graph holds no Python code; "
              "its checks still apply)", file=sys.stderr)
    elif args.trust_model:
        print(f"trusting {_dn(name)}: loaded with Keras safe_mode off, so Python code in the file "
              "(Lambda layers, custom classes) may run", file=sys.stderr)
    stated = (_read_card_file(args.card).get("layout") if args.card and onnx_file
              and args.weights is None else None)
    if stated in ("nchw", "nhwc"):  # the --card's layout is how the graph is read
        from .model import LoadedModel, infer_card
        from .onnx_graph import read_graph

        graph = read_graph(Path(args.model), name, stated)
        loaded = LoadedModel(model=graph, card=infer_card(graph, Path(args.model).stem),
                             path=Path(args.model))
    else:
        loaded = load_model(args.model, safe_mode=not args.trust_model or onnx_file,
                            weights=args.weights)
    if args.card:
        loaded.card = _card_from_file(args.card, loaded.model, name)
        loaded.card_found = True
    _apply_overrides(loaded, args)
    return loaded


def _segmenter(args: argparse.Namespace):
    from .inference import Segmenter

    return Segmenter(_load(args), padding_mode=getattr(args, "padding", None),
                     tta=getattr(args, "tta", None), backend=getattr(args, "backend", None),
                     int8_calibration=getattr(args, "int8_calibration", None))


def _backend_line(seg) -> str:
    note = seg.backend.note
    return f"backend {seg.backend.name}" + (f" ({note})" if note else "")


def _class_label(card, k: int) -> str:
    name = card.class_name(k)
    return f"class {k}" if name == f"class {k}" else f"class {k} ({name})"


def _card_lines(loaded) -> list[str]:
    """Preprocessing line and, for a cardless model, why each inferred setting was chosen."""
    card = loaded.card
    src = "model card" if loaded.card_found else "inferred: no model card found"
    lines = [f"preprocessing: {card.preprocessing}  [{src}]"]
    if not loaded.card_found:
        lines += [f"  {key}: {note}" for key, note in card.notes.items()]
    return lines


def _legend(card) -> str:
    from .io import label_colour_name

    return "; ".join(f"{i}: {card.class_name(i)} ({label_colour_name(i)})"
                     for i in range(card.n_classes))


def _dn(name: object, max_len: int = 120) -> str:
    """A user-supplied name or path for a message (control characters escaped, capped)."""
    from .io import display_name

    return display_name(os.fspath(name) if isinstance(name, os.PathLike) else str(name),
                        max_len)


def _on_file(exc: UnetCoreError, path: Path) -> str:
    msg = str(exc)
    name = _dn(path.name)
    return msg if name in msg else f"{name}: {msg}"


def _output_name(stem: str, suffix: str) -> str:
    """``STEM + SUFFIX``, with the stem shortened (at a character boundary, plus a short hash
    of the full stem so outputs stay distinct) when the name would exceed MAX_NAME_BYTES."""
    import hashlib

    name = stem + suffix
    encoded = os.fsencode(name)
    if len(encoded) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha1(os.fsencode(stem)).hexdigest()[:8]
    budget = MAX_NAME_BYTES - len(os.fsencode(suffix)) - len(digest) - 1
    short = stem
    while len(os.fsencode(short)) > budget:
        short = short[:-1]
    return f"{short}~{digest}{suffix}"


def _write_failed(out: Path, name: str, exc: OSError) -> UnetCoreError:
    return UnetCoreError(f"--out {_dn(out)}: cannot write {_dn(name)} "
                         f"({exc.strerror or type(exc).__name__})")


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from .inference import labels_from_probs, predict_files
    from .io import find_images, write_label_png, write_mask_png
    from .metrics import threshold_mask

    _check_engine(args)
    if any(_is_volume(p) for p in args.inputs):
        if len(args.inputs) != 1:
            raise UnetCoreError("a volume is predicted on its own: give one volume (.sgy/.segy, "
                                ".nii/.nii.gz, .dcm or a DICOM folder) per predict command")
        return _predict_volume(args, Path(args.inputs[0]))
    _no_volume_options(args, "predict input")
    images = find_images(args.inputs)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UnetCoreError(f"--out {_dn(out)}: exists and is not a folder")
    inputs = {p.resolve() for p in images}

    def check_targets(suffixes: Sequence[str]) -> None:
        stems: dict[str, Path] = {}
        for p in images:
            key = _output_name(p.stem, "")
            if key in stems:
                raise UnetCoreError(f"two inputs would write the same outputs: "
                                    f"{_dn(stems[key])} and {_dn(p)}; predict them into "
                                    "different --out folders")
            stems[key] = p
            for suffix in suffixes:
                target = out / _output_name(p.stem, suffix)
                if target.resolve() in inputs:
                    raise UnetCoreError(f"refusing to overwrite input file {_dn(target)}; "
                                        "choose another --out folder")

    check_targets(("_mask.png", "_prob.npy"))
    seg = _segmenter(args)
    card = seg.card
    multi = seg.n_classes >= 2
    if multi:
        check_targets(("_labels.png",))
    cls = card.default_class
    t = card.threshold if args.threshold is None else args.threshold
    k = card.min_area if args.min_area is None else args.min_area
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnetCoreError(f"--out {_dn(out)}: cannot create folder "
                            f"({exc.strerror or type(exc).__name__})") from None
    if args.engine == "ray":
        return _predict_ray(args, images, seg, out, cls, t, k, multi)
    failures = 0
    # decoded ahead in threads, same-size images batched (values as one at a time)
    for p, probs in tqdm(predict_files(seg, images), total=len(images), desc="predict",
                         unit="img", disable=len(images) < 2, file=sys.stderr):
        if isinstance(probs, UnetCoreError):
            failures += 1
            tqdm.write(f"error: {_on_file(probs, p)}", file=sys.stderr)
            continue
        prob = np.ascontiguousarray(probs[..., cls], dtype=np.float32)
        target = _output_name(p.stem, "_prob.npy")
        try:
            np.save(out / target, probs.astype(np.float32) if args.all_classes else prob)
            target = _output_name(p.stem, "_mask.png")
            write_mask_png(out / target, threshold_mask(prob, t, k))
            if multi:
                target = _output_name(p.stem, "_labels.png")
                write_label_png(out / target, labels_from_probs(probs))
        except OSError as exc:
            raise _write_failed(out, target, exc) from None
    _predict_summary(seg, out, len(images) - failures, cls, t, k, multi)
    return 1 if failures else 0


def _predict_summary(seg, out: Path, done: int, cls: int, t: float, k: int, multi: bool, *,
                     described: bool | None = None, tail: str = "") -> None:
    """predict's closing lines on stderr: how the outputs were made (when some were made, or
    ``described``), the class legend, and what was written where."""
    card = seg.card
    if done if described is None else described:
        for line in _card_lines(seg.loaded):
            print(line, file=sys.stderr)
        if multi:
            print(f"classes (NAME_labels.png colours): {_legend(card)}", file=sys.stderr)
    area = f"minimum area {k} px; " if k else ""
    what = "mask(s), label map(s)" if multi else "mask(s)"
    scored = f"{_class_label(card, cls)}; " if multi else ""
    print(f"wrote {done} {what} and probability map(s) to {_dn(out)} ({scored}threshold {t:g}; "
          f"{area}{_backend_line(seg)}){tail}", file=sys.stderr)


def _check_engine(args: argparse.Namespace) -> None:
    """Refuse the Ray options without --engine ray, and --engine ray without Ray installed."""
    if args.engine == "ray":
        from .ray_engine import require_ray

        require_ray()
        return
    for flag, value in (("--address", args.address), ("--workers", args.workers),
                        ("--metrics", getattr(args, "metrics", None))):
        if value is not None:
            raise UnetCoreError(f"{flag} goes with --engine ray (accepted: --engine local|ray)")


def _predict_ray(args: argparse.Namespace, images: list, seg, out: Path, cls: int, t: float,
                 k: int, multi: bool) -> int:
    """predict --engine ray over image files (unet_core.ray_engine): same outputs as local."""
    from .ray_engine import METRICS_TABLE, predict_images

    done, skipped, failed, _ = predict_images(args, images, seg, out, class_index=cls,
                                              threshold=t, min_area=k, multi=multi)
    _predict_summary(seg, out, done, cls, t, k, multi, described=bool(done or skipped),
                     tail=f" with engine ray; {skipped} already complete, skipped; {failed} "
                     f"failed; per-image metrics: {METRICS_TABLE}")
    return 1 if failed else 0


def _pairs(args: argparse.Namespace, root: Path) -> list:
    from .io import find_pairs

    pairs = find_pairs(root, require_masks=True)
    if args.names:
        try:
            wanted = {ln.strip() for ln in Path(args.names).read_text().splitlines()
                      if ln.strip()}
        except OSError as exc:
            raise UnetCoreError(f"--names {_dn(args.names)}: cannot read "
                                f"({exc.strerror or type(exc).__name__})") from None
        missing = wanted - {p.name for p in pairs}
        if missing:
            raise UnetCoreError(f"--names: {len(missing)} name(s) not in {_dn(args.data)}, "
                                f"e.g. {[_dn(n) for n in sorted(missing)[:5]]}")
        pairs = [p for p in pairs if p.name in wanted]
    return pairs


def _write_csv(path: str, rows: list[dict]) -> None:
    import csv

    target = Path(path)
    try:
        if target.parent != Path("."):
            target.parent.mkdir(parents=True, exist_ok=True)  # a missing folder is created
        with open(target, "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
            wr.writeheader()
            wr.writerows(rows)
    except OSError as exc:
        raise UnetCoreError(f"--per-image {_dn(path)}: cannot write "
                            f"({exc.strerror or type(exc).__name__})") from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .evaluate import evaluate_classes, evaluate_pairs
    from .io import open_dataset

    _check_engine(args)
    if args.labels_volume is not None or _is_volume(args.data):
        return _evaluate_volume(args)
    _no_volume_options(args, "--data")
    if args.labels:
        for flag, value in (("--invert-masks", args.invert_masks), ("--min-area", args.min_area),
                            ("--select-metric", args.select_metric)):
            if value is not None:
                raise UnetCoreError(f"{flag} is for binary masks; with --labels every class "
                                    "of the argmax label map is scored")
        if args.engine == "ray":
            raise UnetCoreError("--labels with --engine ray: not supported; accepted: "
                                "--engine local for label masks, --engine ray for binary masks")
    seg = _segmenter(args)
    card = seg.card
    with open_dataset(args.data) as root:
        pairs = _pairs(args, root)
        bar = tqdm(total=len(pairs), desc="evaluate", unit="img", file=sys.stderr,
                   disable=None)

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        if args.labels:
            result = evaluate_classes(seg, pairs, padding_mode=args.padding,
                                      threshold=args.threshold, batch_size=args.batch_size,
                                      progress=progress)
            bar.close()
            return _report_classes(args, seg, result)
        invert = card.truth_inverted if args.invert_masks is None else args.invert_masks
        failed: list[str] = []
        if args.engine == "ray":
            from .ray_engine import evaluate_pairs_ray

            bar.close()
            ev, failed, _ = evaluate_pairs_ray(args, seg, pairs, invert=invert,
                                               metrics_path=args.metrics)
        else:
            ev = evaluate_pairs(seg, pairs, padding_mode=args.padding,
                                threshold=args.threshold, select_metric=args.select_metric,
                                batch_size=args.batch_size, progress=progress,
                                invert_masks=invert, min_area=args.min_area,
                                class_index=card.default_class)
            bar.close()
    summary = {"model": str(args.model), "data": str(args.data), **ev.summary(),
               "backend": seg.backend.name, "masks_inverted": bool(invert)}
    if ev.soft_masks:
        shown = ", ".join(_dn(n) for n in ev.soft_masks[:5])
        more = f" and {len(ev.soft_masks) - 5} more" if len(ev.soft_masks) > 5 else ""
        print(f"warning: {len(ev.soft_masks)} mask(s) not cleanly binary (more than two "
              f"values), thresholded at half scale: {shown}{more}", file=sys.stderr)
    if args.per_image:
        _write_csv(args.per_image, ev.sweep.per_image(ev.threshold))
    if failed:
        print(f"error: {len(failed)} of {len(pairs)} image(s) failed and are not scored "
              "(each reported above)", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
        return 1 if failed else 0
    scored = (f"; scoring {_class_label(card, ev.class_index)} against binary masks"
              if seg.n_classes >= 2 else "")
    print(f"model {_dn(args.model)} on {_dn(args.data)}: {summary['n']} images; "
          f"{_backend_line(seg)}"
          + scored + ("; masks inverted (they mark the other class)" if invert else ""))
    print(f"preprocessing: {card.preprocessing}")
    if summary["min_area"]:
        print(f"minimum area {summary['min_area']} px: masks with fewer foreground pixels are "
              "emptied (all figures below)")
    print(f"at threshold {summary['threshold']:.2f} (model card): IoU {summary['iou']:.4f}  "
          f"Dice {summary['dice']:.4f}  precision {summary['precision']:.4f}  "
          f"recall {summary['recall']:.4f}  TGS metric {summary['tgs_metric']:.4f}")
    print(f"best threshold {summary['best_threshold']:.2f} (by {summary['selected_by']}): "
          f"TGS metric {summary['best_tgs_metric']:.4f}  "
          f"IoU {summary['iou_at_best_threshold']:.4f}  "
          f"Dice {summary['dice_at_best_threshold']:.4f}")
    print(f"best mean IoU {summary['best_iou']:.4f} at threshold "
          f"{summary['best_iou_threshold']:.2f}")
    return 1 if failed else 0


def _report_classes(args: argparse.Namespace, seg, result) -> int:
    """Print (or JSON) the per-class results of a label-mask evaluation."""
    summary = {"model": str(args.model), "data": str(args.data), "labels": True,
               **result.summary(), "confusion": result.confusion.tolist(),
               "backend": seg.backend.name}
    if seg.n_classes == 1:
        summary["threshold"] = seg.card.threshold if args.threshold is None else args.threshold
    if args.per_image:
        _write_csv(args.per_image, result.per_image())
    if args.json:
        print(json.dumps(summary))
        return 0
    how = ("argmax label map" if seg.n_classes >= 2 else
           f"one map at threshold {summary['threshold']:g} as 2 classes")
    print(f"model {_dn(args.model)} on {_dn(args.data)}: {summary['n']} images, label masks, "
          f"{result.n_classes} classes ({how}); {_backend_line(seg)}")
    print(f"preprocessing: {seg.card.preprocessing}")
    width = max(12, *(len(f"{c['index']} {c['name']}") for c in summary["classes"]))
    print(f"{'class':<{width}}  {'IoU':>7}  {'Dice':>7}  {'pooled IoU':>10}  "
          f"{'pooled Dice':>11}  {'truth px':>10}  {'images':>6}")
    for c in summary["classes"]:
        print(f"{str(c['index']) + ' ' + c['name']:<{width}}  {c['iou']:7.4f}  {c['dice']:7.4f}"
              f"  {c['pooled_iou']:10.4f}  {c['pooled_dice']:11.4f}  {c['truth_pixels']:>10}"
              f"  {c['images']:>6}")
    print(f"{'mean':<{width}}  {summary['mean_iou']:7.4f}  {summary['mean_dice']:7.4f}  "
          f"{summary['pooled_mean_iou']:10.4f}  {summary['pooled_mean_dice']:11.4f}")
    print(f"mean over {summary['mean_over']}; IoU/Dice: per-image means; pooled: all pixels "
          "of the set together")
    print(f"pixel accuracy {summary['pixel_accuracy']:.4f}")
    return 0


def _is_volume(path: str) -> bool:
    from .volume import is_volume_path

    try:
        return is_volume_path(path)
    except OSError:
        return False


def _no_volume_options(args: argparse.Namespace, what: str) -> None:
    """Refuse volume options for image input (one line)."""
    for flag, value, default in (("--axis", args.axis, None),
                                 ("--inline-byte", args.inline_byte, 189),
                                 ("--crossline-byte", args.crossline_byte, 193),
                                 ("--time-index", args.time_index, None),
                                 ("--window", args.window, None),
                                 ("--labels-volume", getattr(args, "labels_volume", None), None)):
        if value != default:
            raise UnetCoreError(f"{flag} is for a volume input; the {what} is not one "
                                "(accepted volumes: .sgy/.segy, .nii/.nii.gz, .dcm or a folder "
                                "of .dcm files)")


def _read_volume(args: argparse.Namespace, path: str | Path, *, labels: bool = False):
    """The volume at ``path`` read with the volume options, and the axis to slice along."""
    from .volume import DEFAULT_AXIS, read_volume

    v = read_volume(path, inline_byte=args.inline_byte, crossline_byte=args.crossline_byte,
                    time_index=args.time_index, window=None if labels else args.window)
    axis = args.axis or DEFAULT_AXIS[v.format]
    v.axis_index(axis)  # a one-line error naming the accepted axes
    return v, axis


def _volume_bar(total: int, desc: str):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="slice", file=sys.stderr, disable=None)

    def progress(done: int, n: int) -> None:
        bar.update(done - bar.n)

    return bar, progress


def _describe_volume(v, axis: str) -> str:
    dims = "x".join(str(s) for s in v.shape)
    h, w = v.slice_shape(axis)
    return (f"{v.format} volume {dims} ({', '.join(v.axes)}): {v.n_slices(axis)} {axis} "
            f"slices of {h}x{w}")


def _predict_volume(args: argparse.Namespace, path: Path) -> int:
    """predict on one volume: probabilities and mask written in the input's own format."""
    import secrets
    import shutil

    import numpy as np

    from .volume import output_name, volume_stem, write_volume
    from .volume_predict import mask_volume, scaling_note, segment_volume

    if args.all_classes:
        raise UnetCoreError("--all-classes is for images; a volume's NAME_prob holds the "
                            "chosen class (--class) and, for a K-class model, NAME_mask the "
                            "argmax labels")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UnetCoreError(f"--out {_dn(out)}: exists and is not a folder")
    v, axis = _read_volume(args, path)
    name = volume_stem(path)
    src = path.resolve()
    for kind in ("prob", "mask"):
        target = out / output_name(v, name, kind)
        if target.resolve() == src:
            raise UnetCoreError(f"refusing to overwrite input file {_dn(target)}; choose "
                                "another --out folder")
    seg = _segmenter(args)
    card = seg.card
    multi = seg.n_classes >= 2
    cls = card.default_class
    t = card.threshold if args.threshold is None else args.threshold
    k = card.min_area if args.min_area is None else args.min_area
    for key, note in v.notes.items():
        print(f"note ({key}): {note}", file=sys.stderr)
    if args.engine == "ray":
        from .ray_engine import slice_probs

        done = [out / output_name(v, name, kind) for kind in ("prob", "mask")]
        if all(f.is_file() for f in done):
            print(f"{', '.join(_dn(f.name) for f in done)} already in {_dn(out)}: complete, "
                  "skipped (engine ray; delete them to predict again)", file=sys.stderr)
            return 0
        every, failed = slice_probs(args, seg, v, axis, class_index=cls, all_classes=multi)
        if failed:
            raise UnetCoreError(f"{_dn(path.name)}: {len(failed)} slice(s) failed (reported "
                                "above); nothing written")
        prob = np.ascontiguousarray(every[..., cls]) if multi else every
        mask = mask_volume(v, every, axis, t) if multi else mask_volume(v, prob, axis, t, k)
        del every
    else:
        bar, progress = _volume_bar(v.n_slices(axis), "predict")
        if multi:
            every = segment_volume(seg, v, axis, progress=progress, all_classes=True)
            prob = np.ascontiguousarray(every[..., cls])
            mask = mask_volume(v, every, axis, t)
            del every
        else:
            prob = segment_volume(seg, v, axis, progress=progress, class_index=cls)
            mask = mask_volume(v, prob, axis, t, k)
        bar.close()
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = out / f".partial-{secrets.token_hex(4)}"
        stage.mkdir()
    except OSError as exc:
        raise UnetCoreError(f"--out {_dn(out)}: cannot create folder "
                            f"({exc.strerror or type(exc).__name__})") from None
    moved: list[Path] = []
    try:
        staged = [write_volume(v, prob, stage, name, "prob"),
                  write_volume(v, mask, stage, name, "mask")]
        for f in staged:
            os.replace(f, out / f.name)
            moved.append(out / f.name)
    except OSError as exc:
        for f in moved:
            f.unlink(missing_ok=True)
        raise UnetCoreError(f"--out {_dn(out)}: cannot write the {name} outputs "
                            f"({exc.strerror or type(exc).__name__})") from None
    except BaseException:
        for f in moved:
            f.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if args.engine == "ray":
        from .ray_engine import slice_rows, write_parquet

        table = out / f"{name}_metrics.parquet"
        write_parquet(table, slice_rows(v, prob, mask, axis))
        moved.append(table)
    for line in _card_lines(seg.loaded):
        print(line, file=sys.stderr)
    print(f"volume input: {scaling_note(seg, v)}", file=sys.stderr)
    if multi:
        what = f"argmax labels ({_legend(card)})"
    else:
        what = f"threshold {t:g}" + (f", minimum area {k} px per slice" if k else "")
    print(f"wrote {', '.join(_dn(f.name) for f in moved)} to {_dn(out)} "
          f"({_describe_volume(v, axis)}; probabilities of {_class_label(card, cls)}; mask: "
          f"{what}; {_backend_line(seg)})", file=sys.stderr)
    return 0


def _evaluate_volume(args: argparse.Namespace) -> int:
    """evaluate a volume against a label volume: per-slice and whole-volume IoU/Dice."""
    from .volume_predict import evaluate_volume, scaling_note

    if args.labels_volume is None:
        raise UnetCoreError(f"--data {_dn(args.data)} is a volume: give its label volume of "
                            "the same geometry with --labels-volume LABELS")
    if not _is_volume(args.data):
        raise UnetCoreError(f"--labels-volume goes with a volume --data; {_dn(args.data)} is "
                            "not one (accepted: .sgy/.segy, .nii/.nii.gz, .dcm or a folder "
                            "of .dcm files)")
    for flag, value in (("--labels", args.labels or None), ("--names", args.names),
                        ("--select-metric", args.select_metric),
                        ("--invert-masks", args.invert_masks)):
        if value is not None:
            raise UnetCoreError(f"{flag} is for folders of image/mask pairs, not a volume")
    v, axis = _read_volume(args, args.data)
    labels, _ = _read_volume(args, args.labels_volume, labels=True)
    seg = _segmenter(args)
    if args.engine == "ray":
        from .ray_engine import score_volume, slice_probs, write_parquet

        cls = seg._class(seg.card.default_class)
        probs, failed = slice_probs(args, seg, v, axis, class_index=cls, all_classes=False)
        if failed:
            raise UnetCoreError(f"{_dn(args.data)}: {len(failed)} slice(s) failed (reported "
                                "above); not scored")
        r = score_volume(seg, v, labels, axis, probs, args.threshold, args.min_area, cls)
        if args.metrics:
            write_parquet(Path(args.metrics), r["slices"])
    else:
        bar, progress = _volume_bar(v.n_slices(axis), "evaluate")
        r = evaluate_volume(seg, v, labels, axis, args.threshold, min_area=args.min_area,
                            class_index=seg.card.default_class, batch_size=args.batch_size,
                            progress=progress)
        bar.close()
    summary = {"model": str(args.model), "data": str(args.data),
               "labels_volume": str(args.labels_volume), "format": v.format,
               "volume_input": scaling_note(seg, v), **r,
               "backend": seg.backend.name}
    if args.per_image:
        _write_csv(args.per_image, r["slices"])
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"model {_dn(args.model)} on {_dn(args.data)}: {_describe_volume(v, axis)}; "
          f"{_backend_line(seg)}")
    print(f"preprocessing: {seg.card.preprocessing}; volume input: {scaling_note(seg, v)}")
    area = f", minimum area {r['min_area']} px per slice" if r["min_area"] else ""
    print(f"scoring {_class_label(seg.card, r['class_index'])} at threshold "
          f"{r['threshold']:g}{area} against {_dn(args.labels_volume)}")
    print(f"{axis + ' slice':>14}  {'IoU':>7}  {'Dice':>7}  {'truth vox':>10}  {'pred vox':>10}")
    for row in r["slices"]:
        print(f"{row['index']:>14}  {row['iou']:7.4f}  {row['dice']:7.4f}  "
              f"{row['truth_voxels']:>10}  {row['pred_voxels']:>10}")
    print(f"mean over {r['n_slices']} slices: IoU {r['mean_slice_iou']:.4f}  "
          f"Dice {r['mean_slice_dice']:.4f}")
    print(f"whole volume (3-D): IoU {r['iou']:.4f}  Dice {r['dice']:.4f}  (truth "
          f"{r['truth_voxels']:,} voxels, predicted {r['pred_voxels']:,})")
    return 0


def _output_line(card) -> str:
    k = card.n_classes
    act = "sigmoid" if k == 1 else f"softmax over {k} classes"
    if card.output == "logits":
        return f"output: logits (no final activation; the engine applies {act})"
    return f"output: probabilities ({act})"


def _onnx_facts(graph) -> dict[str, Any]:
    """What an ONNX graph says about itself (for inspect)."""
    import numpy as np

    proto = graph.proto
    opset = next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                 None)
    return {"input": graph.input_name, "output": graph.output_name, "layout": graph.layout,
            "layout_reason": graph.layout_reason, "output_layout": graph.output_layout,
            "batch": graph.batch, "height": graph.height, "width": graph.width,
            "dtype": np.dtype(graph.input_dtype).name, "last_op": graph.last_op,
            "output_kind": "probabilities" if graph.last_op in ("Sigmoid", "Softmax")
            else "logits", "opset": opset,
            "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
            "nodes": graph.n_layers, "params": graph.count_params()}


def _onnx_lines(graph) -> list[str]:
    f = _onnx_facts(graph)
    batch = ("dynamic batch" if f["batch"] is None else "fixed batch 1 (one image per run)"
             if f["batch"] == 1 else f"fixed batch {f['batch']} (a shorter batch is padded "
             "with zeros)")
    size = ("dynamic height and width" if f["height"] is None else
            f"fixed {f['height']}x{f['width']}")
    kind = ("probabilities" if f["output_kind"] == "probabilities" else
            "logits (the engine applies the activation)")
    return [f"graph: ONNX opset {f['opset']}, from {f['producer'] or 'an unnamed producer'}; "
            f"{f['nodes']:,} nodes, {f['params']:,} weights; runs as it is on ONNX Runtime",
            f"layout: {f['layout'].upper()}: {f['layout_reason']}; {batch}; {size}; input "
            f"{f['input']!r} {f['dtype']}",
            f"graph output {f['output']!r} ({f['output_layout'].upper()}): last op "
            f"{f['last_op'] or 'unknown'}, so {kind}"]


def cmd_inspect(args: argparse.Namespace) -> int:
    from .introspect import format_layer_table, layer_table
    from .onnx_graph import is_onnx

    loaded = _load(args)
    card = loaded.card
    graph = loaded.model if is_onnx(loaded) else None
    if args.json:
        extra = {"onnx": _onnx_facts(graph)} if graph is not None else {}
        print(json.dumps({"card": card.to_dict(), "card_found": loaded.card_found,
                          "trusted": loaded.trusted, "preprocessing": card.preprocessing,
                          **extra,
                          "layers": [r.as_row() for r in layer_table(loaded.model)]},
                         default=str))
        return 0
    print(f"{card.name}: {card.description or '(no description)'}")
    src = "model card" if loaded.card_found else "inferred (no card found)"
    ch = f"{card.channels} channel{'s' if card.channels != 1 else ''}"
    if card.channels >= 3:
        ch += f", order {card.channel_order.upper()}"
    print(f"input {card.input_spec}, {ch}  [{src}]")
    if graph is not None:
        for line in _onnx_lines(graph):
            print(line)
    print(f"preprocessing: {card.preprocessing}")
    print(f"fit: {card.fit}, padding {card.padding_mode}")
    print(_output_line(card))
    if card.n_classes >= 2:
        print(f"classes: {_legend(card)}; default {_class_label(card, card.default_class)}")
    else:
        print(f"classes: one map ({card.foreground})")
    print(f"threshold {card.threshold:g}, minimum area {card.min_area} px, best threshold "
          f"picked by {card.selection_metric}")
    if card.notes:
        print("why (inferred settings):" if not loaded.card_found else "notes:")
        for key, note in card.notes.items():
            print(f"  {key}: {note}")
    print(format_layer_table(loaded.model))
    return 0


def cmd_train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .train import config_from_args, train

    cfg = config_from_args(args, argv)
    if not cfg.data or not cfg.out:
        raise UnetCoreError("train needs --data DIR and --out MODEL.keras (or a --config with "
                            "them)")
    train(cfg, resume=args.resume)
    return 0


def cmd_ensemble(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .ensemble import build_ensemble
    from .train import command_line

    card = build_ensemble(args.members, args.out, args.data, args.split, name=args.name,
                          select_metric=args.select, select_min_area=args.select_min_area,
                          command=command_line(argv))
    key = SELECT_METRICS[args.select]
    line = (f"wrote {args.out} ({len(args.members)} members, "
            f"{card.architecture['parameters']:,} parameters); threshold {card.threshold:.2f}, "
            f"minimum area {card.min_area} px; "
            f"validation {args.select} {card.metrics['validation'][key]:.4f}")
    test = card.metrics.get("test")
    if test:
        line += f"; held-out test {args.select} {test[key]:.4f}"
    print(line)
    return 0


def cmd_calibrate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .calibrate import calibrate_model
    from .train import command_line

    old, new = calibrate_model(args.model, args.data, args.split, select_metric=args.select,
                               select_min_area=args.select_min_area,
                               command=command_line(argv))
    metric = new.metrics["selected_by"]
    key = SELECT_METRICS[metric]

    def figures(card) -> str:
        parts = [f"threshold {card.threshold:.2f}, minimum area {card.min_area} px"]
        for split in ("validation", "test"):
            rec = (card.metrics or {}).get(split)
            if rec and key in rec:
                parts.append(f"{split} {metric} {rec[key]:.4f}")
        return "; ".join(parts)

    print(f"{_dn(args.model)}: card rewritten (the model file is unchanged)")
    print(f"  before: {figures(old)}")
    print(f"  after:  {figures(new)}")
    return 0


def _load_path(args: argparse.Namespace, path: str):
    """:func:`_load` for one model path of a multi-model command (no --card, --weights or
    --class: those name one model)."""
    return _load(argparse.Namespace(**{**vars(args), "model": path, "card": None,
                                       "weights": None, "class_": None}))


def _p_text(p: float) -> str:
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def cmd_compare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .compare import METRIC_LABELS, METRICS, check_comparable, compare_pairs, reading
    from .inference import Segmenter
    from .io import open_dataset

    if len(args.model) != 2:
        raise UnetCoreError(f"compare needs exactly two models, got {len(args.model)}; "
                            "accepted: --model A --model B")
    path_a, path_b = args.model
    seg_a = Segmenter(_load_path(args, path_a), backend=args.backend)
    if Path(path_a).resolve() == Path(path_b).resolve():
        seg_b = seg_a  # one model against itself: predicted once
    else:
        seg_b = Segmenter(_load_path(args, path_b), backend=args.backend)
    check_comparable(seg_a.card, seg_b.card)
    cls = (None if args.class_ is None
           else _resolve_class(seg_a.card, args.class_, Path(path_a).name))
    with open_dataset(args.data) as root:
        pairs = _pairs(args, root)
        bar = tqdm(total=len(pairs), desc="compare", unit="img", file=sys.stderr,
                   disable=None)

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        cmp = compare_pairs(seg_a, seg_b, pairs, threshold=args.threshold,
                            min_area=args.min_area, class_index=cls, seed=args.seed,
                            n_resamples=args.resamples, progress=progress,
                            invert_masks=args.invert_masks, batch_size=args.batch_size)
        bar.close()
    if cmp.soft_masks:
        print(f"warning: {len(cmp.soft_masks)} mask(s) not cleanly binary (more than two "
              "values), thresholded at half scale", file=sys.stderr)
    if args.per_image:
        _write_csv(args.per_image, cmp.rows())
    if args.json:
        print(json.dumps(cmp.summary()))
        return 0
    for side, path, seg, t, k in (("A", path_a, seg_a, cmp.threshold_a, cmp.min_area_a),
                                  ("B", path_b, seg_b, cmp.threshold_b, cmp.min_area_b)):
        print(f"{side}: {_dn(path)}  threshold {t:g}, minimum area {k} px; input "
              f"{seg.card.input_spec}, {seg.card.preprocessing}; {_backend_line(seg)}")
    scored = (f"; scoring {_class_label(seg_a.card, cmp.class_index)}"
              if seg_a.n_classes >= 2 else "")
    inverted = "; masks inverted (they mark the other class)" if cmp.invert_masks else ""
    print(f"data: {_dn(args.data)}: n = {cmp.n} images{scored}{inverted}")
    if cmp.shared_predictions:
        print("A and B are the same model with the same settings: predicted once")
    print(f"{'metric':<10} {'A':>8} {'B':>8} {'B - A':>9}  {'95 % CI of B - A':<22} "
          f"{'p (Wilcoxon)':>12}")
    for m in METRICS:
        r = cmp.metrics[m]
        ci = f"[{r.ci95[0]:+.4f}, {r.ci95[1]:+.4f}]"
        print(f"{METRIC_LABELS[m]:<10} {r.a:8.4f} {r.b:8.4f} {r.delta:+9.4f}  {ci:<22} "
              f"{_p_text(r.p_value):>12}")
    print(f"IoU image by image: B better on {cmp.wins}, tie on {cmp.ties}, A better on "
          f"{cmp.losses} (wins / ties / losses)")
    notes = dict.fromkeys([*cmp.notes, *(n for m in METRICS for n in cmp.metrics[m].notes)])
    for note in notes:
        print(f"note: {note}")
    how = ("" if cmp.shared_predictions else
           f" (bootstrap: {cmp.n_resamples} resamples, seed {cmp.seed})")
    print(f"reading: {reading(cmp, 'iou')}{how}")
    return 0


def _save_atomically(path: Path, write) -> None:
    """``write(file object)`` into a temporary file next to ``path``, then rename it."""
    tmp = path.with_name(f".tmp-{os.getpid()}{path.suffix}")  # short: names may be 255 bytes
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_explain(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from .explain import GradCam, cam_overlay_rgb, parse_region
    from .io import read_raw

    if _is_volume(args.image):
        raise UnetCoreError(f"{_dn(args.image)}: explain takes one 2-D image; accepted: an "
                            "image file (a volume's slice: predict it, or use the dashboard)")
    region = parse_region(args.region)
    src = Path(args.image)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UnetCoreError(f"--out {_dn(out)}: exists and is not a folder")
    targets = [out / _output_name(src.stem, s) for s in ("_cam.npy", "_cam.png")]
    if any(t.resolve() == src.resolve() for t in targets):
        raise UnetCoreError(f"refusing to overwrite input file {_dn(src)}; choose another "
                            "--out folder")
    image = read_raw(src)
    cam = GradCam(_load(args), padding_mode=args.padding)
    prob = None
    if region.kind in ("mask", "component") and cam.segmenter.network_size(
            *image.shape[:2]) is not None:
        from .inference import Segmenter

        # the mask predict writes: the card's TTA included
        prob = Segmenter(cam.loaded, padding_mode=args.padding,
                         backend="tensorflow").predict_proba(image)
    kw = {"threshold": args.threshold, "min_area": args.min_area,
          "background": args.background, "prob": prob}
    if args.method == "saliency":
        result = cam.saliency(image, region, **kw)
        layer_line = "layer: input (gradient saliency |d score / d input|)"
    else:
        name = args.layer or cam.default_layer
        result = cam.explain(image, region, layers=[name], **kw)[name]
        stride = cam.layer_resolution(name)
        at = f", stride {stride[0]}" if stride and stride[0] == stride[1] else (
            f", stride {stride[0]}x{stride[1]}" if stride else "")
        why = " (default: the bottleneck" + at + ")" if args.layer is None else (
            f" ({at[2:]})" if at else "")
        layer_line = f"layer: {name}{why}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        _save_atomically(targets[0], lambda fh: np.save(fh, result.cam.astype(np.float32)))
        overlay = cam_overlay_rgb(image, result.cam)
        _save_atomically(targets[1], lambda fh: Image.fromarray(overlay).save(fh, format="PNG"))
    except OSError as exc:
        raise _write_failed(out, targets[0].name, exc) from None
    card = cam.card
    side = "background of " if result.background else ""
    print(layer_line)
    print(f"region: {result.region.describe()} ({int(result.mask.sum()):,} px); "
          f"{side}{_class_label(card, result.class_index)}")
    summed = "pre-sigmoid logit" if cam.exact_logit else "log-odds"
    print(f"score: {result.score:.6g} (sum of the {summed} over the region"
          f"{', negated' if result.background else ''}); peak {result.peak:.6g}")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {_dn(targets[0])} and {_dn(targets[1])}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "predict":
            return cmd_predict(args)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "inspect":
            return cmd_inspect(args)
        if args.command == "ensemble":
            return cmd_ensemble(args, argv)
        if args.command == "calibrate":
            return cmd_calibrate(args, argv)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "explain":
            return cmd_explain(args)
        return cmd_train(args, argv)
    except UnetCoreError as exc:
        print(f"error: {_dn(exc, 2000)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # any file-system failure not turned into a message above
        where = f"{_dn(exc.filename)}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or type(exc).__name__}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; try smaller images or --batch-size", file=sys.stderr)
        return EXIT_USER_ERROR
