"""Real-browser test of the dashboard: what a person sees, at 800 and 1400 px wide.

One Streamlit server (``python -m app.serve``, through ``tools.browser.streamlit_server``) on the
bundled models (``models/``, when ``models/salt.keras`` exists) or else on a tiny U-Net built on
the fly, and one headless Debian chromium (Playwright) with one browser context per width.

* Every page at both widths: screenshot (``test-artifacts/screenshots/page_<page>_<width>.png``),
  no exception box, and no metric, widget or button label cut (text wider than its box).
* Segment: the value on the "Threshold" control, the value next to it and the mask caption agree,
  and the scores shown equal the engine's (``unet_core``: same model, card settings, image and
  threshold) -- on opening, after an upload with its mask, after a model switch (the domain gate,
  then the new model's samples at its card threshold) and after a page switch (Evaluate's
  threshold slider and the Segment control are one value).
* Arrow keys on "Threshold" redraw the scores in the browser without any server script run
  (counted from the page's websocket frames); once the keys rest, at most one run takes the
  released value, and the control stays where the keys put it (no jump back).
* Activations after an upload: the selected "Layer" label names the layer the maps are of.
* The user's own models (built on the fly, served next to the others): an RGB model fed raw BGR
  and a 3-class softmax model open every page at both widths with a colour upload (and its
  binary or label mask), without an error; the Segment page shows the colour image and, for
  the 3-class model, the class picker and the legend of the label map. Screenshots
  ``own_<model>_<page>_<width>.png`` (``$UNET_SCREENSHOTS_DIR`` moves them).
* ONNX models (served next to the others, linked, never copied): a suite-built NCHW graph with
  a dynamic size and logits, and the two real ONNX U-Nets of ``../shared/realmodels`` (a
  PyTorch NCHW export and a tf2onnx NHWC one; skipped when absent) open every page at both
  widths: the Model page states the graph (layout, batch, size, output kind) and its nodes,
  Segment runs on ONNX Runtime (the apple photo for the apple model), Evaluate, Filters and
  Activations (with the overlay) draw. Screenshots ``onnx_<model>_<page>_<width>.png``.

* Volumes: the bundled SEG-Y cube on Segment at both widths opens at the middle inline with
  the engine's scores for that slice (``segment_volume``); moving "Slice" redraws the image and
  the scores (the engine's for the new slice); at 1400 px "Segment the whole volume" offers
  both outputs. Screenshots ``volume_*_<width>.png``.

Needs ``/usr/bin/chromium`` (``make browser-deps``) and the ``playwright`` pip package
(``requirements-dev.txt``); ``playwright install`` is never used. Run alone with
``.venv/bin/python -m pytest -m browser tests/test_browser.py``.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import OWN_CLASSES

from tools.browser import (
    ARTIFACTS,
    NARROW,
    ROOT,
    TV_METRICS,
    TV_ROOT,
    WIDE,
    BrowserError,
    RerunCounter,
    ThresholdShown,
    assert_no_exception,
    choose_option,
    cut_labels,
    goto,
    metric_value,
    move_threshold,
    open_page,
    pick_model,
    pick_source,
    screenshot,
    selected,
    set_slider,
    slider_thumb,
    slider_value,
    streamlit_server,
    threshold_shown,
    upload,
    wait_idle,
    wait_threshold_at,
    wait_threshold_view,
    widget,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(400)]

#: Page titles (sidebar links) -> url path; "" is the default page.
PAGES = {"Model": "", "Segment": "segment", "Evaluate": "evaluate", "Compare": "compare",
         "Filters": "filters", "Activations": "activations", "Explain": "explain"}
WIDTHS = {800: NARROW, 1400: WIDE}
#: threshold view data-metric key -> engine (unet_core.metrics.segmentation_metrics) key
ENGINE_KEYS = {"iou": "iou", "dice": "dice", "precision": "precision", "recall": "recall",
               "tgs": "tgs_score"}
SAMPLE = {"seismic": "seismic/images/seismic_000.png", "microscopy": "nuclei/images/nuclei_000.png"}


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------


#: The user's own models served next to the others: file stem -> what a test expects.
OWN = {"rgb": "an RGB model fed raw BGR 0..255", "three": "a 3-class softmax model"}
#: Real ONNX U-Nets (test use only; never copied into the repository).
REAL_MODELS = ROOT.parent / "shared" / "realmodels"
#: ONNX models served next to the others: file stem -> what it is. The first is built by the
#: suite (``onnx_models`` in conftest.py), the others are real files, linked when present.
ONNX = {"nchw_logits": "a suite-built NCHW graph, dynamic batch and size, logits",
        "apple_unet_256": "a PyTorch export: NCHW, fixed 1x3x256x256, logits",
        "disaster_nhwc_unet": "a tf2onnx export: NHWC, fixed 1x256x256x3, sigmoid"}
APPLE_PHOTO = REAL_MODELS / "samples" / "apple" / "images" / \
    "bd193a193fa400756ae0fdfa0efda2c7.jpg"


@pytest.fixture(scope="module")
def models_dir(request, tmp_path_factory) -> Path:
    """The bundled models when trained (what users see; linked, not copied), else a tiny
    seismic U-Net, plus the user's own models of :data:`OWN`."""
    folder = tmp_path_factory.mktemp("browser_models")
    bundled = ROOT / "models"
    if (bundled / "salt.keras").is_file():
        for path in bundled.iterdir():
            if path.suffix in (".keras", ".json"):
                (folder / path.name).symlink_to(path.resolve())
    else:
        from unet_core.model import ModelCard

        tiny = request.getfixturevalue("tiny_model_path")  # session fixture in conftest.py
        shutil.copy(tiny, folder / "salt.keras")
        ModelCard(name="salt", domain="seismic", foreground="salt", multiple_of=4, min_size=32,
                  threshold=0.5, description="tiny untrained U-Net for the browser test"
                  ).save(folder / "salt.json")
    for path in request.getfixturevalue("own_models").iterdir():  # session fixture, conftest
        (folder / path.name).symlink_to(path)
    onnx_models = request.getfixturevalue("onnx_models")  # session fixture, conftest
    for stem in ONNX:
        path = onnx_models / f"{stem}.onnx"
        path = path if path.is_file() else REAL_MODELS / f"{stem}.onnx"
        if path.is_file():
            (folder / path.name).symlink_to(path.resolve())
    return folder


