"""The threshold view component (app/components/threshold_view.py + its JS).

* :func:`threshold_payload`: level map exactness, counts, the metric table against
  :func:`unet_core.metrics.segmentation_metrics` (minimum-area and empty-mask rules included),
  decimation, colours, validation, JSON.
* :func:`threshold_view` in an AppTest of ``tests/apps/threshold_demo.py``: what is sent to the
  browser, and the threshold returned after a release or a change of the ``threshold`` argument.
* A real browser (``-m browser``): the range input, redraws without any script run, releases
  reaching Python, the min-area caption, layout at 800 and 1400 px, and per-move redraw times.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.components.threshold_view import threshold_payload, threshold_view
from unet_core.metrics import DEFAULT_THRESHOLDS, segmentation_metrics, threshold_mask

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "tests" / "apps" / "threshold_demo.py"
GRID = np.asarray(DEFAULT_THRESHOLDS, dtype=np.float64)
KEYS = {"iou": "iou", "dice": "dice", "precision": "precision", "recall": "recall",
        "tgs": "tgs_score"}


def _png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def _demo_module():
    spec = importlib.util.spec_from_file_location("threshold_demo_module", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions only (main() runs under streamlit)
    return module


def _case(rng: np.random.Generator, h: int = 40, w: int = 50):
    image = rng.random((h, w)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    prob = np.clip(1.2 - np.hypot(yy - h / 2, xx - w / 2) / (0.4 * min(h, w))
                   + rng.normal(0, 0.05, (h, w)), 0, 1).astype(np.float32)
    truth = np.hypot(yy - h / 2 - 2, xx - w / 2) < 0.35 * min(h, w)
    return image, prob, truth


# ------------------------------------------------------------------------------- payload


def test_level_is_exact_at_every_grid_threshold(rng):
    edge = np.array([0.5, 0.0, 1.0, 0.49, 0.51, 0.29, 0.57, 0.999, 0.001, 0.5 + 1e-7],
                    dtype=np.float32)
    prob = np.concatenate([edge, rng.random(990).astype(np.float32),
                           GRID.astype(np.float32)]).reshape(3, 367)
    image = np.zeros_like(prob)
    p = threshold_payload(image, prob, None)
    level = _png(p["level_png"])
    assert level.dtype == np.uint8 and level.shape == prob.shape
    prob64 = prob.astype(np.float64)
    for k, t in enumerate(GRID):
        np.testing.assert_array_equal(level > k, prob64 > t, err_msg=f"threshold {t}")
    # the named cases: 0.5 is background at 0.50 and foreground at 0.49; 0 never; 1 below 1
    assert level[0, 0] == 50 and not level[0, 0] > 50 and level[0, 0] > 49
    assert level[0, 1] == 0
    assert level[0, 2] == 100 and all(level[0, 2] > k for k in range(100))
    assert p["stride"] == 1
    np.testing.assert_array_equal(level, np.searchsorted(GRID, prob64, side="left"))


def test_counts_are_full_resolution(rng):
    _, prob, _ = _case(rng, 300, 70)
    p = threshold_payload(np.zeros_like(prob), prob, None, max_side=64)
    assert p["stride"] == 5 and len(p["counts"]) == 101
    assert p["counts"] == [int((prob.astype(np.float64) > t).sum()) for t in GRID]
    assert p["metrics"] is None and p["truth_png"] is None and p["best_index"] is None


@pytest.mark.parametrize("min_area", [0, 40, 700])
def test_table_equals_segmentation_metrics(rng, min_area):
    image, prob, truth = _case(rng)
    p = threshold_payload(image, prob, truth, min_area=min_area)
    assert p["min_area"] == min_area and p["thresholds"] == GRID.tolist()
    for k in (0, 13, 37, 50, 64, 91, 99, 100):
        want = segmentation_metrics(threshold_mask(prob, GRID[k], min_area), truth)
        for ours, theirs in KEYS.items():
            assert p["metrics"][ours][k] == pytest.approx(want[theirs], abs=1e-12), (k, ours)
    if min_area == 700:  # the rule empties the masks of the high thresholds
        emptied = [k for k in range(101) if 0 < p["counts"][k] < 700]
        assert emptied and all(p["metrics"]["iou"][k] == 0.0 for k in emptied)


def test_empty_truth_and_emptied_prediction_score_one():
    prob = np.zeros((20, 20), np.float32)
    prob[3:5, 3:5] = 0.9  # 4 px above most thresholds
    truth = np.zeros((20, 20), bool)
    p = threshold_payload(prob, prob, truth, min_area=10)
    for key in KEYS:
        assert p["metrics"][key][50] == 1.0, key  # both empty after the rule
    off = threshold_payload(prob, prob, truth, min_area=0)
    assert off["metrics"]["iou"][50] == 0.0 and off["metrics"]["tgs"][50] == 0.0
    assert off["metrics"]["iou"][100] == 1.0  # nothing above 1.0: both empty


def test_best_index_highest_iou_ties_nearest_half():
    prob = np.zeros((10, 10), np.float32)
    prob[:5] = 0.8  # any threshold in [0, 0.8) finds exactly the truth
    truth = prob > 0.5
    p = threshold_payload(prob, prob, truth)
    assert p["metrics"]["iou"][50] == 1.0 and p["best_index"] == 50
    prob[:5] = 0.25  # exact in float32
    p = threshold_payload(prob, prob, prob > 0.1)
    assert p["best_index"] == 24  # IoU 1 on [0, 0.24]: nearest to 0.5


@pytest.mark.parametrize(("shape", "max_side", "stride", "display"), [
    ((1024, 600), 1024, 1, (1024, 600)),
    ((1025, 10), 1024, 2, (513, 5)),
    ((3000, 40), 1024, 3, (1000, 14)),
    ((101, 101), 50, 3, (34, 34)),
])
def test_stride_and_decimation(shape, max_side, stride, display):
    rng = np.random.default_rng(0)
    prob = rng.random(shape).astype(np.float32)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    truth = prob > 0.7
    p = threshold_payload(image, prob, truth, max_side=max_side)
    assert (p["height"], p["width"], p["stride"]) == (*shape, stride)
    assert (p["display_height"], p["display_width"]) == display
    assert max(display) <= max_side
    np.testing.assert_array_equal(_png(p["image_png"]), image[::stride, ::stride])
    assert p["image_channels"] == 3
    np.testing.assert_array_equal(
        _png(p["level_png"]), np.searchsorted(GRID, prob[::stride, ::stride].astype(np.float64)))
    np.testing.assert_array_equal(_png(p["truth_png"]) > 0, truth[::stride, ::stride])


def test_payload_is_json_pure_and_deterministic(rng):
    image, prob, truth = _case(rng)
    copies = [a.copy() for a in (image, prob, truth)]
    p = threshold_payload(image, prob, truth, min_area=5)
    assert json.loads(json.dumps(p)) == p
    assert threshold_payload(image, prob, truth, min_area=5) == p
    for a, b in zip((image, prob, truth), copies, strict=True):
        np.testing.assert_array_equal(a, b)
    assert p["id"] != threshold_payload(image, prob, truth, min_area=6)["id"]
    gray = _png(p["image_png"])
    assert gray.ndim == 2 and gray.dtype == np.uint8 and p["image_channels"] == 1
    np.testing.assert_array_equal(gray, np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8))


def test_overlay_colours_contrast_with_the_image():
    prob = np.zeros((64, 64), np.float32)
    prob[16:48, 16:48] = 0.9
    for level in (0.05, 0.3, 0.5):  # dark to mid-grey seismic: bright colours
        c = threshold_payload(np.full((64, 64), level, np.float32), prob, prob > 0.5)["colors"]
        assert (c["pred"], c["truth"]) == ("#56B4E9", "#F0E442")
        assert (c["pred_name"], c["truth_name"]) == ("sky blue", "yellow")
    c = threshold_payload(np.ones((64, 64), np.float32), prob, None)["colors"]
    assert (c["pred"], c["truth"]) == ("#0072B2", "#E69F00")  # white: the dark pair
    assert c["pred"] != c["truth"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"prob": np.full((4, 4), np.nan, np.float32)}, "NaN"),
    ({"prob": np.full((4, 4), 1.5, np.float32)}, r"\[0, 1\]"),
    ({"prob": np.zeros(16, np.float32)}, "H, W"),
    ({"prob": np.zeros((4, 4), bool)}, "float"),
    ({"image": np.zeros((5, 4), np.float32)}, "same H, W"),
    ({"truth": np.zeros((4, 4), np.uint8)}, "bool"),
    ({"truth": np.zeros((4, 5), bool)}, "same shape"),
    ({"max_side": 0}, "max_side"),
    ({"min_area": -1}, "min_area"),
])
def test_payload_rejects_bad_input(kwargs, match):
    args = {"image": np.zeros((4, 4), np.float32), "prob": np.zeros((4, 4), np.float32),
            "truth": None}
    args.update(kwargs)
    extra = {k: args.pop(k) for k in ("max_side", "min_area") if k in args}
    with pytest.raises(ValueError, match=match):
        threshold_payload(args["image"], args["prob"], args["truth"], **extra)


def test_view_rejects_a_payload_built_for_another_min_area(rng):
    image, prob, truth = _case(rng)
    p = threshold_payload(image, prob, truth, min_area=10)
    with pytest.raises(ValueError, match="min_area=10"):
        threshold_view(p, threshold=0.5, min_area=0, card_threshold=0.5, key="x")
    with pytest.raises(ValueError, match="style"):
        threshold_view(p, threshold=0.5, min_area=10, card_threshold=0.5, style="x", key="x")
    with pytest.raises(ValueError, match="threshold_payload"):
        threshold_view({}, threshold=0.5, min_area=0, card_threshold=0.5, key="x")


# ------------------------------------------------------------------------------- AppTest


def _sent(at) -> dict:
    (element,) = at.get("bidi_component")
    return json.loads(element.proto.json)


def _said(at) -> str:
    return " | ".join(m.value for m in at.markdown)


def test_apptest_mount_release_and_caller_change():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(DEMO), default_timeout=60).run()
    assert not at.exception
    sent = _sent(at)
    assert sent["view"]["threshold"] == 0.5 and sent["view"]["gen"] == 0
    assert sent["payload"]["metrics"] and len(sent["payload"]["counts"]) == 101
    assert "Python threshold 0.50" in _said(at)

    at.session_state["demo_tv"] = {"release": {"t": 0.61, "n": "a"}}  # as the browser does
    at.run()
    assert "Python threshold 0.61" in _said(at) and not at.exception
    at.run()  # a plain rerun keeps the released value; what is sent does not change
    assert "Python threshold 0.61" in _said(at)
    assert _sent(at)["view"] == sent["view"]  # the browser keeps its own slider position

    at.button(key="demo_set").click().run()  # the caller changes `threshold`
    assert "Python threshold 0.30" in _said(at)
    assert _sent(at)["view"]["threshold"] == 0.3 and _sent(at)["view"]["gen"] == 1

    at.session_state["demo_tv"] = {"release": {"t": 0.61, "n": "b"}}  # same value, new release
    at.run()
    assert "Python threshold 0.61" in _said(at)


# ------------------------------------------------------------------------------- browser

RUNS_JS = """() => { const m = /Script runs: (\\d+)/.exec(
  document.querySelector('[data-testid="stMain"]').innerText); return m ? Number(m[1]) : null; }"""

WATCH_RUNS_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const read = () => (/Script runs: (\\d+)/.exec(main.innerText) || [])[1];
  const start = read();
  window.__runsChangedAt = null;
  new MutationObserver((_, obs) => {
    if (read() !== start) { window.__runsChangedAt = performance.now(); obs.disconnect(); }
  }).observe(main, {subtree: true, childList: true, characterData: true});
}"""

