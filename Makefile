# Two commands on a fresh machine: `make run` (set up + run the daemon on SQLite) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run demo test lint bench crash clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

# Set up, write a starter config if there is none, and run the daemon (SQLite: ./monitor.db).
run: install
	@test -f monitor.yaml || $(BIN)/monitor init
	$(BIN)/monitor --log-level info run

# Offline end-to-end demo on bundled sample posts.
demo: install
	$(BIN)/monitor demo

# Lint and the whole suite (PostgreSQL too when MONITOR_TEST_POSTGRES_URL is set; .ci/run sets it).
test: install
	$(BIN)/ruff check monitor tests bench
	$(BIN)/ruff format --check monitor tests bench
	$(BIN)/mypy monitor
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check monitor tests bench
	$(BIN)/ruff format --check monitor tests bench
	$(BIN)/mypy monitor

# Benchmarks, reported as ratios to baselines measured in the same run (docs/performance.md).
bench: install
	$(BIN)/python bench/run.py

# kill -9 the daemon at 50 random moments and check nothing is lost or doubled (docs/reliability.md).
crash: install
	$(BIN)/python tests/crash_harness.py --runs 50 --seed 1

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
