"""Display helpers of app/viz.py: pure numpy / Plotly objects, no Streamlit server."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app import viz


def square_mask(size: int = 40, lo: int = 10, hi: int = 30) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[lo:hi, lo:hi] = True
    return mask


def changed(out: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Pixels of an overlay that differ from the plain gray image."""
    return np.any(out != viz.to_uint8(viz.gray_to_rgb(image)), axis=2)


def has_color(rgb: np.ndarray, color: tuple[int, int, int]) -> bool:
    return bool(np.all(rgb == np.asarray(color, dtype=np.uint8), axis=2).any())


# ---------------------------------------------------------------- overlays


def test_contour_is_two_pixels_wide_and_inside_the_mask_edge() -> None:
    image = np.full((40, 40), 0.1)
    mask = square_mask()
    out = viz.overlay_rgb(image, mask, "Contour", 0.45)
    drawn = changed(out, image)
    ring = mask.copy()
    ring[12:28, 12:28] = False  # the 2 px inside the square's edge
    assert np.array_equal(drawn, ring)
    assert drawn[10, 20] and drawn[11, 20] and not drawn[12, 20] and not drawn[9, 20]
    colour = viz.overlay_colors(image, mask)["pred"]
    assert np.all(out[ring] == colour)  # full opacity: the line is the colour itself
    assert np.array_equal(changed(viz.overlay_rgb(image, mask, "Contour", thickness=3), image),
                          viz.boundary(mask, 3))


def test_contour_skips_the_image_border() -> None:
    image = np.full((30, 30), 0.2)
    mask = np.zeros((30, 30), dtype=bool)
    mask[15:, :] = True  # the bottom half: its only real edge is row 15
    drawn = changed(viz.overlay_rgb(image, mask, "Contour"), image)
    assert np.array_equal(np.flatnonzero(drawn.any(axis=1)), [15, 16])
    assert drawn[15].all() and drawn[16].all()


def test_fill_blends_at_the_opacity_and_outlines_at_full_opacity() -> None:
    image = np.full((40, 40), 0.1)
    mask = square_mask()
    colour = np.asarray(viz.overlay_colors(image, mask)["pred"], dtype=np.float32) / 255
    out = viz.overlay_rgb(image, mask, "Fill", 0.4)
    expected_fill = viz.to_uint8(0.6 * np.full(3, 0.1, np.float32) + 0.4 * colour)
    assert np.array_equal(out[20, 20], expected_fill)  # the inside: translucent
    assert np.array_equal(out[10, 20], viz.to_uint8(colour))  # the edge: opaque
    assert np.array_equal(out[5, 5], viz.to_uint8(np.full(3, 0.1)))  # outside: untouched
    assert np.array_equal(changed(out, image), mask)


def test_explicit_colour_is_still_honoured() -> None:
    image = np.full((40, 40), 0.5)
    out = viz.overlay_rgb(image, square_mask(), "Contour", 0.5, (1, 2, 3))
    assert np.all(out[10, 10:30] == (1, 2, 3))


def test_contrast_color_is_bright_on_dark_and_dark_on_bright() -> None:
    dark, bright = np.full((20, 20), 0.05), np.full((20, 20), 0.95)
    on_dark, on_bright = viz.contrast_color(dark), viz.contrast_color(bright)
    lum = viz._color_luminance
    assert lum(on_dark) > 0.4 > lum(on_bright)
    assert on_dark in viz.CONTRAST_COLORS and on_bright in viz.CONTRAST_COLORS
    # ``where`` decides: a dark image with a bright band gets a dark colour there
    image = dark.copy()
    image[:, 10:] = 0.95
    band = np.zeros_like(image, dtype=bool)
    band[:, 12:] = True
    assert lum(viz.contrast_color(image, band)) < 0.4
    # uint8 and RGB images are read too
    assert viz.contrast_color(np.full((4, 4, 3), 250, np.uint8)) == on_bright
    # black / white only when no colour reaches the minimum
    assert viz.contrast_color(np.full((4, 4), 0.62)) in (viz.BLACK, viz.WHITE)


