# Optiondesk — the two set-up commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: run run-deps test bench lint clean venv dev-venv system-deps

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[dev,ml,bench]'
	touch $@ $(STAMP_RUN)

venv: $(STAMP_RUN)
dev-venv: $(STAMP_DEV)

# Debian packages some tests use (xvfb for the OpenGL surface test). Skipped where apt is unavailable.
system-deps:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = "0" ]; then \
		if ! dpkg -s xvfb libegl1 libxkbcommon0 libfontconfig1 libdbus-1-3 >/dev/null 2>&1; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb libegl1 libxkbcommon0 libfontconfig1 libdbus-1-3 >/dev/null) \
			|| echo "system-deps: apt-get failed; tests needing those packages will skip"; \
		fi; \
	else echo "system-deps: apt-get unavailable; tests needing Debian packages will skip"; fi

# The X11 libraries Qt's xcb plugin links to (PySide6 bundles Qt, not these); `ldd` names what is
# missing, engine/system_libraries.py maps it to Debian packages. Skipped where apt is unavailable.
run-deps: $(STAMP_RUN)
	@missing="$$($(PY) -m engine.system_libraries)"; \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = "0" ]; then \
			echo "installing Debian packages for Qt's X11 plugin: $$missing"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
			|| echo "run-deps: apt-get failed; the window may not open (see: optiondesk doctor)"; \
		else echo "Qt's X11 plugin needs Debian packages: sudo apt-get install -y $$missing"; fi; \
	fi

run: $(STAMP_RUN) run-deps
	$(PY) -m app

# Two pytest processes: the Qt suite runs one qasync loop for its whole session (DESIGN.md §10),
# which must not share a process with pytest-asyncio's per-test loops of the engine suite.
QT_TESTS := tests/app tests/widgets
test: $(STAMP_DEV) system-deps run-deps
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider $(addprefix --ignore=,$(QT_TESTS)) tests
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider $(QT_TESTS)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/optiondesk selftest --seconds 8

bench: $(STAMP_DEV)
	QT_QPA_PLATFORM=offscreen $(PY) -m benchmarks

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check engine widgets app tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
