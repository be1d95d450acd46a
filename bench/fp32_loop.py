"""A plain fp32 ONNX Runtime loop: the baseline of the int8 throughput target in ``make bench``.

For each PNG of the input folder, one at a time: read it (PIL, gray), scale to [0, 1] (the
card's ``unit`` rule for 8-bit images), pad as the card says (reflect, to at least ``min_size``
and a multiple of ``multiple_of``, the larger half before), run the fp32 ONNX export with plain
onnxruntime (default session options; with the card's flip TTA the image and its mirror in one
batch of 2, averaged), crop, and write ``NAME_prob.npy`` (float32 HxW) and ``NAME_mask.png``
(0/255 at the card's threshold, emptied under its minimum area) -- what ``python -m unet_core
predict`` writes, without the engine (no TensorFlow, no Keras model load).

Usage: ``python bench/fp32_loop.py --onnx EXPORT.onnx --card models/salt.json DIR --out OUT``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image


def pad_amounts(size: int, target: int) -> tuple[int, int]:
    """(before, after) padding of ``size`` to ``target``, the larger half before."""
    total = target - size
    before = (total + 1) // 2
    return before, total - before


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--card", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--spin", action="store_true",
                    help="ONNX Runtime's default spinning worker threads (default: off, as the "
                    "engine sets them)")
    ap.add_argument("--limit", type=int, default=0, help="first N images only")
    args = ap.parse_args(argv)
    card = json.loads(Path(args.card).read_text())
    if card.get("normalisation") != "unit" or card.get("channels", 1) != 1 or \
            card.get("input_size"):
        print("fp32_loop: only gray, unit-scaled, fully convolutional cards", file=sys.stderr)
        return 2
    m, lo = int(card["multiple_of"]), int(card["min_size"])
    mode = card.get("padding_mode", "reflect")
    t, min_area, tta = float(card["threshold"]), int(card["min_area"]), bool(card["tta"])
    opts = ort.SessionOptions()
    if not args.spin:  # the engine's setting: idle threads sleep (a shared machine)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(args.onnx, sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    files = sorted(Path(args.folder).glob("*.png"))
    for p in files[:args.limit] if args.limit else files:
        img = np.asarray(Image.open(p).convert("L"), dtype=np.float32) / 255.0
        h, w = img.shape
        th, tw = -(-max(h, lo) // m) * m, -(-max(w, lo) // m) * m
        (top, bottom), (left, right) = pad_amounts(h, th), pad_amounts(w, tw)
        x = np.pad(img, ((top, bottom), (left, right)), mode=mode)[None, :, :, None]
        if tta:
            y = sess.run(None, {name: np.concatenate([x, x[:, :, ::-1]])})[0]
            y = 0.5 * (y[0] + y[1][:, ::-1])
        else:
            y = sess.run(None, {name: x})[0][0]
        prob = np.ascontiguousarray(y[top:top + h, left:left + w, 0], dtype=np.float32)
        mask = prob > t
        if np.count_nonzero(mask) < min_area:
            mask[...] = False
        np.save(out / f"{p.stem}_prob.npy", prob)
        Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).save(out / f"{p.stem}_mask.png")
        n += 1
    print(f"fp32_loop: {n} images", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
