# The two commands a user needs: `make train` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test test-slow bench clean-venv

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# The first run: experiment=quickstart (ARGS may name another preset or override anything).
train: $(STAMP)
	$(BIN)/teleport-train experiment=quickstart $(ARGS)

test: $(STAMP)
	$(BIN)/pytest -q $(ARGS)

test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow $(ARGS)

bench: $(STAMP)
	$(BIN)/python scripts/bench.py --out bench.json $(ARGS)

clean-venv:
	rm -rf $(VENV)
