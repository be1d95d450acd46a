"""Activations page: what each layer of the network responds to, for one image.

One forward pass of an ActivationProbe returns every layer's maps; it is cached per (model,
card, image, padding), so switching layers, channels or pages costs no pass. Maps are drawn as
images (a colour lookup in numpy), not as chart traces, so a layer switch is one small image.

The probe sees the image exactly as the network does (:meth:`Segmenter.prepare`: the card's
channels, order and scaling, padded or resized by its fit); the overlay shows the image in
colour when it has colour, with the predicted mask of the class picked outlined on request.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import engine, sources, state, viz, volumes, widgets
from app.context import PageContext
from app.errors import display_text, plain, run_safely
from app.settings import activation_max_bytes
from unet_core.introspect import layer_activation
from unet_core.metrics import threshold_mask
from unet_core.onnx_graph import is_onnx

ONE_MAX_SIDE = 400  # the enlarged channel / overlay


def render(ctx: PageContext) -> None:
    """Draw the Activations page for the model in ``ctx``."""
    ss = st.session_state
    bundle = ctx.bundle
    card = bundle.card
    widgets.page_header("Activations", bundle, "maps are cropped to the image (padding removed)"
                        if card.fit != "resize" else "maps of the image resized to the network's "
                        "input (fit resize)")

    item = widgets.image_picker_ui(card, upload_key="act_upload", with_masks=False,
                                   fresh_visit=ctx.fresh_visit)
    padding = ctx.settings.padding
    if item is None:
        return
    state.use_image(item)
    if not widgets.domain_gate_ui(item, bundle):
        return
    ctx = volumes.slice_context(item, ctx)  # a clipped slice: the card's "unit" twin
    if ctx is None:
        return
    bundle = ctx.bundle
    image = None
    with run_safely(what="reading the image"):
        image = sources.decode_image(item)
    if image is None:
        return

    maps_by_layer = None
    with run_safely(what="computing the activations"):
        # Only its input rules: Keras models on TensorFlow (no export built for this), an ONNX
        # model on its own backend (it has no other).
        seg = engine.get_segmenter(bundle, False, "onnxruntime" if is_onnx(bundle.loaded)
                                   else "tensorflow")
        padded, box = seg.prepare(image, padding)  # (Hn, Wn, C) as the network sees it
        with st.spinner("Building the activation probe…"):
            probe = engine.get_probe(bundle.network_key, bundle.loaded)
        need, cap = probe.estimate_bytes(*padded.shape[:2]), activation_max_bytes()
        if need > cap:  # refuse before anything is allocated
            st.error(f"{plain(item.name)}: the activation maps of this {image.shape[0]}x"
                     f"{image.shape[1]} image (padded to {padded.shape[0]}x{padded.shape[1]}) "
                     f"would take about {need / 2**20:,.0f} MiB, over the dashboard's limit of "
                     f"{cap / 2**20:,.0f} MiB per image; accepted: a smaller image or crop "
                     "(set UNET_ACTIVATION_MAX_MB to raise the limit). The Segment page "
                     "handles large images in tiles.")
            return
        with st.spinner("One forward pass for every layer…"):
            maps_by_layer = engine.activation_maps(bundle, item, padding, probe, padded, box)
    if maps_by_layer is None:
        return

    layers = list(maps_by_layer)
    labels = {n: "{} · {}x{}x{}".format(n, *maps_by_layer[n].shape) for n in layers}
    layer = widgets.select_ui("Layer", layers, "act_layer", layers[len(layers) // 2],
                              format_func=labels.get,
                              help="Size shown: height x width x channels over the image.")
    if "act_shared" not in ss:
        ss["act_shared"] = True
    shared = st.toggle("Shared colour scale", key="act_shared", persist_state="session",
                       help="On: one scale for every channel (compare channels). Off: each "
                       "channel stretched to its own min … max (see patterns in weak ones).")
    if seg.fit == "resize":
        how = (f"resized to {padded.shape[0]}x{padded.shape[1]} (fit resize, bilinear): maps "
               "cover the whole image at the network's size")
    else:
        how = f"padded to {padded.shape[0]}x{padded.shape[1]} ({padding})"
    st.caption(f"Forward passes for this image: "
               f"{engine.forward_pass_count(bundle, item, padding)} · {len(layers)} layers from "
               f"that pass; switching layers or pages costs none · input {image.shape[0]}x"
               f"{image.shape[1]} as {padded.shape[2]} channel"
               f"{'s' if padded.shape[2] != 1 else ''}, {card.normalisation} values, {how}")
    classes = None
    if layer == layers[-1] and maps_by_layer[layer].shape[2] == card.n_classes >= 2:
        classes = [card.class_name(i) for i in range(card.n_classes)]
    _layer_view(layer, maps_by_layer[layer], image, shared, ctx, item, classes)


def _class_outline(ctx: PageContext, item: sources.ImageItem, image: np.ndarray,
                   shape: tuple[int, ...]) -> np.ndarray | None:
    """The predicted mask of the class picked (at the threshold in use), decimated to
    ``shape``, for outlining on the overlay; None if the prediction failed."""
    bundle, settings = ctx.bundle, ctx.settings
    card = bundle.card
    k = int(st.session_state.get("class_index", card.default_class))
    if k not in range(card.n_classes):
        k = card.default_class
    with run_safely(what="predicting the mask"):
        prob = engine.probability_map(bundle, item, image, settings.padding, settings.tta,
                                      ctx.backend, class_index=k)
        mask = threshold_mask(prob, float(st.session_state.get("threshold", card.threshold)),
                              settings.min_area)
        return viz.resize_nearest(mask, shape[:2])
    return None


def _layer_view(layer: str, maps: engine.LayerMaps, image: np.ndarray, shared: bool,
                ctx: PageContext, item: sources.ImageItem, classes: list[str] | None) -> None:
    bundle = ctx.bundle
    card = bundle.card
    shown = maps.display  # float16 (h', w', C) over the image only
    h, w, channels = maps.shape
    stats = maps.stats
    lo_all, hi_all = maps.low, maps.high
    if hi_all <= lo_all:
        hi_all = lo_all + 1e-6

    st.subheader(f"{plain(layer)} · {h}x{w}, {channels} channels")
    g1, g2 = st.columns([3, 2])
    with g1:
        start, stop = widgets.pager_ui(channels, key=f"act_page_{layer}", noun="channels")
        tiles = [shown[:, :, c].astype(np.float32) for c in range(start, stop)]
        if shared:
            zmin: Any = lo_all
            zmax: Any = hi_all
            note = f"One colour scale for every channel: {lo_all:.3g} (black) … {hi_all:.3g} " \
                "(yellow), inferno."
        else:
            zmin = [stats[c].min for c in range(start, stop)]
            zmax = [stats[c].max for c in range(start, stop)]
            note = "Each channel stretched to its own min (black) … max (yellow), inferno."
        titles = [f"#{c}" + (f" {display_text(classes[c], 60)}" if classes else "")
                  for c in range(start, stop)]
        widgets.tile_grid_ui(tiles, titles, zmin=zmin, zmax=zmax, cmap="inferno", tile_px=120)
        st.caption(note + f" Channels #{start}–#{stop - 1}, left to right, top to bottom.")
    with g2:
        options = list(range(channels))
        key = f"act_channel_{layer}"
        if st.session_state.get(key) not in range(start, stop):
            st.session_state[key] = start
        pick = int(st.selectbox("Channel", options, key=key,
                                format_func=lambda c: f"{c} · {display_text(classes[c], 60)}"
                                if classes
                                else str(c)))
        overlay = st.checkbox("Overlay on input", key="act_overlay", persist_state="session")
        one = shown[:, :, pick].astype(np.float32)
        lo, hi = (lo_all, hi_all) if shared else (stats[pick].min, stats[pick].max)
        if overlay:
            what = display_text(widgets.class_label(card, int(st.session_state.get(
                "class_index", card.default_class))) if card.n_classes >= 2 else
                card.foreground)
            outline = st.checkbox("Mask outline", key="act_outline",
                                  persist_state="session",
                                  help="Outline the predicted mask of the class picked, at "
                                  "the threshold in use (the same prediction as the Segment "
                                  "page).")
            if outline and card.n_classes >= 2:
                widgets.class_ui(card)
            img_d, _ = sources.display(image, ONE_MAX_SIDE)
            rgb = viz.colormap_rgb(viz.resize_nearest(one, img_d.shape[:2]), lo, hi, "inferno")
            shown = (0.5 * viz.as_rgb(img_d) * 255 + 0.5 * rgb).astype(np.uint8)
            caption = f"{display_text(layer)} #{pick} over the input (50%); nearest-neighbour " \
                "upsampled to the image"
            if outline:
                mask = _class_outline(ctx, item, image, img_d.shape)
                if mask is not None:
                    edge = viz.boundary(mask, 2, image_edge=False)
                    shown[edge] = viz.SKY_BLUE
                    caption += f"; sky blue = the predicted {what} mask's edge"
            st.image(shown, width="stretch", caption=caption)
        else:
            st.image(viz.upscale_nearest(viz.colormap_rgb(one, lo, hi, "inferno"), 256),
                     width="stretch", caption=f"{display_text(layer)} #{pick} ({h}x{w})"
                     + (f", shown at every {viz.ordinal(maps.stride)} value"
                        if maps.stride > 1 else ""))
        s = stats[pick]
        st.caption(f"#{pick}: mean {s.mean:.3g}, max {s.max:.3g}, zeros {s.zero_fraction:.0%} · "
                   f"scale {lo:.3g} … {hi:.3g}")

    activation = layer_activation(bundle.loaded, layer)
    zero = sum(1 for s in stats if s.zero_fraction >= 1.0)
    if activation == "relu":
        said = f"{zero} channel(s) zero everywhere on this image (dead ReLUs here)"
    else:
        said = f"{zero} channel(s) zero everywhere on this image" + (
            "; no activation function at the end of this layer" if activation == "linear"
            else f"; this layer ends with {activation}" if activation else "")
    table = pd.DataFrame([{"channel": s.channel, "mean": s.mean, "std": s.std, "min": s.min,
                           "max": s.max, "zeros": s.zero_fraction} for s in stats])
    st.markdown(f"**Per-channel statistics of {plain(layer)}** · {said}")
    config: dict[str, Any] = {c: st.column_config.NumberColumn(format="%.4f", width="small")
                              for c in table.columns if c not in ("channel", "zeros")}
    config["zeros"] = st.column_config.NumberColumn(format="percent", width="small")
    st.dataframe(table, hide_index=True, width="stretch", height=260, column_config=config)
