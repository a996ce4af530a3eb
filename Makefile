# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint format install

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job: the example shot list's storyboard and its film, with the shipped `shapes` models.
demo: $(STAMP)
	$(VENV)/bin/animatic storyboard examples/shapes_film.yaml --out demo/board
	$(VENV)/bin/animatic render demo/board --out demo/film.mp4 --overwrite

# The fast lane (under 2 minutes on 2 cores). `make test-slow` runs the tests marked slow
# (training to a result, multi-process, whole-pipeline renders); CI runs both.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .
