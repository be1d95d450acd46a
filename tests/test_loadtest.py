"""Short version of the dashboard load test (``make loadtest`` runs the full one).

Three headless chromium sessions (two on ``salt``, one on ``nuclei``, which first meets the
domain gate) against one Streamlit server: each uploads its own image with its mask and moves
the threshold view's "Threshold" with the arrow keys for 10 s. Asserts that it completes with no
errors (exceptions, error boxes, time-outs) and that every session sees only its own model,
image and threshold. Latency, script runs per move, jumps and memory are reported, not asserted
(tests/test_browser.py checks runs and jumps; on a shared 2-core machine timings depend on what
else runs).
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
    assert result.updates >= 3, result.report()  # every session moved the threshold
    assert result.models == ["nuclei", "salt"], result.report()
    assert result.rss_warm_mb > result.rss_before_mb > 0
    assert result.p95_ms == result.p95_ms  # not nan: moves were timed in the page
    text = markdown(result, "test")
    assert "| threshold moves (arrow-key steps) |" in text and "PASS" in text
    assert "server reruns while moving" in text
