# The README's two set-up commands are `make demo` and `make test`; both make .venv/ first.
# One target per role installs what that role needs (pyproject.toml's extras):
#   make ops     deploy, operate and benchmark a given build (no torch)
#   make models  export, plan and build (and everything ops has)
#   make venv    development: models, tests and linters (what `make test` uses)
#   make board   .venv-board: the board side on a PYNQ v3.0 image's Python (3.10) with the
#                oldest numpy and pyzmq finnchain accepts and the image's pynq library (3.0.1);
#                `make test` runs the stages on it, FINN's driver through pynq included
PYTHON ?= python3
VENV := .venv
BOARD_VENV := .venv-board
# PYNQ v3.0's Python, from PATH or pyenv; `make board BOARD_PYTHON=/path/to/python3.10` to choose
BOARD_PYTHON ?= $(shell for p in python3.10 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.10*/bin/python3.10 2>/dev/null); do $$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null && command -v $$p && break; done)
BOARD_PINS := numpy==1.21.6 pyzmq==22.3.0 onnxruntime==1.23.2 pynq==3.0.1 'pycparser<3' bitstring==3.1.7

.PHONY: demo demo-mobilenet test test-all bench soak ops models venv board finn-env clean

$(VENV)/.installed-%: pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade --quiet pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[$*]'
	touch $@

ops: $(VENV)/.installed-ops
models: $(VENV)/.installed-models
venv: $(VENV)/.installed-dev

$(BOARD_VENV)/.installed: pyproject.toml
	@test -n "$(BOARD_PYTHON)" || { echo "make board: no Python 3.10 (a PYNQ v3.0 image's) on PATH or in pyenv; install one or pass BOARD_PYTHON=" >&2; exit 1; }
	rm -rf $(BOARD_VENV)
	$(BOARD_PYTHON) -m venv $(BOARD_VENV)
	$(BOARD_VENV)/bin/pip install --quiet $(BOARD_PINS)
	$(BOARD_VENV)/bin/pip install --quiet -e '.[board]'
	$(BOARD_VENV)/bin/python -m finnchain.emu.pynq_board
	touch $@

board: $(BOARD_VENV)/.installed

# FINN v0.10.1's own environment (.venv-finn): from $$FINN_ROOT or ../shared/deps
finn-env: models
	$(VENV)/bin/finnchain finn-env --if-possible

demo: models finn-env
	$(VENV)/bin/finnchain demo

demo-mobilenet: models finn-env
	$(VENV)/bin/finnchain demo --model mobilenet-v1

test: venv finn-env board
	$(VENV)/bin/python -m pytest

# also the slow tests (MobileNetV1 through FINN's front-end, every single cut, Molecule): about 50 min more
test-all: venv finn-env board
	$(VENV)/bin/python -m pytest -m ''

bench: venv finn-env
	$(VENV)/bin/python bench/executor.py
	$(VENV)/bin/python bench/planner.py
	$(VENV)/bin/python bench/transport.py
	$(VENV)/bin/python bench/finn.py

soak: venv
	$(VENV)/bin/python bench/soak.py --minutes 5

clean:
	rm -rf $(VENV) $(BOARD_VENV) .venv-finn artifacts .pytest_cache
