"""Drive the U-Net Explorer dashboard in a real browser: a Streamlit server + headless chromium.

Used by the browser tests (``tests/test_browser.py``), the load test (``scripts/loadtest.py``)
and the dashboard benchmark (``bench/run_bench.py``). Typical use::

    from playwright.sync_api import sync_playwright
    from tools.browser import launch_chromium, move_threshold, streamlit_server, wait_idle

    with streamlit_server(models_dir=Path("models")) as server, sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page()
        page.goto(f"{server.url}/segment", wait_until="domcontentloaded")
        wait_idle(page)                      # the first script run has finished
        ms = move_threshold(page)            # one keyboard step of "Threshold" -> ms to redraw
        print(ms, server.rss_mb())

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
SHOTS = ARTIFACTS / "screenshots"
CHROMIUM_ARGS: list[str] = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
WIDE: dict[str, int] = {"width": 1280, "height": 800}
NARROW: dict[str, int] = {"width": 420, "height": 900}

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

#: True once the Segment page's caption under the metrics reads "At threshold <arg>:".
THRESHOLD_SHOWN_JS = """(want) => {
  const main = document.querySelector('[data-testid="stMain"]');
  if (!main) return false;
  return Array.from(main.querySelectorAll('[data-testid="stCaptionContainer"]'))
      .some((e) => (e.textContent || '').includes('At threshold ' + want + ':'));
}"""

#: Current "At threshold X.XX" of the Segment page's caption, or null.
THRESHOLD_CAPTION_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  if (!main) return null;
  for (const e of main.querySelectorAll('[data-testid="stCaptionContainer"]')) {
    const m = /At threshold (\\d+\\.\\d\\d):/.exec(e.textContent || '');
    if (m) return m[1];
  }
  return null;
}"""

_ERROR_SELECTOR = '[data-testid="stException"], [data-testid="stAlertContentError"]'
_RANGE_STEP = 0.01  # the Threshold slider's step


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
    """Text of the st.metric whose label is exactly ``label``."""
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
    """Current value of selectbox ``box``."""
    combo = box.get_by_role("combobox").first
    value = combo.evaluate("e => e.value ?? null")
    return (value if value is not None else combo.inner_text()).strip()


def upload(page: Any, label: str, files: list[Path]) -> None:
    """Upload ``files`` with the file uploader labelled ``label`` and wait for the rerun.

    When the uploader is behind a "source" radio whose option has the same name (the app's
    pages do this), that option is picked first.
    """
    uploader = widget(page, "stFileUploader", label)
    if not uploader.count():
        option = page.locator('[data-testid="stRadioOption"]').filter(has_text=_exact(label))
        if option.count():
            option.first.click()
            uploader.first.wait_for(timeout=30_000)
            wait_idle(page)
    assert uploader.count() == 1, f"no file uploader labelled {label!r}"
    uploader.locator('input[type="file"]').set_input_files([str(f) for f in files])
    # Wait for the file chips, then for the rerun the upload triggers.
    for f in files:
        uploader.get_by_text(f.name).first.wait_for(timeout=30_000)
    wait_idle(page)


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


def show_scored_sample(page: Any, tries: int = 4) -> None:
    """Make the Segment page show a bundled sample that has a mask (so metrics are shown).

    Does nothing when metrics are already shown; otherwise tries up to ``tries`` samples of
    each sample/image selectbox. Raises AssertionError when none shows metrics.
    """
    if page.locator('[data-testid="stMetric"]').count():
        return
    for box in page.locator('[data-testid="stSelectbox"]').all():
        label = box.locator('[data-testid="stWidgetLabel"]').inner_text().strip()
        if label in ("Model", "Layer") or not re.search(r"sample|image", label, re.I):
            continue
        current = selected(box)
        for _ in range(tries):  # empty-mask samples still have metrics
            current = choose_option(page, box, avoid=current)
            wait_idle(page)
            if page.locator('[data-testid="stMetric"]').count():
                return
    raise AssertionError("Segment: no bundled sample with a mask shows metrics")


