"""Load and first-run an untrusted model in a child process under a memory limit and a timeout.

:func:`vet_model` starts a child process (a fresh ``python -c`` interpreter that shares no
state with the caller; unlike multiprocessing's "spawn" it never re-runs the caller's main
script), which imports the engine, loads the model with
:func:`unet_core.model.load_model` (safe mode), builds the inference backend the server will
use (:func:`unet_core.backends.make_backend`; the ONNX export is cached on disk, so the server
reuses it; an ``.onnx`` model runs as it is) and runs one forward pass on a small sample of the
network's size, after checking the pass's memory estimate (for an ONNX graph this counts every
tensor shape inference sizes, so a graph that builds a huge tensor is refused before it runs;
one whose sizes depend on the data is stopped by the memory limit). The parent polls
the child's resident memory (``VmRSS`` in ``/proc/PID/status``, the child and its descendants)
every 50 ms and kills it over the limit or past the timeout; the caller gets one line saying
why. A model that passes is then loaded in the server knowing that loading and one pass fit.

Environment: ``UNET_VET_MEMORY_MB`` (default 3072) and ``UNET_VET_TIMEOUT_S`` (default 120).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ModelLoadError, UnetCoreError

__all__ = ["vet_model", "DEFAULT_MEMORY_MB", "DEFAULT_TIMEOUT_S"]

log = logging.getLogger(__name__)

DEFAULT_MEMORY_MB = 3072
DEFAULT_TIMEOUT_S = 120.0
_POLL_S = 0.05


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UnetCoreError(f"{name}={raw!r} is not a number") from None
    if not value > 0:
        raise UnetCoreError(f"{name}={raw!r} must be positive")
    return value


def memory_limit_mb() -> int:
    """The child's memory limit in MB: ``UNET_VET_MEMORY_MB`` or 3072."""
    return int(_env_number("UNET_VET_MEMORY_MB", DEFAULT_MEMORY_MB))


def time_limit_s() -> float:
    """The child's time limit in seconds: ``UNET_VET_TIMEOUT_S`` or 120."""
    return _env_number("UNET_VET_TIMEOUT_S", DEFAULT_TIMEOUT_S)


def _rss_kb(pid: int) -> int:
    """Resident memory (kB) of ``pid`` and all its descendants (0 once it is gone)."""
    total = 0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue
    return total


