# Two entry points that work on a fresh machine:
#   make demo   set everything up, then train the demo model and report zero-shot accuracy (the main job)
#   make test   set everything up, then run the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
DEBIAN_DATA := dataset-fashion-mnist openclipart-svg chromium

.PHONY: setup data demo test
.DEFAULT_GOAL := test

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# Real data the demo and tests read (Fashion-MNIST, openclipart) and the browser the web-page tests drive
# (Playwright cannot download its own here); Debian packages, so root and apt-get are needed.
data:
	@if dpkg -s $(DEBIAN_DATA) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q $(DEBIAN_DATA) >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q $(DEBIAN_DATA) >/dev/null; }; \
	else echo "note: install the Debian packages $(DEBIAN_DATA) (as root) for the demo, the real-data and the browser tests"; fi

demo: setup data
	$(VENV)/bin/clipworks demo --out runs/demo --overwrite

test: setup data
	$(VENV)/bin/python -m pytest
