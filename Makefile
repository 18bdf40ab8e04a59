# nabij: `make demo` to watch it work, `make test` to prove it does.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test prometheus lint typecheck unit integration schemas dashboard screenshots bench quality clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/nabij demo --console-stays

test: $(STAMP)
	bash scripts/ensure-servers.sh
	$(MAKE) --no-print-directory prometheus
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n 2

# The alert rules, their unit tests, the scrape config and the Alertmanager example.
prometheus:
	promtool check rules config/prometheus/rules/nabij.yml
	promtool test rules config/prometheus/tests/nabij_test.yml
	promtool check config config/prometheus/prometheus.yml
	promtool check config deploy/prometheus/prometheus.yml
	amtool check-config config/prometheus/alertmanager.yml

unit: $(STAMP)
	$(BIN)/pytest -n 2 -m "not integration"

# Refreshes docs/img/console-*.png from the browser test (a plain test run leaves them alone).
screenshots: $(STAMP)
	NABIJ_SCREENSHOTS=$(CURDIR)/docs/img $(BIN)/pytest -p no:cacheprovider tests/integration/test_console_browser.py

schemas: $(STAMP)
	$(BIN)/nabij export-schemas docs/schemas

dashboard: $(STAMP)
	$(BIN)/python -m services.shell.dashboard config/grafana/dashboards/nabij.json

bench: $(STAMP)
	$(BIN)/python -m bench.run

# Alarm quality over 10,000 simulated cases with known truth: docs/quality.md and docs/img/quality.png.
quality: $(STAMP)
	$(BIN)/python -m simulators.quality --cases 10000 --seed 2026 --out docs/quality.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
