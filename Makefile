# The two set-up commands of the README: `make serve` and `make test`.
# Each creates the virtualenv and installs the extras it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "vodgate needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.serve-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,demo,load]'
	touch $@

serve: $(VENV)/.serve-installed
	$(BIN)/vodgate serve $(ARGS)

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(ARGS)

bench: $(VENV)/.test-installed
	$(BIN)/vodgate bench $(ARGS)

clean:
	rm -rf $(VENV) .fixtures demo-media
