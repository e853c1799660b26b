# Two commands set everything up: `make demo` and `make test`. Both are safe to run twice.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Rules call the `snakemap` command: the virtualenv comes first on PATH.
export PATH := $(BIN):$(PATH)

.PHONY: setup gdal demo test lint clean-results

setup: $(VENV)/.installed gdal

# Re-installs when pyproject.toml changes; the editable install picks up source edits by itself.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# GDAL's command-line tools (gdalbuildvrt, gdal_translate) come from Debian's gdal-bin.
gdal:
	@if command -v gdalbuildvrt >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing gdal-bin"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gdal-bin >/dev/null; \
	else \
		echo "GDAL command-line tools are missing: install them with 'sudo apt-get install gdal-bin'" \
		     "(Debian/Ubuntu) or 'conda install -c conda-forge gdal'"; \
	fi

demo: setup
	$(BIN)/snakemake --cores all

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/snakemake --lint

clean-results:
	rm -rf results logs benchmarks resources/scenes resources/demo .snakemake
