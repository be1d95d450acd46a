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
                   "invert_masks": True, "class_index": 0}
    assert set(got) == set(CONTROLS)  # one key per control, nothing else
    three = ModelCard(name="m", classes=["bg", "liver", "tumour"])
    assert model_defaults(three)["class_index"] == 1  # the first class after the background
    three.class_index = 2
    assert model_defaults(three)["class_index"] == 2


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


# --------------------------------------------------------------------------- the user's own model


def test_card_editor_values_become_a_card() -> None:
    from app.views.model import edited_dict
    from unet_core.errors import ModelSpecError

    card = ModelCard(name="m", channels=3, classes=["a", "b", "c"], input_size=[32, 32],
                     fit="resize", inferred=["normalisation", "fit", "classes", "input_size"],
                     notes={"fit": "why", "input_size": "from the network"})
    values = {"channel_order": "bgr", "normalisation": "meanstd", "mean": "0.485 0.456, 0.406",
              "std": "0.229", "p_lo": 2.0, "p_hi": 98.0, "fit": "pad", "threshold": 0.4,
              "classes": "background\n liver \n\ntumour", "class_index": 2}
    data = edited_dict(card, values)
    assert data["channel_order"] == "bgr" and data["fit"] == "pad"
    assert data["mean"] == [0.485, 0.456, 0.406] and data["std"] == [0.229]
    assert data["percentiles"] == [1.0, 99.0]  # only set for the percentile rule
    assert data["classes"] == ["background", "liver", "tumour"] and data["class_index"] == 2
    assert data["threshold"] == 0.4
    assert data["inferred"] == ["input_size"]  # what the user set is no longer inferred
    assert data["notes"] == {"input_size": "from the network"}
    with pytest.raises(ModelSpecError, match=r"^std = 'a' is not a list of numbers"):
        edited_dict(card, {**values, "std": "a"})
    one = edited_dict(ModelCard(name="m"), {**values, "normalisation": "percentile",
                                            "foreground": " lane "})
    assert one["percentiles"] == [2.0, 98.0] and one["foreground"] == "lane"


def test_spec_texts_state_formula_fit_and_output() -> None:
    from app.views.model import classes_text, fit_text, normalisation_text, output_text

    card = ModelCard(name="m", normalisation="percentile", percentiles=[2.0, 98.0],
                     input_size=[128, 128], fit="resize", output="logits",
                     classes=["bg", "liver", "tumour"])
    assert normalisation_text(card) == ("percentile: (x − p_lo) / (p_hi − p_lo) clipped to "
                                        "0..1, p_lo / p_hi the image's 2th / 98th percentiles")
    assert fit_text(card).startswith("resize: the whole image is resized to 128x128 (bilinear")
    assert output_text(card) == "logits: no final activation; the engine applies softmax over " \
        "3 classes"
    assert classes_text(card).startswith("3: 0 bg, 1 liver, 2 tumour; shown by default: 1 · ")
    fcn = ModelCard(name="m", multiple_of=16, min_size=128, padding_mode="edge")
    assert fit_text(fcn) == ("pad: padded (edge) to a multiple of 16, at least 128x128, output "
                             "cropped back; never resized")
    assert output_text(fcn) == "probability (sigmoid in the model)"


