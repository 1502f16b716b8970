# latentbias: `make test` (install + test suite) and `make demo` (install + main job on a default).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.latentbias-installed

.PHONY: install test test-slow demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e ".[test]"
	$(PY) -c "import latentbias; print('latentbias', latentbias.__version__, 'imports fine')"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -m "not slow" -q

test-slow: install
	$(PY) -m pytest -m slow -q

demo: install
	$(PY) examples/ala2_quickstart.py

clean:
	rm -rf $(VENV) build *.egg-info
