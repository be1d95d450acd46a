"""U-Net Explorer: the Streamlit entry point, served by ``python -m app.serve`` (which adds the
Host/Origin guard of :mod:`app.security`; ``streamlit run app/Home.py`` works too).

This file is the frame around every page: page config, the sidebar (model and backend) and
navigation. Each page is a function ``render(ctx)`` in ``app/views/`` that receives what it
needs in a :class:`~app.context.PageContext`; computation lives in ``unet_core``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow (used here only for the Activations probe; inference runs on ONNX Runtime) keeps
# oneDNN's buffers after a pass: ~600 MB after one 512x512 probe. Without oneDNN they go back
# to the system (the probe takes ~1.6x longer, once per image). $TF_ENABLE_ONEDNN_OPTS wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# ONNX Runtime sessions without a memory arena (see unet_core.backends): memory comes back
# after each run instead of staying at each session's peak.
os.environ.setdefault("UNET_ORT_ARENA", "0")
# ONNX exports run in a child process: the exporter's ~1 GB peak never lands on the server.
os.environ.setdefault("UNET_EXPORT_IN_CHILD", "1")

import streamlit as st  # noqa: E402

from app import uploads, widgets  # noqa: E402
from app.context import PageContext  # noqa: E402
from app.errors import run_safely  # noqa: E402
from app.views import activations, compare, evaluate, explain, filters, model, segment  # noqa: E402
from unet_core.onnx_graph import is_onnx  # noqa: E402

st.set_page_config(page_title="U-Net Explorer", layout="wide")
# Upload folders: leftovers of gone servers once per process, those of ended sessions at most
# every few seconds (cheap: one directory listing).
uploads.sweep_at_startup()
uploads.sweep_gone_sessions()
if uploads.live_session_ids() is not None:  # a real server (not AppTest): sweep in background
    uploads.start_sweeper()

VIEWS = [("Model", "model", model.render), ("Segment", "segment", segment.render),
         ("Evaluate", "evaluate", evaluate.render), ("Compare", "compare", compare.render),
         ("Filters", "filters", filters.render),
         ("Activations", "activations", activations.render),
         ("Explain", "explain", explain.render)]

context: dict[str, PageContext] = {}


def _page(title: str, url_path: str, render: object) -> st.Page:
    def run() -> None:
        ctx = context.get("ctx")
        if ctx is None:
            st.title(title)
            st.info("No model loaded: pick one in the sidebar, or upload one there (a .keras / "
                    ".h5 / .onnx model, or an architecture .json with its weights .h5).")
            return
        with run_safely(what=f"showing the {title} page"):
            render(ctx)  # type: ignore[operator]

    run.__name__ = f"page_{url_path}"
    return st.Page(run, title=title, url_path=url_path, default=url_path == "model")


pages = {url: _page(title, url, render) for title, url, render in VIEWS}
nav = st.navigation(list(pages.values()))
st.sidebar.markdown("### U-Net Explorer")
bundle = widgets.sidebar_model_ui()
fresh_visit = st.session_state.get("_page") != nav.url_path
st.session_state["_page"] = nav.url_path
if bundle is not None:
    settings = widgets.sidebar_settings_ui(bundle.card)
    backend = widgets.sidebar_backend_ui(onnx=is_onnx(bundle.loaded))
    context["ctx"] = PageContext(bundle=bundle, backend=backend, settings=settings,
                                 fresh_visit=fresh_visit, pages=pages)
nav.run()
