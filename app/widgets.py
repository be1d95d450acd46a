"""Widgets of the dashboard: ``*_ui()`` functions that draw controls and return their values.

Each control's session key is its widget key (see :mod:`app.state`): no seeding, no copies.
Model-bound defaults come from :func:`app.state.sync_model`, applied once per model change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from app import engine, sources, state
from app.context import InferenceSettings
from app.errors import run_safely
from app.settings import (
    BACKEND_LABELS,
    DOMAIN_SAMPLES,
    IMAGE_TYPES,
    MODEL_TYPES,
    PER_PAGE,
    max_upload_mb,
    models_dir,
)
from unet_core.backends import BACKENDS, default_backend
from unet_core.model import ModelCard
from unet_core.padding import PAD_MODES

UPLOAD_OPTION = "Upload a model…"
SAMPLE_SOURCE = "Bundled sample"
UPLOAD_SOURCE = "Upload"
RECENT_SOURCE = "Recent images"


# --------------------------------------------------------------------------- sidebar


def sidebar_model_ui() -> engine.ModelBundle | None:
    """The sidebar model picker; returns the model in use (None if there is none).

    A new model applies its card's defaults to the controls (:func:`app.state.sync_model`)."""
    sb = st.sidebar
    folder = models_dir()
    entries = engine.discover_models(folder)
    labels = [e.label for e in entries] + [UPLOAD_OPTION]
    if not entries:
        sb.warning(f"No models found in {folder} (*.keras, *.h5). Upload one below.")
    choice = sb.selectbox("Model", labels, key="model_choice")
    bundle: engine.ModelBundle | None = None
    if choice == UPLOAD_OPTION:
        bundle = _sidebar_upload(sb)
    else:
        entry = entries[labels.index(choice)]
        with run_safely(sb, "load model"), sb.spinner(f"Loading {entry.label}…"):
            bundle = engine.open_model(entry.path, entry.path.name, entry.label)
    if bundle is not None:
        card = bundle.card
        if state.sync_model(bundle.key, card):
            st.session_state["model_changed"] = True
        sb.caption(
            f"Segments **{card.foreground}** in {card.domain} · input {card.input_spec} · "
            f"card threshold {card.threshold:.2f}"
            + ("" if bundle.loaded.card_found else " · *no card: settings inferred*"))
    return bundle


def _sidebar_upload(sb: Any) -> engine.ModelBundle | None:
    up = sb.file_uploader("Upload a .keras or .h5 model", type=MODEL_TYPES, key="model_upload",
                          help=f"Loaded with safe_mode=True (no Lambda layers). "
                          f"Max {max_upload_mb()} MB.")
    card_up = sb.file_uploader("Model card (.json, optional)", type=["json"],
                               key="model_card_upload")
    if up is None:
        sb.info(f"Upload a Keras model (.keras or .h5, up to {max_upload_mb()} MB).")
        return None
    with run_safely(sb, "upload model"), sb.spinner(f"Loading {up.name}…"):
        ss = st.session_state
        tmp = ss.get("_upload_tmp")
        if tmp is None:
            tmp = ss["_upload_tmp"] = sources.new_upload_dir()
        card_bytes = card_up.getvalue() if card_up is not None else None
        path = sources.save_uploaded_model(up.name, up.getvalue(), card_bytes, Path(tmp.name))
        bundle = engine.open_model(path, up.name, up.name, uploaded=True)
        bundle.label = f"{bundle.card.name} (uploaded)"
        return bundle
    return None


def sidebar_backend_ui() -> str:
    """Sidebar select box of inference backends; returns the chosen name."""
    ss = st.session_state
    if ss.get("backend") not in BACKENDS:
        ss["backend"] = default_backend()
    return str(st.sidebar.selectbox(
        "Inference backend", list(BACKENDS), key="backend",
        format_func=lambda b: BACKEND_LABELS.get(b, b),
        help="Auto runs ONNX Runtime on an export of the model (built once, cached on disk, "
             "checked against Keras) and falls back to TensorFlow when that is unavailable. "
             "Probabilities agree to ~1e-7."))


