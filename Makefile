# Swarm: `make run` starts the control plane, `make test` runs the suite.
# Both bootstrap .venv on a fresh machine with only Python 3.11+.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench audit install system-deps microvm-image clean-var

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

# The microVM runtime's image (Debian kernel + mmdebstrap'd root filesystem + the agent), rebuilt only
# when its inputs change, and the KVM probe (cached per host). Needs root and apt (system-deps).
microvm-image: $(STAMP) system-deps
	$(PY) manage.py microvm_image --probe

test: $(STAMP) system-deps microvm-image
	$(PY) -m swarm.launcher test

# Known vulnerabilities in the pinned requirements (pip-audit over the installed .venv); fails on one with
# a fix available. AUDIT_FLAGS=--allow-offline: an unreachable vulnerability service is a warning, not a failure.
AUDIT_FLAGS ?=
audit: $(STAMP)
	$(PY) scripts/audit.py $(AUDIT_FLAGS)

bench: $(STAMP)
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit $$?; done

clean-var:
	rm -rf var
