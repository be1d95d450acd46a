"""``--engine ray``: ``predict`` and ``evaluate`` as a Ray Data pipeline (one machine or a cluster).

The pipeline is the local engine's, cut into stages that Ray schedules:

1. **read + decode** (Ray tasks, :func:`decode_batch` / :func:`decode_pairs_batch`): each input
   is read as a binary file and decoded by :func:`unet_core.io.read_raw` (evaluate: the pair by
   :func:`unet_core.io.load_pair`), exactly as the local engine reads it;
2. **predict** (a pool of actors, :class:`Predictor`): every actor loads the model ONCE from what
   :func:`model_spec` ships (never a pickled Keras model): the ONNX Runtime export the local
   engine built (its bytes, from the export cache), a user's ``.onnx`` graph, or, for
   ``--backend tensorflow``, the model file's path. ONNX Runtime's intra-op threads equal the
   actor's CPUs. The actor's :class:`~unet_core.inference.Segmenter` carries the driver's
   settings (card, fit, padding, TTA, tiling), so an image takes the same code path;
3. **score / write** (Ray tasks): :func:`score_batch` turns each probability map into its
   sweep counts (:class:`~unet_core.metrics.SweepAccumulator`), :func:`write_batch` writes
   ``NAME_prob.npy``, ``NAME_mask.png`` (``NAME_labels.png``) with the local engine's writers,
   each file under a temporary name and renamed, so a present file is a complete one.

The driver sorts what comes back by the local engine's order and hands the counts to the local
accumulator code (:func:`sweep_from_rows`), so ``evaluate --json`` is the local one; a Parquet
table holds one row of metrics per image (per slice for a volume). Volumes: the driver reads the
volume, ships its slices (scaled as :mod:`unet_core.volume_predict` scales them) as the items,
and writes the cube back once through :func:`unet_core.volume.write_volume`.

Sizing (:func:`plan`): without an address Ray starts locally with every core; actors take a
fraction of a CPU each so that at least one CPU stays free for the read/score/write tasks (on a
small machine, actors that claim every CPU starve the readers and the pipeline never finishes).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UnetCoreError

INSTALL_HINT = ("--engine ray needs Ray, which is not installed: pip install -r "
                "requirements-ray.txt (or pip install '.[ray]')")
#: the per-image metrics table ``predict --engine ray`` writes into --out
METRICS_TABLE = "metrics.parquet"

Batch = dict[str, Any]


def require_ray() -> Any:
    """The ``ray`` module, or a one-line UnetCoreError saying how to install it."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UnetCoreError(INSTALL_HINT) from None
    return ray


# --------------------------------------------------------------------------- arrays as bytes

