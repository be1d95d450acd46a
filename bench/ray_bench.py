"""``--engine ray`` figures: images/s of ``predict`` on the local engine vs Ray with 1 and 2
workers, Ray's start-up cost and peak memory (this process and every process it started: Ray's
GCS, raylet and workers), in ONE process so the runs share the machine's load.

Every run is a whole ``python -m unet_core predict`` command run in this process
(:func:`unet_core.cli.main`): model load (the ONNX export cached), reading, decoding,
prediction and writing of N images into a fresh folder; the Ray runs include starting a local
Ray, the actor pool and shutting down. Ray's start-up cost is ``ray.init`` + ``ray.shutdown`` on
its own. The outputs of every Ray run are checked byte for byte against the local run's.

Usage: ``python bench/ray_bench.py [--model models/salt.keras] [--data DIR] [--n 300]``
(prints a markdown table; ``make bench`` runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_rss_mb(pid: int | None = None) -> float:
    """Resident memory (MB) of a process and all its descendants (Linux /proc)."""
    root = os.getpid() if pid is None else pid
    tree = _children()
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        todo.extend(tree.get(p, []))
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total / 1024


@contextlib.contextmanager
def peak_memory(interval: float = 0.2) -> Iterator[dict[str, float]]:
    """Samples :func:`tree_rss_mb` in a thread; ``result["peak_mb"]`` after the block."""
    result = {"peak_mb": tree_rss_mb()}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            result["peak_mb"] = max(result["peak_mb"], tree_rss_mb())
            stop.wait(interval)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield result
    finally:
        stop.set()
        t.join()
        result["peak_mb"] = max(result["peak_mb"], tree_rss_mb())


def _images(folder: Path, n: int, into: Path) -> list[Path]:
    src = folder / "images" if (folder / "images").is_dir() else folder
    names = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:n]
    into.mkdir(parents=True, exist_ok=True)
    for p in names:
        shutil.copy(p, into / p.name)
    return [into / p.name for p in names]


def _quiet_main(argv: list[str]) -> int:
    from unet_core import cli

    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        return cli.main(argv)


def _same(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return bool(names) and all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def ray_figures(model: str | Path, folder: str | Path, n_images: int) -> dict[str, Any]:
    """Figures of ``predict`` over the first ``n_images`` of ``folder`` (or ``folder/images``)
    with ``model``: per engine (``local``, ``ray-1``, ``ray-2``) ``seconds``, ``images_per_s``,
    ``peak_mb`` and (Ray) ``identical`` (outputs byte-equal to local); ``ray_startup_s``
    (``ray.init`` + ``ray.shutdown`` of a local Ray), ``cpus``, ``n``."""
    import ray

    work = Path(tempfile.mkdtemp(prefix="ray_bench_"))
    try:
        images = _images(Path(folder), n_images, work / "in")
        n = len(images)
        if n == 0:
            raise SystemExit(f"no images in {folder}")
        _quiet_main(["predict", "--model", str(model), str(images[0]), "--out",
                     str(work / "warm")])  # imports, the ONNX export cache
        runs: dict[str, dict[str, Any]] = {}
        for label, extra in (("local", []), ("ray-1", ["--engine", "ray", "--workers", "1"]),
                             ("ray-2", ["--engine", "ray", "--workers", "2"])):
            out = work / label
            with peak_memory() as mem:
                t0 = time.perf_counter()
                rc = _quiet_main(["predict", "--model", str(model), str(work / "in"), "--out",
                                  str(out), *extra])
                seconds = time.perf_counter() - t0
            runs[label] = {"seconds": round(seconds, 2), "images_per_s": round(n / seconds, 1),
                           "peak_mb": round(mem["peak_mb"]), "rc": rc}
            if label != "local":
                (out / "metrics.parquet").unlink(missing_ok=True)
                runs[label]["identical"] = _same(work / "local", out)
        t0 = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
        ray.shutdown()
        startup = time.perf_counter() - t0
        return {"n": n, "cpus": os.cpu_count(), "model": Path(model).name,
                "ray_startup_s": round(startup, 2), "runs": runs}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(fig: dict[str, Any]) -> str:
    """The figures as a markdown table."""
    lines = [f"Ray vs local `predict` ({fig['model']}, {fig['n']} images, {fig['cpus']} CPUs; "
             f"whole commands; Ray start-up alone: {fig['ray_startup_s']} s)", "",
             "| engine | seconds | images/s | images/s after Ray start-up | "
             "peak memory (MB, all processes) | outputs = local |",
             "|---|---:|---:|---:|---:|---|"]
    for label, r in fig["runs"].items():
        same = "-" if label == "local" else ("yes" if r.get("identical") else "NO")
        rest = r["seconds"] - (0 if label == "local" else fig["ray_startup_s"])
        after = f"{fig['n'] / rest:.1f}" if rest > 0 else "-"
        lines.append(f"| {label} | {r['seconds']} | {r['images_per_s']} | {after} | "
                     f"{r['peak_mb']} | {same} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "salt.keras"))
    default = ROOT.parent / "shared" / "data" / "tgs_salt"
    ap.add_argument("--data", default=str(default if default.is_dir()
                                          else ROOT / "assets" / "seismic"))
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args(argv)
    print(markdown(ray_figures(args.model, args.data, args.n)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
