"""Load test of the dashboard: many browser sessions against one Streamlit server.

Usage, from the repository root (``make loadtest`` runs the defaults)::

    python scripts/loadtest.py [--sessions 20] [--duration 60] [--out bench/loadtest.md]

One ``python -m app.serve`` (app/Home.py) on localhost serves the bundled models (``models/``).
One headless chromium opens ``--sessions`` browser contexts (one Streamlit session each), driven
from one asyncio loop. Every session opens the Segment page, picks a model (even sessions
``salt``, odd ones ``nuclei``, so two models are loaded and predict; a ``nuclei`` session first
meets the domain gate over the seismic sample), uploads its own generated image with its mask
(``unet_core.synthetic``: a 202x202 seismic section or a 256x256 fluorescence field), then for
``--duration`` seconds moves the threshold view's "Threshold" one arrow-key step at a time (ten
steps one way, ten back), one step every ``--think`` seconds (±50%, from press to press) as a
person reading the result would. Each step is timed in the page from the keydown to the next
painted frame after the redraw of the overlay, error map, curve and scores
(:func:`tools.browser.async_move_threshold`; the wall time Playwright saw is reported too).

Reported: sessions, threshold moves, errors (exceptions, error boxes, time-outs, and isolation
failures: a session that shows another session's model, image or threshold), p50 / p95 / max
move latency, server reruns during the moves (rerun requests counted from each page's
websocket frames; the threshold view redraws in the browser and sends a keyboard value to
Python only once the keys rest, so the target is 0 per move beyond one per such rest),
moves after which the control no longer showed the value the keys put there ("jumps"), and
the server's resident memory (process + children) before any session, after the warm-up (both
models loaded and used), at its peak and at the end, each with a PASS/FAIL line against the
targets (0 errors, p95 <= 1 s, 0 reruns per move, 0 jumps, RSS with two models <= 1.5 GB,
growth during the moves within the caches' bounds). The figures are printed and written to
``--out`` as markdown. Exit status 0 when every target passes, else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tools.browser import (  # noqa: E402
    ARTIFACTS,
    WIDE,
    RerunCounter,
    async_choose_option,
    async_error_texts,
    async_goto,
    async_move_threshold,
    async_threshold_shown,
    async_upload,
    async_wait_idle,
    async_wait_threshold_view,
    launch_chromium,
    machine_busy_seconds,
    streamlit_server,
    widget,
)

#: (model option regex, image kind) by session parity.
MODELS: list[tuple[str, str]] = [(r"^salt$", "seismic"), (r"^nuclei$", "nuclei")]
TARGET_P95_MS = 1000.0
TARGET_RSS_MB = 1500.0
TARGET_RUNS_PER_MOVE = 0.0
#: Allowed RSS growth during the moves: moving the threshold adds no cache entry (the
#: probability map and the threshold view's payload are cached at warm-up), so anything beyond
#: allocator noise would be a leak.
TARGET_GROWTH_MB = 150.0
STEPS_EACH_WAY = 10
THRESHOLD_JS = REPO_ROOT / "app" / "components" / "threshold_view" / "threshold_view.js"


def key_idle_ms() -> float | None:
    """How long the threshold view waits after the last arrow-key step before it sends the
    value to Python (``KEY_IDLE_MS`` of its JS), or None when it has no such rule."""
    with contextlib.suppress(OSError):
        m = re.search(r"\bKEY_IDLE_MS\s*=\s*(\d+)", THRESHOLD_JS.read_text())
        if m:
            return float(m.group(1))
    return None


@dataclass
class SessionResult:
    """What one browser session did."""

    index: int
    model: str
    image: str
    latencies_ms: list[float] = field(default_factory=list)  # keydown -> painted, in the page
    redraw_ms: list[float] = field(default_factory=list)     # keydown -> redraw done
    wall_ms: list[float] = field(default_factory=list)       # Playwright's press -> painted
    key_gaps_ms: list[float] = field(default_factory=list)   # keydown -> next keydown, in page
    errors: list[str] = field(default_factory=list)
    isolation_errors: list[str] = field(default_factory=list)
    jumps: list[str] = field(default_factory=list)
    runs: RerunCounter | None = None
    runs_during_moves: int = 0
    reruns_requested: int = 0
    last_value: str | None = None
    values_set: set[str] = field(default_factory=set)  # every value this session's keys set
    stage: str = ""
    upload_retries: int = 0  # files chosen again: the uploader showed none after 60 s
    ready: bool = False


@dataclass
class LoadTestResult:
    """Figures of one load-test run (see the module docstring)."""

    sessions: int
    duration_s: float
    think_s: float
    updates: int
    errors: int
    isolation_errors: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    rss_before_mb: float
    rss_warm_mb: float
    rss_peak_mb: float
    rss_end_mb: float
    setup_s: float
    error_samples: list[str]
    models: list[str]
    server_cores: float = float("nan")
    machine_cores: float = float("nan")
    redraw_p95_ms: float = float("nan")
    wall_p50_ms: float = float("nan")
    wall_p95_ms: float = float("nan")
    gap_p50_ms: float = float("nan")
    gap_p95_ms: float = float("nan")
    gap_max_ms: float = float("nan")
    key_idle_ms: float | None = None
    rests: int = 0  # key gaps of at least key_idle_ms: the view sends the value then
    script_runs: int = 0
    rerun_requests: int = 0
    jumps: int = 0
    jump_samples: list[str] = field(default_factory=list)
    upload_retries: int = 0

    @property
    def runs_per_move(self) -> float:
        """Server reruns per threshold move while moving: rerun requests the browsers sent
        (each one (re)starts the page's script on the server, also when a newer request then
        interrupts it before its output reaches the browser)."""
        return self.rerun_requests / max(self.updates, 1)

    def rest_text(self) -> str:
        """Key gaps long enough for the view to send the value (it then reruns the page)."""
        if self.key_idle_ms is None:
            return "the threshold view has no keyboard rest rule (KEY_IDLE_MS)"
        return (f"{self.rests} key gaps of {self.key_idle_ms / 1000:.1f} s or more (the view "
                "sends a keyboard value to Python after that long a rest; the load generator's "
                "pace decides how often that happens)")

    @property
    def reruns_from_moves(self) -> int:
        """Rerun requests beyond one per rest (a key gap of at least the view's keyboard rest
        time, after which it sends the value to Python by design): those caused by moves."""
        return max(0, self.rerun_requests - self.rests)

    @property
    def server_ms_per_update(self) -> float:
        """Server CPU time per threshold move while moving (ms)."""
        return self.server_cores * self.duration_s * 1000.0 / max(self.updates, 1)

    @property
    def growth_mb(self) -> float:
        return self.rss_end_mb - self.rss_warm_mb

    def checks(self) -> list[tuple[str, bool, str]]:
        """(target, passed, figure) for each target."""
        return [
            ("errors = 0", self.errors == 0, f"{self.errors}"),
            ("sessions isolated", self.isolation_errors == 0,
             f"{self.isolation_errors} isolation errors"),
            (f"p95 move latency (keydown -> redrawn numbers painted) <= {TARGET_P95_MS:.0f} ms",
             self.p95_ms <= TARGET_P95_MS, f"{self.p95_ms:.0f} ms"),
            (f"server reruns per move = {TARGET_RUNS_PER_MOVE:.0f} (beyond one per rest)",
             self.reruns_from_moves / max(self.updates, 1) <= TARGET_RUNS_PER_MOVE,
             f"{self.reruns_from_moves / max(self.updates, 1):.2f} ({self.rerun_requests} rerun "
             f"requests for {self.updates} moves and {self.rests} rests; "
             f"{self.runs_per_move:.2f} per move in all)"),
            ("control stays where the keys put it (jumps = 0)", self.jumps == 0,
             f"{self.jumps} jumps in {self.updates} moves"),
            (f"RSS with two models <= {TARGET_RSS_MB:.0f} MB",
             max(self.rss_warm_mb, self.rss_peak_mb) <= TARGET_RSS_MB,
             f"{self.rss_warm_mb:.0f} MB after warm-up, {self.rss_peak_mb:.0f} MB peak"),
            (f"RSS growth while moving <= {TARGET_GROWTH_MB:.0f} MB",
             self.growth_mb <= TARGET_GROWTH_MB, f"{self.growth_mb:+.0f} MB"),
        ]

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.checks())

    def report(self) -> str:
        """Plain-text report (what the command prints)."""
        lines = [
            f"sessions            {self.sessions} ({', '.join(self.models)}; "
            f"{self.duration_s:.0f} s of threshold moves each, {self.think_s:.1f} s think time)",
            f"set-up              {self.setup_s:.0f} s (open page, pick model, upload + mask); "
            f"{self.upload_retries} uploads had to be chosen again (no file shown after 60 s)",
            f"CPU while moving    server {self.server_cores:.2f} cores, whole machine "
            f"{self.machine_cores:.2f} of {os.cpu_count()} (the rest: chromium, this script); "
            f"server CPU per move {self.server_ms_per_update:.0f} ms",
            f"threshold moves     {self.updates} (key press to key press: p50 "
            f"{self.gap_p50_ms:.0f} ms, p95 {self.gap_p95_ms:.0f} ms, max "
            f"{self.gap_max_ms:.0f} ms)",
            f"errors              {self.errors} (isolation: {self.isolation_errors})",
            f"move latency        keydown -> painted: p50 {self.p50_ms:.0f} ms, p95 "
            f"{self.p95_ms:.0f} ms, max {self.max_ms:.0f} ms; keydown -> redraw done p95 "
            f"{self.redraw_p95_ms:.0f} ms; wall (Playwright) p50 {self.wall_p50_ms:.0f} ms, "
            f"p95 {self.wall_p95_ms:.0f} ms",
            f"server reruns       {self.rerun_requests} rerun requests sent by the browsers "
            f"while moving ({self.runs_per_move:.2f} per move); {self.script_runs} script runs "
            "reached the browsers (new_session)",
            f"rests               {self.rest_text()}",
            f"jumps               {self.jumps} (the control showed another value than the "
            "keys set, before the next key)",
            f"server RSS          before {self.rss_before_mb:.0f} MB, after warm-up (two models) "
            f"{self.rss_warm_mb:.0f} MB, peak {self.rss_peak_mb:.0f} MB, "
            f"end {self.rss_end_mb:.0f} MB",
        ]
        lines += [f"{'PASS' if ok else 'FAIL'}  {name}: {fig}" for name, ok, fig in self.checks()]
        lines += [f"  error: {e}" for e in self.error_samples]
        lines += [f"  jump: {e}" for e in self.jump_samples]
        return "\n".join(lines)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100, linear interpolation); nan when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def make_images(folder: Path, sessions: int) -> list[tuple[Path, Path]]:
    """One distinct (image, mask) PNG pair per session, under ``folder/images|masks``."""
    from unet_core.synthetic import fluorescence_nuclei, seismic_section, write_pair

    pairs = []
    for i in range(sessions):
        kind = MODELS[i % len(MODELS)][1]
        name = f"load_{i:02d}_{kind}.png"
        if kind == "seismic":
            image, mask = seismic_section((202, 202), seed=9000 + i, salt=True)
        else:
            image, mask = fluorescence_nuclei((256, 256), seed=9000 + i)
        write_pair(folder, name, image, mask)
        pairs.append((folder / "images" / name, folder / "masks" / name))
    return pairs


async def _main_text(page) -> str:
    return await page.evaluate(
        "() => (document.querySelector('[data-testid=\"stMain\"]') || {}).textContent || ''")


async def _setup(page, base: str, res: SessionResult, pattern: str, image: Path, mask: Path,
                 gate: asyncio.Semaphore) -> None:
    """Open Segment, pick the model, upload image + mask; the view then shows its scores.
    ``res.stage`` names the step in progress (for the error message when one fails)."""
    async with gate:
        res.stage = "open Segment"
        await async_goto(page, base, "segment", timeout=180)
        res.stage = "pick the model"
        chosen = await async_choose_option(page, widget(page, "stSelectbox", "Model"), pattern)
        if chosen is None:
            raise AssertionError(f"no model matching {pattern!r} in the sidebar")
        res.model = chosen
        await async_wait_idle(page, timeout=180)
        res.stage = "upload the image"
        res.upload_retries += await async_upload(page, "Upload images", [image], timeout=60)
        res.stage = "upload the mask"
        res.upload_retries += await async_upload(page, "Upload masks (same file names)",
                                                 [mask], timeout=60)
        res.stage = "wait for the threshold view"
        await async_wait_threshold_view(page, timeout=180)
        res.stage = "wait for its scores"
        await page.locator('[data-testid="tv-root"] [data-metric="iou"]').first.wait_for(
            state="visible", timeout=180_000)
        errors = await async_error_texts(page)
        if errors:
            raise AssertionError("error on the page after upload: " + " | ".join(errors))
        res.last_value = (await async_threshold_shown(page)).control
        res.values_set.add(res.last_value or "")
        res.stage = "ready"
        res.ready = True


async def _check_isolation(page, res: SessionResult) -> None:
    """The page shows this session's model, image and threshold, nobody else's (a threshold
    this session's keys set earlier is a jump, counted by :func:`_slide`, not an isolation
    failure)."""
    text = await _main_text(page)
    shown_models = set(re.findall(r"Model\s*(\w+)\s*·", text))
    if shown_models != {res.model}:
        res.isolation_errors.append(
            f"session {res.index}: model {res.model!r} expected, page shows {shown_models}")
    others = set(re.findall(r"load_\d\d_\w+?\.png", text)) - {res.image}
    if res.image not in text or others:
        res.isolation_errors.append(
            f"session {res.index}: expected image {res.image}, page names {sorted(others)}")
    shown = await async_threshold_shown(page)
    if shown.control not in res.values_set:
        res.isolation_errors.append(
            f"session {res.index}: threshold {shown.control} shown, this session set "
            f"{sorted(res.values_set)}")


async def _slide(page, res: SessionResult, until: float, think: float) -> None:
    """Move the threshold until ``until`` (monotonic), ten steps one way, ten back; a key press
    every ``think`` s (±50%), counted from the previous press (so a slow move or check does
    not stretch the pace)."""
    rng = random.Random(res.index)
    direction, steps = (1 if res.index % 2 else -1), 0
    next_at = time.monotonic() + rng.uniform(0, max(think, 0.2))  # not in lock-step
    runs0 = res.runs.snapshot() if res.runs else (0, 0)
    last_key_at: float | None = None
    while next_at < until:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        next_at = time.monotonic() + think * rng.uniform(0.5, 1.5)
        try:
            shown = await async_threshold_shown(page)
            if res.last_value is not None and shown.control != res.last_value:
                res.jumps.append(f"session {res.index}: the keys set {res.last_value}, the "
                                 f"control shows {shown.control}")
            move = await async_move_threshold(page, direction, timeout=30)
            res.latencies_ms.append(move.paint_ms)
            res.redraw_ms.append(move.page_ms)
            res.wall_ms.append(move.wall_ms)
            if last_key_at is not None:
                res.key_gaps_ms.append(move.key_at - last_key_at)
            last_key_at = move.key_at
            res.last_value = move.value
            res.values_set.add(move.value)
            errors = await async_error_texts(page)
            if errors:
                res.errors.append(f"session {res.index}: " + " | ".join(errors)[:300])
        except Exception as exc:  # a time-out or a broken page counts as an error
            res.errors.append(f"session {res.index}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}")
            with contextlib.suppress(Exception):
                await async_wait_idle(page, timeout=60)
                res.last_value = (await async_threshold_shown(page)).control
                res.values_set.add(res.last_value or "")
        steps += 1
        if steps % STEPS_EACH_WAY == 0:
            direction = -direction
    if res.runs:
        requests, runs = res.runs.snapshot()
        res.reruns_requested, res.runs_during_moves = requests - runs0[0], runs - runs0[1]
    with contextlib.suppress(Exception):
        # past the end, and long enough for the last step's release to reach the server
        await asyncio.sleep(max(0.0, until - time.monotonic()) + 2.5)
        await async_wait_idle(page, timeout=60)
        shown = await async_threshold_shown(page)
        if shown.control != res.last_value:
            res.jumps.append(f"session {res.index} at the end: the keys set {res.last_value}, "
                             f"the control shows {shown.control}")
        await _check_isolation(page, res)


async def _sample_rss(server, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], server.rss_mb())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def _run(server, pairs: list[tuple[Path, Path]], duration: float, think: float,
               setup_parallel: int
               ) -> tuple[list[SessionResult], float, float, float, tuple[float, float]]:
    from playwright.async_api import async_playwright

    results = [SessionResult(i, "", pairs[i][0].name) for i in range(len(pairs))]
    async with async_playwright() as p:
        browser = await launch_chromium(p)
        try:
            contexts = [await browser.new_context(viewport=WIDE) for _ in pairs]
            pages = [await c.new_page() for c in contexts]
            for pg, res in zip(pages, results, strict=True):
                res.runs = RerunCounter(pg)
            gate = asyncio.Semaphore(setup_parallel)
            t0 = time.monotonic()
            outcomes = await asyncio.gather(
                *(_setup(pg, server.url, res, MODELS[res.index % len(MODELS)][0], img, msk, gate)
                  for pg, res, (img, msk) in zip(pages, results, pairs, strict=True)),
                return_exceptions=True)
            setup_s = time.monotonic() - t0
            for pg, res, out in zip(pages, results, outcomes, strict=True):
                if isinstance(out, BaseException):
                    with contextlib.suppress(Exception):
                        (ARTIFACTS / "screenshots").mkdir(parents=True, exist_ok=True)
                        await pg.screenshot(path=str(ARTIFACTS / "screenshots" /
                                                     f"loadtest_setup_failed_{res.index:02d}.png"))
                    res.errors.append(f"session {res.index} set-up ({res.stage}): "
                                      f"{type(out).__name__}: "
                                      f"{str(out).splitlines()[0][:200] if str(out) else ''}")
            for pg, res in zip(pages, results, strict=True):
                if res.ready:
                    await _check_isolation(pg, res)
            rss_warm = server.rss_mb()
            peak = [rss_warm]
            stop = asyncio.Event()
            sampler = asyncio.create_task(_sample_rss(server, peak, stop))
            t_start, cpu0, busy0 = time.monotonic(), server.cpu_seconds(), machine_busy_seconds()
            until = t_start + duration
            await asyncio.gather(*(_slide(pg, res, until, think)
                                   for pg, res in zip(pages, results, strict=True) if res.ready))
            wall = max(time.monotonic() - t_start, 1e-9)
            cores = ((server.cpu_seconds() - cpu0) / wall, (machine_busy_seconds() - busy0) / wall)
            stop.set()
            await sampler
            for c in contexts:
                with contextlib.suppress(Exception):
                    await c.close()
        finally:
            await browser.close()
    return results, setup_s, rss_warm, peak[0], cores


def run_loadtest(sessions: int = 20, duration: float = 60.0, think: float = 1.0,
                 models_dir: Path | None = None, setup_parallel: int = 3,
                 log_path: Path | None = None) -> LoadTestResult:
    """Run the load test (see the module docstring) and return its figures."""
    models_dir = models_dir or REPO_ROOT / "models"
    missing = [f"{name}.keras" for name in ("salt", "nuclei")
               if not (models_dir / f"{name}.keras").is_file()]
    if missing:
        raise SystemExit(f"error: {models_dir} lacks {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="unet_loadtest_") as tmp:
        pairs = make_images(Path(tmp), sessions)
        log_path = log_path or ARTIFACTS / "streamlit-loadtest.log"
        with streamlit_server(models_dir=models_dir, log_path=log_path, timeout=120) as server:
            time.sleep(1.0)
            rss_before = server.rss_mb()
            results, setup_s, rss_warm, rss_peak, cores = asyncio.run(
                _run(server, pairs, duration, think, setup_parallel))
            time.sleep(1.0)
            rss_end = server.rss_mb()
            rss_peak = max(rss_peak, rss_end)
    latencies = [ms for r in results for ms in r.latencies_ms]
    redraws = [ms for r in results for ms in r.redraw_ms]
    walls = [ms for r in results for ms in r.wall_ms]
    gaps = [ms for r in results for ms in r.key_gaps_ms]
    idle = key_idle_ms()
    errors = [e for r in results for e in r.errors]
    isolation = [e for r in results for e in r.isolation_errors]
    jumps = [e for r in results for e in r.jumps]
    return LoadTestResult(
        sessions=sessions, duration_s=duration, think_s=think, updates=len(latencies),
        errors=len(errors) + len(isolation), isolation_errors=len(isolation),
        p50_ms=percentile(latencies, 50), p95_ms=percentile(latencies, 95),
        max_ms=max(latencies, default=float("nan")), rss_before_mb=rss_before,
        rss_warm_mb=rss_warm, rss_peak_mb=rss_peak, rss_end_mb=rss_end, setup_s=setup_s,
        error_samples=(errors + isolation)[:10],
        models=sorted({r.model for r in results if r.model}), server_cores=cores[0],
        machine_cores=cores[1], redraw_p95_ms=percentile(redraws, 95),
        wall_p50_ms=percentile(walls, 50), wall_p95_ms=percentile(walls, 95),
        gap_p50_ms=percentile(gaps, 50), gap_p95_ms=percentile(gaps, 95),
        gap_max_ms=max(gaps, default=float("nan")), key_idle_ms=idle,
        rests=sum(g >= idle for g in gaps) if idle is not None else 0,
        script_runs=sum(r.runs_during_moves for r in results),
        rerun_requests=sum(r.reruns_requested for r in results), jumps=len(jumps),
        upload_retries=sum(r.upload_retries for r in results),
        jump_samples=jumps[:5])


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def markdown(result: LoadTestResult, command: str) -> str:
    """The figures as a small markdown page."""
    r = result
    rows = [
        ("sessions", f"{r.sessions} (half `salt`, half `nuclei`), {r.duration_s:.0f} s each"),
        ("threshold moves (arrow-key steps)", f"{r.updates}"),
        ("time from one key press to the next in a session, p50 / p95 / max",
         f"{r.gap_p50_ms:.0f} / {r.gap_p95_ms:.0f} / {r.gap_max_ms:.0f} ms"),
        ("errors (target 0)", f"{r.errors} (of which isolation: {r.isolation_errors})"),
        (f"move latency, keydown → redrawn numbers painted, p50 / p95 / max (target p95 ≤ "
         f"{TARGET_P95_MS:.0f} ms)", f"{r.p50_ms:.0f} / {r.p95_ms:.0f} / {r.max_ms:.0f} ms"),
        ("keydown → redraw done (canvases, curve, scores), p95", f"{r.redraw_p95_ms:.0f} ms"),
        ("wall time Playwright saw (press → painted), p50 / p95",
         f"{r.wall_p50_ms:.0f} / {r.wall_p95_ms:.0f} ms"),
        ("server reruns while moving: rerun requests the browsers sent (target: none beyond "
         "one per rest)", f"{r.rerun_requests} ({r.runs_per_move:.2f} per move; "
         f"{r.reruns_from_moves} beyond one per rest)"),
        ("script runs that reached the browsers while moving (new_session messages)",
         f"{r.script_runs}"),
        ("rests: key gaps long enough for the view to send the value", r.rest_text()),
        ("jumps: the control showed another value than the keys set (target 0)",
         f"{r.jumps}"),
        ("server RSS before any session", f"{r.rss_before_mb:.0f} MB"),
        ("server RSS after warm-up: two models loaded and used (target ≤ 1500 MB)",
         f"{r.rss_warm_mb:.0f} MB"),
        ("server RSS peak / end", f"{r.rss_peak_mb:.0f} / {r.rss_end_mb:.0f} MB"),
        (f"RSS growth while moving (target ≤ {TARGET_GROWTH_MB:.0f} MB)",
         f"{r.growth_mb:+.0f} MB"),
        ("set-up (open page, pick model, upload image + mask)", f"{r.setup_s:.0f} s"),
        ("uploads chosen again: the uploader showed no file 60 s after it was chosen",
         f"{r.upload_retries}"),
        ("CPU while moving: server / whole machine",
         f"{r.server_cores:.2f} / {r.machine_cores:.2f} of {os.cpu_count()} cores"),
        ("server CPU per move", f"{r.server_ms_per_update:.0f} ms"),
    ]
    checks = "\n".join(f"- **{'PASS' if ok else 'FAIL'}** {name}: {fig}"
                       for name, ok, fig in r.checks())
    errors = ("\n\nFirst errors:\n\n" + "\n".join(f"- `{e}`" for e in r.error_samples)
              if r.error_samples else "")
    jumps = ("\n\nFirst jumps:\n\n" + "\n".join(f"- `{e}`" for e in r.jump_samples)
             if r.jump_samples else "")
    return f"""# Dashboard load test

