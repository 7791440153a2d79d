# The two commands a newcomer runs: `make demo` and `make test`. Everything else is installed by them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# the venv's interpreter: the distribution's optimised build when it is recent enough (tools/pick_python.sh)
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell tools/pick_python.sh)
endif
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help setup storage-bin demo test lint bench images e2e cluster-build cluster-up cluster-down node-build node-up node-down bench-argo bench-node clean

help:
	@echo "make demo   - set everything up and run a compute job end to end on the embedded stack"
	@echo "make test   - set everything up and run the test suite (what CI runs)"
	@echo "make lint   - ruff, mypy (strict) on our packages, the tests and the benchmarks; the import contracts"
	@echo "make bench  - the local benchmarks: per-job overhead and throughput, status endpoint, staging"
	@echo "make images - the container images (node, python runtime) as OCI archives in .cache/images, no Docker"
	@echo "make e2e    - build (cached) and start the Argo control plane, kwok and a real node; run the e2e tests"
	@echo "make cluster-up / cluster-down - start / stop that control plane (127.0.0.1 only)"
	@echo "make node-up / node-down - start / stop the real node (kubelet, containerd, kube-router; cluster/node.sh)"
	@echo "make bench-argo - 1,000 concurrent workflows through the argo engine (needs cluster-up)"
	@echo "make bench-node - per-job latency on the real node next to a bare Argo workflow (needs node-up)"
	@echo "make clean  - remove the virtualenv, node_modules and the local data dir"

# --- setup -----------------------------------------------------------------------------------------
$(VENV)/.installed: pyproject.toml
	@echo "[setup] python virtualenv in $(VENV) (with $(PYTHON))"
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: Python >= 3.11 is needed")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "error: npm not found; install Node.js >= 18 (apt-get install -y nodejs npm)" >&2; exit 1; }
	@echo "[setup] npm packages (Ocean contracts, anvil) in node_modules/"
	@npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

# the unmodified ocean.js 8.6.2 client for tests/ocean_client/test_ocean_js.py (its own package, tests/oceanjs)
tests/oceanjs/node_modules/.installed: tests/oceanjs/package.json tests/oceanjs/package-lock.json tests/oceanjs/.npmrc
	@command -v npm >/dev/null || { echo "error: npm not found; install Node.js >= 18 (apt-get install -y nodejs npm)" >&2; exit 1; }
	@echo "[setup] ocean.js 8.6.2 client (npm @oceanprotocol/lib) in tests/oceanjs/node_modules/"
	@cd tests/oceanjs && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

# tools/cgroup2_vm.py: qemu and the distribution's kernel, for the cgroup v2 tests on a host that mounts v1
setup: $(VENV)/.installed node_modules/.installed tests/oceanjs/node_modules/.installed
	@tools/setup_system.sh
	@tools/setup_ocean_venv.sh .venv-ocean
	@$(PY) tools/cgroup2_vm.py setup

# MinIO and Kubo for the storage tests, built from the Go module proxy (cached in .cache/storage;
# cold: about 10 minutes on 2 cores). Without Go those tests are skipped and say why.
storage-bin:
	@if command -v go >/dev/null; then tools/storage/build.sh; \
	else echo "[setup] Go not found: MinIO/Kubo not built, the storage tests will be skipped (install Go >= 1.26)"; fi

# --- the two commands ------------------------------------------------------------------------------
demo: setup
	@$(VENV)/bin/c2d demo

# The Go builds (CPU) run while the Python and npm packages download (network): ~4 minutes saved cold.
# Then `make lint` (CI runs it through this target), then the tests.
test:
	@$(MAKE) --no-print-directory -j2 --output-sync=line setup storage-bin
	@$(MAKE) --no-print-directory lint
	@tools/run_pytest.sh $(PY) -m "not e2e" $(PYTEST_ARGS)

# --- development -----------------------------------------------------------------------------------
lint: setup
	$(VENV)/bin/ruff check c2d steps workflows provider node tests bench
	$(VENV)/bin/ruff format --check c2d steps workflows provider node tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy bench
	$(VENV)/bin/mypy tests
	$(VENV)/bin/lint-imports

bench: setup
	@tools/setup_system.sh bench
	@$(PY) bench/local_jobs.py $(BENCH_ARGS)
	@$(PY) bench/status_api.py
	@$(PY) bench/staging.py

# The node image (localhost/c2d-node:<version>) and the python:* runtime (localhost/c2d-python:3.11) as OCI
# archives in .cache/images, with mmdebstrap + umoci (no Docker, no registry; cached on their inputs;
# cold about 1.5 minutes on 2 cores). docs/images.md; the Containerfile builds the same with docker/podman.
images: $(VENV)/.installed node_modules/.installed
	@tools/setup_system.sh images
	@tools/images/build.sh $(IMAGES_ARGS)

# --- the Go-built control plane (heavy tier; binaries cached in .cache/cluster) ---------------------
cluster-build:
	@command -v go >/dev/null || { echo "error: Go >= 1.24 is needed to build the control plane (cluster/README.md)" >&2; exit 1; }
	@cluster/build.sh

# Argo's executor runs from the argoexec image build-node.sh packs (nothing is ever pulled)
ARGO_EXECUTOR_IMAGE ?= localhost/c2d-argoexec:v4.0.7

cluster-up: cluster-build
	@ARGO_EXECUTOR_IMAGE=$(ARGO_EXECUTOR_IMAGE) cluster/cluster.sh up

cluster-down: node-down
	@cluster/cluster.sh down

node-build: cluster-build
	@command -v go >/dev/null || { echo "error: Go >= 1.24 is needed to build the real node (cluster/README.md)" >&2; exit 1; }
	@tools/setup_system.sh node
	@cluster/build-node.sh

node-up: node-build images cluster-up
	@cluster/node.sh up

node-down:
	@cluster/node.sh down

e2e: setup node-up
	@tools/run_pytest.sh $(PY) -m e2e $(PYTEST_ARGS)

bench-argo: setup
	@$(PY) bench/argo_scale.py $(BENCH_ARGS)

bench-node: setup node-up
	@$(PY) bench/real_node.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules tests/oceanjs/node_modules .c2d
