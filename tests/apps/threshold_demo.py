"""Tiny Streamlit app mounting the threshold view on synthetic data (for the browser test).

Run: ``.venv/bin/python -m streamlit run tests/apps/threshold_demo.py``. Query parameters:
``size`` (square side, default 256), ``min_area`` (default 0), ``truth`` (1/0, default 1),
``threshold`` (initial, default 0.5), ``style`` (fill / contour), ``seed`` (default 0).
The button "Set threshold 0.30" changes the ``threshold`` argument (as a "use best" would).

It shows "Script runs: N" (incremented on every run of this script) and "Python threshold X"
(what :func:`threshold_view` returned), so a test can tell browser-only redraws from reruns.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402

from app.components.threshold_view import threshold_payload, threshold_view  # noqa: E402


def synthetic(size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image float (H, W) in [0, 1], prob float32 (H, W), truth bool (H, W))."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    r = np.hypot(yy - 0.55, xx - 0.45)
    truth = r < 0.3
    wobble = 0.04 * np.sin(9 * np.arctan2(yy - 0.5, xx - 0.5))
    prob = 1.0 / (1.0 + np.exp((np.hypot(yy - 0.5, xx - 0.48) + wobble - 0.3) * 25))
    prob = np.clip(prob + rng.normal(0, 0.08, prob.shape), 0, 1).astype(np.float32)
    image = 0.35 + 0.15 * np.sin(xx * 40 + yy * 7) + rng.normal(0, 0.05, prob.shape)
    image = np.where(truth, image + 0.1, image)
    return np.clip(image, 0, 1).astype(np.float32), prob, truth


@st.cache_data(max_entries=4)
def payload(size: int, seed: int, min_area: int, with_truth: bool) -> dict:
    image, prob, truth = synthetic(size, seed)
    return threshold_payload(image, prob, truth if with_truth else None, min_area=min_area)


def main() -> None:
    st.set_page_config(page_title="Threshold view demo", layout="wide")  # as the dashboard
    ss = st.session_state
    ss["runs"] = ss.get("runs", 0) + 1
    q = st.query_params
    size = int(q.get("size", 256))
    min_area = int(q.get("min_area", 0))
    with_truth = q.get("truth", "1") != "0"
    seed = int(q.get("seed", 0))

    st.title("Threshold view demo")
    st.button("Set threshold 0.30", key="demo_set",
              on_click=lambda: ss.__setitem__("demo_arg", 0.3))
    arg = ss.get("demo_arg", float(q.get("threshold", 0.5)))
    t = threshold_view(payload(size, seed, min_area, with_truth),
                       threshold=arg, min_area=min_area,
                       card_threshold=0.5, style=q.get("style", "fill"), opacity=0.45,
                       title=f"Synthetic {size}x{size}", key="demo_tv")
    st.markdown(f"Script runs: {ss['runs']}")
    st.markdown(f"Python threshold {t:.2f}")


if __name__ == "__main__":  # streamlit runs the script as __main__; tests import it
    main()
