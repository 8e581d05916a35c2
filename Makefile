# thinkus.ops - one entry point. `make demo` and `make test` each run `make setup` first.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
SCENARIO ?=

.PHONY: help setup test lint sanity unit molecule demo build package clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: ## virtualenv with pinned dependencies + thinkus.ops linked from this tree (idempotent)
	@tools/setup.sh

test: setup ## the whole suite: lint, sanity, unit, integration, molecule
	@tools/test.sh

lint: setup ## yamllint, ansible-lint (production profile), ruff, argument-spec check
	yamllint --strict .
	ansible-lint --profile production
	ruff check .
	ruff format --check .
	python tools/check_argument_specs.py
	antsibull-changelog lint
	shellcheck tools/*.sh .ci/run

sanity: setup ## ansible-test sanity on this machine's Python, no ignore files
	tools/sanity.sh

unit: setup ## pytest unit tests
	pytest -q tests/unit

molecule: setup ## all Molecule scenarios, or one: make molecule SCENARIO=<name>
	@if [ -n "$(SCENARIO)" ]; then molecule test -s "$(SCENARIO)"; \
	else molecule test --all; fi

demo: setup ## the whole platform deployed to a local environment on this machine
	@echo "make demo: the local environment (Docker, registry, Kubernetes, PostgreSQL, Redis, S3, Prometheus)"
	@echo "arrives with the local-environment work; until then there is nothing to deploy to."

build: setup ## the collection tarball (ansible-galaxy collection build)
	ansible-galaxy collection build --force --output-path .build

package: build ## build the tarball and list the modules ansible-doc finds in it
	ansible-doc -t module -l thinkus.ops

clean: ## remove build output (keeps .venv and .local)
	rm -rf .build tests/output
