"""U-Net Explorer: the Streamlit entry point. Run ``streamlit run app/Home.py``.

This file is the frame around every page: page config, navigation, and the sidebar model
picker. The pages live in ``app/views/``; computation lives in ``unet_core``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import streamlit as st  # noqa: E402

from app import common  # noqa: E402

st.set_page_config(page_title="U-Net Explorer", layout="wide")

PAGES = [
    st.Page("views/model.py", title="Model", url_path="", default=True),
    st.Page("views/segment.py", title="Segment", url_path="segment"),
    st.Page("views/evaluate.py", title="Evaluate", url_path="evaluate"),
    st.Page("views/filters.py", title="Filters", url_path="filters"),
    st.Page("views/activations.py", title="Activations", url_path="activations"),
]

page = st.navigation(PAGES)
common.sidebar_model_picker()
common.sidebar_backend_picker()
with common.run_safely(what=f"page {page.title}"):
    page.run()
