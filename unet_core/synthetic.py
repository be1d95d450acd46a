"""Seeded synthetic images with exact ground-truth masks, for demos and tests.

Two kinds of data are imitated:

* :func:`seismic_section` - a 101x101 crop of a seismic section like the TGS Salt
  Identification images: folded, band-limited reflectors, sometimes a fault, and
  sometimes a salt body (chaotic, low-amplitude interior, bright boundary).
* :func:`fluorescence_nuclei` - a fluorescence microscopy field like DSB2018: bright,
  slightly irregular nuclei on a dark, unevenly lit background, blurred and noisy.

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

__all__ = ["KINDS", "fluorescence_nuclei", "make_pairs", "seismic_section", "write_pair"]

KINDS: tuple[str, ...] = ("seismic", "nuclei")
"""Kinds accepted by :func:`make_pairs`."""

_DEFAULT_SHAPES: dict[str, tuple[int, int]] = {"seismic": (101, 101), "nuclei": (256, 256)}


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


def _sediments(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Layered reflectors (zero-mean, unit-ish std), float64 HxW."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    scale = max(h, w)

    # Geological time t(y, x): depth + regional dip + folds (growing with depth) + fault.
    dip = rng.uniform(-0.35, 0.35)
    t = yy * rng.uniform(0.8, 1.2) + dip * xx
    for _ in range(int(rng.integers(1, 4))):
        wavelength = rng.uniform(0.6, 3.0) * scale
        amp = rng.uniform(0.5, 5.0) * scale / 101.0
        phase = rng.uniform(0, 2 * np.pi)
        growth = 1.0 + rng.uniform(-0.5, 1.0) * yy / h
        t += amp * growth * np.sin(2 * np.pi * xx / wavelength + phase)
    if rng.random() < 0.35:  # normal/reverse fault: a straight line with a throw across it
        x0 = rng.uniform(0.2, 0.8) * w
        slope = rng.uniform(-0.8, 0.8)
        throw = rng.uniform(3.0, 12.0) * rng.choice([-1.0, 1.0]) * scale / 101.0
        t += throw * (xx > x0 + slope * (yy - h / 2))

    # 1-D reflectivity along t, convolved with a Ricker wavelet -> band-limited trace.
    t_min, t_max = float(t.min()) - 20.0, float(t.max()) + 20.0
    n = int(np.ceil(t_max - t_min)) + 1
    refl = rng.standard_normal(n) * rng.uniform(0.3, 1.0)
    spikes = rng.random(n) < rng.uniform(0.03, 0.1)
    refl[spikes] += rng.standard_normal(int(spikes.sum())) * 3.0
    freq = 1.0 / rng.uniform(5.0, 11.0) * 101.0 / scale
    half = int(np.ceil(2.5 / freq))
    trace = np.convolve(refl, _ricker(np.arange(-half, half + 1, dtype=np.float64), freq), "same")
    image = np.interp(t, t_min + np.arange(n), trace)

    # Lateral amplitude variation and band-limited noise.
    image *= np.clip(1.0 + 0.4 * _smooth_noise(rng, (h, w), sigma=scale / 8.0), 0.2, None)
    image /= image.std() + 1e-12
    noise = ndimage.gaussian_filter(rng.standard_normal((h, w)), (0.8, 1.6))
    image += rng.uniform(0.1, 0.4) * noise / (noise.std() + 1e-12)
    return image


def _salt_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth salt-body mask (bool HxW), covering roughly 5-90% of the image."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yn, xn = yy / (h - 1) - 0.5, xx / (w - 1) - 0.5
    scale = max(h, w)
    coverage = rng.uniform(0.05, 0.9)
    style = rng.choice(["bottom", "top", "flank", "blob"], p=[0.4, 0.2, 0.2, 0.2])
    wiggle = _smooth_noise(rng, (h, w), sigma=scale / rng.uniform(5.0, 10.0))
    if style == "blob":  # perturbed ellipse, centre anywhere (possibly cut by the edges)
        cy, cx = rng.uniform(-0.3, 0.3, size=2)
        ry, rx = rng.uniform(0.5, 1.5, size=2)
        theta = rng.uniform(0, np.pi)
        u = (xn - cx) * np.cos(theta) + (yn - cy) * np.sin(theta)
        v = -(xn - cx) * np.sin(theta) + (yn - cy) * np.cos(theta)
        field = -np.hypot(u / rx, v / ry) + 0.08 * wiggle
    else:  # an edge-anchored body: a tilted ramp plus low-frequency noise
        angle = {"bottom": np.pi / 2, "top": -np.pi / 2, "flank": rng.choice([0.0, np.pi])}[
            style
        ] + rng.uniform(-0.6, 0.6)
        ramp = xn * np.cos(angle) + yn * np.sin(angle)
        curve = rng.uniform(-1.0, 1.0) * (xn * np.sin(angle) - yn * np.cos(angle)) ** 2
        field = ramp + curve + rng.uniform(0.03, 0.15) * wiggle
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

    Mid-grey background with laterally continuous, gently dipping/folded, band-limited
    reflectors (Ricker wavelet), lateral amplitude variation, noise and maybe a fault.
    With salt (``salt=None``: about 60% of seeds; ``True``: always; ``False``: never) a
    smooth body, often entering from the bottom or top and sometimes cut by the image
    edges, whose interior is low-amplitude and chaotic, with a bright boundary reflector.

    Returns ``(image, mask)``: image float32 HxW in [0, 1], mask bool HxW.
    """
    h, w = _check_shape(shape, 8)
    rng = np.random.default_rng(seed)
    has_salt = rng.random() < 0.6
    if salt is not None:
        has_salt = bool(salt)
    image = _sediments(rng, h, w)

    if has_salt:
        mask = _salt_mask(rng, h, w)
        scale = max(h, w)
        # Interior: weak, chaotic, vertically smeared texture (no continuous reflectors).
        interior = _smooth_noise(rng, (h, w), sigma=(1.5, 2.5)) * rng.uniform(0.08, 0.2)
        interior += rng.uniform(-0.6, 0.6)  # salt is often a flat lighter or darker grey
        soft = ndimage.gaussian_filter(mask.astype(np.float64), 0.7)
        image = image * (1.0 - soft) + interior * soft
        # Boundary reflector: a strong Ricker pulse just outside the salt.
        dist = ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)
        freq = 1.0 / rng.uniform(4.0, 7.0) * 101.0 / scale
        image += rng.uniform(1.8, 3.0) * _ricker(dist - 1.0, freq) * (dist > -1.0)
    else:
        mask = np.zeros((h, w), dtype=bool)

    # Mild smoothing like the processed TGS images, then map to mid-grey with a
    # per-image brightness and contrast (TGS crops have means of ~0.3-0.65).
    image = ndimage.gaussian_filter(image, 0.6)
    outside = image[~mask] if (~mask).any() else image
    image = (image - outside.mean()) / (outside.std() + 1e-12)
    image = rng.uniform(0.4, 0.6) + rng.uniform(0.08, 0.14) * image
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

    ``kind`` is ``"seismic"`` (default shape 101x101) or ``"nuclei"`` (256x256). Images
    are 8-bit grayscale, masks 8-bit 0/255. Names are ``{kind}_{i:03d}.png``; pair ``i``
    is drawn from a seed derived from ``(seed, i)``. Returns the file names in order.
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
        else:
            image, mask = fluorescence_nuclei(shape, seed=pair_seed)
        name = f"{kind}_{i:03d}.png"
        write_pair(root, name, image, mask)
        names.append(name)
    return names
