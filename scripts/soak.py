"""Soak test of the dashboard: many mixed uploads (good, hostile, large) through a few browser
sessions against one server; memory, temporary disk and errors over the whole run.

Usage, from the repository root (``make soak`` runs the defaults)::

    python scripts/soak.py [--sessions 4] [--uploads 200] [--out bench/soak.md]

One ``python -m app.serve`` serves the bundled models (``models/``) with its upload folder
(``UNET_UPLOAD_DIR``) in a fresh temporary folder and ``server.disconnectedSessionTTL`` of a
few seconds. One headless chromium opens ``--sessions`` browser contexts (one Streamlit
session each) on the Segment page with the ``salt`` model; together they make ``--uploads``
uploads, in a fixed mixed order (:func:`plan`):

* good: generated 202x202 seismic sections (each session its own seeds);
* large: 2048x2048 images (predicted in tiles);
* hostile images: a PNG that declares 100,000 x 100,000 pixels in a few hundred bytes, a
  truncated PNG, bytes that are no image, names carrying markdown (a remote image, a link,
  emphasis, a colour, HTML) and a forged ``error:`` line;
* hostile models (session 0, at the end): a ``.keras`` that is not a zip, and, when the engine
  vets uploads in a child process (``unet_core.sandbox``), a real model with a card whose
  ``min_size`` is 8192.

Every upload must end in the result (good, large) or in exactly one error line in our words
(hostile): "Unexpected error", "Traceback", an exception box or a second error counts as an
error, and so does a request from the browser to the address in the hostile names. Reported:
uploads, errors (with samples), the server's resident memory (process + children) before the
sessions, at its peak and at the end (after the sessions closed), the upload folder's peak and
final bytes, and whether the folder is back to zero. Written to ``--out`` as markdown; exit
status 0 when there are no errors, the peak RSS is under ``--rss-limit-mb`` and the upload
folder is back to zero.

A watchdog kills the server if its RSS passes ``--kill-mb`` (default 8192): a regression must
not take the machine with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import os
import re
import struct
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from app.settings import MODEL_UPLOAD_LABEL  # noqa: E402
from tools.browser import (  # noqa: E402
    WIDE,
    async_choose_option,
    async_error_texts,
    async_goto,
    async_wait_idle,
    launch_chromium,
    rss_bytes,
    streamlit_server,
    widget,
)

TARGET_RSS_MB = 1500.0
#: The address the hostile names point at; the browser must never request it.
TRAP = "127.0.0.1:9"
HOSTILE_NAME = (f"![x](http://{TRAP}/a.png) **b** :red[c] <b>h</b> "
                f"[l](http://{TRAP}/l)\nerror: forged")
IMAGE_LABEL = "Upload images"
MODEL_LABEL = MODEL_UPLOAD_LABEL
DISCONNECTED_TTL_S = 3


# --------------------------------------------------------------------------- inputs


def _png(array) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def declared_huge_png(side: int = 100_000) -> bytes:
    """A valid-looking PNG of a few hundred bytes that declares ``side`` x ``side`` pixels."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def good_png(seed: int) -> bytes:
    import numpy as np

    from unet_core.synthetic import seismic_section

    image, _ = seismic_section((202, 202), seed=seed, salt=True)
    return _png(np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8))