@pytest.mark.parametrize("gray", [0.0, 0.1, 0.3, 0.5, 0.62, 0.7, 0.8, 0.9, 1.0])
def test_truth_and_prediction_colours_differ(gray: float) -> None:
    image = np.full((40, 40), gray)
    colors = viz.overlay_colors(image, square_mask(), square_mask(lo=12, hi=34))
    assert colors["pred"] != colors["truth"]
    assert set(colors) == {"pred", "truth"}


def test_overlay_pairs_follow_the_image() -> None:
    assert viz.overlay_colors(np.zeros((8, 8))) == {"pred": viz.SKY_BLUE, "truth": viz.YELLOW}
    assert viz.overlay_colors(np.ones((8, 8))) == {"pred": viz.BLUE, "truth": viz.ORANGE}


def test_truth_is_outlined_outside_in_its_own_colour() -> None:
    image = np.full((40, 40), 0.1)
    mask = square_mask()
    out = viz.overlay_rgb(image, mask, "Contour", truth=mask)
    colors = viz.overlay_colors(image, mask, mask)
    outer = viz.boundary(mask, 2, side="outer")
    assert np.all(out[outer] == colors["truth"])
    assert np.all(out[viz.boundary(mask, 2)] == colors["pred"])
    assert np.array_equal(changed(out, image), outer | viz.boundary(mask, 2))
    legend = viz.overlay_legend(colors, style="Contour")
    assert viz.color_name(colors["pred"]) in legend and viz.color_name(colors["truth"]) in legend
    with pytest.raises(ValueError, match="same stride"):
        viz.overlay_rgb(image, mask, truth=mask[::2, ::2])


def test_min_side_enlarges_small_images_by_an_integer_factor() -> None:
    image = np.full((40, 40), 0.1)
    out = viz.overlay_rgb(image, square_mask(), "Contour", min_side=130)
    assert out.shape == (160, 160, 3)  # x4: the smallest factor reaching 130
    assert changed(out, np.full((160, 160), 0.1))[40:42, 80].all()  # still 2 px
    assert not changed(out, np.full((160, 160), 0.1))[42, 80]
    assert viz.overlay_rgb(image, square_mask(), min_side=40).shape == (40, 40, 3)


def test_upscale_nearest() -> None:
    tile = np.arange(6, dtype=np.uint8).reshape(2, 3)
    big = viz.upscale_nearest(tile, 256)
    assert big.shape == (172, 258)  # x86: the longer side reaches 256
    assert np.array_equal(big[::86, ::86], tile)
    rgb = np.zeros((8, 8, 3), np.uint8)
    assert viz.upscale_nearest(rgb, 256).shape == (256, 256, 3)
    assert viz.upscale_nearest(rgb, 4).shape == (8, 8, 3)  # already big enough


def test_thumbnail_shows_both_outlines_and_fits() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((400, 300)) * 0.2
    truth = np.zeros((400, 300), dtype=bool)
    truth[100:300, 50:200] = True
    pred = np.zeros_like(truth)
    pred[150:350, 80:250] = True
    thumb = viz.thumbnail_rgb(image, pred, truth, max_side=160)
    assert thumb.dtype == np.uint8 and thumb.ndim == 3 and max(thumb.shape[:2]) <= 160
    assert thumb.shape[:2] == image[::3, ::3].shape  # stride 3
    colors = viz.overlay_colors(image[::3, ::3], pred[::3, ::3], truth[::3, ::3])
    assert colors["pred"] != colors["truth"]
    assert has_color(thumb, colors["pred"]) and has_color(thumb, colors["truth"])
    # the prediction alone, and small images enlarged within max_side
    only = viz.thumbnail_rgb(image[:50, :50], pred[:50, :50] | True, None, max_side=160)
    assert only.shape == (150, 150, 3)
    assert viz.thumbnail_rgb(image[:10, :10], None, None, 160).shape == (160, 160, 3)
    legend = viz.outline_legend(colors)
    assert viz.color_name(colors["pred"]) in legend and viz.color_name(colors["truth"]) in legend
    assert "sky blue" in viz.outline_legend() and "yellow" in viz.outline_legend()


