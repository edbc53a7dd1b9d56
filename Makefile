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

# The players of tests/test_browser.py (hls.js, shaka-player at the versions of the committed lock file).
# Without npm, or offline, the browser tests skip and say so (VODGATE_REQUIRE_SERVICES=1 makes that a failure).
BROWSER := tests/browser
$(BROWSER)/node_modules/.package-lock.json: $(BROWSER)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix $(BROWSER) --no-audit --no-fund --ignore-scripts --loglevel=error || echo "npm ci failed: the browser tests will skip" >&2; \
	else echo "npm not found: the browser tests will skip" >&2; fi

serve: $(VENV)/.serve-installed
	$(BIN)/vodgate serve $(ARGS)

test: $(VENV)/.test-installed $(BROWSER)/node_modules/.package-lock.json
	$(BIN)/python -m pytest $(ARGS)

bench: $(VENV)/.test-installed
	$(BIN)/vodgate bench $(ARGS)

clean:
	rm -rf $(VENV) .fixtures demo-media $(BROWSER)/node_modules
