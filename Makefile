# One command per developer action, the same locally and in CI. Every target installs what it
# needs first (scripts/install-deps.sh: Debian packages, then .venv), so on a fresh Debian
# machine `make up` and `make test` are all it takes.
#
#   make up       start the cluster under $MINIK8S_HOME (default ~/.minik8s); re-run safe, repairs
#   make down     stop it and remove what it left on the host (data kept)
#   make status   what runs (exit 3 when something does not)
#   make test     every test tier (unit, integration, e2e); TESTS=... ARGS=... narrow it
#   make check    ruff, mypy, import layering
#   make bench    every benchmarks/bench_*.py against a cluster of its own; BENCH=name picks one
#   make clean    stop the cluster, remove $MINIK8S_HOME and the tool caches (.venv stays)

SHELL := /bin/bash
.DEFAULT_GOAL := help

TESTS ?=
ARGS ?=
BENCH ?=

.PHONY: help deps up down status test check bench clean

help:
	@sed -n 's/^#   make /  make /p' $(firstword $(MAKEFILE_LIST))

deps:
	@bash scripts/install-deps.sh

up:
	@bash scripts/up.sh

down:
	@bash scripts/down.sh

status:
	@bash scripts/status.sh

test:
	@bash scripts/test.sh $(TESTS) $(ARGS)

check:
	@bash scripts/check.sh

bench:
	@bash scripts/bench.sh $(BENCH)

clean:
	@MINIK8S_PURGE=1 bash scripts/down.sh
	rm -rf .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
