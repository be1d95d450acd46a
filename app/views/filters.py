"""Filters page: the learned convolution kernels of one layer, page by page."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import common, viz

GRID_COLS = 8


@st.cache_data(max_entries=8, show_spinner=False)
def _conv_layers(model_key: str, _loaded: Any) -> list[tuple[str, str]]:
    """(name, 'name · 3x3, 16→32 · Conv2D') of every conv layer."""
    from unet_core.introspect import layer_table

    return [(i.name, f"{i.name} · {i.kernel_shape[0]}x{i.kernel_shape[1]}, "
             f"{i.kernel_shape[2]}→{i.kernel_shape[3]} · {i.type}")
            for i in layer_table(_loaded) if i.is_conv and i.kernel_shape]


@st.cache_data(max_entries=32, show_spinner=False)
def _kernels(model_key: str, layer: str, _loaded: Any) -> Any:
    from unet_core.introspect import get_kernels

    return get_kernels(_loaded, layer)


@st.cache_data(max_entries=32, show_spinner=False)
def _histogram(model_key: str, layer: str, _loaded: Any) -> tuple[np.ndarray, np.ndarray]:
    from unet_core.introspect import weight_histogram

    return weight_histogram(_loaded, layer, bins=60)


bundle = common.require_model()
st.title("Filters")
st.caption(f"Model **{bundle.label}** · kernels shown as (rows, columns) of one input channel; "
           "red = positive, blue = negative weights")

layers = _conv_layers(bundle.key, bundle.loaded)
if not layers:
    st.info("This model has no 2-D convolution layers to show.")
    st.stop()
names = dict(layers)

c1, c2, c3 = st.columns([2, 1, 1])
common.seed_widget("filters_layer", "filters_layer_last", layers[0][0], lambda v: v in names)
layer = c1.selectbox("Layer", list(names), key="filters_layer", format_func=names.get)
st.session_state["filters_layer_last"] = layer
kern = None
with common.run_safely(what="kernels"):
    kern = _kernels(bundle.key, layer, bundle.loaded)
if kern is None:
    st.stop()
in_ch = int(c2.number_input("Input channel", min_value=0, max_value=kern.in_channels - 1,
                            value=0, step=1, key=f"filters_in_{layer}",
                            help=f"0 … {kern.in_channels - 1}: which input channel's slice of "
                            "each filter to show"))
with c3:
    start, stop = common.pager(kern.out_channels, key=f"filters_page_{layer}", noun="filters")

weights = kern.weights  # (kh, kw, in, out)
finite = weights[np.isfinite(weights)]
cmax = float(np.abs(finite).max()) if finite.size else 1.0
cmax = cmax if cmax > 0 else 1.0
kh, kw = kern.kernel_size

g1, g2 = st.columns([3, 2])
with g1:
    tiles = [weights[:, :, in_ch, o] for o in range(start, stop)]
    st.plotly_chart(
        viz.grid_figure(tiles, [f"#{o}" for o in range(start, stop)], cols=GRID_COLS,
                        zmin=-cmax, zmax=cmax, colorscale="RdBu_r", colorbar_title="weight",
                        tile_px=90 if kh <= 3 else 120, hover_label="weight"),
        width="stretch", key="filters_fig_grid")
    st.caption(f"One colour scale for every tile and page: ±{cmax:.3g}, the largest |weight| in "
               f"{layer} (all filters, all input channels).")
with g2:
    pick = st.selectbox("Filter", list(range(kern.out_channels)), index=start,
                        key=f"filters_pick_{layer}_{start}",
                        help="Enlarge one output filter (defaults to the first on this page)")
    k2d = kern.filter(int(pick), in_ch)
    st.plotly_chart(
        viz.heatmap_figure(k2d, f"Filter #{pick}, input channel {in_ch} ({kh}x{kw})",
                           zmin=-cmax, zmax=cmax, colorscale="RdBu_r", colorbar_title="weight",
                           text_format=".3f" if kh * kw <= 81 else None, height=340),
        width="stretch", key="filters_fig_one")
    stats = kern.stats[int(pick)]
    bias = f" · bias {kern.bias[int(pick)]:.4g}" if kern.bias is not None else " · no bias"
    st.caption(f"Filter #{pick} over all {kern.in_channels} input channels: mean "
               f"{stats['mean']:.3g}, std {stats['std']:.3g}, L2 {stats['l2_norm']:.3g}{bias}")

h1, h2 = st.columns([2, 3])
with h1, common.run_safely(what="histogram"):
    counts, edges = _histogram(bundle.key, layer, bundle.loaded)
    st.plotly_chart(viz.histogram_figure(counts, edges, f"All weights of {layer} "
                                         f"({weights.size:,})"),
                    width="stretch", key="filters_fig_hist")
with h2:
    table = pd.DataFrame(kern.stats)
    if kern.bias is not None:
        table["bias"] = kern.bias
    st.markdown(f"**Per-filter statistics** ({kern.out_channels} filters, each "
                f"{kh}x{kw}x{kern.in_channels} weights)")
    st.dataframe(table, hide_index=True, width="stretch", height=300,
                 column_config={c: st.column_config.NumberColumn(format="%.4f")
                                for c in table.columns if c != "filter"})
