"""Streamlit custom components of the dashboard (plain HTML/JS/CSS committed here, no build).

* :mod:`app.components.threshold_view` -- the threshold slider, overlays, error map and
  IoU/Dice curve redrawn in the browser on every move (Custom Components v2, no iframe).
* :mod:`app.components.region_picker` -- an image on which a click picks a pixel and a drag
  a box, in image pixels (the Explain page's region).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def mount_command(name: str, folder: Path, stem: str) -> Callable[[], Any]:
    """A function returning the mounting command of the Custom Component ``name`` whose JS
    and CSS are ``folder/STEM.js`` and ``folder/STEM.css``, registered on first use."""
    mounted: list[Any] = []

    def mount() -> Any:
        if not mounted:
            import streamlit as st

            mounted.append(st.components.v2.component(
                name, js=(folder / f"{stem}.js").read_text(encoding="utf-8"),
                css=(folder / f"{stem}.css").read_text(encoding="utf-8"), isolate_styles=True))
        return mounted[0]

    return mount

