# The two commands of the README:
#   make book   executes every notebook in CI mode (papermill) and builds the HTML book in _build/html
#               (the scorecard page, book/scorecard.md, is regenerated from notebooks/results/ first)
#   make test   runs the unit tests and re-executes the notebooks, checking their outputs (nbval);
#               chapters 5-7 run as on Colab, from downloads only (see COLAB_CHAPTERS below)
# Both create .venv and install the pinned requirements first (python3 >= 3.11 with venv needed).
# Progress bars are switched off (TQDM_DISABLE) so executed notebooks keep a short output.

VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
export TQDM_DISABLE := 1

.PHONY: book html test lint notebooks env clean lab student browser

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-official.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "the book needs Python >= 3.11 (set PYTHON=python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-official.txt
	touch $@

notebooks: env
	@for nb in $(NOTEBOOKS); do \
	  echo "executing $$nb (CI mode)"; \
	  (cd notebooks && ../$(BIN)/papermill --no-progress-bar --log-level WARNING -k python3 $$(basename $$nb) $$(basename $$nb)) || exit 1; \
	  $(BIN)/python -m medvae_lib.nbhygiene $$nb || exit 1; \
	done

book: notebooks
	$(MAKE) --no-print-directory html

# Build the HTML from the committed notebooks, strictly: any Sphinx warning (a broken reference,
# include or citation) fails the build, after all warnings have been reported.
html: env
	$(BIN)/python -m medvae_lib.scorecard
	$(BIN)/jupyter-book build . --config book/_config.yml --toc book/_toc.yml --warningiserror --nitpick --keep-going
	@echo "The book is in _build/html/index.html"

# Chromium for the browser tests of the site and of JupyterLab (tests/test_site.py): Debian's package,
# installed when missing and this runs as root with apt-get; otherwise it says what to install.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Chromium (apt-get) for the browser tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
	    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; \
	  else echo "no Chromium: the browser tests will be skipped (install it: sudo apt-get install chromium)"; fi; }

# Chapters 5-7 are re-executed as on Colab (tests/colab_simulation.py): no ../shared, every file they read
# downloaded from a loopback mirror of ../shared at its public URL and verified, an empty cache.
COLAB_CHAPTERS ?= 05,06,07
test: env browser
	MEDVAE_RESULTS_DIR=$(CURDIR)/_build/test-results PYTHONPATH=tests $(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider -p colab_simulation --simulate-colab=$(COLAB_CHAPTERS) --durations=25

lint: env
	$(BIN)/python -m ruff check . && $(BIN)/python -m ruff format --check . && $(BIN)/python -m medvae_lib.nbhygiene --check $(NOTEBOOKS)

# Open the notebooks in JupyterLab, in the book's venv (the kernel "python3" is that venv's Python).
lab: env
	$(BIN)/jupyter lab notebooks

# A copy of the notebooks for students: solution cells removed (a code cell `answer = None` in place of each
# solution's code), outputs cleared; see README.md, "For teachers".
STUDENT_DIR ?= _build/student_notebooks
student: env
	$(BIN)/python -m medvae_lib.student_copy notebooks $(STUDENT_DIR)

clean:
	rm -rf _build notebooks/runs
