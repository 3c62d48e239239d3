# vit-survey: the two README commands (`make figures`, `make test`) bootstrap .venv on first use.
# Install order matters: torch first (pinned to the releases on the machine's disk), then the
# project and its dependencies, then natten built against that torch (--no-build-isolation).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= cpu
# Two workers on two cores; every test and notebook kernel uses one thread (see tests/conftest.py).
TEST_WORKERS ?= 2

.PHONY: figures test bench install clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-build-isolation natten
	touch $(STAMP)

figures: $(STAMP)
	$(VENV)/bin/survey run --profile $(PROFILE)

test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean-venv:
	rm -rf $(VENV)
