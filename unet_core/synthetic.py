"""Seeded synthetic images with exact ground-truth masks, for demos and tests.

Three kinds of data are imitated:

* :func:`seismic_section` - a 101x101 crop of a seismic section like the TGS Salt
  Identification images: dipping, folded, band-limited reflectors, sometimes a fault, and
  sometimes a salt body reaching an edge of the crop (quieter, vertically streaked interior,
  strong boundary reflection, layers dragged against it); texture statistics matched to TGS.
* :func:`fluorescence_nuclei` - a fluorescence microscopy field like DSB2018: bright,
  slightly irregular nuclei on a dark, unevenly lit background, blurred and noisy.
* :func:`em_membranes` - a serial-section TEM field like the ISBI 2012 EM segmentation
  data: pale, finely textured cells with dark organelles, separated by thin dark
  membranes (the mask marks the membranes).

The mask returned with each image is the shape the image was drawn from, so it is
exact. Every function is deterministic for a given ``seed`` (numpy ``default_rng``).
:func:`make_pairs` writes such pairs as 8-bit grayscale PNGs (masks 0/255).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from unet_core.errors import UnetCoreError

__all__ = [
    "KINDS",
    "em_membranes",
    "fluorescence_nuclei",
    "make_pairs",
    "seismic_section",
    "write_pair",
]

KINDS: tuple[str, ...] = ("seismic", "nuclei", "membrane")
"""Kinds accepted by :func:`make_pairs`."""

_DEFAULT_SHAPES: dict[str, tuple[int, int]] = {
    "seismic": (101, 101),
    "nuclei": (256, 256),
    "membrane": (256, 256),
}


def _check_shape(shape: tuple[int, int], minimum: int) -> tuple[int, int]:
    """Return ``shape`` as two ints, or raise UnetCoreError if it is too small."""
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        raise UnetCoreError(f"shape must be (height, width), got {shape!r}") from exc
    if h < minimum or w < minimum:
        raise UnetCoreError(f"shape must be at least {minimum}x{minimum} pixels, got {h}x{w}")
    return h, w


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to unit std; float64 array of ``shape``."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    std = field.std()
    return field / std if std > 0 else field


def _ricker(t: np.ndarray, freq: float) -> np.ndarray:
    """Ricker (Mexican hat) wavelet at times ``t`` (samples) with peak frequency ``freq``."""
    a = (np.pi * freq * t) ** 2
    return (1.0 - 2.0 * a) * np.exp(-a)


# ---------------------------------------------------------------------------------------
# Seismic
# ---------------------------------------------------------------------------------------


def _sediments(rng: np.random.Generator, h: int, w: int,
               salt_distance: np.ndarray | None = None) -> np.ndarray:
    """Layered reflectors (zero-mean, unit std), float64 HxW.

    Reflectors dip at up to about 55 degrees and fold, as next to salt in the TGS crops (whose
    horizontal and vertical gradients are of similar size). With ``salt_distance`` (pixels from
    the salt, HxW) they are dragged up or down along the salt flank and truncated against it.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    scale = max(h, w)

    # Geological time t(y, x): depth + regional dip + folds (growing with depth) + fault.
    dip = rng.uniform(-1.4, 1.4)
    t = yy * rng.uniform(0.8, 1.2) + dip * xx
    for _ in range(int(rng.integers(1, 4))):
        wavelength = rng.uniform(0.6, 3.0) * scale
        amp = rng.uniform(0.5, 6.0) * scale / 101.0
        phase = rng.uniform(0, 2 * np.pi)
        growth = 1.0 + rng.uniform(-0.5, 1.0) * yy / h
        t += amp * growth * np.sin(2 * np.pi * xx / wavelength + phase)
    if salt_distance is not None:  # drag: layers bend up (or down) towards the salt
        reach = rng.uniform(0.1, 0.35) * scale
        t += rng.uniform(-25.0, 25.0) * scale / 101.0 * np.exp(-np.maximum(salt_distance, 0.0)
                                                               / reach)
    if rng.random() < 0.35:  # normal/reverse fault: a straight line with a throw across it
        x0 = rng.uniform(0.2, 0.8) * w
        slope = rng.uniform(-0.8, 0.8)
        throw = rng.uniform(3.0, 12.0) * rng.choice([-1.0, 1.0]) * scale / 101.0
        t += throw * (xx > x0 + slope * (yy - h / 2))

    # 1-D reflectivity along t, convolved with a Ricker wavelet -> band-limited trace.
    t_min, t_max = float(t.min()) - 30.0, float(t.max()) + 30.0
    n = int(np.ceil(t_max - t_min)) + 1
    refl = rng.standard_normal(n) * rng.uniform(0.3, 1.0)
    spikes = rng.random(n) < rng.uniform(0.03, 0.1)
    refl[spikes] += rng.standard_normal(int(spikes.sum())) * 3.0
    freq = 1.0 / rng.uniform(12.0, 24.0) * 101.0 / scale
    half = int(np.ceil(2.5 / freq))
    trace = np.convolve(refl, _ricker(np.arange(-half, half + 1, dtype=np.float64), freq), "same")
    image = np.interp(t, t_min + np.arange(n), trace)

    # Lateral amplitude variation and band-limited noise.
    image *= np.clip(1.0 + 0.4 * _smooth_noise(rng, (h, w), sigma=scale / 8.0), 0.2, None)
    image /= image.std() + 1e-12
    noise = ndimage.gaussian_filter(rng.standard_normal((h, w)), (0.8, 1.6))
    image += rng.uniform(0.1, 0.4) * noise / (noise.std() + 1e-12)
    return image / (image.std() + 1e-12)