`{command}` on {dt.datetime.now().strftime("%Y-%m-%d %H:%M")}, machine: {os.cpu_count()} CPU
cores ({_cpu_model()}), Python {platform.python_version()}. The server, the headless chromium
running every session and (when this was run) any other work of the machine share these cores.

Each session is a browser context of one chromium: it opens Segment, picks its model (`nuclei`
sessions first meet the domain gate), uploads its own generated image with its mask, then moves
the threshold view's "Threshold" one arrow-key step at a time, {r.think_s:.1f} s (±50%) from
one key press to the next. Latency: in the page, from the keydown to the next frame painted
after the overlay, error map, curve and scores were redrawn (no server round trip). Reruns:
counted from each page's websocket frames: rerun requests sent (`rerun_script`: each one
(re)starts the Segment script on the server) and script runs received (`new_session`; a run
interrupted by a newer request may never reach the browser); the view sends a keyboard value
to Python once the keys rest (a rest: a key gap of at least its `KEY_IDLE_MS`), so one rerun
per rest is by design and only reruns beyond that count against the target. A jump: before a
key press the control no longer showed the value the previous key press set. RSS: the
Streamlit server process (and children), from /proc/PID/status.

| figure | value |
|---|---|
{chr(10).join(f"| {a} | {b} |" for a, b in rows)}

{checks}{errors}{jumps}
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=20, help="browser sessions (default 20)")
    ap.add_argument("--duration", type=float, default=60.0,
                    help="seconds of threshold moves per session (default 60)")
    ap.add_argument("--think", type=float, default=1.0,
                    help="mean time from one threshold step of a session to the next, s "
                    "(default 1.0)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "loadtest.md",
                    help="markdown report (default bench/loadtest.md; '-' for none)")
    ap.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models",
                    help="bundled models (needs salt.keras and nuclei.keras)")
    args = ap.parse_args(argv)
    if args.sessions < 1 or args.duration <= 0 or args.think < 0:
        ap.error("--sessions must be >= 1, --duration > 0, --think >= 0")
    result = run_loadtest(args.sessions, args.duration, args.think, args.models_dir)
    print(result.report())
    if str(args.out) != "-":
        given = sys.argv[1:] if argv is None else argv
        command = " ".join(["python scripts/loadtest.py", *given])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown(result, command))
        print(f"wrote {args.out}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
