# The two commands of the README: `make demo` (main job) and `make test` (test suite).
PY := .venv/bin/python

.PHONY: setup demo test test-fast bench bench-classify lint clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m vision.demo $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(ARGS)

bench-classify: setup
	$(PY) bench/classify.py

lint: setup
	$(PY) -m ruff check vision synthetic tests bench train.py export.py

clean:
	rm -rf outputs multirun bundles mlruns.db mlartifacts .cache results.jsonl
