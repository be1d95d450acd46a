"""``--engine ray`` (unet_core.ray_engine): the per-batch stages without Ray, and one small
end-to-end run on a local Ray whose outputs must equal the local engine's byte for byte."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unet_core import cli
from unet_core import ray_engine as re_
from unet_core.errors import UnetCoreError
from unet_core.evaluate import Evaluation, evaluate_pairs
from unet_core.inference import Segmenter
from unet_core.io import find_pairs, load_pair, read_raw, write_mask_png
from unet_core.metrics import threshold_mask
from unet_core.model import load_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def seg(tiny_model_path: Path) -> Segmenter:
    return Segmenter(load_model(tiny_model_path))


@pytest.fixture()
def data(seismic_pairs: Path, tmp_path: Path) -> Path:
    """The 12 seismic pairs plus images/broken.png, a corrupt image (with a mask)."""
    root = tmp_path / "data"
    shutil.copytree(seismic_pairs, root)
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    shutil.copy(next((root / "masks").iterdir()), root / "masks" / "broken.png")
    return root


def _items(root: Path) -> list[dict]:
    return [{"name": p.name, "path": str(p), "stem": p.stem}
            for p in sorted((root / "images").iterdir())]


def _columns(rows: list[dict]) -> dict:
    return {k: [r[k] for r in rows] for k in rows[0]}


# --------------------------------------------------------------------------- without Ray

def test_decode_batch_decodes_like_read_raw_and_names_a_bad_file(data: Path) -> None:
    items = _items(data)
    out = re_.decode_batch(_columns(items))
    assert out["name"] == [i["name"] for i in items]
    bad = out["name"].index("broken.png")
    assert out["image"][bad] == b"" and out["error"][bad].startswith("broken.png")
    for i, item in enumerate(items):
        if i != bad:
            assert out["error"][i] == ""
            np.testing.assert_array_equal(re_.from_npy(out["image"][i]),
                                          read_raw(Path(item["path"])))


def test_decode_pairs_batch_matches_load_pair(seismic_pairs: Path) -> None:
    pairs = find_pairs(seismic_pairs)[:4]
    batch = {"name": [p.name for p in pairs], "image_path": [str(p.image_path) for p in pairs],
             "mask_path": [str(p.mask_path) for p in pairs]}
    out = re_.decode_pairs_batch(batch, invert=True)
    for i, pair in enumerate(pairs):
        img, mask = load_pair(pair, raw=True)
        np.testing.assert_array_equal(re_.from_npy(out["image"][i]), img)
        np.testing.assert_array_equal(re_.from_npy(out["truth"][i]), ~mask)
        assert out["error"][i] == "" and out["soft"][i] is False


def test_model_spec_ships_no_keras_model_and_rebuilds_the_same_segmenter(
        seg: Segmenter, seismic_pairs: Path) -> None:
    data = pickle.dumps(re_.model_spec(seg))
    spec = pickle.loads(data)
    assert seg.backend.name == "onnxruntime" and spec.kind == "onnx"
    assert isinstance(spec.payload, bytes) and spec.payload[:2] == b"\x08\x08"  # ONNX bytes
    # what an actor receives unpickles without Keras or TensorFlow
    code = ("import pickle, sys; pickle.loads(sys.stdin.buffer.read()); "
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True,
                          cwd=Path(__file__).parent.parent, check=True)
    assert done.stdout.strip() == b"[]"
    twin = re_.build_segmenter(spec, threads=1)
    assert twin.backend.name == "onnxruntime" and twin.card == seg.card
    image = read_raw(sorted((seismic_pairs / "images").iterdir())[0])
    np.testing.assert_array_equal(twin.predict_classes(image), seg.predict_classes(image))


def test_predict_batch_per_image_and_batched_equal_the_local_calls(
        seg: Segmenter, data: Path) -> None:
    decoded = re_.decode_batch(_columns(_items(data)))
    bad = decoded["name"].index("broken.png")
    per = re_.predict_batch(seg, decoded, per_image=True, class_index=0, all_classes=True)
    batched = re_.predict_batch(seg, decoded, per_image=False, class_index=0, all_classes=False)
    assert "image" not in per and per["error"][bad] == decoded["error"][bad] != ""
    for i, raw in enumerate(decoded["image"]):
        if i == bad:
            assert per["prob"][i] == batched["prob"][i] == b""
            continue
        want = seg.predict_classes(re_.from_npy(raw))
        np.testing.assert_array_equal(re_.from_npy(per["prob"][i]), want)
        np.testing.assert_array_equal(re_.from_npy(batched["prob"][i]), want[..., 0])


def test_score_batch_and_sweep_from_rows_give_evaluate_pairs_summary(
        seg: Segmenter, seismic_pairs: Path) -> None:
    pairs = find_pairs(seismic_pairs)
    batch = {"name": [p.name for p in pairs], "image_path": [str(p.image_path) for p in pairs],
             "mask_path": [str(p.mask_path) for p in pairs]}
    scored = re_.score_batch(re_.predict_batch(seg, re_.decode_pairs_batch(batch),
                                               per_image=False, class_index=0,
                                               all_classes=False))
    assert all(isinstance(v, int) for v in scored["tp"][0]) and len(scored["tp"][0]) == 101
    rows = [dict(zip(scored, vals, strict=True)) for vals in zip(*scored.values(), strict=True)]
    local = evaluate_pairs(seg, pairs, min_area=7)
    ev = Evaluation(re_.sweep_from_rows(rows[::-1][::-1], min_area=7), local.threshold,
                    local.select_metric, 0, local.class_name)
    assert json.dumps(ev.summary()) == json.dumps(local.summary())
    assert ev.summary()["n"] == 12 and 0.0 <= ev.summary()["iou"] <= 1.0


def test_write_batch_writes_the_local_bytes_atomically(seg: Segmenter, data: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    items = [i for i in _items(data) if i["name"] != "broken.png"][:3]
    pred = re_.predict_batch(seg, re_.decode_batch(_columns(items)), class_index=0)
    rows = re_.write_batch(pred, str(out), class_index=0, threshold=0.5, min_area=0,
                           all_classes=False, multi=False)
    assert rows["error"] == ["", "", ""]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{i['stem']}{s}" for i in items for s in ("_mask.png", "_prob.npy"))
    ref = tmp_path / "ref"
    ref.mkdir()
    probs = seg.predict_classes(read_raw(Path(items[0]["path"])))[..., 0]
    np.save(ref / "p.npy", np.ascontiguousarray(probs, dtype=np.float32))
    write_mask_png(ref / "m.png", threshold_mask(probs, 0.5, 0))
    stem = items[0]["stem"]
    assert (out / f"{stem}_prob.npy").read_bytes() == (ref / "p.npy").read_bytes()
    assert (out / f"{stem}_mask.png").read_bytes() == (ref / "m.png").read_bytes()
    assert rows["foreground_px"][0] == int(threshold_mask(probs, 0.5, 0).sum())


def test_plan_leaves_a_cpu_for_the_reading_tasks() -> None:
    two = re_.plan(2)
    assert (two.workers, two.actor_cpus, two.threads) == (1, 1.0, 1)
    both = re_.plan(2, workers=2)
    assert both.workers * both.actor_cpus + 1 <= 2 and both.actor_cpus == 0.5
    assert re_.plan(16).workers == 15
    with pytest.raises(UnetCoreError, match="too many"):
        re_.plan(2, workers=8)


def test_engine_ray_without_ray_says_how_to_install(monkeypatch, capsys,
                                                    seismic_pairs: Path, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    rc = cli.main(["predict", "--engine", "ray", "--model", str(ROOT / "models" / "salt.keras"),
                   str(seismic_pairs / "images"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pip install -r requirements-ray.txt" in err[0]
    assert not (tmp_path / "o").exists()


def test_ray_options_need_engine_ray(capsys, seismic_pairs: Path) -> None:
    rc = cli.main(["evaluate", "--workers", "2", "--model", str(ROOT / "models" / "salt.keras"),
                   "--data", str(seismic_pairs)])
    assert rc == 2 and "--workers goes with --engine ray" in capsys.readouterr().err


def test_model_spec_of_an_onnx_graph_rebuilds_the_same_predictions(
        onnx_models: Path, seismic_pairs: Path) -> None:
    seg = Segmenter(load_model(onnx_models / "nchw_gray.onnx"))
    spec = pickle.loads(pickle.dumps(re_.model_spec(seg)))
    assert spec.kind == "graph"
    twin = re_.build_segmenter(spec, threads=1)
    image = read_raw(sorted((seismic_pairs / "images").iterdir())[1])
    np.testing.assert_array_equal(twin.predict_classes(image), seg.predict_classes(image))


def test_score_volume_equals_evaluate_volume(seg: Segmenter) -> None:
    from unet_core.volume import read_volume
    from unet_core.volume_predict import evaluate_volume, segment_volume

    cube = read_volume(ROOT / "assets" / "volumes" / "salt_cube.sgy")
    labels = read_volume(ROOT / "assets" / "volumes" / "salt_cube_mask.sgy")
    probs = segment_volume(seg, cube, "inline", class_index=0)
    got = re_.score_volume(seg, cube, labels, "inline", probs, 0.4, 3, 0)
    want = evaluate_volume(seg, cube, labels, "inline", 0.4, min_area=3, class_index=0)
    assert json.dumps(got) == json.dumps(want) and got["n_slices"] == 24
    rows = re_.slice_rows(cube, probs, (probs > 0.4).astype(np.uint8), "inline")
    assert len(rows) == 24 and rows[5]["max_prob"] == float(probs[5].max())


# --------------------------------------------------------------------------- on a local Ray

@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": re_._package_root()}})
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_engine_equals_the_local_engine(local_ray, tiny_model_path: Path, data: Path,
                                            tmp_path: Path, capsys) -> None:
    model = str(tiny_model_path)
    images = str(data / "images")
    assert cli.main(["predict", "--model", model, images, "--out", str(tmp_path / "l")]) == 1
    capsys.readouterr()
    argv = ["predict", "--engine", "ray", "--workers", "2", "--batch-size", "4",
            "--model", model, images, "--out", str(tmp_path / "r")]
    assert cli.main(argv) == 1  # the corrupt image fails; the 12 others are written
    err = capsys.readouterr().err
    assert "error: broken.png" in err and "wrote 12 mask(s)" in err and "1 failed" in err
    local = sorted(p.name for p in (tmp_path / "l").iterdir())
    assert len(local) == 24 and sorted(
        p.name for p in (tmp_path / "r").iterdir()) == sorted([*local, "metrics.parquet"])
    for name in local:
        assert (tmp_path / "l" / name).read_bytes() == (tmp_path / "r" / name).read_bytes(), name
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "r" / "metrics.parquet").to_pylist()
    assert sorted(r["name"] for r in table) == sorted(
        p.name for p in (data / "images").iterdir() if p.name != "broken.png")
    mask = np.asarray(read_raw(tmp_path / "r" / "seismic_000_mask.png")) > 0
    assert table[0]["name"] == "seismic_000.png" and table[0]["foreground_px"] == mask.sum()

    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").glob("*_*.*")}
    assert cli.main(argv) == 1  # re-run: every complete image skipped, the bad one again
    err = capsys.readouterr().err
    assert "wrote 0 mask(s)" in err and "12 already complete, skipped" in err
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").glob("*_*.*")}
    assert not list((tmp_path / "r").glob(".tmp-*"))

    ev = ["evaluate", "--json", "--model", model, "--data", str(data), "--min-area", "5"]
    table_path = tmp_path / "eval.parquet"
    assert cli.main([*ev, "--engine", "ray", "--metrics", str(table_path)]) == 1
    got = capsys.readouterr()  # the corrupt pair is reported, the 12 others scored
    assert "error: images/broken.png" in got.err and "1 of 13 image(s) failed" in got.err
    (data / "images" / "broken.png").unlink()
    (data / "masks" / "broken.png").unlink()
    assert cli.main(ev) == 0
    want = capsys.readouterr().out
    assert got.out == want and json.loads(want)["n"] == 12
    rows = pq.read_table(table_path).to_pylist()
    assert len(rows) == 12 and rows[0]["name"] == "seismic_000.png"
    assert json.loads(want)["iou"] == pytest.approx(np.mean([r["iou"] for r in rows]))

