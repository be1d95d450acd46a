"""The ``onnxruntime-int8`` backend's recipe: calibrate, quantise, check, cache.

A model's fp32 ONNX graph (the cached export of a Keras model, or a user's ``.onnx`` file) is
quantised by ONNX Runtime's static quantisation: QDQ format, per-channel int8 weights, uint8
activations whose ranges (min/max) are calibrated on real images of the model's domain:

* the images the caller gives (``calibration=DIR`` or ``$UNET_INT8_CALIBRATION``; CLI
  ``--int8-calibration DIR``): a folder of images, or a data set folder ``DIR/images`` (+
  ``DIR/masks``);
* else the model's validation split: ``NAME.split.json`` next to the model (``val`` names), the
  images under the card's training data folder (``training.data``, e.g.
  ``../shared/data/tgs_salt``, looked up from the working folder and the model's folder).

At most :data:`MAX_CALIBRATION` images are used (evenly spaced over the sorted names).

**Guard.** After quantising, the fp32 and int8 graphs both segment the calibration images (the
card's preprocessing, padding and TTA, as :class:`~unet_core.inference.Segmenter` does) and
are scored at the card's threshold and minimum area: mean per-image IoU against the masks when
every image has one, else against the fp32 masks (IoU of fp32 is then 1). An int8 graph whose
IoU moves by more than :data:`MAX_IOU_DELTA` is refused.

**Cache.** Under :func:`~unet_core.backends.cache_dir`: ``KEY_int8.onnx`` and ``KEY_int8.json``,
KEY the SHA-256 of the fp32 model's key, the card, the calibration set's fingerprint (names and
bytes of its files) and the recipe's versions. The JSON records the check (IoUs, n images,
delta, verdict, versions, timings); a refused verdict is stored too (without the graph), so the
refusal is repeated at once instead of quantising again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UnetCoreError
from .model import LoadedModel

#: Most calibration images (the check runs on the same images).
MAX_CALIBRATION = 200
#: Largest change of the mean IoU (int8 vs fp32) the guard accepts.
MAX_IOU_DELTA = 0.005
#: Environment variable naming a folder of calibration images.
CALIBRATION_ENV = "UNET_INT8_CALIBRATION"
#: Bump when the recipe changes, to invalidate old cache entries.
INT8_FORMAT = 1
#: Images per calibration / check batch.
_BATCH = 8

HOW_TO_CALIBRATE = ("give calibration images with --int8-calibration DIR or "
                    f"{CALIBRATION_ENV}=DIR (a folder of images, or DIR/images + DIR/masks)")


@dataclass
class CalibrationSet:
    """Images (and masks, all or none) the int8 graph is calibrated and checked on."""

    images: list[Path]
    masks: list[Path] | None  # None: no masks, the check compares with the fp32 masks
    source: str  # one line: where they came from
    fingerprint: str  # SHA-256 (32 hex) of the names and bytes of every file

    @property
    def n(self) -> int:
        return len(self.images)


def _spread(items: list[Any], limit: int) -> list[Any]:
    """At most ``limit`` items, evenly spaced over the list (deterministic)."""
    if len(items) <= limit:
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode("utf-8", "surrogateescape") + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\1")
    return h.hexdigest()[:32]


def _make_set(pairs: list[tuple[Path, Path | None]], source: str, limit: int) -> CalibrationSet:
    pairs = _spread(sorted(pairs, key=lambda p: p[0].name), limit)
    images = [p for p, _ in pairs]
    masks = [m for _, m in pairs]
    have_masks = all(m is not None for m in masks)
    files = images + ([m for m in masks if m is not None] if have_masks else [])
    total = f"{len(images)} images" + (" with masks" if have_masks else "")
    return CalibrationSet(images, masks if have_masks else None,  # type: ignore[arg-type]
                          f"{source} ({total})", _fingerprint(files))


def _from_folder(folder: Path, limit: int) -> CalibrationSet:
    """A user's folder: DIR/images (+ DIR/masks) as a data set, else the images in DIR."""
    from .io import find_images, find_pairs

    if not folder.is_dir():
        raise UnetCoreError(f"int8 calibration folder {folder}: no such folder; "
                            + HOW_TO_CALIBRATE)
    if (folder / "images").is_dir():
        pairs = [(p.image_path, p.mask_path) for p in find_pairs(folder, require_masks=False)]
    else:
        pairs = [(p, None) for p in find_images([folder])]
    return _make_set(pairs, f"calibration folder {folder}", limit)


