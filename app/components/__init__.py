"""Streamlit custom components of the dashboard (plain HTML/JS/CSS committed here, no build).

* :mod:`app.components.threshold_view` -- the threshold slider, overlays, error map and
  IoU/Dice curve redrawn in the browser on every move (Custom Components v2, no iframe).
"""
