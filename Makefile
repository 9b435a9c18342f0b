# Two set-up commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_KIMG ?= 6

.PHONY: venv test test-fast demo bench help-docs clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	sh tests/viz/install_browser.sh
	OMP_NUM_THREADS=2 $(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	sh tests/viz/install_browser.sh
	OMP_NUM_THREADS=2 $(PY) -m pytest -q -m 'not slow' $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) demo.py --outdir demo_out --kimg $(DEMO_KIMG)

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) demo_out demo_data .pytest_cache