#: Set the range input like a drag does (input events only, no change = no release).
DRAG_JS = """(el, v) => { el.value = String(v);
  el.dispatchEvent(new Event('input', {bubbles: true})); }"""

#: Layout problems of the component: overflow, SVG text outside the SVG, overlapping labels.
LAYOUT_JS = """(root) => {
  const problems = [];
  if (root.scrollWidth > root.clientWidth + 1) problems.push('horizontal overflow');
  const svg = root.querySelector('svg.tv-svg');
  if (svg) {
    const box = svg.getBoundingClientRect();
    for (const t of svg.querySelectorAll('text')) {
      const r = t.getBoundingClientRect();
      if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1
          || r.bottom > box.bottom + 1) problems.push('clipped: ' + t.textContent);
    }
    const labels = [...svg.querySelectorAll('.tv-marker-label')].map(
        (t) => [t.textContent, t.getBoundingClientRect()]);
    for (let i = 0; i < labels.length; i++) for (let j = i + 1; j < labels.length; j++) {
      const [a, ra] = labels[i], [b, rb] = labels[j];
      if (ra.left < rb.right - 1 && rb.left < ra.right - 1 && ra.top < rb.bottom - 1
          && rb.top < ra.bottom - 1)
        problems.push('overlap: ' + a + ' / ' + b);
    }
  }
  for (const e of root.querySelectorAll('.tv-caption, .tv-legend, .tv-metric, .tv-title'))
    if (e.scrollWidth > e.clientWidth + 1) problems.push('text clipped: ' + e.textContent);
  return problems;
}"""


