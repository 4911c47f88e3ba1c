# The whole set-up on a fresh machine is `make run` or `make test`: both install first.
# uv is bootstrapped into a private venv (.tools) with the interpreter's own pip;
# the stack is installed from the committed, hashed lock (requirements.lock).
PYTHON ?= python3
UV_VERSION ?= 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast test-slow bench chaos lint lock clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(STAMP): requirements.lock $(UV) $(wildcard */*/pyproject.toml) pyproject.toml
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	VIRTUAL_ENV=$(VENV) $(UV) pip sync --quiet requirements.lock
	touch $(STAMP)

# checkov pins packages that would move the workspace's own pins, so it has its own venv and lock.
CHECKOV := $(TOOLS)/checkov/bin/checkov

$(CHECKOV): deploy/ci/requirements-checkov.lock $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(TOOLS)/checkov
	VIRTUAL_ENV=$(TOOLS)/checkov $(UV) pip sync --quiet deploy/ci/requirements-checkov.lock
	touch $(CHECKOV)

install: $(STAMP) $(CHECKOV)

run: install
	$(BIN)/leaderboard dev

test: install
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

test-slow: install
	$(BIN)/pytest -m slow

bench: install
	$(BIN)/python -m leaderboard.cli.bench

# Whole-system faults under traffic on a stack of its own; exits non-zero on any loss or double.
chaos: install
	$(BIN)/python -m leaderboard.cli.chaos

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy conftest.py tests libs/common/src libs/common/tests services/*/src services/*/tests \
		tools/cli/src tools/cli/tests tools/testkit/src

# Re-pin after editing a pyproject: writes requirements.lock (names, versions, hashes).
lock: $(UV)
	$(UV) lock --quiet
	$(UV) export --quiet --format requirements-txt --all-packages --all-groups --no-header -o requirements.lock
	$(UV) pip compile --quiet --generate-hashes --python-version 3.11 --no-header deploy/ci/requirements-checkov.in -o deploy/ci/requirements-checkov.lock

clean:
	rm -rf $(VENV) $(TOOLS) .leaderboard/stack .pytest_cache .mypy_cache .ruff_cache
