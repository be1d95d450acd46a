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

from app import engine, sources, state, uploads
from app.context import InferenceSettings, PageContext
from app.errors import display_text, plain, run_safely
from app.settings import (
    BACKEND_LABELS,
    DOMAIN_SAMPLES,
    IMAGE_TYPES,
    MODEL_UPLOAD_LABEL,
    MODEL_UPLOAD_TYPES,
    PER_PAGE,
    max_upload_mb,
    models_dir,
)
from unet_core.backends import BACKENDS, default_backend
from unet_core.model import ModelCard
from unet_core.onnx_graph import is_onnx
from unet_core.padding import PAD_MODES

UPLOAD_OPTION = "Upload a model…"
SAMPLE_SOURCE = "Bundled sample"
UPLOAD_SOURCE = "Upload"
RECENT_SOURCE = "Recent images"
VOLUME_SOURCE = "Volume"


# --------------------------------------------------------------------------- sidebar


def sidebar_model_ui() -> engine.ModelBundle | None:
    """The sidebar model picker; returns the model in use (None if there is none).

    Offers the bundled models, those of ``UNET_TRUSTED_MODELS_DIR`` (labelled '(trusted)',
    loaded with ``safe_mode=False``) and an upload (Keras or ONNX). The card edits applied on
    the Model page (:func:`card_edits`) replace the file's card. A new model (or card) applies
    its card's defaults to the controls (:func:`app.state.sync_model`)."""
    sb = st.sidebar
    folder = models_dir()
    entries = engine.model_entries()
    labels = [e.label for e in entries] + [UPLOAD_OPTION]
    if not entries:
        sb.warning(f"No models found in {plain(folder)} (\\*.keras, \\*.h5, \\*.onnx). Upload "
                   "one below.")
    choice = sb.selectbox("Model", labels, key="model_choice")
    bundle: engine.ModelBundle | None = None
    if choice == UPLOAD_OPTION:
        bundle = _sidebar_upload(sb)
    else:
        entry = entries[labels.index(choice)]
        with run_safely(sb, "loading the model"), \
                sb.spinner(f"Loading {plain(entry.label)}…"):
            bundle = engine.open_model(entry.path, entry.path.name, entry.label,
                                       trusted=entry.trusted)
    if bundle is not None:
        bundle = _with_card_edits(bundle, sb)
        card = bundle.card
        state.sync_model(bundle.key, card)
        what = (segments_text(card) if card.n_classes >= 2 else f"**{plain(card.foreground)}**")
        notes = []
        if is_onnx(bundle.loaded):
            notes.append("*ONNX graph, run as it is*")
        if bundle.trusted:
            notes.append("*trusted: loaded with safe_mode=False*")
        if bundle.edited:
            notes.append("*card edited on the Model page*")
        elif not bundle.loaded.card_found:
            notes.append("*no card: settings inferred*")
        sb.caption(f"Segments {what} in {plain(card.domain)} · input {card.input_spec}, "
                   f"{card.channels} channel{'s' if card.channels != 1 else ''} · card "
                   f"threshold {card.threshold:.2f}" + "".join(f" · {n}" for n in notes))
    return bundle


def card_edits() -> dict[str, dict[str, Any]]:
    """This session's edited cards: model ``network_key`` -> the whole card as a dict."""
    return st.session_state.setdefault("card_edits", {})


def _with_card_edits(bundle: engine.ModelBundle, sb: Any) -> engine.ModelBundle:
    """``bundle`` with the card the user applied on the Model page, if any (an edit the
    network no longer accepts is dropped, with its one-line reason)."""
    edits = card_edits().get(bundle.network_key)
    if edits is None:
        return bundle
    with run_safely(sb, "applying the edited card"):
        return engine.with_card(bundle, edits)
    card_edits().pop(bundle.network_key, None)
    return bundle


