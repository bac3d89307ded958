VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test pytest typecheck lint docs screenshots clean

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,otlp,postgres]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m example_app.demo

PYTEST := $(PY) -m pytest -q
MYPY := $(VENV)/bin/mypy
RUFF := $(VENV)/bin/ruff check .
MKDOCS := $(VENV)/bin/mkdocs build --strict --quiet

# The tests, then the checks that keep the code typed, linted and documented, in this order; each must pass.
test: $(STAMP)
	$(PYTEST)
	$(MYPY)
	$(RUFF)
	$(MKDOCS)

pytest: $(STAMP)
	$(PYTEST)

typecheck: $(STAMP)
	$(MYPY)

lint: $(STAMP)
	$(RUFF)

# The site goes to site/ (git-ignored); --strict fails on broken links and anchors.
docs: $(STAMP)
	$(MKDOCS)

# The browser test refreshes the dashboard pictures in docs/img/ (a real Chromium; see docs/admin.md).
screenshots: $(STAMP)
	UPDATE_SCREENSHOTS=1 $(PYTEST) -p no:randomly tests/e2e/test_dashboard_browser.py

clean:
	rm -rf $(VENV) build site *.egg-info .mypy_cache .ruff_cache
