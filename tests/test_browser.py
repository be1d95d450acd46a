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
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tools.browser import (
    ARTIFACTS,
    NARROW,
    ROOT,
    WIDE,
    BrowserError,
    assert_no_exception,
    choose_option,
    chromium_browser,
    content_count,
    goto,
    metric_value,
    move_threshold,
    pick_model,
    screenshot,
    selected,
    show_scored_sample,
    slider_value,
    streamlit_server,
    threshold_thumb,
    upload,
    wait_idle,
    widget,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

# url path -> (screenshot name, nav title). "" is the default page ("Model").
PAGES = {"": "model", "segment": "segment", "evaluate": "evaluate", "filters": "filters",
         "activations": "activations"}


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
    try:
        with streamlit_server(models_dir=models_dir,
                              log_path=ARTIFACTS / "streamlit-browser-test.log") as srv:
            yield srv.url
    except BrowserError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium driven by Playwright (never `playwright install`)."""
    try:
        with chromium_browser() as b:
            yield b
    except BrowserError as exc:
        pytest.fail(str(exc))


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


def test_segment_threshold_moves_iou(server, page):
    goto(page, server, "segment")
    show_scored_sample(page)
    thumb = threshold_thumb(page)
    before_value = slider_value(thumb)
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
    assert slider_value(thumb) != before_value, "slider did not move"
    screenshot(page, "segment_threshold_moved")
    assert after != before, f"IoU stayed {before!r} while the threshold moved"


def test_move_threshold_times_one_step(server, page):
    """tools.browser.move_threshold: one keyboard step, timed until the caption shows it."""
    goto(page, server, "segment")
    show_scored_sample(page)
    wait_idle(page)
    times = [move_threshold(page, direction) for direction in (1, 1, -1)]
    assert all(0 < ms < 30_000 for ms in times), times
    assert_no_exception(page, "segment after timed threshold moves")


MODEL_FOR = {"seismic": r"salt|seismic", "nuclei": r"nucle|micro"}


def test_segment_upload_shows_result(server, page, upload_images):
    for kind in ("seismic", "nuclei"):
        goto(page, server, "segment")  # a fresh session: only this upload in the uploader
        pick_model(page, MODEL_FOR[kind])  # with the bundled models: the image's domain
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
