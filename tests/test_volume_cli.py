"""predict / evaluate on volumes through main([...]): a fake SEG-Y format registered by the
test (cube = .npy bytes), and, when the format modules are there, real SEG-Y and NIfTI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from test_volume import crops as _crops

from unet_core import volume as vol
from unet_core.cli import main
from unet_core.inference import Segmenter
from unet_core.model import load_model
from unet_core.volume import AXES, Volume


def run(capsys, *argv):
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _fake_read(path, **options):
    with open(path, "rb") as f:
        data = np.load(f)
    return Volume(data=data, format="segy", axes=AXES["segy"], source=Path(path),
                  meta={"options": options}, notes={"fake": "read by the test's fake reader"})


def _fake_write(volume, array, path, kind):
    with open(path, "wb") as f:
        np.save(f, np.asarray(array))
    return Path(path)


@pytest.fixture()
def fake_segy(monkeypatch):
    monkeypatch.setitem(vol.READERS, "segy", _fake_read)
    monkeypatch.setitem(vol.WRITERS, "segy", _fake_write)


def cube_file(path: Path, data: np.ndarray) -> Path:
    with open(path, "wb") as f:
        np.save(f, data)
    return path


def blob_cube(shape=(3, 36, 40), seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    il, xl, z = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]]
    truth = ((xl - 18) ** 2 + (z - 20) ** 2) < 80
    data = (truth * 2.0 - 1.0 + rng.normal(0, 0.3, shape)).astype(np.float32)
    return data, truth.astype(np.float32)


def test_predict_volume_writes_prob_and_mask(capsys, tiny_model_path, tmp_path, fake_segy):
    data, _ = blob_cube()
    src = cube_file(tmp_path / "cube.sgy", data)
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", "--model", str(tiny_model_path), str(src),
                       "--axis", "crossline", "--out", str(out), "--threshold", "0.4",
                       "--inline-byte", "9")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["cube_mask.sgy", "cube_prob.sgy"]
    with open(out / "cube_prob.sgy", "rb") as f:
        prob = np.load(f)
    with open(out / "cube_mask.sgy", "rb") as f:
        mask = np.load(f)
    assert prob.shape == data.shape and prob.dtype == np.float32
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(mask, (prob > 0.4).astype(np.uint8))
    # the same numbers through the image path
    seg = Segmenter(load_model(tiny_model_path))
    v = _fake_read(src)
    pv = Volume(prob, "segy", AXES["segy"], src)
    for i in range(v.n_slices("crossline")):
        np.testing.assert_allclose(pv.slice("crossline", i),
                                   seg.predict_proba(v.slice("crossline", i)), atol=1e-6)
    assert "cube_prob.sgy" in err and "36 crossline slices of 40x3" in err


def test_predict_volume_failure_leaves_nothing(capsys, tiny_model_path, tmp_path, fake_segy,
                                               monkeypatch):
    calls = []

    def broken(volume, array, path, kind):
        calls.append(kind)
        Path(path).write_bytes(b"half")
        if kind == "mask":
            raise OSError(28, "No space left on device")
        return Path(path)

    monkeypatch.setitem(vol.WRITERS, "segy", broken)
    src = cube_file(tmp_path / "cube.sgy", blob_cube()[0])
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", "--model", str(tiny_model_path), str(src),
                       "--out", str(out))
    assert code == 2 and calls == ["prob", "mask"]
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0]
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("argv,message", [
    (["--axis", "axial"], "accepted: inline, crossline, depth"),
    (["--time-index", "1"], "time index is for 4-D NIfTI"),
    (["--window", "40,0"], "WIDTH > 0"),
    (["--inline-byte", "0"], "byte position 1..237"),
    (["--all-classes"], "--all-classes is for images"),
])
def test_predict_volume_bad_options(capsys, tiny_model_path, tmp_path, fake_segy, argv,
                                    message):
    src = cube_file(tmp_path / "cube.sgy", blob_cube()[0])
    with pytest.raises(SystemExit) if "WIDTH" in message or "1..237" in message else \
            _nullcontext():
        code, _, err = run(capsys, "predict", "--model", str(tiny_model_path), str(src),
                           "--out", str(tmp_path / "o"), *argv)
        assert code == 2 and message in err and err.count("\n") == 1
    if "WIDTH" in message or "1..237" in message:
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_predict_volume_options_refused_for_images(capsys, tiny_model_path, tmp_path):
    img = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    code, _, err = run(capsys, "predict", "--model", str(tiny_model_path), str(img),
                       "--axis", "inline", "--out", str(tmp_path / "o"))
    assert code == 2 and "--axis is for a volume input" in err


def test_predict_two_volumes_refused(capsys, tiny_model_path, tmp_path, fake_segy):
    a = cube_file(tmp_path / "a.sgy", blob_cube()[0])
    code, _, err = run(capsys, "predict", "--model", str(tiny_model_path), str(a), str(a),
                       "--out", str(tmp_path / "o"))
    assert code == 2 and "one volume" in err


def test_predict_volume_softmax_model_writes_labels(capsys, own_models, tmp_path, fake_segy):
    data, _ = blob_cube((2, 20, 24))
    src = cube_file(tmp_path / "c.sgy", data)
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", "--model", str(own_models / "three.keras"), str(src),
                       "--out", str(out), "--axis", "depth")
    assert code == 0, err
    with open(out / "c_prob.sgy", "rb") as f:
        prob = np.load(f)
    with open(out / "c_mask.sgy", "rb") as f:
        labels = np.load(f)
    seg = Segmenter(load_model(own_models / "three.keras"))
    v = _fake_read(src)
    for i in (0, 23):
        classes = seg.predict_classes(v.slice("depth", i))
        np.testing.assert_allclose(prob[:, :, i], classes[..., seg.card.default_class],
                                   atol=1e-6)
        np.testing.assert_array_equal(labels[:, :, i], np.argmax(classes, -1))
    assert labels.dtype == np.uint8 and "argmax labels" in err


def test_evaluate_volume(capsys, tiny_model_path, tmp_path, fake_segy):
    data, truth = blob_cube()
    src = cube_file(tmp_path / "cube.sgy", data)
    lab = cube_file(tmp_path / "cube_truth.sgy", truth)
    code, out, err = run(capsys, "evaluate", "--model", str(tiny_model_path), "--data",
                         str(src), "--labels-volume", str(lab), "--axis", "inline", "--json",
                         "--per-image", str(tmp_path / "slices.csv"))
    assert code == 0, err
    r = json.loads(out)
    assert r["n_slices"] == 3 and len(r["slices"]) == 3 and r["axis"] == "inline"
    seg = Segmenter(load_model(tiny_model_path))
    v = _fake_read(src)
    from unet_core.metrics import dice, iou, threshold_mask

    preds = [threshold_mask(seg.predict_proba(v.slice("inline", i)), seg.card.threshold,
                            seg.card.min_area) for i in range(3)]
    truths = [np.swapaxes(truth[i], 0, 1) > 0 for i in range(3)]  # inline: depth down
    for i in range(3):
        assert r["slices"][i]["iou"] == pytest.approx(iou(preds[i], truths[i]))
        assert r["slices"][i]["dice"] == pytest.approx(dice(preds[i], truths[i]))
    assert r["iou"] == pytest.approx(iou(np.stack(preds), np.stack(truths)))
    assert (tmp_path / "slices.csv").read_text().startswith("index,iou,dice")
    code, out, _ = run(capsys, "evaluate", "--model", str(tiny_model_path), "--data",
                       str(src), "--labels-volume", str(lab))
    assert code == 0 and "whole volume (3-D): IoU" in out and "mean over 3 slices" in out


def test_evaluate_volume_bad_input(capsys, tiny_model_path, tmp_path, fake_segy):
    data, truth = blob_cube()
    src = cube_file(tmp_path / "cube.sgy", data)
    other = cube_file(tmp_path / "small.sgy", truth[:, :10])
    code, _, err = run(capsys, "evaluate", "--model", str(tiny_model_path), "--data",
                       str(src), "--labels-volume", str(other))
    assert code == 2 and "same geometry" in err and err.count("\n") == 1
    code, _, err = run(capsys, "evaluate", "--model", str(tiny_model_path), "--data",
                       str(src))
    assert code == 2 and "--labels-volume" in err
    code, _, err = run(capsys, "evaluate", "--model", str(tiny_model_path), "--data",
                       str(src), "--labels-volume", str(src), "--labels")
    assert code == 2 and "--labels is for folders" in err
    code, _, err = run(capsys, "evaluate", "--model", str(tiny_model_path), "--data",
                       str(tmp_path), "--labels-volume", str(src))
    assert code == 2 and "not one" in err


# ------------------------------------------------------------------ real formats (D/E modules)

def _fill(fmt: str, axis: str, images: list[np.ndarray]) -> Volume:
    """A volume of ``fmt`` whose displayed slices along ``axis`` are ``images``."""
    a = AXES[fmt].index(axis)
    rest = [i for i in range(3) if i != a]
    h, w = images[0].shape
    for hw in ((h, w), (w, h)):
        shape = [0, 0, 0]
        shape[a], shape[rest[0]], shape[rest[1]] = len(images), *hw
        v = Volume(np.zeros(shape, images[0].dtype), fmt, AXES[fmt], Path("x"))
        if v.slice_shape(axis) == (h, w):
            break
    for i, im in enumerate(images):
        v.put_slice(v.data, axis, i, im)
    return v


def test_real_segy_cube_from_crops(capsys, tiny_model_path, tmp_path):
    pytest.importorskip("segyio")
    segy = pytest.importorskip("unet_core.segy")
    images = [c.astype(np.float32) for c in _crops(4, 40, 36, seed=5)]
    cube = _fill("segy", "inline", images).data  # (4 inlines, 36 crosslines, 40 samples)
    src = segy.write_cube(tmp_path / "salt.sgy", cube, first_inline=100, first_crossline=7)
    v = vol.read_volume(src)
    seg = Segmenter(load_model(tiny_model_path))
    from unet_core.volume_predict import segment_volume

    # a unit card (signed amplitudes have no full scale): the cube's one clip, fed as unit
    probs = segment_volume(seg, v, "inline", batch_size=3)
    pv = Volume(probs, "segy", AXES["segy"], src)
    for i, im in enumerate(images):
        np.testing.assert_array_equal(v.slice("inline", i), im)
        scaled = segy.scale_amplitudes(im, v.stats)
        np.testing.assert_allclose(pv.slice("inline", i), seg.predict_proba(scaled), atol=1e-6)
    # a minmax card: each slice as read, the card's scaling per slice (the image path exactly)
    mm = Segmenter(load_model(tiny_model_path))
    mm.card = dataclasses.replace(mm.card, normalisation="minmax")
    got = Volume(segment_volume(mm, v, "inline"), "segy", AXES["segy"], src)
    for i, im in enumerate(images):
        np.testing.assert_allclose(got.slice("inline", i), mm.predict_proba(im), atol=1e-6)
    # a percentile card: every slice scaled with the cube's one clip, then fed as unit
    pct = Segmenter(load_model(tiny_model_path))
    pct.card = dataclasses.replace(pct.card, normalisation="percentile")
    got = Volume(segment_volume(pct, v, "depth"), "segy", AXES["segy"], src)
    for i in (0, 17, 39):
        scaled = segy.scale_amplitudes(v.slice("depth", i), v.stats)
        np.testing.assert_allclose(got.slice("depth", i), seg.predict_proba(scaled), atol=1e-6)
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", "--model", str(tiny_model_path), str(src), "--out",
                       str(out), "--axis", "inline")
    assert code == 0, err
    assert "volume input: slices scaled with the cube's one amplitude clip" in err
    assert "(unit card), fed as unit" in err
    assert sorted(p.name for p in out.iterdir()) == ["salt_mask.sgy", "salt_prob.sgy"]
    back = vol.read_volume(out / "salt_prob.sgy")
    assert back.meta["inlines"] == v.meta["inlines"] == [100, 101, 102, 103]
    assert back.meta["crosslines"] == v.meta["crosslines"]
    assert back.meta["n_samples"] == 40
    np.testing.assert_allclose(back.data, probs, atol=1e-6)
    mask = vol.read_volume(out / "salt_mask.sgy").data
    np.testing.assert_array_equal(mask, (probs > seg.card.threshold).astype(np.float32))
    # evaluate the cube against its own thresholded prediction: a perfect score
    code, txt, err = run(capsys, "evaluate", "--model", str(tiny_model_path), "--data", str(src),
                         "--labels-volume", str(out / "salt_mask.sgy"), "--json")
    assert code == 0, err
    r = json.loads(txt)
    assert r["volume_input"].startswith("slices scaled with the cube's one amplitude clip")
    assert r["iou"] == 1.0 and r["dice"] == 1.0 and r["n_slices"] == 4


def test_real_nifti_from_crops(capsys, tiny_model_path, tmp_path):
    nib = pytest.importorskip("nibabel")
    pytest.importorskip("unet_core.nifti")
    images = _crops(3, 40, 36, seed=7)
    canonical = _fill("nifti", "axial", images).data  # RAS+ (x, y, z)
    affine = np.diag([-0.8, 0.9, 2.5, 1.0])  # stored LAS: x flipped
    affine[:3, 3] = [30.0, -20.0, 5.0]
    src = tmp_path / "head.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(canonical[::-1]), affine), str(src))
    v = vol.read_volume(src)
    assert v.format == "nifti" and v.shape == canonical.shape
    seg = Segmenter(load_model(tiny_model_path))
    from unet_core.volume_predict import segment_volume

    probs = segment_volume(seg, v, "axial")
    pv = Volume(probs, "nifti", AXES["nifti"], src)
    for i, im in enumerate(images):
        np.testing.assert_array_equal(v.slice("axial", i), im)
        same = im.astype(v.data.dtype)  # the same numbers as the reader gives them
        np.testing.assert_allclose(pv.slice("axial", i), seg.predict_proba(same), atol=1e-6)
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", "--model", str(tiny_model_path), str(src), "--out",
                       str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["head_mask.nii.gz", "head_prob.nii.gz"]
    img = nib.load(str(out / "head_prob.nii.gz"))
    np.testing.assert_allclose(img.affine, affine)
    assert img.shape == canonical.shape
    np.testing.assert_allclose(np.asarray(img.dataobj), probs[::-1], atol=1e-6)
    m = nib.load(str(out / "head_mask.nii.gz"))
    assert np.asarray(m.dataobj).dtype == np.uint8


def test_real_dicom_file_predicts_to_nifti(capsys, tiny_model_path, tmp_path):
    pytest.importorskip("unet_core.dicom")
    nib = pytest.importorskip("nibabel")
    from pydicom.data import get_testdata_file

    src = Path(get_testdata_file("CT_small.dcm", download=False))
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", "--model", str(tiny_model_path), str(src), "--out",
                       str(out), "--window", "40,400")
    assert code == 0, err
    assert "volume input: slices windowed to 0..1 (centre 40, width 400)" in err
    assert sorted(p.name for p in out.iterdir()) == ["CT_small_mask.nii.gz",
                                                       "CT_small_prob.nii.gz"]
    v = vol.read_volume(src, window=(40, 400))
    prob = nib.load(str(out / "CT_small_prob.nii.gz"))
    assert int(np.prod(prob.shape)) == int(np.prod(v.shape))
    # the model saw the windowed slice (float [0, 1]), as a viewer would export it
    from unet_core.dicom import windowed
    from unet_core.volume_predict import segment_volume

    seg = Segmenter(load_model(tiny_model_path))
    probs = segment_volume(seg, v, "slice")
    win = windowed(v.slice("slice", 0), v.stats["window"])
    assert win.min() >= 0.0 and win.max() <= 1.0
    np.testing.assert_allclose(probs[0], seg.predict_proba(win), atol=1e-6)
    other = segment_volume(seg, vol.read_volume(src, window=(500, 100)), "slice")
    assert not np.allclose(other, probs, atol=1e-3)  # the window reaches the model


def test_nuclei_nifti_scores_like_its_images(capsys, tmp_path):
    """A NIfTI stack of generated nuclei fields (unet_core.synthetic) with its mask volume:
    the bundled nuclei model scores the volume as it scores the same fields as images."""
    nib = pytest.importorskip("nibabel")
    pytest.importorskip("unet_core.nifti")
    from unet_core.metrics import iou, threshold_mask
    from unet_core.synthetic import fluorescence_nuclei

    model = Path(__file__).resolve().parent.parent / "models" / "nuclei.keras"
    if not model.is_file():
        pytest.skip("the bundled model models/nuclei.keras is absent")
    pairs = [fluorescence_nuclei((128, 128), seed=s) for s in (11, 12)]
    images = [np.round(np.clip(im, 0, 1) * 255).astype(np.uint8) for im, _ in pairs]
    masks = [m.astype(np.uint8) for _, m in pairs]
    canonical = _fill("nifti", "axial", images).data
    labels = _fill("nifti", "axial", masks).data
    nib.save(nib.Nifti1Image(canonical, np.eye(4)), str(tmp_path / "cells.nii.gz"))
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(tmp_path / "cells_mask.nii.gz"))
    code, out, err = run(capsys, "evaluate", "--model", str(model), "--data",
                         str(tmp_path / "cells.nii.gz"), "--labels-volume",
                         str(tmp_path / "cells_mask.nii.gz"), "--axis", "axial", "--json")
    assert code == 0, err
    r = json.loads(out)
    loaded = load_model(model)
    seg = Segmenter(loaded)
    t = loaded.card.threshold
    want = [iou(threshold_mask(seg.predict_proba(im), t, loaded.card.min_area), m > 0)
            for im, m in zip(images, masks, strict=True)]
    got = [row["iou"] for row in r["slices"]]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert min(got) > 0.5  # the model finds the generated nuclei in the volume too
