# Set-up and entry points. Every target installs what it needs on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
NCA_VENV := .venv-nca
BIN := $(VENV)/bin
APT_PACKAGES := etcd-server nftables iproute2 iperf3 chromium gcc nginx libnginx-mod-http-modsecurity wrk

.PHONY: all install system-deps native demo test lint typecheck unit bench clean fuzz

all: test

# Debian packages: etcd (tests start a real one on loopback), nftables and iproute2 (dataplane),
# iperf3 (dataplane benchmark), chromium (the console's browser tests; npm comes with the machine),
# gcc (builds libinjection-python), nginx + libmodsecurity3 and wrk (the WAF's reference engine).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# network-config-analyzer pins its own dependency versions, so it lives in a venv of its own
# and the differential tests call its command line.
$(NCA_VENV)/.installed:
	$(PYTHON) -m venv $(NCA_VENV)
	$(NCA_VENV)/bin/pip install -q network-config-analyzer==2.1.0
	touch $@

# The browser libraries the server's console serves (package-lock.json pins them).
console/node_modules/.installed: console/package.json console/package-lock.json
	@command -v npm >/dev/null || { if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get install -y -qq --no-install-recommends npm; }
	cd console && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The WAF's hot modules compiled with mypyc into .native/<hash of their sources> (a no-op when
# that build exists; without it, or after an edit, the same modules run as plain Python).
native: $(VENV)/.installed
	$(BIN)/python -c 'import sys; from palisade.waf._native import main; sys.exit(main(["build"]))'

install: system-deps $(VENV)/.installed $(NCA_VENV)/.installed console/node_modules/.installed native

demo: system-deps $(VENV)/.installed console/node_modules/.installed native
	$(BIN)/palisade demo examples/

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy src

unit: install
	PALISADE_NCA=$(abspath $(NCA_VENV))/bin/nca $(BIN)/pytest -q

test: lint typecheck unit

# Random property and fuzz exploration, longer than `make test` runs it.
fuzz: install
	PALISADE_HYPOTHESIS=explore PALISADE_FUZZ_EXAMPLES=3000 $(BIN)/pytest -q tests/selector tests/model tests/policy -k "fuzz or property or hypo"

bench: install
	$(BIN)/python bench/policy_bench.py

clean:
	rm -rf $(VENV) $(NCA_VENV) .native console/node_modules .mypy_cache .pytest_cache .ruff_cache
