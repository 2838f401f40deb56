# ego_ros: the two commands a new user needs are `make demo` and `make test`.
# Both create or update .venv first (scripts/setup_env.sh; idempotent, seconds when nothing changed).
VENV ?= .venv
PY := $(VENV)/bin/python
# Isolate ROS 2 traffic of tests and the demo: localhost-only discovery.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: setup demo test lint bench clean help

help:
	@echo "make setup  - create/update $(VENV) (pinned wheels, build ego_interfaces, install ego_ros)"
	@echo "make demo   - end-to-end demo on the offline tiny model (random weights)"
	@echo "make test   - lint + the whole test suite"
	@echo "make bench  - benchmarks (prints numbers and ratios)"

setup:
	@bash scripts/setup_env.sh $(VENV)

demo: setup
	$(VENV)/bin/ego-ros demo

lint: setup
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q test

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build install log .pytest_cache .ruff_cache
