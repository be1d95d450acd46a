"""Real-browser test of the dashboard: Streamlit server + headless Debian chromium (Playwright).

Starts ``streamlit run app/Home.py`` on a free port with ``UNET_MODELS_DIR`` pointing at the
bundled models (``models/``, when ``models/salt.keras`` exists) or else at a tiny U-Net built
on the fly, then drives every page like a user: it waits for each script run to finish,
screenshots every page into ``test-artifacts/screenshots/`` and fails on any exception box
or traceback. On Segment it moves the "Threshold" slider with the keyboard and uploads a
seismic and a microscopy image; on Activations it uploads an image and switches "Layer".

Needs ``/usr/bin/chromium`` (``make browser-deps``) and the ``playwright`` pip package
(``requirements-dev.txt``); ``playwright install`` is never used. Run alone with
``.venv/bin/python -m pytest -m browser``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
SHOTS = ARTIFACTS / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
# url path -> (screenshot name, nav title). "" is the default page ("Model").
PAGES = {"": "model", "segment": "segment", "evaluate": "evaluate", "filters": "filters",
         "activations": "activations"}
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 420, "height": 900}

# Script-run state and connection state are exposed on the app root by Streamlit's frontend.
_STATE_JS = """() => {
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


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def wait_idle(page, timeout: float = 90.0, settle: float = 0.8) -> None:
    """Wait until Streamlit has finished running the script and the page is drawn.

    Idle means: connected, script state ``notRunning``, no running icon, skeleton or spinner,
    and main content present, continuously for ``settle`` seconds (so a rerun that a widget
    change is about to trigger is not mistaken for the end of the previous one). A script
    that stopped on a compile error counts as idle too (the exception check reports it).
    """
    deadline = time.monotonic() + timeout
    idle_since: float | None = None
    last = None
    while True:
        now = time.monotonic()
        try:
            last = page.evaluate(_STATE_JS)
        except Exception as exc:  # page navigating: the execution context was replaced
            last = {"error": str(exc)}
        idle = bool(
            last
            and last.get("conn") == "CONNECTED"
            and last.get("script") in ("notRunning", "compilationError")
            and not last.get("runningIcon")
            and not last.get("skeleton")
            and not last.get("spinner")
            and last.get("main")
        )
        if idle:
            idle_since = idle_since or now
            if now - idle_since >= settle:
                break
        else:
            idle_since = None
        if now > deadline:
            raise AssertionError(f"Streamlit still busy after {timeout:.0f}s: {last}")
        page.wait_for_timeout(150)
    # Images are fetched from /media after the delta arrives; let them load.
    with contextlib.suppress(Exception):
        page.wait_for_load_state("networkidle", timeout=5_000)


def assert_no_exception(page, where: str) -> None:
    """Fail if the page shows an exception box, an error alert or a traceback.

    The app turns exceptions into one ``st.error`` line ("Unexpected error: ...") instead of
    a traceback, so error alerts count too: every flow tested here is a happy path.
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


def screenshot(page, name: str) -> Path:
    """Full-page screenshot into test-artifacts/screenshots/NAME.png.

    Streamlit scrolls inside its own container, so ``full_page`` alone would only get the
    viewport: the viewport is grown to the content's height for the shot, then restored.
    """
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
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


def goto(page, base: str, path: str) -> None:
    page.goto(f"{base}/{path}", wait_until="domcontentloaded")
    wait_idle(page)


def widget(page, testid: str, label: str):
    """The widget container of type ``testid`` whose label is exactly ``label``."""
    exact = re.compile(rf"^\s*{re.escape(label)}\s*$")
    return page.locator(f'[data-testid="{testid}"]').filter(
        has=page.locator('[data-testid="stWidgetLabel"]').filter(has_text=exact))


def metric_value(page, label: str) -> str:
    """Text of the st.metric whose label is exactly ``label``."""
    exact = re.compile(rf"^\s*{re.escape(label)}\s*$")
    metric = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]').filter(has_text=exact))
    assert metric.count() >= 1, f"no metric labelled {label!r}"
    return metric.first.locator('[data-testid="stMetricValue"]').inner_text().strip()


def choose_option(page, box, option: str | None = None, avoid: str | None = None) -> str:
    """Open selectbox ``box`` and click ``option`` (or the first one that is not ``avoid``)."""
    opener = box.locator('button[aria-haspopup="listbox"]')  # react-aria ComboBox (>= 1.5x)
    if opener.count():
        opener.first.click()
    else:  # older baseweb select
        box.get_by_role("combobox").first.click()
    options = page.get_by_role("listbox").get_by_role("option")
    options.first.wait_for(state="visible", timeout=10_000)
    texts = [t.strip() for t in options.all_inner_texts()]
    if option is None:
        choices = [t for t in texts if t and t != avoid]
        assert choices, f"selectbox has no option other than {avoid!r}: {texts}"
        option = choices[0]
    options.filter(has_text=re.compile(rf"^\s*{re.escape(option)}\s*$")).first.click()
    return option


def selected(box) -> str:
    """Current value of selectbox ``box``."""
    combo = box.get_by_role("combobox").first
    value = combo.evaluate("e => e.value ?? null")
    return (value if value is not None else combo.inner_text()).strip()


def upload(page, label: str, files: list[Path]) -> None:
    """Upload ``files`` with the file uploader labelled ``label`` and wait for the rerun.

    When the uploader is behind a "source" radio whose option has the same name (the app's
    pages do this), that option is picked first.
    """
    uploader = widget(page, "stFileUploader", label)
    if not uploader.count():
        option = page.locator('[data-testid="stRadioOption"]').filter(
            has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
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


def content_count(page) -> int:
    """Images, charts and canvases drawn in the main area."""
    return page.locator(
        '[data-testid="stMain"] :is([data-testid="stImage"], [data-testid="stPlotlyChart"], '
        '[data-testid="stVegaLiteChart"], [data-testid="stPyplot"], img, canvas)').count()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_png(path: Path, image: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)).save(path)
    return path


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models_dir(request, tmp_path_factory) -> Path:
    """The bundled models when trained (what users see), else a tiny seismic U-Net."""
    bundled = ROOT / "models"
    if (bundled / "salt.keras").is_file():
        return bundled
    from unet_core.model import ModelCard

    tiny = request.getfixturevalue("tiny_model_path")  # session fixture in conftest.py
    folder = tmp_path_factory.mktemp("browser_models")
    shutil.copy(tiny, folder / "tiny.keras")
    ModelCard(name="tiny", domain="seismic", foreground="salt", multiple_of=4, min_size=32,
              threshold=0.5, description="tiny untrained U-Net for the browser test"
              ).save(folder / "tiny.json")
    return folder


@pytest.fixture(scope="module")
def server(models_dir) -> Iterator[str]:
    """`streamlit run app/Home.py` on a free port; yields its base URL; killed afterwards."""
    assert (ROOT / "app" / "Home.py").is_file(), "app/Home.py is missing"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {**os.environ, "UNET_MODELS_DIR": str(models_dir), "TF_CPP_MIN_LOG_LEVEL": "2",
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "PYTHONUNBUFFERED": "1"}
    log_path = ARTIFACTS / "streamlit-browser-test.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/Home.py",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n"
                            f"{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit not healthy after 90s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium driven by Playwright (never `playwright install`)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser-deps` (installs Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"playwright is not importable ({exc}): run `make test` or "
                    "`.venv/bin/pip install -r requirements-dev.txt`")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser, request):
    """A fresh browser context (so a fresh Streamlit session) at 1280x800.

    When the test fails, the page is kept as test-artifacts/screenshots/FAILED_<test>.png.
    """
    context = browser.new_context(viewport=WIDE)
    context.set_default_timeout(30_000)
    pg = context.new_page()
    failed_before = request.session.testsfailed
    try:
        yield pg
    finally:
        if request.session.testsfailed > failed_before:  # the call phase is reported first
            with contextlib.suppress(Exception):
                screenshot(pg, f"FAILED_{request.node.name}")
        context.close()


@pytest.fixture(scope="module")
def upload_images(tmp_path_factory) -> dict[str, Path]:
    """A generated seismic crop and microscopy field, as 8-bit PNGs."""
    from unet_core.synthetic import fluorescence_nuclei, seismic_section

    folder = tmp_path_factory.mktemp("browser_uploads")
    seismic, _ = seismic_section((101, 101), seed=4242, salt=True)
    nuclei, _ = fluorescence_nuclei((128, 160), seed=4242)
    return {"seismic": _write_png(folder / "upload_seismic.png", seismic),
            "nuclei": _write_png(folder / "upload_nuclei.png", nuclei)}


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------


def test_every_page_renders(server, page):
    for path, name in PAGES.items():
        goto(page, server, path)
        screenshot(page, f"page_{name}")
        assert_no_exception(page, f"/{path}")
        # Agreed labels.
        assert widget(page, "stSelectbox", "Model").count() == 1, f"/{path}: no 'Model' select"
        if path == "filters":
            assert widget(page, "stSelectbox", "Layer").count() == 1, "filters: no 'Layer'"
            text = page.locator('[data-testid="stMain"]').inner_text()
            assert re.search(r"\d+ of \d+ shown", text), "filters: no 'N of M shown' text"


def _bundled_sample_with_mask(page) -> None:
    """Make Segment show a bundled sample that has a mask (so metrics are shown)."""
    if page.locator('[data-testid="stMetric"]').count():
        return
    for box in page.locator('[data-testid="stSelectbox"]').all():
        label = box.locator('[data-testid="stWidgetLabel"]').inner_text().strip()
        if label in ("Model", "Layer") or not re.search(r"sample|image", label, re.I):
            continue
        current = selected(box)
        for _ in range(4):  # try a few samples: empty-mask ones still have metrics
            current = choose_option(page, box, avoid=current)
            wait_idle(page)
            if page.locator('[data-testid="stMetric"]').count():
                return
    raise AssertionError("Segment: no bundled sample with a mask shows metrics")


def _slider_value(thumb) -> str | None:
    return (thumb.get_attribute("aria-valuetext") or thumb.get_attribute("aria-valuenow")
            or thumb.get_attribute("value"))


def test_segment_threshold_moves_iou(server, page):
    goto(page, server, "segment")
    _bundled_sample_with_mask(page)
    slider = widget(page, "stSlider", "Threshold")
    assert slider.count() == 1, "Segment: no slider labelled 'Threshold'"
    # Streamlit >= 1.5x draws the thumb as a visually hidden <input type="range"> (implicit
    # role "slider"); older ones as a div with role="slider": get_by_role finds either.
    thumb = slider.get_by_role("slider").first
    before_value = _slider_value(thumb)
    before = metric_value(page, "IoU")
    for label in ("Dice", "Precision", "Recall", "TGS score"):
        metric_value(page, label)
    after = before
    # An untrained model's probabilities can all sit on one side of the threshold: go left,
    # then (if IoU did not move) right past the starting point.
    for key, presses in (("ArrowLeft", 10), ("ArrowRight", 30)):
        thumb.focus()
        for _ in range(presses):
            thumb.press(key)
            page.wait_for_timeout(60)
        wait_idle(page)
        assert_no_exception(page, f"segment after {key}")
        after = metric_value(page, "IoU")
        if after != before:
            break
    assert _slider_value(thumb) != before_value, "slider did not move"
    screenshot(page, "segment_threshold_moved")
    assert after != before, f"IoU stayed {before!r} while the threshold moved"


MODEL_FOR = {"seismic": r"salt|seismic", "nuclei": r"nucle|micro"}


def _pick_model_for(page, kind: str) -> None:
    """With the bundled models, use the model of the image's domain (if there is one)."""
    box = widget(page, "stSelectbox", "Model")
    opener = box.locator('button[aria-haspopup="listbox"]')
    (opener.first if opener.count() else box.get_by_role("combobox").first).click()
    options = page.get_by_role("listbox").get_by_role("option")
    options.first.wait_for(state="visible", timeout=10_000)
    texts = [t.strip() for t in options.all_inner_texts()]
    page.keyboard.press("Escape")
    wanted = [t for t in texts if re.search(MODEL_FOR[kind], t, re.I)]
    if wanted and selected(box) != wanted[0]:
        choose_option(page, box, wanted[0])
        wait_idle(page)


def test_segment_upload_shows_result(server, page, upload_images):
    for kind in ("seismic", "nuclei"):
        goto(page, server, "segment")  # a fresh session: only this upload in the uploader
        _pick_model_for(page, kind)
        image = upload_images[kind]
        upload(page, "Upload images", [image])
        assert_no_exception(page, f"segment upload {kind}")
        # The result: a figure naming the upload, and a probability heatmap.
        figures = page.locator(
            '[data-testid="stMain"] :is([data-testid="stPlotlyChart"], [data-testid="stImage"], '
            '[data-testid="stPyplot"], [data-testid="stVegaLiteChart"])')
        figures.filter(has_text=image.stem).first.wait_for(timeout=30_000)
        figures.filter(has_text=re.compile("probab", re.I)).first.wait_for(timeout=30_000)
        page.wait_for_timeout(500)  # plotly draws after the layout settles
        screenshot(page, f"segment_upload_{kind}")


def test_evaluate_runs_on_bundled_samples(server, page):
    goto(page, server, "evaluate")
    page.get_by_role("button", name="Run evaluation").click()
    page.locator('[data-testid="stMetric"]').first.wait_for(timeout=120_000)
    wait_idle(page, timeout=120)
    assert_no_exception(page, "evaluate run")
    assert page.locator('[data-testid="stMain"] [data-testid="stPlotlyChart"]').count() > 0, \
        "Evaluate: no chart after Run evaluation"
    screenshot(page, "evaluate_results")


def test_activations_upload_and_layer(server, page, upload_images):
    goto(page, server, "activations")
    upload(page, "Upload an image", [upload_images["seismic"]])
    assert_no_exception(page, "activations upload")
    box = widget(page, "stSelectbox", "Layer")
    assert box.count() == 1, "Activations: no selectbox labelled 'Layer'"
    first = selected(box)
    screenshot(page, "activations_upload")
    chosen = choose_option(page, box, avoid=first)
    wait_idle(page)
    assert_no_exception(page, "activations layer switch")
    assert selected(box) == chosen
    assert content_count(page) > 0, "Activations: no maps drawn"
    screenshot(page, "activations_layer_switched")


def test_segment_narrow_window(server, browser):
    context = browser.new_context(viewport=NARROW)
    try:
        pg = context.new_page()
        goto(pg, server, "segment")
        screenshot(pg, "segment_narrow")
        assert_no_exception(pg, "segment (narrow window)")
    finally:
        context.close()
