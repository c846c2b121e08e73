# t2mir: `make demo` and `make test` set everything up on a fresh Debian machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_UPDATED := /tmp/.t2mir-apt-updated

.PHONY: setup system-deps test lint demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# redis-server for the integration tests (each test run starts its own on a free port).
system-deps:
	@command -v redis-server >/dev/null || { \
		[ -f $(APT_UPDATED) ] || { apt-get update -qq && touch $(APT_UPDATED); }; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

test: setup system-deps
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: setup
	$(BIN)/t2mir demo

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
