"""Region picker: an image on which a click picks a pixel and a drag picks a box.

A Streamlit Custom Component (v2: ``st.components.v2.component``, JS + CSS mounted in the
app's page under a shadow root, no iframe, no build step), like
:mod:`app.components.threshold_view`. Its JS and CSS are the committed files
``region_picker/region_picker.js`` and ``region_picker/region_picker.css``.

Coordinates are always IMAGE pixels of the full-resolution image (column x, row y; a box is
``(x0, y0, x1, y1)`` with x1 / y1 EXCLUSIVE), whatever the display scaling: the browser maps
a pointer position through the picture's on-screen size to ``width`` x ``height``.

The picker never owns the region: the page's number inputs do. A pick is a state value
``{"kind": "pixel" | "box", "x", "y", "box", "n"}`` (``n`` a fresh nonce per pick) that the
page applies, in the ``on_pick`` callback (which runs before the script, so before the number
inputs are drawn), with :func:`pick_to_controls`; the nonce of the last applied pick is kept
so an old pick is never applied twice.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app import viz
from app.components import mount_command

__all__ = ["COMPONENT_NAME", "Pick", "parse_pick", "pick_to_controls", "region_picker"]

#: Registered name of the component (unique in the app).
COMPONENT_NAME = "unet_explorer_region_picker"
ASSETS = Path(__file__).resolve().with_name("region_picker")

#: A pick as the browser sends it, checked: ("pixel", x, y, None) or ("box", None, None,
#: (x0, y0, x1, y1)), plus its nonce.
Pick = tuple[str, int | None, int | None, tuple[int, int, int, int] | None, str]


#: The component's mounting command (registered on first use).
_mount = mount_command(COMPONENT_NAME, ASSETS, "region_picker")


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def parse_pick(raw: Any, height: int, width: int) -> Pick | None:
    """The pick the browser sent (``{"kind", "x", "y", "box", "n"}``), checked and clamped to
    an image of ``height`` x ``width``; None when it is missing or malformed."""
    if not isinstance(raw, dict) or not isinstance(raw.get("n"), str) or not raw["n"]:
        return None
    kind, nonce = raw.get("kind"), raw["n"]
    if kind == "pixel":
        x, y = _int(raw.get("x")), _int(raw.get("y"))
        if x is None or y is None:
            return None
        return ("pixel", min(max(x, 0), width - 1), min(max(y, 0), height - 1), None, nonce)
    if kind == "box":
        box = raw.get("box")
        if not isinstance(box, list | tuple) or len(box) != 4:
            return None
        vals = [_int(v) for v in box]
        if any(v is None for v in vals):
            return None
        x0, y0, x1, y1 = (int(v) for v in vals)  # type: ignore[arg-type]
        x0, x1 = sorted((min(max(x0, 0), width), min(max(x1, 0), width)))
        y0, y1 = sorted((min(max(y0, 0), height), min(max(y1, 0), height)))
        if x1 <= x0 or y1 <= y0:
            return None
        return ("box", None, None, (x0, y0, x1, y1), nonce)
    return None


def pick_to_controls(pick: Pick, state: Any, *, keys: dict[str, str], last_key: str,
                     component_kind: str | None = None) -> bool:
    """Write ``pick`` into the session-state ``state`` of the region controls, unless its nonce
    is the one already applied (kept under ``last_key``). Returns True when it was applied.

    ``keys`` names the session keys: "region" (the region radio, set to "pixel" or "box" by
    the pick's kind, or left at ``component_kind`` when it is that and the pick is a pixel:
    the pixel then seeds the component, and "seed" is ticked), "x", "y" (pixel), "x0", "y0",
    "x1", "y1" (box) and "seed". The values written to "region" are the radio's option
    values: "pixel", "box" (or ``component_kind``).
    """
    kind, x, y, box, nonce = pick
    if state.get(last_key) == nonce:
        return False
    state[last_key] = nonce
    if kind == "pixel":
        state[keys["x"]], state[keys["y"]] = int(x), int(y)  # type: ignore[arg-type]
        if component_kind is not None and state.get(keys["region"]) == component_kind:
            state[keys["seed"]] = True
        else:
            state[keys["region"]] = "pixel"
    else:
        x0, y0, x1, y1 = box  # type: ignore[misc]
        state[keys["x0"]], state[keys["y0"]] = int(x0), int(y0)
        state[keys["x1"]], state[keys["y1"]] = int(x1), int(y1)
        state[keys["region"]] = "box"
    return True


def region_picker(picture: np.ndarray, *, height: int, width: int,
                  region: dict[str, Any] | None, key: str, title: str = "",
                  caption: str = "", on_pick: Callable[[], None] | None = None) -> Any:
    """Draw the picker; return the component's result (its ``pick`` state value, if any).

    Args:
        picture: uint8 (h, w, 3) or (h, w) picture of the image (h, w may be the image's size
            divided by a display stride: the browser stretches it over ``width`` x ``height``).
        height, width: the full image's size; picks are in its pixels.
        region: drawn as an outline: {"kind": "pixel", "x", "y"}, {"kind": "component",
            "x", "y"} (its seed) or {"kind": "box", "box": [x0, y0, x1, y1]} (x1 / y1
            exclusive); anything else draws nothing (outline mask regions into ``picture``).
        key: Streamlit key of the component (stable across runs).
        title, caption: text above and below the picture.
        on_pick: called (as a widget callback, before the next script run) after a pick; the
            pick is then ``st.session_state[key]["pick"]`` (see :func:`parse_pick`).
    """
    arr = np.asarray(picture)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(f"picture must be uint8 (h, w[, 3]), got {arr.dtype} {arr.shape}")
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    data = {
        "image_png": base64.b64encode(viz.png_bytes(arr)).decode("ascii"),
        "width": int(width), "height": int(height),
        "display_width": int(arr.shape[1]), "display_height": int(arr.shape[0]),
        "region": region or {}, "title": str(title), "caption": str(caption), "key": str(key),
    }
    return _mount()(key=key, data=data, on_pick_change=on_pick or _noop)


def _noop() -> None:
    return None
