"""Drive the U-Net Explorer dashboard in a real browser: a Streamlit server + headless chromium.

Used by the browser tests (``tests/test_browser.py``, ``tests/test_threshold_component.py``),
the load test (``scripts/loadtest.py``) and the dashboard benchmark (``bench/run_bench.py``).
Typical use::

    from playwright.sync_api import sync_playwright
    from tools.browser import (RerunCounter, goto, launch_chromium, move_threshold,
                               streamlit_server, threshold_shown)

    with streamlit_server(models_dir=Path("models")) as server, sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page()
        runs = RerunCounter(page)            # script runs of this page's session
        goto(page, server.url, "segment")    # the first script run has finished
        print(threshold_shown(page))         # control, mask caption, IoU ... as shown
        move = move_threshold(page)          # one ArrowRight on "Threshold", timed
        print(move.paint_ms, move.metrics["iou"], runs.runs, server.rss_mb())

The Segment page's threshold is a custom component (``app/components/threshold_view.py``)
mounted under a shadow root: Playwright's CSS selectors pierce it (``page.locator``), while
``document.querySelector`` in ``page.evaluate`` does not, so its helpers evaluate on its
element handles. Moving it redraws in the browser; a move is timed in the page from the
keydown to the redrawn numbers (and to the next painted frame), plus the wall time.

Needs ``/usr/bin/chromium`` (``make browser-deps``) and the ``playwright`` pip package;
``playwright install`` is never used. Playwright's sync API works from one thread only: for
many sessions at once use the ``async_*`` functions at the end of this module (one chromium,
one browser context per session, one asyncio loop).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
#: Where :func:`screenshot` writes by default: ``$UNET_SCREENSHOTS_DIR`` or
#: test-artifacts/screenshots.
SHOTS = Path(os.environ.get("UNET_SCREENSHOTS_DIR") or ARTIFACTS / "screenshots")
CHROMIUM_ARGS: list[str] = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
#: The two window sizes the dashboard is checked at: a laptop half screen and a desktop.
NARROW: dict[str, int] = {"width": 800, "height": 1000}
WIDE: dict[str, int] = {"width": 1400, "height": 1000}

#: Script-run and connection state, exposed on the app root by Streamlit's frontend.
STATE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app) return null;
  const visible = (sel) => Array.from(document.querySelectorAll(sel))
      .some((e) => e.offsetParent !== null || e.getClientRects().length > 0);
  return {
    script: app.getAttribute('data-test-script-state'),
    conn: app.getAttribute('data-test-connection-state'),
    runningIcon: visible('[data-testid="stStatusWidgetRunningIcon"]'),
    skeleton: visible('[data-testid="stSkeleton"], [data-testid="stAppSkeleton"]'),
    spinner: visible('[data-testid="stSpinner"]'),
    main: !!document.querySelector('[data-testid="stMain"] [data-testid="stVerticalBlock"]'),
  };
}"""

_ERROR_SELECTOR = '[data-testid="stException"], [data-testid="stAlertContentError"]'


class BrowserError(RuntimeError):
    """The browser or the server could not be started, or the page is not as expected."""


# ---------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/PID/task/*/children)."""
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                kids.extend(int(k) for k in (task / "children").read_text().split())
    return kids


