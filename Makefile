# Quick-start targets. Each does its own set-up in a local virtualenv (.venv).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Every source file of the package, subpackages included (cli/, server/, ...).
SOURCES := $(shell find src/fastsmtp \( -name '*.py' -o -name '*.pyx' -o -name '*.pxd' \
                -o -name '*.pyi' -o -name py.typed \) -not -path '*/__pycache__/*') \
           pyproject.toml CMakeLists.txt

.PHONY: demo test bench bench-smoke lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Reinstalls the package (and rebuilds the compiled core) whenever a source changed.
.make-installed: $(PY) $(SOURCES)
	$(PY) -m pip install -q ".[test,bench]"
	@touch $@

# The demo needs nothing but the package (uvloop is used when available).
.make-demo: $(PY) $(SOURCES)
	$(PY) -m pip install -q ".[uvloop]"
	@touch $@

demo: .make-demo
	$(VENV)/bin/fastsmtp demo

# The whole suite, once on each core implementation.
test: .make-installed
	$(PY) -c "import fastsmtp, sys; print('fastsmtp', fastsmtp.__version__, 'core:', fastsmtp.IMPLEMENTATION)"
	FASTSMTP_IMPLEMENTATION=cython $(PY) -m pytest -q -p no:cacheprovider tests
	FASTSMTP_IMPLEMENTATION=python $(PY) -m pytest -q -p no:cacheprovider tests

# Static checks: strict mypy (pyproject [tool.mypy]) on the package and on a user's program
# written against the public API (tests/typing), and ruff's correctness, bugbear,
# pyupgrade and import-order rules. B905 (zip() without strict=) is left off on purpose.
lint: .make-installed
	$(VENV)/bin/mypy src/fastsmtp
	$(VENV)/bin/mypy --strict tests/typing
	$(VENV)/bin/ruff check --select F,E9,B,UP,I --ignore B905 src

bench: .make-installed
	$(PY) -m pytest -q bench --benchmark-only --benchmark-columns=min,median,ops

bench-smoke: .make-installed
	$(PY) -m pytest -q bench --benchmark-disable

clean:
	rm -rf $(VENV) build .make-installed .make-demo