def sidebar_settings_ui(card: ModelCard) -> InferenceSettings:
    """The model-bound settings in the sidebar, set from the card when the model changes."""
    sb = st.sidebar
    sb.markdown("**Settings for this model**")
    return InferenceSettings(padding=padding_ui(card, sb), tta=tta_ui(card, sb),
                             invert_masks=invert_masks_ui(card, sb),
                             min_area=min_area_ui(card, sb))


def backend_caption(seg: Any) -> str:
    """One line saying which backend runs and why (e.g. the ONNX-vs-Keras difference)."""
    label = BACKEND_LABELS.get(seg.backend.name, seg.backend.name)
    return f"Backend: {label}" + (f" · {seg.backend.note}" if seg.backend.note else "")


# --------------------------------------------------------------------------- model controls


def threshold_ui(card: ModelCard, container: Any = None) -> float:
    """The 'Threshold' slider (0..1, step 0.01) on session key ``threshold``."""
    target = container if container is not None else st
    state.control("threshold", round(float(card.threshold), 2))
    return float(target.slider(
        "Threshold", min_value=0.0, max_value=1.0, step=0.01, key="threshold",
        persist_state="session",
        help=f"Foreground is probability > threshold. The model card recommends "
        f"{card.threshold:.2f}. Moving it never re-runs the network."))


def min_area_ui(card: ModelCard, container: Any = None) -> int:
    """The 'Minimum area (px)' number input (0 = off) on session key ``min_area``."""
    target = container if container is not None else st
    state.control("min_area", int(card.min_area))
    return int(target.number_input(
        "Minimum area (px)", min_value=0, max_value=10**9, step=10, key="min_area",
        persist_state="session",
        help=f"A predicted mask with fewer foreground pixels is emptied as a whole (0 = off). "
        f"The model card recommends {int(card.min_area)}, picked on validation with the "
        "threshold."))


def padding_ui(card: ModelCard, container: Any = None) -> str:
    """The 'Padding' select box over the engine's PAD_MODES, on session key ``padding``."""
    return select_ui(
        "Padding", list(PAD_MODES), "padding", card.padding_mode, container=container,
        help=f"How images are padded up to the size the network accepts (never resized); the "
        f"output is cropped back. The model card says {card.padding_mode}.")


def _checkbox_ui(key: str, label: str, default: bool, help: str, container: Any) -> bool:
    """A checkbox on session key ``key`` (set to ``default`` first when missing)."""
    target = container if container is not None else st
    state.control(key, bool(default))
    return bool(target.checkbox(label, key=key, help=help, persist_state="session"))


def tta_ui(card: ModelCard, container: Any = None) -> bool:
    """The test-time augmentation checkbox, on session key ``tta``."""
    return _checkbox_ui("tta", "Test-time augmentation (flip)", card.tta,
                        "Average the prediction with that of the mirrored image (two forward "
                        "passes).", container)


def invert_masks_ui(card: ModelCard, container: Any = None) -> bool:
    """Checkbox on session key ``invert_masks``: score against the complement of the masks."""
    said = "ticked" if card.truth_inverted else "unticked"
    return _checkbox_ui(
        "invert_masks", "Masks mark the other class (invert)", card.truth_inverted,
        f"Tick when white in the masks is *not* {card.foreground} (e.g. ISBI EM masks mark cell "
        f"interiors while a membrane model segments membranes). This model's card says {said}.",
        container)


def page_header(title: str, bundle: engine.ModelBundle, note: str) -> None:
    """A page's title and its one-line caption naming the model in use."""
    st.title(title)
    st.caption(f"Model **{bundle.label}** · {note}")


# --------------------------------------------------------------------------- images


