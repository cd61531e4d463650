# Two commands do all the set-up on a fresh machine:
#   make demo   a real search on BreastMNIST (local Ray, local MLflow store), then its report
#   make test   the test suite
# Both first create .venv and install medtune into it (once; again when pyproject.toml changes).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Where this project's machines keep the real data; override with MEDTUNE_DATA_ROOT=...
export MEDTUNE_DATA_ROOT ?= $(abspath ../shared/data/medmnist)
DEMO_STORAGE ?= results
DEMO_EXPERIMENT ?= quickstart-$(shell date +%Y%m%d-%H%M%S)
PYTEST_ARGS ?=

.PHONY: demo test install mlflow-ui

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch==2.13.0 resolves to the CPU build on this kind of machine; the pins in pyproject.toml keep
	# pip from pulling CUDA wheels.
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/medtune tune --space quick --dataset breastmnist --num-samples 12 \
		--storage $(DEMO_STORAGE) --experiment $(DEMO_EXPERIMENT)
	$(BIN)/medtune analyze --experiment $(DEMO_EXPERIMENT) --storage $(DEMO_STORAGE)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

mlflow-ui: $(STAMP)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --workers 1 --host 127.0.0.1 --port 5000 \
		--backend-store-uri sqlite:///$(abspath $(DEMO_STORAGE))/mlflow.db
