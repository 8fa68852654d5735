# Swarm: `make run` starts the control plane, `make test` runs the suite.
# Both bootstrap .venv on a fresh machine with only Python 3.11+.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench install system-deps clean-var

$(STAMP): requirements.txt requirements-dev.txt agent/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet -e ./agent
	touch $(STAMP)

install: $(STAMP)

system-deps:
	bash scripts/system-deps.sh

run: $(STAMP)
	$(PY) -m swarm.launcher run

test: $(STAMP) system-deps
	$(PY) -m swarm.launcher test

bench: $(STAMP)
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit $$?; done

clean-var:
	rm -rf var
