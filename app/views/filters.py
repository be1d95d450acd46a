"""Filters page: the learned convolution kernels of one layer, page by page."""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import engine, viz, widgets
from app.context import PageContext
from app.errors import display_text, plain, run_safely
from unet_core.model import ModelCard

GRID_COLS = 8


@st.cache_data(max_entries=32, show_spinner=False)
def _histogram(model_key: str, layer: str, _loaded: Any) -> tuple[np.ndarray, np.ndarray]:
    from unet_core.introspect import weight_histogram

    return weight_histogram(_loaded, layer, bins=60)


ALL = "all"  # the input-channel option that draws one row of tiles per input channel
ALL_MAX = 8  # "all" is offered for layers with at most this many input channels


def channel_names(in_channels: int, first: bool, card: ModelCard) -> list[str]:
    """Names of a layer's input channels: the image's channels for the first conv layer of
    a colour model ('0 · R', '1 · G', '2 · B', or B, G, R for a BGR card), '#i' otherwise."""
    if first and in_channels == card.channels and in_channels in (3, 4):
        letters = "BGR" if card.channel_order == "bgr" else "RGB"
        letters += "A" if in_channels == 4 else ""
        return [f"{i} · {ch}" for i, ch in enumerate(letters)]
    if first and in_channels == card.channels and in_channels > 1:
        return [f"{i} · band {i}" for i in range(in_channels)]
    return [f"#{i}" for i in range(in_channels)]


def render(ctx: PageContext) -> None:
    """Draw the Filters page for the model in ``ctx``."""
    bundle = ctx.bundle
    card = bundle.card
    widgets.page_header("Filters", bundle, "each tile is one filter's kernel (rows x columns) "
                        "for one input channel; red = positive, blue = negative weights")
    layers = engine.conv_layers(bundle.network_key, bundle.loaded)
    if not layers:
        st.info("This model has no 2-D convolution layers to show.")
        return
    names = dict(layers)
    layer = widgets.select_ui("Layer", list(names), "filters_layer", layers[0][0],
                              format_func=names.get)
    kern = None
    with run_safely(what="reading the kernels"):
        kern = engine.kernels(bundle.network_key, layer, bundle.loaded)
    if kern is None:
        return
    first = layer == layers[0][0]
    labels = channel_names(kern.in_channels, first, card)
    options: list[Any] = ([ALL] if 1 < kern.in_channels <= ALL_MAX else []) + list(
        range(kern.in_channels))
    c2, c3 = st.columns(2)
    default = ALL if first and ALL in options else 0
    in_ch = widgets.select_ui(
        "Input channel", options, f"filters_in_{layer}", default, container=c2,
        format_func=lambda c: (f"all {kern.in_channels} (one row each)" if c == ALL
                               else labels[int(c)]),
        help=f"Which input channel's slice of each filter to show (0 … {kern.in_channels - 1})"
        + (f", or all {kern.in_channels} as rows" if ALL in options else "")
        + (": the image's channels as the network receives them (after the card's channel "
           f"order, {card.channel_order.upper()})" if first and card.channels > 1 else ""))
    with c3:
        start, stop = widgets.pager_ui(kern.out_channels, key=f"filters_page_{layer}",
                                       noun="filters")

    weights = kern.weights  # (kh, kw, in, out)
    finite = weights[np.isfinite(weights)]
    cmax = float(np.abs(finite).max()) if finite.size else 1.0
    cmax = cmax if cmax > 0 else 1.0
    kh, kw = kern.kernel_size
    tile_px = 96 if kh <= 5 else 128

    rows = list(range(kern.in_channels)) if in_ch == ALL else [int(in_ch)]
    for c in rows:
        if len(rows) > 1:
            st.markdown(f"**Input channel {labels[c]}**")
        tiles = [weights[:, :, c, o] for o in range(start, stop)]
        widgets.tile_grid_ui(tiles, [f"#{o}" for o in range(start, stop)], zmin=-cmax,
                             zmax=cmax, cmap="RdBu_r", tile_px=tile_px)
    which = (f"all {kern.in_channels} input channels, one row each" if len(rows) > 1
             else f"input channel {labels[rows[0]]}")
    st.caption(f"Filters #{start}–#{stop - 1}, {which}. One colour scale for every tile and "
               f"page: blue −{cmax:.3g} … white 0 … red +{cmax:.3g}, the largest |weight| in "
               f"{plain(layer)} (all filters, all input channels).")
    g2, g3 = st.columns([2, 3])
    with g2:
        key = f"filters_pick_{layer}"
        if st.session_state.get(key) not in range(start, stop):
            st.session_state[key] = start
        pick = int(st.selectbox("Filter", list(range(kern.out_channels)), key=key,
                                help="Enlarge one output filter (defaults to the first on this "
                                "page)"))
        if len(rows) > 1:
            grid = viz.grid_rgb([kern.filter(pick, c) for c in rows], cols=len(rows),
                                zmin=-cmax, zmax=cmax, cmap="RdBu_r", tile_px=96,
                                titles=[labels[c] for c in rows])
            st.image(grid, width="stretch",
                     caption=f"Filter #{pick} over each input channel (same colour scale)")
        else:
            c = rows[0]
            st.plotly_chart(
                viz.heatmap_figure(kern.filter(pick, c), f"#{pick}, input {labels[c]}",
                                   zmin=-cmax, zmax=cmax, colorscale="RdBu_r",
                                   colorbar_title="weight",
                                   text_format=".3f" if kh * kw <= 81 else None, height=340),
                width="stretch", key="filters_fig_one")
        stats = kern.stats[pick]
        bias = f" · bias {kern.bias[pick]:.4g}" if kern.bias is not None else " · no bias"
        st.caption(f"Filter #{pick} over all {kern.in_channels} input channels: mean "
                   f"{stats['mean']:.3g}, std {stats['std']:.3g}, L2 {stats['l2_norm']:.3g}"
                   f"{bias}")

    with g3, run_safely(what="drawing the histogram"):
        counts, edges = _histogram(bundle.network_key, layer, bundle.loaded)
        title = f"All weights of {html.escape(display_text(layer))} ({weights.size:,})"
        st.plotly_chart(viz.histogram_figure(counts, edges, title),
                        width="stretch", key="filters_fig_hist")
    table = pd.DataFrame(kern.stats)
    if kern.bias is not None:
        table["bias"] = kern.bias
    st.markdown(f"**Per-filter statistics** ({kern.out_channels} filters, each "
                f"{kh}x{kw}x{kern.in_channels} weights)")
    st.dataframe(table, hide_index=True, width="stretch", height=300,
                 column_config={c: st.column_config.NumberColumn(format="%.4f", width="small")
                                for c in table.columns if c != "filter"})
