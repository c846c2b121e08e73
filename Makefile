# t2mir: `make demo` and `make test` set everything up on a fresh Debian machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_UPDATED := /tmp/.t2mir-apt-updated

.PHONY: setup system-deps test lint demo results clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# System packages the tests run for real, from apt when missing (one `apt-get update` at most):
# redis-server (integration tests; each run starts its own on a free port), docker-compose
# (`docker-compose config` validates deploy/*.yml; no Docker engine needed), prometheus (promtool,
# and a real Prometheus scraping a test server), nginx (scale-out config). Services the packages
# start on install (prometheus on :9090, nginx on :80) are stopped and disabled: tests start their
# own on free ports. Each entry of the loop below is command:package.
system-deps:
	@missing=""; \
	for dep in redis-server:redis-server docker-compose:docker-compose promtool:prometheus \
		prometheus:prometheus nginx:nginx; do \
		cmd=$${dep%%:*}; pkg=$${dep#*:}; \
		command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || [ -x /usr/bin/$$cmd ] || \
			case " $$missing " in *" $$pkg "*) ;; *) missing="$$missing $$pkg";; esac; \
	done; \
	if [ -n "$$missing" ]; then \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		echo "system-deps: installing$$missing"; \
		[ -f $(APT_UPDATED) ] || { $$sudo apt-get update -qq && touch $(APT_UPDATED); } || exit 1; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing || exit 1; \
		for svc in prometheus nginx; do \
			case " $$missing " in *" $$svc "*) \
				if [ -d /run/systemd/system ]; then $$sudo systemctl disable --now $$svc >/dev/null 2>&1; \
				else $$sudo service $$svc stop >/dev/null 2>&1; $$sudo update-rc.d $$svc disable >/dev/null 2>&1; fi; \
			esac; \
		done; \
	fi; true

# The suite runs after the linters: ruff (style, imports) and mypy (types, configured in pyproject.toml).
test: setup system-deps lint
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: setup
	$(BIN)/t2mir demo

# Results tables (README.md, docs/results.md), docs/evals/INDEX.md and the result plots, rebuilt from
# the committed evaluation files in docs/evals/ as docs/evals/results.toml assigns them.
results: setup
	$(BIN)/t2mir results

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build *.egg-info