def _sidebar_upload(sb: Any) -> engine.ModelBundle | None:
    ups = sb.file_uploader(
        MODEL_UPLOAD_LABEL, type=MODEL_UPLOAD_TYPES, key="model_upload",
        accept_multiple_files=True,
        help="One .keras / .h5 model, an .onnx model (e.g. from torch.onnx.export, with its "
        "weights inside the file), or the two files of model.to_json() and "
        "model.save_weights(); add the model card .json here too if you have one. Keras uploads "
        "are loaded with safe_mode=True (no Lambda layers, never trusted); ONNX files hold no "
        "code and are checked (no external data, no custom operators) before they run. Max "
        f"{max_upload_mb()} MB each.")
    card_up = sb.file_uploader("Model card (.json, optional)", type=["json"],
                               key="model_card_upload")
    files = [(f.name, f.getvalue()) for f in (ups or [])]
    if not files:
        sb.info(f"Upload a Keras model (.keras or .h5, or architecture .json + weights .h5) "
                f"or an ONNX model (.onnx); up to {max_upload_mb()} MB each.")
        return None
    if card_up is not None:
        files.append((card_up.name, card_up.getvalue()))
    with run_safely(sb, "loading the uploaded model"):
        return open_uploaded_model(save_model_files(files), sb)
    return None


def save_model_files(files: list[tuple[str, bytes]]) -> sources.ModelUpload:
    """An uploaded model's files (name, bytes) saved in this session's folder; a new upload
    first reserves its bytes in the session's disk budget."""
    folder = uploads.session_dir() / "models"
    if not sources.model_upload_dir(files, folder).exists():  # a new upload: check the disk
        uploads.reserve(sum(len(d) for _, d in files), files[0][0])
    return sources.save_model_upload(files, folder)


def open_uploaded_model(up: sources.ModelUpload, container: Any = st,
                        noun: str = "the model") -> engine.ModelBundle:
    """Vet an uploaded model in a child process (cached per content), then load it (safe
    mode, never trusted), labelled '<card name> (uploaded)'."""
    with container.spinner(f"Checking {noun} in a separate process…"):
        engine.vet_upload(up.path, up.weights, up.name)
    with container.spinner(f"Loading {plain(up.name)}…"):
        bundle = engine.open_model(up.path, up.name, up.name, uploaded=True, weights=up.weights)
    bundle.label = f"{bundle.card.name} (uploaded)"
    return bundle


ONNX_BACKEND_HELP = ("An ONNX model runs as it is on ONNX Runtime: the file itself, in its own "
                     "layout (NCHW or NHWC), no export and no TensorFlow.")