@pytest.fixture(scope="module")
def demo_server():
    pytest.importorskip("playwright")
    from tools.browser import BrowserError, streamlit_server

    try:
        with streamlit_server(app="tests/apps/threshold_demo.py") as server:
            yield server
    except BrowserError as exc:  # pragma: no cover - environment
        pytest.skip(str(exc))


def _metric(page, key: str) -> float:
    return float(page.locator(f'[data-metric="{key}"]').inner_text())


def _open(browser, server, query: str = "", width: int = 1400):
    from tools.browser import wait_idle, wait_threshold_view

    page = browser.new_page(viewport={"width": width, "height": 1000})
    page.goto(f"{server.url}/?{query}", wait_until="domcontentloaded")
    wait_idle(page)
    return page, wait_threshold_view(page)


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_browser_redraws_without_reruns_and_reports_releases(demo_server, browser):
    from tools.browser import assert_no_exception, component_threshold_steps, screenshot

    image, prob, truth = _demo_module().synthetic(256, 0)
    table = threshold_payload(image, prob, truth)
    iou = table["metrics"]["iou"]
    page, root = _open(browser, demo_server)
    try:
        assert_no_exception(page, "threshold demo")
        # a real range input, labelled "Threshold", value shown = value scored
        rng_input = page.get_by_label("Threshold", exact=True)
        assert rng_input.get_attribute("type") == "range"
        assert [rng_input.get_attribute(a) for a in ("min", "max", "step")] == ["0", "1", "0.01"]
        assert rng_input.input_value() == "0.5"
        assert page.locator('[data-testid="tv-threshold-value"]').inner_text() == "0.50"
        assert page.locator('[data-testid="tv-mask-caption"]').inner_text().startswith(
            "Mask at 0.50 · ")
        assert _metric(page, "iou") == pytest.approx(iou[50], abs=5e-4)
        for key in ("dice", "precision", "recall", "tgs"):
            assert _metric(page, key) == pytest.approx(table["metrics"][key][50], abs=5e-4)
        # the browser decoded the level map exactly
        level = _png(table["level_png"])
        assert json.loads(root.get_attribute("data-level-hist")) == \
            np.bincount(level.ravel(), minlength=102).tolist()
        assert int(root.get_attribute("data-display-fg")) == int((level > 50).sum())

        # dragging (input events only): redraws, and not a single script run
        runs = page.evaluate(RUNS_JS)
        handle = rng_input.element_handle()
        for v in (0.3, 0.72, 0.05, 0.5):
            handle.evaluate(DRAG_JS, v)
            k = round(v * 100)
            assert page.locator('[data-testid="tv-threshold-value"]').inner_text() == f"{v:.2f}"
            assert _metric(page, "iou") == pytest.approx(iou[k], abs=5e-4)
            assert int(root.get_attribute("data-display-fg")) == int((level > k).sum())
        page.wait_for_timeout(1200)
        assert page.evaluate(RUNS_JS) == runs
        assert page.get_by_text("Python threshold 0.50").count() == 1

        # a keyboard step: redrawn at once, before the one script run that reports it
        page.evaluate(WATCH_RUNS_JS)
        rng_input.focus()
        page.keyboard.press("ArrowRight")
        page.locator('[data-testid="tv-root"][data-k="51"]').wait_for(state="attached")
        assert page.locator('[data-testid="tv-threshold-value"]').inner_text() == "0.51"
        assert _metric(page, "iou") == pytest.approx(iou[51], abs=5e-4)
        page.get_by_text("Python threshold 0.51").wait_for(timeout=30_000)
        redraw_at = float(root.get_attribute("data-redraw-at"))
        runs_at = page.evaluate("() => window.__runsChangedAt")
        assert runs_at is not None and redraw_at < runs_at, (redraw_at, runs_at)
        page.wait_for_timeout(500)
        assert page.evaluate(RUNS_JS) == runs + 1

        # the caller changes `threshold` (a "use best" button): the slider follows
        page.get_by_role("button", name="Set threshold 0.30").click()
        page.get_by_text("Python threshold 0.30").wait_for(timeout=30_000)
        page.wait_for_function("(el) => el.value === '0.3'", arg=handle, timeout=10_000)
        assert _metric(page, "iou") == pytest.approx(iou[30], abs=5e-4)

        # the view's own download: the mask on screen, exactly prob > t at every pixel
        with page.expect_download() as info:
            page.locator('[data-testid="tv-download-mask"]').click()
        download = info.value
        assert download.suggested_filename == "image_mask_t0.30.png"
        saved = np.asarray(Image.open(download.path()).convert("L"))
        assert np.array_equal(saved > 127, prob > 0.30)

        steps = component_threshold_steps(page, 12)
        assert len(steps) == 12 and all(s["latency_ms"] >= 0 for s in steps)
        lat = sorted(s["latency_ms"] for s in steps)
        print(f"\nthreshold view 256x256: keydown->redraw median {lat[len(lat) // 2]:.2f} ms, "
              f"max {lat[-1]:.2f} ms; redraw alone max "
              f"{max(s['redraw_ms'] for s in steps):.2f} ms")
        assert root.evaluate(LAYOUT_JS) == []
        screenshot(page, "threshold_view_1400")
        assert_no_exception(page, "threshold demo after moves")
    finally:
        page.close()


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_browser_min_area_narrow_layout_and_large_image(demo_server, browser):
    from tools.browser import assert_no_exception, component_threshold_latency, screenshot

    image, prob, truth = _demo_module().synthetic(256, 0)
    k = 90
    min_area = threshold_payload(image, prob, truth)["counts"][k] + 1  # empties the mask at k
    table = threshold_payload(image, prob, truth, min_area=min_area)
    page, root = _open(browser, demo_server, f"min_area={min_area}&style=contour", width=800)
    try:
        handle = page.locator('[data-testid="tv-threshold"]').element_handle()
        handle.evaluate(DRAG_JS, k / 100)
        caption = page.locator('[data-testid="tv-mask-caption"]').inner_text()
        assert caption == (f"Mask at {k / 100:.2f} · 0.0% foreground · emptied: fewer than "
                           f"{min_area} px above the threshold")
        assert root.get_attribute("data-display-fg") == "0"
        assert _metric(page, "iou") == pytest.approx(table["metrics"]["iou"][k], abs=5e-4)
        handle.evaluate(DRAG_JS, 0.5)
        problems = root.evaluate(LAYOUT_JS)
        assert problems == []
        screenshot(page, "threshold_view_800")
        assert_no_exception(page, "threshold demo, min area")
    finally:
        page.close()

    page, root = _open(browser, demo_server, "truth=0", width=1400)  # no truth: one panel
    try:
        assert root.locator("[data-panel]").count() == 1
        assert not page.locator('[data-metric="iou"]').is_visible()
        share = threshold_payload(image, prob, None)["counts"][50] / prob.size
        assert page.locator('[data-testid="tv-mask-caption"]').inner_text() == \
            f"Mask at 0.50 · {100 * share:.1f}% foreground"
        assert root.evaluate(LAYOUT_JS) == []
        assert_no_exception(page, "threshold demo, no truth")
    finally:
        page.close()

    page, root = _open(browser, demo_server, "size=1024", width=1400)
    try:
        ms = sorted(component_threshold_latency(page, 20))
        print(f"\nthreshold view 1024x1024: keydown->redraw median {ms[len(ms) // 2]:.2f} ms, "
              f"p95 {ms[int(0.95 * (len(ms) - 1))]:.2f} ms, max {ms[-1]:.2f} ms")
        assert len(ms) == 20
        assert_no_exception(page, "threshold demo, 1024")
    finally:
        page.close()

