"""Activations page: what each layer of the network responds to, for one image.

One forward pass of an ActivationProbe returns every layer's maps; it is cached per (model,
image, padding), so switching layers, channels or pages costs no pass.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import common, viz
from unet_core.introspect import channel_stats, crop_activation

TILE_MAX_SIDE = 64  # grid tiles are decimated to this for display
ONE_MAX_SIDE = 400  # the enlarged channel / overlay
GRID_COLS = 4

ss = st.session_state
bundle = common.require_model()
card = bundle.card
st.title("Activations")
st.caption(f"Model **{bundle.label}** · maps are cropped to the image (padding removed)")

# ---------------------------------------------------------------- image + layer
recent = common.recent_items()
sources = common.image_sources("Upload an image", "act_source", recent)

c_img, c_opts = st.columns([2, 1])
item: common.ImageItem | None = None
with c_img:
    source = st.radio("Image", sources, horizontal=True, key="act_source")
    if source == "Bundled sample":
        item = common.sample_select(card.domain, key="act_sample")
    elif source == "Upload an image":
        up = st.file_uploader("Upload an image", type=common.IMAGE_TYPES, key="act_upload",
                              help=f"PNG, JPEG, TIFF or BMP, up to {common.max_upload_mb()} MB.")
        if up is not None:
            item = common.make_item("upload", up.name, up.getvalue())
        else:
            st.info("Upload an image to look at its activations.")
    else:
        item = common.recent_select("act_recent", recent, show_mask=False)
with c_opts:
    padding = common.padding_select("act_padding", card.padding_mode)

if item is None:
    st.stop()

image = None
with common.run_safely(what="read image"):
    image = common.decode_image(item)
if image is None:
    st.stop()
common.remember_item(item)

maps_by_layer = None
with common.run_safely(what="activations"):
    seg = common.get_segmenter(bundle, False, "tensorflow")  # only its padding rules are used
    padded, box = seg.prepare(image, padding)
    with st.spinner("Building the activation probe…"):
        probe = common.get_probe(bundle.key, bundle.loaded)
    need, cap = probe.estimate_bytes(*padded.shape), common.activation_max_bytes()
    if need > cap:  # refuse before anything is allocated
        st.error(f"{item.name}: the activation maps of this {image.shape[0]}x{image.shape[1]} "
                 f"image (padded to {padded.shape[0]}x{padded.shape[1]}) would take about "
                 f"{need / 2**20:,.0f} MiB, over the dashboard's limit of "
                 f"{cap / 2**20:,.0f} MiB per image; accepted: a smaller image or crop "
                 "(set UNET_ACTIVATION_MAX_MB to raise the limit). The Segment page "
                 "handles large images in tiles.")
        st.stop()
    with st.spinner("One forward pass for every layer…"):
        maps_by_layer = common.activation_maps(bundle, item, padding, probe, padded)
if maps_by_layer is None:
    st.stop()

layers = list(maps_by_layer)
with c_opts:
    common.seed_widget("act_layer", "act_layer_last", layers[len(layers) // 2],
                       lambda v: v in maps_by_layer)
    layer = st.selectbox("Layer", layers, key="act_layer",
                         format_func=lambda n: f"{n} {maps_by_layer[n].shape}")
    ss["act_layer_last"] = layer
    shared = st.toggle("Shared colour scale", value=True, key="act_shared",
                       help="On: one scale for every channel (compare channels). Off: each "
                       "channel stretched to its own min … max (see patterns in weak ones).")
st.caption(f"Forward passes for this image: {common.forward_pass_count(bundle, item, padding)} "
           f"· {len(layers)} layers from that pass; switching layers or pages costs none · "
           f"input {image.shape[0]}x{image.shape[1]} padded to {padded.shape[0]}x"
           f"{padded.shape[1]} ({padding})")

maps = maps_by_layer[layer]
cropped = crop_activation(maps, box, padded.shape)  # (h, w, C) over the image region only
channels = cropped.shape[2]
stats = channel_stats(cropped)
lo_all = float(np.nanmin(cropped)) if cropped.size else 0.0
hi_all = float(np.nanmax(cropped)) if cropped.size else 1.0
if hi_all <= lo_all:
    hi_all = lo_all + 1e-6

# ---------------------------------------------------------------- channel grid
g1, g2 = st.columns([3, 2])
with g1:
    start, stop = common.pager(channels, key=f"act_page_{layer}", noun="channels")
    tiles = [viz.decimate(cropped[:, :, c], TILE_MAX_SIDE)[0] for c in range(start, stop)]
    titles = [f"#{c}" for c in range(start, stop)]
    if shared:
        fig = viz.grid_figure(tiles, titles, cols=GRID_COLS, zmin=lo_all, zmax=hi_all,
                              colorscale="Inferno", colorbar_title="activation", tile_px=130)
        note = f"One colour scale for every channel of {layer}: {lo_all:.3g} … {hi_all:.3g}."
    else:
        fig = viz.grid_figure(tiles, titles, cols=GRID_COLS,
                              zmin=[stats[c].min for c in range(start, stop)],
                              zmax=[stats[c].max for c in range(start, stop)],
                              colorscale="Inferno", colorbar_title="own min→max", tile_px=130)
        note = "Each channel stretched to its own min … max (0 = min, 1 = max of that channel)."
    st.plotly_chart(fig, width="stretch", key="act_fig_grid")
    st.caption(note + f" Maps are {cropped.shape[0]}x{cropped.shape[1]} at this layer's "
               "resolution.")

with g2:
    pick = int(st.selectbox("Channel", list(range(channels)), index=start,
                            key=f"act_channel_{layer}_{start}"))
    overlay = st.checkbox("Overlay on input", key="act_overlay")
    one = cropped[:, :, pick]
    zmin, zmax = (lo_all, hi_all) if shared else (stats[pick].min, stats[pick].max)
    if overlay:
        up = viz.nearest_upsample(one, box.top, box.left, box.height, box.width,
                                  maps.shape[:2], padded.shape)
        img_d, k = viz.decimate(image, ONE_MAX_SIDE)
        fig = viz.overlay_heatmap_figure(img_d, up[::k, ::k], f"{layer} #{pick} on the input",
                                         zmin=zmin, zmax=zmax, colorbar_title="activation")
        st.plotly_chart(fig, width="stretch", key="act_fig_one")
        st.caption("Display only: the map is upsampled to the image by nearest neighbour "
                   "(each image pixel shows the map cell covering it).")
    else:
        one_d, k = viz.decimate(one, ONE_MAX_SIDE)
        st.plotly_chart(viz.heatmap_figure(one_d, f"{layer} #{pick}", zmin=zmin, zmax=zmax,
                                           colorscale="Inferno", colorbar_title="activation"),
                        width="stretch", key="act_fig_one")
    s = stats[pick]
    st.caption(f"#{pick}: mean {s.mean:.3g}, max {s.max:.3g}, zeros {s.zero_fraction:.0%}")

# ---------------------------------------------------------------- statistics
dead = sum(1 for s in stats if s.zero_fraction >= 1.0)
table = pd.DataFrame([{"channel": s.channel, "mean": s.mean, "std": s.std, "min": s.min,
                       "max": s.max, "fraction of zeros": s.zero_fraction} for s in stats])
st.markdown(f"**Per-channel statistics of {layer}** on this image · {dead} channel(s) zero "
            "everywhere (dead ReLUs on this image)")
st.dataframe(table, hide_index=True, width="stretch", height=260,
             column_config={c: st.column_config.NumberColumn(format="%.4f")
                            for c in table.columns if c != "channel"})
