"""Dashboard tests with Streamlit's AppTest, on tiny untrained U-Nets (no browser).

The model is the session's ``tiny_model_path`` copied next to a card with domain "seismic",
served to the app through ``UNET_MODELS_DIR``. Data root: ``<repo>/assets``. The last section
serves the user's own kind of models (``own_models``: an RGB model fed raw BGR, a 3-class
softmax model with a fixed input and fit resize), a trusted Lambda model and an architecture
.json + weights upload.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import OWN_CLASSES
from PIL import Image
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "Home.py"
TIMEOUT = 60
PAGES = ["segment", "evaluate", "filters", "activations"]


@pytest.fixture(scope="session")
def app_models_dir(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with tiny.keras and a card (domain seismic, threshold 0.5)."""
    from unet_core.model import ModelCard

    folder = tmp_path_factory.mktemp("app_models")
    shutil.copy(tiny_model_path, folder / "tiny.keras")
    ModelCard(name="tiny", domain="seismic", description="tiny test U-Net", foreground="salt",
              multiple_of=4, min_size=32, threshold=0.5).save(folder / "tiny.json")
    return folder


@pytest.fixture(autouse=True)
def app_env(app_models_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UNET_MODELS_DIR", str(app_models_dir))
    monkeypatch.setenv("UNET_DATA_ROOT", str(ROOT / "assets"))
    monkeypatch.setenv("UNET_UPLOAD_DIR", str(tmp_path / "uploads"))


@pytest.fixture()
def probe_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gets one entry per ActivationProbe.run (one forward pass) from now on."""
    from unet_core.introspect import ActivationProbe

    runs: list[int] = []
    original = ActivationProbe.run

    def counting(self: ActivationProbe, x: np.ndarray) -> dict[str, np.ndarray]:
        runs.append(1)
        return original(self, x)

    monkeypatch.setattr(ActivationProbe, "run", counting)
    return runs


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gets one entry per Segmenter.predict_classes call (one network run) from
    now on; the probability cache starts empty."""
    from app import engine
    from unet_core.inference import Segmenter

    runs: list[int] = []
    original = Segmenter.predict_classes

    def counting(self: Segmenter, image: np.ndarray, padding_mode: str | None = None,
                 **kwargs: Any) -> np.ndarray:
        runs.append(1)
        return original(self, image, padding_mode, **kwargs)

    monkeypatch.setattr(Segmenter, "predict_classes", counting)
    engine._class_probabilities.clear()
    return runs


def go(at: AppTest, page: str) -> AppTest:
    """Switch ``at`` to the page with url path ``page`` (pages are functions, not files) and
    run it."""
    url = "" if page == "model" else page  # the default page has no url path
    at._page_hash = next(h for h, info in at._registered_pages.items()
                         if info.get("url_pathname") in (page, url))
    return at.run()


def open_app(page: str | None = None) -> AppTest:
    """Run the app, then switch to ``page`` (its url path) if given."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    if page:
        go(at, page)
    return at


def view(at: AppTest) -> dict[str, Any]:
    """What the Segment page sent to the browser's threshold view: {"payload", "view"}."""
    found = at.get("bidi_component")
    assert found, "no threshold view on the page"
    return json.loads(found[0].proto.json)


def shown(at: AppTest) -> dict[str, float]:
    """The metrics the threshold view shows at its threshold (the browser reads the same
    table at the slider's index), plus "threshold" and "min_area"."""
    data = view(at)
    table, t = data["payload"].get("metrics"), data["view"]["threshold"]
    out = {"threshold": t, "min_area": data["view"]["min_area"]}
    if table:
        k = int(round(t * 100))
        out.update({name: table[name][k] for name in ("iou", "dice", "precision", "recall",
                                                        "tgs")})
    return out


def assert_clean(at: AppTest) -> None:
    """No exception element and no 'Unexpected error' on the page."""
    assert not at.exception, [e.value for e in at.exception]
    unexpected = [md(e.value) for e in at.error if "Unexpected error" in md(e.value)]
    assert not unexpected, unexpected


def md(text: str) -> str:
    """The text a markdown body shows: backslash escapes (``app.errors.plain``) removed."""
    return re.sub(r"\\(.)", r"\1", str(text))


def texts(elements: Iterable[Any]) -> str:
    """The text of some page elements as shown, one per line (escapes of user-supplied
    strings removed)."""
    return "\n".join(md(e.value) for e in elements)


def metric(at: AppTest, label: str) -> str:
    """The displayed value of the st.metric labelled ``label``."""
    return next(m.value for m in at.metric if m.label == label)


def image_captions(at: AppTest) -> str:
    """The captions of the page's st.image elements, one per line."""
    return "\n".join(img.caption for i in at.get("image") for img in i.proto.imgs)


def png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- pages


def test_home_shows_card_and_layer_table() -> None:
    at = open_app()
    assert_clean(at)
    assert at.title[0].value == "Model: tiny"
    assert at.sidebar.selectbox(key="model_choice").value == "tiny"
    assert not at.warning  # the card was found: no "inferred" warning
    card = at.table[0].value
    assert "salt in seismic images" in card["value"].tolist() and "0.50" in card["value"].tolist()
    assert "Model salt · salt" not in texts(at.caption)
    layers = at.dataframe[-1].value
    assert {"name", "type", "output shape", "params", "kernel"} <= set(layers.columns)
    assert "Conv2D" in layers["type"].tolist()
    assert f"**{int(layers['params'].sum()):,}** parameters" in texts(at.markdown)


@pytest.mark.parametrize(("page", "widgets"), [
    ("segment", [("radio", "Image source"), ("selectbox", "Padding"),
                 ("number_input", "Minimum area (px)"), ("slider", "Overlay opacity"),
                 ("radio", "Overlay style")]),
    ("evaluate", [("radio", "Data source"), ("button", "Run evaluation")]),
    ("filters", [("selectbox", "Layer"), ("selectbox", "Input channel"),
                 ("selectbox", "Filter")]),
    ("activations", [("radio", "Image source"), ("selectbox", "Layer"), ("selectbox", "Channel"),
                     ("toggle", "Shared colour scale"), ("checkbox", "Overlay on input")]),
])
def test_page_renders_with_its_widgets(page: str, widgets: list[tuple[str, str]]) -> None:
    at = open_app(page)
    assert_clean(at)
    assert at.title[0].value == page.capitalize()
    for kind, label in widgets:
        labels = [w.label for w in getattr(at, kind)]
        assert label in labels, (kind, label, labels)


def test_segment_threshold_is_the_cards_and_lives_in_the_browser(
        calls: list[int], app_models_dir: Path) -> None:
    """The view opens at the card's threshold and shows the engine's numbers at it."""
    from app import sources
    from unet_core.inference import Segmenter
    from unet_core.metrics import segmentation_metrics, threshold_mask
    from unet_core.model import load_model

    at = open_app("segment")
    assert_clean(at)
    assert at.selectbox(key="sample").value == "sample:seismic/seismic_000.png"
    got = shown(at)
    assert got["threshold"] == pytest.approx(0.5)  # the card's, and what the view shows
    assert at.session_state["threshold"] == pytest.approx(0.5)
    assert len(calls) == 1
    payload = view(at)["payload"]
    assert len(payload["metrics"]["iou"]) == 101 and payload["counts"][100] == 0

    item = next(i for i in sources.ordered_samples("seismic") if i.name == "seismic_000.png")
    image = sources.decode_image(item)
    truth = sources.decode_mask(item, image.shape)
    prob = Segmenter(load_model(app_models_dir / "tiny.keras")).predict_proba(
        image, at.session_state["padding"])
    for t in (0.5, 0.3):
        want = segmentation_metrics(threshold_mask(prob, t, 0), truth)
        row = {k: payload["metrics"][k][int(round(t * 100))] for k in ("iou", "dice")}
        assert row == pytest.approx({"iou": want["iou"], "dice": want["dice"]}, abs=1e-6)


def test_min_area_follows_the_card_and_rescores_without_the_network(calls: list[int]) -> None:
    at = open_app("segment")
    assert_clean(at)
    assert at.sidebar.number_input(key="min_area").value == 0  # the tiny card's
    assert shown(at)["min_area"] == 0
    before = view(at)["payload"]["metrics"]["recall"][0]
    at.sidebar.number_input(key="min_area").set_value(10**6).run()  # larger than the image
    assert_clean(at)
    assert shown(at)["min_area"] == 10**6
    # every mask is emptied: recall 0 at every threshold (the truth is not empty)
    assert view(at)["payload"]["metrics"]["recall"] == [0.0] * 101
    assert before > 0.0
    assert len(calls) == 1, "changing the minimum area must not re-run the network"
    assert at.session_state["min_area"] == 10**6

    # the Evaluate page shows the same control and re-derives every figure from the counts
    go(at, "evaluate")
    at.button(key="eval_run").click().run()
    assert_clean(at)
    assert at.sidebar.number_input(key="min_area").value == 10**6  # carried across pages
    empty = float(metric(at, "TGS metric, best"))
    assert "minimum area 1000000 px" in texts(at.caption)
    at.sidebar.number_input(key="min_area").set_value(0).run()
    assert_clean(at)
    assert float(metric(at, "TGS metric, best")) >= empty


def test_sidebar_backend_choice_reaches_the_segment_page() -> None:
    at = open_app("segment")
    assert_clean(at)
    box = at.sidebar.selectbox(key="backend")
    assert box.label == "Inference backend" and box.options == ["Auto (fastest available)",
                                                                "ONNX Runtime", "TensorFlow"]
    assert "Backend: ONNX Runtime" in texts(at.caption)  # auto picks ONNX Runtime
    auto = view(at)["payload"]["counts"]
    box.set_value("tensorflow").run()
    assert_clean(at)
    assert "Backend: TensorFlow" in texts(at.caption)
    assert view(at)["payload"]["counts"] == auto  # same weights, same masks


def test_segment_bad_upload_shows_error_with_file_name() -> None:
    at = open_app("segment")
    at.radio(key="image_source").set_value("Upload").run()
    at.file_uploader(key="seg_upload").set_value(
        ("bad.png", b"this is not an image", "image/png")).run()
    assert_clean(at)
    assert any("bad.png" in md(e.value) for e in at.error), texts(at.error)
    assert "Padding" in [w.label for w in at.selectbox]  # the controls still work


def test_segment_upload_with_mismatched_mask_still_predicts() -> None:
    image = (np.arange(40 * 48) % 251).astype(np.uint8).reshape(40, 48)
    at = open_app("segment")
    at.radio(key="image_source").set_value("Upload").run()
    at.file_uploader(key="seg_upload").set_value(("a.png", png(image), "image/png"))
    at.file_uploader(key="seg_upload_masks").set_value(
        ("a.png", png(np.zeros((10, 10), np.uint8)), "image/png")).run()
    assert_clean(at)
    assert any("a.png" in md(e.value) and "10x10" in md(e.value) for e in at.error), texts(at.error)
    assert view(at)["payload"]["metrics"] is None  # no scores without a usable mask
    assert [b.label for b in at.download_button] == ["Download probabilities (.npy)"]


def test_evaluate_bundled_samples_then_open_worst_in_segment() -> None:
    at = open_app("evaluate")
    at.button(key="eval_run").click().run()
    assert_clean(at)
    table = at.dataframe[-1].value
    assert len(table) == 6 and {"name", "coverage", "IoU", "Dice", "TGS score"} <= set(table)
    best = float(metric(at, "Best threshold"))
    assert 0.0 <= best <= 1.0
    summary = at.table[0].value
    assert list(summary.columns) == ["card 0.50", f"best {best:.2f}", "now 0.50"]
    assert "mean IoU" in summary.index and "TGS metric" in summary.index
    assert [b.label for b in at.download_button] == ["Download per-image CSV"]
    opens = [b for b in at.button if b.label == "Open in Segment"]
    assert opens
    opens[0].click().run()
    assert_clean(at)
    assert at.title[0].value == "Segment"
    assert at.radio(key="image_source").value == "Recent images"
    assert shown(at)["iou"] >= 0.0  # scored with its mask


def test_evaluate_folder_outside_data_root_is_refused() -> None:
    at = open_app("evaluate")
    at.radio(key="eval_source").set_value("Folder on the server").run()
    at.text_input(key="eval_folder").input("/etc").run()
    assert_clean(at)
    assert any("outside the allowed data root" in md(e.value)
               and str(ROOT / "assets") in md(e.value)
               for e in at.error), texts(at.error)
    assert at.button(key="eval_run").disabled


def test_filters_paging_text_and_layer_switch() -> None:
    at = open_app("filters")
    assert_clean(at)
    assert any(" of " in c.value and "shown" in c.value for c in at.caption)
    layers = at.selectbox(key="filters_layer").options
    assert len(layers) > 3
    at.selectbox(key="filters_layer").set_value("bottleneckb_conv").run()
    assert_clean(at)
    assert any(c.value.startswith("16 of 16 shown") for c in at.caption), texts(at.caption)


def test_pager_shows_n_of_m() -> None:
    def script() -> None:
        from app import widgets

        widgets.pager_ui(40, key="p", noun="channels")

    at = AppTest.from_function(script, default_timeout=TIMEOUT).run()
    assert at.caption[0].value.startswith("16 of 40 shown")
    at.number_input(key="p").set_value(3).run()
    assert at.caption[0].value.startswith("8 of 40 shown")


def test_activations_switching_layer_costs_no_forward_pass(probe_runs: list[int]) -> None:
    runs = probe_runs
    at = open_app("activations")
    assert_clean(at)

    def passes() -> str:
        return next(c.value for c in at.caption if c.value.startswith("Forward passes"))

    before, n_runs = passes(), len(runs)
    layers = at.selectbox(key="act_layer").options
    at.selectbox(key="act_layer").set_value(layers[0].split(" ")[0]).run()
    at.toggle(key="act_shared").set_value(False).run()
    at.checkbox(key="act_overlay").check().run()
    assert_clean(at)
    assert passes() == before
    assert len(runs) == n_runs


def test_no_model_offers_upload_and_refuses_bad_model(tmp_path: Path, tiny_model_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNET_MODELS_DIR", str(tmp_path))
    at = open_app()
    assert_clean(at)
    assert any("No models found" in w.value for w in at.sidebar.warning)
    assert at.sidebar.selectbox(key="model_choice").options == ["Upload a model…"]
    at.sidebar.file_uploader(key="model_upload").set_value(
        ("evil.keras", b"not a zip at all", "application/octet-stream")).run()
    assert_clean(at)
    assert any("evil.keras" in md(e.value) for e in at.sidebar.error), texts(at.sidebar.error)
    assert any("No model loaded" in i.value for i in at.info)
    at.sidebar.file_uploader(key="model_upload").set_value(
        ("mine.keras", tiny_model_path.read_bytes(), "application/octet-stream")).run()
    assert_clean(at)
    assert at.title[0].value == "Model: mine"
    assert any("inferred" in w.value for w in at.warning)  # uploaded without a card


# --------------------------------------------------------------------------- pure helpers


def test_resolve_data_folder_stays_inside_root(tmp_path: Path) -> None:
    from app.sources import resolve_data_folder
    from unet_core.errors import DataSetError

    root = tmp_path / "root"
    (root / "set" / "images").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    assert resolve_data_folder("set", root) == (root / "set").resolve()
    assert resolve_data_folder(str(root / "set"), root) == (root / "set").resolve()
    for bad in ("../outside", str(tmp_path / "outside"), "escape", "set/../../outside"):
        with pytest.raises(DataSetError, match="outside the allowed data root"):
            resolve_data_folder(bad, root)
    with pytest.raises(DataSetError, match="no such folder"):
        resolve_data_folder("missing", root)


def test_items_from_uploads_pairs_masks_by_name_and_stem() -> None:
    from app.sources import items_from_uploads, safe_filename

    items, notes = items_from_uploads(
        [("a.png", b"A"), ("b.jpg", b"B"), ("c.png", b"C"), ("a.png", b"A2")],
        [("a.png", b"MA"), ("b.png", b"MB"), ("zzz.png", b"MZ")])
    assert [(i.name, i.mask_name) for i in items] == [
        ("a.png", "a.png"), ("b.jpg", "b.png"), ("c.png", None)]
    assert any("a.png: uploaded twice" in n for n in notes)
    assert any(n.startswith("zzz.png: mask matches no uploaded image") for n in notes)
    assert safe_filename("../../etc/passwd.keras") == "passwd.keras"
    assert safe_filename("..") == "upload"


def evaluate_zip(data: bytes, name: str = "set.zip") -> AppTest:
    """The Evaluate page after uploading ``data`` as a zip and pressing Evaluate (checked
    clean)."""
    at = open_app("evaluate")
    at.radio(key="eval_source").set_value("Upload a .zip").run()
    at.file_uploader(key="eval_zip").set_value((name, data, "application/zip"))
    at.run()
    at.button(key="eval_run").click().run()
    assert_clean(at)
    return at


def test_evaluate_uploaded_zip_and_bad_zip() -> None:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for sub in ("images", "masks"):
            for path in sorted((ROOT / "assets" / "seismic" / sub).iterdir()):
                zf.write(path, f"set/{sub}/{path.name}")
    at = evaluate_zip(buf.getvalue())
    assert len(at.dataframe[-1].value) == 6
    at.file_uploader(key="eval_zip").set_value(("bad.zip", b"PK\x03\x04junk", "application/zip"))
    at.run()
    at.button(key="eval_run").click().run()
    assert_clean(at)
    assert any(md(e.value).startswith("bad.zip: corrupt") for e in at.error), texts(at.error)
    assert not any("/tmp" in md(e.value) or "unet" in md(e.value).lower() for e in at.error)
    assert not at.dataframe, "the previous zip's results must not stay under the bad one"
    buf = io.BytesIO()  # a zip whose image is corrupt: the error names the zip's member
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("images/a.png", b"not a png")
        zf.writestr("masks/a.png", png(np.zeros((8, 8), np.uint8)))
    at.file_uploader(key="eval_zip").set_value(("cells.zip", buf.getvalue(), "application/zip"))
    at.run()
    at.button(key="eval_run").click().run()
    assert_clean(at)
    message = texts(at.error)
    assert "cells.zip" in message and "a.png" in message, message
    assert "/tmp" not in message and "unet_" not in message, message


def test_unexpected_error_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import engine

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(engine, "class_probabilities", boom)
    at = open_app("segment")
    assert not at.exception
    assert [md(e.value) for e in at.error] == [
        "Unexpected error while running the network; the details are in the server log"]
    assert "boom" not in texts(at.error)


# --------------------------------------------------------------------------- big inputs


def gradient_png(height: int, width: int) -> bytes:
    """A smooth (well-compressing) 8-bit image of any size, as PNG bytes."""
    row = (np.arange(width) * 255 // max(1, width - 1)).astype(np.uint8)
    image = np.broadcast_to(row, (height, width)).copy()
    image[: height // 2, : width // 3] //= 2
    return png(image)


def test_segment_4096_upload_is_tiled_and_shows_result(monkeypatch: pytest.MonkeyPatch) -> None:
    from unet_core.inference import MAX_NETWORK_PIXELS, Segmenter

    shapes: list[tuple[int, ...]] = []
    original = Segmenter.forward

    def recording(self: Segmenter, batch: np.ndarray) -> np.ndarray:
        shapes.append(batch.shape)
        return original(self, batch)

    monkeypatch.setattr(Segmenter, "forward", recording)
    mask = np.zeros((4096, 4096), np.uint8)
    mask[1000:3000, 500:2500] = 255
    at = open_app("segment")
    at.radio(key="image_source").set_value("Upload").run()
    at.file_uploader(key="seg_upload").set_value(
        ("big.png", gradient_png(4096, 4096), "image/png"))
    at.file_uploader(key="seg_upload_masks").set_value(("big.png", png(mask), "image/png"))
    at.run(timeout=240)
    assert_clean(at)
    assert not at.error, texts(at.error)
    assert shapes and all(h * w <= MAX_NETWORK_PIXELS for _, h, w, _ in shapes), shapes[:5]
    assert len(shapes) > 1  # tiled: more than one forward pass
    payload = view(at)["payload"]
    assert payload["metrics"] is not None and payload["stride"] == 4  # 1024 px shown
    assert sum(payload["counts"][:1]) <= 4096 * 4096
    assert any("every 4th pixel" in c.value for c in at.caption), texts(at.caption)
    assert [b.label for b in at.download_button] == [
        "Download full mask at 0.50 (PNG)", "Download probabilities (.npy)"]


def test_segment_image_over_the_pixel_limit_is_refused_with_the_limit() -> None:
    from app import settings

    assert settings.APP_MAX_PIXELS == 4096 * 4096
    at = open_app("segment")
    at.radio(key="image_source").set_value("Upload").run()
    at.file_uploader(key="seg_upload").set_value(
        ("huge.png", gradient_png(4097, 4096), "image/png")).run()
    assert_clean(at)
    message = texts(at.error)
    assert "huge.png" in message and "16,777,216" in message, message
    assert "UNET_MAX_PIXELS" in message, message
    assert not at.get("bidi_component") and not at.download_button


def test_activations_on_a_large_image_are_refused_before_the_pass(
        probe_runs: list[int]) -> None:
    runs = probe_runs
    at = open_app("activations")
    at.radio(key="image_source").set_value("Upload").run()
    before = len(runs)  # the bundled sample of the first run had its pass
    at.file_uploader(key="act_upload").set_value(
        ("big.png", gradient_png(4096, 4096), "image/png")).run(timeout=120)
    assert_clean(at)
    message = texts(at.error)
    assert "big.png" in message and "1,024 MiB" in message, message
    assert "UNET_ACTIVATION_MAX_MB" in message, message
    assert len(runs) == before, "the forward pass must not run over the activation limit"


def test_activations_256_channel_layer_renders_page_by_page(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    from unet_core.model import ModelCard, build_unet

    keras.utils.set_random_seed(0)
    build_unet(base_filters=32, depth=3, dropout=0.0, name="wide").save(tmp_path / "wide.keras")
    ModelCard(name="wide", domain="seismic", multiple_of=8, min_size=32,
              threshold=0.5).save(tmp_path / "wide.json")
    monkeypatch.setenv("UNET_MODELS_DIR", str(tmp_path))
    tiles_drawn: list[int] = []
    from app import widgets

    original = widgets.tile_grid_ui

    def recording(tiles: list[np.ndarray], *args: Any, **kwargs: Any) -> Any:
        tiles_drawn.append(len(tiles))
        return original(tiles, *args, **kwargs)

    monkeypatch.setattr(widgets, "tile_grid_ui", recording)
    at = open_app("activations")
    assert_clean(at)
    wide = [o for o in at.selectbox(key="act_layer").options if o.endswith("x256")]
    assert wide, at.selectbox(key="act_layer").options
    layer = wide[0]
    at.selectbox(key="act_layer").set_value(layer.split(" ")[0]).run()
    assert_clean(at)
    assert any(c.value.startswith("16 of 256 shown") and "page 1/16" in c.value
               for c in at.caption), texts(at.caption)
    at.number_input(key=f"act_page_{layer.split(' ')[0]}").set_value(16).run()
    assert_clean(at)
    assert any(c.value.startswith("16 of 256 shown (channels 240–255, page 16/16)")
               for c in at.caption), texts(at.caption)
    assert tiles_drawn and max(tiles_drawn) <= 16, tiles_drawn


def test_invert_masks_follows_the_card_and_rescores(tmp_path: Path, tiny_model_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Masks marking the other class (ISBI EM): the card's truth_inverted ticks the box."""
    from unet_core.model import ModelCard

    at = open_app("segment")
    assert at.sidebar.checkbox(key="invert_masks").value is False  # the tiny card's default
    plain = view(at)["payload"]["metrics"]["iou"][0]  # at 0.00: everything predicted
    at.sidebar.checkbox(key="invert_masks").check().run()
    assert_clean(at)
    inverted = view(at)["payload"]["metrics"]["iou"][0]
    assert inverted == pytest.approx(1.0 - plain, abs=0.002)  # IoU = coverage

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(tiny_model_path, folder / "membrane.keras")
    ModelCard(name="membrane", domain="electron microscopy", foreground="membrane",
              multiple_of=4, min_size=32, threshold=0.5,
              truth_inverted=True).save(folder / "membrane.json")
    monkeypatch.setenv("UNET_MODELS_DIR", str(folder))
    home = open_app()
    assert "Ground-truth masks" in home.table[0].value.index.tolist()  # the card says so
    at = open_app("evaluate")
    assert at.sidebar.checkbox(key="invert_masks").value is True
    assert at.selectbox(key="eval_sample_set").value == "membranes"  # the domain's samples
    at.button(key="eval_run").click().run()
    assert_clean(at)
    inverted = at.dataframe[-1].value["IoU"].tolist()
    assert "(masks inverted)" in texts(at.subheader)
    at.sidebar.checkbox(key="invert_masks").uncheck().run()
    assert any("press **Run evaluation**" in i.value for i in at.info)  # results are stale
    at.button(key="eval_run").click().run()
    assert_clean(at)
    assert at.dataframe[-1].value["IoU"].tolist() != inverted


@pytest.mark.parametrize(("current", "best", "want"), [
    (0.40, 0.42, {"now 0.40": "top left", "best 0.42": "top right"}),
    (0.44, 0.42, {"now 0.44": "top right", "best 0.42": "top left"}),
    (0.42, 0.42, {"now = best 0.42": "top left"}),
])
def test_threshold_curve_labels_sit_on_the_outer_sides(current: float, best: float,
                                                        want: dict[str, str]) -> None:
    from app import viz

    t = np.linspace(0, 1, 101)
    fig = viz.curves_figure(t, {"IoU": t}, current=current, best=best)
    # plotly anchors a "top left" label by its right edge on the line, "top right" by its left
    got = {a.text: "top " + ("left" if a.xanchor == "right" else "right")
           for a in fig.layout.annotations}
    assert got == want


def test_ensemble_model_shows_its_members_and_every_layer(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An ensemble is one flat model: the card names its members, every layer is probeable."""
    import keras

    from unet_core.ensemble import ensemble_model
    from unet_core.model import ModelCard, build_unet

    keras.utils.set_random_seed(1)
    model = ensemble_model([build_unet(base_filters=4, depth=2, dropout=0.0, name=n)
                            for n in ("a", "b")], name="pair")
    model.save(tmp_path / "pair.keras")
    ModelCard(name="pair", domain="test", multiple_of=4, min_size=32, threshold=0.5,
              architecture={"type": "ensemble: mean of 2 residual U-Nets",
                            "parameters": int(model.count_params()),
                            "members": [{"name": "a"}, {"name": "b"}]}
              ).save(tmp_path / "pair.json")
    monkeypatch.setenv("UNET_MODELS_DIR", str(tmp_path))
    home = open_app()
    assert_clean(home)
    row = md(home.table[0].value.loc["Architecture", "value"])
    assert row.startswith("ensemble: mean of 2 residual U-Nets;") and "members a, b" in row
    acts = open_app("activations")
    assert_clean(acts)
    assert any("segments" in w.value for w in acts.warning)  # domain "test": asked first
    acts.button(key="gate_anyway").click().run()
    assert_clean(acts)
    options = acts.selectbox(key="act_layer").options
    names = [o.split(" ")[0] for o in options]
    assert {"m1_mask", "m2_mask", "ensemble_mean"} <= set(names)
    acts.selectbox(key="act_layer").set_value("ensemble_mean").run()
    assert_clean(acts)


def test_discover_models_puts_the_default_model_first(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from app.engine import discover_models

    for stem in ("alpha", "em_membrane", "salt", "zeta"):
        (tmp_path / f"{stem}.keras").write_bytes(b"")
        if stem != "alpha":
            (tmp_path / f"{stem}.json").write_text(json.dumps({"name": stem}))
    monkeypatch.delenv("UNET_DEFAULT_MODEL", raising=False)
    assert [e.label for e in discover_models(tmp_path)] == ["salt", "em_membrane", "zeta",
                                                             "alpha"]
    monkeypatch.setenv("UNET_DEFAULT_MODEL", "zeta")
    assert [e.label for e in discover_models(tmp_path)][0] == "zeta"
    monkeypatch.setenv("UNET_DEFAULT_MODEL", "missing")  # unknown: cards first, by file name
    assert [e.label for e in discover_models(tmp_path)] == ["em_membrane", "salt", "zeta",
                                                             "alpha"]


def test_model_page_shows_the_minimum_area_and_the_figures_without_it(
        tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unet_core.model import ModelCard

    shutil.copy(tiny_model_path, tmp_path / "tiny.keras")
    split = {"threshold": 0.5, "iou": 0.8, "tgs_metric": 0.75, "n": 10}
    ModelCard(name="tiny", domain="seismic", multiple_of=4, min_size=32, threshold=0.5,
              min_area=20,
              metrics={"selected_by": "tgs_metric", "min_area": 20, "validation": split,
                       "test": {**split, "tgs_metric": 0.8},
                       "without_min_area": {"threshold": 0.45,
                                            "validation": {**split, "tgs_metric": 0.7},
                                            "test": {**split, "tgs_metric": 0.78}}}
              ).save(tmp_path / "tiny.json")
    monkeypatch.setenv("UNET_MODELS_DIR", str(tmp_path))
    at = open_app()
    assert_clean(at)
    assert at.table[0].value.loc["Minimum area", "value"].startswith("20 px")
    table = at.table[1].value
    assert list(table.columns) == ["Validation", "Held-out test",
                                   "Validation, no minimum area",
                                   "Held-out test, no minimum area"]
    assert table.loc["TGS metric"].tolist() == ["0.750", "0.800", "0.700", "0.780"]
    assert "Threshold" in table.index and "tgs_metric" not in table.index
    assert "together with the minimum area (20 px)" in texts(at.caption)
    seg = open_app("segment")  # the page opens with the card's minimum area
    assert seg.number_input(key="min_area").value == 20
    assert shown(seg)["min_area"] == 20


# --------------------------------------------------------------------------- one truth per control


@pytest.fixture()
def two_models(tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A seismic model (threshold 0.50, minimum area 40) and a nuclei one (0.30, 0)."""
    from unet_core.model import ModelCard

    for name, domain, fg, t, area in (("salty", "seismic", "salt", 0.5, 40),
                                      ("nucleus", "microscopy", "nuclei", 0.3, 0)):
        shutil.copy(tiny_model_path, tmp_path / f"{name}.keras")
        ModelCard(name=name, domain=domain, foreground=fg, multiple_of=4, min_size=32,
                  threshold=t, min_area=area).save(tmp_path / f"{name}.json")
    monkeypatch.setenv("UNET_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("UNET_DEFAULT_MODEL", "salty")
    return tmp_path


def test_upload_keeps_the_cards_threshold_and_minimum_area(two_models: Path) -> None:
    """Defect 1: after 'Upload' + an image and its mask, the controls show the card's values
    (0.50 and 40), and the numbers shown are at those values."""
    from unet_core.synthetic import seismic_section

    image, mask = seismic_section((101, 101), seed=7, salt=True)
    at = open_app("segment")
    at.radio(key="image_source").set_value("Upload").run()
    at.file_uploader(key="seg_upload").set_value(
        ("tgs.png", png((image * 255).astype(np.uint8)), "image/png"))
    at.file_uploader(key="seg_upload_masks").set_value(
        ("tgs.png", png(mask.astype(np.uint8) * 255), "image/png")).run()
    assert_clean(at)
    got = shown(at)
    assert got["threshold"] == pytest.approx(0.5) and got["min_area"] == 40
    assert at.sidebar.number_input(key="min_area").value == 40
    assert [b.label for b in at.download_button] == ["Download probabilities (.npy)"]


def test_model_switch_applies_the_new_cards_defaults_and_asks_before_scoring(
        two_models: Path, calls: list[int]) -> None:
    """Defect 3: a seismic image is not scored silently by a nuclei model."""
    at = open_app("segment")
    assert shown(at)["threshold"] == pytest.approx(0.5)
    n = len(calls)
    at.sidebar.selectbox(key="model_choice").set_value("nucleus").run()
    assert_clean(at)
    assert at.session_state["threshold"] == pytest.approx(0.3)  # the new card's
    assert at.session_state["min_area"] == 0
    assert not at.get("bidi_component"), "scored a seismic image with a nuclei model"
    assert len(calls) == n, "the network ran on an image of another domain"
    warning = texts(at.warning)
    assert "seismic" in warning and "nuclei" in warning and "microscopy" in warning
    at.button(key="gate_samples").click().run()  # the model's own samples
    assert_clean(at)
    assert at.selectbox(key="sample").value.startswith("sample:nuclei/")
    assert shown(at)["threshold"] == pytest.approx(0.3)
    # back to the seismic model: its defaults again, and its own image is fine after asking
    at.sidebar.selectbox(key="model_choice").set_value("salty").run()
    assert at.session_state["threshold"] == pytest.approx(0.5)
    assert not at.get("bidi_component")  # a nuclei sample for a seismic model: asked
    at.button(key="gate_anyway").click().run()
    assert_clean(at)
    assert shown(at)["threshold"] == pytest.approx(0.5)


def test_threshold_is_one_control_across_pages(two_models: Path) -> None:
    """The value on Evaluate's slider is the one the Segment view opens at, and back."""
    at = open_app("evaluate")
    at.button(key="eval_run").click().run()
    assert at.slider(key="threshold").value == pytest.approx(0.5)
    at.slider(key="threshold").set_value(0.37).run()
    assert_clean(at)
    assert metric(at, "TGS metric at 0.37")
    go(at, "segment")
    assert_clean(at)
    assert shown(at)["threshold"] == pytest.approx(0.37)
    go(at, "filters")
    go(at, "evaluate")
    assert at.slider(key="threshold").value == pytest.approx(0.37)
    assert "now 0.37" in at.table[0].value.columns.tolist()


def test_activations_layer_shown_is_the_layer_drawn() -> None:
    """Defect 2: after an upload, the Layer box names the layer whose maps are drawn."""
    image = (np.arange(101 * 101) % 253).astype(np.uint8).reshape(101, 101)
    at = open_app("activations")
    at.radio(key="image_source").set_value("Upload").run()
    at.file_uploader(key="act_upload").set_value(("up.png", png(image), "image/png")).run()
    assert_clean(at)
    for _ in range(2):
        box = at.selectbox(key="act_layer")
        layer = box.value
        heading = md(at.subheader[0].value)
        assert heading.startswith(f"{layer} · "), (box.value, heading)
        assert box.options[box.index].startswith(f"{layer} · ")
        # maps are measured over the 101x101 image, not the padded input
        assert any(" · 101x101x" in o for o in box.options), box.options
        other = next(o.split(" ")[0] for o in box.options if not o.startswith(layer + " "))
        box.set_value(other).run()
        assert_clean(at)


# --------------------------------------------------------------------------- the user's own model

#: A 48x64 colour image: red ramp, green 120, a blue square; its label mask (0 background,
#: 1 road: the top 10 rows, 2 car: the square) and the car's binary mask.
RGB_IMAGE = np.zeros((48, 64, 3), np.uint8)
RGB_IMAGE[..., 0] = np.linspace(0, 255, 64).astype(np.uint8)[None]
RGB_IMAGE[..., 1] = 120
RGB_IMAGE[20:40, 10:30, 2] = 255
LABELS = np.zeros((48, 64), np.uint8)
LABELS[:10] = 1
LABELS[20:40, 10:30] = 2
CLASSES = OWN_CLASSES


@pytest.fixture()
def own(own_models: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Serve ``own_models``; the test picks the first model with UNET_DEFAULT_MODEL."""
    monkeypatch.setenv("UNET_MODELS_DIR", str(own_models))
    return own_models


@pytest.fixture()
def seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[int, ...]]]:
    """(dtype, shape) of every image Segmenter.predict_classes is given from now on; the
    probability cache starts empty."""
    from app import engine
    from unet_core.inference import Segmenter

    got: list[tuple[str, tuple[int, ...]]] = []
    original = Segmenter.predict_classes

    def recording(self: Segmenter, image: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        got.append((str(image.dtype), tuple(image.shape)))
        return original(self, image, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "predict_classes", recording)
    engine._class_probabilities.clear()
    return got


@pytest.fixture()
def downloads(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """File name -> bytes of every download the app offers from now on."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    files: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def keep(self: Any, data: Any, mimetype: str, kind: Any, filename: str | None = None
             ) -> str:
        if filename and isinstance(data, bytes):
            files[filename] = data
        return original(self, data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    return files


def upload_image(at: AppTest, image: bytes, mask: bytes | None = None,
                 name: str = "road.png") -> AppTest:
    """On Segment: pick 'Upload', upload ``image`` (and its mask under the same name)."""
    at.radio(key="image_source").set_value("Upload").run()
    at.file_uploader(key="seg_upload").set_value((name, image, "image/png"))
    if mask is not None:
        at.file_uploader(key="seg_upload_masks").set_value((name, mask, "image/png"))
    return at.run()


def label_png(labels: np.ndarray) -> bytes:
    """A palette PNG whose indices are ``labels`` (as the engine writes label maps)."""
    from app.viz import label_png_bytes

    return label_png_bytes(labels)


def test_rgb_model_gets_raw_colour_images_and_shows_them_in_colour(
        own: Path, seen: list[tuple[str, tuple[int, ...]]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from unet_core.inference import Segmenter
    from unet_core.io import read_mask, read_raw
    from unet_core.metrics import segmentation_metrics, threshold_mask
    from unet_core.model import load_model

    monkeypatch.setenv("UNET_DEFAULT_MODEL", "rgb")
    home = open_app()
    assert_clean(home)
    card = home.table[0].value["value"]
    assert card["Channels"].startswith("3 (BGR")
    assert card["Normalisation"].startswith("raw: x as decoded")
    assert card["Fit"].startswith("pad: padded (reflect) to a multiple of 4")

    truth = (LABELS == 2).astype(np.uint8) * 255
    at = upload_image(open_app("segment"), png(RGB_IMAGE), png(truth))
    assert_clean(at)
    assert seen[-1] == ("uint8", (48, 64, 3)), seen  # as decoded: 0..255, colour kept
    payload = view(at)["payload"]
    assert payload["image_channels"] == 3  # shown in colour
    prob = Segmenter(load_model(own / "rgb.keras")).predict_proba(read_raw(png(RGB_IMAGE)))
    want = segmentation_metrics(threshold_mask(prob, 0.5), read_mask(png(truth)))
    assert payload["metrics"]["iou"][50] == pytest.approx(want["iou"], abs=1e-6)
    assert payload["metrics"]["dice"][50] == pytest.approx(want["dice"], abs=1e-6)

    go(at, "filters")  # the first layer's kernels per input channel, in the card's order
    assert_clean(at)
    box = at.selectbox(key="filters_in_enc0a_conv")
    assert box.value == "all" and box.options == ["all 3 (one row each)", "0 · B", "1 · G",
                                                   "2 · R"]
    assert [m.value for m in at.markdown if m.value.startswith("**Input channel")] == [
        "**Input channel 0 · B**", "**Input channel 1 · G**", "**Input channel 2 · R**"]
    go(at, "activations")  # the recent colour upload, probed with its 3 channels
    assert_clean(at)
    at.checkbox(key="act_overlay").check().run()
    at.checkbox(key="act_outline").check().run()
    assert_clean(at)
    assert "as 3 channels, raw values" in texts(at.caption)
    assert "sky blue = the predicted lane mask's edge" in image_captions(at)


def test_multiclass_model_one_class_picker_label_map_and_scores(
        own: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unet_core.inference import Segmenter
    from unet_core.io import read_raw
    from unet_core.metrics import ClassAccumulator, segmentation_metrics, threshold_mask
    from unet_core.model import load_model

    monkeypatch.setenv("UNET_DEFAULT_MODEL", "three")
    at = upload_image(open_app("segment"), png(RGB_IMAGE), label_png(LABELS))
    assert_clean(at)
    box = at.selectbox(key="class_index")
    assert box.value == 1 and box.options == ["0 · background", "1 · road", "2 · car"]
    seg = Segmenter(load_model(own / "three.keras"))
    probs = seg.predict_classes(read_raw(png(RGB_IMAGE)))
    legend = at.table[0].value
    assert legend["name"].tolist() == CLASSES
    assert legend["colour"].tolist() == ["black", "red", "green"]
    acc = ClassAccumulator(3, CLASSES)
    acc.add(np.argmax(probs, axis=-1), LABELS, "road.png")
    want = [c["iou"] for c in acc.result().per_class()]
    assert legend["IoU"].tolist() == pytest.approx(want, abs=1e-9)
    assert "Against the label mask: mean IoU" in texts(at.caption)

    for k in (1, 2):  # the threshold view holds the class picked, scored against labels == k
        if k == 2:
            at.selectbox(key="class_index").set_value(2).run()
            assert_clean(at)
        got = view(at)
        score = segmentation_metrics(threshold_mask(probs[..., k], 0.3), np.equal(LABELS, k))
        assert got["payload"]["metrics"]["iou"][30] == pytest.approx(score["iou"], abs=1e-6)
        assert got["view"]["title"].startswith(CLASSES[k])
    assert "Download label map (PNG)" in [b.label for b in at.download_button]

    go(at, "evaluate")  # one control, one value, on every page that has a class
    assert at.selectbox(key="class_index").value == 2
    go(at, "activations")
    assert_clean(at)
    at.checkbox(key="act_overlay").check().run()
    at.checkbox(key="act_outline").check().run()
    assert_clean(at)
    assert at.selectbox(key="class_index").value == 2
    assert "the predicted 2 · car mask's edge" in image_captions(at)
    at.selectbox(key="act_layer").set_value("mask").run()  # output channels named by class
    assert_clean(at)
    assert at.selectbox(key="act_channel_mask").options == ["0 · background", "1 · road",
                                                            "2 · car"]
    go(at, "segment")
    assert at.selectbox(key="class_index").value == 2
    assert view(at)["view"]["title"].startswith("car")


def test_card_editor_applies_checks_and_downloads(
        own: Path, monkeypatch: pytest.MonkeyPatch, downloads: dict[str, bytes],
        seen: list[tuple[str, tuple[int, ...]]]) -> None:
    monkeypatch.setenv("UNET_DEFAULT_MODEL", "rgb")
    at = upload_image(open_app("segment"), png(RGB_IMAGE))
    raw_counts = view(at)["payload"]["counts"]
    go(at, "model")
    at.selectbox(key="ce_normalisation").set_value("meanstd").run()
    at.text_input(key="ce_mean").input("0.5, x").run()
    at.button(key="ce_apply").click().run()
    assert_clean(at)
    assert [md(e.value) for e in at.error] == [
        "mean = '0.5, x' is not a list of numbers (accepted: one number per channel, "
        "separated by commas, on the 0..1 scale)"]
    at.text_input(key="ce_mean").input("0.5, 0.5").run()
    at.text_input(key="ce_std").input("0.25").run()
    at.button(key="ce_apply").click().run()
    assert len(at.error) == 1 and "field mean = [0.5, 0.5] is invalid" in md(at.error[0].value)
    assert "1 or 3 numbers" in md(at.error[0].value)
    assert at.table[0].value.loc["Normalisation", "value"].startswith("raw")  # not applied

    at.selectbox(key="ce_normalisation").set_value("unit").run()
    at.number_input(key="ce_threshold").set_value(0.3).run()
    at.button(key="ce_apply").click().run()
    assert_clean(at)
    assert not at.error
    table = at.table[0].value
    assert table.loc["Normalisation", "value"].startswith("unit: x / full scale")
    assert table.loc["Recommended threshold", "value"] == "0.30"
    assert "card edited on the Model page" in texts(at.sidebar.caption)
    assert at.session_state["threshold"] == pytest.approx(0.3)  # the card's defaults apply
    card = json.loads(downloads["rgb.json"])
    assert card["normalisation"] == "unit" and card["threshold"] == 0.3
    assert card["channels"] == 3 and card["channel_order"] == "bgr"

    n = len(seen)
    go(at, "segment")  # the cache keys on the card: a new pass, other probabilities
    assert_clean(at)
    assert len(seen) == n + 1
    assert view(at)["payload"]["counts"] != raw_counts
    assert view(at)["view"]["threshold"] == pytest.approx(0.3)
    go(at, "model")
    at.button(key="ce_reset").click().run()
    assert at.table[0].value.loc["Normalisation", "value"].startswith("raw")


def test_multiclass_evaluate_scores_labels_per_class_and_binary_masks_by_class(
        own: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import zipfile

    from unet_core.evaluate import evaluate_classes, evaluate_pairs
    from unet_core.inference import Segmenter
    from unet_core.io import find_pairs
    from unet_core.model import load_model

    monkeypatch.setenv("UNET_DEFAULT_MODEL", "three")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, shift in enumerate((0, 7)):
            zf.writestr(f"images/r{i}.png", png(np.roll(RGB_IMAGE, shift, axis=1)))
            zf.writestr(f"masks/r{i}.png", label_png(np.roll(LABELS, shift, axis=1)))
    (tmp_path / "set.zip").write_bytes(buf.getvalue())
    with zipfile.ZipFile(tmp_path / "set.zip") as zf:
        zf.extractall(tmp_path / "set")
    seg = Segmenter(load_model(own / "three.keras"))
    want = evaluate_classes(seg, find_pairs(tmp_path / "set"))

    at = evaluate_zip(buf.getvalue())
    assert "label masks, 3 classes" in texts(at.subheader)
    assert metric(at, "Mean IoU over classes") == f"{want.mean_iou:.3f}"
    per_class = at.table[0].value
    assert per_class["name"].tolist() == CLASSES
    assert per_class["IoU"].tolist() == pytest.approx(want.class_iou.tolist(), abs=1e-9)
    assert len(at.dataframe[-1].value) == 2

    # bundled binary masks (auto: 0/255 is binary): the class picked is scored
    at.radio(key="eval_source").set_value("Bundled samples").run()
    at.selectbox(key="class_index").set_value(2).run()
    at.button(key="eval_run").click().run()
    assert_clean(at)
    assert "class 2 · car" in texts(at.subheader)
    pairs = find_pairs(ROOT / "assets" / at.selectbox(key="eval_sample_set").value)
    binary = evaluate_pairs(seg, pairs, class_index=2)
    assert float(metric(at, "Mean IoU, best")) == pytest.approx(
        binary.summary()["iou_at_best_threshold"], abs=6e-4)


@pytest.fixture(scope="session")
def lambda_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-channel model that scales its input in a Lambda layer (refused unless trusted)."""
    import keras

    folder = tmp_path_factory.mktemp("trusted")
    inp = keras.Input((None, None, 3))
    x = keras.layers.Lambda(lambda t: t / 255.0, name="scale")(inp)
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="mask")(x)
    keras.Model(inp, out, name="lam").save(folder / "lam.keras")
    return folder / "lam.keras"


def test_trusted_folder_loads_lambda_models_uploads_never(
        own: Path, lambda_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNET_TRUSTED_MODELS_DIR", str(lambda_model.parent))
    monkeypatch.setenv("UNET_DEFAULT_MODEL", "rgb")
    at = open_app()
    box = at.sidebar.selectbox(key="model_choice")
    assert box.options == ["rgb", "three", "lam (trusted)", "Upload a model…"]
    box.set_value("lam (trusted)").run()
    assert_clean(at)
    assert at.title[0].value == "Model: lam"
    assert any(i.value.startswith("**Trusted model**") for i in at.info)
    assert at.table[0].value.loc["Loaded", "value"].startswith("trusted: safe_mode=False")
    assert "trusted: loaded with safe_mode=False" in texts(at.sidebar.caption)
    go(at, "filters")
    assert_clean(at)

    at.sidebar.selectbox(key="model_choice").set_value("Upload a model…").run()
    at.sidebar.file_uploader(key="model_upload").set_value(
        ("lam.keras", lambda_model.read_bytes(), "application/octet-stream")).run()
    assert_clean(at)
    errors = texts(at.sidebar.error)
    assert "lam.keras: refused" in errors and "UNET_TRUSTED_MODELS_DIR" in errors, errors


def test_architecture_json_and_weights_upload_together(
        own: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    from unet_core.model import ModelCard, build_unet

    monkeypatch.setenv("UNET_DEFAULT_MODEL", "rgb")
    keras.utils.set_random_seed(2)
    model = build_unet(input_channels=3, n_classes=3, output_activation="softmax",
                       input_size=(32, 32), base_filters=4, depth=2, dropout=0.0, name="arch")
    model.save_weights(tmp_path / "net.weights.h5")
    arch = ("net.json", model.to_json().encode(), "application/json")
    weights = ("net.weights.h5", (tmp_path / "net.weights.h5").read_bytes(),
               "application/octet-stream")
    at = open_app()
    at.sidebar.selectbox(key="model_choice").set_value("Upload a model…").run()
    at.sidebar.file_uploader(key="model_upload").set_value([arch]).run()
    assert "an architecture .json needs exactly one weights .h5" in texts(at.sidebar.error)
    at.sidebar.file_uploader(key="model_upload").set_value([arch, weights]).run()
    assert_clean(at)
    assert at.title[0].value == "Model: net"
    table = at.table[0].value
    assert table.loc["Classes (inferred)", "value"].startswith("3: 0 class 0, 1 class 1")
    assert table.loc["Fit (inferred)", "value"].startswith("resize")
    assert "resize: the network takes a fixed 32x32 input" in texts(at.markdown)
    card = ModelCard(name="net", classes=CLASSES, channels=3, fit="resize",
                     input_size=[32, 32]).to_dict()
    at.sidebar.file_uploader(key="model_upload").set_value(
        [arch, weights, ("card.json", json.dumps(card).encode(), "application/json")]).run()
    assert_clean(at)
    assert at.table[0].value.loc["Classes", "value"].startswith("3: 0 background, 1 road")
    go(at, "segment")
    assert_clean(at)
    assert at.selectbox(key="class_index").options == ["0 · background", "1 · road", "2 · car"]


# --------------------------------------------------------------------------- plain text

#: A file name / card text holding every markdown construct that did harm: a remote image
#: (the browser fetched it), a link, emphasis, a colour directive, HTML and a forged line.
HOSTILE = "![x](http://127.0.0.1:9/a.png) **b** :red[c] <b>h</b> [l](http://127.0.0.1:9/l)"


def rendered_markdown(at: AppTest) -> list[str]:
    """Every markdown body of the page (markdown, captions, titles, alerts) and every cell of
    its st.table elements (Streamlit renders both as markdown)."""
    bodies = [str(e.value) for kind in ("markdown", "error", "warning", "info", "success")
              for e in at.get(kind)]
    for table in at.table:
        frame = table.value
        bodies += [str(v) for v in frame.to_numpy().ravel()] + [str(i) for i in frame.index]
    return bodies


def assert_no_markdown(bodies: list[str]) -> None:
    """No body holds an unescaped link / image, emphasis, colour directive or HTML tag."""
    for body in bodies:
        for bad in ("](", "![", "**b**", ":red[", "<b>"):
            assert bad not in body, (bad, body)


def test_uploaded_file_names_are_plain_text() -> None:
    from app.errors import plain

    name = HOSTILE + "\nerror: forged.png"
    at = open_app("segment")
    at.radio(key="image_source").set_value("Upload").run()
    at.file_uploader(key="seg_upload").set_value((name, b"not an image", "image/png"))
    at.file_uploader(key="seg_upload_masks").set_value(("![m](http://127.0.0.1:9/m).png",
                                                         png(np.zeros((8, 8), np.uint8)),
                                                         "image/png"))
    at.run()
    assert_clean(at)
    bodies = rendered_markdown(at)
    assert_no_markdown(bodies)
    errors = texts(at.error)
    assert "127.0.0.1:9/a.png" in errors and "\n" not in errors.strip(), errors
    assert any(plain(HOSTILE) in e.value for e in at.error), texts(at.error)
    assert "error: forged" not in errors.split("\n")[0][:7]  # the forged line is not a line
    assert any("127.0.0.1:9/m" in md(w.value) for w in at.warning), texts(at.warning)


def test_plain_escapes_every_markdown_construct() -> None:
    from app.errors import display_text, plain

    text = plain(HOSTILE + " $x$ `c` # h &amp; www.example.org \x1b[31m\u202e")
    for bad in ("](", "![", "**", ":red[", "<b>", "$x$", "`c`", "&amp;", "www.example", "\x1b",
                "\u202e"):
        assert bad not in text, bad
    assert md(text) == display_text(HOSTILE + " $x$ `c` # h &amp; www.example.org \x1b[31m\u202e")
    assert plain("a\nb\r\nc\td") == "a b c d"
    assert len(plain("x" * 5000)) <= 400


@pytest.fixture()
def hostile_card_dir(tiny_model_path: Path, tmp_path: Path) -> Path:
    """tiny.keras with a card whose name, description, foreground and domain are hostile."""
    from unet_core.model import ModelCard

    shutil.copy(tiny_model_path, tmp_path / "tiny.keras")
    ModelCard(name="tiny " + HOSTILE, domain="seismic :red[d]", description=HOSTILE,
              foreground="salt ![f](http://127.0.0.1:9/f.png)", multiple_of=4, min_size=32,
              threshold=0.5,
              training={"terms": HOSTILE, "note": HOSTILE}).save(tmp_path / "tiny.json")
    return tmp_path


@pytest.mark.parametrize("page", ["model", "segment"])
def test_card_fields_are_plain_text(hostile_card_dir: Path, page: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNET_MODELS_DIR", str(hostile_card_dir))
    at = open_app(None if page == "model" else page)
    assert not at.exception, [e.value for e in at.exception]
    bodies = rendered_markdown(at)
    assert_no_markdown(bodies)
    assert any("127.0.0.1:9/a.png" in md(b) for b in bodies)  # shown, as text
    if page == "model":
        assert md(at.title[0].value) == "Model: tiny " + HOSTILE


# --------------------------------------------------------------------------- disk and vetting


def seismic_zip() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for sub in ("images", "masks"):
            for path in sorted((ROOT / "assets" / "seismic" / sub).iterdir()):
                zf.write(path, f"set/{sub}/{path.name}")
    return buf.getvalue()


def test_uploads_live_in_the_session_folder_and_go_when_the_session_ends(
        tiny_model_path: Path) -> None:
    from app import uploads

    at = open_app()
    at.sidebar.selectbox(key="model_choice").set_value("Upload a model…").run()
    at.sidebar.file_uploader(key="model_upload").set_value(
        ("mine.keras", tiny_model_path.read_bytes(), "application/octet-stream")).run()
    assert_clean(at)
    assert at.title[0].value == "Model: mine"
    go(at, "evaluate")
    at.radio(key="eval_source").set_value("Upload a .zip").run()
    at.file_uploader(key="eval_zip").set_value(("set.zip", seismic_zip(), "application/zip"))
    at.run()
    at.button(key="eval_run").click().run()
    assert_clean(at)
    folders, used = uploads.root_usage()
    assert folders == 1 and used > tiny_model_path.stat().st_size, (folders, used)
    session = next(p for p in uploads.upload_root().iterdir())
    assert (session / "models").is_dir() and any(session.glob("zip-*/set/images/*.png"))
    # A session this server still holds keeps its folder; an ended one loses it.
    assert uploads.sweep_gone_sessions(live={session.name}, force=True) == 0
    assert uploads.root_usage()[0] == 1
    assert uploads.sweep_gone_sessions(live=set(), force=True) == 1
    assert uploads.root_usage() == (0, 0)


def test_session_disk_budget_refuses_before_writing(tiny_model_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from app import uploads

    monkeypatch.setenv("UNET_SESSION_DISK_MB", "0.01")  # 10 kB
    at = open_app("evaluate")
    at.radio(key="eval_source").set_value("Upload a .zip").run()
    at.file_uploader(key="eval_zip").set_value(("set.zip", seismic_zip(), "application/zip"))
    at.run()
    at.button(key="eval_run").click().run()
    assert_clean(at)
    message = texts(at.error)
    assert "set.zip: refused" in message and "UNET_SESSION_DISK_MB" in message, message
    assert uploads.root_usage()[1] < 1000  # nothing but the owner record
    at.sidebar.selectbox(key="model_choice").set_value("Upload a model…").run()
    at.sidebar.file_uploader(key="model_upload").set_value(
        ("mine.keras", tiny_model_path.read_bytes(), "application/octet-stream")).run()
    assert_clean(at)
    message = texts(at.sidebar.error)
    assert "mine.keras: refused" in message and "UNET_SESSION_DISK_MB" in message, message
    assert uploads.root_usage()[1] < 1000
    assert uploads.sweep_gone_sessions(live=set(), force=True) == 1


def test_sweep_at_startup_removes_folders_of_gone_servers(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    from app import uploads

    root = tmp_path / "uploads"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (root / "gone").mkdir(parents=True)
    (root / "gone" / uploads.OWNER_FILE).write_text(f"{dead} 1.0\n")
    (root / "gone" / "model.keras").write_bytes(b"x" * 100)
    (root / "live").mkdir()
    (root / "live" / uploads.OWNER_FILE).write_text(f"{os.getppid()} 1.0\n")  # alive
    monkeypatch.setitem(uploads._state, "startup_done", False)
    assert uploads.sweep_at_startup() == 1
    assert sorted(p.name for p in root.iterdir()) == ["live"]
    assert uploads.sweep_at_startup() == 0  # once per process


class FakeSandbox:
    """A stand-in for ``unet_core.sandbox`` (the agreed ``vet_model`` API) that refuses files
    named evil* and counts its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def vet_model(self, path: Path, *, weights: Path | None = None, card: Any = None,
                  memory_mb: int | None = None, timeout_s: float | None = None,
                  name: str | None = None) -> dict:
        from unet_core.errors import ModelLoadError

        self.calls.append(Path(path).name)
        if Path(path).name.startswith("evil"):
            raise ModelLoadError(f"{Path(path).name}: refused: loading it needed more than "
                                 "3,072 MB (limit UNET_VET_MEMORY_MB)")
        return {"params": 1, "layers": 1, "seconds": 0.1}


@pytest.fixture()
def sandbox(monkeypatch: pytest.MonkeyPatch) -> FakeSandbox:
    import sys

    from app import engine

    fake = FakeSandbox()
    monkeypatch.setitem(sys.modules, "unet_core.sandbox", fake)
    engine._vet_result.clear()
    return fake


def test_uploaded_models_are_vetted_once_bundled_never(sandbox: FakeSandbox,
                                                        tiny_model_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from unet_core import model as core_model

    loads: list[str] = []
    original = core_model.load_model

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        loads.append(Path(path).name)
        return original(path, *args, **kwargs)

    monkeypatch.setattr("app.engine.load_model", counting)
    at = open_app()
    assert_clean(at)
    assert sandbox.calls == []  # the bundled model is not vetted
    at.sidebar.selectbox(key="model_choice").set_value("Upload a model…").run()
    at.sidebar.file_uploader(key="model_upload").set_value(
        ("evil.keras", tiny_model_path.read_bytes(), "application/octet-stream")).run()
    assert_clean(at)
    assert [md(e.value) for e in at.sidebar.error] == [
        "evil.keras: refused: loading it needed more than 3,072 MB (limit UNET_VET_MEMORY_MB)"]
    assert "evil.keras" not in loads  # the server never loaded it
    at.run()
    assert sandbox.calls == ["evil.keras"]  # the refusal is cached by content
    at.sidebar.file_uploader(key="model_upload").set_value(
        ("mine.keras", tiny_model_path.read_bytes(), "application/octet-stream")).run()
    assert_clean(at)
    assert at.title[0].value == "Model: mine"
    at.run()
    assert sandbox.calls == ["evil.keras", "mine.keras"]


def test_error_inside_a_library_shows_no_path_or_source_line(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    from unet_core.inference import Segmenter

    def raising(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise ValueError('in user code: File "/work/main/unet_core/introspect.py", line 596, '
                         "cannot reshape array of size 7688 into shape (2,64,64,newaxis)")

    monkeypatch.setattr(Segmenter, "predict_classes", raising)
    from app import engine

    engine._class_probabilities.clear()
    at = open_app("segment")
    assert not at.exception
    message = texts(at.error)
    assert message == ("Unexpected error while running the network; the details are in the "
                       "server log"), message
    for leak in ("/work", "introspect.py", "line 596", "reshape", "ValueError"):
        assert leak not in message


def test_evaluation_can_be_cancelled_between_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamlit as st

    from app import engine
    from app.views import evaluate as page

    def pressed_cancel(seg: Any, pairs: Any, *, progress: Any, **kwargs: Any) -> Any:
        st.session_state[page._CANCEL_FLAG] = True  # what the Cancel button's callback sets
        progress(1, len(pairs))
        raise AssertionError("the evaluation went on after Cancel")

    monkeypatch.setattr(page, "evaluate_pairs", pressed_cancel)
    engine.evaluation_store.clear()
    at = open_app("evaluate")
    at.button(key="eval_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    message = texts(at.error)
    assert message.startswith("evaluation cancelled after 1 of "), message
    assert "evaluation" not in at.session_state and not at.dataframe
    assert not any(b.label == "Cancel" for b in at.button)  # gone with the progress bar


# --------------------------------------------------------------------------- ONNX models


def upload_model(at: AppTest, *paths: Path) -> AppTest:
    """In the sidebar: pick 'Upload a model…' and upload the files at ``paths`` together."""
    at.sidebar.selectbox(key="model_choice").set_value("Upload a model…").run()
    at.sidebar.file_uploader(key="model_upload").set_value(
        [(p.name, p.read_bytes(), "application/octet-stream") for p in paths]).run()
    return at


def onnx_table(at: AppTest) -> Any:
    """The Model page's 'ONNX graph' table (field -> value), escapes removed."""
    frames = [t.value for t in at.table if "Runs on" in t.value.index]
    assert len(frames) == 1, "no 'ONNX graph' table on the Model page"
    return frames[0]["value"].map(md)


@pytest.mark.slow  # ~6-8 s: every page, an upload vetted in a child
def test_uploaded_onnx_model_opens_every_page_with_the_engines_numbers(
        onnx_models: Path, calls: list[int]) -> None:
    from unet_core.inference import Segmenter
    from unet_core.introspect import activation_layers, conv_layers
    from unet_core.io import read_mask, read_raw
    from unet_core.metrics import segmentation_metrics, threshold_mask
    from unet_core.model import load_model

    path = onnx_models / "nchw_logits.onnx"
    loaded = load_model(path)
    at = upload_model(open_app(), path)
    assert_clean(at)
    assert md(at.title[0].value) == "Model: nchw_logits"
    card = at.table[0].value["value"].map(md)
    assert card["Layout (inferred)"].startswith("NCHW")
    assert card["Input size (inferred)"] == "any multiple of 4 (NCHW)"
    assert card["Output (inferred)"].startswith("logits")
    assert card["Loaded"].startswith("ONNX graph, checked")
    why = texts(at.markdown)
    assert "*layout*: NCHW: a convolution reads the input directly" in why
    graph = onnx_table(at)
    assert graph["Layout"].startswith("NCHW: a convolution reads the input directly")
    assert graph["Batch"].startswith("dynamic")
    assert graph["Input size"] == "dynamic height and width: images are padded to a multiple " \
        "of its stride (4)"
    assert graph["Input"] == "input [batch, 3, height, width], float32, 3 channels"
    assert graph["Output kind"].startswith("logits: the graph ends with Conv")
    assert not at.warning or "The card says" not in texts(at.warning)
    assert "Layers (graph nodes)" in texts(at.subheader)
    assert len(at.dataframe[0].value) == loaded.model.n_layers  # one row per node
    backend = at.sidebar.selectbox(key="backend_onnx")
    assert backend.value == "onnxruntime" and backend.disabled
    assert "ONNX graph, run as it is" in texts(at.sidebar.caption)

    truth = (RGB_IMAGE[..., 0] > 128).astype(np.uint8) * 255
    go(at, "segment")
    upload_image(at, png(RGB_IMAGE), png(truth))
    assert_clean(at)
    prob = Segmenter(loaded).predict_proba(read_raw(png(RGB_IMAGE)))
    payload = view(at)["payload"]
    for t in (30, 50, 70):
        want = segmentation_metrics(threshold_mask(prob, t / 100), read_mask(png(truth)))
        assert payload["metrics"]["iou"][t] == pytest.approx(want["iou"], abs=1e-6)
        assert payload["metrics"]["dice"][t] == pytest.approx(want["dice"], abs=1e-6)
    assert shown(at)["threshold"] == pytest.approx(loaded.card.threshold)
    assert "Backend: ONNX Runtime · the ONNX file itself (NCHW, dynamic batch)" \
        in texts(at.caption)

    go(at, "evaluate")
    at.button(key="eval_run").click().run()
    assert_clean(at)
    assert at.metric, "no evaluation figures"

    go(at, "filters")
    assert_clean(at)
    convs = conv_layers(loaded)
    assert at.selectbox(key="filters_layer").options[0].startswith(f"{convs[0]} · 3x3, 3→")
    assert at.selectbox(key=f"filters_in_{convs[0]}").options == [
        "all 3 (one row each)", "0 · R", "1 · G", "2 · B"]
    up = next(c for c in convs if "ConvTranspose" in c)
    at.selectbox(key="filters_layer").set_value(up).run()
    assert_clean(at)

    go(at, "activations")  # the upload, now a recent image: every node's maps, one pass
    assert_clean(at)
    layers = activation_layers(loaded)
    box = at.selectbox(key="act_layer")
    assert [o.split(" · ")[0] for o in box.options] == layers
    before = len(calls)
    for name in (layers[0], layers[-1]):
        at.selectbox(key="act_layer").set_value(name).run()
        assert_clean(at)
    assert "Forward passes for this image: 1 ·" in texts(at.caption)
    at.checkbox(key="act_overlay").check().run()
    at.checkbox(key="act_outline").check().run()
    assert_clean(at)
    assert "sky blue = the predicted foreground mask's edge" in image_captions(at)
    assert len(calls) == before  # the outline is Segment's cached prediction

    go(at, "model")  # an edited card is checked against the graph and used
    at.selectbox(key="ce_normalisation").set_value("minmax").run()
    at.button(key="ce_apply").click().run()
    assert_clean(at)
    assert not at.error, texts(at.error)
    card = at.table[0].value["value"].map(md)
    assert card["Normalisation"].startswith("minmax") and card["Layout (inferred)"]
    go(at, "segment")
    assert_clean(at)
    assert len(calls) == before + 1  # new card, new pass


@pytest.mark.slow  # ~6-8 s: every page, an upload vetted in a child
def test_onnx_nhwc_fixed_batch_model_with_its_card_names_classes_and_scores_them(
        onnx_models: Path, tmp_path: Path) -> None:
    import zipfile

    from unet_core.evaluate import evaluate_classes
    from unet_core.inference import Segmenter
    from unet_core.io import find_pairs, read_raw
    from unet_core.metrics import ClassAccumulator
    from unet_core.model import load_model

    path = onnx_models / "nhwc_logits3_b2.onnx"
    loaded = load_model(path)
    at = upload_model(open_app(), path, onnx_models / "nhwc_logits3_b2.json")
    assert_clean(at)
    assert at.table[0].value["value"].map(md)["Classes"].startswith(
        "3: 0 background, 1 road, 2 car")
    graph = onnx_table(at)
    assert graph["Layout"].startswith("NHWC: ")  # the card's, or why the graph reads so
    assert graph["Batch"].startswith("fixed at 2: 2 images (or tiles) per run")
    assert graph["Input size"] == "fixed 32x32"
    assert graph["Input"] == "args_0 [2, 32, 32, 3], float32, 3 channels"
    contradicts = loaded.card.output == "probability"  # the graph ends with a Conv: logits
    assert ("The card says the output is" in texts(at.warning)) == contradicts

    go(at, "segment")  # a label mask: scored per class, like the engine
    upload_image(at, png(RGB_IMAGE), label_png(LABELS))
    assert_clean(at)
    assert at.selectbox(key="class_index").options == ["0 · background", "1 · road", "2 · car"]
    probs = Segmenter(loaded).predict_classes(read_raw(png(RGB_IMAGE)))
    acc = ClassAccumulator(3, CLASSES)
    acc.add(np.argmax(probs, axis=-1), LABELS, "road.png")
    legend = [t.value for t in at.table if "colour" in t.value.columns][0]
    assert legend["IoU"].tolist() == pytest.approx(
        [c["iou"] for c in acc.result().per_class()], abs=1e-9)

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, shift in enumerate((0, 5, 11)):  # 3 images: a batch of 2, then 1 padded
            zf.writestr(f"images/r{i}.png", png(np.roll(RGB_IMAGE, shift, axis=1)))
            zf.writestr(f"masks/r{i}.png", label_png(np.roll(LABELS, shift, axis=1)))
    with zipfile.ZipFile(buf) as zf:
        zf.extractall(tmp_path / "set")
    want = evaluate_classes(Segmenter(loaded), find_pairs(tmp_path / "set"))
    go(at, "evaluate")
    at.radio(key="eval_source").set_value("Upload a .zip").run()
    at.file_uploader(key="eval_zip").set_value(("set.zip", buf.getvalue(), "application/zip"))
    at.run()
    at.button(key="eval_run").click().run()
    assert_clean(at)
    assert metric(at, "Mean IoU over classes") == f"{want.mean_iou:.3f}"

    for page in ("filters", "activations"):
        go(at, page)
        assert_clean(at)
    box = at.selectbox(key="act_layer")
    assert len(box.options) > 5


@pytest.mark.slow  # ~6-8 s: every page, an upload vetted in a child
def test_onnx_models_in_the_trusted_folder_open_and_keep_the_keras_backend_choice(
        onnx_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNET_TRUSTED_MODELS_DIR", str(onnx_models))
    at = open_app()
    box = at.sidebar.selectbox(key="model_choice")
    onnx_labels = [o for o in box.options if o.endswith("(trusted)")]
    assert sorted(onnx_labels) == sorted(f"{p.stem} (trusted)"
                                         for p in onnx_models.glob("*.onnx"))
    at.sidebar.selectbox(key="backend").set_value("tensorflow").run()
    for label in onnx_labels:  # gray, 4-channel, NCHW / NHWC, fixed / dynamic, every head
        at.sidebar.selectbox(key="model_choice").set_value(label).run()
        assert_clean(at)
        assert not any(i.value.startswith("**Trusted model**") for i in at.info)
        assert onnx_table(at)["Runs on"].startswith("ONNX Runtime")
        go(at, "segment")
        assert_clean(at)
        assert view(at)["payload"]["metrics"]
        go(at, "model")
    at.sidebar.selectbox(key="model_choice").set_value("tiny").run()
    assert_clean(at)
    assert at.sidebar.selectbox(key="backend").value == "tensorflow"


@pytest.mark.slow  # two uploads vetted in a child process, ~7 s
def test_crafted_onnx_uploads_are_refused_in_one_line(tmp_path: Path) -> None:
    """An uploaded graph that reads weights from outside its folder, or runs a custom
    operator, is refused by the vetting child with one line; the server never loads it."""
    from onnx import TensorProto, helper, numpy_helper
    from onnx_zoo import nchw_unet, save

    escape = nchw_unet(1, 1, "sigmoid", seed=2)
    t = next(i for i in escape.graph.initializer if i.name == "enc1.weight")
    size = len(numpy_helper.to_array(t).tobytes())
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../../../etc/hostname"), ("offset", "0"),
                 ("length", str(size))):
        t.external_data.add(key=k, value=v)
    custom = nchw_unet(1, 1, "logits", seed=3)
    custom.graph.node.append(helper.make_node("Backdoor", ["output"], ["evil"],
                                              domain="com.example.evil", name="evil"))
    custom.opset_import.append(helper.make_opsetid("com.example.evil", 1))
    at = open_app()
    for model, words in ((escape, "outside the model's own folder"),
                         (custom, "com.example.evil")):
        path = save(model, tmp_path / f"crafted_{words.split()[0]}.onnx")
        upload_model(at, path)
        assert_clean(at)
        errors = [md(e.value) for e in at.sidebar.error]
        assert len(errors) == 1 and "\n" not in errors[0], errors
        assert errors[0].startswith(path.name) and "refused" in errors[0], errors
        assert words in errors[0], errors
        assert at.title[0].value == "Model"  # no model loaded: the page asks for one