def slider_value(thumb: Any) -> str | None:
    """The value a slider thumb announces (aria-valuetext, aria-valuenow or value)."""
    return (thumb.get_attribute("aria-valuetext") or thumb.get_attribute("aria-valuenow")
            or thumb.get_attribute("value"))


def threshold_thumb(page: Any) -> Any:
    """The thumb of the Segment page's "Threshold" slider.

    Streamlit >= 1.5x draws it as a visually hidden ``<input type="range">`` (implicit role
    "slider"), older ones as a div with role="slider": ``get_by_role`` finds either.
    """
    slider = widget(page, "stSlider", "Threshold")
    assert slider.count() == 1, "no slider labelled 'Threshold'"
    return slider.get_by_role("slider").first


def _next_threshold(shown: str | None, direction: int) -> tuple[str, int]:
    """The caption value to wait for after one step from ``shown``, and the direction taken
    (turned around at the slider's ends)."""
    if shown is None:
        raise AssertionError("no 'At threshold X.XX:' caption: pick an image with a mask first")
    value = float(shown)
    if value + direction * _RANGE_STEP > 1.0 + 1e-9 or value + direction * _RANGE_STEP < -1e-9:
        direction = -direction
    return f"{value + direction * _RANGE_STEP:.2f}", direction


def move_threshold(page: Any, direction: int = 1, timeout: float = 30.0) -> float:
    """Move the Segment page's "Threshold" slider one keyboard step; milliseconds until shown.

    ``direction`` is +1 (ArrowRight) or -1 (ArrowLeft); at either end of 0..1 it turns
    around. The time runs from the key press to the moment the caption under the metrics
    reads "At threshold X.XX:" with the new value (the rerun re-thresholded the cached
    probabilities and the new result reached the browser). The page must show a scored image
    (a bundled sample with a mask, or an upload with its mask). Raises playwright's
    TimeoutError after ``timeout`` seconds.
    """
    want, direction = _next_threshold(page.evaluate(THRESHOLD_CAPTION_JS), direction)
    thumb = threshold_thumb(page)
    thumb.focus()
    t0 = time.perf_counter()
    thumb.press("ArrowRight" if direction > 0 else "ArrowLeft")
    page.wait_for_function(THRESHOLD_SHOWN_JS, arg=want, polling=25, timeout=timeout * 1000)
    return (time.perf_counter() - t0) * 1000.0


def content_count(page: Any) -> int:
    """Images, charts and canvases drawn in the main area."""
    return page.locator(
        '[data-testid="stMain"] :is([data-testid="stImage"], [data-testid="stPlotlyChart"], '
        '[data-testid="stVegaLiteChart"], [data-testid="stPyplot"], img, canvas)').count()


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


async def async_upload(page: Any, label: str, files: list[Path], timeout: float = 90.0
                       ) -> None:
    """:func:`upload` for an async Playwright page."""
    uploader = widget(page, "stFileUploader", label)
    if not await uploader.count():
        option = page.locator('[data-testid="stRadioOption"]').filter(has_text=_exact(label))
        if await option.count():
            await option.first.click()
            await uploader.first.wait_for(timeout=timeout * 1000)
            await async_wait_idle(page, timeout)
    if await uploader.count() != 1:
        raise AssertionError(f"no file uploader labelled {label!r}")
    await uploader.locator('input[type="file"]').set_input_files([str(f) for f in files])
    for f in files:
        await uploader.get_by_text(f.name).first.wait_for(timeout=timeout * 1000)
    await async_wait_idle(page, timeout)


async def async_move_threshold(page: Any, direction: int = 1, timeout: float = 30.0) -> float:
    """:func:`move_threshold` for an async Playwright page."""
    want, direction = _next_threshold(await page.evaluate(THRESHOLD_CAPTION_JS), direction)
    thumb = widget(page, "stSlider", "Threshold").get_by_role("slider").first
    await thumb.focus()
    t0 = time.perf_counter()
    await thumb.press("ArrowRight" if direction > 0 else "ArrowLeft")
    await page.wait_for_function(THRESHOLD_SHOWN_JS, arg=want, polling=25,
                                 timeout=timeout * 1000)
    return (time.perf_counter() - t0) * 1000.0


