"""Pure display helpers: image compositing (numpy) and Plotly figures. No Streamlit here.

Everything that is shown is derived from the engine's arrays; nothing here changes values that
are scored. Large arrays are decimated (every k-th pixel) *for display only*; callers say so.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.colors import get_colorscale
from plotly.subplots import make_subplots

# Colour-blind-safe (Okabe-Ito) colours for the error map and overlays.
TP_COLOR = (0, 158, 115)  # bluish green: predicted and true
FP_COLOR = (230, 159, 0)  # orange: predicted, not true
FN_COLOR = (204, 121, 167)  # reddish purple: true, missed
MASK_COLOR = (0, 114, 178)  # blue: predicted mask overlay
TRUTH_COLOR = (240, 228, 66)  # yellow: true mask outline in thumbnails

MARGIN = {"l": 4, "r": 4, "t": 30, "b": 4}
GRAY = [[0.0, "rgb(0,0,0)"], [1.0, "rgb(255,255,255)"]]


def safe_colorscale(name: str) -> list[list]:
    """A named Plotly colour scale as an explicit list, safe from Streamlit's theming.

    Streamlit's chart theme rewrites the placeholder colours '#000001' ... '#000010' in a
    figure to theme colours, and Inferno / Magma start at '#000004' (black would turn pink).
    Such stops are nudged to a visually identical colour.
    """
    stops = [[float(pos), str(color)] for pos, color in get_colorscale(name)]
    for stop in stops:
        if stop[1].lower().startswith("#0000") and stop[1][5:].isdigit():
            stop[1] = "#010106"
    return stops


def rgb_hex(color: tuple[int, int, int]) -> str:
    """'#rrggbb' of an (r, g, b) tuple."""
    return "#{:02x}{:02x}{:02x}".format(*color)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] (H, W[, C]) -> uint8, rounded and clipped."""
    return np.rint(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * 255).astype(np.uint8)


