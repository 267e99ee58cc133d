# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install det, train the embedded default (tiny RetinaNet, synthetic data)
#   make test   create .venv, install det with its test extras, run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/det: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

.PHONY: demo test
demo: $(BIN)/det
	$(BIN)/det data synth data/synth
	$(BIN)/det train presets/retinanet_tiny_synth.toml --resume auto

test: $(BIN)/det
	$(BIN)/python -m pytest -q
