"""U-Net Explorer dashboard (Streamlit). Entry point: ``python -m app.serve`` (``make run``),
which serves ``app/Home.py`` behind the host and origin checks of ``app/security.py``."""