def _tree(pid: int, children: bool) -> Iterator[int]:
    """``pid`` and, if ``children``, its living descendants, each once."""
    todo, seen = [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        yield p
        if children:
            todo.extend(_children(p))


def rss_bytes(pid: int, children: bool = True) -> int:
    """Resident memory of ``pid`` (VmRSS of /proc/PID/status), plus its descendants' if
    ``children``; 0 for a process that is gone."""
    total = 0
    for p in _tree(pid, children):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024  # kB
                    break
    return total


def cpu_seconds(pid: int, children: bool = True) -> float:
    """CPU time (user + system, seconds) used so far by ``pid`` and, if ``children``, its
    living descendants (from /proc/PID/stat); 0 for a process that is gone."""
    total = 0
    for p in _tree(pid, children):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine have spent busy since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class StreamlitServer:
    """A running ``streamlit run app/Home.py`` (see :func:`streamlit_server`)."""

    url: str
    port: int
    pid: int
    log_path: Path
    process: subprocess.Popen

    def rss_bytes(self) -> int:
        """Resident memory of the server process and its children, in bytes."""
        return rss_bytes(self.pid)

    def rss_mb(self) -> float:
        """Resident memory of the server process and its children, in MB (10^6 bytes)."""
        return self.rss_bytes() / 1e6

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the server process and its children."""
        return cpu_seconds(self.pid)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log file."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def streamlit_server(*, models_dir: Path | None = None, env: Mapping[str, str] | None = None,
                     log_path: Path | None = None, port: int | None = None,
                     timeout: float = 90.0, app: str = "app/Home.py"
                     ) -> Iterator[StreamlitServer]:
    """Run ``streamlit run APP`` from the repository root on 127.0.0.1 until the block ends
    (``app/Home.py`` through ``python -m app.serve``, its launcher).

    Args:
        models_dir: sets ``UNET_MODELS_DIR`` (the bundled models the sidebar offers).
        env: extra environment variables (override the inherited ones).
        log_path: where the server's stdout + stderr go (default
            ``test-artifacts/streamlit-<port>.log``).
        port: TCP port (default: a free one).
        timeout: seconds to wait for ``/_stcore/health`` to answer 200.

    Yields a :class:`StreamlitServer` once healthy. The server runs in its own process group,
    which is terminated (then killed) on exit. Raises :class:`BrowserError` if it exits or is
    not healthy in time (the message ends with the log's tail).
    """
    root = ROOT
    if not (root / app).is_file():
        raise BrowserError(f"{root / app} is missing")
    port = port or free_port()
    log_path = log_path or ARTIFACTS / f"streamlit-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "PYTHONUNBUFFERED": "1"}
    if models_dir is not None:
        full_env["UNET_MODELS_DIR"] = str(models_dir)
    full_env.update(env or {})
    with log_path.open("w") as log:
        # app/Home.py starts through its launcher (host and origin checks), as `make run` does.
        launcher = ["app.serve"] if app == "app/Home.py" else ["streamlit", "run", app]
        proc = subprocess.Popen(
            [sys.executable, "-m", *launcher,
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=root, env=full_env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    server = StreamlitServer(url=f"http://localhost:{port}", port=port, pid=proc.pid,
                             log_path=log_path, process=proc)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise BrowserError(f"streamlit exited with {proc.returncode}:\n"
                                   f"{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BrowserError(f"streamlit not healthy after {timeout:.0f}s:\n"
                                   f"{server.log_tail()}")
            time.sleep(0.5)
        yield server
    finally:
        _kill_group(proc)


# ---------------------------------------------------------------------------------------
# Browser
# ---------------------------------------------------------------------------------------


def _check_chromium() -> None:
    if not CHROMIUM.exists():
        raise BrowserError(
            f"{CHROMIUM} is missing: run `make browser-deps` (installs Debian's chromium)")


def launch_chromium(playwright: Any, *, headless: bool = True, args: list[str] | None = None
                    ) -> Any:
    """Launch Debian's chromium through a started Playwright (sync or async API).

    With the async API the result is a coroutine: ``await launch_chromium(p)``.
    """
    _check_chromium()
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=headless,
                                      args=args or CHROMIUM_ARGS)


@contextlib.contextmanager
def chromium_browser(*, headless: bool = True) -> Iterator[Any]:
    """Start Playwright (sync API) and headless chromium; yields the Browser, closed after."""
    _check_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BrowserError(f"playwright is not importable ({exc}): run `make test` or "
                           "`.venv/bin/pip install -r requirements-dev.txt`") from exc
    with sync_playwright() as p:
        browser = launch_chromium(p, headless=headless)
        try:
            yield browser
        finally:
            browser.close()


# ---------------------------------------------------------------------------------------
# Page helpers (sync API)
# ---------------------------------------------------------------------------------------


def is_idle(state: dict[str, Any] | None) -> bool:
    """Whether a :data:`STATE_JS` snapshot shows a connected app that has finished its run.

    A script that stopped on a compile error counts as idle (the error check reports it).
    """
    return bool(
        state
        and state.get("conn") == "CONNECTED"
        and state.get("script") in ("notRunning", "compilationError")
        and not state.get("runningIcon")
        and not state.get("skeleton")
        and not state.get("spinner")
        and state.get("main")
    )


class _IdleClock:
    """Shared rule of :func:`wait_idle` / :func:`async_wait_idle`: idle (:func:`is_idle`) must
    hold for ``settle`` seconds in a row; AssertionError once ``timeout`` seconds have passed."""

    def __init__(self, timeout: float, settle: float) -> None:
        self.timeout, self.settle = timeout, settle
        self.deadline = time.monotonic() + timeout
        self.idle_since: float | None = None

    def settled(self, state: dict[str, Any] | None) -> bool:
        now = time.monotonic()
        if is_idle(state):
            self.idle_since = self.idle_since or now
            if now - self.idle_since >= self.settle:
                return True
        else:
            self.idle_since = None
        if now > self.deadline:
            raise AssertionError(f"Streamlit still busy after {self.timeout:.0f}s: {state}")
        return False


def wait_idle(page: Any, timeout: float = 90.0, settle: float = 0.8) -> None:
    """Wait until Streamlit has finished running the script and the page is drawn.

    Idle (see :func:`is_idle`) must hold continuously for ``settle`` seconds, so a rerun that
    a widget change is about to trigger is not mistaken for the end of the previous one.
    Raises AssertionError after ``timeout`` seconds.
    """
    clock = _IdleClock(timeout, settle)
    while True:
        try:
            state = page.evaluate(STATE_JS)
        except Exception as exc:  # page navigating: the execution context was replaced
            state = {"error": str(exc)}
        if clock.settled(state):
            break
        page.wait_for_timeout(150)
    # Images are fetched from /media after the delta arrives; let them load.
    with contextlib.suppress(Exception):
        page.wait_for_load_state("networkidle", timeout=5_000)


def goto(page: Any, base: str, path: str = "") -> None:
    """Open ``base/path`` (e.g. ``segment``) and wait for its first run to finish."""
    page.goto(f"{base}/{path}", wait_until="domcontentloaded")
    wait_idle(page)


def error_texts(page: Any) -> list[str]:
    """Texts of the exception boxes and error alerts on the page (empty if none)."""
    return [t.strip() for t in page.locator(_ERROR_SELECTOR).all_inner_texts()]


def assert_no_exception(page: Any, where: str) -> None:
    """Fail if the page shows an exception box, an error alert or a traceback.

    The app turns exceptions into one ``st.error`` line ("Unexpected error: ...") instead of
    a traceback, so error alerts count too.
    """
    boxes = page.locator('[data-testid="stException"]')
    if boxes.count():
        raise AssertionError(f"{where}: exception on the page:\n{boxes.first.inner_text()[:2000]}")
    errors = page.locator('[data-testid="stAlertContentError"]')
    if errors.count():
        texts = "\n".join(t.strip() for t in errors.all_inner_texts())
        raise AssertionError(f"{where}: error message on the page:\n{texts[:2000]}")
    text = page.locator("body").inner_text()
    assert "Traceback" not in text, f"{where}: 'Traceback' on the page:\n{text[:2000]}"


def screenshot(page: Any, name: str, folder: Path = SHOTS) -> Path:
    """Full-page screenshot into ``folder/NAME.png`` (default test-artifacts/screenshots/).

    Streamlit scrolls inside its own container, so ``full_page`` alone would only get the
    viewport: the viewport is grown to the content's height for the shot, then restored.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    size = page.viewport_size
    height = page.evaluate("""() => Math.max(document.documentElement.scrollHeight,
        ...Array.from(document.querySelectorAll(
          '[data-testid="stMain"], [data-testid="stAppViewContainer"], section.main, '
          + '[data-testid="stAppScrollToBottomContainer"]'))
          .map((e) => e.scrollHeight))""")
    height = int(min(max(height, size["height"]), 8000))
    if height > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": height})
        page.wait_for_timeout(400)
    try:
        page.screenshot(path=str(path), full_page=True)
    finally:
        if height > size["height"]:
            page.set_viewport_size(size)
    return path


def _exact(label: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*{re.escape(label)}\s*$")


def widget(page: Any, testid: str, label: str) -> Any:
    """Locator of the widget containers of type ``testid`` (e.g. ``stSlider``) whose label is
    exactly ``label``."""
    return page.locator(f'[data-testid="{testid}"]').filter(
        has=page.locator('[data-testid="stWidgetLabel"]').filter(has_text=_exact(label)))


def metric_value(page: Any, label: str) -> str:
    """Text of the st.metric whose label is exactly ``label`` (e.g. Evaluate's "Best
    threshold"; the Segment page's scores are the threshold view's, see
    :func:`threshold_shown`)."""
    metric = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]').filter(has_text=_exact(label)))
    assert metric.count() >= 1, f"no metric labelled {label!r}"
    return metric.first.locator('[data-testid="stMetricValue"]').inner_text().strip()


def _open_select(box: Any) -> None:
    opener = box.locator('button[aria-haspopup="listbox"]')  # react-aria ComboBox (>= 1.5x)
    if opener.count():
        opener.first.click()
    else:  # older baseweb select
        box.get_by_role("combobox").first.click()


def select_options(page: Any, box: Any) -> list[str]:
    """The option texts of selectbox ``box`` (opens and closes its list)."""
    _open_select(box)
    options = page.get_by_role("listbox").get_by_role("option")
    options.first.wait_for(state="visible", timeout=10_000)
    texts = [t.strip() for t in options.all_inner_texts()]
    page.keyboard.press("Escape")
    return texts


def choose_option(page: Any, box: Any, option: str | None = None, avoid: str | None = None
                  ) -> str:
    """Open selectbox ``box`` and click ``option`` (or the first one that is not ``avoid``);
    returns the option clicked. Does not wait for the rerun (call :func:`wait_idle`)."""
    _open_select(box)
    options = page.get_by_role("listbox").get_by_role("option")
    options.first.wait_for(state="visible", timeout=10_000)
    texts = [t.strip() for t in options.all_inner_texts()]
    if option is None:
        choices = [t for t in texts if t and t != avoid]
        assert choices, f"selectbox has no option other than {avoid!r}: {texts}"
        option = choices[0]
    options.filter(has_text=_exact(option)).first.click()
    return option


def selected(box: Any) -> str:
    """Current value (the label shown) of selectbox ``box``."""
    combo = box.get_by_role("combobox").first
    value = combo.evaluate("e => e.value ?? null")
    return (value if value is not None else combo.inner_text()).strip()


def pick_model(page: Any, pattern: str) -> str | None:
    """Select the first sidebar "Model" option matching regex ``pattern`` (ignoring case),
    unless it is already selected, and wait for the rerun; returns the option now in use, or
    None when no option matches (the selection is left alone)."""
    box = widget(page, "stSelectbox", "Model")
    wanted = [t for t in select_options(page, box) if re.search(pattern, t, re.I)]
    if not wanted:
        return None
    if selected(box) != wanted[0]:
        choose_option(page, box, wanted[0])
        wait_idle(page)
    return wanted[0]


def _source_option(page: Any, source: str) -> Any:
    """The option ``source`` of the pages' "Image source" radio."""
    return widget(page, "stRadio", "Image source").locator("label").filter(
        has_text=_exact(source))


def pick_source(page: Any, source: str) -> None:
    """Pick the option ``source`` ("Bundled sample", "Upload", "Volume", ...) of the pages'
    "Image source" radio and wait for the rerun."""
    option = _source_option(page, source)
    assert option.count(), f"no image source {source!r}"
    option.first.click()
    wait_idle(page)


def upload(page: Any, label: str, files: list[Path], source: str = "Upload",
           retries: int = 1) -> int:
    """Upload ``files`` with the file uploader labelled ``label`` (e.g. "Upload images",
    "Upload masks (same file names)", Activations' "Upload an image") and wait for the rerun.

    When the uploader is not drawn, the "Image source" radio's option ``source`` is picked
    first (the Segment and Activations pages show their uploaders under "Upload"). When the
    uploader shows no file 30 s after the files were chosen, they are chosen again, up to
    ``retries`` times. Returns how many times they had to be chosen again.
    """
    uploader = widget(page, "stFileUploader", label)
    if not uploader.count():
        option = _source_option(page, source)
        if option.count():
            option.first.click()
            uploader.first.wait_for(timeout=30_000)
            wait_idle(page)
    assert uploader.count() == 1, f"no file uploader labelled {label!r}"
    for attempt in range(retries + 1):
        uploader.locator('input[type="file"]').set_input_files([str(f) for f in files])
        try:  # the file chips, then the rerun the upload triggers
            for f in files:
                uploader.get_by_text(f.name).first.wait_for(timeout=30_000)
            break
        except Exception:
            if attempt == retries:
                raise
            wait_idle(page)
    wait_idle(page)
    return attempt


def slider_value(thumb: Any) -> str | None:
    """The value an st.slider thumb announces (aria-valuetext, aria-valuenow or value)."""
    return (thumb.get_attribute("aria-valuetext") or thumb.get_attribute("aria-valuenow")
            or thumb.get_attribute("value"))


def slider_thumb(page: Any, label: str) -> Any:
    """The thumb of the st.slider labelled ``label`` (e.g. Evaluate's "Threshold")."""
    slider = widget(page, "stSlider", label)
    assert slider.count() == 1, f"no st.slider labelled {label!r}"
    return slider.get_by_role("slider").first


def set_slider(page: Any, label: str, value: float, step: float = 0.01,
               max_presses: int = 200) -> None:
    """Move the st.slider labelled ``label`` to ``value`` with the arrow keys, one key press at
    a time, each followed by its rerun (a careful person's pace: a press while a run is in
    flight can be overridden by that run), until its thumb announces ``value``."""
    for _ in range(max_presses):
        thumb = slider_thumb(page, label)
        steps = round((value - float(slider_value(thumb) or "nan")) / step)
        if steps == 0:
            return
        thumb.focus()
        thumb.press("ArrowRight" if steps > 0 else "ArrowLeft")
        wait_idle(page, settle=0.4)
    raise AssertionError(f"slider {label!r} shows {slider_value(slider_thumb(page, label))}, "
                         f"not {value}")


def open_page(page: Any, title: str, timeout: float = 90.0) -> None:
    """Go to another page of the app the way a person does, by its sidebar link (same
    Streamlit session, so session state carries over; :func:`goto` would start a new one),
    and wait until its first run has finished."""
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=_exact(title)).first.click()
    page.locator('[data-testid="stMain"] h1').filter(has_text=_exact(title)).first.wait_for(
        timeout=timeout * 1000)
    wait_idle(page, timeout)