@pytest.fixture(scope="module")
def server(models_dir) -> Iterator[str]:
    """The dashboard on a free port; yields its base URL; killed afterwards."""
    try:
        with streamlit_server(models_dir=models_dir,
                              log_path=ARTIFACTS / "streamlit-browser-test.log") as srv:
            yield srv.url
    except BrowserError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def contexts(browser) -> Iterator[dict[int, Any]]:
    """One browser context per width, shared by the tests (each opens its own page)."""
    made = {}
    for width, viewport in WIDTHS.items():
        made[width] = browser.new_context(viewport=viewport)
        made[width].set_default_timeout(30_000)
    yield made
    for ctx in made.values():
        with contextlib.suppress(Exception):
            ctx.close()


@pytest.fixture()
def open_at(contexts, request) -> Iterator[Any]:
    """``open_at(width)`` -> (page, RerunCounter): a new page (a new Streamlit session once it
    loads) at that width. A failing test leaves test-artifacts/screenshots/FAILED_<test>.png."""
    pages: list[Any] = []

    def make(width: int) -> tuple[Any, RerunCounter]:
        page = contexts[width].new_page()
        pages.append(page)
        return page, RerunCounter(page)

    failed_before = request.session.testsfailed
    yield make
    for i, page in enumerate(pages):
        if request.session.testsfailed > failed_before:
            with contextlib.suppress(Exception):
                screenshot(page, f"FAILED_{request.node.name}_{i}")
        with contextlib.suppress(Exception):
            page.close()


