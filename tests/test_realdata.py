"""Tests on the real labelled data in ../shared/data (skipped, with the reason, where absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, shared_dataset

from unet_core.cli import main

pytestmark = pytest.mark.realdata


def _names_file(tmp_path: Path, names: list[str]) -> str:
    p = tmp_path / "names.txt"
    p.write_text("\n".join(names) + "\n")
    return str(p)


def test_evaluate_any_single_channel_unet_on_tgs(capsys, tiny_model_path, tmp_path):
    data = shared_dataset("tgs_salt")
    names = sorted(p.name for p in (data / "images").iterdir())[:150]
    code = main(["evaluate", "--model", str(tiny_model_path), "--data", str(data), "--json",
                 "--names", _names_file(tmp_path, names)])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(out)
    assert res["n"] == 150
    for key in ("threshold", "iou", "dice", "tgs_metric", "best_threshold", "best_tgs_metric",
                "best_iou"):
        assert 0.0 <= res[key] <= 1.0


@pytest.mark.parametrize(("model", "dataset", "metric"), [
    ("salt", "tgs_salt", "tgs_metric"),
    ("nuclei", "dsb2018_nuclei", "iou"),
    ("em_membrane", "isbi2012_em_membrane", "iou"),  # masks inverted by the card's default
])
def test_shipped_model_reproduces_its_card_on_held_out_pairs(capsys, tmp_path, model, dataset,
                                                             metric):
    """The held-out split (never trained on) gives the figures the card reports."""
    path = ROOT / "models" / f"{model}.keras"
    if not path.exists():
        pytest.skip(f"{path} not shipped yet")
    data = shared_dataset(dataset)
    card = json.loads(path.with_suffix(".json").read_text())
    held_out = path.with_suffix(".heldout.txt").read_text().split()
    code = main(["evaluate", "--model", str(path), "--data", str(data), "--json", "--names",
                 _names_file(tmp_path, held_out)])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(out)
    assert res["n"] == len(held_out) == card["metrics"]["test"]["n"]
    assert res[metric] == pytest.approx(card["metrics"]["test"][
        "tgs_metric" if metric == "tgs_metric" else "iou"], abs=0.01)


def test_synthetic_seismic_texture_matches_tgs():
    """The seismic generator's texture statistics sit inside the TGS crops' 10-90% ranges.

    Per crop with salt (at least 200 pixels 6 px inside salt and outside it): standard deviation
    inside and outside, mean absolute Sobel gradients across and down outside, and the standard
    deviation in a 3 px band around the boundary. The medians over generated crops must fall
    within the TGS crops' 10th-90th percentiles.
    """
    import numpy as np
    from scipy import ndimage

    from unet_core.io import find_pairs, load_pair
    from unet_core.synthetic import seismic_section

    def stats(img, mask):
        inner = ndimage.binary_erosion(mask, iterations=6)
        outer = ndimage.binary_erosion(~mask, iterations=6)
        if inner.sum() < 200 or outer.sum() < 200:
            return None
        gy, gx = np.abs(ndimage.sobel(img, 0)), np.abs(ndimage.sobel(img, 1))
        dist = ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)
        return [img[inner].std(), img[outer].std(), gx[outer].mean(), gy[outer].mean(),
                img[np.abs(dist) < 3].std()]

    pairs = find_pairs(shared_dataset("tgs_salt"), require_masks=True)[:800]
    real = np.array([s for s in (stats(*load_pair(p)) for p in pairs) if s is not None])
    synthetic = np.array([s for s in (stats(*seismic_section(seed=k, salt=True))
                                      for k in range(100, 160)) if s is not None])
    assert len(real) > 200 and len(synthetic) > 40
    lo, hi = np.percentile(real, 10, axis=0), np.percentile(real, 90, axis=0)
    med = np.median(synthetic, axis=0)
    names = ["inside std", "outside std", "outside |d/dx|", "outside |d/dy|", "boundary std"]
    for name, m, a, b in zip(names, med, lo, hi, strict=True):
        assert a <= m <= b, (name, m, a, b)
