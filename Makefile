# mdmscep: custom SCEP integration for an Apple MDM, as four Python services.
# `make demo` runs the product's main job; `make test` runs the whole suite. Both install what
# they need (virtualenv, pinned packages, Debian's `scep`) on a machine with PostgreSQL and RabbitMQ.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
SERVICES := common admin_config scep_proxy profile_processor mdm_endpoint
EDITABLE := $(foreach s,$(SERVICES),services/$(s)) tests/hostsim
STAMP := $(VENV)/.installed
PROTO_OUT := services/common
# Compiled bytecode (pytest's rewritten test modules too) is cached under .cache/pycache, out of
# the source tree. Where the environment turns it off (PYTHONDONTWRITEBYTECODE, as on the CI
# machines), every process compiled the same modules again: each pytest-xdist worker spent 6 s of
# CPU collecting the suite instead of 2.5 s, and each service process of every stack a test starts
# 0.1-0.2 s more.
export PYTHONPYCACHEPREFIX := $(CURDIR)/.cache/pycache
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help venv scep wrk proto proto-check migrate run demo test test-fast test-long audit lint bench clean deploy-tools lint-deploy

help:
	@echo "make demo        run the stack, a real scepserver and the admin flow end to end"
	@echo "make test        install everything, lint and run the whole test suite (about 5 minutes)"
	@echo "make test-fast   unit and integration tests that start no stack, in parallel (about a minute)"
	@echo "make run         start the four services locally (Ctrl-C stops all)"
	@echo "make migrate     create the database if missing and apply migrations"
	@echo "make proto       regenerate gRPC stubs from proto/"
	@echo "make lint        ruff, and a drift check of the generated stubs"
	@echo "make bench       run every benchmark; writes docs/benchmarks.md and its plots"
	@echo "make test-long   the suite with the fault tests on 200 hosts and 10x fuzz examples"
	@echo "make audit       pip-audit of the pinned requirements (policy: docs/reliability.md)"
	@echo "make lint-deploy hadolint, compose/nginx/kustomize and Kubernetes schema checks"

$(STAMP): requirements/runtime.txt requirements/dev.txt $(foreach p,$(EDITABLE),$(p)/pyproject.toml)
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/runtime.txt -r requirements/dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps $(foreach p,$(EDITABLE),-e $(p))
	touch $@

venv: $(STAMP)

# micromdm/scep 2.1.0 from Debian: scepserver (a real SCEP CA) and scepclient, used by tests and demo.
scep:
	@command -v scepserver >/dev/null && command -v scepclient >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q scep >/dev/null 2>&1 || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q scep; }; }

# wrk: the MDM endpoint benchmark's load generator (in C, so the server keeps the CPU).
wrk:
	@command -v wrk >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q wrk >/dev/null 2>&1 || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q wrk; }; }

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) \
	  --grpc_python_out=$(PROTO_OUT) proto/mdmscep/v1/*.proto

proto-check: proto
	@git diff --exit-code -- $(PROTO_OUT)/mdmscep && test -z "$$(git status --porcelain -- $(PROTO_OUT)/mdmscep)" \
	  || { echo "generated gRPC stubs differ from proto/: run 'make proto' and commit"; exit 1; }

lint: $(STAMP) proto-check lint-deploy
	$(BIN)/ruff check services tests deploy bench

# Debian's nginx (nginx -t) and docker-compose (compose config without an engine).
# RUNLEVEL=1 keeps the nginx package from starting a server on port 80.
deploy-tools:
	@command -v nginx >/dev/null && command -v docker-compose >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO env RUNLEVEL=1 apt-get install -y -q nginx-light docker-compose >/dev/null 2>&1 || { \
	    $$SUDO apt-get update -q >/dev/null && $$SUDO env RUNLEVEL=1 apt-get install -y -q nginx-light docker-compose; }; }

# hadolint, yamllint, shellcheck, compose schema + config, nginx -t, kustomize + k8s schemas.
lint-deploy: $(STAMP) deploy-tools
	DEPLOY_LINT_STRICT=$${CI:+1} deploy/lint.sh

migrate: $(STAMP)
	$(BIN)/mdmscep-migrate

run: $(STAMP)
	$(BIN)/python deploy/local/launcher.py

demo: $(STAMP) scep
	$(BIN)/python deploy/local/demo.py

# Tests run on TEST_WORKERS pytest-xdist workers: most of the suite waits on servers it started
# (stacks, scepservers, PostgreSQL, RabbitMQ); on 2 workers the two cores were 58 % busy and the
# run took 6:20, on 3 it took 5:22. 4 workers on 2 cores starved a 100-host e2e world once (a host
# not verified in 300 s). Each worker has its
# own database, vhost and ports (tests/conftest.py, tests/support/ports.py). --dist loadfile keeps
# a module on one worker, so a module-scoped world (a stack, the fault tests' private servers) is
# built once; the longest modules are handed out first, by what they took in the last run
# (tests/conftest.py). (pytest-xdist 3.8's loadgroup does not group under pytest 9.2: it renames
# item._nodeid, which pytest no longer reads.) A temporary directory of its own: pytest prunes old
# numbered ones, including those of another run on the same machine.
TEST_WORKERS ?= 3
# test-fast starts no stack: its tests wait on in-process servers, PostgreSQL and RabbitMQ far more
# than they compute (on 2 workers the two cores were less than half busy): 4 workers took 61 s
# where 3 took 65 s.
FAST_TEST_WORKERS ?= 4
PYTEST := $(BIN)/python -m pytest --dist loadfile --no-loadscope-reorder \
	--basetemp="$$(mktemp -d /tmp/mdmscep-pytest-XXXXXX)"

# Each service's unit and integration tests sit in its own folder; tests/common holds the shared
# library's and the whole stack's (bus, outbox, migrations, schemas, launcher, operations).
SERVICE_TESTS := tests/admin_config tests/mdm_endpoint tests/profile_processor tests/scep_proxy \
	tests/common

test: $(STAMP) scep lint
	$(PYTEST) -n $(TEST_WORKERS) tests

# Unit and integration tests only, no lint, and none that starts the whole stack as processes
# (marked slow: the launcher, the operations stack; `make test` runs them): the loop while
# changing code.
test-fast: $(STAMP) scep
	$(PYTEST) -n $(FAST_TEST_WORKERS) -m "not slow" $(SERVICE_TESTS)

# Benchmarks are not tests: every one runs, then docs/benchmarks.md and its plots are rewritten
# from what was measured (about 15 minutes; wrk is installed where missing).
bench: $(STAMP) scep wrk
	$(BIN)/python bench/report.py

# The whole suite with the fault tests on 200 simulated hosts and ten times more fuzz examples.
test-long: $(STAMP) scep lint
	MDMSCEP_TEST_LONG=1 $(PYTEST) -n $(TEST_WORKERS) tests

# Dependency advisories: blocks only on pins this change adds or moves (docs/reliability.md).
audit: $(STAMP)
	$(BIN)/python -m tests.security.dependency_audit

clean:
	rm -rf $(VENV) .run
