# The two commands of the README. Each one sets up .venv itself (again when
# pyproject.toml changed), so a fresh machine with only python3 can run them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_LOGGING_SERVER_LEVEL ?= CRITICAL

.PHONY: demo test test-future lint clean

demo: $(STAMP)
	$(BIN)/promo demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The suite again with the clock a year ahead (Debian's faketime), so that a test that
# fixes a date but lets some call reach the real clock fails today, not next month. The
# deploy test (a Prefect server, a worker and minutes of real waiting) runs once, above.
test-future: $(STAMP)
	faketime -f '+365d' $(BIN)/python -m pytest -q -p no:cacheprovider \
		--deselect tests/test_deploy.py

lint: $(STAMP)
	$(BIN)/ruff check .

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) outbox promo.db demo
