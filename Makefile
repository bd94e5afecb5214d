# bonas — `make help` lists the targets. Every target creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STUDY  ?= digits
N      ?= 2
BUDGET ?= 10m
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install search run workers dashboard report compare trials best test test-fast lint bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  variables: STUDY=<name> (studies/<name>.toml, default digits), N=<workers>, BUDGET=<90s|45m|1h>, ARGS='<extra bonas flags>'"

$(BIN)/bonas: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/bonas ## create .venv and install bonas with its dev tools

search: $(BIN)/bonas ## run (or resume) studies/STUDY.toml, then print the leaderboard
	$(BIN)/bonas search studies/$(STUDY).toml $(ARGS)

run: $(BIN)/bonas ## from a budget to a tested model: make run STUDY=<name> BUDGET=1h (search, then train and test the winner)
	$(BIN)/bonas run studies/$(STUDY).toml --budget $(BUDGET) $(ARGS)

workers: $(BIN)/bonas ## run studies/STUDY.toml with N local worker processes
	$(BIN)/bonas search studies/$(STUDY).toml --workers $(N) $(ARGS)

trials: $(BIN)/bonas ## print the leaderboard of studies/STUDY.toml
	$(BIN)/bonas trials studies/$(STUDY).toml $(ARGS)

best: $(BIN)/bonas ## print the best trial of studies/STUDY.toml
	$(BIN)/bonas best studies/$(STUDY).toml $(ARGS)

dashboard: $(BIN)/bonas ## open the study in optuna-dashboard on http://127.0.0.1:8080
	$(BIN)/bonas dashboard studies/$(STUDY).toml $(ARGS)

report: $(BIN)/bonas ## write reports/STUDY/index.html, figures and trials.csv
	$(BIN)/bonas report studies/$(STUDY).toml $(ARGS)

test: $(BIN)/bonas ## run the test suite (set CI=true to turn skips for missing system parts into failures)
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(BIN)/bonas ## the inner loop: no processes, servers, browsers or training longer than a second
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

lint: $(BIN)/bonas ## ruff: lint (line length 130) and formatting
	$(BIN)/ruff check bonas tests bench
	$(BIN)/ruff format --check bonas tests bench

clean: ## remove study databases, reports and caches (keeps .venv)
	rm -rf studies/*.db studies/*.db-* studies/*.lock studies/*.artifacts reports .pytest_cache .ruff_cache