#: Labels drawn narrower than their text (cut with an ellipsis, or spilling out): Streamlit
#: metric labels and values, widget labels, button labels, and the threshold view's labels and
#: values (its shadow root is pierced by Playwright's CSS engine). Each one and every
#: descendant laid out as a box is checked.
LABEL_SELECTOR = ('[data-testid="stMetricLabel"], [data-testid="stMetricValue"], '
                  '[data-testid="stWidgetLabel"], [data-testid="stButton"] button, '
                  '[data-testid="stDownloadButton"] button, .tv-label, .tv-metric-label, '
                  '.tv-metric-value, .tv-download')
_CUT_JS = """(labels) => {
  const cut = [];
  for (const label of labels) {
    if (!label.getClientRects().length) continue;  // not displayed
    for (const e of [label, ...label.querySelectorAll('*')]) {
      if (e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1) {
        cut.push(`${(label.textContent || '').trim()} (${e.scrollWidth} px of text in `
                 + `${e.clientWidth} px)`);
        break;
      }
    }
  }
  return cut;
}"""


def cut_labels(page: Any) -> list[str]:
    """Labels and metric values on the page (:data:`LABEL_SELECTOR`) whose text does not fit
    its box, each as "text (N px of text in M px)"; empty if none."""
    return page.locator(LABEL_SELECTOR).evaluate_all(_CUT_JS)


