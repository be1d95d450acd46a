"""``make bench``: inference and dashboard figures for the shipped models -> bench/results.md.

Everything is measured in ONE process, one model after the other, so the ratios compare runs
under the same machine load. Per model (``models/*.keras`` with a card), on a 128x128 input:

* single-image latency (median, p90) of Keras ``model.predict``, eager ``model(x)``, the
  ``tf.function`` backend, ONNX Runtime fp32 and the default backend (``Segmenter``'s choice);
* batch-32 throughput of the ``tf.function`` and ONNX Runtime backends;
* end-to-end ``evaluate_pairs`` throughput on a data set (decode + pad + forward + sweep) vs the
  pure forward throughput of the same backend on the same, already prepared images;
* activations: one pass for every layer, then one layer's maps (crop + channel statistics, what
  a layer switch on the Activations page computes) with the pass counter checked;
* FLOPs per image and the time floor they imply at the measured fp32 matrix-multiply peak;
* int8 (``--int8``, default on): the engine's ``onnxruntime-int8`` backend (static QDQ
  quantisation calibrated and guarded on the validation split), its latency, batch
  throughput and held-out IoU change; and the whole-process throughput target on 2,000 small
  images vs ``bench/fp32_loop.py`` (``--throughput-images``);
* ``predict --engine ray`` vs the local engine on 300 images (``--ray-images``; needs
  ``requirements-ray.txt``): images/s with 1 and 2 workers, Ray's start-up, peak memory of all
  processes, and whether the outputs equal the local engine's (``bench/ray_bench.py``).

Then the dashboard in a real browser: cold start to first page ready; arrow-key steps of the
Segment page's threshold view -> redrawn overlay and scores (p50 / p95, in the page and wall
time) and the server script runs they cause, on a bundled sample and on a 1024x1024 upload;
the server's resident memory after both models ran.

Usage: ``python bench/run_bench.py [--models salt nuclei] [--quick] [--no-app]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from unet_core.backends import OnnxBackend, TensorFlowBackend  # noqa: E402
from unet_core.evaluate import evaluate_pairs  # noqa: E402
from unet_core.inference import Segmenter  # noqa: E402
from unet_core.introspect import (  # noqa: E402
    ActivationProbe,
    channel_stats,
    crop_activation,
    model_flops,
)
from unet_core.io import Pair, find_pairs, load_pair  # noqa: E402
from unet_core.model import LoadedModel, load_model  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
REAL_DATA = {"salt": "tgs_salt", "nuclei": "dsb2018_nuclei", "em_membrane": "isbi2012_em_membrane"}
SAMPLES = {"seismic": "seismic", "microscopy": "nuclei", "electron microscopy": "membranes"}
SIZE = 128


def times_ms(fn: Callable[[], Any], reps: int, warmup: int = 3) -> list[float]:
    """Wall times (ms) of ``reps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def med_p90(ts: list[float]) -> tuple[float, float]:
    return statistics.median(ts), float(np.percentile(ts, 90))


def rss_mb() -> float:
    """Current resident memory of this process (MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak_gflops() -> float:
    """Best fp32 matrix-multiply rate of this machine (GFLOP/s), numpy and TensorFlow."""
    import tensorflow as tf

    n = 2048
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    best = min(times_ms(lambda: a @ b, 5, 1)) / 1000
    ta, tb = tf.constant(a), tf.constant(b)
    best_tf = min(times_ms(lambda: tf.linalg.matmul(ta, tb).numpy(), 5, 1)) / 1000
    return 2 * n**3 / min(best, best_tf) / 1e9


def bench_data(loaded: LoadedModel, path: Path) -> tuple[list[Pair], str]:
    """Held-out real pairs when ../shared/data is there, else the bundled synthetic samples."""
    name = path.stem
    held = path.with_suffix(".heldout.txt")
    real = SHARED / REAL_DATA.get(name, "-")
    if real.is_dir() and held.is_file():
        wanted = {ln.strip() for ln in held.read_text().splitlines() if ln.strip()}
        pairs = [p for p in find_pairs(real, require_masks=True) if p.name in wanted]
        if pairs:
            return pairs, f"{len(pairs)} held-out {REAL_DATA[name]} pairs"
    folder = ROOT / "assets" / SAMPLES.get(loaded.card.domain, "seismic")
    pairs = find_pairs(folder, require_masks=True)
    return pairs, f"{len(pairs)} bundled synthetic samples ({folder.name}); real data absent"


def pure_forward_rate(seg: Segmenter, pairs: list[Pair], batch: int) -> float:
    """Images/s of the backend alone on the data set's images, already decoded and padded."""
    prepared: dict[tuple[int, int], list[np.ndarray]] = {}
    for p in pairs:
        img, _ = load_pair(p)
        x, _box = seg.prepare(img)
        prepared.setdefault(x.shape, []).append(x)
    batches = [np.stack(v[i:i + batch]) for v in prepared.values()
               for i in range(0, len(v), batch)]
    seg.backend(batches[0])  # warm
    t = time.perf_counter()
    for b in batches:
        seg.backend(b)
    return len(pairs) / (time.perf_counter() - t)