class Engine:
    """The engine's own numbers (``unet_core``, no Streamlit) for an image, a mask and a
    bundled model at its card's settings."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self._models: dict[str, Any] = {}
        self._probs: dict[tuple[str, str], np.ndarray] = {}

    def card(self, model: str) -> Any:
        return self._loaded(model).card

    def _loaded(self, model: str) -> Any:
        if model not in self._models:
            from unet_core.model import load_model

            self._models[model] = load_model(self.models_dir / f"{model}.keras")
        return self._models[model]

    def scores(self, model: str, image: Path, mask: Path, threshold: float) -> dict[str, float]:
        from unet_core.inference import Segmenter
        from unet_core.io import read_image, read_mask
        from unet_core.metrics import segmentation_metrics, threshold_mask

        card = self.card(model)
        key = (model, str(image))
        if key not in self._probs:  # the app's default: card TTA and padding, backend "auto"
            seg = Segmenter(self._loaded(model), tta=card.tta)
            self._probs[key] = seg.predict_proba(read_image(image), card.padding_mode)
        truth = read_mask(mask)
        if card.truth_inverted:
            truth = ~truth
        got = segmentation_metrics(threshold_mask(self._probs[key], threshold, card.min_area),
                                   truth)
        return {ours: got[theirs] for ours, theirs in ENGINE_KEYS.items()}


@pytest.fixture(scope="module")
def engine(models_dir) -> Engine:
    return Engine(models_dir)


@pytest.fixture(scope="module")
def seismic_upload(tmp_path_factory) -> tuple[Path, Path]:
    """A generated 101x101 seismic crop and its salt mask, as 8-bit PNGs of one name."""
    from unet_core.synthetic import seismic_section, write_pair

    folder = tmp_path_factory.mktemp("browser_uploads")
    image, mask = seismic_section((101, 101), seed=4242, salt=True)
    write_pair(folder, "upload_seismic.png", image, mask)
    return folder / "images" / "upload_seismic.png", folder / "masks" / "upload_seismic.png"


def _sample(domain: str) -> tuple[Path, Path]:
    image = ROOT / "assets" / SAMPLE[domain]
    return image, image.parent.parent / "masks" / image.name


def _card_threshold(models_dir: Path, model: str) -> float:
    return round(float(json.loads((models_dir / f"{model}.json").read_text())["threshold"]), 2)


def _agrees(shown: ThresholdShown, engine: Engine, model: str, image: Path, mask: Path,
            where: str, threshold: float | None = None) -> list[str]:
    """Problems (empty if none): the control, its value and the mask caption disagree, or a
    score shown differs from the engine's at the threshold shown (or ``threshold``)."""
    problems = []
    if not shown.consistent:
        problems.append(f"{where}: control {shown.control}, value shown {shown.label}, mask "
                        f"caption {shown.caption!r} ({shown.caption_text!r}) disagree")
    if threshold is not None and shown.control != f"{threshold:.2f}":
        problems.append(f"{where}: the control shows {shown.control}, expected {threshold:.2f}")
    if shown.control is None:
        return problems
    want = engine.scores(model, image, mask, float(shown.control))
    if set(shown.metrics) != set(TV_METRICS):
        problems.append(f"{where}: scores shown {sorted(shown.metrics)}, expected all of "
                        f"{sorted(TV_METRICS)}")
    for key, text in shown.metrics.items():
        if abs(float(text) - want[key]) > 5e-4 + 1e-9:
            problems.append(f"{where}: {TV_METRICS[key]} shows {text} at {shown.control}, the "
                            f"engine says {want[key]:.4f}")
    return problems


# ---------------------------------------------------------------------------------------
# Every page, both widths
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", list(WIDTHS))
def test_every_page_draws_with_labels_that_fit(server, open_at, width):
    page, _ = open_at(width)
    problems: list[str] = []
    for title, path in PAGES.items():
        if path == "":
            goto(page, server, "")
        else:
            open_page(page, title)
        if title == "Segment":
            wait_threshold_view(page)
        if title == "Evaluate":
            page.get_by_role("button", name="Run evaluation").click()
            page.locator('[data-testid="stMetric"]').first.wait_for(timeout=120_000)
            wait_idle(page, timeout=120)
        screenshot(page, f"page_{title.lower()}_{width}")
        assert_no_exception(page, f"{title} at {width} px")
        assert widget(page, "stSelectbox", "Model").count() == 1, f"{title}: no 'Model' select"
        cuts = cut_labels(page)
        problems += [f"{title} at {width} px: {cut}" + (f" x{cuts.count(cut)}"
                                                        if cuts.count(cut) > 1 else "")
                     for cut in dict.fromkeys(cuts)]
    assert not problems, "labels cut or spilling:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------
