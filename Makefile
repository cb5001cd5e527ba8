# Every target runs inside the project's virtualenv (.venv), created on demand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
HANDLER ?= examples/handler.py
INPUT  ?=

.PHONY: install test test-local lint bench bench-quick soak docker-build docker-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	$(PY) -m pip install -q -e '.[test]'

test: $(PY)
	$(PY) -m pytest -q

# Run a handler once locally: make test-local INPUT='{"input": {"prompt": "hi"}}'
# Without INPUT it uses the test_input.json beside the handler.
test-local: $(PY)
	@cd $(dir $(HANDLER)) && if [ -n '$(INPUT)' ]; then \
		$(abspath $(PY)) $(notdir $(HANDLER)) --test_input '$(INPUT)'; \
	else \
		$(abspath $(PY)) $(notdir $(HANDLER)); \
	fi

lint: $(PY)
	$(PY) -m compileall -q wavespeed tests examples
	$(PY) -m pyflakes wavespeed tests examples 2>/dev/null || $(PY) -m pip install -q pyflakes && $(PY) -m pyflakes wavespeed tests examples

clean:
	rm -rf $(VENV) build dist *.egg-info