# ---------------------------------------------------------------- colour maps


def test_colormap_endpoints_and_nan() -> None:
    values = np.array([[0.0, 1.0], [-5.0, np.nan]])
    viridis = viz.colormap_rgb(values, 0.0, 1.0, "viridis")
    assert viridis.dtype == np.uint8 and viridis.shape == (2, 2, 3)
    assert tuple(viridis[0, 0]) == (0x44, 0x01, 0x54) and tuple(viridis[0, 1]) == (0xfd, 0xe7, 0x25)
    assert tuple(viridis[1, 0]) == tuple(viridis[0, 0])  # clipped below vmin
    assert tuple(viridis[1, 1]) == (128, 128, 128)  # NaN
    gray = viz.colormap_rgb(np.array([[2.0, 4.0, 3.0]]), 2.0, 4.0, "gray")
    assert gray[0].tolist() == [[0, 0, 0], [255, 255, 255], [128, 128, 128]]
    inferno = viz.colormap_rgb(np.array([[0.0, 1.0]]), 0.0, 1.0, "inferno")
    assert tuple(inferno[0, 0]) == (0, 0, 4) and tuple(inferno[0, 1]) == (0xfc, 0xff, 0xa4)
    assert viz.colormap_lut("RdBu_r").shape == (256, 3)
    assert np.all(viz.colormap_rgb(np.ones((3, 3)), 1.0, 1.0) == viz.colormap_lut("viridis")[0])
    with pytest.raises(ValueError, match="unknown colour map"):
        viz.colormap_lut("no-such-map")


def test_colorbar_png_is_a_small_image() -> None:
    bar = viz.colorbar_rgb(0.0, 1.0, "inferno", "probability", width=240)
    assert bar.shape[1] == 240 and bar.shape[2] == 4 and bar.shape[0] < 60
    assert tuple(bar[0, 0, :3]) == (0, 0, 4) and tuple(bar[0, -1, :3]) == (0xfc, 0xff, 0xa4)
    png = viz.colorbar_png(-1.0, 1.0, "RdBu_r", "weight", width=200)
    assert Image.open(io.BytesIO(png)).size[0] == 200


def test_grid_rgb_size_and_minimum_tile_size() -> None:
    tiles = [np.full((3, 3), float(k)) for k in range(6)]
    grid = viz.grid_image(tiles, cols=4, zmin=0.0, zmax=5.0, cmap="viridis", tile_px=96, gap=4)
    assert np.array_equal(viz.grid_rgb(tiles, 4, 0.0, 5.0, "viridis", 96, 4), grid.rgb)
    assert grid.rgb.dtype == np.uint8
    assert grid.rgb.shape == (2 * 96 + 4 + 2, 4 * 96 + 3 * 4 + 2, 3)  # + a 1 px margin
    assert len(grid.boxes) == 6 and grid.scales == [32] * 6
    for k, (top, left, h, w) in enumerate(grid.boxes):
        assert h >= 96 and w >= 96
        expected = viz.colormap_rgb(np.array([[k]]), 0.0, 5.0, "viridis")[0, 0]
        assert np.all(grid.rgb[top:top + h, left:left + w] == expected)
    # each tile framed in gray, the rest of the gap background
    assert np.all(grid.rgb[1:97, 97] == 160) and np.all(grid.rgb[1:97, 98:100] == 255)
    plain = viz.grid_image(tiles, cols=4, zmin=0.0, zmax=5.0, frame=None)
    assert plain.rgb.shape == (2 * 96 + 4, 4 * 96 + 3 * 4, 3)
    assert np.all(plain.rgb[:, 96:100] == 255)
    # 8x8 maps reach tile_px too; bigger tiles are kept as they are
    assert viz.grid_image([np.zeros((8, 8))], 4, 0.0, 1.0).boxes[0][2:] == (96, 96)
    assert viz.grid_rgb([np.zeros((130, 100))], 4, 0.0, 1.0, frame=None).shape[:2] == (130, 100)


