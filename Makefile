# pixgen: `make demo` and `make test` each install first when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pixgen-installed

.PHONY: install demo test test-fast lint docs bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,video,serve,ray]"
	touch $(STAMP)

demo: install
	$(BIN)/pixgen "a red circle on a blue background" --preset shapes --seed 2

test: install
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		echo "pixgen: browser tests skipped: no chromium (apt-get install -y chromium)"
	$(BIN)/python -m pytest -q -m "not gpu"

test-fast: install
	$(BIN)/python -m pytest -q -m "not gpu and not slow"

lint: install
	$(BIN)/ruff check pixgen tests benchmarks

# every README image from its script (docs/make_*.py; tests/test_docs.py checks that each has one)
docs: install
	$(BIN)/python docs/make_gallery.py
	$(BIN)/python docs/make_drawers_gallery.py
	$(BIN)/python docs/make_composition.py
	$(BIN)/python docs/make_sweeps.py
	$(BIN)/python docs/make_screenshot.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
