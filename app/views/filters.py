"""Filters page: the learned convolution kernels of one layer, page by page."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import engine, viz, widgets
from app.context import PageContext
from app.errors import run_safely

GRID_COLS = 8


@st.cache_data(max_entries=32, show_spinner=False)
def _histogram(model_key: str, layer: str, _loaded: Any) -> tuple[np.ndarray, np.ndarray]:
    from unet_core.introspect import weight_histogram

    return weight_histogram(_loaded, layer, bins=60)


def render(ctx: PageContext) -> None:
    """Draw the Filters page for the model in ``ctx``."""
    bundle = ctx.bundle
    widgets.page_header("Filters", bundle, "each tile is one filter's kernel (rows x columns) "
                        "for one input channel; red = positive, blue = negative weights")
    layers = engine.conv_layers(bundle.key, bundle.loaded)
    if not layers:
        st.info("This model has no 2-D convolution layers to show.")
        return
    names = dict(layers)
    layer = widgets.select_ui("Layer", list(names), "filters_layer", layers[0][0],
                              format_func=names.get)
    kern = None
    with run_safely(what="kernels"):
        kern = engine.kernels(bundle.key, layer, bundle.loaded)
    if kern is None:
        return
    c2, c3 = st.columns(2)
    in_ch = int(c2.number_input("Input channel", min_value=0, max_value=kern.in_channels - 1,
                                value=0, step=1, key=f"filters_in_{layer}",
                                help=f"0 … {kern.in_channels - 1}: which input channel's slice "
                                "of each filter to show"))
    with c3:
        start, stop = widgets.pager_ui(kern.out_channels, key=f"filters_page_{layer}",
                                       noun="filters")

    weights = kern.weights  # (kh, kw, in, out)
    finite = weights[np.isfinite(weights)]
    cmax = float(np.abs(finite).max()) if finite.size else 1.0
    cmax = cmax if cmax > 0 else 1.0
    kh, kw = kern.kernel_size

    tiles = [weights[:, :, in_ch, o] for o in range(start, stop)]
    widgets.tile_grid_ui(tiles, [f"#{o}" for o in range(start, stop)], zmin=-cmax, zmax=cmax,
                         cmap="RdBu_r", tile_px=96 if kh <= 5 else 128)
    st.caption(f"Filters #{start}–#{stop - 1}, input channel {in_ch}. One colour scale for "
               f"every tile and page: blue −{cmax:.3g} … white 0 … red +{cmax:.3g}, the "
               f"largest |weight| in {layer} (all filters, all input channels).")
    g2, g3 = st.columns([2, 3])
    with g2:
        key = f"filters_pick_{layer}"
        if st.session_state.get(key) not in range(start, stop):
            st.session_state[key] = start
        pick = int(st.selectbox("Filter", list(range(kern.out_channels)), key=key,
                                help="Enlarge one output filter (defaults to the first on this "
                                "page)"))
        k2d = kern.filter(pick, in_ch)
        st.plotly_chart(
            viz.heatmap_figure(k2d, f"#{pick}, input {in_ch}",
                               zmin=-cmax, zmax=cmax, colorscale="RdBu_r",
                               colorbar_title="weight",
                               text_format=".3f" if kh * kw <= 81 else None, height=340),
            width="stretch", key="filters_fig_one")
        stats = kern.stats[pick]
        bias = f" · bias {kern.bias[pick]:.4g}" if kern.bias is not None else " · no bias"
        st.caption(f"Filter #{pick} over all {kern.in_channels} input channels: mean "
                   f"{stats['mean']:.3g}, std {stats['std']:.3g}, L2 {stats['l2_norm']:.3g}"
                   f"{bias}")

    with g3, run_safely(what="histogram"):
        counts, edges = _histogram(bundle.key, layer, bundle.loaded)
        st.plotly_chart(viz.histogram_figure(counts, edges, f"All weights of {layer} "
                                             f"({weights.size:,})"),
                        width="stretch", key="filters_fig_hist")
    table = pd.DataFrame(kern.stats)
    if kern.bias is not None:
        table["bias"] = kern.bias
    st.markdown(f"**Per-filter statistics** ({kern.out_channels} filters, each "
                f"{kh}x{kw}x{kern.in_channels} weights)")
    st.dataframe(table, hide_index=True, width="stretch", height=300,
                 column_config={c: st.column_config.NumberColumn(format="%.4f", width="small")
                                for c in table.columns if c != "filter"})
