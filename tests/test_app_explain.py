"""The dashboard's Explain page with Streamlit's AppTest, on the tiny untrained U-Net.

Fixtures copy the pattern of tests/test_app.py: ``tiny_model_path`` next to a card with
domain "seismic", served through ``UNET_MODELS_DIR``; data root ``<repo>/assets`` (its seismic
samples are 101x101). What the page shows is checked against direct
:class:`unet_core.explain.GradCam` calls with the same inputs.
"""

from __future__ import annotations

import functools
import io
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "Home.py"
TIMEOUT = 60


@pytest.fixture(scope="module")
def app_models_dir(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with tiny.keras and a card (domain seismic, threshold 0.5)."""
    from unet_core.model import ModelCard

    folder = tmp_path_factory.mktemp("explain_models")
    shutil.copy(tiny_model_path, folder / "tiny.keras")
    ModelCard(name="tiny", domain="seismic", description="tiny test U-Net", foreground="salt",
              multiple_of=4, min_size=32, threshold=0.5).save(folder / "tiny.json")
    return folder


@pytest.fixture(autouse=True)
def app_env(app_models_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UNET_MODELS_DIR", str(app_models_dir))
    monkeypatch.setenv("UNET_DATA_ROOT", str(ROOT / "assets"))
    monkeypatch.setenv("UNET_UPLOAD_DIR", str(tmp_path / "uploads"))
    # The tiny model's probabilities from TensorFlow (no ONNX export built for these tests).
    monkeypatch.setenv("UNET_BACKEND", "tensorflow")


@pytest.fixture()
def grad_passes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A list that gets one entry per GradCam gradient pass (explain or saliency) from now
    on; the explanation caches start empty."""
    from app import engine
    from unet_core.explain import GradCam

    runs: list[str] = []
    explain, saliency = GradCam.explain, GradCam.saliency

    def counting_explain(self: GradCam, *a: Any, **kw: Any) -> Any:
        runs.append("explain")
        return explain(self, *a, **kw)

    def counting_saliency(self: GradCam, *a: Any, **kw: Any) -> Any:
        runs.append("saliency")
        return saliency(self, *a, **kw)

    monkeypatch.setattr(GradCam, "explain", counting_explain)
    monkeypatch.setattr(GradCam, "saliency", counting_saliency)
    engine._explanations.clear()
    engine._EXPLAIN_PASSES.clear()
    return runs


def go(at: AppTest, page: str) -> AppTest:
    """Switch ``at`` to the page with url path ``page`` and run it."""
    at._page_hash = next(h for h, info in at._registered_pages.items()
                         if info.get("url_pathname") == page)
    return at.run()


def open_explain() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    return go(at, "explain")


def md(text: str) -> str:
    """The text a markdown body shows: backslash escapes removed."""
    return re.sub(r"\\(.)", r"\1", str(text))


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    unexpected = [md(e.value) for e in at.error if "Unexpected error" in md(e.value)]
    assert not unexpected, unexpected


def caption(at: AppTest) -> str:
    """The explanation's caption (method · layer · region · class · score ...)."""
    found = [md(c.value) for c in at.caption if " · layer " in md(c.value)]
    assert len(found) == 1, [md(c.value) for c in at.caption]
    return found[0]


def parsed(at: AppTest) -> dict[str, Any]:
    """Layer, region text, region size and score as the caption states them."""
    text = caption(at)
    m = re.search(r"layer (\S+) · region (.+) \((\d+) px\) · .* · score (\S+) ", text)
    assert m, text
    return {"layer": m[1], "region": m[2], "pixels": int(m[3]), "score": float(m[4])}


def sample_image(at: AppTest) -> np.ndarray:
    """The decoded image the page explains (the sample picked)."""
    from app import sources

    key = at.selectbox(key="sample").value
    item = next(it for it in sources.ordered_samples("seismic") if it.key == key)
    return sources.decode_image(item)


@functools.cache
def grad_cam(path: Path) -> Any:
    """A GradCam of the model file at ``path`` (built once)."""
    from unet_core.explain import GradCam
    from unet_core.model import load_model

    return GradCam(load_model(path))


def direct(app_models_dir: Path, image: np.ndarray, region: Any, layer: str, **kw: Any) -> Any:
    """The same explanation computed directly with the engine."""
    return grad_cam(app_models_dir / "tiny.keras").explain(image, region, layers=[layer],
                                                             **kw)[layer]


# --------------------------------------------------------------------------- tests


def test_explain_page_draws_with_the_bottleneck_and_its_caption(grad_passes: list[str]) -> None:
    at = open_explain()
    assert_clean(at)
    assert md(at.title[0].value) == "Explain"
    box = at.selectbox(key="exp_layer")
    assert box.options[box.index].endswith("bottleneck (default)")
    got = parsed(at)
    assert got["layer"] == box.value  # the layer shown as selected is the layer of the map
    assert grad_passes == ["explain"]
    assert at.get("bidi_component"), "no region picker on the page"


def test_switching_layers_costs_no_gradient_pass_and_shows_the_layer_picked(
        grad_passes: list[str]) -> None:
    at = open_explain()
    assert_clean(at)
    first = parsed(at)
    box = at.selectbox(key="exp_layer")
    for layer in ("enc0a_conv", "dec1b_conv", box.options[0].split(" ")[0]):
        at.selectbox(key="exp_layer").set_value(layer).run()
        assert_clean(at)
        box = at.selectbox(key="exp_layer")
        assert box.value == layer
        assert box.options[box.index].startswith(f"{layer} · 1/")
        got = parsed(at)
        assert got["layer"] == layer  # the map drawn is the layer the box shows
        assert got["score"] == first["score"]  # same region, same pass
    assert grad_passes == ["explain"]
    assert any(md(c.value).startswith("Gradient passes for this image: 1 ·") for c in at.caption)
    # Saliency is one more pass; back to Seg-Grad-CAM reuses the cached maps.
    at.radio(key="exp_method").set_value("saliency").run()
    assert_clean(at)
    assert parsed(at)["layer"] == "input"
    at.radio(key="exp_method").set_value("seg-grad-cam").run()
    assert parsed(at)["layer"] == box.options[0].split(" ")[0]
    assert grad_passes == ["explain", "saliency"]


@pytest.mark.slow  # ~8 s: five page runs and two direct gradient passes
def test_the_pixel_typed_is_the_pixel_explained(app_models_dir: Path,
                                                grad_passes: list[str]) -> None:
    from unet_core.explain import Region

    at = open_explain()
    at.radio(key="exp_region").set_value("pixel").run()
    at.number_input(key="exp_x").set_value(10).run()
    at.number_input(key="exp_y").set_value(60).run()
    assert_clean(at)
    got = parsed(at)
    layer = at.selectbox(key="exp_layer").value
    want = direct(app_models_dir, sample_image(at), Region("pixel", x=10, y=60), layer)
    assert got["region"] == "pixel (10, 60)" == want.region.describe()
    assert got["pixels"] == 1
    assert got["score"] == pytest.approx(want.score, rel=1e-5, abs=1e-6)
    # Another pixel: another region, another score (the number on screen is the controls').
    at.number_input(key="exp_x").set_value(90).run()
    other = direct(app_models_dir, sample_image(at), Region("pixel", x=90, y=60), layer)
    assert parsed(at)["region"] == "pixel (90, 60)"
    assert parsed(at)["score"] == pytest.approx(other.score, rel=1e-5, abs=1e-6)
    assert other.score != pytest.approx(want.score, rel=1e-3)
    # The controls keep their values across pages.
    go(at, "filters")
    go(at, "explain")
    assert (at.radio(key="exp_region").value, at.number_input(key="exp_x").value) == \
        ("pixel", 90)
    assert parsed(at)["region"] == "pixel (90, 60)"
    # The background toggle explains the negated score.
    at.toggle(key="exp_background").set_value(True).run()
    assert_clean(at)
    assert parsed(at)["score"] == pytest.approx(-other.score, rel=1e-5, abs=1e-6)
    assert "(background: score negated)" in caption(at)


def test_predicted_mask_region_uses_the_shared_threshold(app_models_dir: Path) -> None:
    from unet_core.inference import Segmenter
    from unet_core.metrics import threshold_mask
    from unet_core.model import load_model

    at = open_explain()
    assert at.radio(key="exp_region").value == "all"  # the default: always defined
    at.radio(key="exp_region").set_value("mask").run()
    assert_clean(at)
    prob = Segmenter(load_model(app_models_dir / "tiny.keras"), backend="tensorflow"
                     ).predict_proba(sample_image(at))
    counts = {t: int(threshold_mask(prob, t, 0).sum()) for t in (0.5, 0.48)}
    assert counts[0.48] > counts[0.5] > 0  # the two thresholds give different masks
    assert parsed(at)["pixels"] == counts[0.5]
    at.slider(key="threshold").set_value(0.48).run()
    assert_clean(at)
    assert parsed(at)["pixels"] == counts[0.48]
    assert "Prediction at 0.48" in str(at.get("bidi_component")[0].proto.json)
    # One control for every page: its session key is the one Segment and Evaluate read.
    assert at.session_state["threshold"] == pytest.approx(0.48)


def test_region_errors_show_one_line_at_no_gradient_pass(grad_passes: list[str]) -> None:
    at = open_explain()
    assert grad_passes == ["explain"]  # the whole image
    at.slider(key="threshold").set_value(1.0).run()  # nothing is above 1: empty mask
    at.radio(key="exp_region").set_value("mask").run()
    assert_clean(at)
    errors = [md(e.value) for e in at.error]
    assert errors == ["the predicted mask is empty at threshold 1; accepted: a lower threshold, "
                      "or a region all, X,Y (a pixel) or X0,Y0,X1,Y1 (a box)"]
    at.radio(key="exp_region").set_value("pixel").run()  # the centre pixel: one pass
    assert grad_passes == ["explain", "explain"]
    at.number_input(key="exp_x").set_value(101).run()  # one past the last column
    assert_clean(at)
    errors = [md(e.value) for e in at.error]
    assert len(errors) == 1 and errors[0].startswith(
        "pixel (101, 50) is outside the image (x 0..100, y 0..100)"), errors
    assert "\n" not in errors[0]
    assert at.get("bidi_component"), "the picker stays, to pick another region"
    assert grad_passes == ["explain", "explain"]  # refused before any gradient pass


def test_onnx_model_says_explain_needs_keras(onnx_models: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNET_MODELS_DIR", str(onnx_models))
    at = open_explain()
    assert_clean(at)
    assert not at.error
    infos = [md(i.value) for i in at.info]
    assert len(infos) == 1 and infos[0].startswith(
        "Explain needs a Keras model (.keras / .h5): ONNX Runtime computes no gradients"), infos
    assert not at.radio and not at.get("bidi_component")


def test_picks_write_the_number_inputs_once() -> None:
    from app.components.region_picker import parse_pick, pick_to_controls
    from app.views.explain import KEYS, LAST_PICK_KEY

    ss: dict[str, Any] = {KEYS["region"]: "mask"}
    pick = parse_pick({"kind": "pixel", "x": 12, "y": 40, "n": "a"}, 101, 101)
    assert pick_to_controls(pick, ss, keys=KEYS, last_key=LAST_PICK_KEY,
                            component_kind="component")
    assert (ss["exp_region"], ss["exp_x"], ss["exp_y"]) == ("pixel", 12, 40)
    ss["exp_x"] = 3  # typed after the pick: the same pick is not applied again
    assert not pick_to_controls(pick, ss, keys=KEYS, last_key=LAST_PICK_KEY)
    assert ss["exp_x"] == 3
    box = parse_pick({"kind": "box", "box": [90, 5, 130, 0], "n": "b"}, 101, 101)
    assert box == ("box", None, None, (90, 0, 101, 5), "b")  # sorted, clipped to the image
    pick_to_controls(box, ss, keys=KEYS, last_key=LAST_PICK_KEY)
    assert [ss[k] for k in ("exp_region", "exp_x0", "exp_y0", "exp_x1", "exp_y1")] == \
        ["box", 90, 0, 101, 5]
    ss["exp_region"] = "component"  # a click seeds the component, the radio stays
    seed = parse_pick({"kind": "pixel", "x": 200, "y": -4, "n": "c"}, 101, 101)
    pick_to_controls(seed, ss, keys=KEYS, last_key=LAST_PICK_KEY, component_kind="component")
    assert (ss["exp_region"], ss["exp_seed"], ss["exp_x"], ss["exp_y"]) == \
        ("component", True, 100, 0)
    for bad in (None, {"kind": "pixel", "x": 1}, {"kind": "box", "box": [1, 1, 1, 5], "n": "d"},
                {"kind": "pixel", "x": 1.5, "y": 2, "n": "e"}, {"kind": "lasso", "n": "f"}):
        assert parse_pick(bad, 101, 101) is None


@pytest.mark.slow  # ~10 s: a second model, its gate and two gradient models
def test_softmax_model_explains_the_class_picked(own_models: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A 3-class softmax model with a fixed 32x32 input (fit resize): the class picked is the
    class explained (its logit), on a 101x101 image."""
    from unet_core.explain import GradCam, Region
    from unet_core.model import load_model

    monkeypatch.setenv("UNET_MODELS_DIR", str(own_models))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    at.sidebar.selectbox(key="model_choice").set_value("three").run()
    go(at, "explain")
    at.button(key="gate_anyway").click().run()  # a seismic sample on a roads model
    at.radio(key="exp_region").set_value("pixel").run()
    at.selectbox(key="class_index").set_value(2).run()
    assert_clean(at)
    got = parsed(at)
    assert "· class 2 · car ·" in caption(at)
    x, y = at.number_input(key="exp_x").value, at.number_input(key="exp_y").value
    want = GradCam(load_model(own_models / "three.keras")).explain(
        sample_image(at), Region("pixel", x=x, y=y), layers=[got["layer"]], class_index=2)
    assert got["region"] == f"pixel ({x}, {y})"
    assert got["score"] == pytest.approx(want[got["layer"]].score, rel=1e-5, abs=1e-6)


@pytest.mark.browser
@pytest.mark.slow  # ~30 s: a server and chromium at two window widths
@pytest.mark.timeout(300)
def test_picker_click_and_drag_set_image_pixels_in_a_real_browser(
        browser: Any, app_models_dir: Path) -> None:
    """In chromium at 800 and 1400 px: a click on the picture sets X, Y to the image pixel
    under it and a drag sets the box (X1, Y1 exclusive), whatever the picture's on-screen size;
    the caption then names that region."""
    from tools.browser import NARROW, WIDE, error_texts, goto, streamlit_server, wait_idle

    def at(page: Any, fx: float, fy: float) -> tuple[float, float]:
        stage = page.locator('[data-testid="rp-root"] .rp-stage')
        stage.scroll_into_view_if_needed()
        bb = stage.bounding_box()
        return bb["x"] + bb["width"] * fx, bb["y"] + bb["height"] * fy

    def settle(page: Any) -> None:
        page.wait_for_timeout(600)
        wait_idle(page)

    def shown(page: Any) -> str:
        texts = page.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
        return next(t for t in texts if " · layer " in t)

    env = {"UNET_DATA_ROOT": str(ROOT / "assets"), "UNET_BACKEND": "tensorflow"}
    with streamlit_server(models_dir=app_models_dir, env=env) as server:
        for size in (NARROW, WIDE):
            page = browser.new_page(viewport=size)
            goto(page, server.url, "explain")
            page.locator('[data-testid="rp-root"][data-ready="1"]').wait_for(timeout=60_000)
            page.mouse.click(*at(page, 0.255, 0.755))  # 101 px wide: column 25, row 76
            settle(page)
            assert page.get_by_role("spinbutton", name="X", exact=True).input_value() == "25"
            assert page.get_by_role("spinbutton", name="Y", exact=True).input_value() == "76"
            assert " · region pixel (25, 76) (1 px) · " in shown(page)
            x0, y0 = at(page, 0.105, 0.105)
            x1, y1 = at(page, 0.605, 0.405)
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move(x1, y1, steps=6)
            page.mouse.up()
            settle(page)
            box = [page.get_by_role("spinbutton", name=n, exact=True).input_value()
                   for n in ("X0", "Y0", "X1", "Y1")]
            assert box == ["10", "10", "62", "41"]
            assert " · region box x 10-61, y 10-40 (1612 px) · " in shown(page)
            assert not error_texts(page)
            page.close()


def test_caption_says_when_the_map_is_all_zeros_and_the_download_is_the_map() -> None:
    from app.views.explain import NO_EVIDENCE, _npy, explanation_caption
    from unet_core.explain import Explanation, Region
    from unet_core.model import ModelCard

    card = ModelCard(name="t", foreground="salt")
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2:4] = True
    exp = Explanation(cam=np.zeros((4, 5), np.float32), layer="conv2d_7", method="seg-grad-cam",
                      region=Region("box", box=(2, 1, 4, 3)), mask=mask, class_index=0,
                      background=True, score=-2.5, peak=0.0)
    text = md(explanation_caption(exp, card, "seg-grad-cam"))
    assert text == ("Seg-Grad-CAM · layer conv2d_7 · region box x 2-3, y 1-2 (4 px) · salt "
                    "(background: score negated) · score -2.5 (sum of logits over the region) · "
                    f"{NO_EVIDENCE}")
    exp.cam[1, 2], exp.peak = 1.0, 0.25
    assert md(explanation_caption(exp, card, "seg-grad-cam")).endswith("· peak 0.25 (shown as 1)")
    saved = np.load(io.BytesIO(_npy(exp.cam)()))
    assert saved.dtype == np.float32 and saved.shape == (4, 5) and saved[1, 2] == 1.0
