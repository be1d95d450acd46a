"""A small synthetic salt cube for demos and tests, from the engine's seismic generator.

:func:`salt_cube` draws one wide seismic section with a salt body
(:func:`unet_core.synthetic.seismic_section`, ``salt=True``) and cuts the cube's inlines from it
as windows that slide sideways and slightly downwards from one inline to the next, so the
layers, the faults and the salt body move smoothly across inlines, like a real cube. The mask
cube is the exact salt body of every inline. Amplitudes are signed (zero-mean), scaled like
recorded seismic (standard deviation ``amplitude``).

:func:`write_salt_cube` writes the amplitudes and the mask as two SEG-Y cubes with
:func:`unet_core.segy.write_cube` (inline numbers from 1000, crossline numbers from 2000, 4 ms
samples). The bundled ``assets/volumes/salt_cube.sgy`` and ``salt_cube_mask.sgy`` are
``write_salt_cube("assets/volumes/salt_cube.sgy", 24, 24, 101, seed=4)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import UnetCoreError
from .synthetic import seismic_section

__all__ = ["salt_cube", "write_salt_cube"]


def salt_cube(n_inlines: int, n_crosslines: int, n_samples: int, seed: int, *,
              amplitude: float = 1000.0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded synthetic salt cube and its exact salt mask.

    Returns ``(amplitudes, mask)``: float32 (n_inlines, n_crosslines, n_samples) signed
    amplitudes and uint8 0/1 of the same shape (1 = salt). Inline ``i`` is the window of
    columns ``[i, i + n_crosslines)`` and rows ``[i // 4, i // 4 + n_samples)`` of one
    section of ``n_samples + n_inlines // 4`` x ``n_crosslines + n_inlines`` pixels, with
    depth along the samples.
    """
    n_il, n_xl, ns = int(n_inlines), int(n_crosslines), int(n_samples)
    if min(n_il, n_xl) < 1 or ns < 8:
        raise UnetCoreError(f"a salt cube needs at least 1 inline, 1 crossline and 8 samples; "
                            f"got {n_il}x{n_xl}x{ns}")
    drop = n_il // 4
    h, w = ns + drop, max(n_xl + n_il, 8)
    image, mask = seismic_section((h, w), seed=int(seed), salt=True)
    amp = image.astype(np.float64) - float(image.mean())
    amp *= float(amplitude) / (float(amp.std()) + 1e-12)
    cube = np.empty((n_il, n_xl, ns), dtype=np.float32)
    labels = np.empty((n_il, n_xl, ns), dtype=np.uint8)
    for i in range(n_il):
        r = i // 4
        cube[i] = amp[r:r + ns, i:i + n_xl].T
        labels[i] = mask[r:r + ns, i:i + n_xl].T
    return cube, labels


def write_salt_cube(path: str | os.PathLike, n_inlines: int = 24, n_crosslines: int = 24,
                    n_samples: int = 101, seed: int = 4, *, mask_path: str | os.PathLike | None
                    = None) -> tuple[Path, Path]:
    """Write :func:`salt_cube` as SEG-Y to ``path`` and its mask (0/1 float samples) to
    ``mask_path`` (default: ``NAME_mask.sgy`` beside it). Returns both paths."""
    from .segy import write_cube

    out = Path(path)
    mask_out = Path(mask_path) if mask_path is not None else out.with_name(
        f"{out.stem}_mask{out.suffix}")
    cube, mask = salt_cube(n_inlines, n_crosslines, n_samples, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    kw = {"first_inline": 1000, "first_crossline": 2000, "sample_interval_us": 4000}
    what = f"{n_inlines}x{n_crosslines}x{n_samples} seed {seed}"
    write_cube(out, cube, text=f"SYNTHETIC SALT CUBE (unet_core.synthetic_cube) {what}", **kw)
    write_cube(mask_out, mask.astype(np.float32),
               text=f"SYNTHETIC SALT MASK (1 = salt) {what}", **kw)
    return out, mask_out
