# The two commands of the README: `make run` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# Test processes (pytest-xdist): most tests wait on servers, not on the CPU. One per file,
# so a module's fixtures are made once; the Kubernetes bed is shared by all of them.
PYTEST_WORKERS ?= 4

.PHONY: run test setup testbed go-example image unit lint clean
.PHONY: soak dashboard

# A virtualenv with the package (editable) and the test tools; redone when packaging changes.
# The producer client (clients/python) is a dependency of the runner, installed from here.
$(BIN)/ksr: setup.cfg pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e clients/python -e '.[test]'
	touch $@

setup: $(BIN)/ksr
	scripts/install-system-deps redis-server redis-sentinel openssl

# The Kubernetes binaries, built from the Go module proxy once and cached.
testbed:
	$(PYTHON) scripts/kube-testenv build

# The Go producer example (clients/go-example), built once and cached by its sources' hash.
go-example:
	$(PYTHON) scripts/kube-testenv go-example

# The container image: Docker when its engine answers, else podman on a Debian base (docs/deploy.md).
image:
	docker info >/dev/null 2>&1 || scripts/install-system-deps podman runc mmdebstrap
	scripts/build-image

run: setup
	$(BIN)/ksr dev --samples $(RUN_ARGS)

test: setup testbed go-example lint
	scripts/install-system-deps promtool prometheus wrk chromium podman runc mmdebstrap
	$(BIN)/python -m pytest -q -ra -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS) tests

# The long forms of the time-bound tests: the 5-minute callback outage (make test runs 60 s).
soak: setup
	KSR_TEST_CALLBACK_OUTAGE=300 $(BIN)/python -m pytest -q -ra $(PYTEST_ARGS) tests/e2e/test_callback_outage.py

# The chart's Grafana dashboard from its generator (tests/unit/test_dashboard.py checks they agree).
dashboard: $(BIN)/ksr
	$(BIN)/python charts/kube-stream-runner/dashboards/generate.py

unit: $(BIN)/ksr
	$(BIN)/python -m pytest -q tests/unit

lint: $(BIN)/ksr
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy
	$(BIN)/lint-imports  # the layers of docs/architecture.md: contracts in setup.cfg

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .import_linter_cache
