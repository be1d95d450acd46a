# U-Net Explorer: two commands on a fresh clone — `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8501
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: run test lint unit browser-deps bench loadtest soak assets demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements-ray.txt $(VENV)/.runtime
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt \
	  -r requirements-ray.txt
	touch $@

## run: start the product (the dashboard) on the bundled models and samples
##      (app/serve.py: app/Home.py behind the host and origin checks; UNET_ALLOWED_HOSTS adds hosts)
run: $(VENV)/.runtime
	$(BIN)/python -m app.serve --server.port $(PORT)

## demo: the engine's command line on a bundled sample (no browser needed)
demo: $(VENV)/.runtime
	$(BIN)/python -m unet_core inspect --model models/salt.keras
	$(BIN)/python -m unet_core predict --model models/salt.keras assets/seismic/images --out runs/demo
	$(BIN)/python -m unet_core evaluate --model models/salt.keras --data assets/seismic

## test: the whole suite (ruff, hadolint, unit, app and browser tests)
test: $(VENV)/.dev browser-deps
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile
	$(BIN)/python -m pytest

## loadtest: 20 headless browser sessions x 60 s against one server -> bench/loadtest.md
loadtest: $(VENV)/.dev browser-deps
	$(BIN)/python scripts/loadtest.py

## soak: 4 browser sessions, 200 mixed uploads (good, hostile, large) against one server:
##       peak and final RSS, upload-folder bytes, errors -> bench/soak.md (not in `make test`)
soak: $(VENV)/.dev browser-deps
	$(BIN)/python scripts/soak.py

## browser-deps: Debian's chromium for the browser tests (skipped when already there)
browser-deps:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

## bench: inference and dashboard benchmark on the shipped models -> bench/results.md
bench: $(VENV)/.dev browser-deps
	$(BIN)/python bench/run_bench.py

lint: $(VENV)/.dev
	$(BIN)/ruff check .

## assets: regenerate the synthetic sample images in assets/
assets: $(VENV)/.runtime
	$(BIN)/python scripts/make_assets.py

clean:
	rm -rf .pytest_cache .ruff_cache test-artifacts