def large_png(seed: int, side: int = 2048) -> bytes:
    import numpy as np

    rng = np.random.default_rng(seed)
    row = (np.arange(side) * 255 // (side - 1)).astype(np.uint8)
    image = np.broadcast_to(row, (side, side)).copy()
    image[rng.integers(0, side, 64), :] = 255
    return _png(image)


@dataclass(frozen=True)
class Upload:
    """One upload: what it is, its file name and bytes, and whether it should succeed."""

    kind: str  # good | large | hostile | model
    name: str
    data: bytes = field(repr=False)
    ok: bool


def plan(session: int, count: int) -> list[Upload]:
    """The uploads of one session, in order: every 10th large, 2 in 5 of the rest hostile
    (each kind in turn, each session starting at another), the others good."""
    good = good_png(7000 + session)
    hostile = [("huge.png", declared_huge_png()), ("truncated.png", good[: len(good) // 3]),
               ("notanimage.png", b"this is not an image"),
               (HOSTILE_NAME + ".png", b"not an image either")]
    out: list[Upload] = []
    k = session
    for i in range(count):
        if i % 10 == 9:
            out.append(Upload("large", f"s{session}_large_{i}.png", large_png(i), True))
        elif i % 5 in (1, 4):
            name, data = hostile[k % len(hostile)]
            k += 1
            out.append(Upload("hostile", f"s{session}_{i}_{name}", data, False))
        else:
            data = good if i % 3 else good_png(7000 + 100 * session + i)
            out.append(Upload("good", f"s{session}_good_{i}.png", data, True))
    return out


def hostile_models() -> list[tuple[str, list[tuple[str, bytes, str]]]]:
    """(what, files) of the hostile model uploads: a .keras that is not a zip, and, when the
    engine vets uploads in a child process, a real model with a card of min_size 8192."""
    models = [("not a zip", [("evil.keras", b"PK\x03\x04 not a zip at all",
                              "application/octet-stream")])]
    salt = REPO_ROOT / "models" / "salt.keras"
    try:
        import unet_core.sandbox  # noqa: F401

        vetted = True
    except ImportError:
        vetted = False
    if vetted and salt.is_file():
        import json

        card = json.dumps({"name": "bomb", "min_size": 8192}).encode()
        models.append(("card min_size 8192", [("bomb.keras", salt.read_bytes(),
                                               "application/octet-stream"),
                                              ("bomb.json", card, "application/json")]))
    return models


# --------------------------------------------------------------------------- run


@dataclass
class SessionLog:
    index: int
    uploads: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    expected_messages: list[str] = field(default_factory=list)
    #: (what, server RSS MB after it) per step, for finding what the memory went to.
    steps: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class SoakResult:
    sessions: int
    uploads: int
    seconds: float
    rss_before_mb: float
    rss_peak_mb: float
    rss_end_mb: float
    temp_peak_bytes: int
    temp_end_bytes: int
    temp_end_folders: int
    trap_requests: int
    errors: list[str]
    by_kind: dict[str, int]
    messages: list[str]
    killed: bool = False
    rss_all_peak_mb: float = 0.0
    steps: list[tuple[str, float]] = field(default_factory=list)
    rss_limit_mb: float = TARGET_RSS_MB

    @property
    def passed(self) -> bool:
        return (not self.errors and not self.killed and self.trap_requests == 0
                and self.rss_peak_mb <= self.rss_limit_mb and self.temp_end_bytes == 0
                and self.temp_end_folders == 0)

    def report(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_kind.items()))
        lines = [
            f"sessions {self.sessions}, uploads {self.uploads} ({kinds}) in {self.seconds:.0f} s",
            f"errors {len(self.errors)}" + (f": {self.errors[:5]}" if self.errors else ""),
            f"RSS MB: before {self.rss_before_mb:.0f}, peak {self.rss_peak_mb:.0f}, end "
            f"{self.rss_end_mb:.0f} (limit {self.rss_limit_mb:.0f}); with the vetting "
            f"children: peak {self.rss_all_peak_mb:.0f}"
            + (" KILLED by the watchdog" if self.killed else ""),
            f"upload folder: peak {self.temp_peak_bytes / 1e6:.1f} MB, end "
            f"{self.temp_end_bytes} bytes in {self.temp_end_folders} folders",
            f"requests to {TRAP}: {self.trap_requests}",
            "RSS after each step (MB): " + ", ".join(f"{w} {r:.0f}" for w, r in self.steps),
            "PASS" if self.passed else "FAIL",
        ]
        return "\n".join(lines)


def _usage(root: Path) -> tuple[int, int]:
    if not root.is_dir():
        return 0, 0
    folders = [p for p in root.iterdir() if p.is_dir()]
    total = 0
    for folder in folders:
        for base, _dirs, files in os.walk(folder):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(base, name)).st_size
    return len(folders), total


def server_mb(server) -> float:
    """Resident memory of the server process itself (MB); the vetting children have their
    own limit (UNET_VET_MEMORY_MB) and are reported apart."""
    return rss_bytes(server.pid, children=False) / 1e6


async def _monitor(server, root: Path, peaks: dict[str, float], stop: asyncio.Event,
                   kill_mb: float) -> None:
    while not stop.is_set():
        rss = server.rss_mb()
        peaks["rss"] = max(peaks["rss"], server_mb(server))
        peaks["all"] = max(peaks["all"], rss)
        peaks["temp"] = max(peaks["temp"], _usage(root)[1])
        if rss > kill_mb:
            peaks["killed"] = 1
            with contextlib.suppress(Exception):
                os.killpg(server.pid, 9)
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def _set_files(page, label: str, files: list[tuple[str, bytes, str]],
                     timeout: float) -> None:
    uploader = widget(page, "stFileUploader", label)
    await uploader.first.wait_for(timeout=timeout * 1000)
    # A multi-file uploader adds to its files: remove the previous upload first (as a person
    # would), so each upload is judged on its own.
    chips = uploader.locator('[data-testid="stFileChipDeleteBtn"] button')
    for _ in range(20):
        if not await chips.count():
            break
        await chips.first.click()
        await asyncio.sleep(0.2)
        await async_wait_idle(page, timeout)
    await uploader.locator('input[type="file"]').set_input_files(
        [{"name": n, "mimeType": m, "buffer": d} for n, d, m in files])
    await asyncio.sleep(0.3)
    await async_wait_idle(page, timeout)


def _check(log: SessionLog, what: str, errors: list[str], ok: bool) -> None:
    bad = [e for e in errors if "Unexpected error" in e or "Traceback" in e
           or "File \"" in e]
    if ok and errors:
        log.errors.append(f"session {log.index} {what}: error on a good upload: "
                          + " | ".join(errors)[:300])
    elif not ok and len(errors) != 1:
        log.errors.append(f"session {log.index} {what}: {len(errors)} error boxes, one "
                          "expected: " + " | ".join(errors)[:300])
    elif bad:
        log.errors.append(f"session {log.index} {what}: " + " | ".join(bad)[:300])
    elif not ok:
        log.expected_messages.append(errors[0].replace("\n", " ")[:400])


async def _session(browser, base: str, log: SessionLog, uploads: list[Upload],
                   models: bool, trap: list[str], timeout: float, rss) -> None:
    context = await browser.new_context(viewport=WIDE)
    page = await context.new_page()
    page.on("request", lambda req: trap.append(req.url) if TRAP in req.url else None)
    try:
        await async_goto(page, base, "segment", timeout=timeout)
        log.steps.append(("opened", rss()))
        chosen = await async_choose_option(page, widget(page, "stSelectbox", "Model"),
                                           r"^salt$")
        await async_wait_idle(page, timeout)
        log.steps.append(("salt", rss()))
        if chosen is None:
            raise AssertionError("no salt model in the sidebar")
        radio = widget(page, "stRadio", "Image source").locator("label").filter(
            has_text="Upload")
        await radio.first.click()
        await async_wait_idle(page, timeout)
        for up in uploads:
            try:
                await _set_files(page, IMAGE_LABEL, [(up.name, up.data, "image/png")], timeout)
                _check(log, f"{up.kind} {up.name[:40]!r}", await async_error_texts(page), up.ok)
            except Exception as exc:
                log.errors.append(f"session {log.index} {up.kind}: {type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:200] if str(exc) else ''}")
                with contextlib.suppress(Exception):
                    await async_wait_idle(page, timeout)
            log.uploads += 1
            log.by_kind[up.kind] = log.by_kind.get(up.kind, 0) + 1
            log.steps.append((f"{up.kind} {up.name[:30]}", rss()))
        if models:
            box = widget(page, "stSelectbox", "Model")
            await async_choose_option(page, box, r"^Upload a model")
            await async_wait_idle(page, timeout)
            for what, files in hostile_models():
                try:
                    await _set_files(page, MODEL_LABEL, files, timeout)
                    errors = [e for e in await async_error_texts(page)]
                    _check(log, f"model {what}", errors[:1] if errors else [], False)
                except Exception as exc:
                    log.errors.append(f"session {log.index} model {what}: "
                                      f"{type(exc).__name__}: {str(exc)[:200]}")
                log.uploads += 1
                log.by_kind["model"] = log.by_kind.get("model", 0) + 1
    finally:
        with contextlib.suppress(Exception):
            await context.close()


async def _run(server, root: Path, sessions: int, per_session: list[list[Upload]],
               kill_mb: float, timeout: float) -> tuple[list[SessionLog], dict, list[str]]:
    from playwright.async_api import async_playwright

    peaks: dict[str, float] = {"rss": server_mb(server), "all": server.rss_mb(), "temp": 0,
                               "killed": 0}
    stop = asyncio.Event()
    monitor = asyncio.create_task(_monitor(server, root, peaks, stop, kill_mb))
    logs = [SessionLog(i) for i in range(sessions)]
    trap: list[str] = []
    async with async_playwright() as p:
        browser = await launch_chromium(p)
        try:
            outcomes = await asyncio.gather(
                *(_session(browser, server.url, logs[i], per_session[i], models=i == 0,
                           trap=trap, timeout=timeout, rss=lambda: server_mb(server))
              for i in range(sessions)),
                return_exceptions=True)
            for log, out in zip(logs, outcomes, strict=True):
                if isinstance(out, BaseException):
                    log.errors.append(f"session {log.index}: {type(out).__name__}: "
                                      f"{str(out).splitlines()[0][:200] if str(out) else ''}")
        finally:
            await browser.close()
    stop.set()
    await monitor
    return logs, peaks, trap


def run_soak(sessions: int = 4, uploads: int = 200, models_dir: Path | None = None,
             log_path: Path | None = None, kill_mb: float = 8192.0,
             rss_limit_mb: float = TARGET_RSS_MB, settle_s: float = 30.0,
             timeout: float = 180.0) -> SoakResult:
    """Run the soak (see the module docstring) and return its figures."""
    models_dir = models_dir or REPO_ROOT / "models"
    if not (models_dir / "salt.keras").is_file():
        raise SystemExit(f"error: {models_dir} lacks salt.keras")
    per = [uploads // sessions + (1 if i < uploads % sessions else 0) for i in range(sessions)]
    per_session = [plan(i, n) for i, n in enumerate(per)]
    with tempfile.TemporaryDirectory(prefix="unet_soak_") as tmp:
        root = Path(tmp) / "uploads"
        env = {"UNET_UPLOAD_DIR": str(root),
               "STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL": str(DISCONNECTED_TTL_S)}
        log_path = log_path or REPO_ROOT / "test-artifacts" / "streamlit-soak.log"
        with streamlit_server(models_dir=models_dir, log_path=log_path, env=env,
                              timeout=120) as server:
            time.sleep(1.0)
            rss_before = server_mb(server)
            t0 = time.monotonic()
            logs, peaks, trap = asyncio.run(
                _run(server, root, sessions, per_session, kill_mb, timeout))
            seconds = time.monotonic() - t0
            # The sessions are closed: their folders go once Streamlit drops them (after
            # the reconnect TTL) and the server's sweeper runs.
            deadline = time.monotonic() + settle_s
            while time.monotonic() < deadline and _usage(root) != (0, 0):
                time.sleep(1.0)
            folders, left = _usage(root)
            rss_end = server_mb(server) if not peaks["killed"] else 0.0
    by_kind: dict[str, int] = {}
    for log in logs:
        for k, v in log.by_kind.items():
            by_kind[k] = by_kind.get(k, 0) + v
    messages = sorted({re.sub(r"^s\d+_\d+_", "", m) for log in logs
                       for m in log.expected_messages})
    return SoakResult(
        sessions=sessions, uploads=sum(log.uploads for log in logs), seconds=seconds,
        rss_before_mb=rss_before, rss_peak_mb=max(peaks["rss"], rss_end), rss_end_mb=rss_end,
        temp_peak_bytes=int(peaks["temp"]), temp_end_bytes=left, temp_end_folders=folders,
        trap_requests=len(trap), errors=[e for log in logs for e in log.errors],
        by_kind=by_kind, messages=messages, killed=bool(peaks["killed"]),
        rss_all_peak_mb=peaks["all"],
        steps=[(f"s{log.index} {w}", r) for log in logs for w, r in log.steps],
        rss_limit_mb=rss_limit_mb)


def markdown(result: SoakResult, command: str) -> str:
    """The soak's figures as the markdown of ``bench/soak.md``."""
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(result.by_kind.items()))
    rows = [
        ("sessions", f"{result.sessions}"),
        ("uploads", f"{result.uploads} ({kinds})"),
        ("wall time", f"{result.seconds:.0f} s"),
        ("errors (not one line in our words)", f"{len(result.errors)}"),
        ("browser requests to the address in hostile names", f"{result.trap_requests}"),
        ("server RSS before the sessions", f"{result.rss_before_mb:.0f} MB"),
        ("server RSS peak", f"{result.rss_peak_mb:.0f} MB (target <= "
         f"{result.rss_limit_mb:.0f} MB)"),
        ("server RSS after each upload had settled (max)",
         f"{max((r for _, r in result.steps), default=0.0):.0f} MB"),
        ("server RSS at the end (sessions closed)", f"{result.rss_end_mb:.0f} MB"),
        ("peak RSS of the server with its vetting children (each limited by "
         "UNET_VET_MEMORY_MB)", f"{result.rss_all_peak_mb:.0f} MB"),
        ("upload folder peak", f"{result.temp_peak_bytes / 1e6:.1f} MB"),
        ("upload folder at the end", f"{result.temp_end_bytes} bytes in "
         f"{result.temp_end_folders} folders"),
        ("verdict", "PASS" if result.passed else "FAIL"),
    ]
    out = [f"# Soak test ({dt.date.today().isoformat()})", "",
           f"`{command}`: one server, {result.sessions} browser sessions, mixed uploads "
           "(scripts/soak.py).", "", "| what | value |", "|---|---|"]
    out += [f"| {a} | {b} |" for a, b in rows]
    if result.messages:
        out += ["", "Messages shown for the hostile uploads (one line each):", ""]
        out += [f"- `{m.replace('`', chr(39))}`" for m in result.messages[:20]]
    if result.errors:
        out += ["", "Errors:", ""] + [f"- {e}" for e in result.errors[:20]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "soak.md")
    parser.add_argument("--kill-mb", type=float, default=8192.0)
    parser.add_argument("--rss-limit-mb", type=float, default=TARGET_RSS_MB)
    args = parser.parse_args(argv)
    result = run_soak(args.sessions, args.uploads, kill_mb=args.kill_mb,
                      rss_limit_mb=args.rss_limit_mb)
    print(result.report())
    command = "python scripts/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(result, command.strip()))
    print(f"written: {args.out}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
