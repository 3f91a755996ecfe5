# `make run` starts the local stack; `make test` runs the test suite.
# Both create the virtualenv in $(VENV) and install what they need.

PYTHON ?= python3
VENV ?= .venv
CONFIG ?=
BIN := $(VENV)/bin
CONFIG_FLAG := $(if $(CONFIG),--config.file=$(CONFIG),)

.PHONY: run test system-deps generate check clean

$(BIN)/slawatch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

system-deps:
	@./scripts/system-deps.sh

generate: $(BIN)/slawatch
	$(BIN)/slawatch generate $(CONFIG_FLAG)

check: $(BIN)/slawatch
	$(BIN)/slawatch check $(CONFIG_FLAG)

run: system-deps $(BIN)/slawatch generate
	$(BIN)/slawatch stack $(CONFIG_FLAG)

test: system-deps $(BIN)/slawatch
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .stack