# Segment: the threshold shown is the threshold scored
# ---------------------------------------------------------------------------------------


def test_segment_opens_at_the_card_threshold_with_the_engines_scores(server, open_at, engine,
                                                                     models_dir):
    page, _ = open_at(1400)
    goto(page, server, "segment")
    card_t = _card_threshold(models_dir, "salt")
    shown = threshold_shown(page)
    image, mask = _sample("seismic")
    problems = _agrees(shown, engine, "salt", image, mask, "Segment opened", card_t)
    assert_no_exception(page, "Segment")
    assert not problems, "\n".join(problems)


def test_segment_upload_with_mask_is_scored_like_the_engine(server, open_at, engine,
                                                           models_dir, seismic_upload):
    page, _ = open_at(800)
    goto(page, server, "segment")
    image, mask = seismic_upload
    upload(page, "Upload images", [image])
    upload(page, "Upload masks (same file names)", [mask])
    wait_threshold_view(page)
    page.locator(f'{TV_ROOT} [data-metric="iou"]').first.wait_for(state="visible",
                                                                  timeout=30_000)
    assert_no_exception(page, "Segment after the upload")
    shown = threshold_shown(page)
    problems = _agrees(shown, engine, "salt", image, mask, "after the upload",
                       _card_threshold(models_dir, "salt"))
    move = move_threshold(page, -1)  # and after one step down
    problems += _agrees(threshold_shown(page), engine, "salt", image, mask,
                        "after one step down")
    if move.value != threshold_shown(page).label:
        problems.append(f"the step drew {move.value}, the control shows "
                        f"{threshold_shown(page).label}")
    screenshot(page, "segment_upload_800")
    assert not problems, "\n".join(problems)


def _steps_then_rest(page: Any, runs: RerunCounter, steps: int, direction: int
                     ) -> tuple[list[Any], int, int]:
    """``steps`` arrow-key steps 0.4 s apart (a person's pace), then let the keys rest until the
    released value has reached the server (or 5 s passed without a rerun request). Returns
    (the moves, script runs during the steps, script runs once the keys rested)."""
    before = runs.snapshot()
    moves = []
    for _ in range(steps):
        moves.append(move_threshold(page, direction))
        page.wait_for_timeout(400)
    during = runs.snapshot()
    deadline = 50  # x 0.1 s; no rerun request at all is fine too
    while runs.snapshot()[0] == during[0] and deadline:
        page.wait_for_timeout(100)
        deadline -= 1
    wait_idle(page)
    after = runs.snapshot()
    return moves, during[1] - before[1], after[1] - during[1]


def test_arrow_keys_redraw_scores_without_server_runs(server, open_at, engine):
    """Two rounds of three arrow-key steps: each step redraws the scores in the browser with no
    server script run; when the keys rest, at most one run takes the released value, and the
    control stays where the keys put it."""
    page, runs = open_at(1400)
    goto(page, server, "segment")
    image, mask = _sample("seismic")
    start = threshold_shown(page)
    problems = []
    drawn: list[str] = [start.metrics["iou"]]
    for round_ in (1, 2):
        moves, during, rested = _steps_then_rest(page, runs, 3, -1)
        drawn += [m.metrics["iou"] for m in moves]
        want = [f"{(start.k - 3 * (round_ - 1) - i) / 100:.2f}" for i in range(1, 4)]
        if [m.value for m in moves] != want:
            problems.append(f"round {round_}: the steps drew {[m.value for m in moves]}, "
                            f"expected {want}")
        if during:
            problems.append(f"round {round_}: {during} server script runs during the 3 steps; "
                            "expected none")
        if rested > 1:
            problems.append(f"round {round_}: {rested} script runs once the keys rested; "
                            "expected at most 1 (the release)")
        end = threshold_shown(page)
        if end.control != want[-1]:
            problems.append(f"round {round_}: once the keys rested the control shows "
                            f"{end.control}, the keys set {want[-1]} (it jumped)")
        problems += _agrees(end, engine, "salt", image, mask, f"round {round_}, at rest")
        print(f"\nround {round_}: keydown->painted {[round(m.paint_ms, 1) for m in moves]} ms, "
              f"script runs during {during}, at rest {rested}")
    if len(set(drawn)) < 2:
        problems.append(f"IoU stayed {drawn[0]} over 6 steps")
    assert_no_exception(page, "Segment after arrow keys")
    assert not problems, "\n".join(problems)