def _salt_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth salt-body mask (bool HxW), covering roughly 5-95% of the image.

    Like the TGS crops, the body nearly always reaches an edge: it fills the bottom (the top of a
    salt dome), the top (its base), or one side (a steep flank); now and then it is a lobe whose
    centre lies near an edge.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yn, xn = yy / (h - 1) - 0.5, xx / (w - 1) - 0.5
    scale = max(h, w)
    coverage = rng.uniform(0.05, 0.95)
    style = rng.choice(["bottom", "top", "flank", "lobe"], p=[0.35, 0.15, 0.4, 0.1])
    wiggle = _smooth_noise(rng, (h, w), sigma=scale / rng.uniform(5.0, 12.0))
    if style == "lobe":  # perturbed ellipse centred near an edge
        side = rng.uniform(0, 2 * np.pi)
        cy, cx = 0.5 * np.sin(side), 0.5 * np.cos(side)
        ry, rx = rng.uniform(0.4, 1.2, size=2)
        theta = rng.uniform(0, np.pi)
        u = (xn - cx) * np.cos(theta) + (yn - cy) * np.sin(theta)
        v = -(xn - cx) * np.sin(theta) + (yn - cy) * np.cos(theta)
        field = -np.hypot(u / rx, v / ry) + 0.08 * wiggle
    else:  # an edge-anchored body: a tilted ramp plus low-frequency noise
        spread = 0.35 if style == "flank" else 0.7
        angle = {"bottom": np.pi / 2, "top": -np.pi / 2, "flank": rng.choice([0.0, np.pi])}[
            style
        ] + rng.uniform(-spread, spread)
        ramp = xn * np.cos(angle) + yn * np.sin(angle)
        curve = rng.uniform(-1.0, 1.0) * (xn * np.sin(angle) - yn * np.cos(angle)) ** 2
        field = ramp + curve + rng.uniform(0.02, 0.12) * wiggle
    threshold = np.quantile(field, 1.0 - coverage)
    mask = field > threshold
    # Drop specks: keep components that are at least 1% of the image.
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
        keep = (sizes >= 0.01 * h * w) | (sizes == sizes.max())
        mask = np.isin(labels, np.flatnonzero(keep) + 1)
    mask = ndimage.binary_fill_holes(mask)
    return mask