def _data_folder(loaded: LoadedModel) -> Path | None:
    """The card's training data folder (``training.data``), found from the working folder,
    the model's folder or the one above it; None when it is not on this machine."""
    data = (loaded.card.training or {}).get("data")
    if not isinstance(data, str) or not data:
        return None
    candidates = [Path(data)]
    if loaded.path is not None and not Path(data).is_absolute():
        here = Path(loaded.path).resolve().parent
        candidates += [here / data, here.parent / data]
    for c in candidates:
        if (c / "images").is_dir():
            return c
    return None


def calibration_set(loaded: LoadedModel, calibration: str | os.PathLike | None = None,
                    limit: int = MAX_CALIBRATION) -> CalibrationSet:
    """The images the int8 graph of ``loaded`` is calibrated and checked on (see the module
    docstring: ``calibration``, else ``$UNET_INT8_CALIBRATION``, else the validation split).

    Raises UnetCoreError (one line, saying how to give images) when there are none.
    """
    given = calibration if calibration is not None else (
        os.environ.get(CALIBRATION_ENV, "").strip() or None)
    if given is not None:
        return _from_folder(Path(given), limit)
    from .calibrate import read_split, split_path_for
    from .io import find_pairs

    split_file = split_path_for(loaded.path) if loaded.path is not None else None
    if split_file is None or not split_file.is_file():
        raise UnetCoreError(f"{loaded.name}: no int8 calibration data (no validation split "
                            f"{split_file.name if split_file else 'NAME.split.json'} next to "
                            f"the model); {HOW_TO_CALIBRATE}")
    folder = _data_folder(loaded)
    if folder is None:
        where = (loaded.card.training or {}).get("data") or "the card's training.data"
        raise UnetCoreError(f"{loaded.name}: no int8 calibration data (its training images "
                            f"{where} are not on this machine); {HOW_TO_CALIBRATE}")
    names = set(read_split(split_file)["val"])
    pairs = [(p.image_path, p.mask_path) for p in find_pairs(folder, require_masks=False)
             if p.name in names]
    if not pairs:
        raise UnetCoreError(f"{loaded.name}: no int8 calibration data (none of the "
                            f"{len(names)} validation images of {split_file.name} is in "
                            f"{folder}); {HOW_TO_CALIBRATE}")
    return _make_set(pairs, f"validation split {split_file.name} of {folder}", limit)


def int8_key(base_key: str, loaded: LoadedModel, calib: CalibrationSet) -> str:
    """Cache key of an int8 graph: the fp32 model's key, card, calibration and recipe."""
    import onnx
    import onnxruntime

    card = json.dumps(loaded.card.to_dict(), sort_keys=True, default=str)
    parts = [base_key, card, calib.fingerprint, f"int8 {INT8_FORMAT}",
             f"ort {onnxruntime.__version__}", f"onnx {onnx.__version__}",
             f"limit {MAX_IOU_DELTA}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def versions() -> dict[str, str]:
    """Versions the int8 recipe depends on (recorded with each cache entry)."""
    import onnx
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
            "recipe": f"static QDQ, per-channel int8 weights, uint8 activations, MinMax "
                      f"(format {INT8_FORMAT})"}


