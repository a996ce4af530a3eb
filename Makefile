# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint format install

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Until the shapes models ship: the panels come from the oracle (the renderer reading each prompt)
# and the in-betweens from the optical-flow baseline.
demo: $(STAMP)
	$(VENV)/bin/animatic dataset shapes --out demo/shapes --clips 64 --size 64 --frames 24 --seed 0
	$(VENV)/bin/animatic storyboard examples/shapes_film.yaml --out demo/board --keyframe-model oracle
	$(VENV)/bin/animatic render demo/board --out demo/film.mp4 --tween-model flow --overwrite

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .
