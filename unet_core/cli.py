"""Command line: ``python -m unet_core predict|evaluate|inspect|train|ensemble|calibrate``.

Every command has ``--help``. User errors (bad file, bad folder, bad model, bad option) print one
line ``error: ...`` on stderr and exit with status 2; nothing is written over an input file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from .backends import BACKENDS  # noqa: E402
from .errors import UnetCoreError  # noqa: E402
from .metrics import SELECT_METRICS  # noqa: E402
from .padding import PAD_MODES  # noqa: E402

EXIT_USER_ERROR = 2
BACKEND_HELP = ("inference backend: auto (default: ONNX Runtime on a cached export, checked "
                "against Keras; TensorFlow if that is unavailable), onnxruntime or tensorflow; "
                "env UNET_BACKEND sets the default")


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


MIN_AREA_HELP = ("minimum-area rule: a mask with fewer foreground pixels is emptied (0 = off; "
                 "default: the model card's)")
SELECT_MIN_AREA_HELP = ("also pick a minimum-area rule on validation, 0 unless it helps "
                        "(default: on)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for all sub-commands."""
    p = argparse.ArgumentParser(
        prog="python -m unet_core",
        description="U-Net Explorer engine: segment images, score models, look inside them.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pr = sub.add_parser("predict", help="segment images; writes NAME_mask.png and NAME_prob.npy",
                        description="Segment image files or folders of images. For each input "
                        "NAME.ext writes OUT/NAME_mask.png (0/255) and OUT/NAME_prob.npy "
                        "(float32 HxW probabilities). Never overwrites an input file.")
    pr.add_argument("--model", required=True, help=".keras or .h5 model (card: NAME.json)")
    pr.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    pr.add_argument("--out", required=True, help="output folder (created if missing)")
    pr.add_argument("--threshold", type=_threshold, help="default: the model card's")
    pr.add_argument("--min-area", type=_min_area, help=MIN_AREA_HELP)
    pr.add_argument("--padding", choices=PAD_MODES, help="default: the model card's")
    pr.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="flip test-time augmentation (default: the model card's)")
    pr.add_argument("--backend", choices=BACKENDS, default=None, help=BACKEND_HELP)

    ev = sub.add_parser("evaluate", help="score a model on a folder (or .zip) of pairs",
                        description="Score a model on DIR/images/NAME + DIR/masks/NAME pairs (or a "
                        ".zip holding such a folder): metrics at the card's threshold, and a "
                        "sweep of 101 thresholds for the best one.")
    ev.add_argument("--model", required=True)
    ev.add_argument("--data", required=True, help="folder with images/ and masks/, or a .zip")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--threshold", type=_threshold, help="default: the model card's")
    ev.add_argument("--min-area", type=_min_area, help=MIN_AREA_HELP)
    ev.add_argument("--padding", choices=PAD_MODES, help="default: the model card's")
    ev.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None)
    ev.add_argument("--names", help="text file of image names (one per line) to evaluate only")
    ev.add_argument("--select", default="tgs_metric", choices=tuple(SELECT_METRICS),
                    help="metric that picks the best threshold")
    ev.add_argument("--invert-masks", action=argparse.BooleanOptionalAction, default=None,
                    help="score against the complement of each mask (default: the model card's "
                    "truth_inverted, true for em_membrane, whose ISBI masks mark cell interiors)")
    ev.add_argument("--per-image", metavar="CSV", help="also write per-image results to CSV")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--backend", choices=BACKENDS, default=None, help=BACKEND_HELP)

    ins = sub.add_parser("inspect", help="print the model card and layer table")
    ins.add_argument("--model", required=True)
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
    return p


def _segmenter(args: argparse.Namespace):
    from .inference import Segmenter
    from .model import load_model

    loaded = load_model(args.model)
    return Segmenter(loaded, padding_mode=getattr(args, "padding", None),
                     tta=getattr(args, "tta", None), backend=getattr(args, "backend", None))


def _backend_line(seg) -> str:
    note = seg.backend.note
    return f"backend {seg.backend.name}" + (f" ({note})" if note else "")


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from .io import find_images, read_image, write_mask_png
    from .metrics import threshold_mask

    images = find_images(args.inputs)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UnetCoreError(f"--out {out}: exists and is not a folder")
    inputs = {p.resolve() for p in images}
    stems: dict[str, Path] = {}
    for p in images:
        if p.stem in stems:
            raise UnetCoreError(f"two inputs would write the same outputs: {stems[p.stem]} and "
                                f"{p}; predict them into different --out folders")
        stems[p.stem] = p
        for target in (out / f"{p.stem}_mask.png", out / f"{p.stem}_prob.npy"):
            if target.resolve() in inputs:
                raise UnetCoreError(f"refusing to overwrite input file {target}; choose another "
                                    "--out folder")
    seg = _segmenter(args)
    t = seg.card.threshold if args.threshold is None else args.threshold
    k = seg.card.min_area if args.min_area is None else args.min_area
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for p in tqdm(images, desc="predict", unit="img", disable=len(images) < 2, file=sys.stderr):
        try:
            prob = seg.predict_proba(read_image(p))
        except UnetCoreError as exc:
            failures += 1
            tqdm.write(f"error: {exc}", file=sys.stderr)
            continue
        np_path = out / f"{p.stem}_prob.npy"
        np.save(np_path, prob.astype(np.float32))
        write_mask_png(out / f"{p.stem}_mask.png", threshold_mask(prob, t, k))
    done = len(images) - failures
    area = f"minimum area {k} px; " if k else ""
    print(f"wrote {done} mask(s) and probability map(s) to {out} (threshold {t:g}; {area}"
          f"{_backend_line(seg)})", file=sys.stderr)
    return 1 if failures else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .evaluate import evaluate_pairs
    from .io import find_pairs, open_dataset

    seg = _segmenter(args)
    with open_dataset(args.data) as root:
        pairs = find_pairs(root, require_masks=True)
        if args.names:
            try:
                wanted = {ln.strip() for ln in Path(args.names).read_text().splitlines()
                          if ln.strip()}
            except OSError as exc:
                raise UnetCoreError(f"--names {args.names}: cannot read ({exc})") from None
            missing = wanted - {p.name for p in pairs}
            if missing:
                raise UnetCoreError(f"--names: {len(missing)} name(s) not in {args.data}, e.g. "
                                    f"{sorted(missing)[:5]}")
            pairs = [p for p in pairs if p.name in wanted]
        bar = tqdm(total=len(pairs), desc="evaluate", unit="img", file=sys.stderr,
                   disable=None)

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        invert = seg.card.truth_inverted if args.invert_masks is None else args.invert_masks
        ev = evaluate_pairs(seg, pairs, padding_mode=args.padding, threshold=args.threshold,
                            select_metric=args.select, batch_size=args.batch_size,
                            progress=progress, invert_masks=invert, min_area=args.min_area)
        bar.close()
    summary = {"model": str(args.model), "data": str(args.data), **ev.summary(),
               "backend": seg.backend.name, "masks_inverted": bool(invert)}
    if args.per_image:
        import csv

        rows = ev.sweep.per_image(ev.threshold)
        with open(args.per_image, "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=list(rows[0]))
            wr.writeheader()
            wr.writerows(rows)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"model {args.model} on {args.data}: {summary['n']} images; {_backend_line(seg)}"
          + ("; masks inverted (they mark the other class)" if invert else ""))
    if summary["min_area"]:
        print(f"minimum area {summary['min_area']} px: masks with fewer foreground pixels are "
              "emptied (all figures below)")
    print(f"at threshold {summary['threshold']:.2f} (model card): IoU {summary['iou']:.4f}  "
          f"Dice {summary['dice']:.4f}  precision {summary['precision']:.4f}  "
          f"recall {summary['recall']:.4f}  TGS metric {summary['tgs_metric']:.4f}")
    print(f"best threshold {summary['best_threshold']:.2f} (by {args.select}): "
          f"TGS metric {summary['best_tgs_metric']:.4f}  "
          f"IoU {summary['iou_at_best_threshold']:.4f}  "
          f"Dice {summary['dice_at_best_threshold']:.4f}")
    print(f"best mean IoU {summary['best_iou']:.4f} at threshold "
          f"{summary['best_iou_threshold']:.2f}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .introspect import format_layer_table, layer_table
    from .model import load_model

    loaded = load_model(args.model)
    card = loaded.card
    if args.json:
        print(json.dumps({"card": card.to_dict(), "card_found": loaded.card_found,
                          "layers": [r.as_row() for r in layer_table(loaded.model)]},
                         default=str))
        return 0
    print(f"{card.name}: {card.description or '(no description)'}")
    src = "model card" if loaded.card_found else "inferred (no card found)"
    print(f"input {card.input_spec}, normalisation {card.normalisation}, padding "
          f"{card.padding_mode}, threshold {card.threshold:g}, minimum area {card.min_area} px"
          f"  [{src}]")
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

    print(f"{args.model}: card rewritten (the model file is unchanged)")
    print(f"  before: {figures(old)}")
    print(f"  after:  {figures(new)}")
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
        return cmd_train(args, argv)
    except UnetCoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; try smaller images or --batch-size", file=sys.stderr)
        return EXIT_USER_ERROR