# ---------------------------------------------------------------------------------------
# Script runs of a page's session (both APIs)
# ---------------------------------------------------------------------------------------


class RerunCounter:
    """Counts the script runs of one page's Streamlit session from its websocket frames.

    ``requests``: rerun requests the browser sent (``BackMsg.rerun_script``: a widget or
    component changed, a page was opened); ``runs``: script runs the server started for the
    session (``ForwardMsg.new_session``, the first message of every run). Attach it before the
    page connects (before ``goto``); works with the sync and the async Playwright API.
    """

    def __init__(self, page: Any) -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self._back, self._forward = BackMsg, ForwardMsg
        self.requests = 0
        self.runs = 0
        page.on("websocket", self._on_websocket)

    def _on_websocket(self, ws: Any) -> None:
        if "_stcore/stream" in ws.url:
            ws.on("framesent", self._sent)
            ws.on("framereceived", self._received)

    def _sent(self, payload: Any) -> None:
        if isinstance(payload, bytes | bytearray):
            with contextlib.suppress(Exception):
                if self._back.FromString(bytes(payload)).WhichOneof("type") == "rerun_script":
                    self.requests += 1

    def _received(self, payload: Any) -> None:
        if isinstance(payload, bytes | bytearray):
            with contextlib.suppress(Exception):
                if self._forward.FromString(bytes(payload)).WhichOneof("type") == "new_session":
                    self.runs += 1

    def snapshot(self) -> tuple[int, int]:
        """(requests, runs) so far."""
        return self.requests, self.runs


