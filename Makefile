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

.PHONY: figures test test-browser bench site install clean-venv

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
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup --ignore=tests/browser $(PYTEST_ARGS)

# The notebooks in a real JupyterLab (01_vit runs; every notebook opens) and the site from file://,
# driven by headless Chromium (not part of `make test`). Installs
# Debian's chromium if missing (needs root) and Playwright for Python into .venv; Playwright drives
# /usr/bin/chromium and never downloads a browser. Screenshots: build/test-artifacts/.
test-browser: $(STAMP)
	@test -x /usr/bin/chromium || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	@$(PY) -c "import playwright" 2>/dev/null || $(PY) -m pip install --quiet playwright
	SURVEY_BROWSER_TESTS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest tests/browser -v $(PYTEST_ARGS)

# The notebooks executed by the last `make figures` (build/notebooks/$(PROFILE)/) as a static HTML site
# in build/site/ (index.html in learning-path order); works from file:// with no network.
site: $(STAMP)
	$(VENV)/bin/survey site --profile $(PROFILE)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean-venv:
	rm -rf $(VENV)
