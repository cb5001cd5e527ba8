# Every target runs inside the project's virtualenv (.venv), made on demand:
# `make test` and `make test-local` work on a fresh clone with nothing else.
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
HANDLER ?= examples/handler.py
INPUT   ?=
DOCKER      ?= docker
IMAGE       ?= wavespeed-worker:dev
BASE_IMAGE  ?= python:3.11-slim
HANDLER_DIR ?= examples/sync

.PHONY: install test test-matrix test-local lint bench bench-quick soak screenshot docker-build docker-test docker-test-local clean

$(STAMP): pyproject.toml setup.py setup.cfg
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The suite on every CPython 3.9-3.13 found on this machine (python3.X on PATH,
# /usr/bin, pyenv), each in its own virtualenv under .matrix/, one after the
# other; one line per version. MATRIX_ARGS are passed to pytest.
MATRIX_ARGS ?=
test-matrix:
	$(PYTHON) tools/test_matrix.py $(if $(MATRIX_ARGS),-- $(MATRIX_ARGS))

# Run a handler once locally: make test-local INPUT='{"input": {"prompt": "hi"}}'
# Without INPUT it uses the test_input.json beside the handler.
test-local: $(STAMP)
	@cd $(dir $(HANDLER)) && if [ -n '$(INPUT)' ]; then \
		$(abspath $(PY)) $(notdir $(HANDLER)) --test_input '$(INPUT)'; \
	else \
		$(abspath $(PY)) $(notdir $(HANDLER)); \
	fi

# ruff (pyproject.toml) on the tree and mypy (setup.cfg) on wavespeed/, with
# the versions pinned in the `lint` extra, installed here so that the `test`
# extra stays lean.
LINT_STAMP := $(VENV)/.installed-lint
$(LINT_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[lint]'
	touch $(LINT_STAMP)

lint: $(LINT_STAMP)
	@status=0; \
	$(PY) -m ruff check . || status=1; \
	$(PY) -m mypy || status=1; \
	exit $$status

# The benchmark against runpod 1.12.0 and wavespeed 1.0.14 (each in its own
# virtualenv under ~/.cache/wavespeed-bench, made on first use).
bench: $(STAMP)
	$(PY) bench/run.py

bench-quick: $(STAMP)
	$(PY) bench/run.py --quick

# A bounded soak against a fault-injecting loopback platform; exits non-zero on
# any lost, duplicated or wrong result.
SOAK_SECONDS ?= 120
soak: $(STAMP)
	$(PY) tools/soak.py --duration $(SOAK_SECONDS)

# The README's picture of the local API's page with an image output, taken in
# headless Chromium (.ci/install-chromium installs it).
screenshot: $(STAMP)
	$(PY) tools/screenshot.py --out examples/image/screenshot.png

# With a Docker engine (or DOCKER=podman where podman runs out of the box).
docker-build:
	$(DOCKER) build -f docker/Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg HANDLER_DIR=$(HANDLER_DIR) -t $(IMAGE) .

# The image's handler once in local test mode: its test_input.json, then an inline input.
docker-test: docker-build
	$(DOCKER) run --rm $(IMAGE)
	$(DOCKER) run --rm $(IMAGE) python handler.py --test_input '{"input": {"text": "docker"}}'

# Without a Docker engine: podman, from a Debian base image made with
# debootstrap; builds the image and checks exit codes, user and SDK location.
# INPUT is the inline input tried (default: the folder's test_input.json).
# Needs root and a few minutes; kept out of .ci/run. BASE_IMAGE is the
# script's own (a local image), not the python:3.11-slim default above.
docker-test-local:
	IMAGE='$(IMAGE)' HANDLER_DIR='$(HANDLER_DIR)' INPUT='$(INPUT)' sh docker/podman-local.sh

clean:
	rm -rf $(VENV) build dist *.egg-info