# ---------------------------------------------------------------------------------------
# Threshold view component (app/components/threshold_view.py): reading and moving it
# ---------------------------------------------------------------------------------------

#: The component's root element (inside its shadow root; Playwright's CSS pierces it).
TV_ROOT = '[data-testid="tv-root"]'
#: Its range input ("Threshold").
TV_RANGE = '[data-testid="tv-threshold"]'
#: Its metric values, by data-metric key, and the labels they are shown under.
TV_METRICS: dict[str, str] = {"iou": "IoU", "dice": "Dice", "precision": "Precision",
                              "recall": "Recall", "tgs": "TGS score"}

#: What the component shows (argument: its root element).
_TV_SHOWN_JS = """(root) => {
  const q = (s) => root.querySelector(s);
  const caption = (q('[data-testid="tv-mask-caption"]') || {}).textContent || '';
  const m = /^Mask at (\\d\\.\\d\\d) /.exec(caption);
  const box = q('.tv-metrics');
  const metrics = {};
  if (box && !box.hidden)
    for (const e of root.querySelectorAll('[data-metric]'))
      metrics[e.dataset.metric] = e.textContent.trim();
  const range = q('[data-testid="tv-threshold"]');
  return {control: range ? range.value : null,
          label: (q('[data-testid="tv-threshold-value"]') || {}).textContent || null,
          caption: m ? m[1] : null, caption_text: caption, metrics,
          k: root.dataset.k === undefined ? null : Number(root.dataset.k),
          ready: root.dataset.ready || null};
}"""