def use_model_samples(card: ModelCard) -> None:
    """Switch the image in use to the first bundled sample of the model's domain."""
    items = sources.ordered_samples(card.domain)
    if items:
        ss = st.session_state
        ss["image_source"] = SAMPLE_SOURCE
        ss["sample"] = items[0].key
        ss["image_key"] = items[0].key


def image_picker_ui(card: ModelCard, *, upload_key: str, with_masks: bool,
                    fresh_visit: bool) -> sources.ImageItem | None:
    """Source radio (bundled sample, upload, recent images) and its picker; returns the
    image chosen, or None. The source and the image carry over between pages."""
    ss = st.session_state
    recent = dict(reversed(list(state.recent_images().items())))  # newest first
    options = [SAMPLE_SOURCE, UPLOAD_SOURCE] + ([RECENT_SOURCE] if recent else [])
    current = ss.get("image_source")
    if current not in options or (fresh_visit and current == UPLOAD_SOURCE
                                  and ss.get("image_key") in recent):
        # An uploader is empty on a new visit: show the uploaded image as a recent one.
        ss["image_source"] = RECENT_SOURCE if ss.get("image_key") in recent else SAMPLE_SOURCE
    source = st.radio("Image source", options, key="image_source", horizontal=True,
                      persist_state="session")
    if source == SAMPLE_SOURCE:
        items = sources.ordered_samples(card.domain)
        if not items:
            st.warning("No bundled samples found.")
            return None
        by_key = {it.key: it for it in items}
        if ss.get("sample") not in by_key:
            image_key = ss.get("image_key")
            ss["sample"] = image_key if image_key in by_key else items[0].key
        pick = st.selectbox("Sample", list(by_key), key="sample", persist_state="session",
                            format_func=lambda k: sources.sample_label(by_key[k]))
        return by_key[pick]
    if source == UPLOAD_SOURCE:
        return _upload_ui(card, upload_key, with_masks)
    if ss.get("recent_pick") not in recent:
        image_key = ss.get("image_key")
        ss["recent_pick"] = image_key if image_key in recent else next(iter(recent))
    pick = st.selectbox("Recent image", list(recent), key="recent_pick", persist_state="session",
                        format_func=lambda k: recent[k].name
                        + (" (+ mask)" if with_masks and recent[k].mask_data else ""))
    return recent[pick]


def _upload_ui(card: ModelCard, upload_key: str, with_masks: bool) -> sources.ImageItem | None:
    ss = st.session_state
    ups = st.file_uploader(
        "Upload images" if with_masks else "Upload an image", type=IMAGE_TYPES,
        accept_multiple_files=with_masks, key=upload_key,
        help=f"PNG, JPEG, TIFF or BMP, up to {max_upload_mb()} MB each.")
    files = list(ups or []) if with_masks else ([ups] if ups is not None else [])
    mask_files: list[Any] = []
    if with_masks:
        mask_files = list(st.file_uploader(
            "Upload masks (same file names)", type=IMAGE_TYPES, accept_multiple_files=True,
            key=f"{upload_key}_masks",
            help="Optional. A mask matches the image with the same file name (or the same name "
            "with another extension). White / 1 = foreground.") or [])
    # An upload belongs to the domain of the model in use when it was first seen.
    domains: dict[str, str] = ss.setdefault("upload_domains", {})
    items, notes = sources.items_from_uploads(
        [(f.name, f.getvalue()) for f in files], [(f.name, f.getvalue()) for f in mask_files])
    items = [dataclasses.replace(it, domain=domains.setdefault(f"{it.name}:{it.sha}",
                                                               card.domain)) for it in items]
    for note in notes:
        st.warning(note)
    good: list[sources.ImageItem] = []
    for candidate in items:  # decode every upload now (cached) so bad ones are named
        with run_safely(what="read upload"):
            sources.decode_image(candidate)
            good.append(candidate)
    if len(good) > 1:
        by_key = {it.key: it for it in good}
        if ss.get(f"{upload_key}_pick") not in by_key:
            ss[f"{upload_key}_pick"] = good[0].key
        pick = st.selectbox("Image", list(by_key), key=f"{upload_key}_pick",
                            format_func=lambda k: by_key[k].name
                            + (" (+ mask)" if by_key[k].mask_data else ""))
        return by_key[pick]
    if good:
        return good[0]
    if not items:
        st.info("Upload an image" + ("; add its mask to score it." if with_masks else "."))
    return None