def sidebar_backend_ui(onnx: bool = False) -> str:
    """Sidebar select box of inference backends; returns the chosen name. An ONNX model
    (``onnx``) runs on ONNX Runtime only: the box shows that, disabled, and the Keras models'
    choice is kept for when one is picked again."""
    ss = st.session_state
    if ss.get("backend") not in BACKENDS:
        ss["backend"] = default_backend()
    if onnx:
        st.sidebar.selectbox("Inference backend", ["onnxruntime"], key="backend_onnx",
                             format_func=lambda b: BACKEND_LABELS.get(b, b), disabled=True,
                             help=ONNX_BACKEND_HELP)
        return "onnxruntime"
    # the int8 backend is a batch-job option (calibrated and checked once, minutes on a first
    # use), so the dashboard offers the fp32 ones
    return str(st.sidebar.selectbox(
        "Inference backend", [b for b in BACKENDS if b != "onnxruntime-int8"], key="backend",
        persist_state="session",
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


def segments_text(card: ModelCard) -> str:
    """What a model segments: its foreground ('salt'), or '3 classes (background, liver,
    tumour)' for a K-class model."""
    if card.n_classes >= 2:
        names = ", ".join(plain(c, 100) for c in card.classes[:8]) \
            + (", …" if card.n_classes > 8 else "")
        return f"{card.n_classes} classes ({names})"
    return plain(card.foreground)


def class_label(card: ModelCard, index: int) -> str:
    """'2 · tumour' (index and name of a class)."""
    return f"{index} · {display_text(card.class_name(index), 100)}"


def class_ui(card: ModelCard, container: Any = None, help: str | None = None) -> int:
    """The 'Class' select box of a K-class model (K >= 2), on session key ``class_index`` (one
    value for every page: Segment, Evaluate and Activations show the same control); the class
    whose probability is shown, thresholded and scored. Draws nothing for a one-map model
    and returns 0."""
    if card.n_classes < 2:
        return 0
    ss = st.session_state
    if ss.get("class_index") not in range(card.n_classes):
        ss["class_index"] = int(card.default_class)
    target = container if container is not None else st
    return int(target.selectbox(
        "Class", list(range(card.n_classes)), key="class_index", persist_state="session",
        format_func=lambda i: class_label(card, i),
        help=help or f"The class whose probability is shown, thresholded and scored (one "
        "choice for every page). The card's default is "
        f"{plain(class_label(card, card.default_class))}."
    ))


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
    if card.fit == "resize" and card.input_size:
        how = (f"This model's card fits images by resizing them to {card.input_size[0]}x"
               f"{card.input_size[1]} (bilinear), so padding does not apply; change the fit on "
               "the Model page to tile full-resolution images instead.")
    else:
        how = ("How images are padded up to the size the network accepts (never resized); "
               "the output is cropped back.")
    return str(select_ui(
        "Padding", list(PAD_MODES), "padding", card.padding_mode, container=container,
        help=f"{how} The model card says {card.padding_mode}."))


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
        f"Tick when white in the masks is *not* {plain(card.foreground)} (e.g. ISBI EM masks "
        "mark cell "
        f"interiors while a membrane model segments membranes). This model's card says {said}.",
        container)


def page_header(title: str, bundle: engine.ModelBundle, note: str) -> None:
    """A page's title and its one-line caption naming the model in use."""
    st.title(title)
    st.caption(f"Model **{plain(bundle.label)}** · {note}")


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
    """Source radio (bundled sample, upload, recent images, a volume's slice) and its picker;
    returns the image chosen, or None. The source and the image carry over between pages."""
    ss = st.session_state
    recent = dict(reversed(list(state.recent_images().items())))  # newest first
    options = [SAMPLE_SOURCE, UPLOAD_SOURCE] + ([RECENT_SOURCE] if recent else []) \
        + [VOLUME_SOURCE]
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
    if source == VOLUME_SOURCE:
        from app import volumes

        return volumes.volume_picker_ui(card)
    if ss.get("recent_pick") not in recent:
        image_key = ss.get("image_key")
        ss["recent_pick"] = image_key if image_key in recent else next(iter(recent))
    pick = st.selectbox("Recent image", list(recent), key="recent_pick", persist_state="session",
                        format_func=lambda k: display_text(recent[k].name, 200)
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
        st.warning(plain(note))
    good: list[sources.ImageItem] = []
    for candidate in items:  # decode every upload now (cached) so bad ones are named
        with run_safely(what="reading the upload"):
            sources.decode_image(candidate)
            good.append(candidate)
    if len(good) > 1:
        by_key = {it.key: it for it in good}
        if ss.get(f"{upload_key}_pick") not in by_key:
            ss[f"{upload_key}_pick"] = good[0].key
        pick = st.selectbox("Image", list(by_key), key=f"{upload_key}_pick",
                            format_func=lambda k: display_text(by_key[k].name, 200)
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
    if state.image_fits_model(item, bundle.network_key, card):
        return True
    own = DOMAIN_SAMPLES.get(card.domain.lower().strip())
    st.warning(f"**{plain(item.name)}** is one of the {plain(item.domain)} images, but "
               f"**{plain(bundle.label)}** segments {segments_text(card)} in "
               f"{plain(card.domain)} images: its numbers on this "
               "image would mean little. Pick one of its own samples, upload an image of its "
               "domain, or score this one anyway.")
    c1, c2, _ = st.columns([1, 1, 2])
    c1.button(f"Use {plain(bundle.label)}'s samples" if own else "Use a bundled sample",
              key="gate_samples", type="primary", on_click=use_model_samples, args=(card,))
    c2.button("Score this image anyway", key="gate_anyway", on_click=state.confirm_image,
              args=(item, bundle.network_key))
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


def select_ui(label: str, options: list[Any], key: str, default: Any,
              format_func: Callable[[Any], str] = str, container: Any = None,
              help: str | None = None) -> Any:
    """A select box on session key ``key`` whose value is always one of ``options``
    (``default`` when the carried value is not), so what it shows is what is used."""
    target = container if container is not None else st
    if st.session_state.get(key) not in options:
        st.session_state[key] = default
    return target.selectbox(label, options, key=key, format_func=format_func, help=help,
                            persist_state="session")


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


def legend_style(table: Any, n_classes: int) -> Any:
    """A per-class table (a pandas DataFrame with a ``class`` index column and a ``colour``
    name column) styled as a legend: each class's colour cell painted in its label colour
    (:func:`app.viz.label_colors`), shares as percentages, scores with 3 decimals."""
    import numpy as np

    from app import viz

    colours = viz.label_colors(n_classes)

    def paint(col: Any) -> list[str]:
        out = []
        for i in table["class"]:
            r, g, b = (int(v) for v in colours[int(i)])
            dark = viz.luminance(np.array([[[r, g, b]]], np.uint8))[0, 0] < 0.3
            out.append(f"background-color: rgb({r},{g},{b}); color: "
                       f"{'#ffffff' if dark else '#000000'}")
        return out

    fmt = {c: "{:.1%}" for c in ("predicted", "true", "pixel accuracy") if c in table}
    fmt.update({c: "{:.3f}" for c in table.columns
                if c in ("IoU", "Dice", "pooled IoU", "pooled Dice")})
    return table.style.apply(paint, subset=["colour"]).format(fmt).hide(axis="index")


# --------------------------------------------------------------------------- data sets

#: The data sources of :func:`data_source_ui` (radio ``eval_source``).
DATA_SOURCES = ["Bundled samples", "Folder on the server", "Upload a .zip"]


def data_source_ui(card: ModelCard) -> tuple[Path | None, str, Any]:
    """The data-set source controls of the Evaluate and Compare pages (one choice for both:
    keys ``eval_source``, ``eval_sample_set``, ``eval_folder``, ``eval_zip``); returns
    (folder, label, uploaded zip)."""
    from app.settings import ASSETS, data_root, domain_of_sample_set

    if st.session_state.get("eval_source") not in DATA_SOURCES:
        st.session_state["eval_source"] = DATA_SOURCES[0]
    source = st.radio("Data source", DATA_SOURCES, key="eval_source", horizontal=True,
                      persist_state="session")
    if source == DATA_SOURCES[0]:
        sets = sources.ordered_sets(card.domain)
        if not sets:
            st.warning(f"No bundled samples in {ASSETS}.")
            return None, "", None
        chosen = select_ui("Sample set", sets, "eval_sample_set", sets[0])
        domain = domain_of_sample_set(chosen)
        if domain and card.domain.lower().strip() not in state.UNKNOWN_DOMAINS \
                and domain != card.domain.lower().strip():
            st.warning(f"The {chosen} samples are {domain} images; this model segments "
                       f"{segments_text(card)} in {plain(card.domain)} images.")
        return ASSETS / chosen, f"bundled samples: {chosen}", None
    if source == DATA_SOURCES[1]:
        root = data_root()
        candidates = sources.data_folder_candidates(root)
        text = st.text_input("Folder path", key="eval_folder", persist_state="session",
                             placeholder=candidates[0] if candidates else str(root),
                             help="A folder holding images/ and masks/ (same file names). "
                             "Relative paths are inside the data root.")
        st.caption(f"Allowed data root: {plain(root)}"
                   + (f" · e.g. {plain(', '.join(candidates[:6]))}" if candidates else ""))
        if text.strip():
            with run_safely(what="opening the folder"):
                folder = sources.resolve_data_folder(text, root)
                return folder, f"folder: {folder.relative_to(root.resolve())}", None
        return None, "", None
    up = st.file_uploader(
        "Upload a .zip of images/ + masks/", type=["zip"], key="eval_zip",
        help="Layout: images/NAME + masks/NAME (masks matched by file name); one top folder "
        "is fine.")
    return None, (f"zip: {up.name}" if up is not None else ""), up


def open_in_segment(ctx: PageContext, pair: Any) -> None:
    """Make ``pair`` (a :class:`unet_core.io.Pair`: image and mask) the image in use and switch
    to the Segment page (the galleries' "Open in Segment" buttons on Evaluate and Compare)."""
    with run_safely(what="opening the image in Segment"):
        item = sources.item_from_pair(pair, domain=ctx.bundle.card.domain)
        state.use_image(item)
        st.session_state["image_source"] = RECENT_SOURCE
        st.session_state["recent_pick"] = item.key
        st.switch_page(ctx.pages["segment"])
