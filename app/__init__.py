"""U-Net Explorer dashboard (Streamlit). Entry point: ``streamlit run app/Home.py``."""