def test_model_switch_asks_then_shows_the_new_cards_threshold(server, open_at, engine,
                                                              models_dir):
    if not (models_dir / "nuclei.keras").is_file():
        pytest.skip("needs the bundled nuclei model")
    page, _ = open_at(1400)
    goto(page, server, "segment")
    wait_threshold_view(page)
    assert pick_model(page, r"^nuclei$") == "nuclei"
    use = page.get_by_role("button", name="Use nuclei's samples")
    use.wait_for(timeout=30_000)
    assert page.get_by_role("button", name="Score this image anyway").count() == 1
    assert page.locator(TV_ROOT).count() == 0, "scored the seismic sample with nuclei"
    screenshot(page, "segment_model_switch_gate_1400")
    assert_no_exception(page, "the domain gate")
    use.click()
    card_t = _card_threshold(models_dir, "nuclei")
    shown = wait_threshold_at(page, card_t, timeout=60)
    wait_idle(page)
    image, mask = _sample("microscopy")
    problems = _agrees(threshold_shown(page), engine, "nuclei", image, mask,
                       "nuclei's sample", card_t)
    screenshot(page, "segment_model_switched_1400")
    assert_no_exception(page, "Segment with nuclei")
    assert shown.consistent and not problems, "\n".join(problems)


def test_threshold_is_one_value_across_pages(server, open_at, engine, models_dir):
    """Evaluate's slider -> Segment's control -> one step there -> Evaluate's slider."""
    page, _ = open_at(800)
    goto(page, server, "evaluate")
    page.get_by_role("button", name="Run evaluation").click()
    page.locator('[data-testid="stMetric"]').first.wait_for(timeout=120_000)
    wait_idle(page, timeout=120)
    card_t = _card_threshold(models_dir, "salt")
    target = round(card_t - 0.05, 2)
    set_slider(page, "Threshold", target)
    labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
    assert any(t.strip().endswith(f"at {target:.2f}") for t in labels), \
        f"Evaluate's slider shows {target:.2f}, its metrics say {labels}"
    table = page.locator('[data-testid="stTable"]').first.inner_text()
    assert f"now {target:.2f}" in table, f"the summary is not at {target:.2f}: {table[:200]}"
    best = metric_value(page, "Best threshold")
    assert re.fullmatch(r"\d\.\d\d", best), best

    open_page(page, "Segment")
    shown = wait_threshold_at(page, target)
    image, mask = _sample("seismic")
    problems = _agrees(shown, engine, "salt", image, mask, "Segment after Evaluate", target)
    move_threshold(page, +1)
    page.wait_for_timeout(600)  # the release reaches Python
    wait_idle(page)
    moved = threshold_shown(page).control

    open_page(page, "Evaluate")
    shown_there = slider_value(slider_thumb(page, "Threshold"))
    if shown_there is None or f"{float(shown_there):.2f}" != moved:
        problems.append(f"Evaluate's slider shows {shown_there} after Segment's control was "
                        f"moved to {moved}")
    screenshot(page, "evaluate_after_segment_800")
    assert_no_exception(page, "Evaluate after Segment")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------

_LAYER_LABEL = re.compile(r"^(?P<name>\S+) · (?P<h>\d+)x(?P<w>\d+)x(?P<c>\d+)$")
_SUBHEADER = re.compile(r"^(?P<name>\S+) · (?P<h>\d+)x(?P<w>\d+), (?P<c>\d+) channels?$")


