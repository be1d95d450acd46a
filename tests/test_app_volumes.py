"""The dashboard's Volume image source (AppTest, tiny U-Net): the bundled SEG-Y cube browsed
slice by slice, the numbers shown equal to the engine's for that slice, the whole volume
segmented with downloads in the input's format, and one-line errors on a bad volume."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from test_app import (  # noqa: F401  (app_env: an autouse fixture)
    APP,
    ROOT,
    TIMEOUT,
    app_env,
    app_models_dir,
    assert_clean,
    go,
    md,
    shown,
)

CUBE = ROOT / "assets" / "volumes" / "salt_cube.sgy"
LABELS = ROOT / "assets" / "volumes" / "salt_cube_mask.sgy"


def open_volume(page: str = "segment") -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    go(at, page)
    at.radio(key="image_source").set_value("Volume").run()
    assert_clean(at)
    return at


def engine_scores(models: Path, at: AppTest, axis: str, index: int) -> dict[str, float]:
    """IoU/Dice/precision/recall of slice ``index`` along ``axis`` computed by the engine
    (segment_volume over the whole cube, thresholded as the page does)."""
    from unet_core.inference import Segmenter
    from unet_core.metrics import confusion_counts, dice, iou, threshold_mask
    from unet_core.model import load_model
    from unet_core.volume import read_volume
    from unet_core.volume_predict import segment_volume

    loaded = load_model(models / "tiny.keras")
    backend = at.selectbox(key="backend").value
    seg = Segmenter(loaded, tta=bool(at.checkbox(key="tta").value), backend=backend)
    vol, lab = read_volume(CUBE), read_volume(LABELS)
    probs = segment_volume(seg, vol, axis, padding_mode=at.selectbox(key="padding").value)
    prob, truth = _cut(vol, probs, axis, index), lab.slice(axis, index) > 0
    pred = threshold_mask(prob, 0.5, int(at.number_input(key="min_area").value))
    tp, fp, fn, _ = confusion_counts(pred, truth)
    return {"iou": iou(pred, truth), "dice": dice(pred, truth),
            "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 1.0}


def _cut(vol, probs: np.ndarray, axis: str, index: int) -> np.ndarray:
    """Slice ``index`` of a result cube as shown (the volume's display transform)."""
    return dataclasses.replace(vol, data=probs).slice(axis, index)


def test_bundled_cube_slices_match_the_engine(request: pytest.FixtureRequest) -> None:
    models = request.getfixturevalue("app_models_dir")
    at = open_volume()
    assert at.selectbox(key="vol_pick").value == str(CUBE)
    assert at.radio(key="vol_axis").options == ["inline", "crossline", "depth"]
    assert at.slider(key="vol_slice_inline").value == 12  # the middle of 24 inlines
    first = shown(at)
    want = engine_scores(models, at, "inline", 12)
    for name, value in want.items():
        assert first[name] == pytest.approx(value, abs=1e-9), name
    # another axis and slice: the page follows, still the engine's numbers
    at.radio(key="vol_axis").set_value("depth").run()
    at.slider(key="vol_slice_depth").set_value(70).run()
    assert_clean(at)
    later = shown(at)
    want = engine_scores(models, at, "depth", 70)
    for name, value in want.items():
        assert later[name] == pytest.approx(value, abs=1e-9), name
    assert later != first
    # the orthogonal preview: the two other cuts, each naming where the slice lies
    assert "Middle cuts inline 12 (left) and crossline 12 (right); red: where depth 70 " \
        "lies." in " ".join(md(c.value) for c in at.caption)
    assert len(at.get("image")) >= 4  # two previews, the input and its probability


def test_whole_volume_offers_downloads_in_the_input_format() -> None:
    from unet_core.volume import read_volume

    at = open_volume()
    at.button(key="vol_run").click().run()
    assert_clean(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Download salt_cube_prob.sgy" in labels and "Download salt_cube_mask.sgy" in labels
    caption = " ".join(md(c.value) for c in at.caption)
    assert "against the label volume (3-D): IoU" in caption
    out = {p.name: p for p in Path(at.session_state["vol_outputs"]["paths"][0]).parent.iterdir()}
    assert set(out) == {"salt_cube_prob.sgy", "salt_cube_mask.sgy"}  # nothing half-written
    prob = read_volume(out["salt_cube_prob.sgy"])
    mask = read_volume(out["salt_cube_mask.sgy"])
    assert prob.shape == mask.shape == read_volume(CUBE).shape
    assert float(prob.data.min()) >= 0.0 and float(prob.data.max()) <= 1.0
    assert set(np.unique(mask.data)) <= {0.0, 1.0}


def test_activations_show_the_slice() -> None:
    at = open_volume("activations")
    at.slider(key="vol_slice_inline").set_value(3).run()
    assert_clean(at)
    assert at.session_state["image_key"].startswith("volume:")
    assert at.session_state["image_key"].split(":")[2:4] == ["inline", "3"]


def test_truncated_segy_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "cut.sgy").write_bytes(CUBE.read_bytes()[:5000])
    monkeypatch.setenv("UNET_DATA_ROOT", str(root))
    at = open_volume()
    at.selectbox(key="vol_pick").set_value(str(root / "cut.sgy")).run()
    assert_clean(at)
    errors = [md(e.value) for e in at.error]
    assert errors and all("\n" not in e for e in errors)
    assert any("cut.sgy" in e for e in errors), errors
    assert not at.get("bidi_component")  # no slice shown


def test_percentile_card_scales_slices_like_segment_volume(request: pytest.FixtureRequest
                                                           ) -> None:
    """A percentile model on a SEG-Y cube: the page's slice (scaled by the cube's clip, card
    'unit') gives segment_volume's probabilities for that slice."""
    from app import engine, sources, volumes
    from unet_core.inference import Segmenter
    from unet_core.model import load_model
    from unet_core.volume import read_volume
    from unet_core.volume_predict import segment_volume

    loaded = load_model(request.getfixturevalue("app_models_dir") / "tiny.keras")
    loaded = dataclasses.replace(loaded, card=dataclasses.replace(
        loaded.card, normalisation="percentile"))
    bundle = engine.ModelBundle("tiny-pct", loaded, "tiny")
    vol = read_volume(CUBE)
    ref = volumes.VolumeRef(str(CUBE), "cube-sha")
    item = volumes.slice_item(ref, vol, None, loaded.card, "crossline", 5)
    assert item.key.endswith(":unit")
    used = volumes.bundle_for(item, bundle)
    assert used.card.normalisation == "unit"
    image = sources.decode_image(item)
    assert image.dtype == np.float32 and image.min() >= 0.0 and image.max() <= 1.0
    got = engine.class_probabilities(used, item, image, "reflect", False, "tensorflow")[..., 0]
    want = segment_volume(Segmenter(loaded, tta=False, backend="tensorflow"), vol, "crossline",
                          padding_mode="reflect")
    np.testing.assert_allclose(got, _cut(vol, want, "crossline", 5), atol=1e-5)


@pytest.fixture(autouse=True)
def _clean_uploads(tmp_path: Path) -> None:
    yield
    shutil.rmtree(tmp_path / "uploads", ignore_errors=True)


def test_nifti_and_dicom_from_the_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    """A NIfTI volume and a DICOM folder under the data root are listed, read and sliced
    along their own axes (a slice of the tiny model's size is segmented without an error)."""
    import nibabel as nib
    from pydicom.data import get_testdata_file

    root = tmp_path / "data"
    (root / "series").mkdir(parents=True)
    data = np.random.default_rng(0).random((40, 36, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), root / "vol.nii.gz")
    shutil.copy(get_testdata_file("CT_small.dcm", download=False), root / "series" / "a.dcm")
    monkeypatch.setenv("UNET_DATA_ROOT", str(root))
    at = open_volume()
    options = at.selectbox(key="vol_pick").options
    assert "data root / vol.nii.gz" in options and "data root / series" in options
    at.selectbox(key="vol_pick").set_value(str(root / "vol.nii.gz")).run()
    assert_clean(at)
    assert at.radio(key="vol_axis").options == ["sagittal", "coronal", "axial"]
    at.radio(key="vol_axis").set_value("axial").run()
    assert_clean(at)
    assert at.slider(key="vol_slice_axial").value == 4
    assert at.get("bidi_component")  # the slice is segmented and shown
    at.selectbox(key="vol_pick").set_value(str(root / "series")).run()
    assert_clean(at)
    assert at.radio(key="vol_axis").options == ["slice", "row", "column"]
    assert at.session_state["image_key"].startswith("volume:")
