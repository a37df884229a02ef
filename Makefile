# The two commands of the README:
#   make book   -- set up (once) and build the Jupyter Book into _build/html/
#   make test   -- set up (once) and run the whole test suite (unit tests, nbval, book build)
# Both create the virtual environment .venv on first use and reuse it afterwards.

VENV   ?= .venv
PYTHON ?= python3
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.rsbook-installed
# the stock ipykernel spec starts `python` from PATH: make it the venv's
export PATH := $(BIN):$(PATH)

.PHONY: book test venv benchmark notebooks clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[book,test]'
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/python book/check_notebooks.py
	$(BIN)/jupyter-book build . --warningiserror --keep-going
	@echo "The book is in _build/html/ -- open _build/html/index.html in a browser."

test: $(STAMP)
	$(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=900 -p no:cacheprovider --durations=20

# re-execute every chapter notebook in place with its default parameters (stores fresh outputs)
notebooks: $(STAMP)
	rm -rf _artifacts
	cd notebooks && for nb in [0-9]*.ipynb; do $(BIN)/papermill $$nb $$nb -k python3 || exit 1; done

benchmark: $(STAMP)
	$(BIN)/python -m rsbook benchmark

clean:
	rm -rf _build _artifacts
