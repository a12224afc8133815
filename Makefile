# MetaStudio: `make run` opens the app, `make test` runs the whole test suite.
# Both create the virtual environment .venv with plain pip when it is missing.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-long lint clean-venv

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "MetaStudio needs Python 3.11 or newer; set PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/metastudio

lint: $(STAMP)
	$(VENV)/bin/lint-imports

test: $(STAMP)
	$(VENV)/bin/lint-imports
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

# The long variants (tests marked "long", each over ~30 s), left out of `make test`.
test-long: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -m long

clean-venv:
	rm -rf $(VENV)