def test_grid_rgb_per_tile_ranges_and_titles() -> None:
    tiles = [np.array([[0.0, 10.0]]), np.array([[-1.0, 1.0]])]
    grid = viz.grid_image(tiles, 2, [0.0, -1.0], [10.0, 1.0], "gray", tile_px=10,
                          titles=["#0", "#1"])
    assert grid.boxes[0][0] > 0  # room for the titles
    for top, left, _, w in grid.boxes:
        assert np.all(grid.rgb[top, left] == 0) and np.all(grid.rgb[top, left + w - 1] == 255)
    assert viz.grid_image([], 4, 0.0, 1.0).boxes == []
    assert viz.grid_rgb([], 4, 0.0, 1.0).shape == (1, 1, 3)


# ---------------------------------------------------------------- wording


@pytest.mark.parametrize(("n", "text"), [
    (1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"),
    (13, "13th"), (21, "21st"), (22, "22nd"), (23, "23rd"), (101, "101st"), (111, "111th"),
    (112, "112th"), (0, "0th"),
])
def test_ordinal(n: int, text: str) -> None:
    assert viz.ordinal(n) == text


def test_stride_phrase() -> None:
    assert viz.stride_phrase(1) == "every pixel"
    assert viz.stride_phrase(2) == "every 2nd pixel"
    assert viz.stride_phrase(3, "row") == "every 3rd row"


def test_fit_title() -> None:
    assert viz.fit_title("short title") == "short title"
    long = "a_very_long_seismic_file_name_0001234567.png: IoU vs threshold"
    cut = viz.fit_title(long)
    assert len(cut) == 48 and "…" in cut
    assert cut.startswith("a_very_long") and cut.endswith("IoU vs threshold")
    end = viz.fit_title(long, 20, keep_end=False)
    assert len(end) <= 20 and end.endswith("…") and end.startswith("a_very_long")
    assert viz.fit_title("x" * 48) == "x" * 48


# ---------------------------------------------------------------- figures


def label_rows(fig) -> list[tuple[str, float, str, float]]:
    return [(a.text, a.x, a.xanchor, a.y) for a in fig.layout.annotations]


@pytest.mark.parametrize(("current", "best", "reference"), [
    (0.40, 0.42, 0.5), (0.44, 0.42, 0.43), (0.42, 0.42, 0.5), (0.0, 0.02, 0.01),
    (1.0, 0.97, 0.99), (0.5, None, None), (None, 0.3, 0.9), (0.02, 0.98, 0.5),
])
def test_curve_labels_stay_inside_and_apart(current: float | None, best: float | None,
                                            reference: float | None) -> None:
    t = np.linspace(0, 1, 101)
    fig = viz.curves_figure(t, {"IoU": t, "Dice": t ** 0.5, "TGS": t ** 2}, current=current,
                            best=best, reference=reference, title="x")
    labels = label_rows(fig)
    assert labels
    y_top = fig.layout.yaxis.range[1]
    for text, x, anchor, y in labels:
        width = viz.LABEL_CHAR_W * len(text)
        lo, hi = (x - width, x) if anchor == "right" else (x, x + width)
        assert lo >= 0.0 and hi <= 1.0, (text, x, anchor)
        assert 1.0 < y < y_top  # above the data, inside the plot
        if x < 0.1:
            assert anchor == "left"
        if x > 0.9:
            assert anchor == "right"
    for i, (_, xa, _, ya) in enumerate(labels):
        for _, xb, _, yb in labels[i + 1:]:
            if abs(xa - xb) < viz.LABEL_MIN_DX:
                assert ya != yb
    assert fig.layout.xaxis.range == (0, 1)


def test_curve_series_differ_by_colour_and_dash() -> None:
    t = np.linspace(0, 1, 11)
    fig = viz.curves_figure(t, {"mean IoU": t, "mean Dice": t, "TGS metric": t})
    colours = [d.line.color for d in fig.data]
    dashes = [d.line.dash for d in fig.data]
    assert len(set(colours)) == 3 and dashes == ["solid", "dash", "dot"]
    assert fig.layout.legend.orientation == "h" and fig.layout.showlegend
    assert fig.layout.margin.l >= 50 and fig.layout.margin.b >= 48


def test_every_figure_title_is_fitted() -> None:
    long = "Input · " + "x" * 100 + ".png (1024x1024)"
    z = np.zeros((4, 4))
    figs = [
        viz.image_figure(np.zeros((4, 4, 3), np.uint8), long),
        viz.heatmap_figure(z, long),
        viz.overlay_heatmap_figure(z, z, long),
        viz.curves_figure(np.linspace(0, 1, 5), {"IoU": np.zeros(5)}, title=long),
        viz.histogram_figure(np.ones(3), np.arange(4.0), long),
    ]
    for fig in figs:
        assert len(fig.layout.title.text) <= viz.TITLE_MAX_CHARS
        assert fig.layout.title.text.endswith("(1024x1024)")


# ---------------------------------------------------------------- colour images and label maps


def test_colour_images_stay_in_colour() -> None:
    rgb = np.zeros((4, 6, 3), np.float32)
    rgb[..., 0] = 1.0  # pure red
    assert viz.as_rgb(rgb).tolist() == rgb.tolist()
    assert viz.as_rgb(np.full((2, 2), 0.5, np.float32))[0, 0].tolist() == [0.5, 0.5, 0.5]
    rgba = np.concatenate([rgb, np.ones((4, 6, 1), np.float32)], axis=2)
    assert viz.as_rgb(rgba).shape == (4, 6, 3)
    mask = np.zeros((4, 6), bool)
    mask[1:3, 1:4] = True
    out = viz.overlay_rgb(rgb, mask, "Contour", color=viz.BLUE)
    assert out[0, 0].tolist() == [255, 0, 0]  # the red image, not a gray one
    errors = viz.error_map_rgb(rgb, mask, np.zeros_like(mask))
    assert errors[0, 0].tolist() == [140, 0, 0]  # true negative: the dimmed (0.55) colour
    assert errors[1, 1].tolist() == list(viz.FP_COLOR)
    thumb = viz.thumbnail_rgb(rgb, None, None, max_side=12)
    assert thumb.shape == (8, 12, 3) and thumb[0, 0].tolist() == [255, 0, 0]


def test_label_maps_use_the_engines_label_colours() -> None:
    from unet_core.io import label_palette, read_label_mask

    labels = np.array([[0, 1, 1], [2, 2, 0]], np.uint8)
    rgb = viz.label_rgb(labels, 3)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 1].tolist() == label_palette(3)[1].tolist()
    assert [viz.label_color_name(i) for i in range(3)] == ["black", "red", "green"]
    assert read_label_mask(viz.label_png_bytes(labels), 3).tolist() == labels.tolist()
    assert viz.label_edges(labels).tolist() == [[True, True, True], [False, True, False]]
    image = np.full((2, 3), 1.0, np.float32)  # white
    blended = viz.label_overlay_rgb(image, labels, 3, alpha=0.5)
    assert blended[0, 0].tolist() == [128, 128, 128]  # half white, half black
    red = label_palette(3)[1].astype(float)
    assert np.abs(blended[0, 1] - (255 + red) / 2).max() <= 0.5 + 1e-9


def test_label_thumbnail_outlines_the_true_classes_in_white() -> None:
    image = np.zeros((20, 20), np.float32)
    pred = np.zeros((20, 20), np.uint8)
    truth = np.zeros((20, 20), np.uint8)
    truth[5:15, 5:15] = 2
    out = viz.label_thumbnail_rgb(image, pred, truth, 3, max_side=40)
    assert out.shape == (40, 40, 3)  # enlarged by 2
    white = np.all(out == 255, axis=2)
    assert white.any() and white[10:30, 10:30].any() and not white[:8].any()
    assert np.all(out[~white] == 0)  # class 0 (black) blended over black