def _layer_shown(page: Any) -> tuple[dict[str, str], dict[str, str]]:
    """(the Layer box's selected label, the subheader over the maps), parsed."""
    label = selected(widget(page, "stSelectbox", "Layer"))
    m1 = _LAYER_LABEL.match(label)
    assert m1, f"Layer label {label!r} is not 'name · HxWxC'"
    heads = [t.strip() for t in page.locator('[data-testid="stMain"] h3').all_inner_texts()]
    subs = [m.groupdict() for m in map(_SUBHEADER.match, heads) if m]
    assert len(subs) == 1, f"expected one '<layer> · HxW, C channels' subheader: {heads}"
    return m1.groupdict(), subs[0]


def test_activations_layer_label_names_the_maps_drawn(server, open_at, seismic_upload):
    page, _ = open_at(800)
    goto(page, server, "activations")
    upload(page, "Upload an image", [seismic_upload[0]])
    assert_no_exception(page, "Activations after the upload")
    box = widget(page, "stSelectbox", "Layer")
    label, sub = _layer_shown(page)
    assert label == sub, f"Layer box says {label}, the maps drawn are {sub}"
    assert page.locator('[data-testid="stMain"] [data-testid="stImage"]').count() > 0
    screenshot(page, "activations_upload_800")
    first = selected(box)
    chosen = choose_option(page, box, avoid=first)
    wait_idle(page)
    assert_no_exception(page, "Activations after a layer switch")
    assert selected(box) == chosen
    label, sub = _layer_shown(page)
    assert label == sub, f"after switching to {chosen!r}: the maps drawn are {sub}"
    assert page.locator('[data-testid="stMain"] [data-testid="stImage"]').count() > 0
    screenshot(page, "activations_layer_switched_800")


