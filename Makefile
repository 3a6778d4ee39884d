# Two commands do all the set-up on a fresh machine:
#   make demo   - end-to-end demo on embedded defaults (starts its own broker and Redis)
#   make test   - the test suite (starts its own broker and Redis on free ports)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip install -q --python $(PY) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=25

bench-quick: $(STAMP)
	$(PY) bench/training_set.py --scale 0.1
	$(PY) bench/stream.py --quick
	$(PY) bench/serve.py --quick

clean:
	rm -rf $(VENV) .tessera
