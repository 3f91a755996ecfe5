# `make run` starts the local stack; `make test` runs the test suite.
# Both create the virtualenv in $(VENV) and install what they need.

PYTHON ?= python3
VENV ?= .venv
CONFIG ?=
BIN := $(VENV)/bin
CONFIG_FLAG := $(if $(CONFIG),--config.file=$(CONFIG),)

.PHONY: run test generate check clean deps-run deps-test

$(BIN)/slawatch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

generate: $(BIN)/slawatch
	$(BIN)/slawatch generate $(CONFIG_FLAG)

check: $(BIN)/slawatch
	$(BIN)/slawatch check $(CONFIG_FLAG)

deps-run:
	@./scripts/system-deps.sh run

deps-test:
	@./scripts/system-deps.sh test

run: deps-run $(BIN)/slawatch
	$(BIN)/slawatch generate $(CONFIG_FLAG)
	$(BIN)/slawatch stack $(CONFIG_FLAG)

test: deps-test $(BIN)/slawatch
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .stack
