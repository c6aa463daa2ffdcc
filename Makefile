# The two commands a fresh machine needs: `make demo` and `make test`. Both set up first.
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: setup test lint demo bench clean
setup:
	@bash scripts/setup.sh

lint: setup
	@$(ENV) ruff check rats_ros test bench launch scripts

test: setup lint
	@$(ENV) python -m pytest test $(PYTEST_ARGS)

demo: setup
	@$(ENV) python -m rats_ros.ros.demo $(DEMO_ARGS)

bench: setup
	@$(ENV) python bench/run_all.py --smoke

clean:
	rm -rf build install .venv .pytest_cache
