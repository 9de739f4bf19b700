# Both targets build and reuse a local virtual environment in .venv; demo also needs Fashion-MNIST.
# The interpreter: Python >= 3.12 found by tools/find_python.sh (PYTHON=... overrides).
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default

.PHONY: demo test
# The main job: a width study on Fashion-MNIST (installed first where missing, if it can be:
# launch/prepare_data.py); prints where its report is.
demo: $(VENV)/.run-deps
	$(PY) -m launch.prepare_data fashion_mnist
	$(PY) -m launch.main --config configs/default.py --workdir $(WORKDIR)

# The test suite (CI runs exactly this through .ci/run).
test: $(VENV)/.test-deps
	bash tests/run.sh

$(VENV)/.run-deps: setup.py constraints.txt
	test -x $(PY) || { python=$$(sh tools/find_python.sh) && "$$python" -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e .
	touch $@

$(VENV)/.test-deps: $(VENV)/.run-deps
	$(PY) -m pip install -q -c constraints.txt -e ".[test,torch,prepare]"
	touch $@
