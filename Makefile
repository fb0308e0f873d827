# The two commands of the README: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell scripts/find-python)
VENV := .venv
BIN := $(VENV)/bin
# Workers for pytest-xdist. A test file stays whole on one worker (--dist loadfile): the e2e
# stories run in order in their containers, and a file's session fixtures are built once.
WORKERS ?= 4
PARALLEL := -n $(WORKERS) --dist loadfile
STAMP := $(VENV)/.installed-$(shell cat setup.cfg app/requirements.txt 2>/dev/null | sha256sum | cut -c1-12)


.PHONY: system-deps venv demo demo-stop test test-unit test-integration test-e2e bench requirements clean

venv: $(STAMP)

$(STAMP): setup.cfg app/requirements.txt
	@test -n "$(PYTHON)" || { echo "make: no Python found (see scripts/find-python)" >&2; exit 2; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python --require-hashes -r app/requirements.txt
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[test]'
	touch $@

demo: venv
	scripts/install-system-deps demo
	$(BIN)/python scripts/demo.py --port $${DEMO_PORT:-8000}

demo-stop: venv
	$(BIN)/python scripts/demo.py --stop

system-deps:
	scripts/install-system-deps

test: system-deps venv
	$(BIN)/python -m pytest $(PARALLEL) $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/python -m pytest $(PARALLEL) tests/unit tests/app $(PYTEST_ARGS)

test-integration: venv
	$(BIN)/python -m pytest $(PARALLEL) tests/integration $(PYTEST_ARGS)

test-e2e: system-deps venv
	$(BIN)/python -m pytest $(PARALLEL) tests/e2e $(PYTEST_ARGS)

bench: system-deps venv
	$(BIN)/python bench/deploy_bench.py
	$(BIN)/python bench/activate_engines.py
	$(BIN)/python bench/fleet_bench.py

# Regenerate the pinned, hashed requirements from app/requirements.in (uv on PATH or in the venv).
requirements:
	UV_PYTHON_DOWNLOADS=never uv pip compile --generate-hashes --python-version 3.12 --universal \
	  --output-file app/requirements.txt app/requirements.in

clean:
	rm -rf $(VENV) .demo