def domain_gate_ui(item: sources.ImageItem, bundle: engine.ModelBundle) -> bool:
    """True when ``item`` may be scored with the model in use; otherwise say why, offer the
    model's own samples or an explicit 'score it anyway', and return False."""
    card = bundle.card
    if state.image_fits_model(item, bundle.key, card):
        return True
    own = DOMAIN_SAMPLES.get(card.domain.lower().strip())
    st.warning(f"**{item.name}** was chosen as a {item.domain} image, but **{bundle.label}** "
               f"segments {card.foreground} in {card.domain} images: its numbers on this image "
               "would mean little. Pick one of its own samples, upload an image of its domain, "
               "or score this one anyway.")
    c1, c2, _ = st.columns([1, 1, 2])
    c1.button(f"Use {bundle.label}'s samples" if own else "Use a bundled sample",
              key="gate_samples", type="primary", on_click=use_model_samples, args=(card,))
    c2.button("Score this image anyway", key="gate_anyway", on_click=state.confirm_image,
              args=(item, bundle.key))
    return False


# --------------------------------------------------------------------------- paging


def pager_ui(total: int, key: str, noun: str, per_page: int = PER_PAGE,
             container: Any = None) -> tuple[int, int]:
    """Page through ``total`` things, ``per_page`` at a time; shows 'N of M shown'.

    Returns (start, stop) indices of the page shown.
    """
    target = container if container is not None else st
    pages = max(1, -(-total // per_page))
    page = 1
    if pages > 1:
        page = int(target.number_input("Page", min_value=1, max_value=pages, value=1, step=1,
                                       key=key, help=f"{pages} pages of {per_page} {noun}"))
    start = (page - 1) * per_page
    stop = min(total, start + per_page)
    target.caption(f"{stop - start} of {total} shown ({noun} {start}–{stop - 1}, "
                   f"page {page}/{pages})")
    return start, stop


def select_ui(label: str, options: list[str], key: str, default: str,
              format_func: Callable[[str], str] = str, container: Any = None,
              help: str | None = None) -> str:
    """A select box on session key ``key`` whose value is always one of ``options``
    (``default`` when the carried value is not), so what it shows is what is used."""
    target = container if container is not None else st
    if st.session_state.get(key) not in options:
        st.session_state[key] = default
    return str(target.selectbox(label, options, key=key, format_func=format_func, help=help,
                                persist_state="session"))


def tile_grid_ui(tiles: list[Any], titles: list[str], *, zmin: float | list[float],
                 zmax: float | list[float], cmap: str, tile_px: int = 96) -> None:
    """Small maps (float (h, w) each) as images of ``tile_px`` pixels that wrap to the width
    of the page: as many per row as fit, never shrunk below ``tile_px``.

    ``zmin`` / ``zmax`` are one colour range for all tiles or one per tile."""
    from app import viz

    lows = zmin if isinstance(zmin, list) else [zmin] * len(tiles)
    highs = zmax if isinstance(zmax, list) else [zmax] * len(tiles)
    with st.container(horizontal=True, gap="small"):
        for tile, title, lo, hi in zip(tiles, titles, lows, highs, strict=True):
            rgb = viz.upscale_nearest(viz.colormap_rgb(tile, lo, hi, cmap), tile_px)
            st.image(rgb, width=tile_px, caption=title)