def test_label_masks_are_told_from_binary_masks() -> None:
    import io

    from PIL import Image

    from app.sources import mask_holds_labels
    from app.viz import label_png_bytes

    def png(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return buf.getvalue()

    labels = np.array([[0, 1], [2, 2]], np.uint8)
    assert mask_holds_labels(label_png_bytes(labels), 3)  # palette
    assert mask_holds_labels(png(labels), 3)  # class indices
    assert not mask_holds_labels(png(labels * 100), 3)  # 0/100/200: not classes of 3
    assert not mask_holds_labels(png(np.array([[0, 255]], np.uint8)), 3)  # binary 0/255
    assert not mask_holds_labels(png(np.zeros((2, 2, 3), np.uint8)), 3)  # colour
    assert not mask_holds_labels(png(labels), 1)  # one-map models take binary masks
    assert not mask_holds_labels(b"not an image", 3)


def test_model_upload_sorts_model_weights_and_card(tmp_path) -> None:
    import json

    from app.sources import save_model_upload
    from unet_core.errors import UnetCoreError

    arch = json.dumps({"class_name": "Functional", "config": {}}).encode()
    card = json.dumps({"name": "net", "classes": ["a", "b"]}).encode()
    up = save_model_upload([("net.json", arch), ("net.h5", b"H"), ("c.json", card)], tmp_path)
    assert up.path.name == "net.json" and up.path.read_bytes() == arch
    assert up.weights is not None and up.weights.name == "net.h5"
    assert up.name == "net.json" and up.has_card
    # the card sits where load_model looks for an architecture's card
    assert (up.path.parent / "net.card.json").read_bytes() == card
    one = save_model_upload([("m.keras", b"K"), ("m_card.json", card)], tmp_path)
    assert one.path.name == "m.keras" and one.weights is None
    assert (one.path.parent / "m.json").read_bytes() == card
    for files, message in (
            ([("a.keras", b"1"), ("b.keras", b"2")], "upload one model: got a.keras, b.keras"),
            ([("net.json", arch)], "upload one model: an architecture .json needs exactly one"),
            ([("net.json", arch), ("w.keras", b"K")], "w.keras: the weights of an architecture"),
            ([("x.json", b"{nope")], "x.json: not valid JSON"),
            ([("x.txt", b"1")], "x.txt: not a model file")):
        with pytest.raises(UnetCoreError, match="^" + message.replace(".", r"\.")):
            save_model_upload(files, tmp_path)


def test_onnx_model_upload_keeps_its_card_and_suffix_and_is_no_weights_file(tmp_path) -> None:
    import json

    from app.sources import UPLOAD_ACCEPTED, save_model_upload
    from unet_core.errors import UnetCoreError

    card = json.dumps({"name": "net", "layout": "nchw"}).encode()
    up = save_model_upload([("unet.onnx", b"O"), ("card.json", card)], tmp_path)
    assert up.path.name == "unet.onnx" and up.weights is None and up.has_card
    assert (up.path.parent / "unet.json").read_bytes() == card
    odd = save_model_upload([("é.onnx", b"P")], tmp_path)  # the name cleans to 'onnx'
    assert odd.path.suffix == ".onnx" and odd.path.read_bytes() == b"P"
    arch = json.dumps({"class_name": "Functional", "config": {}}).encode()
    with pytest.raises(UnetCoreError, match=r"^w\.onnx: the weights of an architecture"):
        save_model_upload([("net.json", arch), ("w.onnx", b"O")], tmp_path)
    assert ".onnx" in UPLOAD_ACCEPTED


def test_onnx_graph_facts_say_why(onnx_models) -> None:
    import re

    from app.views.model import card_contradicts_graph, layout_text, onnx_rows
    from unet_core.model import load_model

    def shown(graph, card):  # as the page shows them: escapes of file strings removed
        return {k: re.sub(r"\\(.)", r"\1", v) for k, v in onnx_rows(graph, card)}

    loaded = load_model(onnx_models / "nchw_softmax_b4.onnx")
    rows = shown(loaded.model, loaded.card)
    assert rows["Batch"].startswith("fixed at 4: 4 images (or tiles) per run, a shorter batch "
                                    "padded")
    assert rows["Input size"] == "fixed 64x64"
    assert rows["Output kind"] == "probabilities: the graph ends with Softmax; used as they " \
        "are (the card says probability)"
    assert rows["Format"].startswith("ONNX IR ") and "opset ai.onnx 17" in rows["Format"]
    assert not card_contradicts_graph(loaded.model, loaded.card)
    loaded.card.output = "logits"  # a card that says otherwise is called out
    assert card_contradicts_graph(loaded.model, loaded.card)
    assert "the engine applies softmax" in shown(loaded.model, loaded.card)["Output kind"]
    assert layout_text(loaded.card).startswith("NCHW (batch, channels, height, width)")
    assert layout_text(ModelCard(name="keras")) == ""  # no layout row for a Keras model

    hostile = "![x](http://127.0.0.1:9/a.png) **b** <b>h</b>"  # names come from the file
    graph = load_model(onnx_models / "nchw_logits.onnx").model
    graph.proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param = hostile
    graph.proto.producer_name = hostile
    for value in dict(onnx_rows(graph, loaded.card)).values():
        assert "![" not in value and "**" not in value and "<b>" not in value, value


def test_filters_name_the_first_layers_input_channels() -> None:
    from app.views.filters import channel_names

    rgb = ModelCard(name="m", channels=3)
    assert channel_names(3, True, rgb) == ["0 · R", "1 · G", "2 · B"]
    assert channel_names(3, True, ModelCard(name="m", channels=3, channel_order="bgr")) == [
        "0 · B", "1 · G", "2 · R"]
    assert channel_names(3, False, rgb) == ["#0", "#1", "#2"]  # a deeper layer
    assert channel_names(5, True, ModelCard(name="m", channels=5))[4] == "4 · band 4"


def test_unknown_domain_models_take_any_image() -> None:
    from app.sources import make_item
    from app.state import image_fits_model

    item = make_item("sample", "s.png", b"x", domain="seismic")
    assert image_fits_model(item, "k", ModelCard(name="m", domain="unknown"))
    assert image_fits_model(item, "k", ModelCard(name="m", domain="seismic"))


def test_lru_is_bounded_in_bytes() -> None:
    from app.engine import LRU, approx_nbytes

    lru = LRU(8, max_bytes=3 * 2**20)
    for i in range(5):
        lru.put(i, {"a": np.zeros(2**20 // 8)})  # ~1 MiB each
    assert lru.get(0) is None and lru.get(1) is None and lru.get(4) is not None
    assert lru.nbytes <= 3 * 2**20
    lru.put("big", np.zeros(2**20))  # 8 MiB alone: kept (the newest), the rest evicted
    assert lru.get("big") is not None and lru.get(4) is None
    assert approx_nbytes([np.zeros(10, np.uint8), "abc"]) >= 13


def test_plain_text_has_no_markdown_and_errors_no_details() -> None:
    from app.errors import GENERIC, error_message, plain
    from unet_core.errors import ModelLoadError

    assert plain("a_b.png") == "a\\_b\\.png"
    assert error_message(ModelLoadError("x*.keras: refused")) == "x\\*\\.keras\\: refused"
    got = error_message(ValueError("/srv/app/unet_core/x.py line 3"), "loading the model")
    assert got == plain(GENERIC.format(what="loading the model"))
    assert "srv" not in got