def _child_entry(fd: int) -> None:
    """Child side (a fresh ``python -c``): read (func, args, label) pickled from stdin, run
    ``func(*args)`` and write ("ok", result) or ("error", one-line message) to ``fd``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.WARNING)
    func, args, label = pickle.loads(sys.stdin.buffer.read())
    try:
        message: tuple[str, Any] = ("ok", func(*args))
    except UnetCoreError as exc:
        message = ("error", " ".join(str(exc).split()))
    except MemoryError:
        message = ("error", f"{label}: refused: it ran out of memory while loading")
    except BaseException as exc:  # noqa: BLE001 - anything else: one line, details to the log
        logging.getLogger(__name__).exception("vetting %s failed", label)
        message = ("error", f"{label}: could not load and run this model "
                            f"({type(exc).__name__}; the details are in the server log)")
    with os.fdopen(fd, "wb") as out:
        out.write(pickle.dumps(message))


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc/PID/task/*/children)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in pids:
            continue
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            pass
    return pids


def _kill(proc: subprocess.Popen) -> None:
    """Kill the child, its process group and every process it started."""
    pids = _descendants(proc.pid)
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    for p in reversed(pids):
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def run_in_child(func: Callable[..., dict], args: tuple, label: str, *,
                 memory_mb: float | None = None, timeout: float | None = None) -> dict:
    """Run ``func(*args)`` (a module-level function of an importable module, returning a
    picklable dict) in a fresh Python process under an RSS watchdog and a timeout.

    The child is a new interpreter (``python -c``), not a fork and not multiprocessing's
    spawn (which would re-run the caller's main script): it shares no state with the caller.
    Raises ModelLoadError with one line.
    """
    limit_mb = memory_limit_mb() if memory_mb is None else float(memory_mb)
    limit_s = time_limit_s() if timeout is None else float(timeout)
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    read_fd, write_fd = os.pipe()
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; from unet_core.sandbox import _child_entry; "
             "_child_entry(int(sys.argv[1]))", str(write_fd)],
            stdin=subprocess.PIPE, pass_fds=(write_fd,), env=env, start_new_session=True)
    finally:
        os.close(write_fd)
    data = bytearray()
    peak_kb = 0
    try:
        assert proc.stdin is not None
        try:
            proc.stdin.write(pickle.dumps((func, args, label)))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        while True:
            ready, _, _ = select.select([read_fd], [], [], _POLL_S)
            if ready:
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:  # the child closed its end: done
                    break
                data.extend(chunk)
                continue
            rss = _rss_kb(proc.pid)
            peak_kb = max(peak_kb, rss)
            if rss > limit_mb * 1024:
                _kill(proc)
                log.warning("vetting %s: killed at %d MB RSS (limit %d MB)", label,
                            rss // 1024, limit_mb)
                raise ModelLoadError(
                    f"{label}: refused: loading it needed more than {limit_mb:,.0f} MB "
                    "(limit UNET_VET_MEMORY_MB)")
            if time.monotonic() - t0 > limit_s:
                _kill(proc)
                raise ModelLoadError(
                    f"{label}: refused: loading it took longer than {limit_s:,.0f} s "
                    "(limit UNET_VET_TIMEOUT_S)")
            if proc.poll() is not None and not select.select([read_fd], [], [], 0)[0]:
                break
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            _kill(proc)
    finally:
        os.close(read_fd)
        if proc.poll() is None:
            _kill(proc)
    try:
        status, payload = pickle.loads(bytes(data)) if data else (None, None)
    except Exception:  # noqa: BLE001 - a truncated message: the child died writing it
        status, payload = None, None
    if status is None:
        log.warning("vetting %s: child ended with exit code %s", label, proc.returncode)
        raise ModelLoadError(
            f"{label}: refused: loading it crashed the checking process (exit code "
            f"{proc.returncode})")
    if status != "ok":
        raise ModelLoadError(str(payload))
    result = dict(payload)
    result.setdefault("seconds", round(time.monotonic() - t0, 2))
    result["peak_mb"] = peak_kb // 1024
    return result


def _vet_child(path: str, weights: str | None, card: dict | None, label: str) -> dict:
    """Child: load, build the backend (ONNX export cached on disk), one forward pass."""
    t0 = time.monotonic()
    from .backends import check_sample, make_backend
    from .model import ModelCard, load_model

    loaded = load_model(path, safe_mode=True, card=None if card is None
                        else ModelCard.from_dict(card), name=label, weights=weights)
    from . import budget

    sample = check_sample(loaded)[:1]
    budget.check_forward(budget.model_estimate(loaded.model), sample.shape[1], sample.shape[2],
                         label)
    backend = make_backend(loaded)
    try:
        y = backend(sample)
    except UnetCoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - runtime errors of the model itself
        log.warning("vetting %s: the model fails on a sample", label, exc_info=True)
        raise ModelLoadError(
            f"{label}: refused: the model fails when run on a {sample.shape[1]}x"
            f"{sample.shape[2]} sample ({type(exc).__name__} inside the framework; the details "
            "are in the server log)") from None
    import numpy as np

    if not np.isfinite(y).all():
        raise ModelLoadError(
            f"{label}: the model's output holds NaN or infinite values on a sample (its weights "
            "may be NaN); accepted: a model with finite weights")
    model = loaded.model
    layers = getattr(model, "n_layers", None)  # an ONNX graph's nodes
    return {"params": int(model.count_params()),
            "layers": len(model.layers) if layers is None else int(layers),
            "seconds": round(time.monotonic() - t0, 2), "backend": backend.name}


def vet_model(path: str | os.PathLike, *, weights: str | os.PathLike | None = None,
              card: Any = None, memory_mb: float | None = None,
              timeout_s: float | None = None, name: str | None = None) -> dict:
    """Load ``path`` and run it once in a child process under a memory limit and a timeout.

    Args:
        path: the model file (``.keras``, ``.h5``, an architecture ``.json`` with weights, or
            an ONNX graph ``.onnx``, whose external data files, if any, lie next to it).
        weights: the weights of an architecture ``.json``.
        card: a :class:`unet_core.model.ModelCard` (or its dict) to load with; None: the card
            next to the file, else inferred.
        memory_mb: resident-memory limit (default ``UNET_VET_MEMORY_MB``, 3072).
        timeout_s: time limit (default ``UNET_VET_TIMEOUT_S``, 120).
        name: the name used in messages (default: the file name).

    Returns:
        ``{"params": int, "layers": int, "seconds": float, ...}``.

    Raises:
        ModelLoadError: one line: over the memory or time limit, or the child's own message.
    """
    p = Path(path)
    label = name or p.name
    if card is not None and not isinstance(card, dict):
        card = card.to_dict()
    return run_in_child(_vet_child, (str(p), None if weights is None else str(weights), card,
                                     label), label, memory_mb=memory_mb, timeout=timeout_s)


# -- internal hooks for the tests -------------------------------------------------------------
def _hog(megabytes: int, step_mb: int = 64) -> dict:
    """Allocate and touch ``megabytes`` of memory gradually (tests the watchdog)."""
    import numpy as np

    held = []
    for _ in range(0, megabytes, step_mb):
        held.append(np.ones(step_mb << 17, dtype=np.float64))  # step_mb MB, touched
        time.sleep(0.01)
    return {"held_mb": len(held) * step_mb}


def _sleep(seconds: float) -> dict:
    time.sleep(seconds)
    return {"slept": seconds}


def _fail(message: str) -> dict:
    raise ModelLoadError(message)
