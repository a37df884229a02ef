# The two commands of the README:
#   make book   -- set up (once) and build the Jupyter Book into _build/html/
#   make test   -- set up (once) and run the whole test suite (unit tests, nbval, book build)
# Both create the virtual environment .venv on first use and reuse it afterwards, installing
# the exact versions of requirements.lock (refresh it with `make lock`).

VENV   ?= .venv
PYTHON ?= python3
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.rsbook-installed
# the stock ipykernel spec starts `python` from PATH: make it the venv's
export PATH := $(BIN):$(PATH)

# make test trains with other random numbers than the run that stored the notebooks' outputs
# (fit adds this to every training seed): a locked digit of a trained result fails everywhere.
TEST_SEED_OFFSET ?= 1000

.PHONY: book test venv benchmark notebooks clean lock

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# re-resolve every dependency of pyproject.toml to exact versions (all platforms, Python >= 3.10)
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip compile pyproject.toml --extra book --extra test --universal --python-version 3.10 \
		--no-header -o requirements.lock

book: $(STAMP)
	$(BIN)/python book/check_notebooks.py
	$(BIN)/jupyter-book build . --warningiserror --keep-going
	@echo "The book is in _build/html/ -- open _build/html/index.html in a browser."

test: $(STAMP)
	RSBOOK_SEED_OFFSET=$(TEST_SEED_OFFSET) $(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=900 -p no:cacheprovider --durations=20

# re-execute every chapter notebook in place with its default parameters (stores fresh outputs),
# one at a time (two notebooks at once oversubscribe torch's threads), without the test offset
notebooks: $(STAMP)
	rm -rf _artifacts
	cd notebooks && for nb in [0-9]*.ipynb; do \
		RSBOOK_SEED_OFFSET= $(BIN)/papermill $$nb $$nb -k python3 --no-progress-bar || exit 1; done

benchmark: $(STAMP)
	$(BIN)/python -m rsbook benchmark

clean:
	rm -rf _build _artifacts
