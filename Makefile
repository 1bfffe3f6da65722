# Wisp: the two commands are `make demo` and `make test`; everything else is set up by them.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
# Re-install only when the lock or the package metadata change.
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
export UV_CACHE_DIR := $(CURDIR)/.cache/uv
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip

.PHONY: demo test lint setup proto clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install -q uv==0.13.9
	$(UV) pip install -q --python $(PY) -r requirements.lock
	$(UV) pip install -q --python $(PY) --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

demo: setup
	$(PY) -m wisp.cli.demo

test: setup
	$(PY) -m ruff check .
	$(PY) -m mypy wisp services gateway
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy wisp services gateway

proto: setup
	$(PY) -m wisp.protogen

clean:
	rm -rf $(VENV) .cache build *.egg-info