# ---------------------------------------------------------------------------------------
# The user's own models: RGB and multi-class
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def colour_upload(tmp_path_factory) -> dict[str, Path]:
    """A 96x128 colour street-like scene and its masks: ``image``, ``binary`` (the car, 0/255)
    and ``labels`` (a palette PNG: 0 background, 1 road, 2 car), under one file name each."""
    from PIL import Image

    from app.viz import label_png_bytes

    folder = tmp_path_factory.mktemp("colour")
    h, w = 96, 128
    y, x = np.mgrid[0:h, 0:w]
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = 90 + 100 * x // w  # sky: blue to violet
    image[..., 1] = 150
    image[..., 2] = 235
    road = y >= 48
    image[road] = (95, 95, 100)
    image[road & (np.abs(x - w // 2) < 3) & (y % 12 < 6)] = (250, 250, 250)  # lane marks
    car = (y >= 58) & (y < 82) & (x >= 20) & (x < 56)
    image[car] = (210, 30, 35)
    labels = np.where(car, 2, np.where(road, 1, 0)).astype(np.uint8)
    out = {"image": folder / "images" / "street.png", "binary": folder / "binary" / "street.png",
           "labels": folder / "labels" / "street.png"}
    for path in out.values():
        path.parent.mkdir()
    Image.fromarray(image).save(out["image"])
    Image.fromarray(car.astype(np.uint8) * 255).save(out["binary"])
    out["labels"].write_bytes(label_png_bytes(labels))
    return out


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("model", list(OWN))
def test_own_models_open_every_page(server, open_at, colour_upload, model, width):
    """Every page for an RGB model and a 3-class model, with a colour upload and its mask."""
    page, _ = open_at(width)
    goto(page, server, "")
    assert pick_model(page, rf"^{model}$") == model, f"no {OWN[model]} in the Model select"
    problems: list[str] = []
    for title, path in PAGES.items():
        if path:
            open_page(page, title)
        if title == "Segment":
            mask = colour_upload["labels" if model == "three" else "binary"]
            upload(page, "Upload images", [colour_upload["image"]])
            upload(page, "Upload masks (same file names)", [mask])
            wait_threshold_view(page)
            if model == "three":
                assert widget(page, "stSelectbox", "Class").count() == 1, "no class picker"
                legend = page.locator('[data-testid="stTable"]').last.inner_text()
                assert all(name in legend for name in OWN_CLASSES), legend[:300]
        if title == "Evaluate":
            page.get_by_role("button", name="Run evaluation").click()
            page.locator('[data-testid="stMetric"]').first.wait_for(timeout=120_000)
            wait_idle(page, timeout=120)
        if title == "Activations":  # the colour upload, now a recent image; its overlay
            page.locator('[data-testid="stMain"] [data-testid="stImage"]').first.wait_for(
                timeout=60_000)
            for label in ("Overlay on input", "Mask outline"):
                widget(page, "stCheckbox", label).locator("label").first.click()
                wait_idle(page)
            if model == "three":
                assert widget(page, "stSelectbox", "Class").count() == 1, "no class picker"
        if title == "Model":  # and its card editor, open
            page.get_by_text("Edit the card", exact=True).first.click()
            page.get_by_role("button", name="Apply").wait_for(timeout=30_000)
        screenshot(page, f"own_{model}_{title.lower()}_{width}")
        assert_no_exception(page, f"{model}: {title} at {width} px")
        cuts = cut_labels(page)
        problems += [f"{model}: {title} at {width} px: {cut}" for cut in dict.fromkeys(cuts)]
    assert not problems, "labels cut or spilling:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------
# ONNX models: suite-built and real
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def apple_photo(tmp_path_factory) -> Path:
    """The apple sample under a short name (the uploader shortens long names), linked."""
    link = tmp_path_factory.mktemp("apple") / "apple.jpg"
    link.symlink_to(APPLE_PHOTO)
    return link


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("model", list(ONNX))
def test_onnx_models_open_every_page(server, open_at, models_dir, apple_photo, model, width):
    """Every page for an ONNX model: the graph's facts and nodes, a prediction on ONNX Runtime,
    an evaluation, its Conv/ConvTranspose filters and its nodes' activations."""
    if not (models_dir / f"{model}.onnx").exists():
        pytest.skip(f"{model}.onnx is not in {REAL_MODELS}")
    page, _ = open_at(width)
    goto(page, server, "")
    assert pick_model(page, rf"^{model}$") == model, f"no {ONNX[model]} in the Model select"
    main = page.locator('[data-testid="stMain"]')
    problems: list[str] = []
    for title, path in PAGES.items():
        if path:
            open_page(page, title)
        if title == "Model":  # no card: the editor is open; the graph and its nodes below it
            page.get_by_role("button", name="Apply").wait_for(timeout=30_000)
            heads = main.locator("h3").all_inner_texts()
            assert "ONNX graph" in heads and "Layers (graph nodes)" in heads, heads
        if title == "Segment":
            if model == "apple_unet_256" and APPLE_PHOTO.is_file():  # its authors' photo
                upload(page, "Upload images", [apple_photo])
            wait_threshold_view(page)
            assert "Backend: ONNX Runtime" in main.inner_text(), "not run on ONNX Runtime"
        if title == "Evaluate":
            page.get_by_role("button", name="Run evaluation").click()
            page.locator('[data-testid="stMetric"]').first.wait_for(timeout=120_000)
            wait_idle(page, timeout=120)
        if title in ("Filters", "Activations"):
            main.locator('[data-testid="stImage"]').first.wait_for(timeout=60_000)
        if title == "Activations":
            for label in ("Overlay on input", "Mask outline"):
                widget(page, "stCheckbox", label).locator("label").first.click()
                wait_idle(page)
        screenshot(page, f"onnx_{model}_{title.lower()}_{width}")
        assert_no_exception(page, f"{model}: {title} at {width} px")
        cuts = cut_labels(page)
        problems += [f"{model}: {title} at {width} px: {cut}" for cut in dict.fromkeys(cuts)]
    assert not problems, "labels cut or spilling:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------
# Volumes: the bundled SEG-Y cube, slice by slice
# ---------------------------------------------------------------------------------------


def _volume_scores(engine: Engine, model: str, axis: str, index: int, threshold: float
                   ) -> dict[str, float]:
    """The engine's scores of one slice of the bundled cube against its label cube
    (``segment_volume`` at the card's settings, the app's default backend)."""
    import dataclasses

    from unet_core.inference import Segmenter
    from unet_core.metrics import segmentation_metrics, threshold_mask
    from unet_core.volume import read_volume
    from unet_core.volume_predict import segment_volume

    card = engine.card(model)
    key = (model, f"cube:{axis}")
    cube = read_volume(ROOT / "assets" / "volumes" / "salt_cube.sgy")
    if key not in engine._probs:
        seg = Segmenter(engine._loaded(model), tta=card.tta)
        engine._probs[key] = segment_volume(seg, cube, axis, padding_mode=card.padding_mode)
    prob = dataclasses.replace(cube, data=engine._probs[key]).slice(axis, index)
    truth = read_volume(ROOT / "assets" / "volumes" / "salt_cube_mask.sgy").slice(axis, index)
    got = segmentation_metrics(threshold_mask(prob, threshold, card.min_area), truth > 0)
    return {ours: got[theirs] for ours, theirs in ENGINE_KEYS.items()}


def _input_src(page: Any) -> str:
    return page.locator('[data-testid="stImage"] img').first.get_attribute("src") or ""


@pytest.mark.parametrize("width", list(WIDTHS))
def test_volume_cube_browses_slice_by_slice(server, open_at, engine, width):
    """The bundled cube on Segment: the middle inline opens with the engine's scores for that
    slice; moving the "Slice" slider redraws the image and the scores (the engine's for the
    new slice); at 1400 px the whole volume is segmented and offered for download."""
    if not (ROOT / "models" / "salt.keras").is_file():
        pytest.skip("needs the bundled salt model")
    page, _ = open_at(width)
    goto(page, server, "segment")
    pick_source(page, "Volume")
    wait_threshold_view(page)
    assert_no_exception(page, "Segment, Volume source")
    problems = []
    first = threshold_shown(page)
    src = _input_src(page)
    if slider_value(slider_thumb(page, "Slice")) != "12":
        problems.append(f"the slice opens at {slider_value(slider_thumb(page, 'Slice'))}, "
                        "not 12 (the middle of 24 inlines)")
    want = _volume_scores(engine, "salt", "inline", 12, float(first.control or "nan"))
    for key, text in first.metrics.items():
        if abs(float(text) - want[key]) > 5e-4 + 1e-9:
            problems.append(f"inline 12: {TV_METRICS[key]} shows {text}, engine {want[key]:.4f}")
    screenshot(page, f"volume_segment_{width}")
    set_slider(page, "Slice", 4, step=1)
    wait_threshold_view(page)
    page.wait_for_function(
        "(old) => { const i = document.querySelector('[data-testid=\"stImage\"] img');"
        " return i && i.src !== old; }", arg=src, timeout=30_000)
    assert_no_exception(page, "after moving the slice")
    later = threshold_shown(page)
    want = _volume_scores(engine, "salt", "inline", 4, float(later.control or "nan"))
    if set(later.metrics) != set(TV_METRICS):
        problems.append(f"inline 4: scores shown {sorted(later.metrics)}")
    for key, text in later.metrics.items():
        if abs(float(text) - want[key]) > 5e-4 + 1e-9:
            problems.append(f"inline 4: {TV_METRICS[key]} shows {text}, engine {want[key]:.4f}")
    problems += [f"cut label: {t}" for t in cut_labels(page)]
    screenshot(page, f"volume_segment_slice4_{width}")
    if width == 1400:
        page.get_by_role("button", name="Segment the whole volume").first.click()
        page.get_by_text("Download salt_cube_mask.sgy").first.wait_for(timeout=120_000)
        wait_idle(page)
        assert_no_exception(page, "after segmenting the whole volume")
        page.get_by_text("Download salt_cube_prob.sgy").first.scroll_into_view_if_needed()
        screenshot(page, f"volume_whole_{width}")
    assert not problems, "\n".join(problems)