def display_stride(shape: Sequence[int], max_side: int) -> int:
    """Smallest integer step k such that shape[:2] // k fits in ``max_side`` pixels."""
    side = max(int(shape[0]), int(shape[1]), 1)
    return max(1, -(-side // max_side))


def decimate(array: np.ndarray, max_side: int) -> tuple[np.ndarray, int]:
    """Every k-th row/column so the array fits in ``max_side`` (display only); returns (view, k)."""
    k = display_stride(array.shape, max_side)
    return (array[::k, ::k] if k > 1 else array), k


def png_bytes(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W) or (H, W, 3) array."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def mask_png_bytes(mask: np.ndarray) -> bytes:
    """8-bit grayscale PNG with 0 (background) and 255 (foreground) of a bool mask."""
    return png_bytes(np.asarray(mask, dtype=bool).astype(np.uint8) * np.uint8(255))


def npy_bytes(array: np.ndarray) -> bytes:
    """``np.save`` of an array, as bytes."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def gray_to_rgb(image: np.ndarray) -> np.ndarray:
    """float [0, 1] (H, W) -> float32 (H, W, 3)."""
    g = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    return np.repeat(g[:, :, None], 3, axis=2)


def boundary(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Pixels of a bool mask that touch the background (4-neighbourhood), ``thickness`` wide."""
    m = np.asarray(mask, dtype=bool)
    inner = m.copy()
    for _ in range(max(1, thickness)):
        p = np.pad(inner, 1, mode="constant", constant_values=False)
        inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def blend(base: np.ndarray, where: np.ndarray, color: tuple[int, int, int], alpha: float
          ) -> np.ndarray:
    """Blend ``color`` into float RGB ``base`` where the bool ``where`` is set (returns a copy)."""
    out = np.array(base, dtype=np.float32, copy=True)
    c = np.asarray(color, dtype=np.float32) / 255.0
    a = float(np.clip(alpha, 0.0, 1.0))
    out[where] = (1.0 - a) * out[where] + a * c
    return out


def overlay_rgb(image: np.ndarray, mask: np.ndarray, style: str = "Fill", opacity: float = 0.45,
                color: tuple[int, int, int] = MASK_COLOR) -> np.ndarray:
    """uint8 RGB: the gray image with the mask as a translucent fill or as its outline."""
    base = gray_to_rgb(image)
    if style == "Contour":
        thick = max(1, max(mask.shape) // 400)
        # An outline is thin: draw it at least half opaque so it stays visible.
        return to_uint8(blend(base, boundary(mask, thick), color, max(opacity, 0.5)))
    return to_uint8(blend(base, np.asarray(mask, dtype=bool), color, opacity))


def error_map_rgb(image: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """uint8 RGB: TP / FP / FN pixels in three colours over the dimmed gray image (TN)."""
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    out = gray_to_rgb(image) * 0.55
    for where, color in ((p & t, TP_COLOR), (p & ~t, FP_COLOR), (~p & t, FN_COLOR)):
        out[where] = np.asarray(color, dtype=np.float32) / 255.0
    return to_uint8(out)


def nearest_upsample(cropped: np.ndarray, box_top: int, box_left: int, height: int, width: int,
                     map_shape: Sequence[int], padded_shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour upsampling of a cropped activation map to the image's (H, W).

    ``cropped`` is what :func:`unet_core.introspect.crop_activation` returned for a map of
    ``map_shape`` (h, w) computed on a padded input of ``padded_shape`` (Hp, Wp) whose image
    sits at (box_top, box_left). Each image pixel takes the value of the map cell covering it.
    For display only.
    """
    h, w = int(map_shape[0]), int(map_shape[1])
    hp, wp = int(padded_shape[0]), int(padded_shape[1])
    r0 = (box_top * h) // hp
    c0 = (box_left * w) // wp
    rows = ((np.arange(height) + box_top) * h) // hp - r0
    cols = ((np.arange(width) + box_left) * w) // wp - c0
    rows = np.clip(rows, 0, cropped.shape[0] - 1)
    cols = np.clip(cols, 0, cropped.shape[1] - 1)
    return cropped[np.ix_(rows, cols)]


# --------------------------------------------------------------------------- figures


def _image_axes(fig: go.Figure, row: int | None = None, col: int | None = None) -> None:
    kw = {"row": row, "col": col} if row is not None else {}
    fig.update_xaxes(visible=False, **kw)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", **kw)


def image_figure(rgb: np.ndarray, title: str = "", height: int = 320,
                 legend: Sequence[tuple[str, tuple[int, int, int]]] = ()) -> go.Figure:
    """An RGB or gray uint8 image as a Plotly figure (sent as one PNG, not as numbers).

    ``legend`` adds (label, colour) entries as square markers (e.g. for TP/FP/FN).
    """
    arr = np.asarray(rgb)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(arr)).decode("ascii")
    fig = go.Figure(go.Image(source=uri, hoverinfo="skip"))
    for label, color in legend:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=label,
                                 marker={"color": rgb_hex(color), "symbol": "square",
                                         "size": 12}))
    fig.update_xaxes(visible=False, range=[-0.5, arr.shape[1] - 0.5])
    fig.update_yaxes(visible=False, range=[arr.shape[0] - 0.5, -0.5], scaleanchor="x")
    fig.update_layout(
        title={"text": title, "font": {"size": 14}}, height=height, margin=MARGIN,
        showlegend=bool(legend),
        legend={"orientation": "h", "yanchor": "top", "y": -0.02, "x": 0},
    )
    return fig


def heatmap_figure(z: np.ndarray, title: str = "", zmin: float | None = None,
                   zmax: float | None = None, colorscale: str = "Viridis",
                   colorbar_title: str = "", height: int = 320,
                   text_format: str | None = None) -> go.Figure:
    """A 2-D array as a heatmap (row 0 at the top, square pixels) with a colour bar.

    ``text_format`` (e.g. ".3f") writes each value in its cell (for small kernels).
    """
    arr = np.asarray(z, dtype=np.float32)
    kw: dict = {}
    if text_format:
        kw = {"texttemplate": "%{z:" + text_format + "}", "textfont": {"size": 12}}
    fig = go.Figure(go.Heatmap(
        z=arr, zmin=zmin, zmax=zmax, colorscale=safe_colorscale(colorscale),
        colorbar={"title": {"text": colorbar_title}, "thickness": 12},
        hovertemplate="row %{y}, col %{x}: %{z:.4g}<extra></extra>", **kw))
    _image_axes(fig)
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=height, margin=MARGIN)
    return fig


def overlay_heatmap_figure(image: np.ndarray, values: np.ndarray, title: str = "",
                           opacity: float = 0.55, colorscale: str = "Inferno",
                           colorbar_title: str = "", zmin: float | None = None,
                           zmax: float | None = None, height: int = 360) -> go.Figure:
    """Gray image with a translucent heatmap of the same (H, W) on top, with a colour bar."""
    fig = go.Figure()
    fig.add_trace(go.Heatmap(z=np.asarray(image, dtype=np.float32), colorscale=GRAY,
                             zmin=0.0, zmax=1.0, showscale=False, hoverinfo="skip"))
    fig.add_trace(go.Heatmap(
        z=np.asarray(values, dtype=np.float32), colorscale=safe_colorscale(colorscale),
        opacity=opacity,
        zmin=zmin, zmax=zmax, colorbar={"title": {"text": colorbar_title}, "thickness": 12},
        hovertemplate="row %{y}, col %{x}: %{z:.4g}<extra></extra>"))
    _image_axes(fig)
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=height, margin=MARGIN)
    return fig


def curves_figure(thresholds: np.ndarray, series: dict[str, np.ndarray], *,
                  current: float | None = None, best: float | None = None,
                  reference: float | None = None, reference_label: str = "card",
                  title: str = "", height: int = 320, yaxis_title: str = "score") -> go.Figure:
    """Metric(s) vs threshold, with vertical lines at the current / best / reference threshold."""
    fig = go.Figure()
    for name, values in series.items():
        fig.add_trace(go.Scatter(x=np.asarray(thresholds), y=np.asarray(values), mode="lines",
                                 name=name, hovertemplate="t=%{x:.2f}: %{y:.3f}"))
    if reference is not None:
        fig.add_vline(x=reference, line={"color": "gray", "dash": "dot"},
                      annotation_text=f"{reference_label} {reference:.2f}",
                      annotation_position="bottom right")
    # The "best" and "now" labels sit on the outer sides of their two lines, so they never
    # overlap however close the thresholds are; one label when they coincide.
    same = best is not None and current is not None and round(best, 2) == round(current, 2)
    now_left = best is None or current is None or current <= best
    if best is not None:
        fig.add_vline(x=best, line={"color": "#009E73", "dash": "dash"},
                      annotation_text="" if same else f"best {best:.2f}",
                      annotation_position="top right" if now_left else "top left")
    if current is not None:
        fig.add_vline(x=current, line={"color": "#D55E00"},
                      annotation_text=(f"now = best {current:.2f}" if same
                                       else f"now {current:.2f}"),
                      annotation_position="top left" if now_left else "top right")
    fig.update_layout(
        title={"text": title, "font": {"size": 14}, "y": 0.98, "yanchor": "top"},
        height=height, margin={"l": 40, "r": 10, "t": 64, "b": 36},
        xaxis={"title": {"text": "threshold"}, "range": [0, 1]},
        yaxis={"title": {"text": yaxis_title}, "range": [0, 1.02]},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.06, "x": 0},
    )
    return fig


def grid_figure(tiles: Sequence[np.ndarray], titles: Sequence[str], *, cols: int,
                zmin: float | Sequence[float], zmax: float | Sequence[float],
                colorscale: str, colorbar_title: str, tile_px: int = 110,
                hover_label: str = "value") -> go.Figure:
    """A grid of small heatmaps sharing ONE colour axis (one colour bar for the whole grid).

    ``zmin``/``zmax``: one range for all tiles (shared scale), or one per tile; per-tile
    ranges are applied by rescaling each tile to 0..1 so the single colour bar reads
    'each tile's min -> max'.
    """
    n = len(tiles)
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    per_tile = not np.isscalar(zmin)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(titles),
                        horizontal_spacing=0.02, vertical_spacing=0.3 / rows)
    for k, tile in enumerate(tiles):
        r, c = k // cols + 1, k % cols + 1
        z = np.asarray(tile, dtype=np.float32)
        if per_tile:
            lo, hi = float(zmin[k]), float(zmax[k])  # type: ignore[index]
            z = (z - lo) / (hi - lo) if hi > lo else np.zeros_like(z)
        fig.add_trace(go.Heatmap(z=z, coloraxis="coloraxis",
                                 hovertemplate=f"{titles[k]} r%{{y}} c%{{x}}: "
                                 f"%{{z:.4g}} {hover_label}<extra></extra>"), row=r, col=c)
        _image_axes(fig, row=r, col=c)
        # Square pixels in each subplot: anchor each y axis to its own x axis.
        axis = "" if k == 0 else str(k + 1)
        fig.update_yaxes(scaleanchor=f"x{axis}", row=r, col=c)
    lo_all, hi_all = (0.0, 1.0) if per_tile else (float(zmin), float(zmax))  # type: ignore[arg-type]
    fig.update_layout(
        coloraxis={"colorscale": safe_colorscale(colorscale), "cmin": lo_all, "cmax": hi_all,
                   "colorbar": {"title": {"text": colorbar_title}, "thickness": 12}},
        height=rows * tile_px + 40, margin={"l": 4, "r": 4, "t": 28, "b": 4},
    )
    fig.update_annotations(font_size=10)
    return fig


def histogram_figure(counts: np.ndarray, edges: np.ndarray, title: str = "",
                     xaxis_title: str = "weight", height: int = 260) -> go.Figure:
    """Bar chart of a histogram given as (counts, edges)."""
    centers = 0.5 * (edges[:-1] + edges[1:])
    fig = go.Figure(go.Bar(x=centers, y=counts, width=np.diff(edges), marker_line_width=0,
                           hovertemplate="%{x:.4g}: %{y}<extra></extra>"))
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=height,
                      margin={"l": 40, "r": 10, "t": 36, "b": 36}, bargap=0,
                      xaxis={"title": {"text": xaxis_title}}, yaxis={"title": {"text": "count"}})
    return fig
