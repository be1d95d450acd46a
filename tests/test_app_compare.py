"""The Compare page with Streamlit's AppTest (no browser), on tiny untrained U-Nets.

Models folder: ``tiny.keras`` (model A, card threshold 0.50, min area 0), ``tinyb.keras`` (the
same network with its output bias raised by 0.4: larger masks; card threshold 0.36, min area 10)
and the 3-class ``three.keras`` of ``own_models`` (other classes: refused). Data: the bundled
seismic samples (6 images with masks). Backend: TensorFlow (no ONNX export to build). Every
number on the page is checked against a direct :mod:`unet_core.compare` call with the
thresholds the page shows.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "Home.py"
TIMEOUT = 120
SAMPLES = ROOT / "assets" / "seismic"


@pytest.fixture(scope="session")
def cmp_models_dir(tiny_model_path: Path, own_models: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    from unet_core.model import ModelCard

    folder = tmp_path_factory.mktemp("cmp_models")
    shutil.copy(tiny_model_path, folder / "tiny.keras")
    ModelCard(name="tiny", domain="seismic", description="tiny test U-Net", foreground="salt",
              multiple_of=4, min_size=32, threshold=0.5).save(folder / "tiny.json")
    model = keras.models.load_model(tiny_model_path)
    last = [layer for layer in model.layers if layer.get_weights()][-1]
    kernel, bias = last.get_weights()
    last.set_weights([kernel, bias + 0.4])
    model.save(folder / "tinyb.keras")
    ModelCard(name="tinyb", domain="seismic", description="tiny U-Net, raised bias",
              foreground="salt", multiple_of=4, min_size=32, threshold=0.36,
              min_area=10).save(folder / "tinyb.json")
    for name in ("three.keras", "three.json"):
        shutil.copy(own_models / name, folder / name)
    return folder


@pytest.fixture(autouse=True)
def app_env(cmp_models_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UNET_MODELS_DIR", str(cmp_models_dir))
    monkeypatch.setenv("UNET_DEFAULT_MODEL", "tiny")
    monkeypatch.setenv("UNET_DATA_ROOT", str(ROOT / "assets"))
    monkeypatch.setenv("UNET_UPLOAD_DIR", str(tmp_path / "uploads"))
    # Keras models on TensorFlow, in the app and in the direct calls: no ONNX export to build.
    monkeypatch.setenv("UNET_BACKEND", "tensorflow")


def go(at: AppTest, page: str) -> AppTest:
    """Switch ``at`` to the page with url path ``page`` and run it."""
    url = "" if page == "model" else page
    at._page_hash = next(h for h, info in at._registered_pages.items()
                         if info.get("url_pathname") in (page, url))
    return at.run()


def open_compare(model_b: str | None = None, mode: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    go(at, "compare")
    if model_b is not None:
        at.selectbox(key="cmp_model_b").set_value(model_b).run()
    if mode is not None:
        at.radio(key="cmp_mode").set_value(mode).run()
    return at


def md(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", str(text))


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [md(e.value) for e in at.error]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def captions(at: AppTest) -> str:
    return "\n".join(md(c.value).replace("**", "") for c in at.caption)


def image_captions(at: AppTest) -> list[str]:
    return [img.caption for i in at.get("image") for img in i.proto.imgs]


def segmenter(folder: Path, name: str) -> Any:
    from unet_core.inference import Segmenter
    from unet_core.model import load_model

    return Segmenter(load_model(folder / f"{name}.keras"))


def want_table(comparison: Any) -> list[list[str]]:
    """The rows the page should show for ``comparison`` (4 decimals, the page's format)."""
    from unet_core.compare import METRICS

    def signed(v: float) -> str:
        return "0.0000" if v == 0 else f"{v:+.4f}"

    out = []
    for m in METRICS:
        s = comparison.metrics[m]
        out.append([f"{s.a:.4f}", f"{s.b:.4f}", signed(s.delta),
                    f"[{signed(s.ci95[0])}, {signed(s.ci95[1])}]", f"{s.p_value:.3g}"])
    return out


def shown_table(at: AppTest) -> list[list[str]]:
    table = at.table[0].value
    assert list(table.columns) == ["mean A", "mean B", "mean B − A", "95 % CI", "Wilcoxon p"]
    assert list(table.index) == ["IoU", "Dice", "TGS score"]
    return [list(map(str, row)) for row in table.to_numpy()]


def run_compare(at: AppTest) -> AppTest:
    at.button(key="cmp_run").click().run()
    assert_clean(at)
    return at


# --------------------------------------------------------------------------- tests


def test_page_draws_with_both_cards_and_refuses_other_classes() -> None:
    at = open_compare()
    assert_clean(at)
    assert at.title[0].value == "Compare"
    # B first offered: another model with A's classes (not the 3-class one listed before it)
    assert at.selectbox(key="cmp_model_b").value == "tinyb"
    assert [o for o in at.selectbox(key="cmp_model_b").options] == [
        "tiny (= model A)", "three", "tinyb", "Upload a model…"]
    text = captions(at)
    assert "A tiny: salt at 0.50, min area 0 px" in text, text
    assert "B tinyb: salt at 0.36, min area 10 px" in text, text
    assert "Each model at its own card's threshold" in text
    assert at.radio(key="cmp_mode").options == ["One image", "A data set"]

    at.selectbox(key="cmp_model_b").set_value("three").run()
    assert not at.exception
    errors = [md(e.value) for e in at.error]
    assert len(errors) == 1 and "different classes" in errors[0], errors
    assert "three" in errors[0] and "\n" not in errors[0]
    assert not at.radio and not at.table and not at.get("image")  # nothing else drawn


def test_model_against_itself_gives_exactly_zero() -> None:
    at = open_compare("tiny", "A data set")
    assert at.selectbox(key="eval_sample_set").value == "seismic"
    run_compare(at)
    rows = shown_table(at)
    for row in rows:
        assert row[2] == "0.0000" and row[3] == "[0.0000, 0.0000]" and row[4] == "1", row
        assert row[0] == row[1]
    assert (metric(at, "B better (IoU)"), metric(at, "Ties"), metric(at, "A better (IoU)")) \
        == ("0", "6", "0")
    assert "**No difference on IoU: the two models give the same score on every image**." \
        in [md(m.value) for m in at.markdown]


def test_table_is_compare_pairs_at_the_thresholds_shown(
        cmp_models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.views import compare as page
    from unet_core.compare import compare_pairs
    from unet_core.io import find_pairs

    runs: list[float | None] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        runs.append(kwargs.get("threshold"))
        return compare_pairs(*args, **kwargs)

    monkeypatch.setattr(page, "compare_pairs", counting)
    pairs = find_pairs(SAMPLES, require_masks=True)
    seg_a, seg_b = segmenter(cmp_models_dir, "tiny"), segmenter(cmp_models_dir, "tinyb")

    at = open_compare(mode="A data set")
    run_compare(at)
    want = compare_pairs(seg_a, seg_b, pairs, seed=0)
    assert (want.threshold_a, want.threshold_b, want.min_area_a, want.min_area_b) \
        == (0.5, 0.36, 0, 10)
    assert shown_table(at) == want_table(want)
    assert (metric(at, "B better (IoU)"), metric(at, "Ties"), metric(at, "A better (IoU)")) \
        == (str(want.wins), str(want.ties), str(want.losses))
    opens = [b for b in at.button if b.label == "Open in Segment"]
    assert len(opens) == 6
    assert len(at.get("plotly_chart")) == 2

    # A page switch and back: the same table, no new comparison.
    go(at, "evaluate")
    go(at, "compare")
    assert shown_table(at) == want_table(want) and runs == [None]

    # One common threshold: the table waits for the button, then is compare_pairs at 0.30.
    at.checkbox(key="cmp_common").check().run()
    at.slider(key="cmp_threshold").set_value(0.3).run()
    assert not at.table
    assert "B tinyb: salt at 0.30, min area 10 px" in captions(at)
    run_compare(at)
    common = compare_pairs(seg_a, seg_b, pairs, threshold=0.3, seed=0)
    assert (common.threshold_a, common.threshold_b) == (0.3, 0.3)
    assert shown_table(at) == want_table(common) != want_table(want)
    assert runs == [None, 0.3]

    opens = [b for b in at.button if b.label == "Open in Segment"]
    opens[0].click().run()
    assert_clean(at)
    assert at.title[0].value == "Segment"
    assert at.radio(key="image_source").value == "Recent images"


def test_one_image_shows_both_masks_and_the_disagreement(cmp_models_dir: Path) -> None:
    from unet_core.compare import compare_images
    from unet_core.io import read_mask, read_raw

    at = open_compare(mode="One image")
    assert_clean(at)
    name = at.selectbox(key="sample").value.split("/")[-1]  # "sample:seismic/NAME"
    image = read_raw(SAMPLES / "images" / name)
    truth = read_mask(SAMPLES / "masks" / name)
    probs = [segmenter(cmp_models_dir, m).predict_classes(image)[..., 0]
             for m in ("tiny", "tinyb")]
    got = compare_images(probs[0], probs[1], truth, threshold_a=0.5, threshold_b=0.36,
                         min_area_a=0, min_area_b=10)
    caps = image_captions(at)
    assert "A · tiny at 0.50" in caps and "B · tinyb at 0.36" in caps, caps
    assert any(c.startswith("Where they disagree") for c in caps)
    assert metric(at, "Pixels where they disagree") == f"{got['disagree_fraction']:.2%}"
    assert got["disagree_fraction"] > 0  # the raised bias grows B's masks
    scores = at.table[0].value
    assert list(scores.index) == ["A · tiny", "B · tinyb", "B − A"]
    for row, side in (("A · tiny", "a"), ("B · tinyb", "b")):
        want = got[f"metrics_{side}"]
        assert scores.loc[row, "IoU"] == f"{want['iou']:.3f}"
        assert scores.loc[row, "Dice"] == f"{want['dice']:.3f}"
        assert scores.loc[row, "foreground px"] == f"{got[f'area_{side}']:,}"
    assert scores.loc["B − A", "IoU"] == \
        f"{got['metrics_b']['iou'] - got['metrics_a']['iou']:+.3f}"
    assert "orange = only A · blue = only B · light gray = both" in captions(at)

    at.checkbox(key="cmp_common").check().run()  # what is shown is what is used
    at.slider(key="cmp_threshold").set_value(0.5).run()
    same = compare_images(probs[0], probs[1], truth, threshold_a=0.5, threshold_b=0.5,
                          min_area_a=0, min_area_b=10)
    assert "B · tinyb at 0.50" in image_captions(at)
    assert metric(at, "Pixels where they disagree") == f"{same['disagree_fraction']:.2%}"
    assert np.isfinite(same["disagree_fraction"])


@pytest.mark.slow
def test_uploaded_model_b_is_vetted_loaded_with_its_card_and_kept(cmp_models_dir: Path) -> None:
    upload = "Upload a model…"
    at = open_compare(mode="One image")
    at.selectbox(key="cmp_model_b").set_value(upload).run()
    assert not at.get("image") and any("Upload model B" in md(i.value) for i in at.info)
    at.file_uploader(key="cmp_model_upload").set_value(
        ("evil.keras", b"not a zip at all", "application/octet-stream")).run()
    assert not at.exception
    errors = [md(e.value) for e in at.error]
    assert len(errors) == 1 and "evil.keras" in errors[0] and "\n" not in errors[0], errors
    assert not at.get("image")  # nothing compared without a model B

    at.file_uploader(key="cmp_model_upload").set_value(
        [("tinyb.keras", (cmp_models_dir / "tinyb.keras").read_bytes(),
          "application/octet-stream")])
    at.file_uploader(key="cmp_card_upload").set_value(
        ("tinyb.json", (cmp_models_dir / "tinyb.json").read_bytes(), "application/json"))
    at.run()
    assert_clean(at)
    assert "B tinyb (uploaded): salt at 0.36, min area 10 px" in captions(at)
    shown = metric(at, "Pixels where they disagree")
    at.selectbox(key="cmp_model_b").set_value("tinyb").run()  # the same network from the folder
    assert metric(at, "Pixels where they disagree") == shown

    at.selectbox(key="cmp_model_b").set_value(upload).run()
    go(at, "segment")
    go(at, "compare")  # the uploader is empty now: the upload stays model B
    assert_clean(at)
    assert "B tinyb (uploaded): salt at 0.36" in captions(at)