#: Once per range input: at each keydown remember performance.now(); after each `input` event
#: (the component's own input listener, registered first, has redrawn by then) record the move:
#: the redraw's end, what is shown, and (rAF + setTimeout 0) when the next frame was painted.
_TV_CLOCK_JS = """(el) => {
  if (el.__tvClock) return el.__tvClock.seq;
  const clock = el.__tvClock = {seq: 0, painted: 0, keyAt: null, last: null};
  const root = el.closest('[data-testid="tv-root"]');
  el.addEventListener('keydown', () => { clock.keyAt = performance.now(); }, true);
  el.addEventListener('input', () => {
    const drawnAt = performance.now();
    const metrics = {};
    for (const e of root.querySelectorAll('[data-metric]'))
      metrics[e.dataset.metric] = e.textContent.trim();
    const rec = {seq: ++clock.seq, keyAt: clock.keyAt, drawnAt, paintAt: null,
                 k: Number(root.dataset.k), redrawMs: Number(root.dataset.redrawMs),
                 value: root.querySelector('[data-testid="tv-threshold-value"]').textContent,
                 caption: root.querySelector('[data-testid="tv-mask-caption"]').textContent,
                 metrics};
    clock.keyAt = null;
    clock.last = rec;
    requestAnimationFrame(() => setTimeout(() => {
      rec.paintAt = performance.now();
      clock.painted = rec.seq;
    }, 0));
  });
  return clock.seq;
}"""

_TV_PAINTED_JS = "([el, seq]) => !!el.__tvClock && el.__tvClock.painted >= seq"
_TV_LAST_JS = "(el) => el.__tvClock.last"


@dataclass
class ThresholdShown:
    """What the threshold view shows: ``control`` (the range input's value, "0.50"),
    ``label`` (the value printed next to it), ``caption`` (X.XX of the mask caption "Mask at
    X.XX · ..."), ``metrics`` (data-metric key -> text, empty when the image has no mask),
    ``k`` (grid index drawn) and ``ready`` ("1" once drawn)."""

    control: str | None
    label: str | None
    caption: str | None
    caption_text: str
    metrics: dict[str, str]
    k: int | None
    ready: str | None

    @property
    def consistent(self) -> bool:
        """The control, its printed value and the mask caption name the same threshold."""
        return self.control is not None and self.control == self.label == self.caption


def _shown(raw: dict[str, Any]) -> ThresholdShown:
    control = raw.get("control")
    if control not in (None, ""):
        control = f"{float(control):.2f}"
    return ThresholdShown(control=control, label=(raw.get("label") or "").strip() or None,
                          caption=raw.get("caption"), caption_text=raw.get("caption_text", ""),
                          metrics=raw.get("metrics") or {}, k=raw.get("k"),
                          ready=raw.get("ready"))


@dataclass
class ThresholdMove:
    """One keyboard step of the threshold view, timed.

    ``page_ms``: keydown -> the redraw done (overlay and error-map canvases, curve markers and
    metric texts updated), in the page (``performance.now()``); ``paint_ms``: keydown -> the
    next frame painted after it (what a person sees); ``wall_ms``: from Playwright's key press
    until it saw the painted frame (adds the DevTools round trips); ``redraw_ms``: the redraw
    alone. ``value``, ``metrics``, ``caption``: what the redraw showed; ``k``: its grid index;
    ``key_at``: the keydown's ``performance.now()`` in the page (for gaps between presses).
    """

    page_ms: float
    paint_ms: float
    wall_ms: float
    redraw_ms: float
    k: int
    value: str
    metrics: dict[str, str]
    caption: str
    key_at: float = float("nan")


