# Two commands do all setup on a fresh machine:
#   make demo   creates .venv, installs Assay with the extras the demo needs, runs the quickstart recipe on the
#               bundled sample and writes a report
#   make test   creates .venv, installs everything (and the peer tools the cross-checks compare against), runs pytest
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PEERS := .venv-peers
DEMO_OUT ?= out/quickstart

.PHONY: install demo test peers docs-data clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $@

install: $(VENV)/.installed

# datatrove, the reference the filter cross-checks compare against, lives in its own venv (its pins differ from ours)
$(PEERS)/.installed:
	$(PY) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install -q --upgrade "pip>=24"
	$(PEERS)/bin/python -m pip install -q 'datatrove[processing,io]==0.10.1' spacy aiohttp lxml_html_clean
	touch $@

# real HTML for tests: Debian's Python and PostgreSQL manuals (PSF and PostgreSQL licenses); needs root + apt
docs-data:
	@if [ ! -d /usr/share/doc/python3.11/html ] || [ ! -d /usr/share/doc/postgresql-doc-15/html ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq python3-doc postgresql-doc-15 >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq python3-doc postgresql-doc-15 >/dev/null)); \
	  else echo "note: tests that read Debian's python3-doc/postgresql-doc-15 need them installed"; fi; fi

peers: $(PEERS)/.installed docs-data

demo: install
	$(BIN)/assay run recipes/quickstart.yaml --input samples/python-docs --output $(DEMO_OUT) --overwrite --workers 2
	@echo "output shards, rejected/, stats.json and report.html are in $(DEMO_OUT)"

test: install peers
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(PEERS) out .pytest_cache
