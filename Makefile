# Every target runs inside the project's virtualenv (.venv), made on demand:
# `make test` and `make test-local` work on a fresh clone with nothing else.
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
HANDLER ?= examples/handler.py
INPUT   ?=

.PHONY: install test test-local lint bench bench-quick soak docker-build docker-test clean

$(STAMP): setup.py setup.cfg
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# Run a handler once locally: make test-local INPUT='{"input": {"prompt": "hi"}}'
# Without INPUT it uses the test_input.json beside the handler.
test-local: $(STAMP)
	@cd $(dir $(HANDLER)) && if [ -n '$(INPUT)' ]; then \
		$(abspath $(PY)) $(notdir $(HANDLER)) --test_input '$(INPUT)'; \
	else \
		$(abspath $(PY)) $(notdir $(HANDLER)); \
	fi

lint: $(STAMP)
	$(PY) -m pip install -q pyflakes
	$(PY) -m pyflakes wavespeed tests examples bench

clean:
	rm -rf $(VENV) build dist *.egg-info