def _move(rec: dict[str, Any], wall_ms: float) -> ThresholdMove:
    key_at = rec.get("keyAt")
    if key_at is None:
        raise AssertionError("the threshold moved without a keydown on its range input")
    return ThresholdMove(page_ms=rec["drawnAt"] - key_at, paint_ms=rec["paintAt"] - key_at,
                         wall_ms=wall_ms, redraw_ms=rec["redrawMs"], k=int(rec["k"]),
                         value=str(rec["value"]).strip(), metrics=rec["metrics"],
                         caption=str(rec["caption"]), key_at=float(key_at))


def _key_for(k: int | None, direction: int) -> tuple[str, int]:
    """Arrow key and direction for one step from grid index ``k`` (turning at 0 and 100)."""
    if k is None:
        raise AssertionError("the threshold view has not drawn yet")
    if (direction > 0 and k >= 100) or (direction < 0 and k <= 0):
        direction = -direction
    return ("ArrowRight" if direction > 0 else "ArrowLeft"), direction


def wait_threshold_view(page: Any, timeout: float = 30.0, index: int = 0) -> Any:
    """Wait until the ``index``-th threshold view on the page has decoded its payload and drawn
    (``data-ready="1"``); return the locator of its root."""
    page.locator(f'{TV_ROOT}[data-ready="1"]').nth(index).wait_for(
        state="attached", timeout=timeout * 1000)
    return page.locator(TV_ROOT).nth(index)


def threshold_input(page: Any, index: int = 0) -> Any:
    """Locator of the threshold view's range input (labelled "Threshold")."""
    return page.locator(TV_ROOT).nth(index).locator(TV_RANGE)


def threshold_shown(page: Any, index: int = 0, timeout: float = 30.0) -> ThresholdShown:
    """What the threshold view shows once drawn (see :class:`ThresholdShown`)."""
    return _shown(wait_threshold_view(page, timeout, index).evaluate(_TV_SHOWN_JS))


def wait_threshold_at(page: Any, value: float, timeout: float = 30.0, index: int = 0
                      ) -> ThresholdShown:
    """Wait until the threshold view has drawn threshold ``value`` (e.g. a model card's after a
    model switch); returns what it shows. TimeoutError otherwise."""
    page.locator(f'{TV_ROOT}[data-ready="1"][data-threshold="{value:.2f}"]').nth(index).wait_for(
        state="attached", timeout=timeout * 1000)
    return threshold_shown(page, index, timeout)


def move_threshold(page: Any, direction: int = 1, *, timeout: float = 30.0, index: int = 0
                   ) -> ThresholdMove:
    """Press ArrowRight (``direction`` +1) or ArrowLeft (-1) once on the threshold view's range
    input (turning back at 0 and 1) and time it until the redrawn numbers are painted (see
    :class:`ThresholdMove`). No server run is waited for: the view redraws in the browser."""
    root = wait_threshold_view(page, timeout, index)
    handle = root.locator(TV_RANGE).element_handle()
    seq = handle.evaluate(_TV_CLOCK_JS)
    key, _ = _key_for(root.evaluate("(r) => Number(r.dataset.k)"), direction)
    handle.focus()
    t0 = time.perf_counter()
    page.keyboard.press(key)
    page.wait_for_function(_TV_PAINTED_JS, arg=[handle, seq + 1], polling="raf",
                           timeout=timeout * 1000)
    wall = (time.perf_counter() - t0) * 1000.0
    return _move(handle.evaluate(_TV_LAST_JS), wall)


def component_threshold_steps(page: Any, steps: int = 30, *, pause_ms: int = 30,
                              index: int = 0, timeout: float = 10.0) -> list[dict[str, float]]:
    """Press ArrowRight / ArrowLeft ``steps`` times on the threshold view's range input
    (turning back at 0 and 1) and time each redraw in the page.

    Returns one dict per step: ``latency_ms`` (keydown -> end of the synchronous redraw:
    canvases, texts and curve markers updated, measured with ``performance.now()`` in the page),
    ``paint_ms`` (keydown -> the next frame painted), ``redraw_ms`` (the redraw alone) and ``k``
    (the grid index drawn). ``pause_ms`` is waited between steps.
    """
    out: list[dict[str, float]] = []
    for _ in range(steps):
        m = move_threshold(page, timeout=timeout, index=index)
        out.append({"latency_ms": m.page_ms, "paint_ms": m.paint_ms, "redraw_ms": m.redraw_ms,
                    "k": m.k})
        if pause_ms:
            page.wait_for_timeout(pause_ms)
    return out


def component_threshold_latency(page: Any, steps: int = 30, **kwargs: Any) -> list[float]:
    """Milliseconds from keydown to redraw-complete of the threshold view, one per arrow key
    press on its range input (see :func:`component_threshold_steps`)."""
    return [s["latency_ms"] for s in component_threshold_steps(page, steps, **kwargs)]


