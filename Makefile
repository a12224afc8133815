# MetaStudio: `make run` opens the app, `make test` runs the whole test suite.
# Both create the virtual environment .venv with plain pip when it is missing.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-long lint docs clean-venv

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

# The API reference for plugin authors (metastudio.api, the hooks, the pytest plugin's fixtures),
# rendered from the docstrings with pdoc into build/docs/api/ (open index.html); built on demand,
# not kept in git.
DOCS_STAMP := $(VENV)/.docs-stamp

$(DOCS_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test,docs]'
	@touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	rm -rf build/docs/api
	$(PY) docs/api_reference.py build/docs/api

clean-venv:
	rm -rf $(VENV)
