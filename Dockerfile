# U-Net Explorer dashboard: `docker build -t unet-explorer . && docker run -p 8501:8501 unet-explorer`
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

WORKDIR /app

# Dependencies first, so code edits do not invalidate this (large) layer.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY unet_core/ unet_core/
COPY app/ app/
COPY models/ models/
COPY assets/ assets/
COPY .streamlit/ .streamlit/

RUN groupadd --system --gid 10001 unet \
    && useradd --system --uid 10001 --gid unet --create-home --home-dir /home/unet unet
USER 10001:10001
ENV HOME=/home/unet

# Build the ONNX Runtime exports of the bundled models now (cached in ~/.cache/unet-explorer),
# so the first page view does not pay for them.
RUN python -c "import glob; from unet_core.model import load_model; from unet_core.backends import OnnxBackend; [OnnxBackend(load_model(p)) for p in glob.glob('models/*.keras')]"

EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://localhost:8501/_stcore/health', timeout=4).status == 200 else 1)"]

# app/serve.py serves app/Home.py behind the host and origin checks (app/security.py): it
# answers Host localhost / 127.0.0.1 / ::1 only; `docker run -e UNET_ALLOWED_HOSTS=name ...`
# adds the names the container is reached by.
CMD ["python", "-m", "app.serve", "--server.port=8501", "--server.address=0.0.0.0"]