# ---------------------------------------------------------------------------------------
# Threshold view component (app/components/threshold_view.py), sync API
# ---------------------------------------------------------------------------------------

#: The component's root element (inside its shadow root; Playwright's CSS pierces it).
TV_ROOT = '[data-testid="tv-root"]'
#: Its range input ("Threshold").
TV_RANGE = '[data-testid="tv-threshold"]'

#: Per element handle of the range input: remember performance.now() of each keydown (capture
#: phase, before the input/change handlers redraw), once.
_TV_KEY_CLOCK_JS = """(el) => {
  if (!el.__tvKeyClock) {
    el.__tvKeyClock = true;
    el.addEventListener('keydown', () => { el.__tvKeyAt = performance.now(); }, true);
  }
}"""

#: {k, redraws, redrawAt, redrawMs, keyAt} of the component (argument: the range input).
_TV_SNAPSHOT_JS = """(el) => {
  const root = el.closest('[data-testid="tv-root"]');
  const d = root.dataset;
  return {k: Number(d.k), redraws: Number(d.redraws || 0), redrawAt: Number(d.redrawAt),
          redrawMs: Number(d.redrawMs), keyAt: el.__tvKeyAt ?? null};
}"""

_TV_REDRAWN_JS = """([el, n]) => {
  const root = el.closest('[data-testid="tv-root"]');
  return Number(root.dataset.redraws || 0) > n;
}"""


def wait_threshold_view(page: Any, timeout: float = 30.0, index: int = 0) -> Any:
    """Wait until the ``index``-th threshold view on the page has decoded its payload and drawn
    (``data-ready="1"``); return the locator of its root."""
    page.locator(f'{TV_ROOT}[data-ready="1"]').nth(index).wait_for(
        state="attached", timeout=timeout * 1000)
    root = page.locator(TV_ROOT).nth(index)
    return root


def component_threshold_steps(page: Any, steps: int = 30, *, pause_ms: int = 30,
                              index: int = 0, timeout: float = 10.0) -> list[dict[str, float]]:
    """Press ArrowRight / ArrowLeft ``steps`` times on the threshold view's range input
    (turning back at 0 and 1) and time each redraw in the page.

    Returns one dict per step: ``latency_ms`` (keydown -> end of the synchronous redraw:
    canvases, texts and curve markers updated, measured with ``performance.now()`` in the page),
    ``redraw_ms`` (the redraw alone) and ``k`` (the grid index drawn). ``pause_ms`` is waited
    between steps (releases still reach Python, debounced, as a user's would).
    """
    root = wait_threshold_view(page, index=index)
    handle = root.locator(TV_RANGE).element_handle()
    handle.evaluate(_TV_KEY_CLOCK_JS)
    handle.focus()
    out: list[dict[str, float]] = []
    direction = 1
    for _ in range(steps):
        snap = handle.evaluate(_TV_SNAPSHOT_JS)
        if (direction > 0 and snap["k"] >= 100) or (direction < 0 and snap["k"] <= 0):
            direction = -direction
        page.keyboard.press("ArrowRight" if direction > 0 else "ArrowLeft")
        page.wait_for_function(_TV_REDRAWN_JS, arg=[handle, snap["redraws"]], polling=10,
                               timeout=timeout * 1000)
        after = handle.evaluate(_TV_SNAPSHOT_JS)
        out.append({"latency_ms": after["redrawAt"] - after["keyAt"],
                    "redraw_ms": after["redrawMs"], "k": after["k"]})
        if pause_ms:
            page.wait_for_timeout(pause_ms)
    return out


def component_threshold_latency(page: Any, steps: int = 30, **kwargs: Any) -> list[float]:
    """Milliseconds from keydown to redraw-complete of the threshold view, one per arrow key
    press on its range input (see :func:`component_threshold_steps`; no server rerun is
    involved in a redraw)."""
    return [s["latency_ms"] for s in component_threshold_steps(page, steps, **kwargs)]
