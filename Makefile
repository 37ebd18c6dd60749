# The two set-up commands of the README: `make demo` and `make test`. Both create .venv/ first.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo demo-mobilenet test bench soak venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade --quiet pip
	$(VENV)/bin/pip install --quiet -e '.[controller,dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/finnchain demo

demo-mobilenet: $(STAMP)
	$(VENV)/bin/finnchain demo --model mobilenet-v1

test: $(STAMP)
	$(VENV)/bin/python -m pytest

bench: $(STAMP)
	$(VENV)/bin/python bench/executor.py
	$(VENV)/bin/python bench/planner.py
	$(VENV)/bin/python bench/transport.py

soak: $(STAMP)
	$(VENV)/bin/python bench/soak.py --minutes 5

clean:
	rm -rf $(VENV) artifacts .pytest_cache
