# The two set-up commands of the README: `make demo` and `make test`. Both create .venv/ first.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo demo-mobilenet test bench soak venv finn-env clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade --quiet pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[controller,dev]'
	touch $(STAMP)

venv: $(STAMP)

# FINN v0.10.1's own environment (.venv-finn): from $$FINN_ROOT or ../shared/deps
finn-env: $(STAMP)
	$(VENV)/bin/finnchain finn-env --if-possible

demo: $(STAMP)
	$(VENV)/bin/finnchain demo

demo-mobilenet: $(STAMP)
	$(VENV)/bin/finnchain demo --model mobilenet-v1

test: $(STAMP) finn-env
	$(VENV)/bin/python -m pytest

bench: $(STAMP) finn-env
	$(VENV)/bin/python bench/executor.py
	$(VENV)/bin/python bench/planner.py
	$(VENV)/bin/python bench/transport.py
	$(VENV)/bin/python bench/finn.py

soak: $(STAMP)
	$(VENV)/bin/python bench/soak.py --minutes 5

clean:
	rm -rf $(VENV) .venv-finn artifacts .pytest_cache
