# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kdpc-installed
DEMO_OUT ?= demo-out

.PHONY: demo demo-classification test bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The CPU torch wheel first: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/kdpc demo --out $(DEMO_OUT)

demo-classification: $(STAMP)
	$(BIN)/kdpc demo --task classification --out $(DEMO_OUT)-classification

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/record_size.py
	$(BIN)/python bench/record_cost.py
	$(BIN)/python bench/step_cost.py
	$(BIN)/python bench/accuracy.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) $(DEMO_OUT)-classification build *.egg-info