def int8_figures(loaded: LoadedModel, onnx: OnnxBackend, default: Segmenter,
                 pairs: list[Pair], x1: np.ndarray, x32: np.ndarray, reps: int,
                 inverted: bool, fp32_iou: float) -> dict[str, Any]:
    """The ``onnxruntime-int8`` backend of the engine on this model: its guard's record (built
    and checked on the validation split, or reused from the cache), single-image latency,
    batch-32 throughput and the held-out IoU through ``evaluate_pairs`` -- or, when the guard
    refuses the model, the refusal with the graph timed anyway (built by the engine's
    quantiser into a scratch folder, never cached)."""
    import tempfile

    import onnxruntime as ort  # noqa: F401 - the int8 path needs it

    from unet_core import quantize
    from unet_core.backends import OnnxInt8Backend, _session
    from unet_core.errors import UnetCoreError

    r: dict[str, Any] = {}
    t = time.perf_counter()
    calibration = None
    try:
        quantize.calibration_set(loaded)
    except UnetCoreError as exc:  # no validation split here (a fresh clone): the bench data
        if "no int8 calibration data" not in str(exc):
            raise
        calibration = pairs[0].image_path.parent.parent
        r["int8_calibration"] = f"the bench data ({calibration.name}; validation split absent)"
    try:
        backend = OnnxInt8Backend(loaded, calibration)
    except UnetCoreError as exc:
        r["int8_refused"] = str(exc)
        backend = None
    r["int8_build_s"] = round(time.perf_counter() - t, 2)
    if backend is not None:
        r["int8_check"] = {k: v for k, v in backend.info.items() if k != "versions"}
        run = backend
    else:  # time the refused graph anyway (scratch file), so the table is complete
        calib = quantize.calibration_set(loaded, calibration)
        key = quantize.int8_key(quantize_base_key(loaded), loaded, calib)
        entry = quantize.read_entry(quantize_cache(), key)
        if entry is not None:
            r["int8_check"] = {k: v for k, v in entry[1].items() if k != "versions"}
        io = quantize.GraphIO(onnx.path, "image", lambda x: x.astype(np.float32), None)
        tmp = Path(tempfile.mkdtemp(prefix="bench_int8_"))
        qpath = quantize.quantise_static_int8(onnx.path, tmp / "q.onnx",
                                              quantize._feeds(default, io, calib))
        sess = _session(qpath)
        logits = loaded.card.output == "logits"

        class Refused:  # the refused graph as a backend, for timing and the held-out IoU
            name = "onnxruntime-int8 (refused)"
            note = ""

            def __call__(self, x: np.ndarray) -> np.ndarray:
                from unet_core.backends import _run

                return _run(sess, x, logits)

        run = Refused()
    r["int8_latency_ms"] = med_p90(times_ms(lambda: run(x1), reps))
    brep = max(3, reps // 5)
    r["int8_batch32_img_s"] = 32000 / statistics.median(times_ms(lambda: run(x32), brep, 1))
    saved = default.backend
    default.backend = run
    try:
        r["int8_evaluate_iou"] = evaluate_pairs(default, pairs, batch_size=32,
                                                invert_masks=inverted).summary()["iou"]
    finally:
        default.backend = saved
    r["int8_iou_delta"] = r["int8_evaluate_iou"] - fp32_iou
    return r


def quantize_base_key(loaded: LoadedModel) -> str:
    from unet_core.backends import model_key

    return model_key(loaded)


def quantize_cache() -> Path:
    from unet_core.backends import cache_dir

    return cache_dir()


def bench_model(path: Path, quick: bool, int8: bool, peak: float) -> dict[str, Any]:
    reps = 10 if quick else 30
    loaded = load_model(path)
    model = loaded.model
    r: dict[str, Any] = {"model": loaded.name, "parameters": int(model.count_params())}
    x1 = np.random.default_rng(0).random((1, SIZE, SIZE, 1), dtype=np.float32)
    x32 = np.random.default_rng(1).random((32, SIZE, SIZE, 1), dtype=np.float32)

    tf_backend = TensorFlowBackend(loaded)
    t = time.perf_counter()
    onnx = OnnxBackend(loaded)
    r["onnx_export_s"] = round(time.perf_counter() - t, 2)
    r["onnx_max_abs_diff"] = onnx.max_abs_diff
    default = Segmenter(loaded, tta=False)
    r["default_backend"] = default.backend.name
    lat = {
        "model.predict": times_ms(lambda: model.predict(x1, verbose=0), reps),
        "eager model(x)": times_ms(lambda: model(x1, training=False).numpy(), reps),
        "tf.function": times_ms(lambda: tf_backend(x1), reps),
        "ONNX Runtime fp32": times_ms(lambda: onnx(x1), reps),
        f"default ({default.backend.name})": times_ms(lambda: default.backend(x1), reps),
    }
    r["latency_ms"] = {k: med_p90(v) for k, v in lat.items()}
    brep = 3 if quick else 6
    r["batch32_img_s"] = {
        "tf.function": 32000 / statistics.median(times_ms(lambda: tf_backend(x32), brep, 1)),
        "ONNX Runtime fp32": 32000 / statistics.median(times_ms(lambda: onnx(x32), brep, 1)),
    }

    pairs, what = bench_data(loaded, path)
    if quick:
        pairs = pairs[:64]
    r["data"] = what if not quick else f"{what} (first {len(pairs)})"
    inverted = loaded.card.truth_inverted  # e.g. ISBI masks mark cell interiors
    evaluate_pairs(default, pairs[:8], batch_size=32, invert_masks=inverted)  # warm all paths
    t = time.perf_counter()
    ev = evaluate_pairs(default, pairs, batch_size=32, invert_masks=inverted)
    r["evaluate_img_s"] = len(pairs) / (time.perf_counter() - t)
    r["evaluate_iou"] = ev.summary()["iou"]
    r["forward_img_s"] = pure_forward_rate(default, pairs, 32)

    img, _ = load_pair(pairs[0])
    padded, box = default.prepare(img)
    probe = ActivationProbe(loaded)
    t = time.perf_counter()
    maps = probe.run(padded)
    r["activation_first_pass_ms"] = (time.perf_counter() - t) * 1000
    r["activation_pass_ms"] = statistics.median(times_ms(lambda: probe.run(padded), 5, 0))
    layers = probe.layer_names
    passes = probe.forward_passes
    order = iter(range(10**9))

    def one_layer() -> None:
        name = layers[next(order) % len(layers)]
        channel_stats(crop_activation(maps[name], box, padded.shape[:2]))

    r["activation_layer_ms"] = med_p90(times_ms(one_layer, 40 if not quick else 10))
    r["activation_layer_passes"] = probe.forward_passes - passes
    r["activation_layers"] = len(layers)
    r["activation_image"] = f"{img.shape[0]}x{img.shape[1]} padded to {padded.shape[0]}x" \
                            f"{padded.shape[1]}"

    r["gflop"] = model_flops(model, SIZE, SIZE) / 1e9
    r["floor_ms"] = r["gflop"] / peak * 1000

    if int8:
        try:
            r.update(int8_figures(loaded, onnx, default, pairs, x1, x32, reps, inverted,
                                  r["evaluate_iou"]))
        except Exception as exc:  # noqa: BLE001 - reported in the table, not fatal
            r["int8_error"] = f"{type(exc).__name__}: {exc}"[:300]
    r["rss_mb"] = rss_mb()
    return r


def _timed_process(cmd: list[str]) -> float:
    """Wall seconds of a whole child process (its output discarded; a failure raises)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    t = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                          cwd=ROOT, check=False)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise RuntimeError(f"{Path(cmd[1]).name if cmd[1] != '-m' else 'predict'} exited "
                           f"{done.returncode}: {tail[0] if tail else ''}")
    return wall


def _throughput_images(folder: Path, n: int) -> str:
    """n small images in ``folder``: the first n TGS 101x101 images of ../shared/data, else
    generated 101x101 seismic sections. Returns what they are."""
    import shutil

    from PIL import Image

    src = sorted((SHARED / "tgs_salt" / "images").glob("*.png"))
    if len(src) >= n:
        for f in src[:n]:
            shutil.copyfile(f, folder / f.name)
        return f"{n} TGS 101x101 images (../shared/data/tgs_salt)"
    from unet_core.synthetic import seismic_section

    for i in range(n):
        image, _ = seismic_section((101, 101), seed=1000 + i, salt=True)
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(
            folder / f"gen_{i:05d}.png")
    return f"{n} generated 101x101 seismic sections (real TGS data absent)"


def int8_throughput(n: int = 2000, rounds: int = 2) -> dict[str, Any]:
    """The int8 target, whole processes in this run: ``python -m unet_core predict --backend
    onnxruntime-int8 DIR`` vs ``bench/fp32_loop.py`` (read each PNG, pad as the card says, fp32
    export on plain ONNX Runtime, write mask PNG + .npy) over the same ``n`` small images,
    ``rounds`` times each, alternating which goes first. Also: the int8 process's fixed cost
    (the same command on one image), whether the masks agree, and what one image costs
    in-process (read, pad, forward batch 1 and batched, writing) to see what dominates."""
    import shutil
    import tempfile

    from unet_core.backends import OnnxInt8Backend
    from unet_core.errors import UnetCoreError
    from unet_core.io import read_raw, write_mask_png
    from unet_core.metrics import threshold_mask
    from unet_core.synthetic import make_pairs

    salt = ROOT / "models" / "salt.keras"
    loaded = load_model(salt)
    tmp = Path(tempfile.mkdtemp(prefix="bench_int8_"))
    r: dict[str, Any] = {"n": n, "rounds": rounds}
    try:
        folder = tmp / "images"
        folder.mkdir()
        r["data"] = _throughput_images(folder, n)
        calib_args: list[str] = []
        try:
            OnnxInt8Backend(loaded)  # built (or reused) before anything is timed
        except UnetCoreError as exc:
            if "no int8 calibration data" not in str(exc):
                r["refused"] = str(exc)
                return r
            make_pairs(tmp / "calib", "seismic", 64, seed=11)
            calib_args = ["--int8-calibration", str(tmp / "calib")]
            r["calibration"] = "64 generated seismic pairs (validation split absent)"
            OnnxInt8Backend(loaded, tmp / "calib")
        export = OnnxBackend(loaded).path
        one = tmp / "one"
        one.mkdir()
        first = sorted(folder.iterdir())[0]
        shutil.copyfile(first, one / first.name)

        def int8_cmd(src: Path, out: Path) -> list[str]:
            return [sys.executable, "-m", "unet_core", "predict", "--model", str(salt),
                    "--backend", "onnxruntime-int8", *calib_args, str(src), "--out", str(out)]

        def fp32_cmd(src: Path, out: Path) -> list[str]:
            return [sys.executable, str(ROOT / "bench" / "fp32_loop.py"), "--onnx", str(export),
                    "--card", str(salt.with_suffix(".json")), str(src), "--out", str(out)]

        r["int8_startup_s"] = _timed_process(int8_cmd(one, tmp / "o_one"))
        r["fp32_startup_s"] = _timed_process(fp32_cmd(one, tmp / "o_one32"))
        int8_s, fp32_s = [], []
        for i in range(rounds):
            for which in (("int8", "fp32") if i % 2 == 0 else ("fp32", "int8")):
                out = tmp / f"o_{which}"
                shutil.rmtree(out, ignore_errors=True)
                if which == "int8":
                    int8_s.append(_timed_process(int8_cmd(folder, out)))
                else:
                    fp32_s.append(_timed_process(fp32_cmd(folder, out)))
        r["int8_s"], r["fp32_s"] = int8_s, fp32_s
        r["ratio"] = sum(int8_s) / sum(fp32_s)
        r["ratios"] = [a / b for a, b in zip(int8_s, fp32_s, strict=True)]
        names8 = sorted(p.name for p in (tmp / "o_int8").iterdir())
        names32 = sorted(p.name for p in (tmp / "o_fp32").iterdir())
        r["same_files"] = names8 == names32 and len(names8) == 2 * n
        ious = []
        for name in (x for x in names8 if x.endswith("_mask.png")):
            a = read_raw(tmp / "o_int8" / name) > 0
            b = read_raw(tmp / "o_fp32" / name) > 0
            union = np.count_nonzero(a | b)
            ious.append(1.0 if union == 0 else np.count_nonzero(a & b) / union)
        r["mask_agreement_iou"] = float(np.mean(ious))

        # what one image costs in-process (the same salt card: TTA, 128x128 input)
        seg8 = Segmenter(loaded, backend="onnxruntime-int8",
                         int8_calibration=(tmp / "calib") if calib_args else None)
        seg32 = Segmenter(loaded, backend="onnxruntime")
        files = sorted(folder.iterdir())[:100]
        imgs = [read_raw(f) for f in files]
        xs = [seg8.prepare(im)[0] for im in imgs]
        batch = np.stack(xs[:16])
        prob = seg8.predict_proba(imgs[0])
        mask = threshold_mask(prob, 0.5, 40)
        k = len(files)
        per = lambda fn, reps=k: statistics.median(times_ms(fn, reps, 2))  # noqa: E731
        it = iter(range(10**9))
        r["breakdown_ms"] = {
            "read PNG": per(lambda: read_raw(files[next(it) % k])),
            "pad (card)": per(lambda: seg8.prepare(imgs[next(it) % k])),
            "fp32 forward, batch 1 + TTA": per(lambda: seg32.forward(xs[next(it) % k][None])),
            "int8 forward, batch 1 + TTA": per(lambda: seg8.forward(xs[next(it) % k][None])),
            "fp32 forward, batch 16 + TTA, per image": per(lambda: seg32.forward(batch), 8) / 16,
            "int8 forward, batch 16 + TTA, per image": per(lambda: seg8.forward(batch), 8) / 16,
            "write mask PNG": per(lambda: write_mask_png(tmp / "m.png", mask)),
            "write .npy": per(lambda: np.save(tmp / "p.npy", prob)),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return r


def _app_moves(tb: Any, page: Any, runs: Any, moves: int, pause_s: float) -> dict[str, Any]:
    """``moves`` arrow-key steps of the threshold view (``pause_s`` apart, a person's pace):
    per-move times, the server reruns during the steps, and those once the keys rest (the view
    then sends the value to Python: one run by design)."""
    for _ in range(3):  # warm: JIT, canvases sized
        tb.move_threshold(page)
        page.wait_for_timeout(int(pause_s * 1000))
    page.wait_for_timeout(2500)  # the warm-up's release
    tb.wait_idle(page, settle=0.5)
    before = runs.snapshot()
    steps = []
    for i in range(moves):
        steps.append(tb.move_threshold(page, 1 if (i // 10) % 2 == 0 else -1))
        if i < moves - 1:
            page.wait_for_timeout(int(pause_s * 1000))
    during = runs.snapshot()
    for _ in range(50):  # the keys rest: wait up to 5 s for the release's rerun
        if runs.snapshot()[0] != during[0]:
            break
        page.wait_for_timeout(100)
    tb.wait_idle(page, settle=0.5)
    after = runs.snapshot()
    paint = [m.paint_ms for m in steps]
    drawn = [m.page_ms for m in steps]
    wall = [m.wall_ms for m in steps]
    return {
        "paint_ms": paint, "drawn_ms": drawn, "wall_ms": wall,
        "redraw_only_ms": [m.redraw_ms for m in steps],
        "paint_p50": float(np.percentile(paint, 50)), "paint_p95": float(np.percentile(paint, 95)),
        "drawn_p50": float(np.percentile(drawn, 50)), "drawn_p95": float(np.percentile(drawn, 95)),
        "wall_p50": float(np.percentile(wall, 50)), "wall_p95": float(np.percentile(wall, 95)),
        "rerun_requests": during[0] - before[0], "script_runs": during[1] - before[1],
        "runs_per_move": (during[0] - before[0]) / max(moves, 1),
        "rest_requests": after[0] - during[0], "rest_runs": after[1] - during[1],
    }


def bench_app(quick: bool) -> dict[str, Any]:
    """Dashboard figures in a real browser (Debian chromium + Playwright, tools.browser).

    Cold start: server process start -> the first page (Model) idle in the browser, model
    loaded. Threshold: on Segment with the salt model, arrow-key steps of the threshold view's
    "Threshold", each timed in the page from the keydown to the redrawn overlay, error map,
    curve and scores (and to the next painted frame), plus the wall time Playwright saw; the
    server script runs during the steps are counted from the page's websocket frames. Once on
    the bundled 101x101 sample, once on an uploaded 1024x1024 image with its mask. Memory: the
    server's RSS after both bundled models have run a prediction.
    """
    import tempfile

    from tools import browser as tb
    from unet_core.synthetic import seismic_section, write_pair

    moves = 10 if quick else 30
    pause_s = 0.5
    out: dict[str, Any] = {"moves": moves, "pause_s": pause_s}
    with tempfile.TemporaryDirectory(prefix="unet_bench_") as tmp, \
            tb.chromium_browser() as browser:
        image, mask = seismic_section((1024, 1024), seed=77, salt=True)
        write_pair(tmp, "bench_1024.png", image, mask)
        big = (Path(tmp) / "images" / "bench_1024.png", Path(tmp) / "masks" / "bench_1024.png")
        context = browser.new_context(viewport=tb.WIDE)
        page = context.new_page()
        runs = tb.RerunCounter(page)
        t0 = time.perf_counter()
        with tb.streamlit_server(models_dir=ROOT / "models",
                                 log_path=ROOT / "test-artifacts" / "streamlit-bench.log"
                                 ) as server:
            out["rss_start_mb"] = server.rss_mb()
            tb.goto(page, server.url, "")
            out["cold_start_s"] = time.perf_counter() - t0
            tb.open_page(page, "Segment")
            tb.pick_model(page, r"^salt$")
            tb.wait_threshold_view(page)
            out["sample"] = _app_moves(tb, page, runs, moves, pause_s)
            tb.upload(page, "Upload images", [big[0]])
            tb.upload(page, "Upload masks (same file names)", [big[1]])
            page.locator('[data-testid="tv-root"] [data-metric="iou"]').first.wait_for(
                state="visible", timeout=120_000)
            out["large"] = _app_moves(tb, page, runs, moves, pause_s)
            tb.assert_no_exception(page, "segment with the salt model")
            tb.pick_model(page, r"^nuclei$")
            gate = page.get_by_role("button", name="Use nuclei's samples")
            if gate.count():
                gate.click()
            tb.wait_threshold_view(page, timeout=120)
            tb.wait_idle(page)
            tb.assert_no_exception(page, "segment with the second model")
            out["rss_two_models_mb"] = server.rss_mb()
        context.close()
    return out


def _int8_check_lines(r: dict[str, Any]) -> list[str]:
    """The int8 guard's record for one model (validation split), one paragraph."""
    c = r.get("int8_check")
    if not c and "int8_refused" not in r:
        return []
    out = "**refused**" if "int8_refused" in r else "accepted"
    text = f"int8 guard ({out}): "
    if c:
        text += (f"mean IoU {c['iou_int8']:.4f} int8 vs {c['iou_fp32']:.4f} fp32 on "
                 f"{c['n']} {c['calibration']['source']} (vs {c['reference']}, threshold "
                 f"{c['threshold']:g}, minimum area {c['min_area']}), change "
                 f"{c['delta']:+.4f}, limit ±{c['limit']:g}; quantised in {c['quantise_s']} s, "
                 f"checked in {c['check_s']} s"
                 + (" (cache entry reused)" if c.get("cached") else "") + ".")
    else:
        text += r["int8_refused"] + "."
    return [text, ""]


def _throughput_lines(t: dict[str, Any] | None) -> list[str]:
    """The int8 throughput target's section."""
    if not t:
        return []
    lines = ["## int8 throughput target (whole processes)", ""]
    if "refused" in t or "error" in t:
        return lines + [f"Not measured: {t.get('refused') or t.get('error')}", ""]
    ratio = t["ratio"]
    met = ratio <= 0.6
    lines += [
        f"`python -m unet_core predict --model models/salt.keras --backend onnxruntime-int8 DIR "
        f"--out D` vs `bench/fp32_loop.py` (read each PNG, pad as the card says, the fp32 "
        f"export on plain ONNX Runtime, write the mask PNG and .npy, one image at a time, the "
        f"card's flip TTA) over {t['data']}; {t['rounds']} rounds, alternating which runs "
        "first." + (f" int8 calibration: {t['calibration']}." if t.get("calibration") else ""),
        "",
        "| figure | int8 predict | fp32 loop |",
        "|---|---:|---:|",
        "| whole process, per round (s) | " + " / ".join(fmt(v) for v in t["int8_s"]) + " | "
        + " / ".join(fmt(v) for v in t["fp32_s"]) + " |",
        f"| images/s (all rounds) | {fmt(t['n'] * t['rounds'] / sum(t['int8_s']))} | "
        f"{fmt(t['n'] * t['rounds'] / sum(t['fp32_s']))} |",
        f"| same command on one image (start-up: imports, model load, sessions) | "
        f"{fmt(t['int8_startup_s'])} s | {fmt(t['fp32_startup_s'])} s |",
        "",
        "| target | figure | |",
        "|---|---:|---|",
        f"| int8 predict ≤ 0.6x the fp32 loop's time | {ratio:.2f}x (rounds: "
        + ", ".join(f"{x:.2f}x" for x in t["ratios"]) + f") | {ok(met)} |",
        "",
        f"Outputs: same file names {'yes' if t['same_files'] else '**no**'}; int8 masks vs fp32 "
        f"masks mean IoU {t['mask_agreement_iou']:.4f}.",
        "",
        "What one image costs in-process (median ms; salt card: 101x101 padded to 128x128, "
        "flip TTA, so each forward runs 2 images per input image):",
        "",
        "| step | ms |",
        "|---|---:|",
        *[f"| {k} | {fmt(v, 2)} |" for k, v in t["breakdown_ms"].items()],
        "",
    ]
    if not met:
        b = t["breakdown_ms"]
        fixed = t["int8_startup_s"] - t["fp32_startup_s"]
        b32 = b["fp32 forward, batch 1 + TTA"]
        b8 = b["int8 forward, batch 1 + TTA"]
        b8_16 = b["int8 forward, batch 16 + TTA, per image"]
        lines += [
            f"**Target missed.** The int8 process pays {fixed:.1f} s more start-up than the "
            "standalone loop (TensorFlow import and the Keras model load, which the engine "
            "needs for the card and the forward-memory budget) and runs the same per-image "
            "reading and PNG writing "
            f"({b['read PNG'] + b['write mask PNG'] + b['write .npy']:.1f} ms); the int8 "
            f"forward itself is {b8 / b32:.2f}x fp32 at batch 1 and {b8_16 / b32:.2f}x "
            "(vs fp32 batch 1) when batched.",
            "",
        ]
    return lines


def fmt(v: float, digits: int = 1) -> str:
    return f"{v:,.{digits}f}"


def ok(flag: bool) -> str:
    return "**met**" if flag else "**missed**"


def report(results: list[dict[str, Any]], app: dict[str, Any] | None, peak: float,
           args: argparse.Namespace, wall: float) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"`make bench` ({'quick, ' if args.quick else ''}one process, {wall:.0f} s), "
        f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}. Input "
        f"{SIZE}x{SIZE}x1 float32, batch 1 unless stated; no test-time augmentation (TTA "
        "doubles every forward figure). Measured fp32 matrix-multiply peak of this machine: "
        f"**{peak:,.0f} GFLOP/s** (2048x2048 matmul, best of numpy and TensorFlow).",
        "",
        "This machine is shared and noisy: compare ratios within one run, not absolute times "
        "across runs.",
        "",
    ]
    for r in results:
        lat = r["latency_ms"]
        d = next(k for k in lat if k.startswith("default"))
        onnx, pred, tfn = lat["ONNX Runtime fp32"][0], lat["model.predict"][0], \
            lat["tf.function"][0]
        lines += [
            f"## {r['model']} ({r['parameters']:,} parameters, {r['gflop']:.2f} GFLOP per "
            f"{SIZE}x{SIZE} image)",
            "",
            f"Default backend: **{r['default_backend']}** (ONNX export {r['onnx_export_s']} s "
            f"or cached; max |ONNX - Keras| = {r['onnx_max_abs_diff']:.1e}).",
            "",
            "| single image | median ms | p90 ms | vs default |",
            "|---|---:|---:|---:|",
        ]
        for k, (m, p) in lat.items():
            lines.append(f"| {k} | {fmt(m, 2)} | {fmt(p, 2)} | {m / lat[d][0]:.2f}x |")
        if "int8_latency_ms" in r:
            m, p = r["int8_latency_ms"]
            what = "refused by its guard, timed anyway" if "int8_refused" in r else "opt-in"
            lines.append(f"| ONNX Runtime int8 (`--backend onnxruntime-int8`, {what}) | "
                         f"{fmt(m, 2)} | {fmt(p, 2)} | {m / lat[d][0]:.2f}x |")
        lines.append(f"| fp32 floor ({r['gflop']:.2f} GFLOP at {peak:,.0f} GFLOP/s) | "
                     f"{fmt(r['floor_ms'], 2)} | | {r['floor_ms'] / lat[d][0]:.2f}x |")
        b = r["batch32_img_s"]
        ev_ratio = r["evaluate_img_s"] / r["forward_img_s"]
        lines += [
            "",
            "| throughput | images/s |",
            "|---|---:|",
            f"| batch 32, tf.function | {fmt(b['tf.function'])} |",
            f"| batch 32, ONNX Runtime fp32 | {fmt(b['ONNX Runtime fp32'])} |",
            *([f"| batch 32, ONNX Runtime int8 | {fmt(r['int8_batch32_img_s'])} |"]
              if "int8_batch32_img_s" in r else []),
            f"| evaluate end-to-end ({r['data']}) | {fmt(r['evaluate_img_s'])} |",
            f"| pure forward, same images and backend | {fmt(r['forward_img_s'])} |",
            "",
            "| activations | figure |",
            "|---|---:|",
            f"| one pass for all {r['activation_layers']} layers, first (traces) | "
            f"{fmt(r['activation_first_pass_ms'])} ms |",
            f"| one pass for all layers, warm ({r['activation_image']}) | "
            f"{fmt(r['activation_pass_ms'])} ms |",
            f"| one layer's maps warm (crop + channel stats), median / p90 | "
            f"{fmt(r['activation_layer_ms'][0], 2)} / {fmt(r['activation_layer_ms'][1], 2)} ms |",
            f"| forward passes for 40 layer switches | {r['activation_layer_passes']} |",
            "",
            "| target | figure | |",
            "|---|---:|---|",
            f"| default ≤ 1.0x ONNX Runtime fp32 (single image) | {lat[d][0] / onnx:.2f}x | "
            f"{ok(lat[d][0] / onnx <= 1.05)} |",
            f"| default ≥ 3x faster than model.predict | {pred / lat[d][0]:.1f}x | "
            f"{ok(pred / lat[d][0] >= 3)} |",
            f"| evaluate ≥ 0.8x pure forward | {ev_ratio:.2f}x | {ok(ev_ratio >= 0.8)} |",
            f"| layer switch: no forward pass, ≤ 50 ms warm | "
            f"{r['activation_layer_passes']} passes, {fmt(r['activation_layer_ms'][0], 2)} ms | "
            f"{ok(r['activation_layer_passes'] == 0 and r['activation_layer_ms'][0] <= 50)} |",
            "",
            f"tf.function vs ONNX Runtime fp32: {tfn / onnx:.2f}x the time; evaluate mean IoU "
            f"at the card's threshold {r['evaluate_iou']:.4f}."
            + (f" int8: mean IoU {r['int8_evaluate_iou']:.4f} "
               f"({r['int8_evaluate_iou'] - r['evaluate_iou']:+.4f} vs fp32) on the same data."
               if "int8_evaluate_iou" in r else "")
            + (f" int8 failed: {r['int8_error']}." if "int8_error" in r else ""),
            "",
            *_int8_check_lines(r),
        ]
    lines += _throughput_lines(getattr(args, "throughput", None))
    lines += _ray_lines(getattr(args, "ray", None))
    lines += ["## Process memory", "",
              f"Peak resident memory of this benchmark process (both models, both backends, "
              f"probes): **{peak_rss_mb():,.0f} MB**.", ""]
    if app:
        rss = app["rss_two_models_mb"]
        lines += [
            "## Dashboard (real browser: Debian chromium driven by Playwright)", "",
            f"Threshold: {app['moves']} arrow-key steps of the Segment page's threshold view "
            f"({app['pause_s']:.1f} s apart), salt model. *Painted*: in the page, keydown → the "
            "next frame painted after the overlay, error map, curve and scores were redrawn; "
            "*redrawn*: keydown → redraw done; *wall*: Playwright's key press → it saw the "
            "painted frame (adds DevTools round trips). Server reruns: rerun requests the page "
            "sent and script runs it received, counted from its websocket frames.", "",
            "| figure | value | target | |", "|---|---:|---:|---|",
            f"| cold start: process start to first page ready | {fmt(app['cold_start_s'], 1)} s"
            " | | |",
        ]
        for key, what in (("sample", "bundled 101x101 sample"),
                          ("large", "uploaded 1024x1024 image + mask")):
            m = app[key]
            lines += [
                f"| {what}: keydown → painted, p50 / p95 | {fmt(m['paint_p50'])} / "
                f"{fmt(m['paint_p95'])} ms | p95 ≤ 50 ms | {ok(m['paint_p95'] <= 50)} |",
                f"| {what}: keydown → redrawn, p50 / p95 | {fmt(m['drawn_p50'])} / "
                f"{fmt(m['drawn_p95'])} ms | | |",
                f"| {what}: wall, p50 / p95 | {fmt(m['wall_p50'])} / {fmt(m['wall_p95'])} ms"
                " | | |",
                f"| {what}: server reruns per move, while the keys move | "
                f"{m['runs_per_move']:.2f} ({m['rerun_requests']} rerun requests, "
                f"{m['script_runs']} script runs for {app['moves']} moves) | 0 | "
                f"{ok(m['rerun_requests'] == 0)} |",
                f"| {what}: server reruns once the keys rest (the view sends the value) | "
                f"{m['rest_requests']} rerun requests, {m['rest_runs']} script runs | ≤ 1 | "
                f"{ok(m['rest_requests'] <= 1)} |",
            ]
        lines += [
            f"| server resident memory, two models loaded and run | {fmt(rss, 0)} MB | "
            f"≤ 1,500 MB | {ok(rss <= 1500)} |",
            "",
        ]
    elif args.no_app:
        lines += ["Dashboard figures skipped (`--no-app`).", ""]
    return "\n".join(lines) + "\n"