def to_npy(arr: np.ndarray) -> bytes:
    """An array as ``.npy`` bytes (what ``np.save`` writes): how arrays travel between stages."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def from_npy(data: bytes) -> np.ndarray:
    """The array of :func:`to_npy` bytes."""
    return np.load(io.BytesIO(bytes(data)), allow_pickle=False)


def _col(batch: Batch, key: str) -> list[Any]:
    value = batch.get(key)
    return [] if value is None else list(value)


def _n(batch: Batch) -> int:
    return len(_col(batch, "name"))


def _message(exc: BaseException, name: str) -> str:
    """One line naming the file: the UnetCoreError's own text, else the exception's type."""
    from .io import display_name

    if isinstance(exc, UnetCoreError):
        msg = str(exc)
    elif isinstance(exc, OSError):
        msg = f"cannot read ({exc.strerror or type(exc).__name__})"
    elif isinstance(exc, MemoryError):
        msg = "out of memory"
    else:
        msg = f"failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
    shown = display_name(name)
    return msg if shown in msg else f"{shown}: {msg}"


# --------------------------------------------------------------------------- the model

@dataclass
class ModelSpec:
    """What an actor needs to rebuild the driver's :class:`~unet_core.inference.Segmenter`
    without a pickled Keras model.

    ``kind``: ``onnx`` (``payload``: the exported ONNX bytes from the export cache), ``graph``
    (``payload``: the driver's :class:`~unet_core.backends.OnnxGraphBackend` without its
    session: a user's ``.onnx`` graph), ``session`` (another ONNX Runtime backend on a graph
    file, e.g. int8: (the backend without its session, the file's bytes)) or ``tensorflow``
    (``payload``: (model path, weights path or None, trusted) to load the file once).
    ``state``: the segmenter's settings (card, fit, padding, TTA, tiling, memory estimate).
    """

    kind: str
    payload: Any
    state: dict[str, Any]
    backend_name: str
    backend_note: str = ""
    logits: bool = False


_SKIP = ("loaded", "model", "backend")


def model_spec(seg: Any) -> ModelSpec:
    """The :class:`ModelSpec` of a built segmenter (its backend decides what is shipped)."""
    from .backends import OnnxBackend, OnnxGraphBackend, TensorFlowBackend

    state = {k: v for k, v in vars(seg).items() if k not in _SKIP}
    backend = seg.backend
    logits = seg.card.output == "logits"
    if isinstance(backend, OnnxBackend):
        kind, payload = "onnx", Path(backend.path).read_bytes()
    elif isinstance(backend, OnnxGraphBackend):
        light = object.__new__(OnnxGraphBackend)
        light.__dict__.update({k: v for k, v in vars(backend).items() if k != "_session"})
        kind, payload = "graph", light
    elif getattr(backend, "_session", None) is not None and getattr(backend, "path", None):
        # another ONNX Runtime backend on a graph file (the int8 one): itself without its
        # session, plus the graph's bytes to open one in the actor
        light = object.__new__(type(backend))
        light.__dict__.update({k: v for k, v in vars(backend).items() if k != "_session"})
        kind, payload = "session", (light, Path(backend.path).read_bytes())
    elif isinstance(backend, TensorFlowBackend):
        loaded = seg.loaded
        if loaded.path is None:
            raise UnetCoreError("--engine ray needs a model file (an in-memory model cannot be "
                                "shipped to workers); accepted: --model PATH")
        weights = None if loaded.weights_path is None else str(loaded.weights_path)
        kind, payload = "tensorflow", (str(loaded.path), weights, bool(loaded.trusted))
    else:
        raise UnetCoreError(f"--engine ray: backend {backend.name} cannot be shipped to workers; "
                            "accepted: auto, onnxruntime or tensorflow")
    return ModelSpec(kind, payload, state, backend.name, backend.note, logits)


class _SessionBackend:
    """ONNX Runtime on the exported bytes: the same session options and output handling as
    :class:`~unet_core.backends.OnnxBackend`."""

    name = "onnxruntime"
    note = ""

    def __init__(self, model: bytes, logits: bool) -> None:
        from .backends import _session

        self._session = _session(bytes(model))
        self._logits = logits

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from .backends import _run

        return _run(self._session, x, self._logits)


def build_segmenter(spec: ModelSpec, threads: int = 0) -> Any:
    """A :class:`~unet_core.inference.Segmenter` equal to the driver's, built from ``spec``
    (in an actor). ``threads``: ONNX Runtime intra-op threads (0 = its default)."""
    from .inference import Segmenter
    from .model import LoadedModel

    os.environ["UNET_THREADS"] = str(max(0, int(threads)))
    card = spec.state["card"]
    if spec.kind == "onnx":
        payload = spec.payload
        if not isinstance(payload, bytes | bytearray):  # an object-store reference
            import ray

            payload = ray.get(payload)
        backend: Any = _SessionBackend(payload, spec.logits)
        loaded = LoadedModel(model=None, card=card)
    elif spec.kind == "graph":
        from .backends import _session

        backend = spec.payload
        graph = backend.graph
        backend._session = _session(graph.path if Path(graph.path).is_file()
                                    else graph.proto.SerializeToString())
        loaded = LoadedModel(model=graph, card=card, path=Path(graph.path))
    elif spec.kind == "session":
        from .backends import _session

        backend, model = spec.payload
        backend._session = _session(bytes(model))
        loaded = LoadedModel(model=None, card=card)
    elif spec.kind == "tensorflow":
        from .backends import TensorFlowBackend
        from .model import load_model

        path, weights, trusted = spec.payload
        loaded = load_model(path, safe_mode=not trusted, weights=weights)
        loaded.card = card
        backend = TensorFlowBackend(loaded)
    else:
        raise UnetCoreError(f"unknown model spec kind {spec.kind!r}; accepted: onnx, graph, "
                            "tensorflow")
    seg = object.__new__(Segmenter)
    seg.__dict__.update(spec.state)
    seg.loaded, seg.model, seg.backend = loaded, loaded.model, backend
    seg.backend.note = spec.backend_note
    return seg


# --------------------------------------------------------------------------- per-batch stages

def decode_batch(batch: Batch, max_pixels: int | None = None) -> Batch:
    """Read + decode images. In: ``name`` (file name), ``path``, ``stem``. Out: those plus
    ``image`` (.npy bytes of the array as :func:`~unet_core.io.read_raw` decodes it; b"" on
    failure) and ``error`` ("" or one line naming the file)."""
    from .io import read_raw

    images, errors = [], []
    for name, path in zip(_col(batch, "name"), _col(batch, "path"), strict=True):
        try:
            data = Path(path).read_bytes()
            images.append(to_npy(read_raw(data, name=name, max_pixels=max_pixels)))
            errors.append("")
        except Exception as exc:  # noqa: BLE001 - one bad file is reported; the rest go on
            images.append(b"")
            errors.append(_message(exc, name))
    return {**{k: _col(batch, k) for k in batch}, "image": images, "error": errors}


def decode_pairs_batch(batch: Batch, invert: bool = False,
                       max_pixels: int | None = None) -> Batch:
    """Read + decode image/mask pairs as :func:`~unet_core.evaluate.evaluate_pairs` does
    (:func:`~unet_core.io.load_pair`, raw image, binary mask). In: ``name``, ``image_path``,
    ``mask_path``. Out: plus ``image`` and ``truth`` (.npy bytes; bool (H, W), inverted with
    ``invert``), ``soft`` (the mask had to be thresholded) and ``error``."""
    from .io import Pair, load_pair

    images, truths, soft, errors = [], [], [], []
    for name, ip, mp in zip(_col(batch, "name"), _col(batch, "image_path"),
                            _col(batch, "mask_path"), strict=True):
        found: list[str] = []
        try:
            img, mask = load_pair(Pair(name, Path(ip), Path(mp)), max_pixels=max_pixels,
                                  raw=True, soft_masks=found)
            if mask is None:  # pragma: no cover - the driver only sends pairs with a mask
                raise UnetCoreError(f"{name}: no mask; evaluation needs a mask for every image")
            images.append(to_npy(img))
            truths.append(to_npy(~mask if invert else mask))
            soft.append(bool(found))
            errors.append("")
        except Exception as exc:  # noqa: BLE001
            images.append(b"")
            truths.append(b"")
            soft.append(False)
            errors.append(_message(exc, name))
    return {**{k: _col(batch, k) for k in batch}, "image": images, "truth": truths,
            "soft": soft, "error": errors}


def predict_batch(seg: Any, batch: Batch, *, per_image: bool = True,
                  class_index: int | None = None, all_classes: bool = True) -> Batch:
    """Predict the decoded images of a batch. ``per_image``: one
    :meth:`~unet_core.inference.Segmenter.predict_classes` call per image (``predict``);
    otherwise one :meth:`~unet_core.inference.Segmenter.predict_batch_classes` call for the
    batch (``evaluate``, volumes). Out: the batch without ``image``, plus ``prob`` (.npy bytes
    of float32 (H, W, K) with ``all_classes``, else (H, W) of ``class_index``) and ``error``."""
    errors = list(_col(batch, "error")) or [""] * _n(batch)
    names = _col(batch, "name")
    raw = _col(batch, "image")
    probs: list[bytes] = [b""] * len(names)
    todo = [i for i, e in enumerate(errors) if not e]

    def keep(i: int, p: np.ndarray) -> None:
        p = np.asarray(p, np.float32)
        probs[i] = to_npy(p if all_classes else np.ascontiguousarray(p[..., class_index]))

    if per_image:
        for i in todo:
            try:
                keep(i, seg.predict_classes(from_npy(raw[i])))
            except Exception as exc:  # noqa: BLE001
                errors[i] = _message(exc, names[i])
    elif todo:
        images = [from_npy(raw[i]) for i in todo]
        try:
            for i, p in zip(todo, seg.predict_batch_classes(images), strict=True):
                keep(i, p)
        except Exception:  # noqa: BLE001 - find the image that fails, one at a time
            for i, im in zip(todo, images, strict=True):
                try:
                    keep(i, seg.predict_batch_classes([im])[0])
                except Exception as exc:  # noqa: BLE001
                    errors[i] = _message(exc, names[i])
    out = {k: _col(batch, k) for k in batch if k != "image"}
    return {**out, "prob": probs, "error": errors}


def score_batch(batch: Batch, thresholds: np.ndarray | None = None) -> Batch:
    """Sweep counts of each (prob, truth) pair with the local accumulator
    (:class:`~unet_core.metrics.SweepAccumulator`). Out: ``name``, ``error``, ``soft``,
    ``tp``/``fp`` (lists of T int64 counts), ``pos``/``neg`` (int64)."""
    from .metrics import SweepAccumulator

    tp, fp, pos, neg = [], [], [], []
    errors = list(_col(batch, "error")) or [""] * _n(batch)
    names = _col(batch, "name")
    for i, (pb, tb) in enumerate(zip(_col(batch, "prob"), _col(batch, "truth"), strict=True)):
        counts: tuple[list[int], list[int], int, int] = ([], [], 0, 0)
        if not errors[i]:
            try:
                acc = SweepAccumulator(thresholds)
                acc.add(from_npy(pb), from_npy(tb), str(names[i]))
                counts = (acc._tp[0][0].tolist(), acc._fp[0][0].tolist(),
                          int(acc._pos[0][0]), int(acc._neg[0][0]))
            except Exception as exc:  # noqa: BLE001
                errors[i] = _message(exc, names[i])
        tp.append(counts[0])
        fp.append(counts[1])
        pos.append(counts[2])
        neg.append(counts[3])
    soft = _col(batch, "soft") or [False] * len(names)
    return {"name": names, "error": errors, "soft": [bool(s) for s in soft],
            "tp": tp, "fp": fp, "pos": pos, "neg": neg}


def save_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary path)`` next to ``path``, then rename it to ``path``: a present file
    is a complete one."""
    tmp = path.with_name(f".tmp-{secrets.token_hex(6)}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def output_files(stem: str, multi: bool) -> list[str]:
    """The output names of one input, as the local ``predict`` names them."""
    from .cli import _output_name

    return [_output_name(stem, s) for s in
            ("_prob.npy", "_mask.png", *(("_labels.png",) if multi else ()))]


def write_batch(batch: Batch, out: str, *, class_index: int, threshold: float,
                min_area: int, all_classes: bool, multi: bool) -> Batch:
    """Write each prediction as the local ``predict`` does (same names, same bytes), every
    file atomically. Out: ``name``, ``error`` and per-image metrics (``height``, ``width``,
    ``foreground_px``, ``mean_prob``, ``max_prob``)."""
    from .inference import labels_from_probs
    from .io import write_label_png, write_mask_png
    from .metrics import threshold_mask

    folder = Path(out)
    names = _col(batch, "name")
    errors = list(_col(batch, "error")) or [""] * len(names)
    rows: dict[str, list[Any]] = {k: [] for k in ("height", "width", "foreground_px",
                                                  "mean_prob", "max_prob")}
    for i, (stem, pb) in enumerate(zip(_col(batch, "stem"), _col(batch, "prob"), strict=True)):
        h = w = fg = 0
        mean = peak = float("nan")
        if not errors[i]:
            try:
                probs = from_npy(pb)
                prob = np.ascontiguousarray(probs[..., class_index], dtype=np.float32)
                mask = threshold_mask(prob, threshold, min_area)
                prob_name, mask_name, *label_name = output_files(stem, multi)
                keep = probs.astype(np.float32) if all_classes else prob
                save_atomically(folder / prob_name, lambda p, a=keep: np.save(p, a))
                save_atomically(folder / mask_name, lambda p, m=mask: write_mask_png(p, m))
                if multi:
                    labels = labels_from_probs(probs)
                    save_atomically(folder / label_name[0],
                                    lambda p, lab=labels: write_label_png(p, lab))
                h, w = prob.shape
                fg, mean, peak = int(mask.sum()), float(prob.mean()), float(prob.max())
            except Exception as exc:  # noqa: BLE001
                errors[i] = _message(exc, names[i])
        for key, value in zip(rows, (h, w, fg, mean, peak), strict=True):
            rows[key].append(value)
    return {"name": names, "error": errors, **rows}


def sweep_from_rows(rows: Sequence[dict[str, Any]], thresholds: np.ndarray | None = None,
                    min_area: int = 0) -> Any:
    """The :class:`~unet_core.metrics.SweepResult` of per-image counts (rows of
    :func:`score_batch`, in the order the local engine adds them), through the local
    accumulator's own code."""
    from .metrics import SweepAccumulator, check_min_area

    acc = SweepAccumulator(thresholds)
    for r in rows:
        acc._tp.append(np.asarray([r["tp"]], np.int64))
        acc._fp.append(np.asarray([r["fp"]], np.int64))
        acc._pos.append(np.asarray([r["pos"]], np.int64))
        acc._neg.append(np.asarray([r["neg"]], np.int64))
        acc._names.append(str(r["name"]))
    return acc.result(check_min_area(min_area))


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    """A Parquet table of ``rows`` (one per image or slice), written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows)
    save_atomically(Path(path), lambda p: pq.write_table(table, p))


# --------------------------------------------------------------------------- Ray plumbing

@dataclass
class Plan:
    """How the pipeline is sized: ``workers`` actors of ``actor_cpus`` CPUs each (ONNX Runtime
    ``threads`` each), tasks of ``task_cpus``, on ``total_cpus``."""

    workers: int
    actor_cpus: float
    task_cpus: float
    threads: int
    total_cpus: float
    notes: list[str] = field(default_factory=list)


def plan(total_cpus: float, workers: int | None = None) -> Plan:
    """Size the actor pool so at least one CPU (half of one on a 1-CPU cluster) stays free for
    the read/score/write tasks: with C CPUs, ``workers`` defaults to max(1, C - 1) and each
    actor takes min(1, (C - 1) / workers) CPUs."""
    total = float(total_cpus)
    if total <= 0:
        raise UnetCoreError("the Ray cluster has no CPUs; accepted: a cluster with at least one")
    free = 1.0 if total >= 2 else total / 2
    usable = total - free
    n = max(1, int(usable)) if workers is None else int(workers)
    if n < 1:
        raise UnetCoreError(f"--workers {n}; accepted: a whole number >= 1")
    actor = min(1.0, usable / n)
    notes = []
    if actor < 0.25:
        raise UnetCoreError(f"--workers {n} is too many for {total:g} CPUs (each actor needs at "
                            f"least a quarter of a CPU and one CPU stays for reading); accepted: "
                            f"--workers <= {max(1, int(usable * 4))}")
    if actor < 1:
        notes.append(f"{n} actor(s) share {usable:g} CPU(s): {actor:g} CPU each")
    task = min(1.0, max(0.25, free / 2))
    return Plan(n, round(actor, 4), task, max(1, round(actor)), total, notes)


class Predictor:
    """The actor: loads the model once (from a :class:`ModelSpec`), predicts batches."""

    def __init__(self, spec: ModelSpec, threads: int, per_image: bool,
                 class_index: int, all_classes: bool) -> None:
        self.seg = build_segmenter(spec, threads)
        self.kw = {"per_image": per_image, "class_index": class_index,
                   "all_classes": all_classes}

    def __call__(self, batch: Batch) -> Batch:
        return _arrays(predict_batch(self.seg, batch, **self.kw))


def _arrays(batch: Batch) -> Batch:
    """Columns as numpy arrays (object arrays for bytes and lists), as Ray Data takes them."""
    out = {}
    for k, v in batch.items():
        values = list(v)
        if values and isinstance(values[0], bytes | str | list):
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            out[k] = arr
        else:
            out[k] = np.asarray(values)
    return out


def _remote(fn: Callable[..., Batch]) -> Callable[..., Batch]:
    def run(batch: Batch, **kw: Any) -> Batch:
        return _arrays(fn(batch, **kw))

    run.__name__ = fn.__name__
    return run


class RaySession:
    """Ray for one command: joins ``address`` (``auto`` or ``ray://HOST:PORT``) or starts a
    local Ray with every core (and shuts it down at the end); sizes the pipeline."""

    def __init__(self, address: str | None, workers: int | None) -> None:
        ray = require_ray()
        self.ray = ray
        self.started = False
        t0 = time.perf_counter()
        if not ray.is_initialized():
            env: dict[str, Any] = {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "3"}}
            if address:  # a cluster: the unet_core package is shipped to its workers
                env["py_modules"] = [str(Path(__file__).resolve().parent)]
            else:  # this machine: workers import it from here
                env["env_vars"]["PYTHONPATH"] = _package_root()
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.ERROR, "runtime_env": env}
            try:
                if address:
                    ray.init(address=address, **kw)
                else:
                    ray.init(num_cpus=os.cpu_count() or 1, **kw)
            except Exception as exc:  # noqa: BLE001 - cannot reach / start Ray
                where = f"--address {address}" if address else "a local Ray"
                raise UnetCoreError(f"{where}: cannot start Ray ({type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                                    "accepted: auto, ray://HOST:PORT or none (local)") from None
            self.started = True
        self.startup_s = time.perf_counter() - t0
        self.plan = plan(ray.cluster_resources().get("CPU", 0), workers)
        from ray.data import DataContext

        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # ours is tqdm on stderr
        ctx.execution_options.verbose_progress = False
        ctx.enable_auto_log_stats = False
        ctx.print_on_execution_start = False

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, items: list[dict[str, Any]], decode: Callable[..., Batch],
            decode_kw: dict[str, Any], spec: ModelSpec, predictor_kw: dict[str, Any],
            finish: Callable[..., Batch], finish_kw: dict[str, Any], batch_size: int,
            on_rows: Callable[[list[dict[str, Any]]], None]) -> None:
        """items -> decode (tasks) -> predict (actor pool) -> finish (tasks); ``on_rows`` gets
        each finished batch's rows as they arrive."""
        import ray.data

        p = self.plan
        if spec.kind == "onnx":  # the model's bytes go to the object store once
            spec = dataclasses.replace(spec, payload=self.ray.put(spec.payload))
        # at least one block (and batch) per actor, so every actor gets work
        workers = max(1, min(p.workers, len(items)))
        batch_size = max(1, min(batch_size, math.ceil(len(items) / workers)))
        blocks = min(len(items), max(workers, math.ceil(len(items) / batch_size)))
        ds = ray.data.from_items(items, override_num_blocks=max(1, blocks))
        ds = ds.map_batches(_remote(decode), fn_kwargs=decode_kw, batch_size=batch_size,
                            num_cpus=p.task_cpus, batch_format="numpy")
        ds = ds.map_batches(Predictor, fn_constructor_kwargs={
            "spec": spec, "threads": p.threads, **predictor_kw},
            batch_size=batch_size, num_cpus=p.actor_cpus,
            compute=ray.data.ActorPoolStrategy(size=workers), batch_format="numpy")
        ds = ds.map_batches(_remote(finish), fn_kwargs=finish_kw, batch_size=batch_size,
                            num_cpus=p.task_cpus, batch_format="numpy")
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy",
                                     prefetch_batches=1):
            keys = list(batch)
            n = len(batch[keys[0]]) if keys else 0
            on_rows([{k: _plain(batch[k][i]) for k in keys} for i in range(n)])


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _package_root() -> str:
    """The folder holding the ``unet_core`` package, so local workers can import it."""
    root = str(Path(__file__).resolve().parent.parent)
    prior = os.environ.get("PYTHONPATH")
    return root if not prior else f"{root}{os.pathsep}{prior}"


# --------------------------------------------------------------------------- commands

def _bar(total: int, desc: str, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=f"{desc} (ray)", unit=unit, file=sys.stderr, disable=None)


def _complete(out: Path, stem: str, multi: bool) -> bool:
    return all((out / f).is_file() for f in output_files(stem, multi))


def predict_images(args: Any, images: list[Path], seg: Any, out: Path, *,
                   class_index: int, threshold: float, min_area: int,
                   multi: bool) -> tuple[int, int, int, list[str]]:
    """``predict --engine ray`` over image files: returns (written, skipped as complete,
    failed, error lines). Writes ``OUT/metrics.parquet`` (one row per input image)."""
    todo = [p for p in images if not _complete(out, p.stem, multi)]
    skipped = len(images) - len(todo)
    rows: dict[str, dict[str, Any]] = {}
    table = out / METRICS_TABLE
    if table.is_file():  # keep the rows of images done by an earlier run
        try:
            import pyarrow.parquet as pq

            rows = {r["name"]: r for r in pq.read_table(table).to_pylist()}
        except Exception:  # noqa: BLE001 - an unreadable table is rebuilt
            rows = {}
    errors: list[str] = []
    if todo:
        spec = model_spec(seg)
        items = [{"name": p.name, "path": str(p.resolve()), "stem": p.stem} for p in todo]
        bar = _bar(len(images), "predict", "img")
        bar.update(skipped)
        with RaySession(args.address, args.workers) as session:
            for note in session.plan.notes:
                print(f"ray: {note}", file=sys.stderr)

            def on_rows(batch_rows: list[dict[str, Any]]) -> None:
                for r in batch_rows:
                    if r["error"]:
                        errors.append(r["error"])
                        bar.write(f"error: {r['error']}", file=sys.stderr)
                        rows.pop(r["name"], None)
                    else:
                        rows[r["name"]] = {k: v for k, v in r.items() if k != "error"}
                bar.update(len(batch_rows))

            try:
                session.run(items, decode_batch, {}, spec,
                            {"per_image": True, "class_index": class_index,
                             "all_classes": True},
                            write_batch, {"out": str(out.resolve()), "class_index": class_index,
                                          "threshold": float(threshold),
                                          "min_area": int(min_area),
                                          "all_classes": bool(args.all_classes), "multi": multi},
                            args.batch_size, on_rows)
            except Exception as exc:  # noqa: BLE001 - a worker died beyond its retries
                _pipeline_failed(exc, errors)
            finally:
                bar.close()
    names = {p.name for p in images}
    kept = [rows[n] for n in sorted(rows) if n in names]
    if kept:
        try:
            write_parquet(table, kept)
        except OSError as exc:
            raise UnetCoreError(f"--out {out}: cannot write {METRICS_TABLE} "
                                f"({exc.strerror or type(exc).__name__})") from None
    failed = len(todo) - sum(1 for p in todo if _complete(out, p.stem, multi))
    return len(todo) - failed, skipped, failed, errors


def _pipeline_failed(exc: BaseException, errors: list[str]) -> None:
    text = str(exc).strip().splitlines()
    line = (f"the Ray pipeline stopped ({type(exc).__name__}: {text[-1][:300] if text else ''});"
            " what was written is complete: run the same command again to finish the rest")
    errors.append(line)
    print(f"error: {line}", file=sys.stderr)


def evaluate_pairs_ray(args: Any, seg: Any, pairs: list[Any], *, invert: bool,
                       metrics_path: str | None) -> tuple[Any, list[str], list[str]]:
    """``evaluate --engine ray`` on binary masks: (the :class:`~unet_core.evaluate.Evaluation`
    the local engine would give for the pairs that could be read, error lines, soft-mask
    names). Writes the per-image Parquet table to ``metrics_path`` when given."""
    from .evaluate import Evaluation
    from .metrics import check_min_area, check_select_metric

    card = seg.card
    t = card.threshold if args.threshold is None else args.threshold
    k = check_min_area(card.min_area if args.min_area is None else args.min_area)
    metric = card.selection_metric if args.select_metric is None else check_select_metric(
        args.select_metric)
    cls = seg._class(card.default_class)
    spec = model_spec(seg)
    items = [{"name": p.name, "image_path": str(Path(p.image_path).resolve()),
              "mask_path": str(Path(p.mask_path).resolve())} for p in pairs]
    got: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    bar = _bar(len(items), "evaluate", "img")
    with RaySession(args.address, args.workers) as session:
        for note in session.plan.notes:
            print(f"ray: {note}", file=sys.stderr)

        def on_rows(batch_rows: list[dict[str, Any]]) -> None:
            for r in batch_rows:
                if r["error"]:
                    errors.append(r["error"])
                    bar.write(f"error: {r['error']}", file=sys.stderr)
                else:
                    got[r["name"]] = r
            bar.update(len(batch_rows))

        try:
            session.run(items, decode_pairs_batch, {"invert": bool(invert)}, spec,
                        {"per_image": False, "class_index": cls, "all_classes": False},
                        score_batch, {}, args.batch_size, on_rows)
        except Exception as exc:  # noqa: BLE001
            _pipeline_failed(exc, errors)
        finally:
            bar.close()
    ordered = [got[p.name] for p in pairs if p.name in got]  # the local engine's order
    if not ordered:
        raise UnetCoreError(f"--data {args.data}: no image could be evaluated "
                            f"({len(errors)} failed; first: {errors[0] if errors else '-'})")
    sweep = sweep_from_rows(ordered, min_area=k)
    ev = Evaluation(sweep, float(t), metric, cls, card.class_name(cls),
                    soft_masks=sorted(r["name"] for r in ordered if r["soft"]))
    if metrics_path:
        per = sweep.per_image(ev.threshold)
        rows = [{**row, "tp": r["tp"], "fp": r["fp"], "pos": r["pos"], "neg": r["neg"]}
                for row, r in zip(per, ordered, strict=True)]
        try:
            target = Path(metrics_path)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_parquet(target, rows)
        except OSError as exc:
            raise UnetCoreError(f"--metrics {metrics_path}: cannot write "
                                f"({exc.strerror or type(exc).__name__})") from None
    return ev, errors, ev.soft_masks


def slice_probs(args: Any, seg: Any, volume: Any, axis: str, *, class_index: int,
                all_classes: bool) -> tuple[np.ndarray, list[str]]:
    """The probability cube of a volume, its slices predicted on Ray exactly as
    :func:`~unet_core.volume_predict.segment_volume` predicts them: float32 (D0, D1, D2) of
    ``class_index``, or (D0, D1, D2, K) with ``all_classes``; plus error lines."""
    from .volume import check_voxels
    from .volume_predict import _scaler

    runner, scale = _scaler(seg, volume)
    n = volume.n_slices(axis)
    shape = volume.shape + ((seg.n_classes,) if all_classes else ())
    check_voxels(shape, f"{volume.source.name} probabilities")
    out = np.zeros(shape, np.float32)
    items = []
    for i in range(n):
        s = volume.slice(axis, i)
        items.append({"name": f"{axis} {i}", "index": i,
                      "image": to_npy(s if scale is None else scale(s))})
    spec = model_spec(runner)
    errors: list[str] = []
    done: set[int] = set()
    bar = _bar(n, "predict", "slice")
    with RaySession(args.address, args.workers) as session:
        for note in session.plan.notes:
            print(f"ray: {note}", file=sys.stderr)

        def on_rows(batch_rows: list[dict[str, Any]]) -> None:
            for r in batch_rows:
                if r["error"]:
                    errors.append(r["error"])
                    bar.write(f"error: {r['error']}", file=sys.stderr)
                    continue
                p = from_npy(r["prob"])
                volume.put_slice(out, axis, int(r["index"]), p if all_classes
                                 else p[..., class_index])
                done.add(int(r["index"]))
            bar.update(len(batch_rows))

        try:
            session.run(items, _pass, {}, spec,
                        {"per_image": False, "class_index": class_index, "all_classes": True},
                        _pass, {}, max(1, args.batch_size), on_rows)
        except Exception as exc:  # noqa: BLE001
            _pipeline_failed(exc, errors)
        finally:
            bar.close()
    if len(done) != n and not errors:
        errors.append(f"{n - len(done)} slice(s) came back from no worker")
    return out, errors


def _pass(batch: Batch) -> Batch:
    """A stage that changes nothing (volume slices are decoded already)."""
    return {k: _col(batch, k) for k in batch}


def slice_rows(volume: Any, probs: np.ndarray, mask: np.ndarray, axis: str) -> list[dict]:
    """Per-slice metrics of a predicted volume: index, foreground voxels, mean and max
    probability."""
    a = volume.axis_index(axis)
    return [{"index": i, "foreground_voxels": int(np.take(mask, i, axis=a).astype(bool).sum()),
             "mean_prob": float(np.take(probs, i, axis=a).mean()),
             "max_prob": float(np.take(probs, i, axis=a).max())}
            for i in range(volume.shape[a])]


def score_volume(seg: Any, volume: Any, labels_volume: Any, axis: str, probs: np.ndarray,
                 threshold: float | None, min_area: int | None, class_index: int
                 ) -> dict[str, Any]:
    """:func:`~unet_core.volume_predict.evaluate_volume`'s scoring of an already predicted
    probability cube (the same function: same rules, same JSON-ready dict)."""
    from . import volume_predict

    return volume_predict.score_volume(seg, volume, labels_volume, axis, probs,
                                       threshold=threshold, min_area=min_area,
                                       class_index=class_index)
