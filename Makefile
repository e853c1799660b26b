# Two commands set everything up: `make demo` and `make test`. Both are safe to run twice.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Rules call the `snakemap` command: the virtualenv comes first on PATH.
export PATH := $(BIN):$(PATH)

.PHONY: setup gdal browser slurm demo test test-fast bench lint clean-results

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

# The report test opens the HTML report in Debian's Chromium (skipped, with the reason, without it).
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else \
		echo "chromium is missing: the report's browser test will be skipped ('sudo apt-get install chromium')"; \
	fi

# The SLURM test starts a one-node SLURM on 127.0.0.1 from Debian's slurm-wlm and munge.
slurm:
	@if command -v slurmctld >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing slurm-wlm and munge"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; \
	else \
		echo "slurm-wlm is missing: the SLURM test will be skipped ('sudo apt-get install slurm-wlm munge')"; \
	fi

demo: setup
	$(VENV)/bin/snakemake --cores all

# As root with slurm-wlm installed, a local SLURM runs during the tests (see tests/test_slurm.py).
test: setup browser slurm
	@if [ "$$(id -u)" = 0 ] && command -v slurmctld >/dev/null 2>&1; then bash tests/slurm/start-slurm.sh >/dev/null; fi
	$(BIN)/python -m pytest; status=$$?; \
	if [ "$$(id -u)" = 0 ] && command -v slurmctld >/dev/null 2>&1; then bash tests/slurm/stop-slurm.sh; fi; \
	exit $$status

# The quick tier (under 3 minutes on 2 cores): no real snakemake, SLURM, browser or slow tests.
test-fast: setup
	$(BIN)/python -m pytest -m "not (workflow or slurm or browser or slow)"

# Benchmarks print their figures; the TorchGeo comparison needs the bench extra.
bench: setup
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/analyze_memory.py
	$(BIN)/python bench/train_efficiency.py
	$(BIN)/python bench/predict_efficiency.py --sizes 2048 3072
	$(BIN)/python bench/predict_backends.py
	$(BIN)/python bench/dag_scaling.py
	$(BIN)/python bench/gpu.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/downscaling.py
	$(BIN)/python bench/apply_throughput.py
	$(BIN)/python bench/cloud_read.py

# The style gate (CI runs it before the tests): ruff's rules and format, mypy --strict on the
# package, the stage packages' import contracts, the generated config schema up to date, snakefmt
# on the workflow and Snakemake's own linter.
lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src
	$(BIN)/lint-imports
	$(BIN)/snakemap config-schema | diff -u workflow/schemas/config.schema.json - \
		|| { echo "the config schema is stale: snakemap config-schema > workflow/schemas/config.schema.json"; exit 1; }
	$(BIN)/snakefmt --check workflow
	$(BIN)/snakemake --lint

clean-results:
	rm -rf results logs benchmarks resources/scenes resources/demo .snakemake
