"""Short version of the soak test (``make soak`` runs the full one, scripts/soak.py).

Two headless chromium sessions against one server make 20 mixed uploads (good images, a
2048x2048 one, hostile images: a PNG declaring 100,000 x 100,000 pixels, a truncated PNG, bytes
that are no image, a name full of markdown; and a .keras that is not a zip). Asserts: every
hostile upload ends in one error line in our words and every good one in its result, the
browser never requests the address in the hostile names, and the
upload folder is back to zero once the sessions are closed. Memory: the server's RSS, sampled
throughout, stays under 1.5 GB.
"""

from __future__ import annotations

import pytest

from scripts.soak import REPO_ROOT, markdown, run_soak

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]


def test_short_soak(tmp_path):
    if not (REPO_ROOT / "models" / "salt.keras").is_file():
        pytest.skip("the bundled model models/salt.keras is absent")
    result = run_soak(sessions=2, uploads=20, log_path=tmp_path / "streamlit.log",
                      settle_s=25.0, timeout=120.0)
    print(result.report())
    assert result.errors == [], result.report()
    assert result.trap_requests == 0, result.report()
    assert result.by_kind.get("hostile", 0) >= 2 and result.by_kind.get("model", 0) >= 1
    assert result.by_kind.get("large", 0) >= 1 and result.by_kind.get("good", 0) >= 10
    # The server stays under the 1.5 GB target throughout (1,235 MB peak measured: exports
    # run in a child process, 2048x2048 images go through one 768x768 tile at a time).
    assert max(rss for _, rss in result.steps) <= 1500, result.report()
    assert result.rss_end_mb <= 1500, result.report()
    assert result.rss_peak_mb <= 1500, result.report()
    assert result.temp_peak_bytes > 0, result.report()  # uploads went to the session folders
    assert (result.temp_end_folders, result.temp_end_bytes) == (0, 0), result.report()
    assert any("huge.png" in m and "16,777,216" in m for m in result.messages), \
        result.messages
    assert "| server RSS peak |" in markdown(result, "test")
