"""Short version of the dashboard load test (``make loadtest`` runs the full one).

Three headless chromium sessions (two on ``salt``, one on ``nuclei``) against one Streamlit
server: each uploads its own image with a mask and moves the "Threshold" slider for 10 s.
Asserts that it completes with no errors (exceptions, error boxes, time-outs) and that every
session sees only its own model, image and threshold. Latency and memory are reported, not
asserted: on a shared 2-core machine they depend on what else runs.
"""

from __future__ import annotations

import pytest

from scripts.loadtest import REPO_ROOT, markdown, run_loadtest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]


def test_short_loadtest(tmp_path):
    models = REPO_ROOT / "models"
    if not ((models / "salt.keras").is_file() and (models / "nuclei.keras").is_file()):
        pytest.skip("the bundled models (models/salt.keras, models/nuclei.keras) are absent")
    result = run_loadtest(sessions=3, duration=10, think=1.0, models_dir=models,
                          log_path=tmp_path / "streamlit.log")
    print(result.report())
    assert result.errors == 0, result.report()
    assert result.isolation_errors == 0, result.report()
    assert result.updates >= 3, result.report()  # every session moved the slider
    assert result.models == ["nuclei", "salt"], result.report()
    assert result.rss_warm_mb > result.rss_before_mb > 0
    text = markdown(result, "test")
    assert "| slider updates |" in text and "PASS" in text