def seismic_section(
    shape: tuple[int, int] = (101, 101), *, seed: int, salt: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic seismic crop like the TGS salt images, with its exact salt mask.

    Mid-grey background with laterally continuous, dipping and folded, band-limited
    reflectors (Ricker wavelet), lateral amplitude variation, noise and maybe a fault.
    With salt (``salt=None``: about 60% of seeds; ``True``: always; ``False``: never) a
    smooth body that reaches an edge of the crop (bottom, top or a flank), with the layers
    dragged along it and truncated against it, a strong boundary reflection, and a quieter
    interior without continuous layers: weak, vertically streaked texture at about half the
    amplitude of the sediments, a little lighter or darker than them.

    The texture statistics (interior and exterior amplitude and gradients, boundary strength,
    brightness and contrast) were matched to the TGS training crops.

    Returns ``(image, mask)``: image float32 HxW in [0, 1], mask bool HxW.
    """
    h, w = _check_shape(shape, 8)
    rng = np.random.default_rng(seed)
    has_salt = rng.random() < 0.6
    if salt is not None:
        has_salt = bool(salt)
    scale = max(h, w)

    if has_salt:
        mask = _salt_mask(rng, h, w)
        dist = ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)
        image = _sediments(rng, h, w, salt_distance=dist)
        # Interior: weak texture, streaked vertically (it varies faster across than down).
        interior = _smooth_noise(rng, (h, w), sigma=(5.0 * scale / 101.0, 2.2 * scale / 101.0))
        interior = interior * rng.uniform(0.35, 0.7) + rng.uniform(-0.5, 0.5)
        soft = ndimage.gaussian_filter(mask.astype(np.float64), 1.0)
        image = image * (1.0 - soft) + interior * soft
        # Boundary: a strong, broad reflection along the salt edge, either polarity.
        freq = 1.0 / rng.uniform(7.0, 12.0) * 101.0 / scale
        strength = rng.uniform(1.8, 3.0) * rng.choice([-1.0, 1.0])
        image += strength * _ricker(dist - rng.uniform(-1.0, 2.0), freq)
    else:
        mask = np.zeros((h, w), dtype=bool)
        image = _sediments(rng, h, w)

    # Mild smoothing like the processed TGS images, then map to grey with a per-image
    # brightness and contrast (TGS crops: means ~0.35-0.6, standard deviations ~0.07-0.14).
    image = ndimage.gaussian_filter(image, 0.8)
    image = (image - image.mean()) / (image.std() + 1e-12)
    image = rng.uniform(0.36, 0.62) + rng.uniform(0.07, 0.14) * image
    return np.clip(image, 0.0, 1.0).astype(np.float32), mask


# ---------------------------------------------------------------------------------------
# Nuclei
# ---------------------------------------------------------------------------------------


def _nucleus(rng: np.random.Generator, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One nucleus in its own box: (mask bool hxw, relative intensity float64 hxw)."""
    a = radius * rng.uniform(0.9, 1.15)
    b = a * rng.uniform(0.6, 1.0)
    theta = rng.uniform(0, np.pi)
    half = int(np.ceil(a * 1.3)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    yy += rng.uniform(-0.5, 0.5)  # sub-pixel centre
    xx += rng.uniform(-0.5, 0.5)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    rho = np.hypot(u / a, v / b)
    phi = np.arctan2(v / b, u / a)
    edge = np.ones_like(phi)
    for k in range(2, 5):  # slightly irregular outline
        edge += rng.normal(0, 0.035) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    mask = rho <= edge
    # Brighter core, mottled chromatin texture.
    texture = _smooth_noise(rng, mask.shape, sigma=max(radius / 6.0, 0.8))
    inten = (1.0 - 0.25 * np.clip(rho / edge, 0, 1) ** 2) * (1.0 + rng.uniform(0.05, 0.2) * texture)
    return mask, np.clip(inten, 0.2, None) * mask


def fluorescence_nuclei(
    shape: tuple[int, int] = (256, 256), *, seed: int, n_nuclei: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic fluorescence field like DSB2018, with its exact nuclei mask.

    Dark background with slight uneven illumination; bright, slightly irregular
    elliptical nuclei (radius ~6-20 px at 256x256, scaled with the image), some touching,
    intensity varying per nucleus with internal texture; blurred by a Gaussian PSF, with
    Poisson and Gaussian noise. ``n_nuclei=None`` picks a count that covers ~6-30% of the
    image. The mask is the union of the nucleus shapes before blur.

    Returns ``(image, mask)``: image float32 HxW in [0, 1], mask bool HxW.
    """
    h, w = _check_shape(shape, 16)
    if n_nuclei is not None and n_nuclei < 0:
        raise UnetCoreError(f"n_nuclei must be >= 0, got {n_nuclei}")
    rng = np.random.default_rng(seed)
    scale = np.sqrt(h * w) / 256.0
    r_lo, r_hi = 6.0 * scale, 20.0 * scale
    r_typ = rng.uniform(r_lo + 1.0 * scale, r_hi - 6.0 * scale)  # typical size of this field
    target = rng.uniform(0.06, 0.3) if n_nuclei is None else None
    # Optional clusters: nuclei then bunch up and touch.
    n_clusters = int(rng.integers(0, 4))
    centres = rng.uniform((0, 0), (h, w), size=(n_clusters, 2))

    mask = np.zeros((h, w), dtype=bool)
    signal = np.zeros((h, w), dtype=np.float64)
    placed, tries = 0, 0
    base = rng.uniform(0.5, 0.9)
    while tries < 2000:
        if n_nuclei is not None and placed >= n_nuclei:
            break
        if target is not None and mask.mean() >= target:
            break
        tries += 1
        radius = float(np.clip(rng.normal(r_typ, 0.25 * r_typ), r_lo, r_hi))
        nmask, ninten = _nucleus(rng, radius)
        if n_clusters and rng.random() < 0.5:
            cy, cx = centres[rng.integers(n_clusters)] + rng.normal(0, 2.5 * r_typ, size=2)
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        half = nmask.shape[0] // 2
        y0, x0 = int(cy) - half, int(cx) - half
        ys, xs = (
            slice(max(y0, 0), min(y0 + nmask.shape[0], h)),
            slice(max(x0, 0), min(x0 + nmask.shape[1], w)),
        )
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        sub = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
        nmask, ninten = nmask[sub], ninten[sub]
        area = nmask.sum()
        if area < 0.3 * np.pi * r_lo**2 and n_nuclei is None:
            continue  # mostly outside the image
        if area == 0 or (mask[ys, xs] & nmask).sum() > 0.1 * area:
            continue  # touching is fine, heavy overlap is not
        level = np.clip(base * rng.lognormal(0.0, 0.3), 0.15, 1.0)
        mask[ys, xs] |= nmask
        signal[ys, xs] = np.maximum(signal[ys, xs], level * ninten)
        placed += 1

    # Background with uneven illumination, PSF blur, shot + read noise.
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    g = rng.uniform(-1, 1, size=2)
    illum = 1.0 + 0.25 * (g[0] * (yy - 0.5) + g[1] * (xx - 0.5))
    illum += 0.1 * _smooth_noise(rng, (h, w), sigma=max(h, w) / 4.0)
    background = rng.uniform(0.015, 0.06)
    image = ndimage.gaussian_filter(signal, rng.uniform(0.8, 1.5) * scale)
    image = (image + background) * np.clip(illum, 0.6, 1.4)
    photons = rng.uniform(150.0, 800.0)
    image = rng.poisson(np.clip(image, 0, None) * photons) / photons
    image += rng.normal(0.0, 0.004, size=(h, w))
    return np.clip(image, 0.0, 1.0).astype(np.float32), mask


# ---------------------------------------------------------------------------------------
# Electron microscopy membranes
# ---------------------------------------------------------------------------------------


def _cell_seeds(
    rng: np.random.Generator, h: int, w: int, d_typ: float
) -> tuple[np.ndarray, np.ndarray]:
    """Dart-throwing (Poisson-disc-like) cell centres with per-cell diameters.

    Candidates cover the image plus a margin (so border cells are cut, not swollen) and are
    tried largest first (big cells, small ones filling the gaps, as in neuropil); one is kept
    when it is at least half the sum of the two diameters from every kept centre.
    Returns ``(centres float64 Nx2 (y, x), diameters float64 N)``, N >= 1.
    """
    margin = 0.5 * d_typ
    n_try = int(40 * (h + 2 * margin) * (w + 2 * margin) / d_typ**2) + 50
    cand = rng.uniform((-margin, -margin), (h + margin, w + margin), size=(n_try, 2))
    diam = np.clip(d_typ * rng.lognormal(0.0, 0.5, size=n_try), 12.0, 60.0)
    order = np.argsort(-diam, kind="stable")
    cand, diam = cand[order], diam[order]
    centres = np.empty((n_try, 2))
    diams = np.empty(n_try)
    n = 0
    for point, d in zip(cand, diam, strict=True):
        if n and (np.hypot(*(centres[:n] - point).T) < 0.5 * (diams[:n] + d)).any():
            continue
        centres[n], diams[n] = point, d
        n += 1
    return centres[:n], diams[:n]


def _warped_cells(
    rng: np.random.Generator, h: int, w: int, centres: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Additively weighted Voronoi cells on smoothly warped coordinates.

    Pixel (y, x) belongs to the cell ``k`` minimising ``|warp(y, x) - c_k| - weights[k]``
    (bigger weight, bigger cell; curved, wiggly boundaries). Returns ``(labels int32 HxW,
    1-based, dist float64 HxW)`` where ``dist`` is half the gap between the two smallest
    such distances: about the distance to the nearest cell boundary (inf with one cell).
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yw = yy + rng.uniform(3.0, 5.0) * _smooth_noise(rng, (h, w), 16.0)
    xw = xx + rng.uniform(3.0, 5.0) * _smooth_noise(rng, (h, w), 16.0)
    yw += _smooth_noise(rng, (h, w), 5.0)
    xw += _smooth_noise(rng, (h, w), 5.0)
    best = np.full((h, w), np.inf)
    second = np.full((h, w), np.inf)
    labels = np.zeros((h, w), dtype=np.int32)
    for k, ((cy, cx), weight) in enumerate(zip(centres, weights, strict=True), start=1):
        d = np.hypot(yw - cy, xw - cx) - weight
        closer = d < best
        np.minimum(second, d, out=second)
        second[closer] = best[closer]
        best[closer] = d[closer]
        labels[closer] = k
    return labels, 0.5 * (second - best)


def _ring_kernel(radius: float, width: float = 0.7) -> np.ndarray:
    """A small ring (vesicle / microtubule cross-section) of peak 1, float64 kxk."""
    half = int(np.ceil(radius + 3 * width))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    return np.exp(-(((np.hypot(yy, xx) - radius) / width) ** 2))


def _mitochondrion(
    rng: np.random.Generator, a: float, b: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A dark ellipse with cristae in its own box: (rho, cristae, ring) float64 hxw.

    ``rho`` is the normalised elliptical radius (<= 1 inside), ``cristae`` in [0, 1]
    stripes across the long axis, ``ring`` the darker outer membrane profile.
    """
    theta = rng.uniform(0, np.pi)
    half = int(np.ceil(a)) + 3
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    yy += rng.uniform(-0.5, 0.5)
    xx += rng.uniform(-0.5, 0.5)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    rho = np.hypot(u / a, v / b)
    wobble = 0.8 * _smooth_noise(rng, rho.shape, 2.0)
    cristae = 0.5 + 0.5 * np.cos(2 * np.pi * u / rng.uniform(2.5, 3.5) + wobble)
    ring = np.exp(-((((rho - 1.0) * b) / 0.8) ** 2))
    return rho, cristae, ring


def em_membranes(
    shape: tuple[int, int] = (256, 256), *, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic serial-section TEM field like the ISBI 2012 EM data, with its membrane mask.

    Cells are an additively weighted Voronoi tessellation of Poisson-disc seeds (diameters
    ~12-60 px, median ~25) on smoothly warped coordinates, so boundaries are curved.
    Membranes are the pixels within a smoothly varying half-width (1-3 px: 2-6 px wide,
    typically ~4) of a cell boundary, drawn as dark grey with a soft profile; the network is
    connected across the field and covers ~17-23% of the pixels (ISBI: ~22-27%), a little
    more at the junctions of three cells. Cell interiors are light grey with per-cell
    brightness, fine grainy texture and small rings (vesicles, microtubules), some cells
    holding a dark mitochondrion with cristae or a vesicle cluster; organelles stay inside
    their cell and are not in the mask. Then slow shading, a ~1 px blur and noise.

    Sizes are in pixels at a fixed magnification (roughly ISBI's at 512x512): a larger
    ``shape`` is a larger field of view, not larger cells.

    Returns ``(image, mask)``: image float32 HxW in [0, 1], mask bool HxW (True = membrane).
    """
    h, w = _check_shape(shape, 16)
    rng = np.random.default_rng(seed)
    d_typ = rng.uniform(20.0, 27.0)
    centres, diams = _cell_seeds(rng, h, w, d_typ)
    labels, dist = _warped_cells(rng, h, w, centres, 0.45 * (diams - d_typ))
    half = np.clip(2.2 + 0.6 * _smooth_noise(rng, (h, w), 10.0), 1.0, 3.0)
    mask = dist < half
    inner = dist - half  # > 0 inside a cell: distance to its membrane

    # Cytoplasm: per-cell brightness (a few darker, glia-like cells), grainy texture.
    n_cells = len(centres)
    level = rng.uniform(0.52, 0.66) + rng.normal(0.0, 0.025, size=n_cells + 1)
    dark = rng.random(n_cells + 1) < 0.06
    level[dark] -= rng.uniform(0.06, 0.12, size=int(dark.sum()))
    image = level[labels]
    image += 0.05 * _smooth_noise(rng, (h, w), 0.8) + 0.035 * _smooth_noise(rng, (h, w), 3.0)

    # Small rings: scattered everywhere, dense in a few vesicle clusters.
    density = np.full((h, w), 1.0 / 200.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or rng.random() >= 0.2:
            continue
        spots = np.flatnonzero((labels[box] == k) & (inner[box] > 4.0))
        if spots.size == 0:
            continue
        cy, cx = np.unravel_index(spots[rng.integers(spots.size)], labels[box].shape)
        cy, cx = cy + box[0].start, cx + box[1].start
        density += 0.15 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 5.0**2))
    rings = np.zeros((h, w))
    for radius in (2.0, 2.6, 3.2):
        centre_ok = inner > radius + 1.0
        impulses = (rng.random((h, w)) < density / 3.0) & centre_ok
        kernel = _ring_kernel(radius)
        rings += ndimage.convolve(impulses.astype(np.float64), kernel, mode="constant")
    image -= rng.uniform(0.18, 0.26) * np.clip(rings, 0.0, 1.5)

    # Mitochondria: dark ellipses with cristae, well inside about 30% of the cells.
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or rng.random() >= 0.3:
            continue
        a = rng.uniform(5.0, 14.0)
        b = a * rng.uniform(0.4, 0.8)
        spots = np.flatnonzero((labels[box] == k) & (inner[box] > b + 2.0))
        if spots.size == 0:
            continue
        cy, cx = np.unravel_index(spots[rng.integers(spots.size)], labels[box].shape)
        cy, cx = cy + box[0].start, cx + box[1].start
        rho, cristae, ring = _mitochondrion(rng, a, b)
        r = rho.shape[0] // 2
        ys = slice(max(cy - r, 0), min(cy + r + 1, h))
        xs = slice(max(cx - r, 0), min(cx + r + 1, w))
        sub = (
            slice(ys.start - cy + r, ys.stop - cy + r),
            slice(xs.start - cx + r, xs.stop - cx + r),
        )
        own = (labels[ys, xs] == k) & (inner[ys, xs] > 0.5)
        body = (rho[sub] <= 1.0) * (rng.uniform(0.12, 0.2) + 0.1 * cristae[sub])
        image[ys, xs] -= own * (body + 0.2 * ring[sub])

    # Membranes: dark, soft-edged, contrast varying along them.
    depth = rng.uniform(0.3, 0.42) * np.clip(1.0 + 0.15 * _smooth_noise(rng, (h, w), 8.0), 0.6, 1.2)
    image -= depth * np.exp(-0.5 * (dist / (0.75 * half)) ** 2)

    # Slow shading, ~1 px blur, detector noise.
    image *= 1.0 + 0.06 * _smooth_noise(rng, (h, w), max(h, w) / 4.0)
    image = ndimage.gaussian_filter(image, rng.uniform(0.8, 1.2))
    image += rng.uniform(0.03, 0.045) * rng.standard_normal((h, w))
    return np.clip(image, 0.0, 1.0).astype(np.float32), mask


# ---------------------------------------------------------------------------------------
# Writing pairs
# ---------------------------------------------------------------------------------------


def write_pair(root: str | os.PathLike, name: str, image: np.ndarray, mask: np.ndarray) -> None:
    """Write ``root/images/name`` (float image in [0, 1] -> 8-bit L) and ``root/masks/name``
    (bool mask -> 0/255 8-bit L), creating the folders."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    img8 = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    mask8 = np.where(mask, 255, 0).astype(np.uint8)
    Image.fromarray(img8).save(root / "images" / name)
    Image.fromarray(mask8).save(root / "masks" / name)


def make_pairs(
    root: str | os.PathLike,
    kind: str,
    n: int,
    *,
    seed: int = 0,
    shape: tuple[int, int] | None = None,
) -> list[str]:
    """Write ``n`` synthetic pairs ``root/images/NAME.png`` + ``root/masks/NAME.png``.

    ``kind`` is ``"seismic"`` (default shape 101x101, :func:`seismic_section`), ``"nuclei"``
    (256x256, :func:`fluorescence_nuclei`) or ``"membrane"`` (256x256, :func:`em_membranes`;
    the mask files follow the ISBI 2012 convention: white = cell interior, black = membrane).
    Images are 8-bit grayscale, masks 8-bit 0/255. Names are ``{kind}_{i:03d}.png``;
    pair ``i`` is drawn from a seed derived from ``(seed, i)``.
    Returns the file names in order.
    Raises UnetCoreError for an unknown kind or a negative ``n``.
    """
    if kind not in KINDS:
        raise UnetCoreError(f"unknown synthetic kind {kind!r}; expected one of {', '.join(KINDS)}")
    if n < 0:
        raise UnetCoreError(f"n must be >= 0, got {n}")
    shape = _DEFAULT_SHAPES[kind] if shape is None else shape
    names: list[str] = []
    for i in range(n):
        pair_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        if kind == "seismic":
            image, mask = seismic_section(shape, seed=pair_seed)
        elif kind == "nuclei":
            image, mask = fluorescence_nuclei(shape, seed=pair_seed)
        else:
            image, membrane = em_membranes(shape, seed=pair_seed)
            mask = ~membrane  # ISBI convention: the files mark cell interiors
        name = f"{kind}_{i:03d}.png"
        write_pair(root, name, image, mask)
        names.append(name)
    return names
