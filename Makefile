# Optiondesk — the two set-up commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: run run-deps test test-clock bench lint clean venv dev-venv system-deps chaos

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

# Two pytest processes: the Qt suite runs one qasync loop for its whole session (docs/architecture.md §10),
# which must not share a process with pytest-asyncio's per-test loops of the engine suite.
QT_TESTS := tests/app tests/widgets
test: $(STAMP_DEV) system-deps run-deps
	$(MAKE) --no-print-directory lint
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider $(addprefix --ignore=,$(QT_TESTS)) tests
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider $(QT_TESTS)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/optiondesk selftest --seconds 8
	$(MAKE) --no-print-directory test-clock

# The chaos suite (issue 14; not part of `make test`, whose tests/chaos/test_chaos_quick.py runs the quick
# subset): SIGKILLs over the order path, broker faults, a full disk, two instances, corrupted records. Prints
# one JSON document (cases, survived, orders lost / duplicated / left working after a trip); exit 1 on any loss.
chaos: $(STAMP_DEV)
	QT_QPA_PLATFORM=offscreen $(PY) tests/chaos/run.py

# The clock-sensitive tests again with the machine's wall clock moved (tests/conftest.py,
# OPTIONDESK_TEST_WALL_CLOCK): a Saturday night, a market holiday (Thanksgiving), the minute before the
# clocks spring forward (the run crosses 02:00 EST -> 03:00 EDT), and an expiry Friday after the close.
CLOCK_INSTANTS := 2026-12-05T23:30:00-05:00 2026-11-26T11:00:00-05:00 2027-03-14T01:59:30-05:00 2026-12-18T16:30:00-05:00
# tests/strategies: the host's files (an engine on the simulated market); each strategy's own tests run on
# hand-built chains and seeded histories at fixed dates, which no wall clock reaches.
CLOCK_TESTS := tests/market tests/paper tests/oms tests/risk tests/analytics \
	tests/strategies/test_rules_and_strategies.py $(wildcard tests/strategies/test_host*.py) \
	tests/foundation/test_cli_and_engine.py tests/foundation/test_engine_clock.py tests/foundation/test_store.py \
	tests/brokers/test_engine_connect.py tests/brokers/test_paper_on_live_data.py tests/backtest/test_parity.py
CLOCK_SKIP := --ignore=tests/oms/test_crash_recovery.py -k "not doctor and not version_and_doctor"
# Two instants at a time (one per core; each run is one single-threaded pytest), each into its own log,
# printed in order once both are done.
test-clock: $(STAMP_DEV)
	@logs=$$(mktemp -d); n=0; \
	for when in $(CLOCK_INSTANTS); do \
		n=$$((n + 1)); \
		( OPTIONDESK_TEST_WALL_CLOCK=$$when QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider \
			$(CLOCK_SKIP) $(CLOCK_TESTS) > $$logs/$$n.log 2>&1; echo $$? > $$logs/$$n.rc ) & \
		if [ $$((n % 2)) -eq 0 ]; then wait; fi; \
	done; wait; \
	failed=""; n=0; \
	for when in $(CLOCK_INSTANTS); do \
		n=$$((n + 1)); echo "== wall clock at $$when"; \
		if [ "$$(cat $$logs/$$n.rc)" = "0" ]; then tail -n 1 $$logs/$$n.log; \
		else cat $$logs/$$n.log; failed="$$failed $$when"; fi; \
	done; \
	rm -rf $$logs; \
	if [ -n "$$failed" ]; then echo "test-clock: failures with the wall clock at:$$failed"; exit 1; fi

bench: $(STAMP_DEV)
	QT_QPA_PLATFORM=offscreen $(PY) -m benchmarks

# ruff on the tree, mypy on the headless engine ([tool.mypy] in pyproject.toml: the pydantic plugin); `make test`
# runs it first, so a type error fails the build like a failing test.
lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check engine widgets app tests benchmarks installer
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# The installable app (issue 20; not part of `make test`): the PyInstaller one-folder build in dist/optiondesk/
# (its self-test runs offscreen), then dist/optiondesk_<version>_<arch>.deb, whose launcher's self-test runs
# from a temporary root. FLAVOUR=ml bundles the ml extra (torch, xgboost): `make dev-venv` installs it.
# installer/README.md describes both.
.PHONY: dist
FLAVOUR ?= lite
dist: $(STAMP_RUN)
	installer/build.sh $(FLAVOUR)
	installer/make_deb.sh $(FLAVOUR)
