"""Pure pieces of the dashboard: state rules, activation summaries, model-card wording."""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from unet_core.model import ModelCard


def test_model_defaults_come_from_the_card() -> None:
    from app.state import CONTROLS, model_defaults

    card = ModelCard(name="m", threshold=0.537, min_area=40, padding_mode="edge", tta=True,
                     truth_inverted=True)
    got = model_defaults(card)
    assert got == {"threshold": 0.54, "min_area": 40, "padding": "edge", "tta": True,
                   "invert_masks": True}
    assert set(got) == set(CONTROLS)  # one key per control, nothing else


def test_sync_model_applies_defaults_once_per_model_change() -> None:
    def script() -> None:
        import streamlit as st

        from app.state import sync_model
        from unet_core.model import ModelCard

        a = ModelCard(name="a", threshold=0.3, min_area=5)
        b = ModelCard(name="b", threshold=0.7, min_area=0)
        which = st.session_state.get("which", "a")
        applied = sync_model(f"{which}@1", a if which == "a" else b)
        st.write(f"applied={applied}")

    at = AppTest.from_function(script).run()
    assert at.markdown[0].value == "applied=True" and at.session_state["threshold"] == 0.3
    at.session_state["threshold"] = 0.45  # the user moved it
    at.run()
    assert at.markdown[0].value == "applied=False" and at.session_state["threshold"] == 0.45
    at.session_state["which"] = "b"
    at.run()
    assert at.session_state["threshold"] == 0.7 and at.session_state["min_area"] == 0
    at.session_state["which"] = "a"
    at.run()
    assert at.session_state["threshold"] == 0.3 and at.session_state["min_area"] == 5


def test_activation_summary_keeps_stats_of_the_full_maps() -> None:
    from app.engine import ACTIVATION_DISPLAY_SIDE, _summarise
    from unet_core.introspect import channel_stats, crop_activation
    from unet_core.padding import PadBox

    rng = np.random.default_rng(0)
    maps = rng.normal(size=(600, 520, 3)).astype(np.float32)
    maps[..., 2] = 0.0
    box = PadBox(top=10, left=4, height=580, width=510)
    got = _summarise(maps, box, (600, 520))
    cropped = crop_activation(maps, box, (600, 520))
    assert got.shape == cropped.shape
    assert max(got.display.shape[:2]) <= ACTIVATION_DISPLAY_SIDE and got.stride == 3
    assert got.display.dtype == np.float16 and not got.display.flags.writeable
    assert got.stats == channel_stats(cropped)  # every value, in float64
    assert got.stats[2].zero_fraction == 1.0
    assert got.low == pytest.approx(float(cropped.min()))
    assert got.high == pytest.approx(float(cropped.max()))


def test_model_card_reads_like_a_card() -> None:
    from app.views.model import dataset_name, metrics_table, training_table

    assert dataset_name("../shared/data/tgs_salt") == "TGS Salt Identification (Kaggle 2018)"
    assert dataset_name("/home/x/my_cells") == "my cells"  # never the machine's path
    assert dataset_name(None) == "—"
    table = metrics_table({"selected_by": "mean_iou",
                           "validation": {"n": 10, "threshold": 0.55, "iou": 0.8123},
                           "test": {"n": 12, "threshold": 0.55, "iou": 0.8}})
    assert table is not None
    assert list(table.columns) == ["Validation", "Held-out test"]
    assert table.loc["Threshold"].tolist() == ["0.55", "0.55"]
    assert table.loc["Mean IoU"].tolist() == ["0.812", "0.800"]
    assert table.loc["Images"].tolist() == ["10", "12"]
    rows = training_table({"data": "/x/y", "epochs_run": 3, "wall_time_s": 600.0,
                           "augmentation": {"flip": True}, "invert_masks": False})
    assert rows.to_dict("records") == [{"field": "Epochs run", "value": "3"},
                                       {"field": "Training time", "value": "10 min"},
                                       {"field": "Masks inverted for training", "value": "no"}]


def test_resize_nearest_covers_the_target() -> None:
    from app.viz import resize_nearest

    a = np.arange(6).reshape(2, 3)
    got = resize_nearest(a, (4, 6))
    assert got.shape == (4, 6)
    assert got[0].tolist() == [0, 0, 1, 1, 2, 2] and got[3].tolist() == [3, 3, 4, 4, 5, 5]
