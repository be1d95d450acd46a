"""Inference backends: the network as a function (N, H, W, C) float32 -> (N, H, W, K) probabilities.

C is the card's input channels; K is 1 (one sigmoid map) or the number of softmax classes.
A ``logits`` model gets its sigmoid (K = 1) or softmax over K (K >= 2) applied here.

Two backends run the same weights:

* ``tensorflow``: the Keras model inside one ``tf.function`` traced once for any batch and size.
* ``onnxruntime``: the model exported once to ONNX (Keras ``model.export(format="onnx")``) and run
  by ONNX Runtime. The export is cached on disk under :func:`cache_dir` as ``KEY.onnx``, where
  KEY is the SHA-256 of the model file (or of its weights and config for an in-memory model) plus
  the exporter versions, so a changed model file gets a new export. At export time the ONNX output
  is compared with Keras on a fixed random sample; the maximum absolute difference is stored next
  to the export (``KEY.json``) and reported as :attr:`OnnxBackend.max_abs_diff`.

``onnxruntime-int8`` (opt-in, never chosen by ``auto``) runs that export -- or a user's ``.onnx``
graph -- statically quantised to int8, calibrated on the model's validation split or on images
the user gives, cached as ``KEY_int8.onnx`` + ``KEY_int8.json`` and refused when its IoU on the
calibration images moves by more than 0.005 (see :mod:`unet_core.quantize`).

``auto`` (the default) picks ``onnxruntime`` for a model loaded from a file when it is installed,
the export succeeds and the difference is below :data:`MAX_ABS_DIFF`; otherwise ``tensorflow``,
with the reason kept in :attr:`Backend.note`. Environment: ``UNET_BACKEND`` overrides the default
choice, ``UNET_CACHE_DIR`` moves the export cache, ``UNET_THREADS`` caps ONNX Runtime's threads,
``UNET_INT8_CALIBRATION`` names a folder of int8 calibration images.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import budget
from .errors import UnetCoreError
from .model import LoadedModel

BACKENDS: tuple[str, ...] = ("auto", "onnxruntime", "tensorflow", "onnxruntime-int8")
MAX_ABS_DIFF = 1e-3  # an export whose probabilities differ more than this from Keras is not used
_EXPORT_FORMAT = 2  # bump when the export recipe changes, to invalidate old cache entries


def default_backend() -> str:
    """The backend name used when none is given: ``UNET_BACKEND`` or ``auto``."""
    name = os.environ.get("UNET_BACKEND", "auto").strip().lower() or "auto"
    return check_backend(name)


def check_backend(name: str) -> str:
    """Validate a backend name; returns it."""
    if name not in BACKENDS:
        raise UnetCoreError(f"unknown backend {name!r}; accepted: {', '.join(BACKENDS)}")
    return name


def cache_dir() -> Path:
    """Folder of ONNX exports: ``$UNET_CACHE_DIR/onnx`` or ``~/.cache/unet-explorer/onnx``."""
    root = os.environ.get("UNET_CACHE_DIR") or Path.home() / ".cache" / "unet-explorer"
    return Path(root) / "onnx"


def _sigmoid(y: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-y))).astype(np.float32, copy=False)


def to_probabilities(y: np.ndarray) -> np.ndarray:
    """Logits (N, H, W, K) -> probabilities: sigmoid for K = 1, softmax over K for K >= 2."""
    y = np.asarray(y, dtype=np.float32)
    if y.shape[-1] == 1:
        return _sigmoid(y)
    e = np.exp(y - y.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32, copy=False)


class Backend:
    """Common interface: ``backend(x)`` with x float32 (N, H, W, C) -> float32 (N, H, W, K)."""

    name: str = ""
    note: str = ""  # why this backend was chosen (e.g. why ONNX Runtime was not)

    def __call__(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class TensorFlowBackend(Backend):
    """The Keras model in one ``tf.function`` (input signature (None, None, None, C) float32)."""

    name = "tensorflow"

    def __init__(self, loaded: LoadedModel) -> None:
        import tensorflow as tf

        model = loaded.model
        logits = loaded.card.output == "logits"
        channels = loaded.card.channels

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32)],
                     reduce_retracing=True)
        def forward(x: Any) -> Any:
            y = model(x, training=False)
            if logits:
                y = tf.sigmoid(y) if y.shape[-1] == 1 else tf.nn.softmax(y, axis=-1)
            return y

        def eager(x: Any) -> Any:
            y = model(x, training=False)
            if logits:
                y = tf.sigmoid(y) if y.shape[-1] == 1 else tf.nn.softmax(y, axis=-1)
            return y

        self._forward = forward
        self._eager = eager
        self._traced_ok = False

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._traced_ok:
            return as_nhwk(self._forward(x).numpy(), x.shape)
        try:
            y = self._forward(x)
        except Exception:  # noqa: BLE001 - a graph trace can fail (e.g. layer names TF
            # refuses in a graph) where the eager call works: use that from now on
            self._forward = self._eager
            y = self._forward(x)
        self._traced_ok = True
        return as_nhwk(y.numpy(), x.shape)


def model_key(loaded: LoadedModel) -> str:
    """Cache key of a model: SHA-256 of its file (or weights + config) and the exporter versions."""
    h = hashlib.sha256()
    if loaded.path is not None and Path(loaded.path).is_file():
        with open(loaded.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if loaded.weights_path is not None:
            with open(loaded.weights_path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    else:
        h.update(json.dumps(loaded.model.get_config(), sort_keys=True, default=str).encode())
        for w in loaded.model.get_weights():
            h.update(np.ascontiguousarray(w).tobytes())
    import keras
    import onnxruntime

    versions = f"{_EXPORT_FORMAT}|keras {keras.__version__}|ort {onnxruntime.__version__}"
    try:
        import tf2onnx

        versions += f"|tf2onnx {tf2onnx.__version__}"
    except ImportError:
        pass
    h.update(versions.encode())
    return h.hexdigest()[:32]


def check_sample(loaded: LoadedModel) -> np.ndarray:
    """The fixed sample an export is checked on: float32 (2, H, W, C), H, W the network size."""
    from .model import MAX_CARD_SIDE

    card = loaded.card
    if card.input_size:
        h, w = card.input_size
    else:
        m = max(1, card.multiple_of)
        h = w = -(-max(card.min_size, 64) // m) * m
    if max(h, w) > MAX_CARD_SIDE:  # a card is checked against it; never pad beyond it
        raise UnetCoreError(
            f"{loaded.name}: refused: the network needs a {h}x{w} input (limit {MAX_CARD_SIDE} "
            "per side, UNET_MAX_INPUT_SIDE)")
    n = 2 if h * w <= 512 * 512 else 1  # one image for large inputs
    return np.random.default_rng(0).random((n, h, w, card.channels), dtype=np.float32)


def export_onnx(loaded: LoadedModel, folder: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Export (or reuse the cached export of) a model to ONNX -> (path, info).

    ``info``: ``max_abs_diff`` (ONNX vs Keras probabilities on :func:`check_sample`),
    ``export_s`` (seconds the export took), ``cached`` (True when it was already on disk).
    """
    import tensorflow as tf

    folder = folder or cache_dir()
    key = model_key(loaded)
    path, meta = folder / f"{key}.onnx", folder / f"{key}.json"
    if path.is_file() and meta.is_file():
        try:
            info = json.loads(meta.read_text())
            if isinstance(info.get("max_abs_diff"), float):
                return path, {**info, "cached": True}
        except (OSError, ValueError):
            pass
    sample = check_sample(loaded)  # refused before the export when it would not fit
    budget.check_forward(budget.model_estimate(loaded.model), sample.shape[1], sample.shape[2],
                         loaded.name, batch=len(sample))
    folder.mkdir(parents=True, exist_ok=True)
    if loaded.path is not None and export_in_child():
        return _export_in_child(loaded, folder, path, meta)
    t0 = time.perf_counter()
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=folder)
    os.close(fd)
    try:
        sig = [tf.TensorSpec([None, None, None, loaded.card.channels], tf.float32, name="image")]
        try:
            with warnings.catch_warnings():  # the exporter's own numpy FutureWarnings
                warnings.simplefilter("ignore", FutureWarning)
                loaded.model.export(tmp, format="onnx", input_signature=sig, verbose=False)
        except Exception as exc:  # noqa: BLE001 - any exporter failure means "no ONNX"
            raise UnetCoreError(f"ONNX export failed: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc
        export_s = time.perf_counter() - t0
        sample = check_sample(loaded)
        session = _session(Path(tmp))
        y_onnx = _run(session, sample, loaded.card.output == "logits")
        y_keras = TensorFlowBackend(loaded)(sample)
        diff = float(np.abs(y_onnx - y_keras).max())
        info = {"max_abs_diff": diff, "sample_shape": list(sample.shape),
                "export_s": round(export_s, 2), "model": loaded.name}
        os.replace(tmp, path)
        meta.write_text(json.dumps(info))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path, {**info, "cached": False}


def export_in_child() -> bool:
    """Whether exports run in a child process (``UNET_EXPORT_IN_CHILD=1``; the dashboard sets
    it): the exporter's peak (about 1 GB for a 2 M-parameter U-Net) then never lands on a
    long-lived server, which only loads the finished file."""
    return os.environ.get("UNET_EXPORT_IN_CHILD", "0").strip() == "1"


def _export_in_child(loaded: LoadedModel, folder: Path, path: Path, meta: Path
                     ) -> tuple[Path, dict[str, Any]]:
    """Run :func:`export_onnx` for a model file in a child process (under the sandbox's memory
    and time limits) and return the cache entry it wrote."""
    from .sandbox import run_in_child

    args = (str(loaded.path), None if loaded.weights_path is None else str(loaded.weights_path),
            loaded.card.to_dict(), str(folder), bool(loaded.trusted))
    run_in_child(_export_child, args, loaded.name)
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise UnetCoreError(f"{loaded.name}: the ONNX export left no usable cache entry "
                            f"({type(exc).__name__})") from None
    return path, {**info, "cached": False}


def _export_child(path: str, weights: str | None, card: dict, folder: str,
                  trusted: bool) -> dict:
    """Child process: load the model file and export it into ``folder`` (in this process)."""
    os.environ["UNET_EXPORT_IN_CHILD"] = "0"
    from .model import ModelCard, load_model

    loaded = load_model(path, safe_mode=not trusted, card=ModelCard.from_dict(card),
                        weights=weights)
    _, info = export_onnx(loaded, Path(folder))
    return {"max_abs_diff": info["max_abs_diff"]}


def _session(path: Path | bytes) -> Any:
    """An ONNX Runtime session (CPU) with the engine's options on a file or serialised bytes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    threads = int(os.environ.get("UNET_THREADS", "0") or 0)
    opts.intra_op_num_threads = max(0, threads)
    opts.inter_op_num_threads = 1
    opts.enable_mem_pattern = False  # image sizes vary; a fixed memory plan does not help
    # $UNET_ORT_ARENA=0 turns off the CPU memory arena: an arena keeps its peak for the
    # session's life (538 MB per session after one 1024x1024 image), which a long-lived server
    # holding several models cannot afford (the dashboard sets it); batch jobs keep the arena.
    opts.enable_cpu_mem_arena = os.environ.get("UNET_ORT_ARENA", "1").strip() != "0"
    # Idle worker threads sleep instead of spinning: on a shared machine (a dashboard serving
    # many sessions, training next to it) spinning threads steal the cores that do the work.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), sess_options=opts,
                                providers=["CPUExecutionProvider"])


def _run(session: Any, x: np.ndarray, logits: bool) -> np.ndarray:
    name = session.get_inputs()[0].name
    y = as_nhwk(session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0], x.shape)
    return to_probabilities(y) if logits else y.astype(np.float32, copy=False)


def as_nhwk(y: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """A network's output as (N, H, W, K) for an input of ``input_shape`` (N, H, W, C).

    Leading unit axes are dropped (one CI run saw an export whose output carried an extra
    one, (N, 1, H, W, 1), with the right values). Raises UnetCoreError when the output's
    height and width are not the input's (not a segmentation network for this size).
    """
    y = np.asarray(y)
    n, h, w = (int(v) for v in input_shape[:3])
    while y.ndim > 4 and y.shape[0] == 1 and y.shape[1] == n:
        y = y[0]
    if y.ndim == 3:
        y = y[..., None]
    if y.ndim != 4 or y.shape[:3] != (n, h, w):
        got = f"{y.shape[1]}x{y.shape[2]}" if y.ndim == 4 else f"shape {y.shape}"
        raise UnetCoreError(
            f"the model's output is {got} for a {h}x{w} input; accepted: an output of the "
            "input's height and width (a segmentation network)")
    return y


class OnnxBackend(Backend):
    """The model exported to ONNX and run by ONNX Runtime (see the module docstring)."""

    name = "onnxruntime"

    def __init__(self, loaded: LoadedModel, folder: Path | None = None) -> None:
        self.path, self.info = export_onnx(loaded, folder)
        try:
            self._session = _session(self.path)
        except Exception:  # noqa: BLE001 - a damaged cache entry: export again, once
            self.path.unlink(missing_ok=True)
            self.path, self.info = export_onnx(loaded, folder)
            self._session = _session(self.path)
        self.max_abs_diff: float = float(self.info["max_abs_diff"])
        self._logits = loaded.card.output == "logits"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return _run(self._session, x, self._logits)


class OnnxGraphBackend(Backend):
    """An ONNX model file run as it is by ONNX Runtime (:mod:`unet_core.onnx_graph`): the
    (N, H, W, C) batch is put in the graph's layout and dtype, padded to a fixed batch, and the
    output brought back to (N, H, W, K) probabilities."""

    name = "onnxruntime"

    def __init__(self, loaded: LoadedModel) -> None:
        from .onnx_graph import as_graph

        self.graph = as_graph(loaded)
        # ONNX Runtime builds the graph's constant tensors when it loads it: refuse a graph
        # whose smallest forward pass (constants included) is over UNET_MAX_FORWARD_MB first
        side = max(1, loaded.card.multiple_of)
        self._estimate = self.graph.estimate()
        self._label = loaded.name
        budget.check_forward(self._estimate, self.graph.height or side,
                             self.graph.width or side, loaded.name, batch=self.graph.batch or 1)
        try:
            self._session = _session(self.graph.path)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime refuses the graph
            raise UnetCoreError(
                f"{loaded.name}: ONNX Runtime cannot load this graph ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else ''})"
            ) from None
        self._logits = loaded.card.output == "logits"
        batch = f"fixed batch {self.graph.batch}" if self.graph.batch else "dynamic batch"
        self.note = f"the ONNX file itself ({self.graph.layout.upper()}, {batch})"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if (self.graph.batch or 1) > 1:  # every run holds a whole fixed batch, padded
            budget.check_forward(self._estimate, x.shape[1], x.shape[2], self._label,
                                 batch=self.graph.batch)
        y = self.graph.output_nhwk(self.graph.run(self._session, x)[0])
        y = as_nhwk(y, x.shape)
        return to_probabilities(y) if self._logits else y


class OnnxInt8Backend(Backend):
    """The model's fp32 ONNX graph (the cached export, or the user's ``.onnx`` file) statically
    quantised to int8 by ONNX Runtime, calibrated, checked and cached as
    :mod:`unet_core.quantize` says. ``backend(x)``: float32 (N, H, W, C) -> float32
    (N, H, W, K) probabilities.

    Attributes:
        path: the int8 graph (``KEY_int8.onnx`` under :func:`cache_dir`).
        info: its record (``KEY_int8.json``): ``iou_fp32``, ``iou_int8``, ``delta``, ``n``,
            ``reference``, ``verdict``, ``calibration``, ``versions``, ``cached``.

    Raises UnetCoreError (one line) when no calibration data is available, quantisation fails,
    or the guard refuses the graph (then, or when a refusal is already recorded).
    """

    name = "onnxruntime-int8"

    def __init__(self, loaded: LoadedModel, calibration: str | os.PathLike | None = None,
                 folder: Path | None = None) -> None:
        from . import quantize as q
        from .onnx_graph import as_graph, is_onnx

        folder = folder or cache_dir()
        graph = as_graph(loaded) if is_onnx(loaded) else None
        self._graph = graph
        self._logits = loaded.card.output == "logits"
        calib = q.calibration_set(loaded, calibration)
        base = f"graph {graph.key}" if graph is not None else model_key(loaded)
        key = q.int8_key(base, loaded, calib)
        entry = q.read_entry(folder, key)
        if entry is not None and entry[1]["verdict"] == "refused":
            raise UnetCoreError(q.refusal(loaded.name, entry[1]) + f" (check recorded "
                                f"{entry[1].get('created', '')})")
        if entry is None:
            from .inference import Segmenter

            seg = Segmenter(loaded, backend="onnxruntime")  # the fp32 graph, checked
            fp32 = seg.backend
            if graph is not None:
                io = q.GraphIO(graph.path, graph.input_name, graph.to_input, graph.batch)
            else:
                io = q.GraphIO(fp32.path, fp32._session.get_inputs()[0].name,
                               lambda x: np.ascontiguousarray(x, dtype=np.float32), None)
            path, info = q.build_int8(loaded, seg, io, calib, self._runner, folder, key)
            info = {**info, "cached": False}
        else:
            path, info = entry[0], {**entry[1], "cached": True}
        self.path, self.info = path, info
        try:
            self._session = _session(path)
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry
            path.unlink(missing_ok=True)
            raise UnetCoreError(f"{loaded.name}: the cached int8 graph {path.name} cannot be "
                                f"loaded ({type(exc).__name__}); run again to rebuild it"
                                ) from None
        self.note = (f"int8 graph {'reused from cache' if info['cached'] else 'built'}; "
                     f"IoU {info['iou_int8']:.4f} int8 vs {info['iou_fp32']:.4f} fp32 on "
                     f"{info['n']} calibration images (vs {info['reference']})")

    def _runner(self, path: Path) -> Backend:
        """A backend running the graph file ``path`` with this backend's input/output rules."""
        return _SessionBackend(self.name, _session(path), self._run_graph)

    def _run_graph(self, session: Any, x: np.ndarray) -> np.ndarray:
        """float32 (N, H, W, C) through ``session`` -> (N, H, W, K) probabilities."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._graph is None:
            return _run(session, x, self._logits)
        y = as_nhwk(self._graph.output_nhwk(self._graph.run(session, x)[0]), x.shape)
        return to_probabilities(y) if self._logits else y

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._run_graph(self._session, x)


class _SessionBackend(Backend):
    """A session and the function that runs a batch through it, as a backend."""

    def __init__(self, name: str, session: Any, run: Any) -> None:
        self.name, self._session, self._fn = name, session, run

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._fn(self._session, x)


def make_backend(loaded: LoadedModel, name: str | None = None, *,
                 calibration: str | os.PathLike | None = None) -> Backend:
    """The backend ``name`` (None: :func:`default_backend`) for a loaded model.

    ``onnxruntime-int8`` is only ever chosen by name (``calibration``: a folder of images to
    calibrate on, see :class:`OnnxInt8Backend`).

    ``auto`` falls back to TensorFlow (reason in ``.note``) when ONNX Runtime is missing, the
    export fails or its output differs from Keras by more than :data:`MAX_ABS_DIFF`. An explicit
    ``onnxruntime`` raises :class:`UnetCoreError` in those cases instead. An ONNX model file
    always runs as it is on ONNX Runtime (:class:`OnnxGraphBackend`; ``tensorflow`` is refused).
    """
    from .onnx_graph import is_onnx

    if (name or default_backend()) == "onnxruntime-int8":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise UnetCoreError(f"the int8 backend needs {exc.name}, which is not installed; "
                                "install onnxruntime and onnx, or use --backend tensorflow"
                                ) from None
        try:
            return OnnxInt8Backend(loaded, calibration)
        except OSError as exc:
            raise UnetCoreError(f"cannot write the int8 cache {cache_dir()}: "
                                f"{exc.strerror or exc}; set UNET_CACHE_DIR") from None
    if is_onnx(loaded):
        if name == "tensorflow":
            raise UnetCoreError(f"{loaded.name} is an ONNX model: it runs on ONNX Runtime; "
                                "accepted: --backend auto or onnxruntime")
        return OnnxGraphBackend(loaded)
    name = check_backend(name or default_backend())
    if name == "tensorflow":
        return TensorFlowBackend(loaded)
    if name == "auto" and loaded.path is None:
        # An in-memory model (from_keras) may still be training: an export would go stale.
        tf_backend = TensorFlowBackend(loaded)
        tf_backend.note = "in-memory model: its weights may still change, so no ONNX export"
        return tf_backend
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        reason = f"ONNX Runtime backend unavailable ({exc.name} is not installed)"
        if name == "onnxruntime":
            raise UnetCoreError(reason + "; install onnxruntime and tf2onnx, or use "
                                "--backend tensorflow") from exc
        tf_backend = TensorFlowBackend(loaded)
        tf_backend.note = reason
        return tf_backend
    try:
        backend = OnnxBackend(loaded)
    except (UnetCoreError, OSError) as exc:
        if name == "onnxruntime":
            if isinstance(exc, OSError):
                raise UnetCoreError(f"cannot write the ONNX export cache {cache_dir()}: "
                                    f"{exc.strerror or exc}; set UNET_CACHE_DIR") from exc
            raise
        tf_backend = TensorFlowBackend(loaded)
        tf_backend.note = str(exc)
        return tf_backend
    if backend.max_abs_diff > MAX_ABS_DIFF:
        reason = (f"ONNX export differs from Keras by {backend.max_abs_diff:.2g} "
                  f"(limit {MAX_ABS_DIFF:g})")
        if name == "onnxruntime":
            raise UnetCoreError(reason + "; use --backend tensorflow")
        tf_backend = TensorFlowBackend(loaded)
        tf_backend.note = reason
        return tf_backend
    backend.note = (f"ONNX export {'reused from cache' if backend.info['cached'] else 'built'}; "
                    f"max |ONNX - Keras| = {backend.max_abs_diff:.1e}")
    return backend