# ---------------------------------------------------------------------------------------
# asyncio API: many sessions from one event loop (Playwright's async_api)
# ---------------------------------------------------------------------------------------


async def async_wait_idle(page: Any, timeout: float = 90.0, settle: float = 0.8) -> None:
    """:func:`wait_idle` for an async Playwright page."""
    import asyncio

    clock = _IdleClock(timeout, settle)
    while True:
        try:
            state = await page.evaluate(STATE_JS)
        except Exception as exc:  # page navigating: the execution context was replaced
            state = {"error": str(exc)}
        if clock.settled(state):
            break
        await asyncio.sleep(0.15)


async def async_goto(page: Any, base: str, path: str = "", timeout: float = 90.0) -> None:
    """:func:`goto` for an async Playwright page."""
    await page.goto(f"{base}/{path}", wait_until="domcontentloaded")
    await async_wait_idle(page, timeout)


async def async_error_texts(page: Any) -> list[str]:
    """:func:`error_texts` for an async Playwright page."""
    return [t.strip() for t in await page.locator(_ERROR_SELECTOR).all_inner_texts()]


async def async_choose_option(page: Any, box: Any, pattern: str) -> str | None:
    """Pick the first option of selectbox ``box`` matching regex ``pattern`` (ignoring case)
    unless it is already selected; returns the option now selected, or None if none matched.
    Does not wait for the rerun."""
    opener = box.locator('button[aria-haspopup="listbox"]')
    await (opener.first if await opener.count() else box.get_by_role("combobox").first).click()
    options = page.get_by_role("listbox").get_by_role("option")
    await options.first.wait_for(state="visible", timeout=10_000)
    texts = [t.strip() for t in await options.all_inner_texts()]
    wanted = [t for t in texts if re.search(pattern, t, re.I)]
    if not wanted:
        await page.keyboard.press("Escape")
        return None
    await options.filter(has_text=_exact(wanted[0])).first.click()
    return wanted[0]


async def async_upload(page: Any, label: str, files: list[Path], timeout: float = 90.0,
                       source: str = "Upload", retries: int = 1) -> int:
    """:func:`upload` for an async Playwright page (files chosen again after ``timeout`` s
    without their chips); returns how many times they had to be chosen again."""
    uploader = widget(page, "stFileUploader", label)
    if not await uploader.count():
        option = _source_option(page, source)
        if await option.count():
            await option.first.click()
            await uploader.first.wait_for(timeout=timeout * 1000)
            await async_wait_idle(page, timeout)
    if await uploader.count() != 1:
        raise AssertionError(f"no file uploader labelled {label!r}")
    for attempt in range(retries + 1):
        await uploader.locator('input[type="file"]').set_input_files([str(f) for f in files])
        try:
            for f in files:
                await uploader.get_by_text(f.name).first.wait_for(timeout=timeout * 1000)
            break
        except Exception:
            if attempt == retries:
                raise
            await async_wait_idle(page, timeout)
    await async_wait_idle(page, timeout)
    return attempt


async def async_wait_threshold_view(page: Any, timeout: float = 30.0, index: int = 0) -> Any:
    """:func:`wait_threshold_view` for an async Playwright page."""
    await page.locator(f'{TV_ROOT}[data-ready="1"]').nth(index).wait_for(
        state="attached", timeout=timeout * 1000)
    return page.locator(TV_ROOT).nth(index)


async def async_threshold_shown(page: Any, index: int = 0, timeout: float = 30.0
                                ) -> ThresholdShown:
    """:func:`threshold_shown` for an async Playwright page."""
    root = await async_wait_threshold_view(page, timeout, index)
    return _shown(await root.evaluate(_TV_SHOWN_JS))


async def async_move_threshold(page: Any, direction: int = 1, *, timeout: float = 30.0,
                               index: int = 0) -> ThresholdMove:
    """:func:`move_threshold` for an async Playwright page."""
    root = await async_wait_threshold_view(page, timeout, index)
    handle = await root.locator(TV_RANGE).element_handle()
    seq = await handle.evaluate(_TV_CLOCK_JS)
    key, _ = _key_for(await root.evaluate("(r) => Number(r.dataset.k)"), direction)
    await handle.focus()
    t0 = time.perf_counter()
    await page.keyboard.press(key)
    await page.wait_for_function(_TV_PAINTED_JS, arg=[handle, seq + 1], polling="raf",
                                 timeout=timeout * 1000)
    wall = (time.perf_counter() - t0) * 1000.0
    return _move(await handle.evaluate(_TV_LAST_JS), wall)
