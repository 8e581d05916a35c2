# thinkus.ops - one entry point. `make demo` and `make test` each run `make setup` first.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
SCENARIO ?=

.PHONY: help setup test ee lint lint-yaml lint-ansible lint-python lint-specs lint-changelog lint-shell lint-workflows lint-readme lint-ee sanity unit integration faults molecule demo bench build package clean local-up local-down local-reset local-status

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: ## virtualenv with pinned dependencies + thinkus.ops linked from this tree (idempotent)
	@tools/setup.sh

test: setup ## the whole suite: lint, sanity, unit, integration, molecule
	@tools/test.sh

lint: setup ## yamllint, ansible-lint (production profile), ruff, argument specs, changelog, shellcheck, actionlint, EE pins
	@$(MAKE) --no-print-directory -k lint-yaml lint-ansible lint-python lint-specs lint-changelog lint-shell lint-workflows lint-readme lint-ee

lint-yaml:
	yamllint --strict .
lint-ansible:
	ansible-lint --profile production
lint-python:
	ruff check .
	ruff format --check .
lint-specs:
	python tools/check_argument_specs.py
lint-changelog:
	antsibull-changelog lint
lint-shell:
	shellcheck tools/*.sh .ci/run
lint-workflows:
	actionlint .github/workflows/*.yml examples/app-repository/.github/workflows/*.yml
lint-readme:
	python -m tools.measurements check
lint-ee:
	python -m tools.ee check

sanity: setup ## ansible-test sanity on this machine's Python, no ignore files
	tools/sanity.sh

unit: setup ## pytest unit tests
	pytest -q tests/unit

integration: setup ## tests against the local environment (bring it up first: make local-up)
	pytest -q --durations=15 -m "not faults" tests/localenv tests/integration tests/environments

faults: setup ## the fault-injection suite against the local environment (killed deploys, 5xx, outages)
	pytest -q --durations=15 -m faults tests/integration

local-up: setup ## start the local environment (idempotent; state in .local/, caches in ~/.cache/thinkus-ops)
	python -m tools.localenv up

local-down: ## stop what the local environment started (PID files); keeps state and caches
	@if [ -x $(BIN)/python ]; then python -m tools.localenv down; else echo "nothing to stop (no .venv)"; fi

local-reset: setup ## Kubernetes again with an empty etcd (nothing of ours in the cluster); the rest stays up
	python -m tools.localenv reset

local-status: ## one line per component: up/down and its address
	@python -m tools.localenv status

molecule: setup ## all Molecule scenarios, or one: make molecule SCENARIO=<name>
	@scenarios="$(SCENARIO)"; [ -n "$$scenarios" ] || scenarios=$$(ls -d molecule/*/ | xargs -n1 basename); \
	failed=""; for s in $$scenarios; do \
	  echo "==> molecule $$s"; \
	  molecule reset -s "$$s" >/dev/null 2>&1 || true; \
	  molecule test -s "$$s" || failed="$$failed $$s"; \
	done; \
	if [ -n "$$failed" ]; then echo "molecule: failed:$$failed"; exit 1; fi; echo "molecule: all scenarios passed"

demo: local-up ## the whole platform deployed to a local environment on this machine
	@rm -f .local/artifacts/deploy-summary.json; rc=0; ansible-playbook playbooks/deploy.yml -i inventories/local || rc=$$?; \
	python -m tools.localenv where || true; exit $$rc

bench: local-up ## every tools/bench_*.py side by side with the plain tools, one table (BENCH_ARGS="--quick" for a smoke run)
	python tools/bench.py $(BENCH_ARGS)

ee: local-up ## the execution environment image (ansible-builder FROM the local base by digest), pushed to the local registry
	python -m tools.ee build

build: setup ## the collection tarball (ansible-galaxy collection build)
	ansible-galaxy collection build --force --output-path .build

package: build ## build the tarball and list the modules ansible-doc finds in it
	ansible-doc -t module -l thinkus.ops

clean: ## remove build output (keeps .venv and .local)
	rm -rf .build tests/output