def ray_section(n: int) -> dict[str, Any]:
    """``bench/ray_bench.py``'s figures (local vs Ray with 1 and 2 workers, Ray's start-up,
    peak memory) for the salt model on ``n`` TGS images (the bundled samples without
    ``../shared``); ``{"error": ...}`` when Ray is missing or the run fails."""
    try:
        import ray_bench  # bench/ is on sys.path when this file runs as a script
    except ImportError:
        sys.path.insert(0, str(ROOT / "bench"))
        import ray_bench
    data = ROOT.parent / "shared" / "data" / "tgs_salt"
    try:
        return ray_bench.ray_figures(ROOT / "models" / "salt.keras",
                                     data if data.is_dir() else ROOT / "assets" / "seismic", n)
    except (ImportError, SystemExit) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    except Exception as exc:  # noqa: BLE001 - reported in the table, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def _ray_lines(fig: dict[str, Any] | None) -> list[str]:
    """The local vs Ray section."""
    if fig is None:
        return []
    if "error" in fig:
        return ["## Local vs Ray", "", f"Not measured: {fig['error']}", ""]
    import ray_bench

    return ["## Local vs Ray (`predict --engine ray`)", "", ray_bench.markdown(fig), ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=None, help="model names (default: all)")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    ap.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                    help="also try ONNX Runtime static int8 (default on)")
    ap.add_argument("--throughput-images", type=int, default=2000,
                    help="images in the int8 whole-process throughput run (0: skip it)")
    ap.add_argument("--ray-images", type=int, default=300,
                    help="images in the --engine ray vs local run (0: skip it; needs "
                    "requirements-ray.txt)")
    ap.add_argument("--no-app", action="store_true", help="skip the browser figures")
    ap.add_argument("--app-only", action="store_true", help="only the browser figures")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    paths = sorted(p for p in (ROOT / "models").glob("*.keras")
                   if args.models is None or p.stem in args.models)
    if not paths:
        print("no models to benchmark in models/", file=sys.stderr)
        return 2
    peak = 0.0 if args.app_only else matmul_peak_gflops()
    print(f"fp32 matmul peak {peak:,.0f} GFLOP/s", file=sys.stderr)
    results = []
    for p in [] if args.app_only else paths:
        print(f"benchmarking {p.name} ...", file=sys.stderr)
        results.append(bench_model(p, args.quick, args.int8, peak))
    args.throughput = None
    if args.int8 and args.throughput_images and not args.app_only and (
            args.models is None or "salt" in args.models):
        print(f"int8 throughput on {args.throughput_images} images ...", file=sys.stderr)
        try:
            args.throughput = int8_throughput(args.throughput_images, 1 if args.quick else 2)
        except Exception as exc:  # noqa: BLE001 - reported in the table, not fatal
            args.throughput = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    args.ray = None
    if args.ray_images and not args.app_only:
        print(f"local vs Ray on {args.ray_images} images ...", file=sys.stderr)
        args.ray = ray_section(args.ray_images)
    app = None
    if not args.no_app:
        print("benchmarking the dashboard ...", file=sys.stderr)
        app = bench_app(args.quick)
    text = report(results, app, peak, args, time.perf_counter() - t0)
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"models": results, "app": app, "peak_gflops": peak,
         "int8_throughput": args.throughput, "ray": args.ray}, indent=1, default=float))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