def quantise_static_int8(fp32_path: Path, out: Path, feeds: Iterator[dict[str, np.ndarray]]
                         ) -> Path:
    """ONNX Runtime static int8 quantisation of the graph ``fp32_path`` into ``out``: QDQ,
    per-channel int8 weights, uint8 activations, min/max ranges calibrated on ``feeds``
    (input name -> batch in the graph's layout and dtype). Returns ``out``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    import onnx

    with tempfile.TemporaryDirectory(prefix="unet_int8_", dir=out.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        head = output_head(onnx.load(str(pre), load_external_data=False))
        # min/max merged every 8 batches, so calibration memory stays bounded
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=head,
                        extra_options={"CalibMaxIntermediateOutputs": 8})
    return out


#: Ops between the last convolution and the graph's output that stay in float.
_HEAD_OPS = frozenset({"Sigmoid", "Softmax", "Transpose", "Reshape", "Squeeze", "Unsqueeze",
                       "Identity", "Add", "Cast", "Flatten"})


def output_head(proto: Any) -> list[str]:
    """Names of the nodes from the graph's last convolution to its output (the logits and
    the sigmoid / softmax): kept in float, so the map thresholded is not stepped by 8 bits."""
    producers = {o: n for n in proto.graph.node for o in n.output}
    names: list[str] = []
    todo = [o.name for o in proto.graph.output]
    seen: set[str] = set()
    while todo:
        node = producers.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
            names.append(node.name)
        elif node.op_type in _HEAD_OPS:
            names.append(node.name)
            todo.extend(i for i in node.input if i in producers)
    return names


@dataclass
class GraphIO:
    """How a prepared batch reaches the fp32 graph being quantised."""

    path: Path  # the fp32 graph
    input_name: str
    to_feed: Callable[[np.ndarray], np.ndarray]  # (N, H, W, C) float32 -> the graph's input
    fixed_batch: int | None  # the graph's fixed batch size, None when dynamic


def _prepared(seg: Any, calib: CalibrationSet) -> Iterator[tuple[list[np.ndarray],
                                                                   list[np.ndarray | None]]]:
    """Batches (images as decoded, masks bool or None) of the calibration set; an image the
    network would tile is cut to one tile (its top-left corner) first."""
    from .io import Pair, load_pair, read_raw

    invert = bool(seg.card.truth_inverted)
    images: list[np.ndarray] = []
    masks: list[np.ndarray | None] = []
    for i, path in enumerate(calib.images):
        if calib.masks is not None:
            img, mask = load_pair(Pair(path.name, path, calib.masks[i]), raw=True)
            mask = None if mask is None else (~mask if invert else mask)
        else:
            img, mask = read_raw(path), None
        h, w = img.shape[:2]
        if seg.network_size(h, w) is None:
            th, tw = seg.tile_size(h, w)
            img = img[:th, :tw]
            mask = None if mask is None else mask[:th, :tw]
        images.append(img)
        masks.append(mask)
        if len(images) == _BATCH:
            yield images, masks
            images, masks = [], []
    if images:
        yield images, masks


def _feeds(seg: Any, io: GraphIO, calib: CalibrationSet) -> Iterator[dict[str, np.ndarray]]:
    """Calibration feeds: the prepared (padded) images, batched by size, in the graph's
    layout and dtype (a fixed-batch graph gets exactly its batch, the last image repeated)."""
    for images, _ in _prepared(seg, calib):
        by_shape: dict[tuple[int, ...], list[np.ndarray]] = {}
        for img in images:
            x, _box = seg.prepare(img)
            by_shape.setdefault(x.shape, []).append(x)
        for xs in by_shape.values():
            if io.fixed_batch:
                for s in range(0, len(xs), io.fixed_batch):
                    chunk = xs[s:s + io.fixed_batch]
                    chunk += [chunk[-1]] * (io.fixed_batch - len(chunk))
                    yield {io.input_name: io.to_feed(np.stack(chunk))}
            else:
                yield {io.input_name: io.to_feed(np.stack(xs))}


def measure_guard(seg: Any, fp32: Any, int8: Any, calib: CalibrationSet
                  ) -> dict[str, Any]:
    """Segment the calibration images with both backends (``seg``'s preprocessing, padding
    and TTA) and score them at the card's threshold and minimum area -> the check's record:
    ``iou_fp32``, ``iou_int8`` (mean per-image IoU vs the masks, or vs the fp32 masks when the
    set has none), ``delta`` (int8 - fp32), ``n``, ``reference``, ``max_abs_prob_diff``."""
    from .metrics import SweepAccumulator, threshold_mask

    card = seg.card
    t, k = float(card.threshold), int(card.min_area)
    grid = np.array([t])
    acc32, acc8 = SweepAccumulator(grid), SweepAccumulator(grid)
    saved = seg.backend
    max_diff = 0.0
    n = 0
    try:
        for images, masks in _prepared(seg, calib):
            seg.backend = fp32
            p32 = seg.predict_batch(images)
            seg.backend = int8
            p8 = seg.predict_batch(images)
            for a, b, m in zip(p32, p8, masks, strict=True):
                truth = m if m is not None else threshold_mask(a, t, k)
                name = f"{n}"
                acc32.add(a, truth, name)
                acc8.add(b, truth, name)
                max_diff = max(max_diff, float(np.abs(a - b).max()))
                n += 1
    finally:
        seg.backend = saved
    iou32 = float(acc32.result(k).summary_at(t)["iou"])
    iou8 = float(acc8.result(k).summary_at(t)["iou"])
    return {"iou_fp32": iou32, "iou_int8": iou8, "delta": iou8 - iou32, "n": n,
            "reference": "masks" if calib.masks is not None else "fp32 masks",
            "threshold": t, "min_area": k, "max_abs_prob_diff": max_diff}


def refusal(name: str, check: dict[str, Any]) -> str:
    """The one-line refusal of an int8 graph whose IoU moved too much."""
    ref = "the masks" if check.get("reference") == "masks" else "the fp32 masks"
    return (f"{name}: int8 refused: mean IoU vs {ref} on {check['n']} calibration images is "
            f"{check['iou_int8']:.4f} int8 vs {check['iou_fp32']:.4f} fp32, a change of "
            f"{abs(check['delta']):.4f} over the {MAX_IOU_DELTA:g} limit; use --backend "
            "onnxruntime")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_entry(folder: Path, key: str) -> tuple[Path, dict[str, Any]] | None:
    """A complete cache entry (graph path, record), or None. A refused record has no graph."""
    path, meta = folder / f"{key}_int8.onnx", folder / f"{key}_int8.json"
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("verdict") not in ("accepted", "refused"):
        return None
    if info["verdict"] == "accepted" and not path.is_file():
        return None
    return path, info


def build_int8(loaded: LoadedModel, seg: Any, io: GraphIO, calib: CalibrationSet,
               make_runner: Callable[[Path], Any], folder: Path, key: str
               ) -> tuple[Path, dict[str, Any]]:
    """Quantise, check and cache one int8 graph -> (path, record). ``seg`` is a Segmenter on
    the fp32 backend; ``make_runner(path)`` makes an int8 backend from a graph file. Raises
    UnetCoreError (after recording it) when the guard refuses the graph."""
    folder.mkdir(parents=True, exist_ok=True)
    path, meta = folder / f"{key}_int8.onnx", folder / f"{key}_int8.json"
    fd, tmp_name = tempfile.mkstemp(suffix=".int8.onnx", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        t0 = time.perf_counter()
        try:
            quantise_static_int8(io.path, tmp, _feeds(seg, io, calib))
        except UnetCoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - any quantiser failure means "no int8"
            text = str(exc).strip().splitlines()
            raise UnetCoreError(f"{loaded.name}: int8 quantisation failed ({type(exc).__name__}"
                                f"{': ' + text[0][:200] if text else ''}); use --backend "
                                "onnxruntime") from None
        quantise_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        check = measure_guard(seg, seg.backend, make_runner(tmp), calib)
        verdict = "refused" if abs(check["delta"]) > MAX_IOU_DELTA else "accepted"
        info = {"verdict": verdict, "model": loaded.name, **check, "limit": MAX_IOU_DELTA,
                "calibration": {"source": calib.source, "n": calib.n,
                                "fingerprint": calib.fingerprint},
                "versions": versions(), "quantise_s": round(quantise_s, 2),
                "check_s": round(time.perf_counter() - t1, 2),
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        if verdict == "accepted":
            os.replace(tmp, path)
        else:
            path.unlink(missing_ok=True)
        _write_json(meta, info)
    finally:
        tmp.unlink(missing_ok=True)
    if verdict == "refused":
        raise UnetCoreError(refusal(loaded.name, info))
    return path, info
