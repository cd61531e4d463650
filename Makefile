# Two commands do all the set-up on a fresh machine:
#   make demo   a real search on BreastMNIST (local Ray, local MLflow store), then its report
#   make test   the whole test suite, cluster and fault-tolerance tests included
# Both first create .venv and install medtune into it (once; again when pyproject.toml changes).
# `make test` also installs the system packages its cluster tests use (PostgreSQL for the MLflow
# server, Debian's docker-compose to validate docker/, Debian's chromium for the MLflow UI's browser
# test), if they are missing and it runs as root.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Where this project's machines keep the real data; override with MEDTUNE_DATA_ROOT=...
export MEDTUNE_DATA_ROOT ?= $(abspath ../shared/data/medmnist)
DEMO_STORAGE ?= results
DEMO_EXPERIMENT ?= quickstart-$(shell date +%Y%m%d-%H%M%S)
PYTEST_ARGS ?=
SYSTEM_PACKAGES := postgresql docker-compose chromium

.PHONY: demo test test-long test-quick install system-packages mlflow-ui

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch==2.13.0 resolves to the CPU build on this kind of machine; the pins in pyproject.toml keep
	# pip from pulling CUDA wheels.
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

system-packages:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
		else echo "make test needs:$$missing (apt-get install -y$$missing)"; exit 1; fi; \
	fi

demo: $(STAMP)
	$(BIN)/medtune tune --space quick --dataset breastmnist --num-samples 12 \
		--confirm-per-level head --confirm-seeds 3 \
		--storage $(DEMO_STORAGE) --experiment $(DEMO_EXPERIMENT)
	$(BIN)/medtune analyze --experiment $(DEMO_EXPERIMENT) --storage $(DEMO_STORAGE)

test: $(STAMP) system-packages
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -m "not long" $(PYTEST_ARGS)

test-long: $(STAMP) system-packages
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -m long $(PYTEST_ARGS)

test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not cluster and not slow and not long" $(PYTEST_ARGS)

mlflow-ui: $(STAMP)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --workers 1 --host 127.0.0.1 --port 5000 \
		--backend-store-uri sqlite:///$(abspath $(DEMO_STORAGE))/mlflow.db
